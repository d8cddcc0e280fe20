"""The coordinator's ZeroMQ side: admit workers, hand out micro-shards, collect and check gradients.

One ROUTER socket serves every worker (each a DEALER). Parameters go out as ROUTER replies, one
TASK per worker. ``bench/bench_broadcast.py`` measured the alternative on loopback: one PUB send
took 1.32x the ROUTER replies' time for 2 workers and 1.01x for 4 (2.6 MB), 1.17x and 0.94x for
38 MB, because ZeroMQ still writes the bytes once per subscriber connection. PUB would also drop
messages at its high-water mark and miss workers in the slow-joiner gap, while a ROUTER reply
carries the same zero-copy frames and lets each TASK name that worker's micro-shards. Workers on
the coordinator's own machine read the parameters from a shared board in /dev/shm instead
(``board.py``), so their TASKs carry no arrays at all. Every received message is validated; a bad one is logged with its
reason and counted, and leaves the training state untouched. A worker that sends an invalid
gradient, goes silent past the heartbeat timeout or disconnects is evicted and its tree nodes
are recomputed by the others, so the step's result is unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import socket as _socket
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from . import protocol as P
from .board import SharedSlots, machine_id
from .compute import ShardValue, batch_norm_modules
from .security import make_server, start_authenticator
from .shards import BatchPlan, assign, is_tree_node

log = logging.getLogger("dtrain.coordinator")

MAX_MESSAGE_BYTES = 1 << 31  # before the model is known
IO_THREADS = 2  # ZeroMQ I/O threads of the coordinator's context
SLACK_BYTES = 1 << 20  # allowance above the largest legitimate message (batch-norm stats etc.)


class WorkerError(RuntimeError):
    """A worker reported an exception from the training script."""


class NotEnoughWorkers(RuntimeError):
    """Fewer than ``min_workers`` workers were available within the wait timeout."""


@dataclass
class WorkerInfo:
    """What the coordinator knows about one connected worker."""

    identity: bytes
    id: int
    name: str
    pid: int
    host: str
    last_seen: float
    joined_step: int
    compute_seconds: float = 0.0
    comm_seconds: float = 0.0
    task_sent: float = 0.0
    steps: int = 0
    machine: str = ""
    board_ready: bool = False  # reads parameters from the shared board instead of the TASK
    grad_board: object = None  # SharedSlots the worker writes its gradients into


@dataclass
class StepState:
    """Bookkeeping of the step in flight."""

    plan: BatchPlan
    phase: int = 0
    round: int = 0  # evaluation round: several per step with closures or phases
    asked: dict = field(default_factory=dict)  # node -> worker identity
    values: dict = field(default_factory=dict)  # node -> ShardValue | None
    snapshot: dict = field(default_factory=dict)  # the parameters this round's TASKs carry
    nonfinite: dict = field(default_factory=dict)  # node -> worker that sent it non-finite
    board_written: bool = False


def _beacon_target(of) -> bytes:
    """The data-socket identity a beacon heartbeat speaks for (hex in the ``of`` field)."""
    try:
        if isinstance(of, str) and len(of) <= 512:
            return bytes.fromhex(of)
    except ValueError:
        pass
    raise P.ProtocolError("fields", f"heartbeat for {str(of)[:40]!r}: not a worker identity")


def make_router(ctx: zmq.Context, bind: str, keys=None) -> tuple[zmq.Socket, str]:
    """A ROUTER bound to ``bind`` (``tcp://HOST:0`` picks a free port), a CURVE server when
    ``keys`` are given; returns (socket, address)."""
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted worker may reuse its identity
    sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
    if keys is not None:
        make_server(sock, keys)
    try:
        sock.bind(bind)
    except zmq.ZMQError as e:
        sock.close(0)
        raise OSError(f"coordinator cannot listen on {bind}: {e}") from e
    return sock, sock.getsockopt(zmq.LAST_ENDPOINT).decode()


class ZmqExecutor:
    """Computes tree nodes on worker processes connected over ZeroMQ."""

    name = "zmq"

    def __init__(self, bind: str = "tcp://127.0.0.1:0", *, expected_workers: int = 1,
                 job_id: str, digest: str, settings=None, ctx: zmq.Context | None = None,
                 keys=None, on_event=None, board: bool = False):
        # Two I/O threads move the TASK bytes to two workers at once (measured on loopback:
        # about 1 ms less per 2-worker step of the MLP 784-512-512-10 than one thread).
        self.own_ctx = ctx is None
        self.ctx = ctx or zmq.Context(io_threads=IO_THREADS)
        self.auth = start_authenticator(self.ctx, keys) if keys is not None else None
        try:
            self.sock, self.address = make_router(self.ctx, bind, keys)
        except BaseException:
            if self.auth is not None:
                self.auth.stop()
            raise
        self.next_beat = 0.0
        self.expected = expected_workers
        self.job_id = job_id
        self.digest = digest
        self.settings = settings
        self.workers: dict[bytes, WorkerInfo] = {}
        self.next_worker_id = 0
        self.rejected = 0
        self.evictions = 0
        self.on_event = on_event or (lambda kind, info: None)
        self.trainer = None
        self.param_specs: list = []
        self.state: StepState | None = None
        self.current_step = -1
        self.idle_hook = None  # called on every poll (the launcher supervises processes here)
        self.max_bytes = MAX_MESSAGE_BYTES
        self.diverged = False  # non-finite gradients were confirmed by a second worker
        self.use_board = board  # share parameters with same-machine workers via /dev/shm
        self.board = None
        self.machine = machine_id()

    # ------------------------------------------------------------------ lifecycle
    def start(self, trainer) -> None:
        """Attach to the trainer and wait for the expected workers."""
        self.attach(trainer)
        self.wait_for_workers(self.expected, self.settings.worker_wait_timeout)

    def attach(self, trainer) -> None:
        """Remember the model's shapes, against which every gradient message is checked."""
        self.trainer = trainer
        self.settings = trainer.settings
        self.param_specs = [(p._data.shape, p._data.dtype) for p in trainer.params]
        self.bn_features = [m.running_mean.shape if getattr(m, "running_mean", None) is not None
                            else None for m in batch_norm_modules(trainer.model)]
        # the largest valid message is one node's gradients plus its shards' batch-norm stats
        param_bytes = sum(p._data.nbytes for p in trainer.params)
        bn_bytes = 2 * self.settings.micro_shards * sum(
            int(np.prod(s)) * 8 for s in self.bn_features if s is not None)
        self.max_bytes = param_bytes + bn_bytes + SLACK_BYTES
        if self.use_board and self.board is None:
            try:
                self.board = SharedSlots([(p._data.shape, p._data.dtype) for p in trainer.params],
                                         1)
            except OSError as e:
                log.warning("no shared parameter board (%s): parameters go in every TASK", e)

    def wait_for_workers(self, count: int, timeout: float) -> None:
        """Serve HELLOs until ``count`` workers are connected (at least ``min_workers``)."""
        deadline = time.monotonic() + timeout
        while len(self.workers) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if len(self.workers) >= self.settings.min_workers:
                    log.warning("only %d of %d workers joined within %.0f s; training with them",
                                len(self.workers), count, timeout)
                    return
                raise NotEnoughWorkers(
                    f"{len(self.workers)} worker(s) connected within {timeout:.0f} s; the job "
                    f"needs at least {max(self.settings.min_workers, 1)}")
            self.poll_once(min(remaining, self.settings.heartbeat_interval))
            self.expire()

    def close(self) -> None:
        """Tell every worker to stop, then close the socket."""
        for info in list(self.workers.values()):
            self._send(info.identity, P.Message(P.STOP, self.job_id, self.current_step, info.id))
        self.sock.close(linger=200)
        if self.auth is not None:
            self.auth.stop()
        if self.board is not None:
            self.board.close()
            self.board = None
        for info in self.workers.values():
            if info.grad_board is not None:
                info.grad_board.close()
                info.grad_board = None
        if self.own_ctx:
            self.ctx.term()

    # ------------------------------------------------------------------ stepping
    def compute(self, plan: BatchPlan, trainer, phase: int = 0, round_id: int = 0) -> dict:
        """Hand this round's micro-shards to the live workers; return every node's value."""
        self.current_step = plan.step
        state = StepState(plan=plan, phase=phase, round=round_id)
        self.state = state
        # The live parameter arrays go out as zero-copy frames. The optimizer changes them in
        # place only after every node of the round has come back, and a worker answers only
        # once it holds its whole TASK; a frame still queued for an evicted worker may be read
        # torn, but that worker's answers are stale and rejected.
        state.snapshot = trainer.state_arrays()
        self._ensure_workers()
        live = sorted(self.workers.values(), key=lambda w: w.id)
        for info, nodes in assign(plan.micro_shards, [w.identity for w in live]).items():
            self._ask(self.workers[info], nodes)
        deadline = time.monotonic() + self.settings.step_timeout
        while len(state.values) < len(state.asked) or not self._complete(state):
            if time.monotonic() > deadline:
                raise TimeoutError(f"step {plan.step} did not complete within "
                                   f"{self.settings.step_timeout:.0f} s")
            self.poll_once(self.settings.heartbeat_interval / 4)
            self.expire()
        self.state = None
        return state.values

    def _complete(self, state: StepState) -> bool:
        return all(node in state.values for node in state.asked)

    def _ask(self, info: WorkerInfo, nodes: list) -> None:
        if not nodes:
            return
        state = self.state
        for node in nodes:
            state.asked[node] = info.identity
        fields = {"epoch": state.plan.epoch, "batch": state.plan.batch, "phase": state.phase,
                  "round": state.round, "nodes": [list(n) for n in nodes]}
        arrays = state.snapshot
        if info.board_ready and self.board is not None:
            if not state.board_written:  # once per round: the parameters do not change in it
                self.board.write(0, list(state.snapshot.values()))
                state.board_written = True
            fields["board"] = True
            arrays = {}
        if info.grad_board is not None:
            fields["grad_slots"] = True
        msg = P.Message(P.TASK, self.job_id, state.plan.step, info.id, fields, arrays)
        info.task_sent = time.monotonic()
        self.sock.send_multipart([info.identity] + P.encode(msg), copy=False)

    def _reassign(self, nodes: list) -> None:
        """Give the nodes of an evicted worker to the live workers, least loaded first."""
        if not nodes:
            return
        self._ensure_workers()
        load = {w.identity: 0 for w in self.workers.values()}
        for node, ident in self.state.asked.items():
            if node not in self.state.values and ident in load:
                load[ident] += 1
        per_worker: dict[bytes, list] = {}
        for node in nodes:
            ident = min(load, key=lambda k: (load[k], self.workers[k].id))
            load[ident] += 1
            per_worker.setdefault(ident, []).append(node)
        for ident, assigned in per_worker.items():
            log.info("step %d: micro-shard nodes %s reassigned to worker %d",
                     self.state.plan.step, assigned, self.workers[ident].id)
            self._ask(self.workers[ident], assigned)

    def _ensure_workers(self) -> None:
        """Block (bounded) until at least ``min_workers`` are live."""
        need = max(self.settings.min_workers, 1)
        if len(self.workers) < need:
            log.warning("%d live worker(s), below min_workers=%d: waiting up to %.0f s",
                        len(self.workers), need, self.settings.worker_wait_timeout)
            deadline = time.monotonic() + self.settings.worker_wait_timeout
            while len(self.workers) < need:
                if time.monotonic() > deadline:
                    raise NotEnoughWorkers(
                        f"only {len(self.workers)} live worker(s), below min_workers={need}, "
                        f"for {self.settings.worker_wait_timeout:.0f} s")
                self.poll_once(self.settings.heartbeat_interval / 4)
                self.expire()

    # ------------------------------------------------------------------ receiving
    def poll_once(self, timeout: float) -> None:
        """Handle every message that arrives within ``timeout`` seconds (at least one poll)."""
        if self.idle_hook is not None:
            self.idle_hook()
        self.beat()
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            return
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.handle(frames)

    def handle(self, frames: list) -> None:
        """Validate one message and act on it; invalid ones are logged and counted only."""
        identity = bytes(frames[0].buffer) if hasattr(frames[0], "buffer") else bytes(frames[0])
        try:
            msg = P.decode(frames[1:], max_bytes=self.max_bytes)
            if msg.type == P.HELLO:
                self._hello(identity, msg)
                return
            if msg.job != self.job_id:
                raise P.ProtocolError("job", f"job id {msg.job!r} is not this job's")
            if msg.type == P.HEARTBEAT and "of" in msg.fields:
                identity = _beacon_target(msg.fields["of"])  # a worker's beacon socket
            info = self.workers.get(identity)
            if info is None:
                if msg.type in (P.HEARTBEAT, P.BYE):
                    # a worker evicted earlier: tell it to say hello again
                    self._send(identity, P.Message(P.STOP, self.job_id, -1, -1,
                                                   {"rejoin": True}))
                    return
                raise P.ProtocolError("peer", f"message {msg.type!r} from an unknown peer")
            info.last_seen = time.monotonic()
            if msg.type == P.HEARTBEAT:
                return
            if msg.type == P.GRADS:
                try:
                    self._grads(info, msg)
                except P.ProtocolError as e:
                    self.reject(identity, e.reason, str(e))
                    if e.reason != "stale":  # its other gradients cannot be trusted either
                        self.evict(info, f"sent invalid gradients ({e.reason})")
                    return
            elif msg.type == P.ERROR:
                text = msg.fields.get("traceback", "")
                raise WorkerError(f"worker {info.id} ({info.name}) failed:\n{text}")
            elif msg.type == P.BYE:
                self.evict(info, "said goodbye")
            else:
                raise P.ProtocolError("type", f"unexpected {msg.type!r} from worker {info.id}")
        except P.ProtocolError as e:
            self.reject(identity, e.reason, str(e))

    def reject(self, identity: bytes, reason: str, text: str) -> None:
        """Log and count a bad message; nothing else changes."""
        self.rejected += 1
        who = self.workers.get(identity)
        level = logging.DEBUG if reason == "stale" else logging.WARNING
        log.log(level, "rejected message from %s: %s (%s)",
                f"worker {who.id}" if who else f"peer {identity.hex()[:16]}", text, reason)
        self.on_event("rejected", {"reason": reason, "text": text})

    def _hello(self, identity: bytes, msg) -> None:
        f = msg.fields
        if f.get("digest") != self.digest:
            raise P.ProtocolError("digest", "worker runs a different training script (digest "
                                  f"{str(f.get('digest'))[:12]} != {self.digest[:12]})")
        if msg.job and msg.job != self.job_id:
            raise P.ProtocolError("job", f"worker belongs to job {msg.job!r}, not this job")
        pid = f.get("pid")
        for old in list(self.workers.values()):
            same_process = isinstance(pid, int) and pid > 0 and old.pid == pid \
                and old.host == str(f.get("host", "?"))
            if old.identity == identity or same_process:
                self.evict(old, "reconnected")
        info = WorkerInfo(identity=identity, id=self.next_worker_id,
                          name=str(f.get("name", "?")),
                          pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else -1,
                          host=str(f.get("host", "?")), last_seen=time.monotonic(),
                          joined_step=self.current_step, machine=str(f.get("machine", "")))
        self.next_worker_id += 1
        self.workers[identity] = info
        welcome = {"settings": self.settings.to_dict()}
        if self.board is not None and info.machine == self.machine:
            welcome["board"] = self.board.describe()
        self._send(identity, P.Message(P.WELCOME, self.job_id, self.current_step, info.id,
                                       welcome))
        log.info("worker %d joined: %s (pid %d on %s)", info.id, info.name, info.pid, info.host)
        self.on_event("joined", {"worker": info.id, "name": info.name})

    def _grads(self, info: WorkerInfo, msg) -> None:
        state = self.state
        if state is None or msg.step != state.plan.step \
                or msg.fields.get("round") != state.round:
            raise P.ProtocolError("stale", f"gradients for step {msg.step} round "
                                  f"{msg.fields.get('round')!r}, not the current one")
        node = msg.fields.get("node")
        node = tuple(node) if isinstance(node, list) else node
        plan = state.plan
        if not is_tree_node(node, plan.micro_shards):
            raise P.ProtocolError("node", f"{node!r} is not a micro-shard tree node")
        if state.asked.get(node) != info.identity:
            raise P.ProtocolError("node", f"node {node} was not asked of worker {info.id}")
        if node in state.values:
            raise P.ProtocolError("stale", f"node {node} already received")
        try:
            value = self._node_value(msg, node, plan)
        except P.ProtocolError as e:
            if e.reason != "nonfinite":
                raise
            value = self._nonfinite(info, msg, node, e)
            if value is False:
                return
        first = state.nonfinite.get(node)
        if first is not None and first != info.identity and first in self.workers:
            self.evict(self.workers[first], f"its non-finite gradients for node {node} were "
                       f"not confirmed by worker {info.id}")
        state.values[node] = value
        if msg.fields.get("board_ready") is True and self.board is not None \
                and info.machine == self.machine and not info.board_ready:
            info.board_ready = True
            log.info("worker %d reads parameters from the shared board from now on", info.id)
        if info.grad_board is None and isinstance(msg.fields.get("grad_board"), dict) \
                and self.board is not None and info.machine == self.machine:
            try:
                info.grad_board = SharedSlots(self.param_specs, 0, kind="grads",
                                              description=msg.fields["grad_board"])
                log.info("worker %d writes gradients to its shared board from now on", info.id)
            except (OSError, ValueError) as e:
                log.info("worker %d's gradient board is not usable: %s", info.id, e)
        now = time.monotonic()
        compute = float(msg.fields.get("compute_s", 0.0))
        info.compute_seconds += compute
        info.comm_seconds += max(now - info.task_sent - compute, 0.0)
        info.steps += 1

    def _nonfinite(self, info: WorkerInfo, msg, node, error):
        """NaN/inf gradients: a faulty worker, or the training diverging? Ask another worker.

        The first report is rejected and the node recomputed elsewhere; a second non-finite
        result from another worker (or no other worker to ask) means the training itself
        diverged, and the value is accepted, as a single-process run would carry on with it.
        A finite recomputation gets the first reporter evicted. Returns the value to accept,
        or False when the message was rejected.
        """
        state = self.state
        first = state.nonfinite.get(node)
        others = [w for w in self.workers.values() if w.identity != info.identity]
        if not self.diverged and first is None and others:
            state.nonfinite[node] = info.identity
            self.reject(info.identity, "nonfinite", str(error))
            helper = min(others, key=lambda w: w.id)
            log.warning("step %d: node %s recomputed by worker %d to check worker %d's "
                        "non-finite gradients", state.plan.step, node, helper.id, info.id)
            self._ask(helper, [node])
            return False
        if first == info.identity and others:
            self.reject(info.identity, "nonfinite", str(error))  # a repeat; wait for the check
            return False
        if not self.diverged:
            log.warning("step %d: non-finite gradients for node %s confirmed (%s): the "
                        "training diverged; carrying on as a single process would",
                        state.plan.step, node, error)
        self.diverged = True
        state.nonfinite.pop(node, None)
        return self._node_value(msg, node, state.plan, finite=False)

    def _node_value(self, msg, node, plan, finite: bool = True) -> ShardValue | None:
        """The checked value of one GRADS message (``finite``: reject NaN and infinity)."""
        f = msg.fields
        count = f.get("count")
        if count != plan.node_count(node):
            raise P.ProtocolError("count", f"node {node} holds {plan.node_count(node)} samples, "
                                  f"message says {count!r}")
        if count == 0:
            if msg.arrays:
                raise P.ProtocolError("names", f"empty node {node} carries arrays")
            return None
        loss_sum = f.get("loss_sum")
        if not isinstance(loss_sum, float):
            raise P.ProtocolError("fields", f"loss sum {loss_sum!r} of node {node}")
        if finite and not math.isfinite(loss_sum):
            raise P.ProtocolError("nonfinite", f"loss sum {loss_sum!r} of node {node}")
        has = f.get("grads")
        n = len(self.param_specs)
        allowed = self.trainer.phases[self.state.phase].param_indices if self.trainer else \
            range(n)
        if not (isinstance(has, list) and all(isinstance(i, int) and 0 <= i < n for i in has)
                and has == sorted(set(has)) and set(has) <= set(allowed)):
            raise P.ProtocolError("names", f"bad gradient index list {has!r}")
        bn = f.get("bn", [])
        if not (isinstance(bn, list) and all(
                isinstance(e, list) and len(e) == 2 and all(isinstance(v, int) for v in e)
                and node[0] <= e[0] < node[1] and 0 <= e[1] < len(self.bn_features)
                for e in bn)):
            raise P.ProtocolError("names", f"bad batch-norm entry list {bn!r}")
        slot = f.get("grad_slot")
        if slot is None:
            spec = {f"g{i}": self.param_specs[i] for i in has}
        else:
            board = self.workers[self.state.asked[node]].grad_board
            if board is None or not isinstance(slot, int) or isinstance(slot, bool) \
                    or not 0 <= slot < board.slots:
                raise P.ProtocolError("fields", f"gradient slot {slot!r} of node {node} does "
                                      "not exist")
            spec = {}
        for k, (_, module) in enumerate(bn):
            shape = self.bn_features[module]
            spec[f"bn{k}.mean"] = (shape, self.param_specs[0][1])
            spec[f"bn{k}.var"] = (shape, self.param_specs[0][1])
        P.expect_arrays(msg, spec)
        grads = [None] * n
        for i in has:  # zero-copy, read-only: the tree sum makes new arrays
            grads[i] = msg.arrays[f"g{i}"] if slot is None else board.views[slot][i]
        if finite:
            P.check_finite(msg.arrays)
            if slot is not None:
                P.check_finite({f"g{i}": grads[i] for i in has})
        stats: dict = {}
        for k, (shard, module) in enumerate(bn):
            stats.setdefault(shard, []).append(
                (module, np.array(msg.arrays[f"bn{k}.mean"]), np.array(msg.arrays[f"bn{k}.var"])))
        return ShardValue(grads=grads, loss_sum=loss_sum, count=count, bn_stats=stats)

    # ------------------------------------------------------------------ liveness
    def beat(self) -> None:
        """Heartbeat every worker once per interval, so they know the coordinator lives."""
        now = time.monotonic()
        if now < self.next_beat:
            return
        self.next_beat = now + self.settings.heartbeat_interval
        for info in list(self.workers.values()):
            self._send(info.identity, P.Message(P.HEARTBEAT, self.job_id, -1, info.id))
        self.on_event("tick", {})

    def expire(self) -> None:
        """Evict workers silent for longer than the heartbeat timeout."""
        now = time.monotonic()
        for info in list(self.workers.values()):
            if now - info.last_seen > self.settings.heartbeat_timeout:
                self.evict(info, f"silent for {now - info.last_seen:.1f} s")

    def evict_pid(self, pid: int, why: str) -> None:
        """Evict the worker process ``pid`` at once (its launcher saw it exit)."""
        for info in list(self.workers.values()):
            if info.pid == pid:
                self.evict(info, why)

    def evict(self, info: WorkerInfo, why: str) -> None:
        """Drop a worker and move its unfinished micro-shard nodes to the others."""
        if self.workers.pop(info.identity, None) is None:
            return
        self.evictions += 1
        log.warning("worker %d (%s) evicted: %s", info.id, info.name, why)
        self.on_event("evicted", {"worker": info.id, "why": why})
        self._send(info.identity, P.Message(P.STOP, self.job_id, self.current_step, info.id,
                                            {"evicted": why}))
        if info.grad_board is not None:
            info.grad_board.close()  # views still held by this round stay valid
            info.grad_board = None
        if self.state is not None:
            lost = [node for node, ident in self.state.asked.items()
                    if ident == info.identity and node not in self.state.values]
            self._reassign(lost)

    def _send(self, identity: bytes, msg) -> None:
        try:
            self.sock.send_multipart([identity] + P.encode(msg), copy=False)
        except zmq.ZMQError as e:  # peer gone: nothing to tell
            log.debug("could not send %s to %s: %s", msg.type, identity.hex()[:16], e)

    # ------------------------------------------------------------------ reporting
    def timings(self) -> dict:
        """Per-worker cumulative compute and communication seconds (for metrics.jsonl)."""
        return {"workers": len(self.workers),
                "worker_times": {str(w.id): {"compute_s": round(w.compute_seconds, 6),
                                             "comm_s": round(w.comm_seconds, 6)}
                                 for w in self.workers.values()}}

    def snapshot(self) -> dict:
        """Plain data for the status page: workers (``seen`` is a monotonic time), counters."""
        return {"job_id": self.job_id, "address": self.address,
                "workers": [{"id": w.id, "name": w.name, "pid": w.pid, "host": w.host,
                             "seen": w.last_seen, "compute_s": round(w.compute_seconds, 6),
                             "comm_s": round(w.comm_seconds, 6), "steps": w.steps,
                             "joined_step": w.joined_step}
                            for w in sorted(self.workers.values(), key=lambda w: w.id)],
                "rejected": self.rejected, "evictions": self.evictions,
                "coordinator": {"host": _socket.gethostname(), "pid": os.getpid()}}
