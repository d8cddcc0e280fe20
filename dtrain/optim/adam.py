"""Adam (Kingma & Ba) with PyTorch's options: AMSGrad, maximize, L2 or decoupled weight decay."""

from __future__ import annotations

import numpy as np

from .flags import check_flags
from .optimizer import Optimizer, Scratch, check_betas, check_non_negative, effective_grad


class Adam(Optimizer):
    r"""Adam; PyTorch's update, operation for operation (single-tensor path).

    With gradient :math:`g` of parameter :math:`\theta` at step :math:`t` (counted from 1):

    .. code-block:: text

        g = -g                                      if maximize
        theta = theta * (1 - lr * weight_decay)     if decoupled_weight_decay (AdamW)
        g = g + weight_decay * theta                elif weight_decay != 0
        m = m + (1 - beta1) * (g - m)               (a lerp towards g)
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                       if amsgrad, and v_max replaces v below
        denom = sqrt(v) / sqrt(1 - beta2^t) + eps
        theta = theta - (lr / (1 - beta1^t)) * m / denom

    State per parameter: ``step`` (a number), ``exp_avg`` (m), ``exp_avg_sq`` (v) and, with
    amsgrad, ``max_exp_avg_sq``. ``foreach``, ``fused``, ``capturable`` and ``differentiable``
    mean what they mean on PyTorch's CPU path (see ``dtrain.optim.flags``).
    """

    _zero_state = ("exp_avg", "exp_avg_sq")
    _shaped_keys = frozenset({*_zero_state, "max_exp_avg_sq"})

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                    "capturable": capturable, "differentiable": differentiable, "fused": fused,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def _check_options(self, options: dict) -> None:
        check_non_negative(options, "lr", "eps", "weight_decay")
        check_betas(options)
        check_flags(options)

    def _init_state(self, p, group: dict) -> dict:
        """The base class's state, and ``max_exp_avg_sq`` with amsgrad (also switched on later)."""
        state = super()._init_state(p, group)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = np.zeros_like(p._data)
        return state

    def _update(self, group, params, grads, states, steps) -> None:
        amsgrad = bool(group["amsgrad"])
        beta1, beta2 = group["betas"]
        adam(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
             [s["max_exp_avg_sq"] for s in states] if amsgrad else [], steps,
             amsgrad=amsgrad, beta1=float(beta1), beta2=float(beta2),
             lr=float(group["lr"]), weight_decay=float(group["weight_decay"]),
             eps=float(group["eps"]), maximize=bool(group["maximize"]),
             decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
             scratch=self._scratch)


def adam(params: list[np.ndarray], grads: list[np.ndarray], exp_avgs: list[np.ndarray],
         exp_avg_sqs: list[np.ndarray], max_exp_avg_sqs: list[np.ndarray], steps: list[float],
         *, amsgrad: bool, beta1: float, beta2: float, lr: float, weight_decay: float,
         eps: float, maximize: bool, decoupled_weight_decay: bool = False,
         scratch: Scratch | None = None) -> None:
    """Adam on NumPy arrays, in place (``steps`` too); see ``Adam`` for the rule."""
    scratch = scratch if scratch is not None else Scratch()
    for i, param in enumerate(params):
        steps[i] += 1
        step = steps[i]
        if decoupled_weight_decay and weight_decay != 0:
            param *= 1 - lr * weight_decay
            g = effective_grad(param, grads[i], 0.0, maximize, scratch)
        else:
            g = effective_grad(param, grads[i], weight_decay, maximize, scratch)
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        tmp = scratch.get(param, 1)
        lerp_(exp_avg, g, 1 - beta1, tmp)
        exp_avg_sq *= beta2
        np.multiply(g, 1 - beta2, out=tmp)
        tmp *= g
        exp_avg_sq += tmp

        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if amsgrad:
            np.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
            exp_avg_sq = max_exp_avg_sqs[i]
        denom = np.sqrt(exp_avg_sq, out=tmp)
        denom /= bias_correction2_sqrt
        denom += eps
        update = np.multiply(exp_avg, -step_size, out=scratch.get(param, 0))  # g is done with
        update /= denom
        param += update


def lerp_(start: np.ndarray, end: np.ndarray, weight: float, tmp: np.ndarray) -> None:
    """``start += weight * (end - start)`` in place, in PyTorch's two-sided form.

    PyTorch computes ``end - (end - start) * (1 - weight)`` for weights >= 0.5, which is more
    accurate near ``end``; ``tmp`` is scratch shaped like ``start``.
    """
    diff = np.subtract(end, start, out=tmp)
    if abs(weight) < 0.5:
        diff *= weight
        start += diff
    else:
        diff *= start.dtype.type(weight) - 1  # weight - 1 in the array's precision, as PyTorch
        np.add(end, diff, out=start)
