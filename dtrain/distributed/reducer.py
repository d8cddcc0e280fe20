"""A worker's reducer: sums the gradients of the parameter ranges it owns and steps them.

For each owned range and step it collects one RANGEGRADS per node of the step's cover (the
nodes the coordinator asked for, named in every STEPTASK), adds them along the fixed tree with
``tree_sum`` (the trainer's elementwise additions, on the range's slices), divides by the batch
size as the trainer does and steps the range's ``RangeOptimizer`` with the job's group options.
With ``clip_grad_norm`` it first sends the range's sum of squares (RANGENORM) and steps once the
coordinator, having added every range's, says by how much to scale (CLIPSCALE), as the trainer's
range-wise ``clip_grad_norm_`` does. With ``accumulate`` > 1 it adds each mini-batch's sums to
the range's buffers (the trainer's ``_accumulate``) and steps only on a group's last mini-batch.
So a range's new parameters are the bits the coordinator's whole step would give. It holds no
socket: ``Mailbox`` (in the worker) moves the messages, this decides and answers with messages.
Anything wrong in a message raises ``ProtocolError`` and changes nothing.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import numpy as np

from . import protocol as P
from .accumulation import add_to_buffer, buffer_mean
from .range_optimizer import RangeOptimizer
from .range_state import load_payload, range_payload
from .range_sums import squares
from .shards import BatchPlan, tree_sum

log = logging.getLogger("dtrain.worker")  # the reducer runs in a worker


@dataclass
class StepCover:
    """What a reducer knows of one step: its plan, the nodes its sum covers, the options."""

    plan: BatchPlan
    cover: frozenset
    options: list
    hold: bool = False  # accumulate the sums, do not step (not the group's last mini-batch)


@dataclass
class OwnedRange:
    """A range this reducer owns: its optimizer share and the next step it will take."""

    ranged: RangeOptimizer
    step: int
    values: dict = field(default_factory=dict)  # node -> [piece gradients] | None
    clipping: tuple | None = None  # (mean gradients, cover, non-finite nodes) awaiting CLIPSCALE
    acc: list | None = None  # accumulate > 1: the group's gradient sums so far, per piece
    acc_count: int = 0  # the samples they hold


def add_pieces(a: list, b: list) -> list:
    """The tree's addition of two nodes' piece gradients (``a`` is the left child)."""
    return [y if x is None else x if y is None else x + y for x, y in zip(a, b)]


def _finite(pieces: list | None) -> bool:
    """No NaN or infinity in a node's (or a sum's) piece gradients. A sum is finite only if
    every node added into it is, so checking the sum first costs one pass per step."""
    return pieces is None or all(g is None or np.isfinite(g).all() for g in pieces)


def _refs(values: list) -> int:
    """References to ``values[0]`` as seen from here (a list keeps the probe's own call out)."""
    return sys.getrefcount(values[0])


_PROBE = [np.empty(0)]  # held once, as a tensor holds its array
FREE_REFS = _refs([_PROBE[0]])  # the count of an array only its tensor (and the list) holds


def unshare(tensor) -> None:
    """Give ``tensor`` values of its own if anything else still holds its array (a send of
    RANGEPARAMS ZeroMQ has not finished, parameters a worker has not copied yet), so an
    optimizer step in place never changes bytes on their way."""
    if _refs([tensor._data]) > FREE_REFS:
        tensor._data = tensor._data.copy()


def mean(total: np.ndarray, size: int, dtype, owned: bool) -> np.ndarray:
    """``total / size`` as ``dtype``, the trainer's bits; into ``total`` itself when it is an
    ``owned`` sum of the right dtype (no new array: a range is megabytes)."""
    if owned and total.dtype == dtype and total.flags.writeable:
        return np.divide(total, size, out=total)
    return np.divide(total, size).astype(dtype, copy=False)


class RangeReducer:
    """The ranges of one range map version that this worker's reducer owns."""

    def __init__(self, worker: int, version: int, optimizer, model_params: list, ranges,
                 micro_shards: int, clip_grad_norm: float = 0.0, accumulate: int = 1):
        self.worker = worker
        self.micro_shards = micro_shards
        self.clip_grad_norm = clip_grad_norm  # the job's setting: 0 steps without RANGENORM
        self.accumulate = accumulate  # the job's setting: > 1 sums mini-batches before a step
        self.version = version
        self.optimizer = optimizer  # the job's, on this worker: options and class only
        self.model_params = model_params
        self.ranges = ranges
        self.owned: dict[int, OwnedRange] = {}
        self.steps: dict[int, StepCover] = {}  # step -> its cover, from STEPTASKs
        self.early: list = []  # RANGEGRADS that came before their step's STEPTASK

    def load(self, msg: P.RangeState) -> P.RangeParams:
        """Own range ``msg.range`` from ``msg.step`` on, with the state it carries; returns
        the range's parameters for that step, for every worker."""
        if msg.version != self.version:
            raise P.ProtocolError("stale", f"range state of map {msg.version}, not "
                                  f"{self.version}")
        ranged = RangeOptimizer(self.optimizer, self.model_params, self.ranges, msg.range)
        if len(ranged.tensors) != len(msg.params):
            raise P.ProtocolError("names", f"range {msg.range} holds {len(ranged.tensors)} "
                                  "trained pieces here")
        load_payload(ranged, msg.params, msg.state)
        owned = self.owned[msg.range] = OwnedRange(ranged, msg.step)
        if msg.acc_count:
            owned.acc = [None if a is None else np.array(a, dtype=t._data.dtype).reshape(
                t._data.shape) for a, t in zip(msg.acc, ranged.tensors)]
            owned.acc_count = msg.acc_count
        return self._params(msg.range)

    def state(self, index: int) -> P.RangeState:
        """RANGESTATE of an owned range (ProtocolError when it is not owned here)."""
        owned = self._owned(index)
        params, state = range_payload(owned.ranged)
        return P.RangeState(self.worker, self.version, index, owned.step, params, state,
                            list(owned.acc or []), owned.acc_count)

    def begin(self, task: P.StepTask, plan: BatchPlan) -> list:
        """Learn step ``task.step``'s cover and options; returns the answers of the gradients
        that were waiting for it."""
        if task.version != self.version:
            return []
        self.steps = {s: c for s, c in self.steps.items() if s >= task.step - 1}
        self.steps[task.step] = StepCover(plan, frozenset(task.cover), task.options, task.hold)
        early, self.early = self.early, []
        out = []
        for msg in early:  # checked against the plan only now: a bad one costs only itself
            try:
                out.extend(self.add(msg))
            except P.ProtocolError as e:
                log.warning("rejected a message from a peer: %s (%s)", e, e.reason)
        return out

    def add(self, msg: P.RangeGrads) -> list:
        """Take one node's gradients of an owned range; when the step's cover is complete,
        step the range. Returns the messages to send: ``[RangeParams, RangeDone]`` or none."""
        if msg.version != self.version:
            raise P.ProtocolError("stale", f"gradients of map {msg.version}, not {self.version}")
        owned = self._owned(msg.range)
        if msg.step != owned.step:
            raise P.ProtocolError("stale", f"gradients of step {msg.step} for range "
                                  f"{msg.range}, which is at step {owned.step}")
        cover = self.steps.get(msg.step)
        if cover is None:
            if len(self.early) >= 2 * self.micro_shards * len(self.owned):
                raise P.ProtocolError("stale", "too many gradients ahead of their step")
            self.early.append(msg)
            return []
        if msg.node not in cover.cover:
            raise P.ProtocolError("node", f"node {msg.node} is not in step {msg.step}'s cover")
        if msg.node in owned.values:
            raise P.ProtocolError("stale", f"node {msg.node} of range {msg.range} already "
                                  "received")
        if msg.count != cover.plan.node_count(msg.node):
            raise P.ProtocolError("count", f"node {msg.node} holds "
                                  f"{cover.plan.node_count(msg.node)} samples, message says "
                                  f"{msg.count}")
        owned.values[msg.node] = None if msg.count == 0 else list(msg.grads)
        if len(owned.values) < len(cover.cover):
            return []
        return self._step(msg.range, owned, cover)

    def _step(self, index: int, owned: OwnedRange, cover: StepCover) -> list:
        """Sum the cover along the tree, divide by the batch size, step the range (with
        ``clip_grad_norm``: send its sum of squares and wait for the scale first)."""
        plan = cover.plan
        total = tree_sum(owned.values, (0, plan.micro_shards), add_pieces)
        nonfinite = [] if _finite(total) else sorted(
            node for node, pieces in owned.values.items() if not _finite(pieces))
        received = {id(g) for pieces in owned.values.values() if pieces for g in pieces}
        owned.values = {}
        if self.accumulate > 1:
            self._accumulate(owned, total, plan.size)
            if cover.hold:
                owned.step = plan.step + 1  # the same parameters serve the next mini-batch
                return [self._params(index), P.RangeDone(plan.step, self.worker, self.version,
                                                         index, nonfinite)]
            grads = self._flush(owned)
        else:
            grads = [None] * len(owned.ranged.tensors) if total is None else [
                None if g is None else mean(g, plan.size, t._data.dtype, id(g) not in received)
                for g, t in zip(total, owned.ranged.tensors)]
        if self.clip_grad_norm:  # scaled in place later: ``mean`` gives arrays of its own
            owned.clipping = (grads, cover, nonfinite)
            partial = squares(grads)
            return [P.RangeNorm(plan.step, self.worker, self.version, index,
                                None if partial is None else float(partial))]
        return self._apply(index, owned, grads, cover, nonfinite)

    @staticmethod
    def _accumulate(owned: OwnedRange, total: list | None, size: int) -> None:
        """Add a mini-batch's range sums to the group's buffers, as the trainer's
        ``_accumulate`` adds whole gradients (a first sum is copied in the parameters' dtype)."""
        if owned.acc is None:
            owned.acc = [None] * len(owned.ranged.tensors)
        for j, (g, tensor) in enumerate(zip(total or [None] * len(owned.acc),
                                            owned.ranged.tensors)):
            if g is not None:
                owned.acc[j] = add_to_buffer(owned.acc[j], g.reshape(tensor._data.shape),
                                             tensor._data.dtype)
        owned.acc_count += size

    @staticmethod
    def _flush(owned: OwnedRange) -> list:
        """The group's mean gradients (the trainer's ``_flush_accumulated``); empties it."""
        acc = owned.acc or [None] * len(owned.ranged.tensors)
        grads = [None if a is None else buffer_mean(a, owned.acc_count, t._data.dtype)
                 for a, t in zip(acc, owned.ranged.tensors)]
        owned.acc, owned.acc_count = None, 0
        return grads

    def clip(self, msg: P.ClipScale) -> list:
        """Scale each owned range's gradients of step ``msg.step`` by the coordinator's factor
        and step them; returns their ``RangeParams`` and ``RangeDone``."""
        if msg.version != self.version:
            raise P.ProtocolError("stale", f"clip scale of map {msg.version}, not "
                                  f"{self.version}")
        waiting = [(index, owned) for index, owned in sorted(self.owned.items())
                   if owned.clipping is not None and owned.clipping[1].plan.step == msg.step]
        if not waiting:
            raise P.ProtocolError("stale", f"clip scale of step {msg.step}: no range of it "
                                  "waits here")
        out = []
        for index, owned in waiting:
            grads, cover, nonfinite = owned.clipping
            owned.clipping = None
            for g in grads:
                if g is not None:
                    g *= np.asarray(msg.coef, dtype=g.dtype)
            out.extend(self._apply(index, owned, grads, cover, nonfinite))
        return out

    def _apply(self, index: int, owned: OwnedRange, grads: list, cover: StepCover,
               nonfinite: list) -> list:
        """Step the range with its (mean, maybe clipped) gradients; its new parameters and
        RANGEDONE for the coordinator."""
        plan = cover.plan
        for tensor in owned.ranged.tensors:
            unshare(tensor)
        owned.ranged.step(grads, cover.options)
        owned.step = plan.step + 1
        return [self._params(index), P.RangeDone(plan.step, self.worker, self.version, index,
                                                 nonfinite)]

    def _params(self, index: int) -> P.RangeParams:
        """The range's parameters, the owned arrays themselves: the next step is taken once
        every worker computed with them, so their sends are over by then (``unshare``)."""
        owned = self.owned[index]
        return P.RangeParams(owned.step, self.worker, self.version, index,
                             [t._data for t in owned.ranged.tensors])

    def _owned(self, index: int) -> OwnedRange:
        owned = self.owned.get(index)
        if owned is None:
            raise P.ProtocolError("node", f"range {index} is not owned by this reducer")
        return owned
