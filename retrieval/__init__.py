"""Retrieval layer: hybrid search over the live index, fused and ranked."""

from index.backends import PassageRow
from retrieval.model import Answer, Hit, format_citation
from retrieval.search import Retriever

__all__ = ["Answer", "Hit", "PassageRow", "Retriever", "format_citation"]
