"""Resizing: ``interpolate``/``Upsample`` (nearest, linear, bilinear, area), pixel (un)shuffle.

Interpolation is separable and works one resized axis at a time, with PyTorch's source-index
rules (its float32 scale for nearest, the half-pixel or align-corners mapping for linear).
Per output position an axis has "taps": one source index (nearest), or two and the weight of
the second (linear). Small axes (up to a few hundred) multiply by the (out, in) matrix of the
taps, one BLAS call each way; integer nearest upscaling repeats; larger axes gather in the
forward and sum each output's gradient into its sources with ``np.add.reduceat`` (the taps
never decrease), O(output) both ways. Nothing loops over elements. Mode 'area' is adaptive average pooling: its
(out, in) averaging matrix is applied along each axis.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..autograd.graph_engine import linear_graph
from ..autograd.tensor import Tensor, _op
from .module import Module
from .pooling import _adaptive_matrix

_DENSE_ENTRIES = 1 << 17  # up to this many (out x in) entries a BLAS product is the faster way
_SPATIAL = {"nearest": (1, 2), "nearest-exact": (1, 2), "linear": (1,), "bilinear": (2,),
            "area": (1, 2)}


def _nearest_index(size: int, out: int, scale: float | None, exact: bool) -> np.ndarray:
    """Source index of every output position (PyTorch computes the scale in float32)."""
    if out == size:  # PyTorch copies an axis whose size does not change, whatever the scale
        return np.arange(size)
    ratio = np.float32(1.0 / scale) if scale else np.float32(size) / np.float32(out)
    dst = np.arange(out, dtype=np.float32)
    src = np.floor((dst + np.float32(0.5)) * ratio if exact else dst * ratio)
    return np.minimum(src.astype(np.int64), size - 1)


def _linear_taps(size: int, out: int, scale: float | None, align_corners: bool,
                 dtype) -> tuple:
    """(low index, high index, weight of the high one) of every output position."""
    if out == size:  # copied, as for nearest
        return np.arange(size), None, None
    dst = np.arange(out, dtype=dtype)
    if align_corners:
        src = dst * dtype.type((size - 1) / (out - 1) if out > 1 else 0.0)
    else:
        ratio = dtype.type(1.0 / scale if scale else size / out)
        src = np.maximum((dst + dtype.type(0.5)) * ratio - dtype.type(0.5), 0)
    lo = np.minimum(src.astype(np.int64), size - 1)
    hi = np.minimum(lo + 1, size - 1)
    return lo, hi, (src - lo).astype(dtype)


def _along(weights: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Per-position weights shaped to broadcast along ``axis`` of an ``ndim``-D array."""
    shape = [1] * ndim
    shape[axis] = len(weights)
    return weights.reshape(shape)


