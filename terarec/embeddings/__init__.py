"""terarec.embeddings."""
