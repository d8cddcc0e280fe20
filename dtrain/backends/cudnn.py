"""``dtrain.backends.cudnn``: the flags reproducibility code sets (``deterministic = True``,
``benchmark = False``) are plain module attributes here; dtrain's CPU kernels are deterministic
whatever their values."""

from __future__ import annotations

enabled = True
deterministic = False
benchmark = False
allow_tf32 = True


def is_available() -> bool:
    """False: there is no cuDNN on dtrain's CPU backend."""
    return False


def version() -> None:
    """None: no cuDNN library is loaded (torch's answer without one)."""
    return
