"""Retrieval layer: hybrid search over the live index, fused and ranked."""

from index.backends import PassageRow
from retrieval.model import Answer, Confidence, Hit, format_citation
from retrieval.search import Retriever

__all__ = ["Answer", "Confidence", "Hit", "PassageRow", "Retriever", "format_citation"]
