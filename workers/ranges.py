"""A worker's part in the sharded reduction: its reducer, and its replica fed by the reducers.

Every worker binds a ROUTER (the *mailbox*) on the interface it reaches the coordinator from
and connects a DEALER to every reducer of the current range map, itself included; all peer
traffic goes DEALER to ROUTER, so nobody needs to learn a peer's identity. The mailbox brings
this worker's reducer the RANGEGRADS of the ranges it owns, and this worker's replica the
RANGEPARAMS of every range. A STEPTASK is computed once the replica holds every range's
parameters for its step (never stale ones); each node's gradients go range by range to the
ranges' reducers, and its loss, count and batch-norm statistics to the coordinator in a GRADS
without arrays. A range leaves as soon as backward has finished every parameter it covers
(``FinishedRanges``; the last layers' ranges first), handed to the ``PeerSender``'s thread,
which packs, seals and sends it while backward goes on to the first layers; ranges the
computation could not report early (a first pass of a layout, shard by shard) leave after it,
as before. Each time ranges leave during backward the mailbox is served too, so this reducer
steps the ranges whose slices are all in and their new parameters leave while backward still
runs. What this worker sends its own
reducer or replica is handed over in the process, never through a socket (which would only
encrypt it to decrypt it again). Under CURVE, peers seal their messages with AES-256-GCM under
the range map's key (``sealing``; ``peer_cipher = aes-gcm``, the default) on sockets without a
ZeroMQ mechanism, or use CURVE on these sockets too (``peer_cipher = curve``).
"""

from __future__ import annotations

import logging
import socket as _socket
import time

import zmq

from dtrain.distributed import protocol as P
from dtrain.distributed.reducer import RangeReducer
from dtrain.distributed.sealing import Sealer, peers_seal
from dtrain.distributed.security import (
    ClientKeys,
    ServerKeys,
    allow_only,
    harden_listener,
    make_server,
    start_authenticator,
)

from .peer_sender import PeerSender

log = logging.getLogger("dtrain.worker")

HEADER_SLACK = 1 << 20


def local_address(connect: str) -> str:
    """The address of this host's interface that routes to the coordinator at ``connect``."""
    host, port = connect.split("://", 1)[1].rsplit(":", 1)
    with _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as probe:
        probe.connect((host.strip("[]"), int(port)))  # sends nothing: only picks the route
        return probe.getsockname()[0]


class FinishedRanges:
    """Which ranges of a step's nodes have every parameter's gradient final, as backward goes.

    ``hear`` takes one parameter's node gradients (from ``ShardComputer.node_values``'
    ``on_final``) and names the ranges that just became complete; ``sent`` are the ranges
    named so far, which the worker does not send again after the computation.
    """

    def __init__(self, ranges):
        self.needs = [{piece.param for piece in pieces} for pieces in ranges.ranges]
        self.grads: dict = {}  # node -> {param: gradient or None}
        self.heard: set = set()
        self.sent: set = set()

    def hear(self, param: int, node_grads: dict) -> list[int]:
        """Record ``param``'s final gradient of every node; the ranges now complete."""
        self.heard.add(param)
        for node, grad in node_grads.items():
            self.grads.setdefault(node, {})[param] = grad
        done = [index for index, needs in enumerate(self.needs)
                if index not in self.sent and needs <= self.heard]
        self.sent.update(done)
        return done


