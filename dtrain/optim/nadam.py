"""NAdam (Dozat): Adam with Nesterov momentum and a momentum schedule, PyTorch's options."""

from __future__ import annotations

import numpy as np

from ..autograd.tensor import get_default_dtype
from .adam import adam_moments
from .optimizer import Optimizer, Scratch, check_adam_options, import_scalar


class NAdam(Optimizer):
    r"""NAdam; PyTorch's update, operation for operation (single-tensor path).

    At step :math:`t` (counted from 1), with :math:`\psi` = ``momentum_decay``:

    .. code-block:: text

        g = -g                                      if maximize
        theta = theta * (1 - lr * weight_decay)     if decoupled_weight_decay
        g = g + weight_decay * theta                elif weight_decay != 0
        mu_t = beta1 * (1 - 0.5 * 0.96^(t psi))     and mu_{t+1} likewise
        P = P * mu_t                                (the product of every mu so far)
        m = m + (1 - beta1) * (g - m)               (a lerp towards g)
        v = beta2 * v + (1 - beta2) * g * g
        denom = sqrt(v / (1 - beta2^t)) + eps
        theta = theta - lr (1 - mu_t) / (1 - P) * g / denom
        theta = theta - lr mu_{t+1} / (1 - P mu_{t+1}) * m / denom

    State per parameter: ``step``, ``mu_product`` (P, starting at 1), ``exp_avg`` (m) and
    ``exp_avg_sq`` (v). As in PyTorch, P is a scalar of the default dtype (float32 unless
    ``set_default_dtype(float64)``) and is multiplied in that precision; ``load_state_dict``
    gives it the parameter's dtype, as PyTorch's does. ``foreach``, ``capturable`` and
    ``differentiable`` mean what they mean on PyTorch's CPU path (see ``dtrain.optim.flags``).
    """

    _shaped_keys = frozenset({"exp_avg", "exp_avg_sq"})
    _rebound_keys = ("mu_product", "step")  # nadam's argument order

    def _check_options(self, options: dict) -> None:
        check_adam_options(options, "momentum_decay")

    def __init__(self, params, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "momentum_decay": momentum_decay,
                    "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize,
                    "foreach": foreach, "capturable": capturable,
                    "differentiable": differentiable}
        super().__init__(params, defaults)

    def _new_state(self, p, group: dict) -> dict:
        """Zero moments and a unit ``mu_product`` (in the default dtype, as PyTorch's)."""
        return {"step": 0.0, "mu_product": get_default_dtype().type(1.0),
                "exp_avg": np.zeros_like(p._data), "exp_avg_sq": np.zeros_like(p._data)}

    def _update(self, group, params, grads, states, mu_products, steps) -> None:
        beta1, beta2 = group["betas"]
        nadam(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
              mu_products, steps, beta1=float(beta1), beta2=float(beta2),
              lr=float(group["lr"]), weight_decay=float(group["weight_decay"]),
              momentum_decay=float(group["momentum_decay"]), eps=float(group["eps"]),
              decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
              maximize=bool(group["maximize"]), scratch=self._scratch)

    def _import(self, value, param, key, index: int):
        """Load as the base class does; ``mu_product`` becomes a scalar of the param's dtype."""
        if key == "mu_product":
            return import_scalar(value, param, key, index)
        return super()._import(value, param, key, index)


def nadam(params: list[np.ndarray], grads: list[np.ndarray], exp_avgs: list[np.ndarray],
          exp_avg_sqs: list[np.ndarray], mu_products: list[np.floating], steps: list[float],
          *, beta1: float, beta2: float, lr: float, weight_decay: float, momentum_decay: float,
          eps: float, decoupled_weight_decay: bool, maximize: bool,
          scratch: Scratch | None = None) -> None:
    """NAdam on NumPy arrays, in place (``steps`` and ``mu_products`` too); see ``NAdam``.

    Each ``mu_products`` entry is a NumPy float scalar, multiplied in its own precision.
    """
    scratch = scratch if scratch is not None else Scratch()
    for i, param, g in adam_moments(params, grads, exp_avgs, exp_avg_sqs, steps, scratch,
                                    beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay,
                                    decoupled_weight_decay=decoupled_weight_decay,
                                    maximize=maximize):
        step = steps[i]
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
        mu_product = mu_products[i] * mu_products[i].dtype.type(mu)
        mu_products[i] = mu_product
        tmp = scratch.get(param, 1)
        bias_correction2 = 1 - beta2**step
        denom = np.divide(exp_avg_sqs[i], bias_correction2, out=scratch.get(param, 2))
        np.sqrt(denom, out=denom)
        denom += eps
        mu_product_next = float(mu_product) * mu_next
        update = np.multiply(g, -lr * (1.0 - mu) / (1.0 - float(mu_product)), out=tmp)
        update /= denom
        param += update
        update = np.multiply(exp_avgs[i], (-lr * mu_next) / (1.0 - mu_product_next), out=tmp)
        update /= denom
        param += update
