"""``dtrain.accelerator``: torch.accelerator's answers when no accelerator exists (dtrain's case).

``device = acc.type if (acc := dtrain.accelerator.current_accelerator()) else "cpu"`` and
``dtrain.accelerator.is_available()`` pick the CPU; calls that need an accelerator raise
RuntimeError with torch's wording.
"""

from __future__ import annotations

import contextlib

_NONE = "Cannot access accelerator device when none is available."


def is_available() -> bool:
    """False: dtrain has no accelerator."""
    return False


def current_accelerator(check_available: bool = False):
    """None: there is no accelerator device type."""
    return


def device_count() -> int:
    """0 accelerator devices."""
    return 0


def current_device_index() -> int:
    """Refused: there is no accelerator device."""
    raise RuntimeError(_NONE)


current_device_idx = current_device_index


def set_device_index(device) -> None:
    """Refused: there is no accelerator device to select."""
    raise RuntimeError(_NONE)


set_device_idx = set_device_index


def synchronize(device=None) -> None:
    """Refused: there is no accelerator to wait for."""
    raise RuntimeError(_NONE)


def empty_cache() -> None:
    """Refused: there is no accelerator memory."""
    raise RuntimeError(_NONE)


@contextlib.contextmanager
def device_index(device):
    """A no-op for ``None`` (as torch's); any index is refused."""
    if device is not None:
        raise RuntimeError(_NONE)
    yield


def _refuse_without_accelerator(name: str, doc: str):
    def refused(*args, **kwargs):
        raise RuntimeError(_NONE)

    refused.__name__ = refused.__qualname__ = name
    refused.__doc__ = f"Refused, as torch's without an accelerator: there is no {doc}."
    return refused


# the memory and stream queries torch.accelerator offers, all refused for the same reason
memory_allocated = _refuse_without_accelerator("memory_allocated", "accelerator memory")
max_memory_allocated = _refuse_without_accelerator("max_memory_allocated", "accelerator memory")
memory_reserved = _refuse_without_accelerator("memory_reserved", "accelerator memory")
max_memory_reserved = _refuse_without_accelerator("max_memory_reserved", "accelerator memory")
memory_stats = _refuse_without_accelerator("memory_stats", "accelerator memory")
get_memory_info = _refuse_without_accelerator("get_memory_info", "accelerator memory")
reset_peak_memory_stats = _refuse_without_accelerator("reset_peak_memory_stats",
                                                      "accelerator memory")
reset_accumulated_memory_stats = _refuse_without_accelerator("reset_accumulated_memory_stats",
                                                             "accelerator memory")
empty_host_cache = _refuse_without_accelerator("empty_host_cache", "accelerator host cache")
current_stream = _refuse_without_accelerator("current_stream", "accelerator stream")
get_device_capability = _refuse_without_accelerator("get_device_capability", "accelerator")
