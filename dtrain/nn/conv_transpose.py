"""Transposed convolution: ``conv_transpose2d``/``ConvTranspose2d`` and their 1-D forms.

A transposed convolution is the input gradient of a convolution, so it reuses ``conv.py``'s
kernels the other way round: the forward is the col2im of ``weight.T @ input`` (one strided add
per kernel position), the input gradient is the im2col convolution of the output gradient with
the same weight, and the weight gradient is that convolution's weight gradient. The 1-D forms
run the 2-D kernel on height-1 views.
"""

from __future__ import annotations

import numpy as np

from ..autograd import tensor as _t
from ..autograd.graph_engine import vjp_via
from ..autograd.tensor import Tensor, _op
from .conv import (_batched_arrays, _check_groups, _check_positive, _check_ranks_2d, _correlate,
                   _input_grad_col2im, _pad_or_crop, _pair, _reset_conv_parameters, _weight_grad)
from .conv1d import _check_1d, _single
from .module import Module
from .parameter import _add_weight_and_bias


def _check_args(X: np.ndarray, Wt: np.ndarray, B, groups: int) -> None:
    _check_ranks_2d(X, Wt, "conv_transpose2d", "in, out/groups")
    if not isinstance(groups, int) or groups < 1 or Wt.shape[0] % groups:
        raise RuntimeError(f"conv_transpose2d: weight of shape {tuple(Wt.shape)} has "
                           f"{Wt.shape[0]} input channels, not divisible by groups={groups}")
    if X.shape[1] != Wt.shape[0]:
        raise RuntimeError(f"conv_transpose2d: weight of shape {tuple(Wt.shape)} expects input "
                           f"with {Wt.shape[0]} channels, got input of shape {tuple(X.shape)}")
    if B is not None and B.shape != (Wt.shape[1] * groups,):
        raise RuntimeError(f"conv_transpose2d: bias of shape {tuple(B.shape)} does not match "
                           f"{Wt.shape[1] * groups} output channels")
    if X.dtype != Wt.dtype or (B is not None and B.dtype != Wt.dtype):
        raise RuntimeError(f"conv_transpose2d: input dtype {X.dtype} and weight dtype {Wt.dtype}"
                           + (f" and bias dtype {B.dtype}" if B is not None else "")
                           + " must be the same")


def _output_padding(op: tuple, stride: tuple, dilation: tuple) -> tuple:
    """``op`` checked: each entry smaller than the stride or the dilation, as PyTorch asks."""
    for o, s, d in zip(op, stride, dilation):
        if o < 0 or o >= max(s, d):
            raise RuntimeError(f"output padding {op} must be non-negative and smaller than "
                               f"either stride {stride} or dilation {dilation}")
    return op


