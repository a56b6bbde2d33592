"""Corpus layer: read article files and cut them into passages (no index, no model)."""

from corpus.model import Article, Passage, Skipped
from corpus.reader import ArticleError, CorpusScan, load_corpus, read_article, scan_corpus
from corpus.splitter import split_article, split_sentences

__all__ = [
    "Article",
    "ArticleError",
    "CorpusScan",
    "Passage",
    "Skipped",
    "load_corpus",
    "read_article",
    "scan_corpus",
    "split_article",
    "split_sentences",
]
