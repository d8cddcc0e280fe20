"""Adadelta (Zeiler), with PyTorch's learning rate, weight decay and maximize options."""

from __future__ import annotations

import numpy as np

from .adam import ema_square_
from .flags import check_flags
from .optimizer import Optimizer, Scratch, check_non_negative, each_param


class Adadelta(Optimizer):
    r"""Adadelta: per-element steps from running averages of squared gradients and updates.

    PyTorch's update, operation for operation (single-tensor path):

    .. code-block:: text

        g = -g                                      if maximize
        g = g + weight_decay * theta                if weight_decay != 0
        v = rho * v + (1 - rho) * g * g
        delta = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta
        theta = theta - lr * delta

    State per parameter: ``step`` and the two running averages, ``square_avg`` (v) and
    ``acc_delta`` (u), from zero. ``foreach``, ``capturable`` and ``differentiable`` mean what
    they mean on PyTorch's CPU path (see ``dtrain.optim.flags``).
    """

    _zero_state = ("square_avg", "acc_delta")
    _shaped_keys = frozenset(_zero_state)

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, foreach: bool | None = None, *,
                 capturable: bool = False, maximize: bool = False, differentiable: bool = False):
        defaults = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay,
                    "maximize": maximize, "capturable": capturable, "foreach": foreach,
                    "differentiable": differentiable}
        super().__init__(params, defaults)

    def _check_options(self, options: dict) -> None:
        check_non_negative(options, "lr", "eps", "weight_decay")
        if not 0.0 <= options["rho"] <= 1.0:
            raise ValueError(f"Invalid rho value: {options['rho']} (must be in [0, 1])")
        check_flags(options)

    def _update(self, group, params, grads, states, steps) -> None:
        adadelta(params, grads, [s["square_avg"] for s in states],
                 [s["acc_delta"] for s in states], steps, lr=float(group["lr"]),
                 rho=float(group["rho"]), eps=float(group["eps"]),
                 weight_decay=float(group["weight_decay"]), maximize=bool(group["maximize"]),
                 scratch=self._scratch)


def adadelta(params: list[np.ndarray], grads: list[np.ndarray], square_avgs: list[np.ndarray],
             acc_deltas: list[np.ndarray], steps: list[float], *, lr: float, rho: float,
             eps: float, weight_decay: float, maximize: bool,
             scratch: Scratch | None = None) -> None:
    """Adadelta on NumPy arrays, in place (``steps`` too); see ``Adadelta`` for the rule."""
    scratch = scratch if scratch is not None else Scratch()
    for i, param, g in each_param(params, grads, steps, weight_decay, maximize, scratch):
        square_avg, acc_delta = square_avgs[i], acc_deltas[i]
        tmp = scratch.get(param, 1)
        ema_square_(square_avg, g, rho, tmp)
        std = np.add(square_avg, eps, out=tmp)
        np.sqrt(std, out=std)
        delta = np.add(acc_delta, eps, out=scratch.get(param, 2))
        np.sqrt(delta, out=delta)
        delta /= std
        delta *= g
        ema_square_(acc_delta, delta, rho, tmp)
        param += np.multiply(delta, -lr, out=tmp)
