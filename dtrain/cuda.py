"""``dtrain.cuda``: torch.cuda's answers on a machine without a GPU, so device-picking code runs.

Queries say there is no CUDA device; seeding and cache calls that scripts make unconditionally
are accepted and do nothing (as torch's do without CUDA); anything that needs a device raises.
"""

from __future__ import annotations

from .autograd.device import unavailable


def is_available() -> bool:
    """False: dtrain computes on the CPU only."""
    return False


def device_count() -> int:
    """0: there are no CUDA devices."""
    return 0


def is_initialized() -> bool:
    """False: there is no CUDA context to initialize."""
    return False


def manual_seed(seed: int) -> None:
    """Accepted and ignored, as torch does without CUDA (``dtrain.manual_seed`` seeds dtrain)."""


def manual_seed_all(seed: int) -> None:
    """Accepted and ignored, as torch does without CUDA."""


def empty_cache() -> None:
    """Nothing to free: there is no GPU memory cache."""


def current_device() -> int:
    """Refused: there is no current CUDA device."""
    raise unavailable("cuda")


def synchronize(device=None) -> None:
    """Refused: there is no CUDA device to wait for."""
    raise unavailable("cuda")


def get_device_name(device=None) -> str:
    """Refused: there is no CUDA device to name."""
    raise unavailable("cuda")


def set_device(device) -> None:
    """Refused: there is no CUDA device to select."""
    raise unavailable("cuda")
