"""``dtrain.backends.mps``: Apple's GPU backend is neither built nor available in dtrain."""

from __future__ import annotations


def is_available() -> bool:
    """False: dtrain computes on the CPU only."""
    return False


def is_built() -> bool:
    """False: dtrain has no MPS backend."""
    return False
