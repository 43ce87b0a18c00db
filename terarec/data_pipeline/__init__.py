"""terarec.data_pipeline."""
