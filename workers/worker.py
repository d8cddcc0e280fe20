"""The worker process: join a coordinator, compute micro-shard gradients, send them back.

Two threads, after the zguide's Paranoid Pirate worker. The I/O thread owns the DEALER socket
to the coordinator: it says HELLO, sends a HEARTBEAT every interval even while the main thread
is busy, passes TASK/STOP messages in and GRADS messages out over an inproc pair, and when the
coordinator falls silent past the heartbeat timeout it reconnects with exponential backoff and
says HELLO again. The main thread only computes, so a long forward/backward never looks like a
dead worker.
"""

from __future__ import annotations

import logging
import os
import socket as _socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass

import numpy as np
import zmq

from dtrain.dist import protocol as P
from dtrain.dist.compute import SampleSource, ShardComputer
from dtrain.dist.job import Settings, load_job
from dtrain.dist.security import ClientKeys, make_client
from dtrain.dist.shards import BatchPlan
from dtrain.dist.trainer import blas_threads, build_replica

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


class Link(threading.Thread):
    """The I/O thread: DEALER to the coordinator, inproc PAIR to the compute thread."""

    def __init__(self, ctx: zmq.Context, config: WorkerConfig, hello: dict, pipe_addr: str):
        super().__init__(name="dtrain-worker-io", daemon=True)
        self.ctx = ctx
        self.config = config
        self.hello = hello
        self.pipe_addr = pipe_addr
        self.stop_event = threading.Event()
        self.job_id = config.job_id
        self.worker_id = -1
        self.ready = threading.Event()

    def _dealer(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        identity = f"{self.config.name}-{uuid.uuid4().hex[:8]}".encode()
        sock.setsockopt(zmq.IDENTITY, identity)
        if self.config.keys is not None:
            make_client(sock, self.config.keys)
        sock.connect(self.config.connect)
        sock.send_multipart(P.encode(P.Message(P.HELLO, self.config.job_id, -1, -1, self.hello)),
                            copy=False)
        return sock

    def run(self) -> None:
        pipe = self.ctx.socket(zmq.PAIR)
        pipe.setsockopt(zmq.LINGER, 0)
        pipe.connect(self.pipe_addr)
        dealer = self._dealer()
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        poller.register(pipe, zmq.POLLIN)
        heard = time.monotonic()
        next_beat = heard + self.config.heartbeat_interval
        backoff = BACKOFF_START
        lost_since = None
        try:
            while not self.stop_event.is_set():
                interval = self.config.heartbeat_interval
                events = dict(poller.poll(int(interval * 250)))
                now = time.monotonic()
                if dealer in events:
                    while True:
                        try:
                            frames = dealer.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        heard = now
                        lost_since = None
                        backoff = BACKOFF_START
                        if not self._from_coordinator(frames, pipe):
                            # asked to rejoin (evicted while alive): start over with HELLO
                            poller.unregister(dealer)
                            dealer.close(0)
                            dealer = self._dealer()
                            poller.register(dealer, zmq.POLLIN)
                            break
                if pipe in events:
                    while True:
                        try:
                            frames = pipe.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        dealer.send_multipart(frames, copy=False)
                if now >= next_beat:
                    dealer.send_multipart(P.encode(P.Message(
                        P.HEARTBEAT, self.job_id, -1, self.worker_id)), copy=False)
                    next_beat = now + interval
                if now - heard > max(self.config.heartbeat_timeout, backoff):
                    lost_since = lost_since or heard
                    if self.config.give_up_after and now - lost_since > self.config.give_up_after:
                        log.error("no coordinator for %.0f s: giving up", now - lost_since)
                        pipe.send_multipart(P.encode(P.Message(P.STOP, self.job_id, -1, -1,
                                                               {"lost": True})))
                        return
                    log.warning("coordinator silent for %.1f s: reconnecting", now - heard)
                    poller.unregister(dealer)
                    dealer.close(0)
                    dealer = self._dealer()
                    poller.register(dealer, zmq.POLLIN)
                    heard = now
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            try:
                dealer.send_multipart(P.encode(P.Message(P.BYE, self.job_id, -1,
                                                         self.worker_id)), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            dealer.close(0)
            pipe.close(0)

    def _from_coordinator(self, frames, pipe) -> bool:
        """Pass a coordinator message to the compute thread; False asks for a fresh HELLO."""
        try:
            msg = P.decode(frames, job=self.job_id or None)
        except P.ProtocolError as e:
            log.warning("ignored a bad message from the coordinator: %s", e)
            return True
        if msg.type == P.WELCOME:
            self.job_id = msg.job
            self.worker_id = msg.worker
            settings = msg.fields.get("settings", {})
            for name in ("heartbeat_interval", "heartbeat_timeout"):
                value = settings.get(name)
                if isinstance(value, (int, float)) and value > 0:
                    setattr(self.config, name, float(value))
            self.ready.set()
        elif msg.type == P.STOP and msg.fields.get("rejoin"):
            log.warning("coordinator does not know this worker: saying hello again")
            return False
        elif msg.type == P.HEARTBEAT:
            return True
        pipe.send_multipart(frames, copy=False)
        return True


class Worker:
    """The compute side: a model replica and the data, driven by TASK messages."""

    def __init__(self, config: WorkerConfig):
        self.config = config
        self.job, self.digest = load_job(config.script, config.job_name)
        self.settings: Settings | None = None
        self.computer: ShardComputer | None = None
        self.params = []
        self.steps_done = 0

    def run(self) -> int:
        """Serve until STOP; returns the process exit code."""
        ctx = zmq.Context()
        pipe = ctx.socket(zmq.PAIR)
        pipe.setsockopt(zmq.LINGER, 0)
        pipe_addr = f"inproc://dtrain-worker-{uuid.uuid4().hex}"
        pipe.bind(pipe_addr)
        hello = {"name": self.config.name, "pid": os.getpid(), "host": _socket.gethostname(),
                 "digest": self.digest, "rank": self.config.rank}
        link = Link(ctx, self.config, hello, pipe_addr)
        link.start()
        try:
            while True:
                frames = pipe.recv_multipart(copy=False)
                msg = P.decode(frames)
                if msg.type == P.STOP:
                    if msg.fields.get("evicted"):
                        log.warning("evicted by the coordinator: %s; rejoining",
                                    msg.fields["evicted"])
                        continue
                    return 3 if msg.fields.get("lost") else 0
                if msg.type == P.WELCOME:
                    self._welcome(msg)
                elif msg.type == P.TASK:
                    try:
                        self._task(msg, pipe, link)
                    except Exception:  # noqa: BLE001 - any job error goes to the coordinator
                        text = traceback.format_exc()
                        log.error("task failed:\n%s", text)
                        pipe.send_multipart(P.encode(P.Message(
                            P.ERROR, link.job_id, msg.step, link.worker_id,
                            {"traceback": text})))
                        time.sleep(0.2)  # let the I/O thread deliver it
                        return 1
        finally:
            link.stop_event.set()
            link.join(timeout=2)
            pipe.close(0)
            ctx.term()

    def _welcome(self, msg) -> None:
        settings = Settings.from_dict(msg.fields["settings"])
        if self.settings is None or settings != self.settings:
            self.settings = settings
            model = build_replica(self.job, settings)
            self.params = list(model.parameters())
            self.names = [name for name, _ in model.named_parameters()]
            source = SampleSource(self.job.train_data(), settings.dtype, "train_data()")
            self.computer = ShardComputer(self.job, settings, model, source)  # builds phases
        log.info("joined as worker %d", msg.worker)

    def _task(self, msg, pipe, link) -> None:
        if self.computer is None:
            raise RuntimeError("TASK before WELCOME")
        expected = {name: (p.shape, p.dtype) for name, p in zip(self.names, self.params)}
        P.expect_arrays(msg, expected)
        for name, p in zip(self.names, self.params):
            np.copyto(p.data, msg.arrays[name])
        f = msg.fields
        sample_ids = _epoch_ids(self.computer, self.settings, f["epoch"], f["batch"])
        plan = BatchPlan(step=msg.step, epoch=f["epoch"], batch=f["batch"],
                         sample_ids=sample_ids, micro_shards=self.settings.micro_shards)
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
            out = grads_message(link.job_id, msg.step, link.worker_id, node, value, elapsed)
            out.fields.update(phase=phase, round=f.get("round", 0))
            pipe.send_multipart(P.encode(out), copy=False)
        self.steps_done += 1


def _epoch_ids(computer, settings, epoch: int, batch: int) -> np.ndarray:
    from dtrain.dist.shards import epoch_order

    cache = getattr(computer, "_order_cache", None)
    if cache is None or cache[0] != epoch:
        order = epoch_order(len(computer.source), settings.seed, epoch, settings.shuffle)
        computer._order_cache = cache = (epoch, order)
    bs = settings.batch_size
    return cache[1][batch * bs:(batch + 1) * bs]


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
    if not config.name:
        config.name = f"{_socket.gethostname()}-w{config.rank}"
    return Worker(config).run()
