"""The job's optimizer stepped one parameter range at a time, as a range's reducer will.

A ``RangeOptimizer`` holds one range's parameter pieces (its own copies) and its slice of the
optimizer state, in an optimizer of the job's class whose parameter groups are the job's,
restricted to the range. Because an elementwise optimizer updates every element from its own
gradient, state elements and per-parameter scalars (``step``, NAdam's ``mu_product``, ASGD's
``eta``), stepping every range gives the bits of stepping the whole model; Adafactor's tensors
are never split by the cut (``param_ranges``), so its ranges hold them whole. The job's own
optimizer stays the one place of the options: a scheduler changes its ``lr`` and each range
step takes the options from ``group_options``. ``gather`` writes the ranges' parameters and
state back into the whole model and optimizer, so a checkpoint holds the whole state in one
file and can be cut again for another ``param_ranges`` or reducer count.

LBFGS and NonlinearCG search along one vector over all parameters: they are not stepped by
range but by the coordinator on the whole vector, with their dot products summed range by
range (``range_sums``).
"""

from __future__ import annotations

import copy

import numpy as np

from ..autograd.tensor import Tensor
from .param_ranges import ParamRanges, Piece


def group_options(optimizer) -> list[dict]:
    """The options of every parameter group (``lr``, betas, ...), without the parameters:
    what a range step needs from the job's optimizer, scheduler changes included."""
    return [{k: v for k, v in group.items() if k not in ("params", "param_names")}
            for group in optimizer.param_groups]


def record_range_step(optimizer) -> None:
    """Count a step the ranges took on the job's ``optimizer``, as its own ``step`` would
    have: its scheduler checks that the optimizer stepped before the scheduler does."""
    optimizer._opt_step_count = getattr(optimizer, "_opt_step_count", 0) + 1


def _slots(optimizer, model_params: list) -> dict[int, int]:
    """Model position of each of the optimizer's parameters -> its group."""
    position = {id(p): i for i, p in enumerate(model_params)}
    return {position[id(p)]: g for g, group in enumerate(optimizer.param_groups)
            for p in group["params"]}


class RangeOptimizer:
    """One range of the job's optimizer: its parameter pieces and their slice of the state."""

    def __init__(self, optimizer, model_params: list, ranges: ParamRanges, index: int):
        """Take range ``index``'s pieces of the parameters and state from ``optimizer`` (the
        job's, with its current values and state) over ``model_params`` (``model.parameters()``).
        """
        if getattr(optimizer, "requires_closure", False):
            raise ValueError(f"{type(optimizer).__name__} searches along all parameters at "
                             "once: it runs on the coordinator, not by range")
        groups_of = _slots(optimizer, model_params)
        self.ranges = ranges
        self.pieces = [piece for piece in ranges.ranges[index] if piece.param in groups_of]
        self.tensors = []
        grouped: dict[int, list] = {}  # the job's group -> this range's tensors in it
        states = []
        for piece in self.pieces:
            param = model_params[piece.param]
            tensor = Tensor._wrap(self._cut(param._data, piece))
            self.tensors.append(tensor)
            grouped.setdefault(groups_of[piece.param], []).append(tensor)
            states.append({key: self._cut_state(value, param._data, piece, key, optimizer)
                           for key, value in optimizer.state.get(param, {}).items()})
        options = group_options(optimizer)
        self.group_index = sorted(grouped)  # the job's group of each of this range's groups
        self.optimizer = None  # a range without parameters of this optimizer steps nothing
        if grouped:
            self.optimizer = type(optimizer)([{**options[g], "params": grouped[g]}
                                              for g in self.group_index])
            self.optimizer.defaults = dict(optimizer.defaults)
        for tensor, state in zip(self.tensors, states):
            if state:
                self.optimizer.state[tensor] = state

    def _cut(self, array: np.ndarray, piece: Piece) -> np.ndarray:
        """This range's own copy of ``piece`` of a parameter-shaped array: whole pieces keep
        the shape (Adafactor factors it), split ones are flat element slices."""
        if self.ranges.is_whole(piece):
            return np.array(array, copy=True)
        return array.reshape(-1)[piece.start:piece.stop].copy()

    def _cut_state(self, value, param: np.ndarray, piece: Piece, key: str, optimizer):
        """One state entry's share for ``piece``: parameter-shaped arrays sliced, per-parameter
        scalars copied; anything else cannot be split (the optimizer is not elementwise)."""
        if self.ranges.is_whole(piece):
            return copy.deepcopy(value)
        if isinstance(value, np.ndarray) and value.shape == param.shape:
            return self._cut(value, piece)
        if isinstance(value, (int, float, np.generic)) or \
                (isinstance(value, np.ndarray) and value.ndim == 0):
            return copy.deepcopy(value)
        raise ValueError(f"{type(optimizer).__name__}'s state '{key}' is neither shaped like its "
                         "parameter nor a number, so a parameter cannot be split between "
                         "ranges: set its updates_whole_tensors = True")

    def step(self, grads: list, options: list[dict]) -> None:
        """One optimizer step of this range: ``grads`` are its pieces' gradients (flat, or
        shaped for whole pieces; None: no gradient), ``options`` the job's ``group_options``."""
        if self.optimizer is None:
            return
        for group, g in zip(self.optimizer.param_groups, self.group_index):
            group.update(options[g])
        for tensor, grad in zip(self.tensors, grads):
            tensor.grad = None if grad is None else \
                Tensor._wrap(np.asarray(grad, dtype=tensor._data.dtype).reshape(tensor.shape))
        self.optimizer.step()

    def grads_of(self, full_grads: list) -> list:
        """This range's pieces of gradients laid out like ``model.parameters()``."""
        return [None if full_grads[piece.param] is None else
                np.asarray(full_grads[piece.param]).reshape(-1)[piece.start:piece.stop]
                for piece in self.pieces]


