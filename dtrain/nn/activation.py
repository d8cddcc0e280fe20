"""Activation layers: thin Modules over the functional forms."""

from __future__ import annotations

from ..autograd import tensor as T
from ..autograd.tensor import Tensor
from . import _kernels as K
from .module import Module


class _Pointwise(Module):
    """An activation that is one function of its input, the class's ``function``."""

    function = None  # staticmethod(Tensor -> Tensor)

    def forward(self, input: Tensor) -> Tensor:
        return self.function(input)


class _InplaceOption(_Pointwise):
    """An activation whose one option is PyTorch's ``inplace``, kept for its signature and repr."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class ReLU(_InplaceOption):
    """max(0, x)."""

    function = staticmethod(T.relu)


class LeakyReLU(Module):
    """x for x > 0, negative_slope * x otherwise."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return K.leaky_relu(input, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Tanh(_Pointwise):
    """Hyperbolic tangent."""

    function = staticmethod(T.tanh)


class Sigmoid(_Pointwise):
    """Logistic sigmoid 1 / (1 + exp(-x))."""

    function = staticmethod(T.sigmoid)


class GELU(Module):
    """Gaussian Error Linear Unit (exact, or ``approximate='tanh'``)."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate argument must be either none or tanh, got {approximate!r}")
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:
        return K.gelu(input, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate='{self.approximate}'"


class ELU(Module):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.alpha = alpha

    def forward(self, input: Tensor) -> Tensor:
        return K.elu(input, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softplus(Module):
    """log(1 + exp(beta x)) / beta, linear above ``threshold``."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, input: Tensor) -> Tensor:
        return K.softplus(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Softmax(Module):
    """Softmax along ``dim``."""

    def __init__(self, dim: int | None = None):
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return T.softmax(input, _implicit_dim(self.dim, input))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """Log-softmax along ``dim``."""

    def __init__(self, dim: int | None = None):
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return T.log_softmax(input, _implicit_dim(self.dim, input))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class SiLU(_InplaceOption):
    """x * sigmoid(x), the swish activation."""

    function = staticmethod(K.silu)


class Mish(_InplaceOption):
    """x * tanh(softplus(x))."""

    function = staticmethod(K.mish)


class Hardswish(_InplaceOption):
    """x * relu6(x + 3) / 6, MobileNetV3's cheap swish."""

    function = staticmethod(K.hardswish)


def _implicit_dim(dim, input: Tensor) -> int:
    """PyTorch's legacy choice when no dim is given: 0 for 0-, 1- and 3-D inputs, else 1."""
    if dim is not None:
        return dim
    return 0 if input.ndim in (0, 1, 3) else 1
