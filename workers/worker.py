"""The worker process: join a coordinator, compute micro-shard gradients, send them back.

The main thread owns the socket that carries tasks and gradients and does all the computing; a
small beacon thread heartbeats on a socket of its own. See ``Worker`` for the reconnect rules.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket as _socket
import sys
import threading
import time
import traceback
import uuid
from contextlib import ExitStack
from dataclasses import dataclass

import zmq

from dtrain.distributed import protocol as P
from dtrain.distributed.channels import (
    SHARED_MEMORY,
    NetworkFromCoordinator,
    SharedMemoryFromCoordinator,
)
from dtrain.distributed.compute import SampleSource, ShardComputer, batch_norm_modules
from dtrain.distributed.job import Settings, apply_settings, load_job
from dtrain.distributed.local_link import LinkClosed, LinkFull, connect_link
from dtrain.distributed.param_ranges import model_ranges
from dtrain.distributed.phases import build_phases
from dtrain.distributed.security import ClientKeys, HandshakeWatch, make_client
from dtrain.distributed.shards import Planner
from dtrain.distributed.shared_memory import machine_id
from dtrain.distributed.trainer import build_replica
from dtrain.process import blas_threads, keep_freed_memory, set_process_title
from dtrain.workers.ranges import RangePlane

log = logging.getLogger("dtrain.worker")

BACKOFF_START = 0.25  # seconds before the first reconnect
BACKOFF_MAX = 8.0  # reconnect attempts back off up to this interval
# ZeroMQ I/O threads of a worker's context: with the sharded reduction over CURVE one encrypts
# what the peer DEALERs send while another decrypts what the mailbox receives
IO_THREADS = 2


@dataclass
class WorkerConfig:
    """How a worker finds its coordinator and which job it runs."""

    connect: str
    script: str
    job_name: str | None = None
    job_id: str = ""
    rank: int = 0
    name: str = ""
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    give_up_after: float = 0.0  # seconds without a coordinator before exiting; 0: never
    keys: ClientKeys | None = None  # CURVE keys; None only with --insecure


class Beacon(threading.Thread):
    """Sends this worker's HEARTBEATs on a socket of its own, even mid-computation, and notes
    when the coordinator's answers arrive there: on a slow link a large TASK can take longer
    than the heartbeat timeout to arrive on the data socket, and the coordinator's heartbeats
    queued behind it would leave the worker believing it lost the coordinator."""

    def __init__(self, ctx: zmq.Context, config: WorkerConfig, busy=lambda: 0.0):
        super().__init__(name="dtrain-worker-beacon", daemon=True)
        self.ctx = ctx
        self.config = config
        self.busy = busy  # seconds the compute thread has spent on its current node
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.target = None  # (data socket identity, job id, worker id)
        self.heard = 0.0  # monotonic time of the coordinator's last answer to a beat

    def retarget(self, identity: bytes, job_id: str, worker_id: int) -> None:
        """Beat on behalf of the data socket ``identity`` from now on."""
        with self.lock:
            self.target = (identity, job_id, worker_id)

    def run(self) -> None:
        sock, current = None, None
        try:
            while not self.stop_event.wait(self.config.heartbeat_interval):
                with self.lock:
                    target = self.target
                if target is None:
                    continue
                identity, job_id, worker_id = target
                if identity != current:
                    if sock is not None:
                        sock.close(0)
                    sock = _dealer(self.ctx, self.config, identity + b"~beacon", immediate=True)
                    current = identity
                try:
                    P.send(sock, P.Heartbeat(worker_id, of=identity, busy=self.busy()),
                           job=job_id, flags=zmq.NOBLOCK)
                except zmq.Again:  # no coordinator right now: nothing to queue
                    pass
                self._answers(sock, job_id)
        finally:
            if sock is not None:
                sock.close(0)

    def _answers(self, sock: zmq.Socket, job_id: str) -> None:
        """Read the coordinator's answers waiting on the beacon socket; note when one came."""
        while sock.poll(0, zmq.POLLIN):
            frames = P.recv_frames(sock)
            try:
                msg = P.typed(P.decode(frames, job=job_id or None))
            except P.ProtocolError:
                continue
            if isinstance(msg, P.Heartbeat):
                self.heard = time.monotonic()


