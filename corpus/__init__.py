"""Corpus layer: read article files and cut them into passages (no index, no model)."""

from corpus.model import Article, Passage, Skipped
from corpus.reader import ArticleError, load_corpus, read_article
from corpus.splitter import split_article, split_sentences

__all__ = [
    "Article",
    "ArticleError",
    "Passage",
    "Skipped",
    "load_corpus",
    "read_article",
    "split_article",
    "split_sentences",
]