def gather(optimizer, model_params: list, range_optimizers: list[RangeOptimizer]) -> None:
    """Write the ranges' parameters and optimizer state back into the whole model
    (``model_params``) and ``optimizer`` (the job's), replacing their values and state."""
    shares: dict[int, list] = {}  # model position -> [(piece, tensor, state)]
    for ranged in range_optimizers:
        for piece, tensor in zip(ranged.pieces, ranged.tensors):
            shares.setdefault(piece.param, []).append(
                (piece, tensor, ranged.optimizer.state.get(tensor)))
    for position, parts in shares.items():
        param = model_params[position]
        parts.sort(key=lambda part: part[0].start)
        flat = param._data.reshape(-1)
        for piece, tensor, _ in parts:
            flat[piece.start:piece.stop] = tensor._data.reshape(-1)
        states = [state for _, _, state in parts if state]
        if not states:
            optimizer.state.pop(param, None)
        elif len(states) != len(parts):
            raise ValueError(f"parameter {position} has state in some ranges only")
        else:
            optimizer.state[param] = {key: _joined([s[key] for s in states], param._data)
                                      for key in states[0]}


def gather_accumulated(model_params: list, range_optimizers: list[RangeOptimizer],
                       accs: list) -> list:
    """The trainer's per-parameter accumulation buffers (None where no gradient reached a
    parameter) joined from each range's ``acc`` pieces (an empty list: nothing yet)."""
    joined: list = [None] * len(model_params)
    for ranged, acc in zip(range_optimizers, accs):
        for piece, tensor, a in zip(ranged.pieces, ranged.tensors, acc):
            if a is None:
                continue
            param = model_params[piece.param]
            if joined[piece.param] is None:
                joined[piece.param] = np.zeros(param._data.shape, dtype=tensor._data.dtype)
            joined[piece.param].reshape(-1)[piece.start:piece.stop] = np.asarray(a).reshape(-1)
    return joined


def _joined(values: list, param: np.ndarray):
    """One state entry from its range shares: slices concatenated into the parameter's shape,
    per-parameter scalars (equal in every share) taken once."""
    first = values[0]
    if len(values) == 1:  # a whole parameter
        return copy.deepcopy(first)
    if isinstance(first, np.ndarray) and first.ndim == 1 and \
            sum(v.size for v in values) == param.size:
        return np.concatenate(values).reshape(param.shape)
    if any(np.asarray(v).tobytes() != np.asarray(first).tobytes() for v in values[1:]):
        raise ValueError("the ranges disagree on a per-parameter number of the optimizer state")
    return first