def _dealer(ctx: zmq.Context, config: WorkerConfig, identity: bytes,
            immediate: bool = False) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if immediate:  # queue nothing for a coordinator that is not there
        sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.IDENTITY, identity)
    if config.keys is not None:
        make_client(sock, config.keys)
    sock.connect(config.connect)
    return sock


class Worker:
    """A model replica and the data, driven by the coordinator's TASK messages.

    The main thread owns the DEALER that carries tasks and gradients, so neither crosses a
    thread; a ``Beacon`` thread heartbeats on its own socket, so a long forward/backward never
    looks like a dead worker. When the coordinator falls silent past the heartbeat timeout the
    worker reconnects with exponential backoff and says HELLO again (the zguide's Paranoid
    Pirate worker). ``instance``, drawn once per process, tells the coordinator a reconnect
    from a new worker.
    """

    def __init__(self, config: WorkerConfig):
        self.config = config
        self.job, self.digest = load_job(config.script, config.job_name)
        self.instance = uuid.uuid4().hex
        self.settings: Settings | None = None
        self.computer: ShardComputer | None = None
        self.schema: P.ModelSchema | None = None
        self.params = []
        self.names = []
        self.job_id = config.job_id
        self.worker_id = -1
        self.sock = None
        self.watch = None  # says why a CURVE handshake failed (else a rejection is silence)
        self.beacon = None
        self.channel = None  # how arrays travel, chosen at WELCOME
        self.link = None  # the local link to the coordinator, when shared memory came with one
        self.node_started = None  # monotonic time the current task's computation began
        self.nodes_busy = 1  # the tree nodes that computation covers
        self.plane: RangePlane | None = None  # the sharded reduction's part, when it is on
        self.blas_pin = ExitStack()  # the job's BLAS thread count, from WELCOME to the exit
        self.poller, self.polled = None, None  # _poller's, and the objects it polls

    def busy(self) -> float:
        """Seconds per node spent on the task being computed now (0 when idle), comparable with
        the per-node compute times the coordinator knows; read by the beacon."""
        started = self.node_started
        if started is None:
            return 0.0
        return max(time.monotonic() - started, 0.0) / self.nodes_busy

    def _connect(self, ctx: zmq.Context) -> None:
        """A fresh data socket with a new identity, and a HELLO."""
        if self.watch is not None:
            self.watch.close()
        if self.sock is not None:
            self.sock.close(0)
        self._close_link()  # it belongs to the identity being replaced
        identity = f"{self.config.name}-{uuid.uuid4().hex[:8]}".encode()
        self.sock = _dealer(ctx, self.config, identity)  # the HELLO waits for the connection
        self.watch = HandshakeWatch(self.sock) if self.config.keys is not None else None
        hello = P.Hello(instance=self.instance, name=self.config.name[:P.MAX_TEXT],
                        pid=os.getpid(), host=_socket.gethostname()[:P.MAX_TEXT],
                        digest=self.digest, rank=self.config.rank, machine=machine_id())
        P.send(self.sock, hello, job=self.config.job_id)
        self.beacon.retarget(identity, self.job_id, self.worker_id)

    def _send(self, msg, flags: int = 0) -> None:
        """Send ``msg`` on the local link if there is one and it takes it, else the socket."""
        if self.link is not None:
            try:
                if self.link.send(P.pack(msg, self.job_id)):
                    return
            except LinkFull:
                pass  # the coordinator is not reading now: the socket queues it
            except LinkClosed:
                self._close_link()
        P.send(self.sock, msg, job=self.job_id, flags=flags)

    def _receive(self) -> list | None:
        """The frames of the next message, from the local link or the socket; None if none
        is waiting after all (the link ended, or brought a bad packet)."""
        if self.link is not None:
            try:
                frames = self.link.receive()
            except LinkClosed:
                log.warning("the coordinator closed the local link; messages go over the socket")
                self._close_link()
                frames = None
            except P.ProtocolError as e:
                log.warning("ignored a bad packet from the coordinator: %s", e)
                return None
            if frames is not None:
                return frames
        try:
            return P.recv_frames(self.sock, zmq.NOBLOCK)
        except zmq.Again:
            return None

    def _close_link(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    def run(self) -> int:
        """Serve until STOP; returns the process exit code."""
        ctx = zmq.Context(io_threads=IO_THREADS)
        self.beacon = Beacon(ctx, self.config, self.busy)
        self.beacon.start()
        self._connect(ctx)
        heard = time.monotonic()
        backoff = BACKOFF_START
        lost_since = None
        try:
            while True:
                if not self._wait(self.config.heartbeat_interval):
                    failure = self.watch.failure() if self.watch is not None else None
                    if failure is not None:
                        log.error("%s", failure[1])
                        if failure[0]:
                            return 4
                    now = time.monotonic()
                    heard = max(heard, self.beacon.heard)
                    if now - heard > max(self.config.heartbeat_timeout, backoff):
                        lost_since = lost_since or heard
                        if self.config.give_up_after and \
                                now - lost_since > self.config.give_up_after:
                            log.error("no coordinator for %.0f s: giving up", now - lost_since)
                            return 3
                        log.warning("coordinator silent for %.1f s: reconnecting", now - heard)
                        self._connect(ctx)
                        heard = now
                        backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                frames = self._receive()
                if frames is None:
                    continue
                heard, lost_since, backoff = time.monotonic(), None, BACKOFF_START
                try:
                    env = P.decode(frames, job=self.job_id or None)
                    msg = P.typed(env, self.schema)
                except P.ProtocolError as e:
                    log.warning("ignored a bad message from the coordinator: %s", e)
                    continue
                if isinstance(msg, P.Welcome):
                    self.job_id = env.job  # a worker started without --job-id learns it here
                code = self._dispatch(ctx, msg)
                if code is not None:
                    return code
                heard = time.monotonic()  # busy until now (building the replica), not deaf
        finally:
            try:
                self._send(P.Bye(self.worker_id), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            self.beacon.stop_event.set()
            self.beacon.join(timeout=2)
            if self.watch is not None:
                self.watch.close()
            if self.channel is not None:
                self.channel.close()
            self._close_link()
            if self.plane is not None:
                self.plane.close()
            self.sock.close()
            self.blas_pin.close()
            ctx.destroy()  # also closes what a failed start left open (term() would wait on it)

    def _wait(self, timeout: float) -> bool:
        """Serve the mailbox (when the sharded reduction is on) until the coordinator's
        socket or local link has a message (True) or ``timeout`` seconds pass (False)."""
        if self.plane is None and self.link is None:
            return bool(self.sock.poll(int(timeout * 1000), zmq.POLLIN))
        poller = self._poller()
        deadline = time.monotonic() + timeout
        while True:
            ready = dict(poller.poll(max(int((deadline - time.monotonic()) * 1000), 0)))
            if self.plane is not None and self.plane.mailbox in ready:
                self._guarded(None, self.plane.poll)
            if self.sock in ready or (self.link is not None and self.link.fileno() in ready):
                return True
            if time.monotonic() >= deadline:
                return False

    def _poller(self) -> zmq.Poller:
        """A poller of the socket, the mailbox and the link, made again only when one of them
        changed (not on every wait of every step)."""
        key = (self.sock, self.plane, self.link)  # held, so no id is reused while compared
        if self.polled is None or any(a is not b for a, b in zip(self.polled, key)):
            poller = zmq.Poller()
            poller.register(self.sock, zmq.POLLIN)
            if self.plane is not None:
                poller.register(self.plane.mailbox, zmq.POLLIN)
            if self.link is not None:
                poller.register(self.link.fileno(), zmq.POLLIN)
            self.polled, self.poller = key, poller
        return self.poller

    def _guarded(self, step: P.StepTask | None, work, *args) -> None:
        """Run the sharded reduction's ``work``: a bad order is logged and dropped; the job
        raising is reported to the coordinator and ends the worker (SystemExit 1)."""
        try:
            with blas_threads(self.settings.threads):
                work(*args)
        except P.ProtocolError as e:
            log.warning("ignored a sharded-reduction message: %s (%s)", e, e.reason)
        except Exception:  # noqa: BLE001 - any job error goes to the coordinator
            text = traceback.format_exc()
            log.error("task failed (the coordinator reports where): %s",
                      text.strip().splitlines()[-1])
            pending = self.plane.computing or step
            if pending is not None and pending.nodes:
                self._send(P.Error(self.worker_id, pending.step, text, pending.version,
                                   tuple(pending.nodes[0])))
            self.sock.setsockopt(zmq.LINGER, 2000)  # deliver it before exiting
            raise SystemExit(1) from None

    def _sharded(self, msg) -> bool:
        """Act on an order of the sharded reduction; False when ``msg`` is none."""
        plane = self.plane
        if plane is None or not isinstance(msg, (P.RangeMap, P.RangeState, P.Gather,
                                                 P.StepTask, P.ClipScale)):
            return False
        if isinstance(msg, P.RangeMap):
            self._send(plane.use_map(msg))
        elif isinstance(msg, P.RangeState):
            self._guarded(None, plane.load, msg)
        elif isinstance(msg, P.Gather):
            self._guarded(None, plane.gather, msg)
        elif isinstance(msg, P.ClipScale):
            self._guarded(None, plane.clip, msg)
        else:
            plan = self.planner.plan(msg.epoch, msg.batch, msg.step)
            self._guarded(msg, plane.task, msg, plan)
        return True

    def _dispatch(self, ctx: zmq.Context, msg) -> int | None:
        """Act on one message from the coordinator; an exit code ends the worker."""
        if isinstance(msg, P.Stop):
            if msg.reason == "rejoin":
                log.warning("coordinator does not know this worker: saying hello again")
                self._connect(ctx)
            elif msg.reason == "evicted":
                log.warning("evicted by the coordinator: %s", msg.detail)
            else:
                return 0
        elif isinstance(msg, P.Welcome):
            self._welcome(ctx, msg)
        elif self._sharded(msg):
            pass
        elif isinstance(msg, P.Task):
            try:
                self._task(msg)
            except Exception:  # noqa: BLE001 - any job error goes to the coordinator
                text = traceback.format_exc()
                log.error("task failed (the coordinator reports where): %s",
                          text.strip().splitlines()[-1])
                self._send(P.Error(self.worker_id, msg.step, text, msg.round,
                                   tuple(msg.nodes[0])))
                self.sock.setsockopt(zmq.LINGER, 2000)  # deliver it before exiting
                return 1
        elif not isinstance(msg, P.Heartbeat):
            log.warning("ignored an unexpected %s from the coordinator", msg.TYPE)
        return None

    def _welcome(self, ctx: zmq.Context, msg: P.Welcome) -> None:
        self.worker_id = msg.worker
        settings = Settings.from_dict(msg.settings)
        self.config.heartbeat_interval = float(settings.heartbeat_interval)
        self.config.heartbeat_timeout = float(settings.heartbeat_timeout)
        self.beacon.retarget(self.sock.getsockopt(zmq.IDENTITY), self.job_id, self.worker_id)
        if self.settings is None or settings != self.settings:
            self.settings = settings
            # BLAS keeps the job's thread count while this worker serves (building its replica,
            # the reducer's work), not only inside each task's computation.
            self.blas_pin.close()
            self.blas_pin.enter_context(blas_threads(settings.threads))
            apply_settings(self.job, settings)  # the job sees the run's settings, as everywhere
            model = build_replica(self.job, settings)
            self.params = list(model.parameters())
            self.names = [name for name, _ in model.named_parameters()]
            source = SampleSource(self.job.train_data(), settings.dtype, "train_data()")
            self.computer = ShardComputer(self.job, settings, model, source)  # builds phases
            self.planner = Planner(len(source), settings)
            self.schema = P.ModelSchema.of(model, self.computer.phases, settings.micro_shards,
                                           batch_norm_modules(model))
        if self.channel is not None:
            self.channel.close()
        self._close_link()
        self.channel, note = self._open_channel(msg.shared_memory)
        if self.channel.name == SHARED_MEMORY and msg.shared_memory.get("link"):
            try:  # connected before READY, so the coordinator finds it when READY arrives
                self.link = connect_link(msg.shared_memory["link"])
            except OSError as e:
                log.info("no local link to the coordinator (%s): messages go over the socket", e)
        ready = P.Ready(self.worker_id, self.channel.name, note)
        if self.settings.reduction == "sharded":
            ready = self._open_plane(ctx).ready(self.job_id, ready)
        # on the socket: the coordinator takes the link up only once READY says so
        P.send(self.sock, ready, job=self.job_id)
        log.info("joined as worker %d; arrays travel over %s", msg.worker, self.channel.name)

    def _open_plane(self, ctx: zmq.Context) -> RangePlane:
        """Start (or restart) this worker's reducer."""
        if self.plane is not None:
            self.plane.close()
        model = self.computer.model
        optimizer = build_phases(self.job, model)[0].optimizer
        ranges = model_ranges(model, [optimizer], self.settings.param_ranges)
        self.schema = dataclasses.replace(self.schema, ranges=ranges)
        self.plane = RangePlane(ctx, self.config.keys, self.config.connect, self.schema,
                                optimizer, self.params, self._send,
                                self.settings.clip_grad_norm, self.settings.accumulate,
                                self.settings.peer_cipher)
        self.plane.computer = lambda plan, nodes, on_final: self._node_values(
            plan, nodes, 0, on_final)
        return self.plane

    def _open_channel(self, offer: dict | None):
        """Shared memory when offered and usable, else the network; and why, for the log."""
        if offer is None:
            return NetworkFromCoordinator(), ""
        if not getattr(self.settings, "shared_memory", True):
            return NetworkFromCoordinator(), "shared memory is off"
        try:
            return SharedMemoryFromCoordinator(list(self.schema.specs), offer), ""
        except (OSError, ValueError) as e:
            return NetworkFromCoordinator(), f"shared memory unusable here: {e}"[:P.MAX_TEXT]

    def _task(self, msg: P.Task) -> None:
        if self.computer is None or self.channel is None:
            raise RuntimeError("TASK before WELCOME")
        self.channel.read_params(msg, self.names, [p._data for p in self.params])
        plan = self.planner.plan(msg.epoch, msg.batch, msg.step)
        started = time.perf_counter()
        values = self._node_values(plan, msg.nodes, msg.phase)
        elapsed = (time.perf_counter() - started) / max(len(values), 1)
        for node, value in values.items():
            self._send(self._grads(msg, node, value, elapsed))

    def _node_values(self, plan, nodes: list, phase: int, on_final=None) -> dict:
        """Compute tree nodes (all of a task's shards in one pass), timed for the beacon's
        ``busy`` report, so the coordinator sees a compute thread stuck in the job, whether the
        task came as a TASK or as a sharded STEPTASK (``on_final``: see
        ``ShardComputer.node_values``)."""
        self.node_started, self.nodes_busy = time.monotonic(), max(len(nodes), 1)
        try:
            with blas_threads(self.settings.threads):
                return self.computer.node_values(plan, nodes, phase, on_final)
        finally:
            self.node_started = None

    def _grads(self, task: P.Task, node, value, elapsed: float) -> P.Grads:
        """The GRADS message of one node, its gradients placed by the channel."""
        out = P.Grads(task.step, self.worker_id, task.round, task.phase, tuple(node),
                      count=0, compute_s=elapsed)
        if value is None:
            return out
        grads = {i: g for i, g in enumerate(value.grads) if g is not None}
        out.count, out.loss_sum = value.count, float(value.loss_sum)
        out.grads, out.indices, out.slot = self.channel.put_grads((task.step, task.round), grads)
        out.bn = [(shard, module, mean, var) for shard in sorted(value.bn_stats)
                  for module, mean, var in value.bn_stats[shard]]
        return out


def main(config: WorkerConfig) -> int:
    """Entry point of ``dtrain worker``."""
    set_process_title(f"dtrain-w{config.rank}")
    keep_freed_memory()
    # SIGTERM (the launcher stopping us, or its death) unwinds normally, so the worker says
    # goodbye and removes its shared-memory board instead of leaving it in /dev/shm
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not config.name:
        config.name = f"{_socket.gethostname()}-w{config.rank}"
    return Worker(config).run()
