"""``map_location`` for ``dtrain.load``: torch's argument, where everything lives on the CPU.

dtrain keeps every array in host memory, so the only location a file records is ``'cpu'``.
The accepted forms follow ``torch.load``: ``None``, ``'cpu'``/``'cpu:0'`` or any device object
whose ``str()`` is one of those, a dict mapping saved locations to new ones (only its ``'cpu'``
entry concerns a dtrain file), or a callable ``fn(array, 'cpu')`` called once per stored array
that returns the array to use or None to keep it. Another device is refused up front.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

__all__ = ["array_mapper"]

_CPU = ("cpu", "cpu:0")
_DEVICE_RE = re.compile(r"[a-z][a-z_]*(:[0-9]+)?")


def _check_cpu(location, what: str) -> None:
    text = location if isinstance(location, str) else str(location)
    if text in _CPU:
        return
    if _DEVICE_RE.fullmatch(text):
        raise RuntimeError(f"dtrain.load: {what}={text!r} asks for device {text!r}, but dtrain "
                           "runs on the CPU only; use map_location='cpu' or leave it out")
    error = ValueError if isinstance(location, str) else TypeError
    raise error(f"dtrain.load: {what}={location!r} is not a device (expected None, 'cpu', a "
                "device object, a dict of locations or a callable)")


def _call_mapper(fn: Callable) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    def apply(arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for array in arrays:
            mapped = fn(array, "cpu")
            if mapped is None:
                mapped = array
            elif not (isinstance(mapped, np.ndarray) and mapped.shape == array.shape
                      and mapped.dtype == array.dtype):
                raise TypeError(f"dtrain.load: map_location returned {type(mapped).__name__} "
                                f"for a stored {array.dtype} array of shape {array.shape}; return "
                                "the array it was given, a NumPy array of the same shape and "
                                "dtype, or None")
            out.append(mapped)
        return out

    return apply


def array_mapper(map_location) -> Callable[[list[np.ndarray]], list[np.ndarray]] | None:
    """Check ``map_location`` before anything is read; the function to apply to the stored
    arrays, or None when they stay as they are."""
    if map_location is None:
        return None
    if isinstance(map_location, dict):
        for source, target in map_location.items():
            if (source if isinstance(source, str) else str(source)) in _CPU:
                _check_cpu(target, f"map_location[{source!r}]")
        return None
    if callable(map_location):
        return _call_mapper(map_location)
    _check_cpu(map_location, "map_location")
    return None
