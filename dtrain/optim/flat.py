"""The shared base of optimizers that search along one flat vector of all parameters."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..nn import global_sums
from .line_search import strong_wolfe
from .optimizer import Optimizer


class FlatOptimizer(Optimizer):
    """One parameter group seen as a single vector: flat gradients, steps and re-evaluations.

    LBFGS and NonlinearCG take steps along directions over all parameters at once, with a line
    search that re-evaluates the closure; both need exactly these views.
    """

    requires_closure = True

    def add_param_group(self, param_group: dict) -> None:
        """Add the one parameter group; a second raises, as the search spans all parameters."""
        if self.param_groups:
            raise ValueError(f"{type(self).__name__} doesn't support per-parameter options "
                             "(parameter groups)")
        super().add_param_group(param_group)

    @property
    def _params(self) -> list:
        return self.param_groups[0]["params"]

    def _flat_grad(self) -> np.ndarray:
        """All gradients as one new vector (zeros for parameters without a gradient)."""
        return np.concatenate([
            self._grad(p, i).reshape(-1) if p.grad is not None
            else np.zeros(p._data.size, p._data.dtype)
            for i, p in enumerate(self._params)])

    def _global_sums(self) -> tuple[Callable, Callable]:
        """This step's ``dot(a, b)`` and ``total(a)`` over flat vectors, added up the way
        ``global_sums.current()`` says: flat, as PyTorch does, unless a trainer has installed
        its range-wise sums."""
        sums, params = global_sums.current(), self._params
        return (lambda a, b: sums.dot(a, b, params)), (lambda a: sums.sum(a, params))

    def _add_step(self, t, d: np.ndarray) -> None:
        """theta += t * d, with ``d`` split back into the parameters' shapes."""
        offset = 0
        for p in self._params:
            n = p._data.size
            p._data += np.multiply(d[offset:offset + n], t).reshape(p._data.shape)
            offset += n

    def _evaluate_at(self, closure: Callable, x0: list[np.ndarray], t, d: np.ndarray):
        """Loss and flat gradient at ``x0 + t d``; the parameters are put back to ``x0``."""
        self._add_step(t, d)
        loss = float(self._evaluate(closure))
        flat_grad = self._flat_grad()
        for p, x in zip(self._params, x0):
            np.copyto(p._data, x)
        return loss, flat_grad

    def _start(self, closure: Callable | None):
        """Check the closure, evaluate it once; returns (state, loss tensor, flat gradient).

        The state (shared ``func_evals``/``n_iter`` counters and the algorithm's memory) is
        kept under the first parameter, as PyTorch's LBFGS does.
        """
        if closure is None:
            raise TypeError(f"{type(self).__name__}.step() requires a closure: a function that "
                            "zeroes the gradients, computes the loss, calls backward() and "
                            "returns the loss")
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        orig_loss = self._evaluate(closure)
        state["func_evals"] += 1
        return state, orig_loss, self._flat_grad()

    def _take_step(self, closure: Callable, d: np.ndarray, t, loss: float,
                   flat_grad: np.ndarray, gtd, *, search: bool, last_iter: bool,
                   tolerance_grad: float, max_ls: int, dot: Callable, **search_options):
        """Move along ``d``: a strong-Wolfe search for ``t``, or the fixed step ``t``.

        Returns (loss, flat_grad, t, closure evaluations used, gradient below tolerance). A
        fixed step re-evaluates the closure except on the last iteration, whose loss would go
        unused (as in PyTorch's LBFGS). ``dot`` is the step's (``_global_sums``).
        """
        if search:
            x0 = [p._data.copy() for p in self._params]
            loss, flat_grad, t, used = strong_wolfe(
                lambda step: self._evaluate_at(closure, x0, step, d),
                t, d, loss, flat_grad, gtd, max_ls=max_ls, dot=dot, **search_options)
            self._add_step(t, d)
            return loss, flat_grad, t, used, np.abs(flat_grad).max() <= tolerance_grad
        self._add_step(t, d)
        if last_iter:
            return loss, flat_grad, t, 0, False
        loss = float(self._evaluate(closure))
        flat_grad = self._flat_grad()
        return loss, flat_grad, t, 1, np.abs(flat_grad).max() <= tolerance_grad
