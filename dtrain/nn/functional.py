"""``dtrain.nn.functional``: the stateless forms of the layers and losses (PyTorch's ``F``)."""

from __future__ import annotations

import numpy as np

from ..autograd.tensor import Tensor, sigmoid, tanh
from ..autograd.tensor import log_softmax as _log_softmax
from ..autograd.tensor import relu as _relu
from ..autograd.tensor import softmax as _softmax
from ._kernels import elu, gelu, linear, softplus
from ._kernels import hardswish as _hardswish
from ._kernels import mish as _mish
from ._kernels import silu as _silu
from .activation import _implicit_dim
from .conv import conv2d
from .conv1d import conv1d
from .conv_transpose import conv_transpose1d, conv_transpose2d
from .dropout import dropout, dropout2d
from .loss_functions import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    nll_loss,
    smooth_l1_loss,
)
from .normalization import batch_norm, group_norm, layer_norm, normalize
from .padding import pad
from .pointwise import cosine_similarity, hardtanh, leaky_relu, logsigmoid, prelu, relu6
from .pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .pooling1d import avg_pool1d, max_pool1d
from .sparse import embedding
from .upsampling import interpolate, pixel_shuffle, pixel_unshuffle

__all__ = [
    "adaptive_avg_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "batch_norm",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "cosine_similarity",
    "cross_entropy",
    "dropout",
    "dropout2d",
    "elu",
    "embedding",
    "gelu",
    "group_norm",
    "hardswish",
    "hardtanh",
    "huber_loss",
    "interpolate",
    "kl_div",
    "l1_loss",
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "logsigmoid",
    "max_pool1d",
    "max_pool2d",
    "mish",
    "mse_loss",
    "nll_loss",
    "normalize",
    "one_hot",
    "pad",
    "pixel_shuffle",
    "pixel_unshuffle",
    "prelu",
    "relu",
    "relu6",
    "sigmoid",
    "silu",
    "smooth_l1_loss",
    "softmax",
    "softplus",
    "tanh",
]


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(0, x)."""
    return _relu(input)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x)."""
    return _silu(input)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * tanh(softplus(x))."""
    return _mish(input)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * relu6(x + 3) / 6."""
    return _hardswish(input)


def softmax(input: Tensor, dim: int | None = None, dtype=None) -> Tensor:
    """Softmax along ``dim`` (optionally computed in ``dtype``)."""
    if dtype is not None:
        input = input.type(dtype)
    return _softmax(input, _implicit_dim(dim, input))


def log_softmax(input: Tensor, dim: int | None = None, dtype=None) -> Tensor:
    """Log-softmax along ``dim`` (optionally computed in ``dtype``)."""
    if dtype is not None:
        input = input.type(dtype)
    return _log_softmax(input, _implicit_dim(dim, input))


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot encoding of class indices, with a trailing class dimension."""
    idx = tensor._data if isinstance(tensor, Tensor) else np.asarray(tensor)
    if idx.dtype.kind not in "iu":
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    if num_classes == -1:
        num_classes = int(idx.max()) + 1 if idx.size else 0
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise RuntimeError("Class values must be smaller than num_classes.")
    out = np.zeros(idx.shape + (num_classes,), dtype=np.int64)
    np.put_along_axis(out, idx[..., None].astype(np.int64), 1, axis=-1)
    return Tensor._wrap(out)
