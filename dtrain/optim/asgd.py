"""ASGD (Polyak & Juditsky): SGD with a decaying rate and a running average of the iterates."""

from __future__ import annotations

import numpy as np

from ..autograd.tensor import get_default_dtype
from .flags import check_flags
from .optimizer import Optimizer, Scratch, check_non_negative, each_param, import_scalar


class ASGD(Optimizer):
    r"""Averaged SGD; PyTorch's update, operation for operation (single-tensor path).

    At step :math:`t` (counted from 1), with the rate :math:`\eta` and averaging weight
    :math:`\mu` of the previous step (:math:`\eta = lr`, :math:`\mu = 1` at first):

    .. code-block:: text

        g = -g                                      if maximize
        g = g + weight_decay * theta                if weight_decay != 0
        theta = theta * (1 - lambd * eta)
        theta = theta - eta * g
        ax = ax + mu * (theta - ax)                 (ax = theta while mu == 1)
        eta = lr / (1 + lambd * lr * t)^alpha
        mu = 1 / max(1, t - t0)

    State per parameter: ``step``, ``eta``, ``mu`` and ``ax`` (the average, which is what ASGD
    returns as its estimate; the parameters keep the SGD iterate). As in PyTorch, ``eta`` and
    ``mu`` are scalars of the default dtype (float32 unless ``set_default_dtype(float64)``)
    and take the parameter's dtype when loaded. ``foreach``, ``capturable`` and
    ``differentiable`` mean what they mean on PyTorch's CPU path (see ``dtrain.optim.flags``).
    """

    _shaped_keys = frozenset({"ax"})
    _rebound_keys = ("mu", "eta", "step")  # asgd's argument order

    def __init__(self, params, lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6, weight_decay: float = 0.0, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False):
        defaults = {"lr": lr, "lambd": lambd, "alpha": alpha, "t0": t0,
                    "weight_decay": weight_decay, "foreach": foreach, "maximize": maximize,
                    "differentiable": differentiable, "capturable": capturable}
        super().__init__(params, defaults)

    def _check_options(self, options: dict) -> None:
        check_non_negative(options, "lr", "weight_decay")
        check_flags(options)

    def _new_state(self, p, group: dict) -> dict:
        """Rate ``lr`` and weight 1 (scalars of the default dtype, as PyTorch's), a zero average."""
        scalar = get_default_dtype().type
        return {"step": 0.0, "eta": scalar(float(group["lr"])), "mu": scalar(1.0),
                "ax": np.zeros_like(p._data)}

    def _update(self, group, params, grads, states, mus, etas, steps) -> None:
        asgd(params, grads, [s["ax"] for s in states], mus, etas, steps,
             lambd=float(group["lambd"]), lr=float(group["lr"]), t0=float(group["t0"]),
             alpha=float(group["alpha"]), weight_decay=float(group["weight_decay"]),
             maximize=bool(group["maximize"]), scratch=self._scratch)

    def _import(self, value, param, key, index: int):
        """Load as the base class does; ``eta`` and ``mu`` become scalars of the param's dtype."""
        if key in ("eta", "mu"):
            return import_scalar(value, param, key, index)
        return super()._import(value, param, key, index)


def asgd(params: list[np.ndarray], grads: list[np.ndarray], axs: list[np.ndarray],
         mus: list[np.floating], etas: list[np.floating], steps: list[float], *, lambd: float,
         lr: float, t0: float, alpha: float, weight_decay: float, maximize: bool,
         scratch: Scratch | None = None) -> None:
    """ASGD on NumPy arrays, in place (``steps``, ``mus`` and ``etas`` too); see ``ASGD``.

    Each ``mus``/``etas`` entry is a NumPy float scalar. As in PyTorch, a new value is rounded
    to the default dtype first (PyTorch makes it a default-dtype tensor), then stored in the
    entry's own dtype.
    """
    scratch = scratch if scratch is not None else Scratch()
    rounded = get_default_dtype().type
    for i, param, g in each_param(params, grads, steps, weight_decay, maximize, scratch):
        eta = float(etas[i])
        param *= 1 - lambd * eta
        param += np.multiply(g, -eta, out=scratch.get(param, 1))
        ax = axs[i]
        if mus[i] != 1:
            diff = np.subtract(param, ax, out=scratch.get(param, 1))
            diff *= mus[i]
            ax += diff
        else:
            ax[...] = param
        step = steps[i]
        etas[i] = etas[i].dtype.type(rounded(lr / ((1 + lambd * lr * step) ** alpha)))
        mus[i] = mus[i].dtype.type(rounded(1 / max(1, step - t0)))
