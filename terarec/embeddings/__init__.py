"""terarec.embeddings: one table per sparse feature (``tables``) and the per-table sharding policy
(``sharding``)."""
