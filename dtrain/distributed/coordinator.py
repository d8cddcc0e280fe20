"""The coordinator: admit workers, hand out micro-shards, collect and check their gradients.

One ROUTER socket serves every worker (each a DEALER). Parameters go out as ROUTER replies, one
TASK per worker. ``bench/bench_broadcast.py`` measured the alternative on loopback: one PUB send
took 1.32x the ROUTER replies' time for 2 workers and 1.01x for 4 (2.6 MB), 1.17x and 0.94x for
38 MB, because ZeroMQ still writes the bytes once per subscriber connection. PUB would also drop
messages at its high-water mark and miss workers in the slow-joiner gap, while a ROUTER reply
carries the same zero-copy frames and lets each TASK name that worker's micro-shards.

A worker joins with HELLO, is offered shared memory in WELCOME when it runs on this machine, and
names its array channel in READY; only ready workers get tasks. A worker that takes shared memory
also gets a local link (``local_link.py``) for its messages, unless the sharded reduction is on
(whose messages must keep their order on the one socket). Every message is decoded and
checked by ``protocol.py``; a bad one is logged with its reason and counted, and leaves the
training state untouched. A worker that sends invalid gradients, goes silent past the heartbeat
timeout or disconnects is evicted and its tree nodes are recomputed by the others, so the
step's result is unchanged. Nothing a peer sends raises out of ``handle``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket as _socket
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from . import protocol as P
from .channels import (
    SHARED_MEMORY,
    NetworkToWorker,
    ParameterBoard,
    SharedMemoryToWorker,
    offer_shared_memory,
)
from .compute import ShardValue, batch_norm_modules
from .local_link import LinkClosed, LinkFull, LinkListener
from .security import harden_listener, make_server, start_authenticator
from .sharded import ShardedPlane
from .shards import BatchPlan, assign
from .shared_memory import machine_id

log = logging.getLogger("dtrain.coordinator")

IO_THREADS = 2  # ZeroMQ I/O threads of the coordinator's context
HEADER_SLACK = 1 << 20  # a frame may exceed the largest array by this much (headers)
STALL_FACTOR = 10.0  # a node this many times slower than usual means a stuck compute thread


class WorkerError(RuntimeError):
    """The training script raised on the workers (confirmed by a second worker if any)."""


class NotEnoughWorkers(RuntimeError):
    """Fewer than ``min_workers`` workers were available within the wait timeout."""


class WorkersLost(RuntimeError):
    """The supervisor of the worker processes says none of them can run any more."""


@dataclass
class WorkerInfo:
    """What the coordinator knows about one connected worker."""

    identity: bytes
    id: int
    instance: str
    name: str
    pid: int
    host: str
    last_seen: float
    joined_step: int
    machine: str = ""
    channel: object = None  # set by READY; until then the worker gets no tasks
    offered: object = None  # gradient slots offered in WELCOME, until READY
    listener: object = None  # the local link offered in WELCOME, until READY
    link: object = None  # the local link its messages travel on, once READY took it
    compute_seconds: float = 0.0
    comm_seconds: float = 0.0
    answered: float = 0.0  # when its last TASK went out or its last answer came in
    steps: int = 0
    busy: float = 0.0  # seconds on its current node, as its last heartbeat said

    @property
    def ready(self) -> bool:
        return self.channel is not None


@dataclass
class StepState:
    """Bookkeeping of the evaluation round in flight."""

    plan: BatchPlan
    phase: int = 0
    round: int = 0  # evaluation round: several per step with closures or phases
    asked: dict = field(default_factory=dict)  # node -> worker identity
    values: dict = field(default_factory=dict)  # node -> ShardValue | None
    params: dict = field(default_factory=dict)  # the parameters this round's TASKs carry
    nonfinite: dict = field(default_factory=dict)  # node -> worker that sent it non-finite


def make_router(ctx: zmq.Context, bind: str, keys=None) -> tuple[zmq.Socket, str]:
    """A ROUTER bound to ``bind`` (``tcp://HOST:0`` picks a free port), a CURVE server when
    ``keys`` are given; returns (socket, address)."""
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted worker may reuse its identity
    sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_FRAME_BYTES + HEADER_SLACK)
    harden_listener(sock)
    if keys is not None:
        make_server(sock, keys)
    try:
        sock.bind(bind)
    except zmq.ZMQError as e:
        sock.close(0)
        raise OSError(f"coordinator cannot listen on {bind}: {e}") from e
    return sock, sock.getsockopt(zmq.LAST_ENDPOINT).decode()


class Coordinator:
    """Computes tree nodes on worker processes connected over ZeroMQ (the trainer's executor)."""

    name = "zmq"

    def __init__(self, bind: str = "tcp://127.0.0.1:0", *, expected_workers: int = 1,
                 job_id: str, digest: str, settings=None, ctx: zmq.Context | None = None,
                 keys=None, on_event=None):
        # Two I/O threads move the TASK bytes to two workers at once (measured on loopback:
        # about 1 ms less per 2-worker step of the MLP 784-512-512-10 than one thread).
        self.own_ctx = ctx is None
        self.ctx = ctx or zmq.Context(io_threads=IO_THREADS)
        self.keys = keys
        self.auth = start_authenticator(self.ctx, keys) if keys is not None else None
        try:
            self.sock, self.address = make_router(self.ctx, bind, keys)
        except BaseException:
            if self.auth is not None:
                self.auth.stop()
            if self.own_ctx:
                self.ctx.term()
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
        self.schema: P.ModelSchema | None = None
        self.state: StepState | None = None
        self.current_step = -1
        self.idle_hook = None  # called on every poll; returns a reason to give up, or None
        self.max_bytes = 1 << 31  # until the model is known
        self.diverged = False  # non-finite gradients were confirmed by a second worker
        self.failed: dict[str, str] = {}  # instance -> traceback of workers whose job raised
        self.board: ParameterBoard | None = None
        self.machine = machine_id()
        self.node_seconds: float | None = None  # typical compute time of one node (moving avg)
        self.plane: ShardedPlane | None = None  # the sharded reduction, when the job asks it
        self.poller = zmq.Poller()  # the socket and every local link
        self.poller.register(self.sock, zmq.POLLIN)
        self.links: dict[int, WorkerInfo] = {}  # link descriptor -> its worker

    # ------------------------------------------------------------------ lifecycle
    def start(self, trainer) -> None:
        """Attach to the trainer and wait for the expected workers."""
        self.attach(trainer)
        self.wait_for_workers(self.expected, self.settings.worker_wait_timeout)

    def attach(self, trainer) -> None:
        """Learn the model's shapes, against which every gradient message is checked."""
        self.trainer = trainer
        self.settings = trainer.settings
        self.schema = P.ModelSchema.of(trainer.model, trainer.phases,
                                       self.settings.micro_shards,
                                       batch_norm_modules(trainer.model))
        if self.settings.reduction == "sharded":
            self.schema = dataclasses.replace(self.schema, ranges=trainer.ranges)
            self.plane = ShardedPlane(self)
        self.max_bytes = self.schema.max_message_bytes()
        largest = max((int(np.prod(s, dtype=np.int64)) * d.itemsize
                       for s, d in self.schema.specs), default=0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, min(largest, P.MAX_FRAME_BYTES) + HEADER_SLACK)
        if getattr(self.settings, "shared_memory", True) and self.board is None:
            try:
                self.board = ParameterBoard(list(self.schema.specs))
            except OSError as e:
                log.warning("no shared parameter board (%s): arrays travel in the messages", e)

    def ready_workers(self) -> list[WorkerInfo]:
        """Workers that may be given tasks, in id order."""
        return sorted((w for w in self.workers.values() if w.ready), key=lambda w: w.id)

    def wait_for_workers(self, count: int, timeout: float) -> None:
        """Serve HELLOs until ``count`` workers are ready (at least ``min_workers``)."""
        deadline = time.monotonic() + timeout
        while len(self.ready_workers()) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                ready = len(self.ready_workers())
                if ready >= self.settings.min_workers:
                    log.warning("only %d of %d workers joined within %.0f s; training with them",
                                ready, count, timeout)
                    return
                raise NotEnoughWorkers(
                    f"{ready} worker(s) connected within {timeout:.0f} s; the job needs at "
                    f"least {max(self.settings.min_workers, 1)}")
            self.poll_once(min(remaining, self.settings.heartbeat_interval))
            self.expire()

    def close(self) -> None:
        """Tell every worker to stop, then close the socket and remove shared files (once)."""
        if self.sock.closed:
            return
        for info in list(self.workers.values()):
            self._send(info.identity, P.Stop(info.id, self.current_step, "done"))
        self.sock.close(linger=200)
        if self.auth is not None:
            self.auth.stop()
        for info in self.workers.values():
            self._drop_channel(info)
        if self.board is not None:
            self.board.close()
            self.board = None
        if self.own_ctx:
            self.ctx.term()

    # ------------------------------------------------------------------ stepping
    def compute(self, plan: BatchPlan, trainer, phase: int = 0, round_id: int = 0) -> dict:
        """Hand this round's micro-shards to the ready workers; return every node's value."""
        self.current_step = plan.step
        # The live parameter arrays go out as zero-copy frames. The optimizer changes them in
        # place only after every node of the round has come back, and a worker answers only
        # once it holds its whole TASK; a frame still queued for an evicted worker may be read
        # torn, but that worker's answers are stale and rejected.
        state = StepState(plan=plan, phase=phase, round=round_id, params=trainer.state_arrays())
        self.state = state
        self._ensure_workers()
        live = self.ready_workers()
        for ident, nodes in assign(plan.micro_shards, [w.identity for w in live]).items():
            self._ask(self.workers[ident], nodes)
        self.serve_until(lambda: self._complete(state), f"step {plan.step} did not complete")
        self.state = None
        return state.values

    def serve_until(self, done, what: str) -> None:
        """Serve the workers until ``done()``; TimeoutError saying ``what`` after the step
        timeout."""
        deadline = time.monotonic() + self.settings.step_timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} within {self.settings.step_timeout:.0f} s")
            self.poll_once(self.settings.heartbeat_interval / 4)
            self.expire()
            self.evict_stalled()

    def serve(self, seconds: float) -> None:
        """Answer workers for a while between rounds (the trainer waits on something else)."""
        self.poll_once(seconds)
        self.expire()

    def _complete(self, state: StepState) -> bool:
        return len(state.values) >= len(state.asked) and \
            all(node in state.values for node in state.asked)

    def _ask(self, info: WorkerInfo, nodes: list) -> None:
        if not nodes:
            return
        state = self.state
        for node in nodes:
            state.asked[node] = info.identity
        plan = state.plan
        task = P.Task(plan.step, info.id, plan.epoch, plan.batch, state.phase, state.round,
                      list(nodes), info.channel.task_params(state.round, state.params))
        info.answered = time.monotonic()
        self._send(info.identity, task, info)

    def _reassign(self, nodes: list) -> None:
        """Give the nodes of an evicted worker to the ready workers, least loaded first."""
        if not nodes:
            return
        self._ensure_workers()
        load = {w.identity: 0 for w in self.ready_workers()}
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
        """Block (bounded) until at least ``min_workers`` are ready."""
        need = max(self.settings.min_workers, 1)
        if len(self.ready_workers()) < need:
            log.warning("%d live worker(s), below min_workers=%d: waiting up to %.0f s",
                        len(self.ready_workers()), need, self.settings.worker_wait_timeout)
            deadline = time.monotonic() + self.settings.worker_wait_timeout
            while len(self.ready_workers()) < need:
                if time.monotonic() > deadline:
                    raise NotEnoughWorkers(
                        f"only {len(self.ready_workers())} live worker(s), below "
                        f"min_workers={need}, for {self.settings.worker_wait_timeout:.0f} s")
                self.poll_once(self.settings.heartbeat_interval / 4)
                self.expire()

    # ------------------------------------------------------------------ receiving
    def poll_once(self, timeout: float) -> None:
        """Handle every message that arrives within ``timeout`` seconds (at least one poll)."""
        if self.idle_hook is not None:
            reason = self.idle_hook()
            if reason:
                raise WorkersLost(reason)
        self.beat()
        if self.links:
            ready = dict(self.poller.poll(int(timeout * 1000)))
            for info in [self.links[fd] for fd in ready if fd in self.links]:
                self._serve_link(info)  # reads nothing once an earlier message evicted it
            if self.sock not in ready:
                return
        elif not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            return
        while True:
            try:
                frames = P.recv_frames(self.sock, zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle(frames)

    def _serve_link(self, info: WorkerInfo) -> None:
        """Handle what waits on a worker's local link; its end means the worker is gone."""
        while info.link is not None:
            try:
                frames = info.link.receive()
            except LinkClosed:
                self._close_link(info)
                self.evict(info, "its process closed its local link")
                return
            except P.ProtocolError as e:
                self.reject(info.identity, e.reason, str(e))
                continue
            if frames is None:
                return
            self.handle([info.identity, *frames])

    def handle(self, frames: list) -> None:
        """Check one message and act on it; an invalid one is logged and counted, no more."""
        identity = frames[0].bytes if hasattr(frames[0], "bytes") else bytes(frames[0])
        try:
            env = P.decode(frames[1:], max_bytes=self.max_bytes)
            if env.job not in (self.job_id, "") or (env.job == "" and env.type != P.HELLO):
                raise P.ProtocolError("job", f"job id {env.job[:40]!r} is not this job's")
            msg = P.typed(env, self.schema)
            if isinstance(msg, P.Hello):
                self._hello(identity, msg)
            else:
                self._from_worker(identity, msg)
        except P.ProtocolError as e:
            self.reject(identity, e.reason, str(e))

    def _from_worker(self, identity: bytes, msg) -> None:
        beacon = None
        if isinstance(msg, P.Heartbeat) and msg.of is not None:
            beacon, identity = identity, msg.of  # a worker's beacon speaks for its data socket
        info = self.workers.get(identity)
        if info is None:
            if isinstance(msg, (P.Heartbeat, P.Bye)):  # a worker evicted earlier: say hello
                self._send(identity, P.Stop(-1, -1, "rejoin"))
                return
            raise P.ProtocolError("peer", f"{msg.TYPE} message from an unknown peer")
        info.last_seen = time.monotonic()
        if isinstance(msg, P.Heartbeat):
            if beacon is not None:  # answered on the beacon's own connection, which a TASK
                info.busy = msg.busy  # still in transit cannot hold up
                self._send(beacon, P.Heartbeat(info.id))
            return
        if isinstance(msg, P.Ready):
            self._ready(info, msg)
        elif isinstance(msg, P.Grads):
            try:
                self._grads(info, msg)
            except P.ProtocolError as e:
                self.reject(identity, e.reason, str(e))
                if e.reason != "stale":  # its other gradients cannot be trusted either
                    self.evict(info, f"sent invalid gradients ({e.reason})")
        elif isinstance(msg, (P.MapAck, P.RangeDone, P.RangeState, P.RangeNorm)) \
                and self.plane is not None:
            self.plane.receive(info, msg)
        elif isinstance(msg, P.Error):
            self._error(info, msg)
        elif isinstance(msg, P.Bye):
            self.evict(info, "said goodbye")
        else:
            raise P.ProtocolError("type", f"unexpected {msg.TYPE} from worker {info.id}")

    def reject(self, identity: bytes, reason: str, text: str) -> None:
        """Log and count a bad message; nothing else changes."""
        self.rejected += 1
        who = self.workers.get(identity)
        level = logging.DEBUG if reason == "stale" else logging.WARNING
        log.log(level, "rejected message from %s: %s (%s)",
                f"worker {who.id}" if who else f"peer {identity.hex()[:16]}", text, reason)
        self.on_event("rejected", {"reason": reason, "text": text})

    def _hello(self, identity: bytes, msg: P.Hello) -> None:
        if msg.digest != self.digest:
            raise P.ProtocolError("digest", "worker runs a different training script (digest "
                                  f"{msg.digest[:12]} != {self.digest[:12]})")
        for old in list(self.workers.values()):
            if old.identity == identity or old.instance == msg.instance:
                self.evict(old, "reconnected")
        info = WorkerInfo(identity=identity, id=self.next_worker_id, instance=msg.instance,
                          name=msg.name, pid=msg.pid, host=msg.host, last_seen=time.monotonic(),
                          joined_step=self.current_step, machine=msg.machine)
        self.next_worker_id += 1
        offer = None
        if self.board is not None and msg.machine == self.machine:
            try:
                info.offered, offer = offer_shared_memory(self.board, list(self.schema.specs),
                                                          self.settings.micro_shards)
            except OSError as e:
                log.info("worker %d gets no shared memory: %s", info.id, e)
            if offer is not None and self.plane is None:
                try:
                    info.listener = LinkListener(info.offered.dir)
                    offer["link"] = info.listener.path
                except OSError as e:
                    log.info("worker %d gets no local link: %s", info.id, e)
        self.workers[identity] = info
        self._send(identity, P.Welcome(info.id, self.current_step, self.settings.to_dict(),
                                       offer))
        log.info("worker %d joined: %s (pid %d on %s)", info.id, info.name, info.pid, info.host)
        self.on_event("joined", {"worker": info.id, "name": info.name})

    def _ready(self, info: WorkerInfo, msg: P.Ready) -> None:
        if info.ready:
            raise P.ProtocolError("fields", f"worker {info.id} said READY twice")
        if self.plane is not None and not msg.reducer:  # every range map would wait for it
            raise P.ProtocolError("fields", f"worker {info.id} runs no reducer, which this "
                                  "sharded run needs")
        if msg.channel == SHARED_MEMORY:
            if info.offered is None:
                raise P.ProtocolError("fields", f"worker {info.id} chose shared memory, which "
                                      "it was not offered")
            info.channel, info.offered = SharedMemoryToWorker(self.board, info.offered), None
            if info.listener is not None:
                info.link, why = info.listener.accept(info.pid)
                info.listener.close()
                info.listener = None
                if info.link is not None:
                    self.links[info.link.fileno()] = info
                    self.poller.register(info.link.fileno(), zmq.POLLIN)
                else:
                    log.info("worker %d has no local link: %s", info.id, why)
        else:
            self._drop_channel(info)
            info.channel = NetworkToWorker()
        if msg.reducer and self.plane is not None:
            self.plane.reducer_up(info, msg)
        log.info("worker %d is ready; its arrays travel over %s%s%s", info.id,
                 info.channel.name, ", its messages over a local link" if info.link else "",
                 f" ({msg.note})" if msg.note else "")

    def _grads(self, info: WorkerInfo, msg: P.Grads) -> None:
        state = self.state
        if state is None or msg.step != state.plan.step or msg.round != state.round \
                or msg.phase != state.phase:
            raise P.ProtocolError("stale", f"gradients for step {msg.step} round {msg.round}, "
                                  "not the current one")
        node, plan = msg.node, state.plan
        if state.asked.get(node) != info.identity:
            raise P.ProtocolError("node", f"node {node} was not asked of worker {info.id}")
        if node in state.values:
            raise P.ProtocolError("stale", f"node {node} already received")
        if msg.count != plan.node_count(node):
            raise P.ProtocolError("count", f"node {node} holds {plan.node_count(node)} samples, "
                                  f"message says {msg.count}")
        if not info.ready:
            raise P.ProtocolError("fields", f"gradients from worker {info.id} before READY")
        grads = info.channel.grads(msg)
        problem = msg.first_nonfinite(grads) if msg.count else None
        if problem is not None and not self._accept_nonfinite(info, node, problem):
            return
        first = state.nonfinite.pop(node, None)
        if first is not None and first != info.identity and first in self.workers \
                and problem is None:
            self.evict(self.workers[first], f"its non-finite gradients for node {node} were "
                       f"not confirmed by worker {info.id}")
        state.values[node] = self._received_value(msg, grads)
        now = time.monotonic()
        info.compute_seconds += msg.compute_s
        info.busy = 0.0
        self.node_seconds = msg.compute_s if self.node_seconds is None else \
            0.9 * self.node_seconds + 0.1 * msg.compute_s
        info.comm_seconds += max(now - info.answered - msg.compute_s, 0.0)
        info.answered = now
        info.steps += 1

    def _received_value(self, msg: P.Grads, grads: dict) -> ShardValue | None:
        """The node's value for the tree sum (gradients stay zero-copy, read-only views)."""
        if msg.count == 0:
            return None
        stats: dict = {}
        for shard, module, mean, var in msg.bn:
            stats.setdefault(shard, []).append((module, np.array(mean), np.array(var)))
        values = [None] * len(self.schema.specs)
        for i in msg.indices:
            values[i] = grads[i]
        return ShardValue(grads=values, loss_sum=msg.loss_sum, count=msg.count,
                          bn_stats=stats)

    def _accept_nonfinite(self, info: WorkerInfo, node, problem: str) -> bool:
        """NaN/inf gradients: a faulty worker, or the training diverging? Ask another worker.

        The first report is rejected and the node recomputed elsewhere; a second non-finite
        result from another worker (or no other worker to ask) means the training itself
        diverged, and the value is accepted, as a single-process run would carry on with it.
        A finite recomputation gets the first reporter evicted (in ``_grads``). Sharded, the
        reducers have summed its gradients already: ``ShardedPlane.nonfinite`` decides.
        """
        if self.plane is not None and self.plane.step is not None:
            return self.plane.nonfinite(info, node, problem)
        state = self.state
        first = state.nonfinite.get(node)
        others = [w for w in self.ready_workers() if w.identity != info.identity]
        if not self.diverged and first is None and others:
            state.nonfinite[node] = info.identity
            self.reject(info.identity, "nonfinite", problem)
            helper = others[0]
            log.warning("step %d: node %s recomputed by worker %d to check worker %d's "
                        "non-finite gradients", state.plan.step, node, helper.id, info.id)
            self._ask(helper, [node])
            return False
        if first == info.identity and others:
            self.reject(info.identity, "nonfinite", problem)  # a repeat; wait for the check
            return False
        if not self.diverged:
            log.warning("step %d: non-finite gradients for node %s confirmed (%s): the "
                        "training diverged; carrying on as a single process would",
                        state.plan.step, node, problem)
        self.diverged = True
        return True

    def _error(self, info: WorkerInfo, msg: P.Error) -> None:
        """The job raised on a worker while computing a node of this round. Confirmed by a
        second worker (or with no other worker to ask) the run fails with the traceback;
        otherwise the reporter is evicted and the node is recomputed elsewhere."""
        state = self.state
        if state is None or msg.step != state.plan.step or msg.round != state.round \
                or state.asked.get(msg.node) != info.identity or msg.node in state.values:
            raise P.ProtocolError("stale", f"error report for step {msg.step} round "
                                  f"{msg.round} node {msg.node}: not a node this worker owes")
        self.failed.setdefault(info.instance, msg.traceback)
        others = [w for w in self.ready_workers()
                  if w.identity != info.identity and w.instance not in self.failed]
        if not others:
            raise WorkerError(f"worker {info.id} ({info.name}) failed:\n{msg.traceback}")
        last = (msg.traceback.strip().splitlines()[-1:] or ["?"])[0][:200]
        log.warning("worker %d's job raised on node %s (%s); another worker checks", info.id,
                    msg.node, last)
        self.evict(info, f"the job raised on it: {last}")

    # ------------------------------------------------------------------ liveness
    def beat(self) -> None:
        """Heartbeat every worker once per interval, so they know the coordinator lives."""
        now = time.monotonic()
        if now < self.next_beat:
            return
        self.next_beat = now + self.settings.heartbeat_interval
        for info in list(self.workers.values()):
            self._send(info.identity, P.Heartbeat(info.id))
        self.on_event("tick", {})

    def expire(self) -> None:
        """Evict workers silent for longer than the heartbeat timeout."""
        now = time.monotonic()
        for info in list(self.workers.values()):
            if now - info.last_seen > self.settings.heartbeat_timeout:
                self.evict(info, f"silent for {now - info.last_seen:.1f} s")

    def stall_limit(self) -> float:
        """How long one node may take before its worker counts as stuck: many times the usual
        node time (the step timeout's quarter before any is known), never under the heartbeat
        timeout."""
        s = self.settings
        usual = STALL_FACTOR * self.node_seconds if self.node_seconds is not None \
            else s.step_timeout / 4
        return max(s.heartbeat_timeout, usual)

    def evict_stalled(self) -> None:
        """Evict workers that heartbeat but whose compute thread is stuck on a node, so their
        nodes are recomputed by the others; with nobody else to finish, keep waiting."""
        if self.state is None:
            return
        limit = self.stall_limit()
        owing = {ident for node, ident in self.state.asked.items()
                 if node not in self.state.values}
        for info in list(self.workers.values()):
            if info.identity not in owing or info.busy <= limit:
                continue
            others = [w for w in self.ready_workers()
                      if w.identity != info.identity and w.busy <= limit]
            if others:
                self.evict(info, f"its compute thread has been on one node for {info.busy:.1f} s "
                           f"(usual: {self.node_seconds or 0:.3f} s): stuck")

    def evict_pid(self, pid: int, why: str) -> None:
        """Evict the local worker process ``pid`` at once (its launcher saw it exit)."""
        for info in list(self.workers.values()):
            if info.pid == pid and info.machine == self.machine:
                self.evict(info, why)

    def evict(self, info: WorkerInfo, why: str) -> None:
        """Drop a worker, remove its shared files, move its unfinished nodes to the others."""
        if self.workers.pop(info.identity, None) is None:
            return
        self.evictions += 1
        log.warning("worker %d (%s) evicted: %s", info.id, info.name, why)
        self.on_event("evicted", {"worker": info.id, "why": why})
        self._send(info.identity, P.Stop(info.id, self.current_step, "evicted", why[:4096]),
                   info)
        self._drop_channel(info)
        if self.plane is not None and self.plane.forget(info.identity, f"worker {info.id} "
                                                        f"({info.name}) {why}"):
            return  # its ranges are lost with it: the trainer rolls back
        if self.state is not None:
            lost = [node for node, ident in self.state.asked.items()
                    if ident == info.identity and node not in self.state.values]
            self._reassign(lost)

    def _drop_channel(self, info: WorkerInfo) -> None:
        """Close the worker's channel, link and any unanswered offer (removing its shared
        files)."""
        self._close_link(info)
        for held in (info.channel, info.offered, info.listener):
            if held is not None:
                held.close()
        info.channel = info.offered = info.listener = None

    def _close_link(self, info: WorkerInfo) -> None:
        if info.link is not None:
            self.links.pop(info.link.fileno(), None)
            self.poller.unregister(info.link.fileno())
            info.link.close()
            info.link = None

    def _by_link(self, info: WorkerInfo, msg) -> bool:
        """Send ``msg`` on the worker's local link: True if it went, or was dropped because the
        worker is not reading (as ZeroMQ drops at its high-water mark); False when the socket
        must carry it (no link, or a message too large for one packet)."""
        if info.link is None:
            return False
        try:
            return info.link.send(P.pack(msg, self.job_id))
        except LinkFull:
            log.warning("worker %d is not reading its local link: dropped a %s of step %d",
                        info.id, msg.TYPE, self.current_step)
            return True
        except LinkClosed:  # it exited: the link's end, read by the poll, evicts it
            return True

    def _send(self, identity: bytes, msg, info: WorkerInfo | None = None) -> None:
        """Send ``msg`` to ``identity`` (the worker ``info``, by default the one it names) on
        its local link if it has one, else on the socket."""
        info = info or self.workers.get(identity)
        if info is not None and self._by_link(info, msg):
            return
        try:
            P.send(self.sock, msg, identity, job=self.job_id)
        except zmq.ZMQError as e:  # peer gone: nothing to tell
            log.debug("could not send %s to %s: %s", msg.TYPE, identity.hex()[:16], e)

    def allowed_keys(self) -> set | None:
        """The CURVE public keys (z85 text) of the job's workers; None when insecure."""
        if self.keys is None:
            return None
        return {k.decode() if isinstance(k, bytes) else str(k) for k in self.keys.allowed}

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
                             "joined_step": w.joined_step,
                             "channel": w.channel.name if w.channel else "joining"}
                            for w in sorted(self.workers.values(), key=lambda w: w.id)],
                "rejected": self.rejected, "evictions": self.evictions,
                "coordinator": {"host": _socket.gethostname(), "pid": os.getpid()}}
