"""terarec: distributed training of CTR / ranking models on PyTorch + TorchRec."""

import os

__version__ = "0.1.0"

# How long arrow's allocator (mimalloc, arrow's default pool) keeps memory it no longer uses before
# handing it back to the OS. Its default, 1 s, is shorter than a loader's window lasts: every window's
# buffers (parquet decode, permuted columns) then came back from the kernel as fresh pages, and on this
# VM the page faults cost as much CPU as the 1M-row window's own work (loader_bench: 1.06-1.22 -> 0.67-0.74
# CPU us/row, docs/benchmarks.md). Kept a minute, freed memory serves the next windows; RSS stays at the
# high-water mark for that minute. Read by mimalloc when pyarrow loads, so it applies to processes that
# import terarec before pyarrow (terarec's CLI, its torchrun children and workers); a value already in the
# environment is kept.
ARROW_PURGE_DELAY_ENV = "MIMALLOC_PURGE_DELAY"
ARROW_PURGE_DELAY_MS = 60_000
os.environ.setdefault(ARROW_PURGE_DELAY_ENV, str(ARROW_PURGE_DELAY_MS))
