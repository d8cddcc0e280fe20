"""``F.pad``: constant, reflect, replicate and circular padding with PyTorch's pad-tuple order.

The pad tuple lists (before, after) pairs starting from the last dimension, as in PyTorch.
Constant padding takes any number of dims and negative amounts (cropping); the copying modes pad
the last 1, 2 or 3 dims of a batched or unbatched input. Their backward adds each border back
onto the elements it copied: one strided add per border row, never a loop over elements.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import tensor as _t
from ..autograd.graph_engine import linear_graph
from ..autograd.tensor import Tensor, _op
from .module import Module

_NUMPY_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _pairs(pad, ndim: int) -> list[tuple[int, int]]:
    """Per-dimension (before, after) for all ``ndim`` dims from PyTorch's last-dim-first tuple."""
    if not isinstance(pad, (tuple, list)) or not all(
            isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in pad):
        raise TypeError(f"pad must be a tuple of ints, got {pad!r}")
    if len(pad) % 2:
        raise RuntimeError("Padding length must be divisible by 2")
    if len(pad) // 2 > ndim:
        raise RuntimeError(f"Padding length should be less than or equal to two times the input "
                           f"dimension but got padding length {len(pad)} and input of "
                           f"dimension {ndim}")
    pairs = [(0, 0)] * ndim
    for i in range(len(pad) // 2):
        pairs[ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    return pairs


def _check_copying(x: np.ndarray, pairs: list, count: int, mode: str) -> None:
    if count not in (1, 2, 3) or x.ndim not in (count + 1, count + 2):
        raise NotImplementedError(
            f"Padding size {2 * count} is not supported for {x.ndim}D input tensor of shape "
            f"{tuple(x.shape)}; {mode} padding pads the last 1, 2 or 3 dims of a 2D/3D, 3D/4D "
            "or 4D/5D input")
    for dim in range(x.ndim - count, x.ndim):
        before, after = pairs[dim]
        size = x.shape[dim]
        if min(before, after) < 0:
            raise RuntimeError(f"{mode} padding {pairs[dim]} at dimension {dim} must be "
                               "non-negative")
        limit = size - 1 if mode == "reflect" else size if mode == "circular" else None
        if size == 0 or (limit is not None and max(before, after) > limit):
            raise RuntimeError(
                f"{mode} padding {pairs[dim]} at dimension {dim} must be at most {limit} for "
                f"input of shape {tuple(x.shape)}")


def _constant(input: Tensor, pairs: list, value: float) -> Tensor:
    X = input._data
    sizes = [n + b + a for n, (b, a) in zip(X.shape, pairs)]
    if min(sizes, default=1) < 0:
        raise RuntimeError(f"pad {tuple(pairs)} gives the negative output size {tuple(sizes)} "
                           f"for input of shape {tuple(X.shape)}")
    crop = tuple(slice(max(0, -b), X.shape[d] - max(0, -a)) for d, (b, a) in enumerate(pairs))
    grow = [(max(0, b), max(0, a)) for b, a in pairs]
    kept = X[crop]
    out = np.pad(kept, grow, mode="constant", constant_values=value)
    inner = tuple(slice(b, b + k) for (b, _), k in zip(grow, kept.shape))

    def backward(g):
        gx = np.zeros(X.shape, dtype=g.dtype)
        gx[crop] = g[inner]
        return (gx,)

    def graph(g):
        return (_t._index_add_zeros(X.shape, crop, _t.getitem(g, inner)),)

    return _op(out, (input,), backward, "ConstantPadNdBackward0", graph=graph)


def _copying(input: Tensor, pairs: list, mode: str) -> Tensor:
    X = input._data
    out = np.pad(X, pairs, mode=_NUMPY_MODES[mode])

    def backward(g):
        for dim, (before, after) in enumerate(pairs):
            if not (before or after):
                continue
            size = X.shape[dim]
            source = np.pad(np.arange(size), (before, after), mode=_NUMPY_MODES[mode])
            moved = np.moveaxis(g, dim, 0)
            acc = moved[before:before + size].copy()
            for row in (*range(before), *range(before + size, before + size + after)):
                acc[source[row]] += moved[row]
            g = np.moveaxis(acc, 0, dim)
        return (np.ascontiguousarray(g),)

    names = {"reflect": "ReflectionPad", "replicate": "ReplicationPad", "circular": "CircularPad"}
    count = sum(1 for p in pairs if p != (0, 0))
    name = f"{names[mode]}{max(count, 1)}DBackward0"
    return _op(out, (input,), backward, name,
               graph=linear_graph(lambda t: _copying(t, pairs, mode), backward,
                                  name.replace("Backward0", "BackwardBackward0")))


def pad(input: Tensor, pad, mode: str = "constant", value: float | None = None) -> Tensor:
    """Pad ``input`` by ``pad`` = (last_before, last_after, next_before, ...), as ``F.pad``."""
    X = input._data
    pairs = _pairs(pad, X.ndim)
    if mode == "constant":
        return _constant(input, pairs, 0.0 if value is None else value)
    if mode not in _NUMPY_MODES:
        raise NotImplementedError(f"Unrecognised padding mode {mode}")
    if value is not None and value != 0:
        raise ValueError(f"Padding mode \"{mode}\" doesn't take in value argument")
    _check_copying(X, pairs, len(pad) // 2, mode)
    return _copying(input, pairs, mode)


# --------------------------------------------------------------------------- layers
class _PadNd(Module):
    """Shared body of the padding layers: ``padding`` as an int or a (2 * dims)-tuple."""

    dims = 1
    mode = "constant"

    def __init__(self, padding, value: float = 0.0):
        super().__init__()
        count = 2 * self.dims
        if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
            padding = (int(padding),) * count
        if not isinstance(padding, (tuple, list)) or len(padding) != count:
            raise ValueError(f"{type(self).__name__}: padding must be an int or a tuple of "
                             f"{count} ints, got {padding!r}")
        self.padding = tuple(int(p) for p in padding)
        self.value = value

    def forward(self, input: Tensor) -> Tensor:
        return pad(input, self.padding, self.mode, self.value if self.mode == "constant" else None)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    def __init__(self, padding, value: float):
        super().__init__(padding, value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPadNd):
    """Pad the last dim with ``value``."""


class ConstantPad2d(_ConstantPadNd):
    """Pad the last two dims with ``value``."""

    dims = 2


class ZeroPad1d(_PadNd):
    """Pad the last dim with zeros."""


class ZeroPad2d(_PadNd):
    """Pad the last two dims with zeros."""

    dims = 2


class ReflectionPad1d(_PadNd):
    """Pad the last dim with its reflection (edge not repeated)."""

    mode = "reflect"


class ReflectionPad2d(_PadNd):
    """Pad the last two dims with their reflection (edge not repeated)."""

    dims, mode = 2, "reflect"


class ReplicationPad1d(_PadNd):
    """Pad the last dim by repeating its edge values."""

    mode = "replicate"


class ReplicationPad2d(_PadNd):
    """Pad the last two dims by repeating their edge values."""

    dims, mode = 2, "replicate"


class CircularPad1d(_PadNd):
    """Pad the last dim by wrapping around."""

    mode = "circular"


class CircularPad2d(_PadNd):
    """Pad the last two dims by wrapping around."""

    dims, mode = 2, "circular"
