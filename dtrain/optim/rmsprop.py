"""RMSprop (Hinton), with PyTorch's centered, momentum, weight-decay and maximize options."""

from __future__ import annotations

import numpy as np

from .adam import ema_square_, lerp_
from .flags import check_flags
from .optimizer import Optimizer, Scratch, check_non_negative, each_param


class RMSprop(Optimizer):
    r"""RMSprop; PyTorch's update, operation for operation (single-tensor path).

    .. code-block:: text

        g = -g                                      if maximize
        g = g + weight_decay * theta                if weight_decay != 0
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            a = a + (1 - alpha) * (g - a)           (a lerp towards g)
            avg = sqrt(v - a * a) + eps
        else:
            avg = sqrt(v) + eps
        if momentum > 0:
            b = momentum * b + g / avg
            theta = theta - lr * b
        else:
            theta = theta - lr * g / avg

    State per parameter: ``step``, ``square_avg`` (v), ``momentum_buffer`` (b, when
    momentum > 0) and ``grad_avg`` (a, when centered), all moments starting at zero.
    ``foreach``, ``capturable`` and ``differentiable`` mean what they mean on PyTorch's CPU
    path (see ``dtrain.optim.flags``).
    """

    _zero_state = ("square_avg",)
    _shaped_keys = frozenset({*_zero_state, "momentum_buffer", "grad_avg"})

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 capturable: bool = False, foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False):
        defaults = {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
                    "momentum": momentum, "centered": centered, "capturable": capturable,
                    "foreach": foreach, "maximize": maximize, "differentiable": differentiable}
        super().__init__(params, defaults)

    def _check_options(self, options: dict) -> None:
        check_non_negative(options, "lr", "eps", "momentum", "weight_decay", "alpha")
        check_flags(options)

    def _init_state(self, p, group: dict) -> dict:
        """The base class's state; buffers an option needs are created (as zeros) when missing."""
        state = super()._init_state(p, group)
        if float(group["momentum"]) > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = np.zeros_like(p._data)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = np.zeros_like(p._data)
        return state

    def _update(self, group, params, grads, states, steps) -> None:
        momentum, centered = float(group["momentum"]), bool(group["centered"])
        rmsprop(params, grads, [s["square_avg"] for s in states],
                [s["grad_avg"] for s in states] if centered else [],
                [s["momentum_buffer"] for s in states] if momentum > 0 else [], steps,
                lr=float(group["lr"]), alpha=float(group["alpha"]), eps=float(group["eps"]),
                weight_decay=float(group["weight_decay"]), momentum=momentum,
                centered=centered, maximize=bool(group["maximize"]), scratch=self._scratch)


def rmsprop(params: list[np.ndarray], grads: list[np.ndarray], square_avgs: list[np.ndarray],
            grad_avgs: list[np.ndarray], momentum_buffers: list[np.ndarray], steps: list[float],
            *, lr: float, alpha: float, eps: float, weight_decay: float, momentum: float,
            centered: bool, maximize: bool, scratch: Scratch | None = None) -> None:
    """RMSprop on NumPy arrays, in place (``steps`` too); see ``RMSprop`` for the rule."""
    scratch = scratch if scratch is not None else Scratch()
    for i, param, g in each_param(params, grads, steps, weight_decay, maximize, scratch):
        square_avg = square_avgs[i]
        avg = scratch.get(param, 1)
        ema_square_(square_avg, g, alpha, avg)
        if centered:
            grad_avg = grad_avgs[i]
            lerp_(grad_avg, g, 1 - alpha, avg)
            np.negative(grad_avg, out=avg)
            avg *= grad_avg
            avg += square_avg
            np.sqrt(avg, out=avg)
        else:
            np.sqrt(square_avg, out=avg)
        avg += eps
        if momentum > 0:
            buf = momentum_buffers[i]
            buf *= momentum
            buf += np.divide(g, avg, out=avg)
            param += np.multiply(buf, -lr, out=avg)
        else:
            update = np.multiply(g, -lr, out=scratch.get(param, 0))  # may overwrite g: last use
            update /= avg
            param += update

