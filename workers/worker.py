"""The worker process: join a coordinator, compute micro-shard gradients, send them back.

The main thread owns the socket that carries tasks and gradients and does all the computing; a
small beacon thread heartbeats on a socket of its own. See ``Worker`` for the reconnect rules.
"""

from __future__ import annotations

import logging
import os
import signal
import socket as _socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass

import numpy as np
import zmq

from dtrain.distributed import protocol as P
from dtrain.distributed.board import SharedSlots, machine_id
from dtrain.distributed.compute import SampleSource, ShardComputer
from dtrain.distributed.job import Settings, apply_settings, load_job
from dtrain.distributed.security import ClientKeys, HandshakeWatch, make_client
from dtrain.distributed.shards import Planner
from dtrain.distributed.trainer import blas_threads, build_replica

log = logging.getLogger("dtrain.worker")

BACKOFF_START = 0.25  # seconds before the first reconnect
BACKOFF_MAX = 8.0  # reconnect attempts back off up to this interval


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
    """Sends this worker's HEARTBEATs on a socket of its own, even mid-computation."""

    def __init__(self, ctx: zmq.Context, config: WorkerConfig):
        super().__init__(name="dtrain-worker-beacon", daemon=True)
        self.ctx = ctx
        self.config = config
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.target = None  # (data socket identity, job id, worker id)

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
                beat = P.Message(P.HEARTBEAT, job_id, -1, worker_id, {"of": identity.hex()})
                try:
                    sock.send_multipart(P.encode(beat), zmq.NOBLOCK)
                except zmq.Again:  # no coordinator right now: nothing to queue
                    pass
        finally:
            if sock is not None:
                sock.close(0)


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
    Pirate worker).
    """

    def __init__(self, config: WorkerConfig):
        self.config = config
        self.job, self.digest = load_job(config.script, config.job_name)
        self.settings: Settings | None = None
        self.computer: ShardComputer | None = None
        self.params = []
        self.job_id = config.job_id
        self.worker_id = -1
        self.sock = None
        self.watch = None  # says why a CURVE handshake failed (else a rejection is silence)
        self.beacon = None
        self.board = None  # the coordinator's parameter board, when on the same machine
        self.grad_board = None  # this worker's gradient slots, read by the coordinator
        self.slot_round = None  # (step, round) the slots below were handed out in
        self.next_slot = 0

    def _connect(self, ctx: zmq.Context) -> None:
        """A fresh data socket with a new identity, and a HELLO."""
        if self.watch is not None:
            self.watch.close()
        if self.sock is not None:
            self.sock.close(0)
        identity = f"{self.config.name}-{uuid.uuid4().hex[:8]}".encode()
        self.sock = _dealer(ctx, self.config, identity)  # the HELLO waits for the connection
        self.watch = HandshakeWatch(self.sock) if self.config.keys is not None else None
        hello = {"name": self.config.name, "pid": os.getpid(), "host": _socket.gethostname(),
                 "digest": self.digest, "rank": self.config.rank, "machine": machine_id()}
        self.sock.send_multipart(P.encode(P.Message(P.HELLO, self.config.job_id, -1, -1, hello)))
        self.beacon.retarget(identity, self.job_id, self.worker_id)

    def _send(self, msg) -> None:
        self.sock.send_multipart(P.encode(msg), copy=False)

    def run(self) -> int:
        """Serve until STOP; returns the process exit code."""
        ctx = zmq.Context()
        self.beacon = Beacon(ctx, self.config)
        self.beacon.start()
        self._connect(ctx)
        heard = time.monotonic()
        backoff = BACKOFF_START
        lost_since = None
        try:
            while True:
                if not self.sock.poll(int(self.config.heartbeat_interval * 1000), zmq.POLLIN):
                    failure = self.watch.failure() if self.watch is not None else None
                    if failure is not None:
                        log.error("%s", failure[1])
                        if failure[0]:
                            return 4
                    now = time.monotonic()
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
                frames = self.sock.recv_multipart(copy=False)
                heard, lost_since, backoff = time.monotonic(), None, BACKOFF_START
                try:
                    msg = P.decode(frames, job=self.job_id or None)
                except P.ProtocolError as e:
                    log.warning("ignored a bad message from the coordinator: %s", e)
                    continue
                if msg.type == P.HEARTBEAT:
                    continue
                if msg.type == P.STOP:
                    if msg.fields.get("rejoin"):
                        log.warning("coordinator does not know this worker: saying hello again")
                        self._connect(ctx)
                        continue
                    if msg.fields.get("evicted"):
                        log.warning("evicted by the coordinator: %s", msg.fields["evicted"])
                        continue
                    return 0
                if msg.type == P.WELCOME:
                    self._welcome(msg)
                elif msg.type == P.TASK:
                    try:
                        self._task(msg)
                    except Exception:  # noqa: BLE001 - any job error goes to the coordinator
                        text = traceback.format_exc()
                        log.error("task failed (the coordinator reports where): %s",
                                  text.strip().splitlines()[-1])
                        self._send(P.Message(P.ERROR, self.job_id, msg.step, self.worker_id,
                                             {"traceback": text}))
                        self.sock.setsockopt(zmq.LINGER, 2000)  # deliver it before exiting
                        return 1
        finally:
            try:
                self.sock.send_multipart(P.encode(P.Message(P.BYE, self.job_id, -1,
                                                            self.worker_id)), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            self.beacon.stop_event.set()
            self.beacon.join(timeout=2)
            if self.watch is not None:
                self.watch.close()
            for board in (self.board, self.grad_board):
                if board is not None:
                    board.close()
            self.sock.close()
            ctx.term()

    def _to_slot(self, out, value, round_key) -> None:
        """Move a node's gradients from the message into the next free slot of this round."""
        if self.slot_round != round_key:
            self.slot_round, self.next_slot = round_key, 0
        if self.next_slot >= self.grad_board.slots:
            return  # more nodes than slots this round: these gradients travel in the message
        slot = self.next_slot
        self.next_slot += 1
        self.grad_board.write(slot, value.grads)
        for i in out.fields["grads"]:
            del out.arrays[f"g{i}"]
        out.fields["grad_slot"] = slot

    def _welcome(self, msg) -> None:
        self.job_id, self.worker_id = msg.job, msg.worker
        fields = msg.fields.get("settings", {})
        for name in ("heartbeat_interval", "heartbeat_timeout"):
            value = fields.get(name)
            if isinstance(value, (int, float)) and value > 0:
                setattr(self.config, name, float(value))
        self.beacon.retarget(self.sock.getsockopt(zmq.IDENTITY), self.job_id, self.worker_id)
        settings = Settings.from_dict(msg.fields["settings"])
        if self.settings is None or settings != self.settings:
            self.settings = settings
            apply_settings(self.job, settings)  # the job sees the run's settings, as everywhere
            model = build_replica(self.job, settings)
            self.params = list(model.parameters())
            self.names = [name for name, _ in model.named_parameters()]
            source = SampleSource(self.job.train_data(), settings.dtype, "train_data()")
            self.computer = ShardComputer(self.job, settings, model, source)  # builds phases
            self.planner = Planner(len(source), settings)
        if self.board is not None:
            self.board.close()
        self.board = None
        description = msg.fields.get("board")
        specs = [(p.shape, p.dtype) for p in self.params]
        if isinstance(description, dict):
            try:
                self.board = SharedSlots(specs, 0, description=description)
                if self.grad_board is None or self.grad_board.specs != self.board.specs:
                    if self.grad_board is not None:
                        self.grad_board.close()
                    self.grad_board = SharedSlots(specs, _grad_slots(self.settings), kind="grads")
            except (OSError, ValueError) as e:
                log.info("arrays travel in the messages (shared boards unusable: %s)", e)
        log.info("joined as worker %d", msg.worker)

    def _task(self, msg) -> None:
        if self.computer is None:
            raise RuntimeError("TASK before WELCOME")
        if msg.fields.get("board"):
            if self.board is None:
                raise RuntimeError("the TASK refers to a shared parameter board this worker "
                                   "could not open")
            P.expect_arrays(msg, {})
            self.board.read_into(0, self.params)
        else:
            expected = {name: (p.shape, p.dtype) for name, p in zip(self.names, self.params)}
            P.expect_arrays(msg, expected)
            for name, p in zip(self.names, self.params):
                # copied, not used in place: BLAS results can depend on the alignment of its
                # operands, and the frames' is not NumPy's (measured: 1-ulp differences)
                np.copyto(p.data, msg.arrays[name])
        f = msg.fields
        plan = self.planner.plan(f["epoch"], f["batch"], msg.step)
        phase = f.get("phase", 0)
        if not isinstance(phase, int) or not 0 <= phase < len(self.computer.phases):
            raise ValueError(f"TASK names phase {phase!r}; the job has "
                             f"{len(self.computer.phases)}")
        for node in f["nodes"]:
            node = tuple(node)
            started = time.perf_counter()
            with blas_threads(self.settings.threads):
                value = self.computer.node_value(plan, node, phase)
            elapsed = time.perf_counter() - started
            out = grads_message(self.job_id, msg.step, self.worker_id, node, value, elapsed)
            out.fields.update(phase=phase, round=f.get("round", 0),
                              board_ready=self.board is not None)
            if self.grad_board is not None:
                out.fields["grad_board"] = self.grad_board.describe()
                if f.get("grad_slots") and value is not None:
                    self._to_slot(out, value, (msg.step, f.get("round", 0)))
            self._send(out)


