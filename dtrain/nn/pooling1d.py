"""1-D pooling (text and signal CNNs): ``max_pool1d``/``avg_pool1d`` and their modules, computed
by the 2-D kernels on a unit height, so values, gradients and indices are theirs."""

from __future__ import annotations

import numbers

from ..autograd.tensor import Tensor
from .module import Module
from .pooling import _MaxPoolNd, avg_pool2d, max_pool2d


def _one(value, name: str) -> int:
    """A 1-D pooling size given as n or (n,)."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, (tuple, list)) and len(value) == 1:
        return int(value[0])
    raise ValueError(f"{name} must be an int or a 1-tuple, got {value!r}")


def _check_rank(input: Tensor, name: str) -> None:
    if input.ndim not in (2, 3):
        raise RuntimeError(f"{name}: expected 2D or 3D (batch mode) tensor for input, got "
                           f"{input.ndim}D")


def max_pool1d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode: bool = False, return_indices: bool = False):
    """Max over each window of the last dimension of (N, C, L) or (C, L)."""
    _check_rank(input, "max_pool1d")
    k = _one(kernel_size, "kernel_size")
    s = k if stride is None or stride == () else _one(stride, "stride")
    out = max_pool2d(input.unsqueeze(-2), (1, k), (1, s), (0, _one(padding, "padding")),
                     (1, _one(dilation, "dilation")), ceil_mode, return_indices)
    if return_indices:
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)


def avg_pool1d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """Mean over each window of the last dimension of (N, C, L) or (C, L)."""
    _check_rank(input, "avg_pool1d")
    k = _one(kernel_size, "kernel_size")
    s = k if stride is None or stride == () else _one(stride, "stride")
    return avg_pool2d(input.unsqueeze(-2), (1, k), (1, s), (0, _one(padding, "padding")),
                      ceil_mode, count_include_pad).squeeze(-2)


class MaxPool1d(_MaxPoolNd):
    """1-D max pooling, as ``torch.nn.MaxPool1d`` (stride defaults to the kernel size)."""

    def forward(self, input: Tensor):
        return max_pool1d(input, *self._pool_args())


class AvgPool1d(Module):
    """1-D average pooling, as ``torch.nn.AvgPool1d`` (sizes kept as 1-tuples, as torch's)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True):
        super().__init__()
        self.kernel_size = (_one(kernel_size, "kernel_size"),)
        self.stride = (_one(stride if stride is not None else kernel_size, "stride"),)
        self.padding = (_one(padding, "padding"),)
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, input: Tensor) -> Tensor:
        return avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
