"""terarec: distributed training of CTR / ranking models on PyTorch + TorchRec."""

__version__ = "0.1.0"
