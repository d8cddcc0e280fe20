"""The coordinator's side of the sharded reduction: range maps, step tasks, gathering.

With ``reduction = sharded`` the coordinator carries no parameter or gradient arrays while
training. It cuts the job's ranges over the live workers' reducers (range ``r`` to the
``r mod n``-th reducer in worker id order: any fixed rule, the bits do not depend on it),
sends each reducer its ranges' state, and per step sends every worker a STEPTASK (its nodes,
the whole cover, the group options after the scheduler). A step is done when every node's
GRADS (loss, count, batch-norm statistics: no arrays) and every range's RANGEDONE are in. With
``clip_grad_norm`` each reducer first sends its ranges' sums of squares (RANGENORM); once all are
in, the coordinator adds them in range order and sends every reducer the clipping factor. For
checkpoints, validation and the end of the run it gathers the ranges back into the whole
model and optimizer.

A lost worker is a lost reducer, whose ranges' state is gone: ``RangesLost`` tells the trainer
to roll back to its last gathered state and recompute the steps since (plans are
deterministic, so only time is lost). A worker whose node comes out NaN or infinite (its
loss in GRADS, or its slices, which the reducers name in RANGEDONE) is evicted the same way and
the step recomputed without it, unless another worker's node of that step is non-finite too:
then the training itself diverged and carries on as a single process would.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..nn.utils import clip_coefficient
from . import protocol as P
from .range_optimizer import RangeOptimizer, gather, gather_accumulated
from .range_state import load_payload, range_payload
from .range_sums import two_norm
from .sealing import new_key, peers_seal
from .shards import assign

log = logging.getLogger("dtrain.coordinator")


class RangesLost(RuntimeError):
    """A reducer of the current range map is gone: roll back to the last gathered state."""


def sharding_refusal(trainer, executor) -> str | None:
    """Why this run cannot reduce by range (None: it can)."""
    if not hasattr(executor, "plane"):
        return f"the {executor.name} executor computes in one process"
    if len(trainer.phases) != 1:
        return "the job has several phases"
    phase = trainer.phases[0]
    if phase.closure:
        return f"{type(phase.optimizer).__name__} needs a closure over all parameters"
    if getattr(phase.optimizer, "updates_whole_tensors", False):
        return f"{type(phase.optimizer).__name__}'s factored state does not travel by range"
    if _overrides_before_step(trainer.job):
        return "the job's before_step hook needs the whole gradients"
    trained = {i for i, p in enumerate(trainer.params) if p.requires_grad}
    if set(phase.param_indices) != trained:
        return "the optimizer does not train every trainable parameter"
    return None


def _overrides_before_step(job) -> bool:
    from .job import Job

    return type(job).before_step is not Job.before_step


class ShardedPlane:
    """Range maps, step tasks and gathers of one coordinator (its ``plane``)."""

    def __init__(self, coordinator):
        self.co = coordinator
        self.reducers: dict[bytes, tuple] = {}  # worker identity -> its (address, key)
        self.version = 0
        self.members: list[bytes] = []  # the map's reducers, by reducer index
        self.owners: list[int] = []
        self.acks: set = set()
        self.loaded = False  # the reducers own the ranges (the master may be stale)
        self.lost: str | None = None  # why the map broke
        self.done: set = set()  # ranges stepped in the step in flight
        self.step: int | None = None
        self.states: dict = {}  # range -> RangeState, while gathering
        self.suspects: dict[int, str] = {}  # step -> instance whose non-finite node is checked
        self.norms: dict = {}  # range -> its RANGENORM partial, in the step in flight (clipping)

    # ------------------------------------------------------------------ messages
    def receive(self, info, msg) -> None:
        """A sharded-reduction message from worker ``info`` (ProtocolError: rejected)."""
        if isinstance(msg, P.MapAck):
            if msg.version == self.version:
                self.acks.add(info.identity)
        elif isinstance(msg, P.RangeDone):
            self._check_owner(info, msg.version, msg.range)
            if msg.step != self.step or msg.range in self.done:
                raise P.ProtocolError("stale", f"range {msg.range} done for step {msg.step}")
            self.done.add(msg.range)
            for node in msg.nonfinite:
                who = self.co.workers.get(self.co.state.asked.get(node))
                if who is not None and not self.nonfinite(
                        who, node, f"range {msg.range} of node {node} summed by worker "
                        f"{info.id} holds NaN or infinity"):
                    break
        elif isinstance(msg, P.RangeState):
            self._check_owner(info, msg.version, msg.range)
            self.states[msg.range] = msg
        elif isinstance(msg, P.RangeNorm):
            self._check_owner(info, msg.version, msg.range)
            if not self.co.settings.clip_grad_norm or msg.step != self.step or \
                    msg.range in self.norms:
                raise P.ProtocolError("stale", f"range {msg.range}'s norm for step {msg.step}")
            self.norms[msg.range] = msg.partial
            if len(self.norms) == len(self.owners):
                self._send_clip_scale()

    def _send_clip_scale(self) -> None:
        """Every range's part of the norm is in: add them in range order, as the trainer's
        range-wise ``clip_grad_norm_`` does, and tell every reducer the factor."""
        dtype = np.dtype(self.co.settings.dtype)
        partials = [dtype.type(self.norms[r]) for r in range(len(self.owners))
                    if self.norms[r] is not None]
        total = two_norm(partials, dtype)
        coef = clip_coefficient(total, self.co.settings.clip_grad_norm, dtype)
        for ident in self.members:
            self.co._send(ident, P.ClipScale(self.step, self.version, float(coef)))

    def reducer_up(self, info, msg: P.Ready) -> None:
        """Worker ``info``'s reducer listens where its READY says (ProtocolError: its key is
        not one of the job's)."""
        allowed = self.co.allowed_keys()
        if allowed is not None and msg.public not in allowed:
            raise P.ProtocolError("peer", f"worker {info.id}'s reducer key is not allowed")
        self.reducers[info.identity] = (msg.reducer, msg.public)

    def _check_owner(self, info, version: int, index: int) -> None:
        if version != self.version or index >= len(self.owners) or \
                self.members[self.owners[index]] != info.identity:
            raise P.ProtocolError("stale", f"range {index} of map {version} is not worker "
                                  f"{info.id}'s")

    def forget(self, identity: bytes, why: str) -> bool:
        """A worker left; True when it was a reducer of the current map (the map is lost)."""
        self.reducers.pop(identity, None)
        if identity in self.members:
            self.lost = self.lost or why
            return True
        return False

    # ------------------------------------------------------------------ maps
    def ensure(self, trainer) -> None:
        """A map over the live reducers whose ranges hold the trainer's current state:
        a new map when membership changed (gathering the old one first if it is whole)."""
        co = self.co
        co._ensure_workers()
        live = [w.identity for w in co.ready_workers() if w.identity in self.reducers]
        if self.loaded and live == self.members:
            return
        if self.loaded:
            self.gather(trainer)  # a worker joined: keep the state, re-cut the ranges
        while True:
            live = self._wait_for_reducers()
            self._new_map(live)
            try:
                self._wait(lambda: self.acks >= set(live), "acknowledge the range map")
            except RangesLost:
                continue
            break
        self._load(trainer)

    def _wait_for_reducers(self) -> list:
        """The ready workers whose reducers are known, once every ready worker's is."""
        co = self.co
        deadline = time.monotonic() + co.settings.worker_wait_timeout
        while True:
            co._ensure_workers()
            ready = [w.identity for w in co.ready_workers()]
            if ready and all(ident in self.reducers for ident in ready):
                return ready
            if time.monotonic() > deadline:
                raise TimeoutError("the workers' reducers did not report within "
                                   f"{co.settings.worker_wait_timeout:.0f} s")
            co.poll_once(co.settings.heartbeat_interval / 4)
            co.expire()

    def _new_map(self, live: list) -> None:
        self.version += 1
        self.members = list(live)
        self.owners = [r % len(live) for r in range(len(self.co.trainer.ranges))]
        self.acks, self.lost, self.loaded = set(), None, False
        reducers = [self.reducers[i] for i in live]
        allowed = sorted(self.co.allowed_keys() or ())
        seal = new_key() if peers_seal(bool(allowed), self.co.settings.peer_cipher) else b""
        log.info("range map %d: %d ranges over %d reducers%s", self.version, len(self.owners),
                 len(live), "; peers seal with AES-256-GCM" if seal else "")
        for ident in live:
            self.co._send(ident, P.RangeMap(self.version, reducers, self.owners, allowed, seal))

    def _load(self, trainer) -> None:
        """Give every reducer its ranges, cut from the trainer's model and optimizer."""
        for index in range(len(self.owners)):
            ranged = RangeOptimizer(trainer.optimizer, trainer.params, trainer.ranges, index)
            params, state = range_payload(ranged)
            acc = [None if a is None else a.reshape(t._data.shape) for a, t in
                   zip(ranged.grads_of(trainer._acc), ranged.tensors)] \
                if trainer._acc_count else []
            self.co._send(self.members[self.owners[index]],
                          P.RangeState(-1, self.version, index, trainer.step, params, state,
                                       acc, trainer._acc_count))
        self.loaded = True

    # ------------------------------------------------------------------ steps
    def run_step(self, plan, options: list, trainer, hold: bool = False) -> dict:
        """Step ``plan`` on the reducers (``hold``: they only accumulate its sums); returns
        every node's value (no gradients)."""
        from .coordinator import StepState

        self.ensure(trainer)
        co = self.co
        state = StepState(plan=plan, phase=0, round=self.version)
        co.state, co.current_step = state, plan.step
        self.step, self.done, self.norms = plan.step, set(), {}
        nodes = assign(plan.micro_shards, list(self.members))
        cover = sorted(n for ns in nodes.values() for n in ns)
        for ident in self.members:
            for node in nodes[ident]:
                state.asked[node] = ident
            info = co.workers[ident]
            P.send(co.sock, P.StepTask(plan.step, info.id, self.version, plan.epoch,
                                       plan.batch, nodes[ident], cover, options, hold), ident,
                   job=co.job_id)
        try:
            self._wait(lambda: co._complete(state) and len(self.done) == len(self.owners),
                       f"finish step {plan.step}")
        finally:
            co.state, self.step = None, None
        if self.suspects.pop(plan.step, None) is not None:
            log.warning("step %d: recomputed without the worker whose node was non-finite, "
                        "every value is finite: the fault was that worker's", plan.step)
        return state.values

    def nonfinite(self, info, node, problem: str) -> bool:
        """Worker ``info``'s node of the step in flight holds NaN or infinity (its loss, or
        slices a reducer summed): a faulty worker, or the training diverging?

        True (accept, as a single process would carry on) when another worker's node of this
        step was non-finite too, or nobody else is left to ask. Otherwise the worker is
        evicted: its ranges go with it and the step is recomputed without it from the last
        gathered state (the reducers summed its values already), where finite values show
        the fault was its own.
        """
        co = self.co
        first = self.suspects.get(self.step)
        others = [w for w in co.ready_workers() if w.instance != info.instance]
        if co.diverged or (first is not None and first != info.instance) or not others:
            if not co.diverged:
                log.warning("step %d: non-finite values in node %s confirmed (%s): the "
                            "training diverged; carrying on as a single process would",
                            self.step, node, problem)
            co.diverged = True
            self.suspects.pop(self.step, None)
            return True
        self.suspects[self.step] = info.instance
        co.reject(info.identity, "nonfinite", problem)
        co.evict(info, f"its node {node} of step {self.step} is non-finite; the others "
                 "recompute the step to check")
        return False

    def gather(self, trainer) -> None:
        """Write the reducers' ranges into the trainer's model and optimizer."""
        self.states = {}
        for ident in self.members:
            mine = [r for r, owner in enumerate(self.owners) if self.members[owner] == ident]
            self.co._send(ident, P.Gather(self.version, mine))
        self._wait(lambda: len(self.states) == len(self.owners), "return their ranges")
        ranged, accumulated = [], []
        for index in range(len(self.owners)):
            msg = self.states.pop(index)
            if msg.step != trainer.step:
                raise RangesLost(f"range {index} is at step {msg.step}, not {trainer.step}")
            part = RangeOptimizer(trainer.optimizer, trainer.params, trainer.ranges, index)
            load_payload(part, msg.params, msg.state)
            ranged.append(part)
            accumulated.append(msg)
        counts = {msg.acc_count for msg in accumulated}
        if len(counts) != 1:
            raise RangesLost(f"the ranges accumulated different sample counts {sorted(counts)}")
        gather(trainer.optimizer, trainer.params, ranged)
        trainer._acc = gather_accumulated(trainer.params, ranged, [m.acc for m in accumulated])
        trainer._acc_count = counts.pop()

    def _wait(self, done, what: str) -> None:
        """Serve the workers until ``done()``; RangesLost if the map breaks meanwhile."""
        def finished() -> bool:
            if self.lost:
                self.loaded = False
                raise RangesLost(self.lost)
            return done()

        self.co.serve_until(finished, f"the reducers did not {what}")
