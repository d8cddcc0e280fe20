"""Reverse-mode automatic differentiation on NumPy arrays (PyTorch's semantics)."""

from . import functional  # also torch.autograd.functional: jacobian, hessian, vjp, jvp, hvp, vhp
from .anomaly import detect_anomaly, set_detect_anomaly
from .engine import backward, grad
from .grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from .legacy import Variable
from .tensor import Node, Tensor

__all__ = ["Node", "Tensor", "Variable", "backward", "detect_anomaly", "enable_grad", "functional",
           "grad", "inference_mode", "is_grad_enabled", "no_grad", "set_detect_anomaly",
           "set_grad_enabled"]
