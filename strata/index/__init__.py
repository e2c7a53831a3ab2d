"""The evidence index: every dataset chunk with its source, pages and heading, searched by BM25 (SQLite FTS5 in the
workspace, or Postgres shared by replicas) and optionally reranked by a GGUF embedder. Torch-free: serve reads it."""
