"""Gradient accumulation (``accumulate`` > 1): mini-batch gradient sums added over a group.

One arithmetic for both places that accumulate: the trainer, over whole gradients, and a
worker's reducer, over its ranges' slices (the sharded reduction). Elementwise, so a slice of
the whole buffer and a reducer's buffer of that slice hold the same bits.
"""

from __future__ import annotations

import numpy as np


def add_to_buffer(buffer: np.ndarray | None, grad: np.ndarray, dtype) -> np.ndarray:
    """``buffer + grad`` in ``buffer`` (a first sum is copied in the parameters' ``dtype``)."""
    if buffer is None:
        return np.array(grad, dtype=dtype)
    return np.add(buffer, grad, out=buffer)


def buffer_mean(buffer: np.ndarray, count: int, dtype) -> np.ndarray:
    """The group's mean gradient: the buffer over the ``count`` samples it holds."""
    return np.divide(buffer, count).astype(dtype, copy=False)