def _repeats(index: np.ndarray, size: int) -> int:
    """k when ``index`` repeats every source k times in order (integer upscaling), else 0."""
    k = len(index) // size
    if k > 1 and len(index) == k * size and np.array_equal(index, np.arange(len(index)) // k):
        return k
    return 0


def _dense(taps: tuple, size: int, dtype) -> np.ndarray | None:
    """The (out, in) matrix of ``taps`` when a BLAS product beats gathers (small axes)."""
    lo, hi, frac = taps
    if len(lo) * size > _DENSE_ENTRIES:
        return None
    matrix = np.zeros((len(lo), size), dtype=dtype)
    rows = np.arange(len(lo))
    if hi is None:
        matrix[rows, lo] = 1
    else:
        matrix[rows, lo] = 1 - frac
        matrix[rows, hi] += frac  # lo == hi at the border: the weights add up to 1
    return matrix


def _resample(x: np.ndarray, taps: tuple, axis: int) -> np.ndarray:
    lo, hi, frac = taps
    k = _repeats(lo, x.shape[axis]) if hi is None else 0
    if k:
        return np.repeat(x, k, axis=axis)
    matrix = _dense(taps, x.shape[axis], x.dtype)
    if matrix is not None and np.isfinite(x).all():  # 0 * inf would spread NaN
        return _transform(x, matrix, axis)
    if hi is None:
        return np.take(x, lo, axis=axis)
    f = _along(frac, x.ndim, axis)
    out = np.take(x, lo, axis=axis)
    out *= 1 - f
    high = np.take(x, hi, axis=axis)
    high *= f
    out += high
    return out


def _scatter(g: np.ndarray, index: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Sum the slices of ``g`` along ``axis`` into positions ``index`` (non-decreasing)."""
    k = _repeats(index, size)
    if k:  # integer upscaling: each source's k copies are neighbours
        axis %= g.ndim
        return g.reshape(g.shape[:axis] + (size, k) + g.shape[axis + 1:]).sum(axis=axis + 1)
    starts = np.flatnonzero(np.concatenate(([True], index[1:] != index[:-1])))
    sums = np.add.reduceat(g, starts, axis=axis)
    if len(starts) == size:  # every source receives a gradient (upscaling): already in place
        return sums
    shape = list(g.shape)
    shape[axis] = size
    out = np.zeros(shape, dtype=g.dtype)
    where = [slice(None)] * g.ndim
    where[axis] = index[starts]
    out[tuple(where)] = sums
    return out


def _resample_grad(g: np.ndarray, taps: tuple, size: int, axis: int) -> np.ndarray:
    lo, hi, frac = taps
    matrix = None if hi is None and _repeats(lo, size) else _dense(taps, size, g.dtype)
    if matrix is not None and np.isfinite(g).all():
        return _transform(g, matrix.T, axis)
    if hi is None:
        return _scatter(g, lo, size, axis)
    f = _along(frac, g.ndim, axis)
    low = _scatter(g * (1 - f), lo, size, axis)
    low += _scatter(g * f, hi, size, axis)
    return low


def _transform(x: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """``matrix`` (out, in) applied along ``axis``."""
    axis %= x.ndim
    if axis == x.ndim - 1:
        return x @ matrix.T
    if axis == x.ndim - 2:
        return np.matmul(matrix, x)
    return np.moveaxis(np.moveaxis(x, axis, -1) @ matrix.T, -1, axis)


def _output_sizes(shape: tuple, size, scale_factor, count: int) -> tuple[list, list]:
    """Output sizes and the scale (or None) PyTorch uses for each resized axis."""
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined" if size is not None
                         else "either size or scale_factor should be defined")
    spatial = shape[-count:]
    if size is not None:
        sizes = list(size) if isinstance(size, (tuple, list)) else [size] * count
        if len(sizes) != count:
            raise ValueError(f"Input and output must have the same number of spatial dimensions, "
                             f"but got input with spatial dimensions of {list(spatial)} and "
                             f"output size of {sizes}. Please provide input tensor in (N, C, "
                             "d1, d2, ...,dK) format and output size in (o1, o2, ...,oK) format.")
        sizes = [int(s) for s in sizes]
        scales = [None] * count
    else:
        factors = (list(scale_factor) if isinstance(scale_factor, (tuple, list))
                   else [scale_factor] * count)
        if len(factors) != count:
            raise ValueError(f"Input and scale_factor must have the same number of spatial "
                             f"dimensions, but got input with spatial dimensions of "
                             f"{list(spatial)} and scale_factor of shape {factors}.")
        scales = [float(f) for f in factors]
        sizes = [math.floor(n * f) for n, f in zip(spatial, scales)]
    if min(sizes) < 1:
        raise RuntimeError(f"interpolate: input of shape {tuple(shape)} gives output size "
                           f"{tuple(sizes)}; every output size must be positive")
    return sizes, scales


def resize_plan(shape: tuple, dtype, size=None, scale_factor=None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> tuple[str, list]:
    """Checked arguments of ``interpolate`` as (kind, one entry per resized axis).

    Kind 'taps' has (index, None, None) for nearest modes and (low, high, weight of high) for
    linear ones; kind 'area' has the (out, in) window-averaging matrix of adaptive pooling.
    """
    dtype = np.dtype(dtype)
    if mode not in _SPATIAL and mode not in ("bicubic", "trilinear"):
        raise NotImplementedError(f"interpolate: unknown mode {mode!r}")
    if align_corners is not None and mode not in ("linear", "bilinear"):
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    count = len(shape) - 2
    if mode not in _SPATIAL or count not in _SPATIAL[mode] or antialias:
        need = {"linear": "3D", "bilinear": "4D"}.get(mode, "3D or 4D")
        raise NotImplementedError(f"Got {len(shape)}D input of shape {tuple(shape)}, but mode "
                                  f"{mode!r}{' with antialias' if antialias else ''} is "
                                  f"supported for {need} input only")
    if dtype.kind != "f":
        raise NotImplementedError(f"interpolate is not implemented for dtype {dtype}; use a "
                                  "floating input")
    sizes, scales = _output_sizes(shape, size, scale_factor, count)
    if recompute_scale_factor:
        scales = [None] * count
    if mode == "area":
        return "area", [_adaptive_matrix(n, out, dtype) for n, out in zip(shape[2:], sizes)]
    plan = []
    for n, out, scale in zip(shape[2:], sizes, scales):
        if mode.startswith("nearest"):
            plan.append((_nearest_index(n, out, scale, mode == "nearest-exact"), None, None))
        else:
            plan.append(_linear_taps(n, out, scale, bool(align_corners), dtype))
    return "taps", plan


def interpolate(input: Tensor, size=None, scale_factor=None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    """Resize the spatial dims of (N, C, L) or (N, C, H, W) input, as ``F.interpolate``."""
    X = input._data
    kind, plan = resize_plan(X.shape, X.dtype, size, scale_factor, mode, align_corners,
                             recompute_scale_factor, antialias)
    axes = range(X.ndim - len(plan), X.ndim)
    out = X
    for axis, entry in zip(axes, plan):
        out = _resample(out, entry, axis) if kind == "taps" else _transform(out, entry, axis)

    def backward(g):
        for axis, entry in reversed(list(zip(axes, plan))):
            if kind == "taps":
                g = _resample_grad(g, entry, X.shape[axis], axis)
            else:
                g = _transform(g, entry.T, axis)
        return (g,)

    count = len(plan)
    names = {"nearest": "UpsampleNearest", "nearest-exact": "UpsampleNearestExact",
             "linear": "UpsampleLinear", "bilinear": "UpsampleBilinear",
             "area": "AdaptiveAvgPool"}
    def again(t):
        return interpolate(t, size, scale_factor, mode, align_corners, recompute_scale_factor,
                           antialias)

    name = f"{names[mode]}{count}DBackward0"
    return _op(np.ascontiguousarray(out), (input,), backward, name,
               graph=linear_graph(again, backward, name.replace("Backward0", "BackwardBackward0")))


class Upsample(Module):
    """Resize by ``size`` or ``scale_factor`` with ``interpolate`` (PyTorch's ``nn.Upsample``)."""

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest",
                 align_corners: bool | None = None, recompute_scale_factor: bool | None = None):
        super().__init__()
        self.size = size
        if isinstance(scale_factor, (tuple, list)):
            self.scale_factor = tuple(float(f) for f in scale_factor)
        else:
            self.scale_factor = float(scale_factor) if scale_factor else None
        self.mode, self.align_corners = mode, align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input: Tensor) -> Tensor:
        return interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                           recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self) -> str:
        info = (f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None
                else f"size={self.size!r}")
        return f"{info}, mode={self.mode!r}"


