"""Utilities under PyTorch's names: ``dtrain.utils.data`` is ``torch.utils.data``."""

from . import data

__all__ = ["data"]
