"""Adam (Kingma & Ba) with PyTorch's options: AMSGrad, maximize, L2 or decoupled weight decay."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .optimizer import Optimizer, Scratch, check_adam_options, each_param


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

    def _check_options(self, options: dict) -> None:
        check_adam_options(options)

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
    for i, param, _ in adam_moments(params, grads, exp_avgs, exp_avg_sqs, steps, scratch,
                                    beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay,
                                    decoupled_weight_decay=decoupled_weight_decay,
                                    maximize=maximize):
        exp_avg, exp_avg_sq, tmp = exp_avgs[i], exp_avg_sqs[i], scratch.get(param, 1)
        step_size = lr / (1 - beta1 ** steps[i])
        bias_correction2_sqrt = (1 - beta2 ** steps[i]) ** 0.5
        if amsgrad:
            np.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
            exp_avg_sq = max_exp_avg_sqs[i]
        denom = np.sqrt(exp_avg_sq, out=tmp)
        denom /= bias_correction2_sqrt
        denom += eps
        update = np.multiply(exp_avg, -step_size, out=scratch.get(param, 0))  # g is done with
        update /= denom
        param += update


def adam_moments(params: list[np.ndarray], grads: list[np.ndarray], exp_avgs: list[np.ndarray],
                 exp_avg_sqs: list[np.ndarray], steps: list[float], scratch: Scratch, *,
                 beta1: float, beta2: float, lr: float, weight_decay: float,
                 decoupled_weight_decay: bool,
                 maximize: bool) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The first half of Adam's update, which RAdam and NAdam share, as ``each_param``'s loop.

    Per parameter: the step counted, weight decay (decoupled: on the parameter), then
    ``m = m + (1 - beta1) * (g - m)`` and ``v = beta2 * v + (1 - beta2) * g * g`` in place;
    yields ``(i, param, g)`` for the rest of the update.
    """
    decoupled_lr = lr if decoupled_weight_decay else None
    for i, param, g in each_param(params, grads, steps, weight_decay, maximize, scratch,
                                  decoupled_lr):
        tmp = scratch.get(param, 1)
        lerp_(exp_avgs[i], g, 1 - beta1, tmp)
        ema_square_(exp_avg_sqs[i], g, beta2, tmp)
        yield i, param, g


def ema_square_(avg: np.ndarray, x: np.ndarray, decay: float, tmp: np.ndarray) -> None:
    """``avg = decay * avg + (1 - decay) * x * x`` in place, in PyTorch's order of operations
    (``mul_(decay).addcmul_(x, x, value=1 - decay)``); ``tmp`` is scratch shaped like ``avg``."""
    avg *= decay
    np.multiply(x, 1 - decay, out=tmp)
    tmp *= x
    avg += tmp


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
