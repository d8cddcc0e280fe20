"""RAdam (Liu et al.): Adam with the variance of its adaptive rate rectified, PyTorch's options."""

from __future__ import annotations

import numpy as np

from .adam import adam_moments
from .optimizer import Optimizer, Scratch, check_adam_options


class RAdam(Optimizer):
    r"""RAdam; PyTorch's update, operation for operation (single-tensor path).

    At step :math:`t` (counted from 1):

    .. code-block:: text

        g = -g                                      if maximize
        theta = theta * (1 - lr * weight_decay)     if decoupled_weight_decay
        g = g + weight_decay * theta                elif weight_decay != 0
        m = m + (1 - beta1) * (g - m)               (a lerp towards g)
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1^t)
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
        if rho_t > 5:
            r = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
            theta = theta - m_hat * lr * (sqrt(1 - beta2^t) / (sqrt(v) + eps)) * r
        else:
            theta = theta - m_hat * lr

    State per parameter: ``step``, ``exp_avg`` (m) and ``exp_avg_sq`` (v), both starting at
    zero. ``foreach``, ``capturable`` and ``differentiable`` mean what they mean on PyTorch's
    CPU path (see ``dtrain.optim.flags``).
    """

    _zero_state = ("exp_avg", "exp_avg_sq")
    _shaped_keys = frozenset(_zero_state)

    def _check_options(self, options: dict) -> None:
        check_adam_options(options)

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "maximize": maximize, "foreach": foreach, "capturable": capturable,
                    "decoupled_weight_decay": decoupled_weight_decay,
                    "differentiable": differentiable}
        super().__init__(params, defaults)

    def _update(self, group, params, grads, states, steps) -> None:
        beta1, beta2 = group["betas"]
        radam(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
              steps, beta1=float(beta1), beta2=float(beta2), lr=float(group["lr"]),
              weight_decay=float(group["weight_decay"]), eps=float(group["eps"]),
              decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
              maximize=bool(group["maximize"]), scratch=self._scratch)


def radam(params: list[np.ndarray], grads: list[np.ndarray], exp_avgs: list[np.ndarray],
          exp_avg_sqs: list[np.ndarray], steps: list[float], *, beta1: float, beta2: float,
          lr: float, weight_decay: float, eps: float, decoupled_weight_decay: bool,
          maximize: bool, scratch: Scratch | None = None) -> None:
    """RAdam on NumPy arrays, in place (``steps`` too); see ``RAdam`` for the rule."""
    scratch = scratch if scratch is not None else Scratch()
    rho_inf = 2 / (1 - beta2) - 1
    for i, param, _ in adam_moments(params, grads, exp_avgs, exp_avg_sqs, steps, scratch,
                                    beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay,
                                    decoupled_weight_decay=decoupled_weight_decay,
                                    maximize=maximize):
        step = steps[i]
        bias_correction2 = 1 - beta2**step
        update = np.divide(exp_avgs[i], 1 - beta1**step, out=scratch.get(param, 0))  # g is done
        update *= lr
        rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
        if rho_t > 5.0:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                    / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            adaptive = np.sqrt(exp_avg_sqs[i], out=scratch.get(param, 1))
            adaptive += eps
            np.divide(bias_correction2**0.5, adaptive, out=adaptive)
            update *= adaptive
            update *= rect
        param -= update
