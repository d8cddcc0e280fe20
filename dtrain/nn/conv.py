"""2-D convolution: the fused ``conv2d`` kernel and ``Conv2d`` (PyTorch's layout and init).

The kernel is im2col over chunks of the batch: each chunk's windows are copied into a small,
reused column buffer (a strided view, so one copy) and multiplied by the weights in one BLAS
call per group. Chunks keep the columns in cache and nothing of batch size but the result is
allocated. Backward for stride 1 unfolds only the output gradient, once: its windows times the
flipped weights give the input gradient and times the input give the weight gradient. Strided
convolutions (and those with many more output than input channels) unfold the input for the
weight gradient and add the column gradients back by col2im: one strided add per kernel
position (kh * kw of them), never a loop over pixels.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..autograd import tensor as _t
from ..autograd.device import check_device
from ..autograd.graph_engine import vjp_via
from ..autograd.segments import active_segments
from ..autograd.tensor import Tensor, _op
from . import init
from .module import Module
from .parameter import _add_weight_and_bias

_PADDING_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_CHUNK_BYTES = 1 << 19  # column buffer per chunk: small enough to stay in L2


def _pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints as a pair (PyTorch's ``_pair``), checked."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def _resolve_padding(padding, kernel: tuple, stride: tuple, dilation: tuple) -> tuple:
    """``padding`` (int, pair, 'valid' or 'same') as ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding != "same":
            raise ValueError(f"Invalid padding string {padding!r}, should be one of "
                             "{'valid', 'same'}")
        if stride != (1, 1):
            raise ValueError("padding='same' is not supported for strided convolutions")
        pads = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return ((ph, ph), (pw, pw))


def _out_size(size: int, pad: tuple, k: int, s: int, d: int) -> int:
    return (size + pad[0] + pad[1] - d * (k - 1) - 1) // s + 1


def _pad_input(x: np.ndarray, pads: tuple, mode: str) -> np.ndarray:
    """The input padded on H and W (a no-copy pass-through when there is no padding)."""
    (pt, pb), (pl, pr) = pads
    if not (pt or pb or pl or pr):
        return x
    n, c, h, w = x.shape
    if mode == "zeros":
        xp = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=x.dtype)
        xp[:, :, pt:pt + h, pl:pl + w] = x
        return xp
    for dim, size, pair in ((2, h, (pt, pb)), (3, w, (pl, pr))):
        limit = size if mode == "circular" else size - 1 if mode == "reflect" else max(pair)
        if max(pair) > limit:
            raise RuntimeError(f"conv2d: {mode} padding {pair} at dimension {dim} must be at most "
                               f"{limit} for input of shape {tuple(x.shape)}")
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), mode=_PADDING_MODES[mode])


def _unpad_grad(gxp: np.ndarray, shape: tuple, pads: tuple, mode: str) -> np.ndarray:
    """Gradient of ``_pad_input``: crop, and for copying modes add each border to its source."""
    (pt, pb), (pl, pr) = pads
    h, w = shape[2], shape[3]
    if mode != "zeros":
        np_mode = _PADDING_MODES[mode]
        src_h = np.pad(np.arange(h), (pt, pb), mode=np_mode)
        rows = gxp[:, :, pt:pt + h, :].copy()
        for r in (*range(pt), *range(pt + h, gxp.shape[2])):
            rows[:, :, src_h[r], :] += gxp[:, :, r, :]
        src_w = np.pad(np.arange(w), (pl, pr), mode=np_mode)
        out = rows[:, :, :, pl:pl + w].copy()
        for c in (*range(pl), *range(pl + w, gxp.shape[3])):
            out[:, :, :, src_w[c]] += rows[:, :, :, c]
        return out
    if not (pt or pb or pl or pr):
        return gxp
    return np.ascontiguousarray(gxp[:, :, pt:pt + h, pl:pl + w])


def _check_ranks_2d(x: np.ndarray, w: np.ndarray, name: str, layout: str) -> None:
    """Raises unless the weight is 4-D (``layout``, kH, kW) and the input, batched, 4-D."""
    if w.ndim != 4:
        raise RuntimeError(f"{name}: expected a 4-D weight ({layout}, kH, kW), got shape "
                           f"{tuple(w.shape)}")
    if x.ndim != 4:
        raise RuntimeError(f"{name}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got "
                           f"shape {tuple(x.shape)}")