# ---------------------------------------------------------------------- pixel shuffle
def _factor(value, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _pixel_input(input: Tensor, factor, factor_name: str, op: str):
    """The factor checked and the input's array split as (r, X, lead dims, C, H, W)."""
    r = _factor(factor, factor_name)
    X = input._data
    if X.ndim < 3:
        raise RuntimeError(f"{op} expects input to have at least 3 dimensions, but got input "
                           f"of shape {tuple(X.shape)}")
    *lead, c, h, w = X.shape
    return r, X, lead, c, h, w


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    """(*, C*r*r, H, W) to (*, C, H*r, W*r): sub-pixel convolution's rearrangement."""
    r, X, lead, c, h, w = _pixel_input(input, upscale_factor, "upscale_factor", "pixel_shuffle")
    if c % (r * r):
        raise RuntimeError(f"pixel_shuffle expects its input's 'channel' dimension to be "
                           f"divisible by the square of upscale_factor, but input.size(-3)={c} "
                           f"is not divisible by {r * r}")
    k = len(lead)
    perm = (*range(k), k, k + 3, k + 1, k + 4, k + 2)
    out = X.reshape(*lead, c // (r * r), r, r, h, w).transpose(perm)
    out = np.ascontiguousarray(out).reshape(*lead, c // (r * r), h * r, w * r)

    def backward(g):
        back = g.reshape(*lead, c // (r * r), h, r, w, r).transpose(np.argsort(perm))
        return (np.ascontiguousarray(back).reshape(X.shape),)

    return _op(out, (input,), backward, "PixelShuffleBackward0",
               graph=linear_graph(lambda t: pixel_shuffle(t, upscale_factor), backward,
                                  "PixelShuffleBackwardBackward0"))


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    """(*, C, H*r, W*r) to (*, C*r*r, H, W): the inverse of ``pixel_shuffle``."""
    r, X, lead, c, h, w = _pixel_input(input, downscale_factor, "downscale_factor",
                                       "pixel_unshuffle")
    if h % r or w % r:
        raise RuntimeError(f"pixel_unshuffle expects height ({h}) and width ({w}) to be "
                           f"divisible by downscale_factor={r}; input of shape {tuple(X.shape)}")
    k = len(lead)
    perm = (*range(k), k, k + 2, k + 4, k + 1, k + 3)
    out = X.reshape(*lead, c, h // r, r, w // r, r).transpose(perm)
    out = np.ascontiguousarray(out).reshape(*lead, c * r * r, h // r, w // r)

    def backward(g):
        back = g.reshape(*lead, c, r, r, h // r, w // r).transpose(np.argsort(perm))
        return (np.ascontiguousarray(back).reshape(X.shape),)

    return _op(out, (input,), backward, "PixelUnshuffleBackward0",
               graph=linear_graph(lambda t: pixel_unshuffle(t, downscale_factor), backward,
                                  "PixelUnshuffleBackwardBackward0"))


class _PixelRearrange(Module):
    """PixelShuffle and PixelUnshuffle: ``function`` with the one factor named ``factor_name``."""

    function = None  # staticmethod(input, factor)
    factor_name = ""

    def __init__(self, factor: int):
        super().__init__()
        setattr(self, self.factor_name, _factor(factor, self.factor_name))

    def forward(self, input: Tensor) -> Tensor:
        return self.function(input, getattr(self, self.factor_name))

    def extra_repr(self) -> str:
        return f"{self.factor_name}={getattr(self, self.factor_name)}"


class PixelShuffle(_PixelRearrange):
    """Rearrange (*, C*r*r, H, W) into (*, C, H*r, W*r)."""

    function, factor_name = staticmethod(pixel_shuffle), "upscale_factor"

    def __init__(self, upscale_factor: int):
        super().__init__(upscale_factor)


class PixelUnshuffle(_PixelRearrange):
    """Rearrange (*, C, H*r, W*r) into (*, C*r*r, H, W)."""

    function, factor_name = staticmethod(pixel_unshuffle), "downscale_factor"

    def __init__(self, downscale_factor: int):
        super().__init__(downscale_factor)
