"""``dtrain.return_types``: the (values, indices) named tuples of max, min, sort and topk.

Each op has its own type, named and printed as torch's (``dtrain.return_types.max(...)``), so
``values, indices = x.max(1)`` and ``x.max(1).indices`` read the same as with torch.
"""

from __future__ import annotations

from collections import namedtuple


def _values_indices(op: str) -> type:
    base = namedtuple(op, ["values", "indices"])

    def __repr__(self) -> str:
        return f"dtrain.return_types.{op}(\nvalues={self.values!r},\nindices={self.indices!r})"

    cls = type(op, (base,), {"__slots__": (), "__repr__": __repr__, "__module__": __name__,
                             "__doc__": f"The (values, indices) result of ``{op}``."})
    return cls


max = _values_indices("max")
min = _values_indices("min")
sort = _values_indices("sort")
topk = _values_indices("topk")
