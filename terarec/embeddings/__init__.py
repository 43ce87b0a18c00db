"""terarec.embeddings: the embedding-table policy (``tables``: sizes, widths, names, id -> row)."""