def _check_conv_args(x: np.ndarray, w: np.ndarray, b, groups: int) -> None:
    _check_ranks_2d(x, w, "conv2d", "out, in/groups")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive integer, got {groups!r}")
    if x.shape[1] != w.shape[1] * groups:
        raise RuntimeError(
            f"conv2d: weight of shape {tuple(w.shape)} with groups={groups} expects input with "
            f"{w.shape[1] * groups} channels, got input of shape {tuple(x.shape)}"
        )
    if w.shape[0] % groups:
        raise RuntimeError(f"conv2d: weight of shape {tuple(w.shape)} has {w.shape[0]} output "
                           f"channels, not divisible by groups={groups}")
    if b is not None and b.shape != (w.shape[0],):
        raise RuntimeError(f"conv2d: bias of shape {tuple(b.shape)} does not match "
                           f"{w.shape[0]} output channels")
    if x.dtype != w.dtype or (b is not None and b.dtype != w.dtype):
        raise RuntimeError(
            f"conv2d: input dtype {x.dtype}, weight dtype {w.dtype}"
            + (f" and bias dtype {b.dtype}" if b is not None else "") + " must be the same"
        )


def _windows(Xp: np.ndarray, kh: int, kw: int, ho: int, wo: int, stride: tuple,
             dilation: tuple) -> np.ndarray:
    """Read-only view (N, C, kh, kw, ho, wo) of every kernel window of the padded input."""
    sN, sC, sH, sW = Xp.strides
    (sh, sw), (dh, dw) = stride, dilation
    shape = (Xp.shape[0], Xp.shape[1], kh, kw, ho, wo)
    return as_strided(Xp, shape, (sN, sC, sH * dh, sW * dw, sH * sh, sW * sw), writeable=False)


