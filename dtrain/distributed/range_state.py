"""A range's parameters and optimizer state as RANGESTATE carries them, and back.

What moves a range between the coordinator (which cuts it from the whole model and optimizer
at the start, and after a rollback) and a reducer (which owns it while training, and returns
it for checkpoints). Parameter-shaped state travels as arrays; numbers as 0-d arrays with a
kind that restores their Python or NumPy type, so a range moved and moved back steps with the
same bits.
"""

from __future__ import annotations

import numpy as np

from .range_optimizer import RangeOptimizer


def wire_entry(key: str, value, shape: tuple) -> tuple[str, np.ndarray]:
    """(kind, array) of one state entry of a piece of ``shape``."""
    if isinstance(value, np.ndarray) and value.shape == shape and value.ndim > 0:
        return "array", value
    if isinstance(value, bool):
        raise ValueError(f"optimizer state {key!r} is a bool, which a range cannot carry")
    if isinstance(value, float):
        return "float", np.array(value, dtype=np.float64)
    if isinstance(value, int):
        return "int", np.array(value, dtype=np.int64)
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        return "scalar", np.asarray(value)
    raise ValueError(f"optimizer state {key!r} is neither shaped like its piece nor a number: "
                     "it cannot be moved range by range")


def from_wire(kind: str, array: np.ndarray):
    """The state entry ``wire_entry`` encoded, as the optimizer's own (writable) value."""
    if kind == "array":
        return np.array(array, copy=True)
    if kind == "float":
        return float(array)
    if kind == "int":
        return int(array)
    return np.array(array, copy=True)[()]


def range_payload(ranged: RangeOptimizer) -> tuple[list, list]:
    """(parameters, state) of a range, as RANGESTATE carries them (views: send before the
    range steps again)."""
    params = [tensor._data for tensor in ranged.tensors]
    state = []
    for tensor in ranged.tensors:
        entries = ranged.optimizer.state.get(tensor, {}) if ranged.optimizer else {}
        state.append({key: wire_entry(key, value, tensor._data.shape)
                      for key, value in entries.items()})
    return params, state


def load_payload(ranged: RangeOptimizer, params: list, state: list) -> None:
    """Replace a range's parameters and optimizer state with a RANGESTATE's (copied)."""
    for tensor, value, entries in zip(ranged.tensors, params, state):
        np.copyto(tensor._data, np.asarray(value).reshape(tensor._data.shape))
        if ranged.optimizer is None:
            continue
        if entries:
            ranged.optimizer.state[tensor] = {key: from_wire(kind, array)
                                              for key, (kind, array) in entries.items()}
        else:
            ranged.optimizer.state.pop(tensor, None)
