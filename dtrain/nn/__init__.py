"""Neural-network building blocks with PyTorch's names and semantics."""

from .parameter import Parameter

__all__ = ["Parameter"]
