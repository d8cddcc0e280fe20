"""``Parameter``: a leaf tensor that a ``Module`` registers as trainable when assigned to it."""

from __future__ import annotations

import numpy as np

from ..autograd.tensor import Tensor, get_default_dtype


class Parameter(Tensor):
    """A Tensor that requires grad by default and is collected by ``Module.parameters()``."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            data = np.empty((0,), dtype=np.float32)
        array = data._data if isinstance(data, Tensor) else np.asarray(data)
        self._reset(array)  # share memory with the tensor it wraps, as torch.nn.Parameter does
        self.requires_grad = requires_grad

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def _add_weight_and_bias(module, weight_shape: tuple, bias_size: int, bias: bool, dtype) -> None:
    """Gives ``module`` an uninitialised weight and bias (or ``None``), then resets them."""
    dtype = np.dtype(dtype) if dtype is not None else get_default_dtype()
    module.weight = Parameter(np.empty(weight_shape, dtype=dtype))
    if bias:
        module.bias = Parameter(np.empty((bias_size,), dtype=dtype))
    else:
        module.register_parameter("bias", None)
    module.reset_parameters()
