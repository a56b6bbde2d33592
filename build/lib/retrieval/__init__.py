"""Retrieval layer: hybrid search over a published index, fused and ranked."""

from retrieval.model import Answer, Hit, format_citation
from retrieval.search import ModelMismatchError, PassageRow, Retriever

__all__ = ["Answer", "Hit", "ModelMismatchError", "PassageRow", "Retriever", "format_citation"]
