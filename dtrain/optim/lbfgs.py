"""L-BFGS with an optional strong-Wolfe line search: PyTorch's LBFGS (after minFunc)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .flat import FlatOptimizer
from .line_search import dot
from .optimizer import check_non_negative


class LBFGS(FlatOptimizer):
    r"""Limited-memory BFGS over all parameters as one flat vector; one parameter group only.

    Each ``step(closure)`` runs up to ``max_iter`` iterations (``max_eval`` closure calls):

    .. code-block:: text

        d = -H g      H: the inverse Hessian estimated from the last ``history_size`` pairs
                      s = t d (step), y = g_new - g_old (gradient change), kept when y.s > 1e-10,
                      scaled by H_diag = y.s / y.y; d = -g on the very first iteration
        t = min(1, 1 / |g|_1) * lr on the very first iteration, lr afterwards
        t = strong_wolfe(...)           if line_search_fn == 'strong_wolfe'
        theta = theta + t d

    and stops early when ``max|g| <= tolerance_grad``, when ``g.d > -tolerance_change``, when
    ``max|t d| <= tolerance_change`` or when the loss changes by less than
    ``tolerance_change``. The state (``d``, ``t``, ``old_dirs``, ``old_stps``, ``ro``,
    ``H_diag``, ``prev_flat_grad``, ``prev_loss``, ``al``, ``func_evals``, ``n_iter``) is
    stored under the first parameter, as in PyTorch. Memory: about
    ``(2 * history_size + 3)`` copies of the parameters.
    """

    _counter_keys = frozenset({"func_evals", "n_iter"})

    def __init__(self, params, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                 history_size: int = 100, line_search_fn: str | None = None):
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = {"lr": lr, "max_iter": max_iter, "max_eval": max_eval,
                    "tolerance_grad": tolerance_grad, "tolerance_change": tolerance_change,
                    "history_size": history_size, "line_search_fn": line_search_fn}
        super().__init__(params, defaults)

    def _check_options(self, options: dict) -> None:
        check_non_negative(options, "lr", "tolerance_grad", "tolerance_change")
        for name in ("max_iter", "max_eval", "history_size"):
            if not options[name] >= 1:
                raise ValueError(f"Invalid {name} value: {options[name]} (must be >= 1)")
        if options["line_search_fn"] not in (None, "strong_wolfe"):
            raise ValueError(f"Invalid line_search_fn value: {options['line_search_fn']!r} "
                             "(only None and 'strong_wolfe' are supported)")

    # ------------------------------------------------------------------ the iteration
    def step(self, closure: Callable | None = None):
        """Run up to ``max_iter`` L-BFGS iterations; returns the loss before the first one."""
        state, orig_loss, flat_grad = self._start(closure)
        dot, total = self._global_sums()
        group = self.param_groups[0]
        lr, max_iter, max_eval = float(group["lr"]), group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]
        loss = float(orig_loss)
        evals = 1
        if np.abs(flat_grad).max() <= tolerance_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        h_diag = state.get("H_diag")
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = np.negative(flat_grad)
                old_dirs, old_stps, ro, h_diag = [], [], [], 1
            else:
                h_diag = lbfgs_update_memory(old_dirs, old_stps, ro, flat_grad - prev_flat_grad,
                                             d * t, h_diag, history_size=history_size, dot=dot)
                al = state.setdefault("al", [None] * history_size)
                d = lbfgs_direction(flat_grad, old_dirs, old_stps, ro, h_diag, al, dot=dot)
            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                np.copyto(prev_flat_grad, flat_grad)
            prev_loss = loss

            t = min(1.0, 1.0 / total(np.abs(flat_grad))) * lr if state["n_iter"] == 1 else lr
            gtd = dot(flat_grad, d)
            if gtd > -tolerance_change:  # not a descent direction any more
                break

            loss, flat_grad, t, used, found_optimum = self._take_step(
                closure, d, t, loss, flat_grad, gtd,
                search=group["line_search_fn"] == "strong_wolfe", last_iter=n_iter == max_iter,
                tolerance_grad=tolerance_grad, max_ls=max_eval - evals, dot=dot)
            evals += used
            state["func_evals"] += used

            if n_iter == max_iter or evals >= max_eval or found_optimum:
                break
            if np.abs(d * t).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break  # no progress

        state.update({"d": d, "t": t, "old_dirs": old_dirs, "old_stps": old_stps, "ro": ro,
                      "H_diag": h_diag, "prev_flat_grad": prev_flat_grad, "prev_loss": prev_loss})
        return orig_loss


def lbfgs_update_memory(old_dirs: list[np.ndarray], old_stps: list[np.ndarray], ro: list,
                        y: np.ndarray, s: np.ndarray, h_diag, *, history_size: int,
                        dot: Callable = dot):
    """Remember the pair (y, s) if it has positive curvature y.s > 1e-10; returns H_diag.

    The oldest pair is dropped beyond ``history_size``; ``ro`` holds 1 / y.s; the new H_diag
    (the initial inverse-Hessian scale) is y.s / y.y, or the old one when the pair is skipped.
    """
    ys = dot(y, s)
    if ys > 1e-10:
        if len(old_dirs) == history_size:
            del old_dirs[0], old_stps[0], ro[0]
        old_dirs.append(y)
        old_stps.append(s)
        ro.append(1.0 / ys)
        h_diag = ys / dot(y, y)
    return h_diag


def lbfgs_direction(flat_grad: np.ndarray, old_dirs: list[np.ndarray],
                    old_stps: list[np.ndarray], ro: list, h_diag, al: list, *,
                    dot: Callable = dot) -> np.ndarray:
    """The two-loop recursion: ``-H flat_grad`` for the remembered (y, s) pairs.

    ``al`` (at least as long as the memory) receives the first loop's coefficients.
    """
    q = np.negative(flat_grad)
    for i in range(len(old_dirs) - 1, -1, -1):
        al[i] = dot(old_stps[i], q) * ro[i]
        q += old_dirs[i] * -al[i]
    r = q * h_diag
    for i in range(len(old_dirs)):
        be_i = dot(old_dirs[i], r) * ro[i]
        r += old_stps[i] * (al[i] - be_i)
    return r
