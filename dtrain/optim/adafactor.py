"""Adafactor (Shazeer & Stern): second moments factored into row and column averages."""

from __future__ import annotations

import numpy as np

from .adam import lerp_
from .flags import check_flags
from .optimizer import Optimizer, Scratch, check_non_negative, each_param


class Adafactor(Optimizer):
    r"""Adafactor as PyTorch 2.13 defines it, operation for operation (single-tensor path).

    At step :math:`t` (counted from 1), with ``eps = (eps1, eps2)`` (``eps1`` None: the
    machine epsilon of the parameter's dtype), for a matrix (or a stack of them: the last two
    dimensions are factored) and, unfactored, for a vector or scalar:

    .. code-block:: text

        g = -g                                      if maximize
        beta = t^beta2_decay                        (the weight of the new statistics)
        rho = min(lr, 1 / sqrt(t))
        alpha = max(eps2, rms(theta)) * rho         (the relative step, before decay)
        theta = theta * (1 - lr * weight_decay)
        matrix:  R = R + beta * (mean(g^2, -1) - R), C = C + beta * (mean(g^2, -2) - C)
                 v = R @ C / max(mean(R, -2), eps1)
        vector:  V = V + beta * (g^2 - V), v = V
        u = g / sqrt(max(v, eps1^2))
        theta = theta - alpha / max(1, rms(u) / d) * u

    State per parameter: ``step`` and either ``row_var`` (R) and ``col_var`` (C) or
    ``variance`` (V), all starting at zero. ``foreach`` means what it means on PyTorch's CPU
    path (see ``dtrain.optim.flags``).
    """

    _shaped_keys = frozenset({"variance"})
    updates_whole_tensors = True  # row and column factors, and the RMS of the whole tensor

    def __init__(self, params, lr: float = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, *, foreach: bool | None = None,
                 maximize: bool = False):
        defaults = {"lr": lr, "beta2_decay": beta2_decay, "eps": tuple(eps), "d": d,
                    "weight_decay": weight_decay, "foreach": foreach, "maximize": maximize}
        super().__init__(params, defaults)

    def _check_options(self, options: dict) -> None:
        check_non_negative(options, "lr", "weight_decay")
        if not options["beta2_decay"] <= 0.0:
            raise ValueError(f"Invalid beta2_decay value: {options['beta2_decay']} "
                             "(must be <= 0)")
        eps = options["eps"]
        if len(eps) != 2 or (eps[0] is not None and not 0.0 <= eps[0]) or not 0.0 <= eps[1]:
            raise ValueError(f"Invalid eps value: {eps} (must be (None or eps1 >= 0, eps2 >= 0))")
        if not 1.0 <= options["d"]:
            raise ValueError(f"Invalid d value: {options['d']} (must be >= 1)")
        check_flags(options)

    def _new_state(self, p, group: dict) -> dict:
        """Zero row and column statistics for a matrix (or stack of them), else a zero variance."""
        shape, dtype = p._data.shape, p._data.dtype
        if len(shape) > 1:
            return {"step": 0.0, "row_var": np.zeros((*shape[:-1], 1), dtype),
                    "col_var": np.zeros((*shape[:-2], 1, shape[-1]), dtype)}
        return {"step": 0.0, "variance": np.zeros_like(p._data)}

    def _update(self, group, params, grads, states, steps) -> None:
        eps1, eps2 = group["eps"]
        adafactor(params, grads, [s.get("row_var") for s in states],
                  [s.get("col_var") for s in states], [s.get("variance") for s in states],
                  steps, d=float(group["d"]), lr=float(group["lr"]),
                  beta2_decay=float(group["beta2_decay"]),
                  weight_decay=float(group["weight_decay"]),
                  eps1=None if eps1 is None else float(eps1), eps2=float(eps2),
                  maximize=bool(group["maximize"]), scratch=self._scratch)


def _rms(array: np.ndarray, scale: float = 1.0) -> float:
    """``norm(array) / (sqrt(size) * scale)``, in PyTorch's order of operations."""
    return float(np.linalg.norm(array.ravel())) / (array.size ** 0.5 * scale)


def _mean_square(g: np.ndarray, axis: int) -> np.ndarray:
    """``mean(g * g, axis)`` as PyTorch computes it: the squared norm over the length."""
    norm = np.sqrt(np.einsum("...i,...i->...", np.moveaxis(g, axis, -1),
                             np.moveaxis(g, axis, -1)))
    return np.expand_dims(np.square(norm) / g.shape[axis], axis)


def adafactor(params: list[np.ndarray], grads: list[np.ndarray],
              row_vars: list[np.ndarray | None], col_vars: list[np.ndarray | None],
              variances: list[np.ndarray | None], steps: list[float], *, d: float, lr: float,
              beta2_decay: float, weight_decay: float, eps1: float | None, eps2: float,
              maximize: bool, scratch: Scratch | None = None) -> None:
    """Adafactor on NumPy arrays, in place (``steps`` too); see ``Adafactor`` for the rule."""
    scratch = scratch if scratch is not None else Scratch()
    for i, param, g in each_param(params, grads, steps, 0.0, maximize, scratch):
        step = steps[i]
        floor = np.finfo(param.dtype).eps if eps1 is None else eps1
        beta = step**beta2_decay
        alpha = max(eps2, float(np.linalg.norm(param.ravel())) / param.size ** 0.5) * min(
            lr, 1 / step**0.5)
        if weight_decay != 0:
            param *= 1 - lr * weight_decay
        if g.ndim > 1:
            row_var, col_var = row_vars[i], col_vars[i]
            lerp_(row_var, _mean_square(g, -1), beta, np.empty_like(row_var))
            lerp_(col_var, _mean_square(g, -2), beta, np.empty_like(col_var))
            estimate = np.matmul(row_var, col_var)
            estimate /= np.maximum(row_var.mean(axis=-2, keepdims=True), floor)
        else:
            lerp_(variances[i], np.multiply(g, g), beta, np.empty_like(g))
            estimate = variances[i].copy()
        np.maximum(estimate, floor * floor, out=estimate)
        update = np.sqrt(estimate, out=estimate)
        np.reciprocal(update, out=update)
        update *= g
        denom = max(1.0, _rms(update, d))
        update *= -alpha / denom
        param += update
