"""Adagrad (Duchi et al.), with PyTorch's learning-rate decay, weight decay and maximize."""

from __future__ import annotations

import numpy as np

from .flags import check_flags
from .optimizer import Optimizer, Scratch, check_non_negative, each_param


class Adagrad(Optimizer):
    r"""Adagrad; PyTorch's update, operation for operation (single-tensor path).

    At step :math:`t` (counted from 1):

    .. code-block:: text

        g = -g                                      if maximize
        g = g + weight_decay * theta                if weight_decay != 0
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g
        theta = theta - clr * g / (sqrt(s) + eps)

    State per parameter, created for every parameter at construction as in PyTorch: ``step``
    and ``sum`` (s, starting at ``initial_accumulator_value``). ``foreach``, ``fused`` and
    ``differentiable`` mean what they mean on PyTorch's CPU path (see ``dtrain.optim.flags``).
    """

    _shaped_keys = frozenset({"sum"})

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None):
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value,
                    "foreach": foreach, "maximize": maximize, "differentiable": differentiable,
                    "fused": fused}
        super().__init__(params, defaults)

    def _check_options(self, options: dict) -> None:
        check_non_negative(options, "lr", "lr_decay", "weight_decay",
                           "initial_accumulator_value", "eps")
        check_flags(options)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group as the base class does; its state is created once defaults are known."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            self._init_state(p, group)

    def _new_state(self, p, group: dict) -> dict:
        """``step`` 0 and ``sum`` at ``initial_accumulator_value``."""
        return {"step": 0.0, "sum": np.full_like(p._data, group["initial_accumulator_value"])}

    def _update(self, group, params, grads, states, steps) -> None:
        adagrad(params, grads, [s["sum"] for s in states], steps, lr=float(group["lr"]),
                weight_decay=float(group["weight_decay"]), lr_decay=float(group["lr_decay"]),
                eps=float(group["eps"]), maximize=bool(group["maximize"]),
                scratch=self._scratch)


def adagrad(params: list[np.ndarray], grads: list[np.ndarray], state_sums: list[np.ndarray],
            steps: list[float], *, lr: float, weight_decay: float, lr_decay: float, eps: float,
            maximize: bool, scratch: Scratch | None = None) -> None:
    """Adagrad on NumPy arrays, in place (``steps`` too); see ``Adagrad`` for the rule."""
    scratch = scratch if scratch is not None else Scratch()
    for i, param, g in each_param(params, grads, steps, weight_decay, maximize, scratch):
        clr = lr / (1 + (steps[i] - 1) * lr_decay)
        std = scratch.get(param, 1)
        state_sums[i] += np.multiply(g, g, out=std)
        np.sqrt(state_sums[i], out=std)
        std += eps
        update = np.multiply(g, -clr, out=scratch.get(param, 0))  # may overwrite g: last use
        update /= std
        param += update