class RangePlane:
    """The mailbox, the DEALERs to the reducers, this worker's reducer and the replica's
    incoming ranges. ``send`` sends a message to the coordinator; ``peer_cipher`` is the
    run's setting (it matters only with ``keys``)."""

    def __init__(self, ctx: zmq.Context, keys: ClientKeys | None, connect: str, schema,
                 optimizer, params: list, send, clip_grad_norm: float = 0.0,
                 accumulate: int = 1, peer_cipher: str = "aes-gcm"):
        self.ctx = ctx
        self.sealed = peers_seal(keys is not None, peer_cipher)
        self.sealers: list[Sealer] = []  # the current map's, then the one before, if sealed
        self.clip_grad_norm = clip_grad_norm
        self.accumulate = accumulate
        self.keys = keys
        self.schema = schema
        self.optimizer = optimizer
        self.params = params  # the replica's parameters, which RANGEPARAMS overwrite
        self.send = send
        self.job_id = ""
        self.worker_id = -1
        self.auth = None
        self.mailbox = ctx.socket(zmq.ROUTER)
        self.mailbox.setsockopt(zmq.LINGER, 0)
        self.mailbox.setsockopt(zmq.MAXMSGSIZE, schema.max_message_bytes() + HEADER_SLACK)
        harden_listener(self.mailbox)  # sealed, it has no ZeroMQ mechanism to keep strangers out
        curve_peers = keys is not None and not self.sealed
        if curve_peers:
            self.auth = start_authenticator(ctx, ServerKeys(keys.public, keys.secret,
                                                            {keys.public}))
            make_server(self.mailbox, ServerKeys(keys.public, keys.secret))
        self.mailbox.bind(f"tcp://{local_address(connect)}:0")
        self.address = self.mailbox.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.sender = PeerSender(ctx, keys if curve_peers else None)  # DEALERs to the reducers
        self.reducers: list = []  # the map's (address, key), by reducer index
        self.owners: list = []
        self.reducer: RangeReducer | None = None
        self.incoming: dict = {}  # step -> {range: parameters}
        self.pending: tuple | None = None  # (task, plan) waiting for its parameters
        self.floor: int | None = None  # the first step whose parameters the replica may need
        self.computing: P.StepTask | None = None  # the task being computed
        self.planner = None
        self.computer = None
        self.me: tuple = ()  # this reducer's (address, key) in the range map

    def ready(self, job_id: str, ready: P.Ready) -> P.Ready:
        """``ready`` also saying where this reducer listens, for the coordinator's maps."""
        self.job_id, self.worker_id = job_id, ready.worker
        ready.reducer = self.address
        ready.public = self.keys.public.decode() if self.keys is not None else ""
        return ready

    def use_map(self, msg: P.RangeMap) -> P.MapAck:
        """Admit the job's keys (or take its seal key), connect to every reducer, own nothing
        until RANGESTATE."""
        if self.sealed:
            if not msg.seal:
                raise P.ProtocolError("fields", f"range map {msg.version} carries no seal key, "
                                      "and this worker's peers seal (peer_cipher = aes-gcm)")
            if self.worker_id < 0:
                raise P.ProtocolError("stale", "a range map before this worker said READY")
            # the last map's key still opens its messages on the way (the reducer drops them)
            self.sealers = [Sealer(msg.seal, self.worker_id), *self.sealers[:1]]
        if self.auth is not None:
            allow_only(self.auth, msg.allowed)
        before, wanted = set(self.reducers), set(msg.reducers)
        for peer in before - wanted:
            self.sender.drop(peer)
        for peer in wanted - before:
            self.sender.connect(peer)
        self.reducers, self.owners = list(msg.reducers), list(msg.owners)
        self.me = (self.address, self.keys.public.decode() if self.keys is not None else "")
        self.reducer = RangeReducer(self.worker_id, msg.version, self.optimizer, self.params,
                                    self.schema.ranges, self.schema.micro_shards,
                                    self.clip_grad_norm, self.accumulate)
        self.incoming, self.pending, self.floor = {}, None, None
        return P.MapAck(self.worker_id, msg.version)

    def _to_reducer(self, index: int, msg) -> None:
        peer = self.reducers[self.owners[index]]
        if peer == self.me:
            self._locally(self._answer_grads, msg)
        else:
            self._to_peers([peer], msg)

    def _to_all(self, msg) -> None:
        others = [peer for peer in dict.fromkeys(self.reducers) if peer != self.me]  # map order
        if self.me in self.reducers:
            self._locally(self._take_params, msg)
        if others:
            self._to_peers(others, msg)

    def _to_peers(self, peers: list, msg) -> None:
        """Send ``msg`` to ``peers``, sealed under the map's key when peers seal (once for all
        of them): on the sender's thread while backward runs, else on this one, which would
        only wait otherwise."""
        self.sender.send(peers, msg, self.job_id, self.sealers[0] if self.sealers else None,
                         background=self.computing is not None)

    @staticmethod
    def _locally(handle, msg) -> None:
        """Hand one of this worker's own messages over; refused, it is logged as a peer's
        would be (and never aborts the computation that sent it)."""
        try:
            handle(msg)
        except P.ProtocolError as e:
            log.warning("rejected a message of this worker: %s (%s)", e, e.reason)

    # ------------------------------------------------------------------ coordinator's orders
    def load(self, msg: P.RangeState) -> None:
        """Own a range: take its state, send its parameters to every worker."""
        self._to_all(self._reducer().load(msg))

    def gather(self, msg: P.Gather) -> None:
        """Send the coordinator the state of the asked ranges this reducer owns."""
        reducer = self._reducer()
        if msg.version != reducer.version:
            raise P.ProtocolError("stale", f"gather of map {msg.version}, not "
                                  f"{reducer.version}")
        for index in msg.ranges:
            self.send(reducer.state(index))

    def clip(self, msg: P.ClipScale) -> None:
        """Every range's norm is in: scale this reducer's ranges and step them."""
        self._answer(self._reducer().clip(msg))

    def task(self, msg: P.StepTask, plan) -> None:
        """A step: tell the reducer its cover, compute once the parameters are in."""
        reducer = self._reducer()
        if msg.version != reducer.version:
            raise P.ProtocolError("stale", f"step task of map {msg.version}, not "
                                  f"{reducer.version}")
        self._answer(reducer.begin(msg, plan))
        self.pending, self.floor = (msg, plan), msg.step
        self.incoming = {s: v for s, v in self.incoming.items() if self._near(s)}
        self.try_compute()

    def _reducer(self) -> RangeReducer:
        if self.reducer is None:
            raise P.ProtocolError("stale", "no range map yet")
        return self.reducer

    # ------------------------------------------------------------------ peers
    def poll(self) -> None:
        """Handle every message waiting in the mailbox; bad ones are logged and dropped. Then
        compute the pending task if its parameters are in (some may have come from this
        worker's own reducer, in the process)."""
        while True:
            try:
                frames = P.recv_frames(self.mailbox, zmq.NOBLOCK)
            except zmq.Again:
                self.try_compute()
                return
            try:
                msg = P.typed(P.decode(self._open(frames[1:]), job=self.job_id), self.schema)
                self._from_peer(msg)
            except P.ProtocolError as e:
                log.warning("rejected a message from a peer: %s (%s)", e, e.reason)

    def _open(self, frames: list) -> list:
        """A peer message's plaintext frames (ProtocolError: not sealed under the map's key)."""
        if not self.sealed:
            return frames
        if not self.sealers:
            raise P.ProtocolError("stale", "a peer message before the first range map")
        try:
            return self.sealers[0].open(frames)
        except P.ProtocolError:
            if len(self.sealers) == 1:
                raise
        return self.sealers[1].open(frames)

    def _from_peer(self, msg) -> None:
        if isinstance(msg, P.RangeGrads):
            self._answer_grads(msg)
        elif isinstance(msg, P.RangeParams):
            self._take_params(msg)
        else:
            raise P.ProtocolError("type", f"unexpected {msg.TYPE} from a peer")

    def _answer_grads(self, msg: P.RangeGrads) -> None:
        self._answer(self._reducer().add(msg))

    def _take_params(self, msg: P.RangeParams) -> None:
        """Keep a range's parameters for its step (computed with once all are in)."""
        if msg.version != self._reducer().version or \
                (self.pending is not None and msg.step < self.pending[0].step):
            raise P.ProtocolError("stale", f"parameters of step {msg.step}, map "
                                  f"{msg.version}")
        if not self._near(msg.step) or len(self.incoming) > 2 and msg.step not in self.incoming:
            raise P.ProtocolError("stale", f"parameters of step {msg.step}: too far ahead")
        self.incoming.setdefault(msg.step, {})[msg.range] = msg.params

    def _near(self, step: int) -> bool:
        """A reducer can have sent parameters of ``step`` by now: from the step of this
        worker's latest task on, at most two ahead (the window the replica keeps; an
        impostor's far steps would otherwise fill it and crowd out the real ones)."""
        return self.floor is None or self.floor <= step <= self.floor + 2

    def _answer(self, messages: list) -> None:
        """Send a reducer's answers: DONE to the coordinator, then the new parameters to
        every worker. DONE first: the coordinator's bookkeeping and the next STEPTASK then
        travel while the parameters do (a worker computes only once they are all in), not
        after them, queued behind their bytes on the host's link."""
        for msg in messages:
            if not isinstance(msg, P.RangeParams):
                self.send(msg)
        for msg in messages:
            if isinstance(msg, P.RangeParams):
                self._to_all(msg)

    # ------------------------------------------------------------------ computing
    def try_compute(self) -> None:
        """Compute the pending task if every range's parameters for its step are in."""
        if self.pending is None:
            return
        task, plan = self.pending
        if len(self.incoming.get(task.step, {})) < len(self.schema.ranges):
            return
        self.pending, self.floor = None, task.step + 1
        self._write_step(task.step)
        started = time.perf_counter()
        self.computing = task
        finished = FinishedRanges(self.schema.ranges)

        def on_final(param: int, node_grads: dict) -> None:
            done = finished.hear(param, node_grads)
            for index in done:
                for node in task.nodes:
                    self._send_range(task, node, index, plan.node_count(node),
                                     finished.grads[node])
            if done:
                self.poll()  # the other nodes' slices of those ranges may be in

        values = self.computer(plan, task.nodes, on_final) if task.nodes else {}
        self.computing = None
        elapsed = (time.perf_counter() - started) / max(len(values), 1)
        for node in task.nodes:
            self._send_node(task, node, values[node], elapsed, finished.sent)

    def _write_step(self, step: int) -> None:
        """Overwrite the replica with every range's parameters for ``step``, and let go of
        them and of older ones (this reducer's own ranges come as its arrays, which it gives a
        copy before stepping them in place while anything still holds them)."""
        held = self.incoming.pop(step, {})
        self.incoming = {s: v for s, v in self.incoming.items() if s > step}
        for index, values in held.items():
            self._write(index, values)

    def _write(self, index: int, values: list) -> None:
        """Overwrite the replica's pieces of range ``index``."""
        for piece, value in zip(self.schema.ranges.ranges[index], values):
            flat = self.params[piece.param]._data.reshape(-1)
            flat[piece.start:piece.stop] = value.reshape(-1)

    def _send_range(self, task: P.StepTask, node, index: int, count: int, grads) -> None:
        """One node's slices of range ``index`` to its reducer; ``grads[param]`` is that
        parameter's gradient of the node (None where none flowed)."""
        pieces = self.schema.ranges.ranges[index]
        slices = [None] * len(pieces)
        if count:
            slices = [None if grads[p.param] is None else
                      grads[p.param] if self.schema.ranges.is_whole(p) else
                      grads[p.param].reshape(-1)[p.start:p.stop] for p in pieces]
        self._to_reducer(index, P.RangeGrads(task.step, self.worker_id, task.version,
                                             tuple(node), index, count, slices))

    def _send_node(self, task: P.StepTask, node, value, elapsed: float, sent: set) -> None:
        """The node's ranges not ``sent`` during backward, then its GRADS to the coordinator."""
        count = 0 if value is None else value.count
        for index in range(len(self.schema.ranges)):
            if index not in sent:
                self._send_range(task, node, index, count, None if value is None else
                                 value.grads)
        out = P.Grads(task.step, self.worker_id, task.version, 0, tuple(node), count=count,
                      compute_s=elapsed)
        if value is not None:
            out.loss_sum = float(value.loss_sum)
            out.bn = [(shard, module, mean, var) for shard in sorted(value.bn_stats)
                      for module, mean, var in value.bn_stats[shard]]
        self.send(out)

    def close(self) -> None:
        self.sender.close()
        self.mailbox.close(0)
        if self.auth is not None:
            self.auth.stop()