def _chunk(per_sample: int, n: int) -> int:
    return max(1, min(n, _CHUNK_BYTES // max(1, per_sample)))


def _correlate(Xp: np.ndarray, W3: np.ndarray, B: np.ndarray | None, kh: int, kw: int, ho: int,
               wo: int, stride: tuple, dilation: tuple) -> np.ndarray:
    """Grouped cross-correlation of padded ``Xp`` with weights (groups, out/g, in/g*kh*kw)."""
    n, c = Xp.shape[:2]
    g, og, ck = W3.shape
    hw = ho * wo
    windows = _windows(Xp, kh, kw, ho, wo, stride, dilation)
    chunk = _chunk(c * kh * kw * hw * Xp.itemsize, n)
    cols = np.empty((chunk, c, kh, kw, ho, wo), dtype=Xp.dtype)
    cols4 = cols.reshape(chunk, g, ck, hw)
    out = np.empty((n, g * og, ho, wo), dtype=Xp.dtype)
    out4 = out.reshape(n, g, og, hw)
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        np.copyto(cols[:m], windows[n0:n0 + m])
        np.matmul(W3, cols4[:m], out=out4[n0:n0 + m])
        if B is not None:  # while the chunk is still in cache
            out[n0:n0 + m] += B.reshape(-1, 1, 1)
    return out


def _shard_of(seg, n: int) -> tuple[int, np.ndarray]:
    """(accumulators, accumulator of each sample): one per micro-shard inside row_segments."""
    if seg is None:
        return 1, np.zeros(n, dtype=np.intp)
    return seg.count, np.repeat(np.arange(seg.count), seg.sizes)


def _weight_grad(Xp: np.ndarray, G4: np.ndarray, wshape: tuple, ho: int, wo: int,
                 stride: tuple, dilation: tuple, seg=None) -> np.ndarray:
    """Sum over samples of G @ cols.T, computed as cols @ G.T (the faster BLAS orientation).

    Samples are added one by one in order, so with ``seg`` each micro-shard's sum (stacked on a
    leading axis) has the bits of a pass over that shard alone.
    """
    n, c = Xp.shape[:2]
    _, g, og, hw = G4.shape
    _, cg, kh, kw = wshape
    ck = cg * kh * kw
    windows = _windows(Xp, kh, kw, ho, wo, stride, dilation)
    chunk = _chunk(c * kh * kw * hw * Xp.itemsize, n)
    cols = np.empty((chunk, c, kh, kw, ho, wo), dtype=Xp.dtype)
    cols4 = cols.reshape(chunk, g, ck, hw)
    shards, owner = _shard_of(seg, n)
    gwT = np.zeros((shards, g, ck, og), dtype=Xp.dtype)
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        np.copyto(cols[:m], windows[n0:n0 + m])
        for i in range(m):
            gwT[owner[n0 + i]] += np.matmul(cols4[i], G4[n0 + i].transpose(0, 2, 1))
    gw = np.ascontiguousarray(gwT.transpose(0, 1, 3, 2)).reshape((shards,) + tuple(wshape))
    return gw if seg is not None else gw[0]


def _pad_or_crop(a: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Zero-pad (positive amounts) or crop (negative amounts) the last two dims."""
    n, c, h, w = a.shape
    out = np.zeros((n, c, h + top + bottom, w + left + right), dtype=a.dtype)
    src = a[:, :, max(0, -top):h - max(0, -bottom), max(0, -left):w - max(0, -right)]
    out[:, :, max(0, top):max(0, top) + src.shape[2],
        max(0, left):max(0, left) + src.shape[3]] = src
    return out


def _stride1_grads(G: np.ndarray, grid: np.ndarray, Wt: np.ndarray, groups: int, pads: tuple,
                   dilation: tuple, full: bool, need_x: bool, need_w: bool, seg=None):
    """Input and weight gradients of a stride-1 conv from one im2col of the output gradient.

    ``grid`` is the padded input when ``full`` (copying padding modes), else the unpadded input.
    Windows of G (padded so each lands on a ``grid`` position) correlated with the flipped,
    transposed weights give the gradient at every ``grid`` position; the same windows times
    ``grid`` give the weight gradient, so the input is never unfolded in backward.
    """
    o, cg, kh, kw = Wt.shape
    g, og = groups, o // groups
    eh, ew = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    n, c, rows, cols = grid.shape
    (pt, _), (pl, _) = pads
    top, left = (eh, ew) if full else (eh - pt, ew - pl)
    Gq = _pad_or_crop(G, top, rows + eh - G.shape[2] - top, left, cols + ew - G.shape[3] - left)
    windows = _windows(Gq, kh, kw, rows, cols, (1, 1), dilation)
    r = rows * cols
    chunk = _chunk(o * kh * kw * r * G.itemsize, n)
    buf = np.empty((chunk, o, kh, kw, rows, cols), dtype=G.dtype)
    buf4 = buf.reshape(chunk, g, og * kh * kw, r)
    gx = gx4 = W3 = acc = grid4 = None
    if need_x:
        flipped = Wt.reshape(g, og, cg, kh, kw).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
        W3 = np.ascontiguousarray(flipped).reshape(g, cg, og * kh * kw)
        gx = np.empty((n, c, rows, cols), dtype=G.dtype)
        gx4 = gx.reshape(n, g, cg, r)
    shards, owner = _shard_of(seg, n)
    if need_w:
        grid4 = np.ascontiguousarray(grid).reshape(n, g, cg, r)
        acc = np.zeros((shards, g, og * kh * kw, cg), dtype=G.dtype)
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        np.copyto(buf[:m], windows[n0:n0 + m])
        if need_x:
            np.matmul(W3, buf4[:m], out=gx4[n0:n0 + m])
        if need_w:
            for i in range(m):
                acc[owner[n0 + i]] += np.matmul(buf4[i], grid4[n0 + i].transpose(0, 2, 1))
    gw = None
    if need_w:
        flipped = acc.reshape(shards, g, og, kh, kw, cg)[:, :, :, ::-1, ::-1, :]
        gw = np.ascontiguousarray(flipped.transpose(0, 1, 2, 5, 3, 4)).reshape(
            (shards,) + tuple(Wt.shape))
        gw = gw if seg is not None else gw[0]
    return gx, gw


def _input_grad_col2im(G4: np.ndarray, Wt: np.ndarray, xp_shape: tuple, ho: int, wo: int,
                       stride: tuple, dilation: tuple) -> np.ndarray:
    """Gradient of the padded input by col2im: one strided add per kernel position."""
    n, g, og, hw = G4.shape
    _, cg, kh, kw = Wt.shape
    c = cg * g
    WT = Wt.reshape(g, og, cg * kh * kw).transpose(0, 2, 1)
    chunk = _chunk(c * kh * kw * hw * Wt.itemsize, n)
    gcols = np.empty((chunk, c, kh, kw, ho, wo), dtype=Wt.dtype)
    gcols4 = gcols.reshape(chunk, g, cg * kh * kw, hw)
    gxp = np.zeros(xp_shape, dtype=Wt.dtype)
    (sh, sw), (dh, dw) = stride, dilation
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        np.matmul(WT, G4[n0:n0 + m], out=gcols4[:m])
        target = gxp[n0:n0 + m]
        for i in range(kh):
            for j in range(kw):
                target[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                       j * dw:j * dw + sw * (wo - 1) + 1:sw] += gcols[:m, :, i, j]
    return gxp


def _batched_arrays(input: Tensor, weight: Tensor, bias: Tensor | None) -> tuple:
    """The input's array with a batch axis, the weight's and bias's, and whether it had none."""
    X, Wt = input._data, weight._data
    B = bias._data if bias is not None else None
    unbatched = X.ndim == 3
    if unbatched:
        X = X[None]
    return X, Wt, B, unbatched


def _conv2d(input: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple, pads: tuple,
            dilation: tuple, groups: int, padding_mode: str = "zeros") -> Tensor:
    """The fused kernel; ``pads`` is ((top, bottom), (left, right)), already validated."""
    X, Wt, B, unbatched = _batched_arrays(input, weight, bias)
    _check_conv_args(X, Wt, B, groups)
    n, c, h, w = X.shape
    o, cg, kh, kw = Wt.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho = _out_size(h, pads[0], kh, sh, dh)
    wo = _out_size(w, pads[1], kw, sw, dw)
    if ho < 1 or wo < 1:
        raise RuntimeError(
            f"conv2d: padded input of size ({h + sum(pads[0])} x {w + sum(pads[1])}) is smaller "
            f"than the dilated kernel ({dh * (kh - 1) + 1} x {dw * (kw - 1) + 1}); input shape "
            f"{tuple(input.shape)}, weight shape {tuple(Wt.shape)}"
        )
    seg = None if unbatched else active_segments(X)
    Xp = _pad_input(X, pads, padding_mode)
    out = _correlate(Xp, Wt.reshape(groups, o // groups, cg * kh * kw), B, kh, kw, ho, wo, stride,
                     dilation)

    def backward(grad):
        G = np.ascontiguousarray(grad[None] if unbatched else grad)
        G4 = G.reshape(n, groups, o // groups, ho * wo)
        gx = gw = gb = None
        need_x, need_w = input._requires_grad, weight._requires_grad
        # Unfolding G (o channels) beats unfolding X (c channels) plus col2im unless o >> c.
        if stride == (1, 1) and need_x and o <= 3 * c:
            full = padding_mode != "zeros"
            gx, gw = _stride1_grads(G, Xp if full else X, Wt, groups, pads, dilation, full,
                                    need_x, need_w, seg)
            if full:
                gx = _unpad_grad(gx, X.shape, pads, padding_mode)
        else:
            if need_w:  # unfolding the input: cheapest when only the weights need a gradient
                gw = _weight_grad(Xp, G4, Wt.shape, ho, wo, stride, dilation, seg)
            if need_x:
                gxp = _input_grad_col2im(G4, Wt, Xp.shape, ho, wo, stride, dilation)
                gx = _unpad_grad(gxp, X.shape, pads, padding_mode)
        if gx is not None and unbatched:
            gx = gx[0]
        if seg is not None and gw is not None:
            gw = seg.deliver(weight, gw)
        if B is None:
            return gx, gw
        if bias._requires_grad:
            if seg is None:
                gb = G.sum(axis=(0, 2, 3))
            else:
                gb = seg.deliver(bias, seg.per_shard(lambda gs: gs.sum(axis=(0, 2, 3)), G))
        return gx, gw, gb

    def decomposition(x, wt, b=None):
        return _conv2d_ops(x, wt, b, stride, pads, dilation, groups, padding_mode)

    inputs = (input, weight) if bias is None else (input, weight, bias)
    return _op(out[0] if unbatched else out, inputs, backward, "ConvolutionBackward0",
               graph=lambda g: vjp_via(decomposition, inputs, g))


def _conv2d_ops(x: Tensor, wt: Tensor, b, stride, pads, dilation, groups, padding_mode) -> Tensor:
    """The convolution in differentiable ops (pad, unfold by indexing, matmul): conv2d's double
    backward. It holds all windows at once, so it costs memory only create_graph=True pays."""
    unbatched = x.ndim == 3
    if unbatched:
        x = _t.unsqueeze(x, 0)
    n, c, h, w = x.shape
    o, cg, kh, kw = wt.shape
    (pt, pb), (pl, pr) = pads
    if padding_mode == "zeros":
        if pt or pb or pl or pr:
            inner = (slice(None), slice(None), slice(pt, pt + h), slice(pl, pl + w))
            x = _t._index_add_zeros((n, c, h + pt + pb, w + pl + pr), inner, x)
    else:
        src_h = np.pad(np.arange(h), (pt, pb), mode=_PADDING_MODES[padding_mode])
        src_w = np.pad(np.arange(w), (pl, pr), mode=_PADDING_MODES[padding_mode])
        x = _t.getitem(x, (slice(None), slice(None), src_h[:, None], src_w[None, :]))
    ho = _out_size(h, pads[0], kh, stride[0], dilation[0])
    wo = _out_size(w, pads[1], kw, stride[1], dilation[1])
    rows = (np.arange(ho) * stride[0])[:, None] + (np.arange(kh) * dilation[0])[None, :]
    cols = (np.arange(wo) * stride[1])[:, None] + (np.arange(kw) * dilation[1])[None, :]
    # (n, c, ho, kh, wo, kw) -> (n * ho * wo, groups, cg * kh * kw)
    windows = _t.getitem(x, (slice(None), slice(None), rows[:, :, None, None],
                             cols[None, None, :, :]))
    windows = _t.reshape(_t.permute(windows, (0, 2, 4, 1, 3, 5)), (n * ho * wo, groups, -1))
    kernels = _t.reshape(wt, (groups, o // groups, cg * kh * kw))
    prod = _t.matmul(_t.transpose(windows, 0, 1), _t.transpose(kernels, 1, 2))
    out = _t.permute(_t.reshape(_t.transpose(prod, 0, 1), (n, ho, wo, o)), (0, 3, 1, 2))
    if b is not None:
        out = _t.add(out, _t.reshape(b, (1, o, 1, 1)))
    return _t.squeeze(out, 0) if unbatched else out


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> Tensor:
    """2-D cross-correlation over (N, C, H, W) or (C, H, W) input, as ``F.conv2d``."""
    kernel = tuple(weight.shape[2:]) if weight.ndim == 4 else (1, 1)
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    _check_positive(stride, "stride")
    _check_positive(dilation, "dilation")
    pads = _resolve_padding(padding, kernel, stride, dilation)
    return _conv2d(input, weight, bias, stride, pads, dilation, groups)


def _check_positive(pair: tuple, name: str) -> None:
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {pair}")


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    """Raises unless ``groups`` is positive and divides both channel counts."""
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                         f"must be divisible by groups ({groups})")


def _check_padding_mode(padding_mode: str) -> None:
    """Raises unless ``padding_mode`` is one the convolution layers know."""
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {sorted(_PADDING_MODES)}, got "
                         f"{padding_mode!r}")


def _conv_extra_repr(conv, dims: int) -> str:
    """A Conv1d/Conv2d's settings as PyTorch prints them: those at their defaults left out."""
    s = (f"{conv.in_channels}, {conv.out_channels}, kernel_size={conv.kernel_size}, "
         f"stride={conv.stride}")
    if conv.padding != (0,) * dims:
        s += f", padding={conv.padding}"
    if conv.dilation != (1,) * dims:
        s += f", dilation={conv.dilation}"
    if conv.groups != 1:
        s += f", groups={conv.groups}"
    if conv.bias is None:
        s += ", bias=False"
    if conv.padding_mode != "zeros":
        s += f", padding_mode={conv.padding_mode}"
    return s


def _reset_conv_parameters(weight, bias, kernel_size: tuple) -> None:
    """PyTorch's conv init: kaiming_uniform_(a=sqrt(5)) weight, U(+-1/sqrt(fan_in)) bias."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = weight.shape[1] * math.prod(kernel_size)
        if fan_in:
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(bias, -bound, bound)


class Conv2d(Module):
    """2-D convolution layer with weight (out, in/groups, kH, kW), as ``torch.nn.Conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None):
        super().__init__()
        check_device(device)
        _check_groups(in_channels, out_channels, groups)
        _check_padding_mode(padding_mode)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        _check_positive(self.kernel_size, "kernel_size")
        _check_positive(self.stride, "stride")
        _check_positive(self.dilation, "dilation")
        self._pads = _resolve_padding(padding, self.kernel_size, self.stride, self.dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding")
        self.groups, self.padding_mode = groups, padding_mode
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        _add_weight_and_bias(self, shape, out_channels, bias, dtype)

    def reset_parameters(self) -> None:
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)) weights, U(+-1/sqrt(fan_in)) bias."""
        _reset_conv_parameters(self.weight, self.bias, self.kernel_size)

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim not in (3, 4):
            raise RuntimeError(f"Conv2d: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got "
                               f"shape {tuple(input.shape)}")
        return _conv2d(input, self.weight, self.bias, self.stride, self._pads, self.dilation,
                       self.groups, self.padding_mode)

    def extra_repr(self) -> str:
        return _conv_extra_repr(self, 2)
