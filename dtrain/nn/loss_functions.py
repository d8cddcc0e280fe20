"""The loss functions as ``torch.nn.functional`` spells them: torch's argument order, and the
legacy ``size_average``/``reduce`` arguments of pre-1.0 code mapped to ``reduction`` with
torch's deprecation warning (``F.nll_loss(output, target, size_average=False)`` sums)."""

from __future__ import annotations

import warnings

from ..autograd.tensor import Tensor
from . import _kernels as K


def legacy_reduction(size_average, reduce, reduction: str = "mean") -> str:
    """``reduction``, or what the legacy flags mean when either is given (torch's rule)."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    result = "mean" if size_average and reduce else "sum" if reduce else "none"
    warnings.warn(f"size_average and reduce args will be deprecated, please use "
                  f"reduction='{result}' instead.", UserWarning, stacklevel=3)
    return result


def cross_entropy(input: Tensor, target, weight=None, size_average=None, ignore_index: int = -100,
                  reduce=None, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    return K.cross_entropy(input, target, weight, ignore_index,
                           legacy_reduction(size_average, reduce, reduction), label_smoothing)


def nll_loss(input: Tensor, target, weight=None, size_average=None, ignore_index: int = -100,
             reduce=None, reduction: str = "mean") -> Tensor:
    return K.nll_loss(input, target, weight, ignore_index,
                      legacy_reduction(size_average, reduce, reduction))


def mse_loss(input: Tensor, target, size_average=None, reduce=None,
             reduction: str = "mean") -> Tensor:
    return K.mse_loss(input, target, legacy_reduction(size_average, reduce, reduction))


def l1_loss(input: Tensor, target, size_average=None, reduce=None,
            reduction: str = "mean") -> Tensor:
    return K.l1_loss(input, target, legacy_reduction(size_average, reduce, reduction))


def smooth_l1_loss(input: Tensor, target, size_average=None, reduce=None,
                   reduction: str = "mean", beta: float = 1.0) -> Tensor:
    return K.smooth_l1_loss(input, target, legacy_reduction(size_average, reduce, reduction),
                            beta)


def huber_loss(input: Tensor, target, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    return K.huber_loss(input, target, reduction, delta)


def kl_div(input: Tensor, target, size_average=None, reduce=None, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    return K.kl_div(input, target, legacy_reduction(size_average, reduce, reduction), log_target)


def binary_cross_entropy(input: Tensor, target, weight=None, size_average=None, reduce=None,
                         reduction: str = "mean") -> Tensor:
    return K.binary_cross_entropy(input, target, weight,
                                  legacy_reduction(size_average, reduce, reduction))


def binary_cross_entropy_with_logits(input: Tensor, target, weight=None, size_average=None,
                                     reduce=None, reduction: str = "mean",
                                     pos_weight=None) -> Tensor:
    return K.binary_cross_entropy_with_logits(
        input, target, weight, legacy_reduction(size_average, reduce, reduction), pos_weight)