def _grad_slots(settings) -> int:
    """Gradient slots a worker keeps: enough for the tree nodes of a few shard ranges."""
    return 2 * max(settings.micro_shards.bit_length(), 1) + 2


def grads_message(job_id: str, step: int, worker: int, node, value, compute_s: float):
    """The GRADS message of one tree node (``value`` None for a node without samples)."""
    fields = {"node": list(node), "compute_s": compute_s}
    arrays = {}
    if value is None:
        fields.update(count=0, loss_sum=0.0, grads=[], bn=[])
    else:
        fields.update(count=value.count, loss_sum=float(value.loss_sum),
                      grads=[i for i, g in enumerate(value.grads) if g is not None])
        for i, g in enumerate(value.grads):
            if g is not None:
                arrays[f"g{i}"] = g
        bn = []
        for shard in sorted(value.bn_stats):
            for module, mean, var in value.bn_stats[shard]:
                arrays[f"bn{len(bn)}.mean"] = mean
                arrays[f"bn{len(bn)}.var"] = var
                bn.append([shard, module])
        fields["bn"] = bn
    return P.Message(P.GRADS, job_id, step, worker, fields, arrays)


def set_process_title(title: str) -> None:
    """Name this process for ps/top (Linux prctl), so operators can find and signal it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, title.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def main(config: WorkerConfig) -> int:
    """Entry point of ``dtrain worker``."""
    set_process_title(f"dtrain-w{config.rank}")
    # SIGTERM (the launcher stopping us, or its death) unwinds normally, so the worker says
    # goodbye and removes its shared-memory board instead of leaving it in /dev/shm
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not config.name:
        config.name = f"{_socket.gethostname()}-w{config.rank}"
    return Worker(config).run()
