"""Adamax (Kingma & Ba): Adam with the infinity norm, with PyTorch's options."""

from __future__ import annotations

import numpy as np

from .adam import lerp_
from .optimizer import Optimizer, Scratch, check_adam_options, each_param


class Adamax(Optimizer):
    r"""Adamax: Adam with a running maximum of ``|g|`` in place of the second moment.

    PyTorch's update, operation for operation (single-tensor path), at step :math:`t`
    (counted from 1):

    .. code-block:: text

        g = -g                                      if maximize
        g = g + weight_decay * theta                if weight_decay != 0
        m = m + (1 - beta1) * (g - m)               (a lerp towards g)
        u = max(beta2 * u, |g| + eps)
        theta = theta - (lr / (1 - beta1^t)) * m / u

    State per parameter: ``step``, ``exp_avg`` (m) and ``exp_inf`` (u), both starting at zero.
    ``foreach``, ``capturable`` and ``differentiable`` mean what they mean on PyTorch's CPU path
    (see ``dtrain.optim.flags``).
    """

    _zero_state = ("exp_avg", "exp_inf")
    _shaped_keys = frozenset(_zero_state)

    def _check_options(self, options: dict) -> None:
        check_adam_options(options)

    def __init__(self, params, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, capturable: bool = False):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "foreach": foreach, "maximize": maximize, "differentiable": differentiable,
                    "capturable": capturable}
        super().__init__(params, defaults)

    def _update(self, group, params, grads, states, steps) -> None:
        beta1, beta2 = group["betas"]
        adamax(params, grads, [s["exp_avg"] for s in states], [s["exp_inf"] for s in states],
               steps, eps=float(group["eps"]), beta1=float(beta1), beta2=float(beta2),
               lr=float(group["lr"]), weight_decay=float(group["weight_decay"]),
               maximize=bool(group["maximize"]), scratch=self._scratch)


def adamax(params: list[np.ndarray], grads: list[np.ndarray], exp_avgs: list[np.ndarray],
           exp_infs: list[np.ndarray], steps: list[float], *, eps: float, beta1: float,
           beta2: float, lr: float, weight_decay: float, maximize: bool,
           scratch: Scratch | None = None) -> None:
    """Adamax on NumPy arrays, in place (``steps`` too); see ``Adamax`` for the rule."""
    scratch = scratch if scratch is not None else Scratch()
    for i, param, g in each_param(params, grads, steps, weight_decay, maximize, scratch):
        exp_avg, exp_inf = exp_avgs[i], exp_infs[i]
        tmp = scratch.get(param, 1)
        lerp_(exp_avg, g, 1 - beta1, tmp)
        exp_inf *= beta2
        norm = np.abs(g, out=tmp)
        norm += eps
        np.maximum(exp_inf, norm, out=exp_inf)
        clr = lr / (1 - beta1 ** steps[i])
        update = np.multiply(exp_avg, -clr, out=tmp)
        update /= exp_inf
        param += update
