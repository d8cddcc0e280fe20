"""Nonlinear conjugate gradient (Fletcher-Reeves or Polak-Ribiere+) with a strong-Wolfe search."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral

import numpy as np

from .flat import FlatOptimizer
from .line_search import dot
from .optimizer import check_non_negative

_BETA_RULES = {"polak_ribiere": "polak_ribiere", "PR": "polak_ribiere",
               "fletcher_reeves": "fletcher_reeves", "FR": "fletcher_reeves"}


class NonlinearCG(FlatOptimizer):
    r"""Nonlinear conjugate gradient over all parameters as one flat vector; one group only.

    Each ``step(closure)`` runs up to ``max_iter`` iterations (``max_eval`` closure calls) of

    .. code-block:: text

        d_0     = -g_0
        x_{k+1} = x_k + t_k d_k       t_k from the strong-Wolfe search (c1, c2), or lr if
                                      line_search_fn is None
        beta_FR = g_{k+1}.g_{k+1} / g_k.g_k                          beta='fletcher_reeves'
        beta_PR = max(0, g_{k+1}.(g_{k+1} - g_k) / g_k.g_k)  (PR+)   beta='polak_ribiere'
        d_{k+1} = -g_{k+1} + beta d_k

    restarting with ``beta = 0`` (``d = -g``) every ``restart_every`` iterations (default: the
    number of parameter elements) and whenever ``d`` is not a descent direction (``g.d >= 0``).
    The search's first trial step is ``lr * min(1, 1 / |g|_1)`` on the very first iteration and
    ``lr * min(1, 2.02 (f_k - f_{k-1}) / g_k.d_k)`` afterwards (the quadratic-interpolation
    guess, Nocedal and Wright eq. 3.60; ``lr`` when that is not positive).

    ``beta`` also accepts 'PR' and 'FR'. ``max_eval`` defaults to ``max_iter * 5 // 4`` as in
    LBFGS, which leaves a single iteration no evaluations to refine its step: raise it for
    ``max_iter=1``. Stops early, as LBFGS does, when ``max|g| <= tolerance_grad``, when
    ``g.d >= -tolerance_change``, when ``max|t d| <= tolerance_change`` or when the loss changes by less
    than ``tolerance_change``; the search itself stops shrinking its bracket below 1e-9, as
    LBFGS's does. The state (``d``, ``t``, ``prev_flat_grad``, ``prev_loss``,
    ``since_restart``, ``func_evals``, ``n_iter``) is stored under the first parameter.
    Memory: about five copies of the parameters.
    """

    _counter_keys = frozenset({"func_evals", "n_iter", "since_restart"})

    def __init__(self, params, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                 beta: str = "polak_ribiere", restart_every: int | None = None,
                 line_search_fn: str | None = "strong_wolfe", c1: float = 1e-4, c2: float = 0.1):
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = {"lr": lr, "max_iter": max_iter, "max_eval": max_eval,
                    "tolerance_grad": tolerance_grad, "tolerance_change": tolerance_change,
                    "beta": beta, "restart_every": restart_every,
                    "line_search_fn": line_search_fn, "c1": c1, "c2": c2}
        super().__init__(params, defaults)

    def _check_options(self, options: dict) -> None:
        check_non_negative(options, "lr", "tolerance_grad", "tolerance_change")
        for name in ("max_iter", "max_eval"):
            if not options[name] >= 1:
                raise ValueError(f"Invalid {name} value: {options[name]} (must be >= 1)")
        restart_every = options["restart_every"]
        if restart_every is not None and (isinstance(restart_every, bool)
                                          or not isinstance(restart_every, Integral)
                                          or restart_every < 1):
            raise ValueError(f"Invalid restart_every value: {restart_every!r} "
                             "(must be None or an integer >= 1)")
        if options["beta"] not in _BETA_RULES:
            raise ValueError(f"Invalid beta value: {options['beta']!r} (one of "
                             f"{', '.join(repr(k) for k in _BETA_RULES)})")
        if options["line_search_fn"] not in (None, "strong_wolfe"):
            raise ValueError(f"Invalid line_search_fn value: {options['line_search_fn']!r} "
                             "(only None and 'strong_wolfe' are supported)")
        c1, c2 = options["c1"], options["c2"]
        if not 0.0 < c1 < 1.0:
            raise ValueError(f"Invalid c1 value: {c1} (must be in (0, 1))")
        if not c1 < c2 < 1.0:
            raise ValueError(f"Invalid c2 value: {c2} (must be in (c1, 1) = ({c1}, 1))")

    # ------------------------------------------------------------------ the iteration
    def step(self, closure: Callable | None = None):
        """Run up to ``max_iter`` CG iterations; returns the loss before the first one."""
        state, orig_loss, flat_grad = self._start(closure)
        dot, total = self._global_sums()
        group = self.param_groups[0]
        lr, max_iter, max_eval = float(group["lr"]), group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        rule = _BETA_RULES[group["beta"]]
        restart_every = group["restart_every"] or sum(p._data.size for p in self._params)
        loss = float(orig_loss)
        evals = 1
        if np.abs(flat_grad).max() <= tolerance_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        since_restart = state.get("since_restart", 0)
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if d is None or since_restart >= restart_every:
                d, since_restart = np.negative(flat_grad), 0
            else:
                d = cg_direction(flat_grad, prev_flat_grad, d, rule=rule, dot=dot)
            gtd = dot(flat_grad, d)
            if not gtd < 0 and since_restart > 0:  # lost descent (or NaN): steepest descent
                d, since_restart = np.negative(flat_grad), 0
                gtd = dot(flat_grad, d)
            since_restart += 1
            first = prev_flat_grad is None
            if first:
                prev_flat_grad = flat_grad.copy()
            else:
                np.copyto(prev_flat_grad, flat_grad)
            last_loss, prev_loss = prev_loss, loss
            if not gtd < -tolerance_change:  # no descent left to find
                break
            if group["line_search_fn"] is None:
                t = lr
            elif first:
                t = min(1.0, 1.0 / total(np.abs(flat_grad))) * lr
            else:
                t = lr * initial_step(loss, last_loss, gtd)

            loss, flat_grad, t, used, found_optimum = self._take_step(
                closure, d, t, loss, flat_grad, gtd,
                search=group["line_search_fn"] == "strong_wolfe", last_iter=n_iter == max_iter,
                tolerance_grad=tolerance_grad, max_ls=max_eval - evals,
                c1=group["c1"], c2=group["c2"], dot=dot)
            evals += used
            state["func_evals"] += used

            if n_iter == max_iter or evals >= max_eval or found_optimum:
                break
            if np.abs(d * t).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break  # no progress

        state.update({"d": d, "t": t, "prev_flat_grad": prev_flat_grad, "prev_loss": prev_loss,
                      "since_restart": since_restart})
        return orig_loss


def cg_direction(flat_grad: np.ndarray, prev_flat_grad: np.ndarray, d: np.ndarray, *,
                 rule: str, dot: Callable = dot) -> np.ndarray:
    """The next conjugate direction ``-g + beta d`` (a new array), beta by ``rule``.

    ``rule`` is 'fletcher_reeves' (g.g / g_prev.g_prev) or 'polak_ribiere' (PR+: the
    Polak-Ribiere ratio g.(g - g_prev) / g_prev.g_prev, floored at zero).
    """
    denominator = dot(prev_flat_grad, prev_flat_grad)
    if rule == "fletcher_reeves":
        beta = dot(flat_grad, flat_grad) / denominator
    else:
        beta = max(dot(flat_grad, flat_grad - prev_flat_grad) / denominator, 0)
    return d * beta - flat_grad


def initial_step(loss: float, prev_loss: float, gtd) -> float:
    """First trial step of a search: ``min(1, 2.02 (f_k - f_{k-1}) / g.d)``, or 1 if not positive.

    The step that would repeat the last decrease on a quadratic (Nocedal and Wright, eq. 3.60).
    """
    guess = 2.02 * (loss - prev_loss) / gtd
    return min(1.0, guess) if guess > 0 else 1.0
