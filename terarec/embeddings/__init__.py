"""terarec.embeddings: the embedding-table policy: ``tables`` (one table per sparse feature: sizes,
widths, names, id -> row) and ``sharding`` (the per-table sharding policy)."""
