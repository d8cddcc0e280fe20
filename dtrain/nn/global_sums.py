"""How a quantity over many parameters (a dot product, a squared norm, a sum) is added up.

A dot product of two flat vectors gives different bits when it is summed as one vector than
when it is summed range by range and the partial sums are added. Code that forms such a
quantity (``clip_grad_norm_``, LBFGS, NonlinearCG) asks ``current()`` for the way to add it
up. Outside a trainer that is ``FlatSums``: one NumPy reduction over the whole vector, the
arithmetic these functions always had (PyTorch's, as far as it goes). dtrain's trainer installs
its range-wise sums with ``using(...)`` while it clips and steps, so the bits depend on the
job's ``param_ranges`` and never on how many processes hold the ranges.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence

import numpy as np

from ..autograd.tensor import Tensor


class FlatSums:
    """One reduction over the whole flat vector: the single-process arithmetic.

    ``dot`` and ``sum`` take flat vectors laid out as the concatenation of ``params``
    (raveled, in order); the flat way ignores the layout, a range-wise way uses it to find the
    ranges.
    """

    def dot(self, a: np.ndarray, b: np.ndarray, params: Sequence[Tensor]):
        """``a . b`` as a NumPy scalar of their dtype (``einsum``: products summed in order,
        without fused multiply-adds, as PyTorch's ``dot`` does)."""
        return np.einsum("i,i->", a, b)

    def sum(self, a: np.ndarray, params: Sequence[Tensor]):
        """The sum of ``a``'s elements as a NumPy scalar of its dtype."""
        return np.add.reduce(a)

    def grad_norm(self, grads: Sequence[np.ndarray], params: Sequence[Tensor],
                  norm_type: float):
        """The joint ``norm_type`` norm of ``grads`` (the gradients of ``params``) as a 0-d
        array of their dtype: PyTorch's ``clip_grad_norm_`` order, the norm of the
        per-tensor norms."""
        dtype = grads[0].dtype
        if norm_type == math.inf:
            return np.asarray(max(np.abs(g).max() if g.size else 0.0 for g in grads),
                              dtype=dtype)
        per = [np.linalg.norm(g.ravel(), norm_type) for g in grads]
        return np.asarray(np.linalg.norm(np.asarray(per, dtype=dtype), norm_type), dtype=dtype)


FLAT = FlatSums()
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("dtrain_global_sums", default=FLAT)


def current():
    """The way global quantities are added up here and now (``FLAT`` unless ``using``)."""
    return _CURRENT.get()


@contextlib.contextmanager
def using(sums) -> Iterator[None]:
    """Add global quantities up with ``sums`` (an object with ``FlatSums``' methods) inside."""
    token = _CURRENT.set(sums)
    try:
        yield
    finally:
        _CURRENT.reset(token)
