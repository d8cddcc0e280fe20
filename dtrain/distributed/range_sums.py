"""Global quantities (dot products, squared norms, sums) formed range by range.

Each range's partial is one NumPy reduction over the range's elements laid end to end in piece
order (``einsum`` for a dot product, ``add.reduce`` for a sum): exactly what a process holding
only that range computes from its own contiguous copy. The partials are then added in range
order, sequentially (``((p0 + p1) + p2) + ...``), in the vectors' dtype. With one range this is
the flat single-vector computation of ``dtrain.nn.global_sums.FlatSums``. The trainer installs
``RangeSums`` while it clips and steps (``dtrain.nn.global_sums.using``), so
``clip_grad_norm`` (the setting and ``clip_grad_norm_`` in a job's hook), LBFGS and
NonlinearCG give bits fixed by ``param_ranges``, in-process and across processes alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .param_ranges import ParamRanges


def add_in_range_order(partials: list, dtype: np.dtype):
    """``((p0 + p1) + p2) + ...`` as a NumPy scalar of ``dtype``; zero when there are none.

    The one order every process adds range partials in.
    """
    if not partials:
        return dtype.type(0)
    total = partials[0]
    for partial in partials[1:]:
        total = total + partial
    return dtype.type(total)


def two_norm(partials: list, dtype: np.dtype) -> np.ndarray:
    """The 2-norm from range partials (sums of squares, in range order) as a 0-d array of
    ``dtype``: the root of their sum. The in-process trainer and the sharded reduction's
    coordinator (adding the reducers' RANGENORMs) both go through here."""
    return np.asarray(np.sqrt(add_in_range_order(partials, dtype)), dtype=dtype)


def squares(pieces: list):
    """A range's partial of the squared 2-norm: ``g . g`` over its pieces laid end to end
    (``einsum``, as ``RangeSums.dot`` forms each range's partial); None when it has none."""
    flat = [g.ravel() for g in pieces if g is not None]
    if not flat:
        return None
    flat = np.concatenate(flat) if len(flat) > 1 else flat[0]
    return np.einsum("i,i->", flat, flat)


class RangeSums:
    """``FlatSums``' methods, summed per range of ``ranges`` and added in range order.

    ``params`` are the model's parameters (``model.parameters()``, the positions the cut
    numbers). A flat vector handed in is the concatenation of some of them, raveled, in any
    order (an optimizer's, a phase's); only their pieces enter each range's partial.
    """

    def __init__(self, ranges: ParamRanges, params: Sequence):
        self.ranges = ranges
        self.position = {id(p): i for i, p in enumerate(params)}
        self._layouts: dict = {}

    def dot(self, a: np.ndarray, b: np.ndarray, params: Sequence):
        """``a . b`` summed per range, partials added in range order."""
        return self._over_ranges(params, a.dtype,
                                 lambda idx: np.einsum("i,i->", a[idx], b[idx]))

    def sum(self, a: np.ndarray, params: Sequence):
        """The sum of ``a``'s elements per range, partials added in range order."""
        return self._over_ranges(params, a.dtype, lambda idx: np.add.reduce(a[idx]))

    def grad_norm(self, grads: Sequence[np.ndarray], params: Sequence, norm_type: float):
        """The joint ``norm_type`` norm of ``grads`` as a 0-d array: the maximum for inf
        (exact in any order), else the root of the range-wise sum of ``|g|^p``
        (``g . g`` for the 2-norm)."""
        dtype = grads[0].dtype
        if norm_type == math.inf:
            return np.asarray(max(np.abs(g).max() if g.size else 0.0 for g in grads),
                              dtype=dtype)
        flat = np.concatenate([g.ravel() for g in grads])
        if norm_type == 2.0:
            return two_norm([squares([flat[index]]) for index in self._layout(params)], dtype)
        powered = np.power(np.abs(flat), dtype.type(norm_type))
        return np.asarray(np.power(self.sum(powered, params), dtype.type(1.0 / norm_type)),
                          dtype=dtype)

    def _over_ranges(self, params: Sequence, dtype: np.dtype, partial: Callable):
        """``partial(index)`` for each range that holds elements of the vector (``index``: a
        slice, or an index array where the range's pieces are not adjacent), added up."""
        layout = self._layout(params)
        return add_in_range_order([partial(index) for index in layout], dtype)

    def _layout(self, params: Sequence) -> list:
        """Per range, where its elements sit in a vector concatenating ``params``."""
        key = tuple(id(p) for p in params)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = self._find_layout(params)
        return layout

    def _find_layout(self, params: Sequence) -> list:
        offsets, offset = {}, 0
        for p in params:
            if id(p) not in self.position:
                raise ValueError("a global quantity over a tensor that is not a parameter of "
                                 "the job's model cannot be formed range by range")
            offsets[self.position[id(p)]] = offset
            offset += p._data.size
        layout = []
        for pieces in self.ranges.ranges:
            # a frozen parameter (requires_grad False) is in no range: its elements, zeros
            # in a flat gradient, are left out of every partial
            spans = [(offsets[piece.param] + piece.start, offsets[piece.param] + piece.stop)
                     for piece in pieces if piece.param in offsets]
            if not spans:
                continue
            adjacent = all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            layout.append(slice(spans[0][0], spans[-1][1]) if adjacent else
                          np.concatenate([np.arange(lo, hi) for lo, hi in spans]))
        return layout
