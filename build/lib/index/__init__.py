"""Index layer: embed passages, store them in SQLite + FAISS, publish versions atomically."""
