"""2-D pooling: max, average and adaptive average, each one fused node, as in PyTorch.

Max and average pooling loop over the kernel positions (kh * kw strided slices of the padded
input), never over pixels. Max pooling sends each output's gradient to the first maximum of its
window (row-major order, as PyTorch does); NaN wins, as in PyTorch.
"""

from __future__ import annotations

import numpy as np

from ..autograd import tensor as _t
from ..autograd.graph_engine import linear_graph
from ..autograd.tensor import Tensor, _op
from .conv import _pair
from .module import Module


def _batched(x: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    """(N, C, H, W) view of a 3-D or 4-D input, and whether it was unbatched."""
    if x.ndim == 4:
        return x, False
    if x.ndim == 3:
        return x[None], True
    raise RuntimeError(f"{name}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape "
                       f"{tuple(x.shape)}")


def _pool_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size, including its ceil-mode rule (last window starts inside)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_geometry(x: np.ndarray, kernel, stride, padding, dilation, ceil_mode: bool,
                   name: str) -> tuple:
    """Checked (kernel, stride, padding, dilation, out_h, out_w)."""
    k = _pair(kernel, "kernel_size")
    s = k if stride is None or stride == () or stride == [] else _pair(stride, "stride")
    p, d = _pair(padding, "padding"), _pair(dilation, "dilation")
    if min(k) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise ValueError(f"{name}: kernel_size {k}, stride {s} and dilation {d} must be positive "
                         f"and padding {p} non-negative")
    limit = (k[0] // 2, k[1] // 2)
    if p[0] > limit[0] or p[1] > limit[1]:
        raise ValueError(f"{name}: padding {p} must be at most half of the kernel size {k} "
                         f"(at most {limit})")
    ho = _pool_size(x.shape[2], k[0], s[0], p[0], d[0], ceil_mode)
    wo = _pool_size(x.shape[3], k[1], s[1], p[1], d[1], ceil_mode)
    if ho < 1 or wo < 1:
        raise RuntimeError(f"{name}: input of shape {tuple(x.shape)} gives output size "
                           f"({ho} x {wo}) with kernel_size {k}, stride {s}, padding {p}: "
                           "output size is too small")
    return k, s, p, d, ho, wo


def _padded(x: np.ndarray, k, s, p, d, ho: int, wo: int, fill: float) -> np.ndarray:
    """``x`` padded by ``p`` (and on the far side as far as ceil-mode windows reach)."""
    n, c, h, w = x.shape
    hp = max(h + 2 * p[0], (ho - 1) * s[0] + d[0] * (k[0] - 1) + 1)
    wp = max(w + 2 * p[1], (wo - 1) * s[1] + d[1] * (k[1] - 1) + 1)
    if (hp, wp) == (h, w):
        return x
    xp = np.full((n, c, hp, wp), fill, dtype=x.dtype)
    xp[:, :, p[0]:p[0] + h, p[1]:p[1] + w] = x
    return xp


def _slices(k, s, d, ho: int, wo: int):
    """(i, j, index) for every kernel position: the strided slice of the padded input it reads."""
    for i in range(k[0]):
        for j in range(k[1]):
            yield i, j, (slice(None), slice(None),
                         slice(i * d[0], i * d[0] + s[0] * (ho - 1) + 1, s[0]),
                         slice(j * d[1], j * d[1] + s[1] * (wo - 1) + 1, s[1]))


# -------------------------------------------------------------------------------- max
def _window_argmax(Xp: np.ndarray, best: np.ndarray, k, s, d, ho: int, wo: int) -> np.ndarray:
    """Position (i * kw + j) of each window's first maximum; a NaN window's last NaN, as torch."""
    views = [Xp[sl] for _, _, sl in _slices(k, s, d, ho, wo)]
    idx = np.zeros(best.shape, dtype=np.int8 if len(views) < 128 else np.int32)
    for pos in range(len(views) - 1, -1, -1):  # backwards, so the first maximum writes last
        idx += (pos - idx) * (views[pos] == best)  # arithmetic: much faster than np.where
    nan = np.isnan(best)
    if nan.any():
        for pos, view in enumerate(views):
            idx[nan & np.isnan(view)] = pos
    return idx


def _max_pool_2x2(X: np.ndarray, ho: int, wo: int) -> np.ndarray:
    """2x2/stride-2 max pooling: the maximum of each window (a b / c d), folded a, b, c, d.

    The four corners are quarter-size strided views of X folded into the output in place, so
    the output is the only array written: half-size row maxima (kept for backward, as an
    earlier version did) cost more in fresh memory than they saved. The row-major fold is the
    general loop's order, and gives the bits of the earlier pairing max(max(a, b), max(c, d))
    too, signed zeros and NaN payloads included (tests/test_fast_kernels.py).
    """
    Xc = X[:, :, :2 * ho, :2 * wo]
    best = np.maximum(Xc[:, :, 0::2, 0::2], Xc[:, :, 0::2, 1::2])
    np.maximum(best, Xc[:, :, 1::2, 0::2], out=best)
    return np.maximum(best, Xc[:, :, 1::2, 1::2], out=best)


def _max_pool_2x2_grad(X: np.ndarray, best: np.ndarray, G: np.ndarray) -> np.ndarray | None:
    """Input gradient of ``_max_pool_2x2``: each window's first maximum (row-major) takes G.

    Corners are tried in row-major order, each taking G where it equals the maximum and no
    earlier corner did; the last takes the rest. G times a mask keeps G's bits where it routes
    and gives G * 0 elsewhere, as before. None when a window holds NaN or G is not finite
    (``inf * 0``): the general path handles those.
    """
    if not np.isfinite(G).all() or np.isnan(best).any():
        return None
    ho, wo = best.shape[2:]
    Xc = X[:, :, :2 * ho, :2 * wo]
    gx = np.empty_like(X) if Xc.shape == X.shape else np.zeros_like(X)
    gc = gx[:, :, :2 * ho, :2 * wo]
    rest = None  # windows whose maximum no corner tried so far holds
    for i, j in ((0, 0), (0, 1), (1, 0)):
        hit = Xc[:, :, i::2, j::2] == best
        if rest is None:
            rest = ~hit
        else:
            hit &= rest
            rest &= ~hit
        np.multiply(G, hit, out=gc[:, :, i::2, j::2])
    np.multiply(G, rest, out=gc[:, :, 1::2, 1::2])
    return gx


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode: bool = False, return_indices: bool = False):
    """Max over each window; with ``return_indices`` also the argmax as flat H*W indices."""
    X, unbatched = _batched(input._data, "max_pool2d")
    if X.dtype.kind != "f":
        raise TypeError(f"max_pool2d: expected a floating input, got dtype {X.dtype}")
    k, s, p, d, ho, wo = _pool_geometry(X, kernel_size, stride, padding, dilation, ceil_mode,
                                        "max_pool2d")
    Xp = _padded(X, k, s, p, d, ho, wo, -np.inf)
    pairs = k == s == (2, 2) and p == (0, 0) and d == (1, 1) and Xp is X
    if pairs:
        best = _max_pool_2x2(X, ho, wo)
    else:
        best = None
        for _, _, sl in _slices(k, s, d, ho, wo):
            best = Xp[sl].copy() if best is None else np.maximum(best, Xp[sl], out=best)
    disjoint = all(s[a] >= d[a] * (k[a] - 1) + 1 for a in range(2))

    def backward(grad):
        G = grad[None] if unbatched else grad
        if pairs:
            gx = _max_pool_2x2_grad(X, best, G)
            if gx is not None:
                return (gx[0] if unbatched else gx,)
        idx = _window_argmax(Xp, best, k, s, d, ho, wo)
        finite = np.isfinite(G).all()  # then G * mask is exact (inf * 0 would be NaN)
        gxp = np.zeros(Xp.shape, dtype=X.dtype)
        for i, j, sl in _slices(k, s, d, ho, wo):
            mask = idx == i * k[1] + j
            routed = G * mask if finite else np.where(mask, G, 0)
            if disjoint:  # every input element is in one window at most
                gxp[sl] = routed
            else:
                gxp[sl] += routed
        gx = gxp[:, :, p[0]:p[0] + X.shape[2], p[1]:p[1] + X.shape[3]]
        return (np.ascontiguousarray(gx[0] if unbatched else gx),)

    def graph(grad):
        # max pooling is, locally, a gather from each window's argmax: its gradient a scatter
        pos = _window_argmax(Xp, best, k, s, d, ho, wo).astype(np.int64)
        nn_, cc, oh, ow = np.indices(best.shape)
        rows = oh * s[0] + (pos // k[1]) * d[0] - p[0]
        cols = ow * s[1] + (pos % k[1]) * d[1] - p[1]
        G = _t.unsqueeze(grad, 0) if unbatched else grad
        gx = _t._index_add_zeros(X.shape, (nn_, cc, rows, cols), G)
        return (_t.squeeze(gx, 0) if unbatched else gx,)

    out = _op(best[0] if unbatched else best, (input,), backward, "MaxPool2DWithIndicesBackward0",
              graph=graph)
    if not return_indices:
        return out
    idx = _window_argmax(Xp, best, k, s, d, ho, wo)
    rows = np.arange(ho).reshape(-1, 1) * s[0] - p[0] + (idx // k[1]) * d[0]
    cols = np.arange(wo) * s[1] - p[1] + (idx % k[1]) * d[1]
    flat = (rows * X.shape[3] + cols).astype(np.int64)
    return out, Tensor._wrap(flat[0] if unbatched else flat)


class _MaxPoolNd(Module):
    """Shared body of MaxPool1d/2d: the sizes as given, the arguments to the pooling function."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices: bool = False, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def _pool_args(self) -> tuple:
        """The arguments after the input to ``max_pool1d``/``max_pool2d``."""
        return (self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool2d(_MaxPoolNd):
    """2-D max pooling, as ``torch.nn.MaxPool2d`` (stride defaults to the kernel size)."""

    def forward(self, input: Tensor):
        return max_pool2d(input, *self._pool_args())


# ---------------------------------------------------------------------------- average
def _avg_divisor(size: int, k: int, s: int, p: int, out: int, count_include_pad: bool):
    """Per-output window sizes along one axis: padding counts, the ceil-mode overhang doesn't."""
    start = np.arange(out) * s - p
    end = np.minimum(start + k, size + p)
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """Mean over each window, with PyTorch's divisor rules (padding, ceil mode, override)."""
    X, unbatched = _batched(input._data, "avg_pool2d")
    if X.dtype.kind != "f":
        raise TypeError(f"avg_pool2d: expected a floating input, got dtype {X.dtype}")
    if divisor_override is not None and divisor_override == 0:
        raise ValueError("avg_pool2d: divisor_override must be non-zero")
    k, s, p, d, ho, wo = _pool_geometry(X, kernel_size, stride, padding, 1, ceil_mode,
                                        "avg_pool2d")
    Xp = _padded(X, k, s, p, d, ho, wo, 0.0)
    if divisor_override is not None:
        scale = np.asarray(1.0 / divisor_override, dtype=X.dtype)
    else:
        dh = _avg_divisor(X.shape[2], k[0], s[0], p[0], ho, count_include_pad)
        dw = _avg_divisor(X.shape[3], k[1], s[1], p[1], wo, count_include_pad)
        scale = (1.0 / (dh.reshape(-1, 1) * dw)).astype(X.dtype)
    total = None
    for _, _, sl in _slices(k, s, d, ho, wo):
        total = Xp[sl].copy() if total is None else np.add(total, Xp[sl], out=total)
    total *= scale

    def backward(grad):
        G = (grad[None] if unbatched else grad) * scale
        gxp = np.zeros(Xp.shape, dtype=X.dtype)
        for _, _, sl in _slices(k, s, d, ho, wo):
            gxp[sl] += G
        gx = gxp[:, :, p[0]:p[0] + X.shape[2], p[1]:p[1] + X.shape[3]]
        return (np.ascontiguousarray(gx[0] if unbatched else gx),)

    def again(t):
        return avg_pool2d(t, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override)

    return _op(total[0] if unbatched else total, (input,), backward, "AvgPool2DBackward0",
               graph=linear_graph(again, backward, "AvgPool2DBackwardBackward0"))


class AvgPool2d(Module):
    """2-D average pooling, as ``torch.nn.AvgPool2d``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, input: Tensor) -> Tensor:
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


# --------------------------------------------------------------------------- adaptive
def _adaptive_matrix(size: int, out: int, dtype) -> np.ndarray:
    """(out, size) matrix averaging PyTorch's windows [floor(i*n/o), ceil((i+1)*n/o))."""
    i = np.arange(out)
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)
    cols = np.arange(size)
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Average pooling to a fixed output size (None keeps that input dimension)."""
    X, unbatched = _batched(input._data, "adaptive_avg_pool2d")
    if X.dtype.kind != "f":
        raise TypeError(f"adaptive_avg_pool2d: expected a floating input, got dtype {X.dtype}")
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    if len(sizes) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got "
                         f"{output_size!r}")
    ho = X.shape[2] if sizes[0] is None else int(sizes[0])
    wo = X.shape[3] if sizes[1] is None else int(sizes[1])
    if ho < 1 or wo < 1 or X.shape[2] < 1 or X.shape[3] < 1:
        raise ValueError(f"adaptive_avg_pool2d: output size ({ho}, {wo}) and input spatial size "
                         f"{tuple(X.shape[2:])} must be positive")
    Ah = _adaptive_matrix(X.shape[2], ho, X.dtype)
    Aw = _adaptive_matrix(X.shape[3], wo, X.dtype)
    out = np.matmul(np.matmul(Ah, X), Aw.T)

    def backward(grad):
        G = grad[None] if unbatched else grad
        gx = np.matmul(np.matmul(Ah.T, G), Aw)
        return (gx[0] if unbatched else gx,)

    graph = linear_graph(lambda t: adaptive_avg_pool2d(t, output_size), backward,
                         "AdaptiveAvgPool2DBackwardBackward0")
    return _op(out[0] if unbatched else out, (input,), backward, "AdaptiveAvgPool2DBackward0",
               graph=graph)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size, as ``torch.nn.AdaptiveAvgPool2d``."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:
        return adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
