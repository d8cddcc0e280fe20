"""Rprop (Riedmiller & Braun): per-weight step sizes driven by the sign of the gradient."""

from __future__ import annotations

import numpy as np

from .flags import check_flags
from .optimizer import Optimizer, Scratch, check_non_negative, each_param


class Rprop(Optimizer):
    r"""Resilient backpropagation; PyTorch's update, operation for operation (single-tensor path).

    With ``etas = (eta_minus, eta_plus)`` and ``step_sizes = (s_min, s_max)``, per element:

    .. code-block:: text

        g = -g                                      if maximize
        f = eta_plus   if g * g_prev > 0
            eta_minus  if g * g_prev < 0
            1          otherwise
        s = clamp(s * f, s_min, s_max)
        g = 0                                       where f == eta_minus (the sign flipped)
        theta = theta - sign(g) * s
        g_prev = g

    State per parameter: ``step``, ``prev`` (g_prev, starting at zero) and ``step_size`` (s,
    starting at the group's ``lr`` when the state is created; later changes of ``lr`` do not
    reach it, as in PyTorch). ``foreach``, ``capturable`` and ``differentiable`` mean what they
    mean on PyTorch's CPU path (see ``dtrain.optim.flags``).
    """

    _shaped_keys = frozenset({"prev", "step_size"})

    def __init__(self, params, lr: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50), *, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False):
        defaults = {"lr": lr, "etas": tuple(etas), "step_sizes": tuple(step_sizes),
                    "foreach": foreach, "maximize": maximize, "differentiable": differentiable,
                    "capturable": capturable}
        super().__init__(params, defaults)

    def _check_options(self, options: dict) -> None:
        check_non_negative(options, "lr")
        etas, sizes = options["etas"], options["step_sizes"]
        if len(etas) != 2 or not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid etas value: {etas} (must be (eta_minus, eta_plus) with "
                             "0 < eta_minus < 1 < eta_plus)")
        if len(sizes) != 2:
            raise ValueError(f"Invalid step_sizes value: {sizes} (must be (min, max))")
        check_flags(options)

    def _new_state(self, p, group: dict) -> dict:
        """No previous gradient, every step size at the group's ``lr``."""
        return {"step": 0.0, "prev": np.zeros_like(p._data),
                "step_size": np.full_like(p._data, float(group["lr"]))}

    def _update(self, group, params, grads, states, steps) -> None:
        etaminus, etaplus = group["etas"]
        step_size_min, step_size_max = group["step_sizes"]
        rprop(params, grads, [s["prev"] for s in states], [s["step_size"] for s in states],
              steps, step_size_min=float(step_size_min), step_size_max=float(step_size_max),
              etaminus=float(etaminus), etaplus=float(etaplus),
              maximize=bool(group["maximize"]), scratch=self._scratch)


def rprop(params: list[np.ndarray], grads: list[np.ndarray], prevs: list[np.ndarray],
          step_sizes: list[np.ndarray], steps: list[float], *, step_size_min: float,
          step_size_max: float, etaminus: float, etaplus: float, maximize: bool,
          scratch: Scratch | None = None) -> None:
    """Rprop on NumPy arrays, in place (``steps`` too); see ``Rprop`` for the rule."""
    scratch = scratch if scratch is not None else Scratch()
    for i, param, g in each_param(params, grads, steps, 0.0, maximize, scratch):
        prev, step_size = prevs[i], step_sizes[i]
        factor = np.multiply(g, prev, out=scratch.get(param, 1))
        np.sign(factor, out=factor)
        factor[factor > 0] = etaplus
        factor[factor < 0] = etaminus
        factor[factor == 0] = 1
        step_size *= factor
        np.clip(step_size, step_size_min, step_size_max, out=step_size)
        prev[...] = g  # becomes the gradient with the flipped entries zeroed
        prev[factor == etaminus] = 0
        update = np.sign(prev, out=factor)
        update *= step_size
        param -= update