def _conv_transpose2d(input: Tensor, weight: Tensor, bias, stride: tuple, padding: tuple,
                      output_padding: tuple, groups: int, dilation: tuple) -> Tensor:
    """The fused kernel on checked pairs."""
    X, Wt, B, unbatched = _batched_arrays(input, weight, bias)
    _check_args(X, Wt, B, groups)
    n, cin, h, w = X.shape
    _, cg, kh, kw = Wt.shape
    cout = cg * groups
    full = tuple((size - 1) * s + d * (k - 1) + 1 + o for size, s, d, k, o in
                 zip((h, w), stride, dilation, (kh, kw), output_padding))
    ho, wo = full[0] - 2 * padding[0], full[1] - 2 * padding[1]
    if ho < 1 or wo < 1:
        raise RuntimeError(f"conv_transpose2d: input of shape {tuple(input.shape)} with weight "
                           f"{tuple(Wt.shape)}, stride {stride} and padding {padding} gives the "
                           f"output size ({ho} x {wo}); it must be positive")
    X4 = np.ascontiguousarray(X).reshape(n, groups, cin // groups, h * w)
    grown = _input_grad_col2im(X4, Wt, (n, cout, *full), h, w, stride, dilation)
    (ph, pw) = padding
    out = np.ascontiguousarray(grown[:, :, ph:ph + ho, pw:pw + wo])
    if B is not None:
        out += B.reshape(-1, 1, 1)

    def backward(grad):
        G = grad[None] if unbatched else grad
        Gfull = _pad_or_crop(np.ascontiguousarray(G), ph, full[0] - ho - ph, pw,
                             full[1] - wo - pw)
        gx = gw = gb = None
        if input._requires_grad:
            W3 = Wt.reshape(groups, cin // groups, cg * kh * kw)
            gx = _correlate(Gfull, W3, None, kh, kw, h, w, stride, dilation)
            gx = gx[0] if unbatched else gx
        if weight._requires_grad:
            gw = _weight_grad(Gfull, X4, Wt.shape, h, w, stride, dilation)
        if B is None:
            return gx, gw
        if bias._requires_grad:
            gb = G.sum(axis=(0, 2, 3))
        return gx, gw, gb

    def decomposition(x, wt, b=None):
        x4 = _t.unsqueeze(x, 0) if unbatched else x
        rows = (np.arange(h) * stride[0])[:, None] + (np.arange(kh) * dilation[0])[None, :]
        cols = (np.arange(w) * stride[1])[:, None] + (np.arange(kw) * dilation[1])[None, :]
        xg = _t.permute(_t.reshape(x4, (n, groups, cin // groups, h * w)), (1, 0, 3, 2))
        prod = _t.matmul(_t.reshape(xg, (groups, n * h * w, cin // groups)),
                         _t.reshape(wt, (groups, cin // groups, cg * kh * kw)))
        prod = _t.permute(_t.reshape(prod, (groups, n, h, w, cg, kh, kw)), (1, 0, 4, 2, 5, 3, 6))
        windows = _t.reshape(prod, (n, cout, h, kh, w, kw))
        grown_t = _t._index_add_zeros((n, cout, *full), (slice(None), slice(None),
                                                        rows[:, :, None, None],
                                                        cols[None, None, :, :]), windows)
        out_t = _t.getitem(grown_t, (slice(None), slice(None), slice(ph, ph + ho),
                                     slice(pw, pw + wo)))
        if b is not None:
            out_t = _t.add(out_t, _t.reshape(b, (1, cout, 1, 1)))
        return _t.squeeze(out_t, 0) if unbatched else out_t

    inputs = (input, weight) if bias is None else (input, weight, bias)
    return _op(out[0] if unbatched else out, inputs, backward, "ConvolutionBackward0",
               graph=lambda g: vjp_via(decomposition, inputs, g))


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1,
                     padding=0, output_padding=0, groups: int = 1, dilation=1) -> Tensor:
    """Transposed 2-D convolution (a 'deconvolution'), as ``F.conv_transpose2d``."""
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    _check_positive(stride, "stride")
    _check_positive(dilation, "dilation")
    padding = _pair(padding, "padding")
    if min(padding) < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    op = _output_padding(_pair(output_padding, "output_padding"), stride, dilation)
    return _conv_transpose2d(input, weight, bias, stride, padding, op, groups, dilation)


def _conv_transpose1d(input: Tensor, weight: Tensor, bias, stride: int, padding: int,
                      output_padding: int, groups: int, dilation: int) -> Tensor:
    """The 2-D kernel on height-1 views of (N, C, L) or (C, L) input and (in, out/g, k) weight."""
    _check_1d(input, weight, "conv_transpose1d", "in, out/groups")
    out = _conv_transpose2d(input.unsqueeze(-2), weight.unsqueeze(2), bias, (1, stride),
                            (0, padding), (0, output_padding), groups, (1, dilation))
    return out.squeeze(-2)


def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1,
                     padding=0, output_padding=0, groups: int = 1, dilation=1) -> Tensor:
    """Transposed 1-D convolution, as ``F.conv_transpose1d``."""
    s, d = _single(stride, "stride"), _single(dilation, "dilation")
    p, op = _single(padding, "padding"), _single(output_padding, "output_padding")
    _check_positive((s, d), "stride and dilation")
    if p < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    _output_padding((op,), (s,), (d,))
    return _conv_transpose1d(input, weight, bias, s, p, op, groups, d)


class _ConvTransposeNd(Module):
    """Shared body of ConvTranspose1d/2d: weight (in, out/groups, *kernel), PyTorch's init."""

    _dims = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 padding_mode: str = "zeros", dtype=None):
        super().__init__()
        kind = type(self).__name__
        _check_groups(in_channels, out_channels, groups)
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {kind}, got '
                             f"{padding_mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = self._tuple(kernel_size, "kernel_size")
        self.stride = self._tuple(stride, "stride")
        self.dilation = self._tuple(dilation, "dilation")
        self.padding = self._tuple(padding, "padding")
        for name, value in (("kernel_size", self.kernel_size), ("stride", self.stride),
                            ("dilation", self.dilation)):
            _check_positive(value, name)
        if min(self.padding) < 0:
            raise ValueError(f"padding must be non-negative, got {self.padding}")
        self.output_padding = self._tuple(output_padding, "output_padding")
        self.groups, self.padding_mode = groups, padding_mode
        shape = (in_channels, out_channels // groups, *self.kernel_size)
        _add_weight_and_bias(self, shape, out_channels, bias, dtype)

    @classmethod
    def _tuple(cls, value, name: str) -> tuple:
        return _pair(value, name) if cls._dims == 2 else (_single(value, name),)

    def reset_parameters(self) -> None:
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)) on the weight, U(+-1/sqrt(fan_in)) bias.

        As in PyTorch the fan-in is read from the weight's dim 1 (out/groups * kernel size).
        """
        _reset_conv_parameters(self.weight, self.bias, self.kernel_size)

    def _output_padding_for(self, input: Tensor, output_size) -> tuple:
        """The output padding that makes the output ``output_size`` (PyTorch's rule)."""
        if output_size is None:  # checked here, as PyTorch checks it in the forward
            return _output_padding(self.output_padding, self.stride, self.dilation)
        n = self._dims
        size = [int(s) for s in output_size][-n:]
        if len(size) != n:
            raise ValueError(f"{type(self).__name__}: output_size must have {n} or more "
                             f"elements, got {output_size!r}")
        pads = []
        for i in range(n):
            smallest = ((input.shape[-n + i] - 1) * self.stride[i] - 2 * self.padding[i]
                        + self.dilation[i] * (self.kernel_size[i] - 1) + 1)
            if not smallest <= size[i] < smallest + self.stride[i]:
                raise ValueError(f"requested an output size of {size}, but valid sizes range "
                                 f"from {smallest} to {smallest + self.stride[i] - 1} (for an "
                                 f"input of {list(input.shape[-n:])})")
            pads.append(size[i] - smallest)
        return tuple(pads)

    def forward(self, input: Tensor, output_size=None) -> Tensor:
        n = self._dims
        if input.ndim not in (n + 1, n + 2):
            raise RuntimeError(f"{type(self).__name__}: expected a {n + 1}-D or {n + 2}-D "
                               f"(batched) input, got shape {tuple(input.shape)}")
        op = self._output_padding_for(input, output_size)
        if n == 1:
            return _conv_transpose1d(input, self.weight, self.bias, self.stride[0],
                                     self.padding[0], op[0], self.groups, self.dilation[0])
        return _conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, op,
                                 self.groups, self.dilation)

    def extra_repr(self) -> str:
        zeros, ones = (0,) * self._dims, (1,) * self._dims
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != zeros:
            s += f", padding={self.padding}"
        if self.dilation != ones:
            s += f", dilation={self.dilation}"
        if self.output_padding != zeros:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class ConvTranspose1d(_ConvTransposeNd):
    """Transposed 1-D convolution with weight (in, out/groups, k), as PyTorch's layer."""

    _dims = 1


class ConvTranspose2d(_ConvTransposeNd):
    """Transposed 2-D convolution with weight (in, out/groups, kH, kW), as PyTorch's layer."""

    _dims = 2
