"""terarec.trainer."""
