"""1-D convolution: ``conv1d`` and ``Conv1d`` run the 2-D kernel on a height-1 view.

(N, C, L) becomes (N, C, 1, L) and the weight (O, C/groups, k) becomes (O, C/groups, 1, k): no
copy, and the im2col/GEMM kernel of ``conv.py`` with its backward does the work.
"""

from __future__ import annotations

import numbers

from ..autograd.tensor import Tensor
from .conv import (_check_groups, _check_padding_mode, _conv2d, _conv_extra_repr,
                   _reset_conv_parameters, _resolve_padding)
from .module import Module
from .parameter import _add_weight_and_bias


def _single(value, name: str) -> int:
    """An int or a 1-tuple of ints as an int (PyTorch's ``_single``), checked."""
    item = value[0] if isinstance(value, (tuple, list)) and len(value) == 1 else value
    if isinstance(item, numbers.Integral) and not isinstance(item, bool):
        return int(item)
    raise ValueError(f"{name} must be an int or a 1-tuple of ints, got {value!r}")


def _pads_1d(padding, k: int, s: int, d: int) -> tuple:
    """``padding`` (int, 1-tuple, 'valid', 'same') as the 2-D kernel's ((0, 0), (left, right))."""
    if isinstance(padding, str):
        return _resolve_padding(padding, (1, k), (1, s), (1, d))
    p = _single(padding, "padding")
    if p < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return ((0, 0), (p, p))


def _check_1d(input: Tensor, weight: Tensor, name: str, layout: str = "out, in/groups") -> None:
    """Raises unless ``weight`` is 3-D (``layout``, k) and ``input`` is (C, L) or (N, C, L)."""
    if weight.ndim != 3:
        raise RuntimeError(f"{name}: expected a 3-D weight ({layout}, k), got shape "
                           f"{tuple(weight.shape)}")
    if input.ndim not in (2, 3):
        raise RuntimeError(f"{name}: expected a 2-D (C, L) or 3-D (N, C, L) input, got shape "
                           f"{tuple(input.shape)}")


def _conv1d(input: Tensor, weight: Tensor, bias, stride: int, pads: tuple, dilation: int,
            groups: int, padding_mode: str = "zeros") -> Tensor:
    """The 2-D kernel on height-1 views; ``pads`` as ``_pads_1d`` returns them."""
    if input.shape[-2] != weight.shape[1] * groups:
        raise RuntimeError(
            f"conv1d: weight of shape {tuple(weight.shape)} with groups={groups} expects input "
            f"with {weight.shape[1] * groups} channels, got input of shape {tuple(input.shape)}")
    out = _conv2d(input.unsqueeze(-2), weight.unsqueeze(2), bias, (1, stride), pads,
                  (1, dilation), groups, padding_mode)
    return out.squeeze(-2)


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> Tensor:
    """1-D cross-correlation over (N, C, L) or (C, L) input, as ``F.conv1d``."""
    _check_1d(input, weight, "conv1d")
    s, d = _single(stride, "stride"), _single(dilation, "dilation")
    if s < 1 or d < 1:
        raise ValueError(f"conv1d: stride {stride!r} and dilation {dilation!r} must be positive")
    pads = _pads_1d(padding, weight.shape[2], s, d)
    return _conv1d(input, weight, bias, s, pads, d, groups)


class Conv1d(Module):
    """1-D convolution layer with weight (out, in/groups, k), as ``torch.nn.Conv1d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 dtype=None):
        super().__init__()
        _check_groups(in_channels, out_channels, groups)
        _check_padding_mode(padding_mode)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (_single(kernel_size, "kernel_size"),)
        self.stride = (_single(stride, "stride"),)
        self.dilation = (_single(dilation, "dilation"),)
        for name, value in (("kernel_size", self.kernel_size), ("stride", self.stride),
                            ("dilation", self.dilation)):
            if value[0] < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        self._pads = _pads_1d(padding, self.kernel_size[0], self.stride[0], self.dilation[0])
        self.padding = padding if isinstance(padding, str) else (_single(padding, "padding"),)
        self.groups, self.padding_mode = groups, padding_mode
        shape = (out_channels, in_channels // groups, self.kernel_size[0])
        _add_weight_and_bias(self, shape, out_channels, bias, dtype)

    def reset_parameters(self) -> None:
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)) weights, U(+-1/sqrt(fan_in)) bias."""
        _reset_conv_parameters(self.weight, self.bias, self.kernel_size)

    def forward(self, input: Tensor) -> Tensor:
        _check_1d(input, self.weight, "Conv1d")
        return _conv1d(input, self.weight, self.bias, self.stride[0], self._pads,
                       self.dilation[0], self.groups, self.padding_mode)

    def extra_repr(self) -> str:
        return _conv_extra_repr(self, 1)
