"""Fuzzing the coordinator's message handling: random and mutated frames from workers.

Whatever arrives, ``handle`` raises nothing; a rejected message leaves the master parameters and
the step's collected gradients untouched (a worker that sent invalid gradients is evicted, as
designed). Besides bytes, every field of every message type is replaced by typed but wrong
values (a string where a float belongs, lists, huge ints, NaN), as a peer holding a valid key
could send them. Hypothesis generates well over 20,000 cases in total, derandomized and bounded.
The sharded reduction's messages get the same: those a worker sends the coordinator, and
those a peer sends a worker's reducer (whose mailbox must never raise or change on a bad one).
"""

import logging
import os
import sys

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtrain.distributed import protocol as P
from dtrain.distributed.compute import ShardComputer
from dtrain.distributed.coordinator import StepState, Coordinator
from dtrain.distributed.shards import assign
from dtrain.distributed.trainer import Trainer

sys.path.insert(0, os.path.dirname(__file__))
import dist_jobs

JOB_ID = "fuzzed-job"
WORKERS = [b"worker-a", b"worker-b"]


def _two_workers_joined(harness, job, settings, ready) -> None:
    """Give ``harness`` a coordinator of ``job`` (its ``ex``, ``trainer``, ``settings``) that
    both WORKERS have joined, each saying ``ready(ex, identity)``; ``registered`` and
    ``channels`` remember them for resets."""
    harness.settings = settings
    harness.ex = Coordinator("tcp://127.0.0.1:0", job_id=JOB_ID, digest="digest",
                             settings=settings)
    harness.trainer = Trainer(job, settings, harness.ex)
    harness.ex.attach(harness.trainer)
    for ident in WORKERS:
        harness.ex.handle([ident] + P.pack(P.Hello(
            instance=ident.hex(), name=ident.decode(), pid=1000 + len(harness.ex.workers),
            host="h", digest="digest"), ""))
        harness.ex.handle([ident] + P.pack(ready(harness.ex, ident), JOB_ID))
    harness.registered = dict(harness.ex.workers)
    harness.channels = {ident: info.channel for ident, info in harness.registered.items()}


class Harness:
    """A coordinator with two registered workers and one step in flight."""

    def __init__(self):
        job = dist_jobs.MomentumGroups()
        _two_workers_joined(self, job, job.settings(),
                            lambda ex, ident: P.Ready(ex.workers[ident].id, "network"))
        self.plan = self.trainer.plan(0, 0, 0)
        computer = ShardComputer(job, self.settings, self.trainer.model,
                                 self.trainer.train_source)
        self.valid = {}
        for ident, nodes in assign(self.settings.micro_shards, WORKERS).items():
            for node in nodes:
                value = computer.node_value(self.plan, node)
                msg = grads_of(self.registered[ident].id, node, value)
                self.valid[node] = (ident, [bytes(f) for f in P.pack(msg, JOB_ID)])
        self.params = [p._data.copy() for p in self.trainer.params]

    def reset(self):
        self.ex.workers = dict(self.registered)
        self.ex.failed = {}
        for ident, info in self.registered.items():
            info.channel = self.channels[ident]
        state = StepState(plan=self.plan, phase=0, round=1)
        for node, (ident, _) in self.valid.items():
            state.asked[node] = ident
        self.ex.state = state
        self.ex.current_step = 0

    def deliver(self, ident: bytes, frames: list) -> bool:
        """Hand one message to the coordinator; returns True when it was rejected."""
        self.reset()
        before = self.ex.rejected
        values_before = dict(self.ex.state.values)
        self.ex.handle([ident] + frames)
        rejected = self.ex.rejected > before
        if rejected:
            assert self.ex.state.values == values_before
        assert all(np.array_equal(p._data, q) for p, q in zip(self.trainer.params, self.params))
        return rejected

    def close(self):
        self.ex.close()


def grads_of(worker: int, node, value, step: int = 0, round_id: int = 1) -> P.Grads:
    """The GRADS a worker sends for one node's value, arrays in the message."""
    msg = P.Grads(step, worker, round_id, 0, tuple(node), count=0, compute_s=0.001)
    if value is not None:
        msg.count, msg.loss_sum = value.count, float(value.loss_sum)
        msg.grads = {i: g for i, g in enumerate(value.grads) if g is not None}
        msg.bn = [(shard, m, mean, var) for shard in sorted(value.bn_stats)
                  for m, mean, var in value.bn_stats[shard]]
    return msg


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    yield h
    h.close()


def test_valid_gradients_are_accepted(harness):
    for node, (ident, frames) in harness.valid.items():
        assert not harness.deliver(ident, frames)
        assert node in harness.ex.state.values


SETTINGS = settings(max_examples=2500, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@SETTINGS
@given(frames=st.lists(st.binary(max_size=64), max_size=5), known=st.booleans())
def test_random_frames(harness, frames, known):
    ident = WORKERS[0] if known else b"stranger"
    assert harness.deliver(ident, frames) or frames and _decodes(frames)


def _decodes(frames) -> bool:
    try:
        P.decode(frames)
        return True
    except P.ProtocolError:
        return False


@SETTINGS
@given(data=st.data())
def test_bit_flips_and_truncation_of_valid_gradients(harness, data):
    node = data.draw(st.sampled_from(sorted(harness.valid)))
    ident, frames = harness.valid[node]
    frames = list(frames)
    i = data.draw(st.integers(0, len(frames) - 1))
    frame = bytearray(frames[i])
    action = data.draw(st.sampled_from(["flip", "truncate", "drop", "extra"]))
    if action == "flip" and frame:
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] ^= 1 << data.draw(st.integers(0, 7))
        frames[i] = bytes(frame)
    elif action == "truncate":
        frames[i] = bytes(frame[:data.draw(st.integers(0, max(len(frame) - 1, 0)))])
    elif action == "drop":
        del frames[i]
    else:
        frames.append(data.draw(st.binary(max_size=32)))
    harness.deliver(ident, frames)  # accepted only if still a valid message


FIELD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 50), st.floats(),
                         st.text(max_size=5), st.lists(st.integers(-2, 10), max_size=4),
                         st.lists(st.lists(st.integers(-1, 10), max_size=3), max_size=3))


@SETTINGS
@given(data=st.data())
def test_header_fields_replaced_with_arbitrary_values(harness, data):
    node = data.draw(st.sampled_from(sorted(harness.valid)))
    ident, frames = harness.valid[node]
    header = msgpack.unpackb(frames[0], raw=False)
    key = data.draw(st.sampled_from(["node", "count", "loss_sum", "grads", "bn", "round",
                                     "phase", "step", "worker", "type", "job", "v",
                                     "compute_s", "slot"]))
    value = data.draw(FIELD_VALUES)
    if key in header:
        header[key] = value
    else:
        header["fields"][key] = value
    rejected = harness.deliver(ident, [msgpack.packb(header, use_bin_type=True)] + frames[1:])
    unchanged = (key in header and header[key] == msgpack.unpackb(frames[0], raw=False)[key]) \
        or (key in header["fields"] and value == msgpack.unpackb(frames[0],
                                                                 raw=False)["fields"].get(key))
    still_valid = key == "worker" or (  # the identity decides; any finite loss is valid, any
        key == "loss_sum" and isinstance(value, float) and np.isfinite(value)) or (
        key == "compute_s" and isinstance(value, float) and value >= 0)  # time >= 0 too
    assert rejected or unchanged or still_valid


@SETTINGS
@given(data=st.data())
def test_array_payloads_with_nonfinite_or_wrong_shapes(harness, data):
    node = data.draw(st.sampled_from(sorted(harness.valid)))
    ident, frames = harness.valid[node]
    msg = P.decode([bytes(f) for f in frames])
    arrays = {k: np.array(v) for k, v in msg.arrays.items()}
    name = data.draw(st.sampled_from(sorted(arrays)))
    kind = data.draw(st.sampled_from(["nan", "inf", "shape", "dtype", "rename", "remove"]))
    a = arrays[name]
    if kind in ("nan", "inf"):
        a.reshape(-1)[data.draw(st.integers(0, a.size - 1))] = np.nan if kind == "nan" else -np.inf
    elif kind == "shape":
        arrays[name] = np.zeros(a.shape + (data.draw(st.integers(1, 3)),), a.dtype)
    elif kind == "dtype":
        arrays[name] = a.astype(np.float64)
    elif kind == "rename":
        arrays[name + "x"] = arrays.pop(name)
    else:
        del arrays[name]
    msg.arrays = arrays
    assert harness.deliver(ident, [bytes(f) for f in P.encode(msg)])


def test_oversize_message_is_rejected_for_size(harness, caplog):
    node, (ident, frames) = next(iter(sorted(harness.valid.items())))
    msg = P.decode([bytes(f) for f in frames])
    msg.arrays["padding"] = np.zeros(harness.ex.max_bytes // 4 + 1, np.float32)
    before = harness.ex.rejected
    harness.deliver(ident, [bytes(f) for f in P.encode(msg)])
    assert harness.ex.rejected == before + 1
    assert "(size)" in caplog.text


TYPED_GARBAGE = st.one_of(
    FIELD_VALUES, st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=300),
    st.integers(-(2**63), 2**64 - 1), st.binary(max_size=8),
    st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**64 - 1), max_size=2),
    st.lists(st.floats(), max_size=3))


def _typed_messages(harness) -> dict:
    """A valid message of every type a worker may send, as (identity, envelope)."""
    ident = WORKERS[0]
    info = harness.registered[ident]
    node = next(n for n, (who, _) in sorted(harness.valid.items()) if who == ident)
    grads = P.decode(harness.valid[node][1])
    return {
        P.HELLO: P.Hello(instance="fresh", name="w", pid=5, host="h", digest="digest",
                         rank=1, machine="m").envelope(""),
        P.READY: P.Ready(info.id, "network", "").envelope(JOB_ID),
        P.GRADS: grads,
        P.HEARTBEAT: P.Heartbeat(info.id, of=ident).envelope(JOB_ID),
        P.ERROR: P.Error(info.id, 0, "Traceback ...", 1, node).envelope(JOB_ID),
        P.BYE: P.Bye(info.id).envelope(JOB_ID),
        P.STOP: P.Stop(info.id, 0, "done").envelope(JOB_ID),
        P.WELCOME: P.Welcome(info.id, 0, {}).envelope(JOB_ID),
        P.TASK: P.Task(0, info.id, 0, 0, 0, 1, [[0, 1]]).envelope(JOB_ID),
    }


@settings(max_examples=10_000, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_field_of_every_message_type_with_typed_garbage(harness, data):
    """Issue 18.1: a GRADS with compute_s="abc" raised out of the handler and ended the run."""
    messages = _typed_messages(harness)
    kind = data.draw(st.sampled_from(sorted(messages)))
    env = messages[kind]
    fields = dict(env.fields)
    key = data.draw(st.sampled_from(sorted(fields) + ["unexpected"]))
    fields[key] = data.draw(TYPED_GARBAGE)
    env = P.Envelope(env.type, env.job, env.step, env.worker, fields, env.arrays)
    harness.deliver(WORKERS[0], [bytes(f) for f in P.encode(env)])  # raises nothing


@pytest.mark.parametrize("value", ["abc", [1], None, float("nan"), -1.0, 2**63, {"a": 1}, True])
def test_a_mistyped_compute_time_is_rejected_not_fatal(harness, value):
    """Reproduces issue 18.1 exactly: compute_s of the wrong type or value."""
    node, (ident, frames) = next(iter(sorted(harness.valid.items())))
    header = msgpack.unpackb(frames[0], raw=False)
    header["fields"]["compute_s"] = value
    assert harness.deliver(ident, [msgpack.packb(header, use_bin_type=True)] + frames[1:])
    assert node not in harness.ex.state.values


def test_an_error_report_is_checked_by_another_worker(harness):
    node, (ident, _) = next(iter(sorted(harness.valid.items())))
    harness.reset()
    info = harness.ex.workers[ident]
    harness.ex.handle([ident] + P.pack(P.Error(info.id, 0, "Traceback: boom", 1, node),
                                       JOB_ID))
    assert ident not in harness.ex.workers  # evicted; the node went to the other worker
    other = next(i for i in WORKERS if i != ident)
    assert harness.ex.state.asked[node] == other
    from dtrain.distributed.coordinator import WorkerError

    with pytest.raises(WorkerError, match="boom too"):
        harness.ex.handle([other] + P.pack(P.Error(harness.ex.workers[other].id, 0,
                                                   "Traceback: boom too", 1, node), JOB_ID))


# ---------------------------------------------------------------------------- the reducers
class ReducerHarness:
    """A worker's reducer (its mailbox, without CURVE) owning every range of MomentumGroups at
    step 0 with step 0's task known, and a peer DEALER connected to the mailbox: what an
    admitted peer can reach."""

    def __init__(self):
        from dtrain.distributed.shards import Planner
        from range_planes import owning_plane

        self.ctx = zmq.Context()
        self.peer = self.ctx.socket(zmq.DEALER)
        self.peer.setsockopt(zmq.LINGER, 0)
        self.sent = []
        self.plane, _, _, settings = owning_plane(self.ctx, dist_jobs.MomentumGroups(),
                                                  self.sent.append, param_ranges=3)
        self.schema = self.plane.schema
        self.plan = Planner(110, settings).plan(0, 0, 0)
        self.node = assign(settings.micro_shards, ["a"])["a"][0]
        self.plane.task(P.StepTask(0, 0, 1, 0, 0, [], [self.node], [{"lr": 0.1}, {"lr": 0.05}]),
                        self.plan)
        self.peer.connect(self.plane.address)
        self.rejected = 0
        self.logged = _Counting(self)
        logging.getLogger("dtrain.worker").addHandler(self.logged)
        self.before = self.state()

    def state(self) -> tuple:
        """Everything a message may change: the ranges' sums, steps and parameters, what
        waits for a step, the replica's incoming parameters, what the plane sent."""
        reducer = self.plane.reducer
        owned = [(sorted(o.values), o.step, [t._data.copy() for t in o.ranged.tensors])
                 for _, o in sorted(reducer.owned.items())]
        incoming = {s: sorted(v) for s, v in self.plane.incoming.items()}
        return owned, len(reducer.early), sorted(reducer.steps), incoming, len(self.sent)

    def deliver(self, frames: list) -> bool:
        """Send one message to the reducer; returns True when it was rejected (and then
        checks that nothing changed)."""
        before = self.rejected
        self.peer.send_multipart(frames)
        assert self.plane.mailbox.poll(10_000), "the message never arrived"
        self.plane.poll()  # raises nothing but a test failure
        rejected = self.rejected > before
        now = self.state()
        if rejected:
            assert _same_state(now, self.before), "a rejected message changed the reducer"
        self.before = now
        return rejected

    def close(self):
        logging.getLogger("dtrain.worker").removeHandler(self.logged)
        self.peer.close(0)
        self.plane.close()
        self.ctx.term()


class _Counting(logging.Handler):
    """Counts the reducer's "rejected a message from a peer" records."""

    def __init__(self, harness):
        super().__init__(logging.WARNING)
        self.harness = harness

    def emit(self, record):
        if "rejected a message from a peer" in record.getMessage():
            self.harness.rejected += 1


def _same_state(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture
def reducer():
    h = ReducerHarness()
    yield h
    h.close()


def _peer_messages(h: ReducerHarness) -> dict:
    """A valid message of every type a peer may send a reducer, and the types it may not."""
    pieces = h.schema.ranges.ranges[1]
    grads = [np.ones(P.piece_spec(h.schema, p)[0], np.float32) for p in pieces]
    count = h.plan.node_count(h.node)
    return {
        P.RANGEGRADS: P.RangeGrads(0, 1, 1, h.node, 1, count, grads),
        P.RANGEPARAMS: P.RangeParams(1, 1, 1, 1, grads),
        P.RANGEDONE: P.RangeDone(0, 1, 1, 1, [h.node]),
        P.RANGESTATE: P.RangeState(1, 1, 1, 0, grads, [{} for _ in grads]),
        P.GRADS: P.Grads(0, 1, 1, 0, h.node, count=count, loss_sum=1.0),
        P.STEPTASK: P.StepTask(0, 1, 1, 0, 0, [h.node], [h.node], [{"lr": 0.1}]),
        P.HEARTBEAT: P.Heartbeat(1),
        P.RANGENORM: P.RangeNorm(0, 1, 1, 1, 2.0),
        P.CLIPSCALE: P.ClipScale(0, 1, 0.5),
    }


def test_a_reducer_takes_valid_gradients_and_parameters(reducer):
    messages = _peer_messages(reducer)
    assert not reducer.deliver(P.pack(messages[P.RANGEPARAMS], "job"))
    assert sorted(reducer.plane.incoming[1]) == [1]
    assert not reducer.deliver(P.pack(messages[P.RANGEGRADS], "job"))
    assert any(isinstance(m, P.RangeDone) and m.range == 1 for m in reducer.sent)
    for kind in (P.RANGEDONE, P.RANGESTATE, P.GRADS, P.STEPTASK, P.HEARTBEAT, P.RANGENORM,
                 P.CLIPSCALE):
        assert reducer.deliver(P.pack(messages[kind], "job")), kind  # not a peer's to send


def _garbled(frames: list, data) -> list | None:
    """``frames`` with one header entry or message field replaced by typed garbage (None when
    msgpack cannot carry the garbage: no peer can send that either)."""
    frames = [bytes(f) for f in frames]
    header = msgpack.unpackb(frames[0], raw=False)
    keys = [k for k in sorted(header) if k != "fields"] + \
        [("fields", k) for k in sorted(header["fields"]) + ["unexpected"]]
    key = data.draw(st.sampled_from(keys))
    value = data.draw(TYPED_GARBAGE)
    if isinstance(key, tuple):
        header["fields"][key[1]] = value
    else:
        header[key] = value
    try:
        frames[0] = msgpack.packb(header, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return None
    return frames


@settings(max_examples=3000, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_field_of_every_peer_message_with_typed_garbage(reducer, data):
    """A peer holding a job key sends a reducer every message type with one header entry or
    field replaced by typed garbage: nothing escapes the mailbox's handling, and a rejected
    message changes nothing in the reducer."""
    messages = _peer_messages(reducer)
    kind = data.draw(st.sampled_from(sorted(messages)))
    frames = _garbled(P.pack(messages[kind], "job"), data)
    if frames is None:
        return
    if not reducer.deliver(frames):  # accepted (a value as good as the original): start over
        reducer.close()
        reducer.__init__()


@settings(max_examples=1500, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_peer_arrays_nonfinite_misshapen_or_misnamed(reducer, data):
    """Array payloads of the wrong shape, dtype or name are rejected; non-finite ones are
    summed (the coordinator decides: see RANGEDONE's nonfinite) and reported."""
    kind = data.draw(st.sampled_from([P.RANGEGRADS, P.RANGEPARAMS]))
    env = P.decode([bytes(f) for f in P.pack(_peer_messages(reducer)[kind], "job")])
    arrays = {k: np.array(v) for k, v in env.arrays.items()}
    name = data.draw(st.sampled_from(sorted(arrays)))
    change = data.draw(st.sampled_from(["nan", "shape", "dtype", "rename", "remove", "extra"]))
    a = arrays[name]
    if change == "nan":
        a.reshape(-1)[data.draw(st.integers(0, a.size - 1))] = np.nan
    elif change == "shape":
        arrays[name] = np.zeros(a.shape + (data.draw(st.integers(1, 3)),), a.dtype)
    elif change == "dtype":
        arrays[name] = a.astype(np.float64)
    elif change == "rename":
        arrays[name + "x"] = arrays.pop(name)
    elif change == "remove":
        del arrays[name]
    else:
        arrays["g9"] = a
    env.arrays = arrays
    rejected = reducer.deliver([bytes(f) for f in P.encode(env)])
    if change == "nan":
        assert not rejected
        if kind == P.RANGEGRADS:
            done = [m for m in reducer.sent if isinstance(m, P.RangeDone)]
            assert done and done[-1].nonfinite == [reducer.node]
    else:
        assert rejected, change
    if not rejected:
        reducer.close()
        reducer.__init__()


class ShardedHarness:
    """A coordinator reducing by range: two workers whose reducers own MomentumGroups' three
    ranges in map 1, and step 0 in flight."""

    def __init__(self):
        from dtrain.distributed.range_optimizer import RangeOptimizer
        from dtrain.distributed.range_state import range_payload

        job = dist_jobs.MomentumGroups()
        _two_workers_joined(self, job, job.settings(reduction="sharded", param_ranges=3),
                            lambda ex, ident: P.Ready(
                                ex.workers[ident].id, "network", "",
                                reducer=f"tcp://127.0.0.1:{9000 + len(ex.workers)}"))
        self.plane = self.ex.plane
        self.plan = self.trainer.plan(0, 0, 0)
        self.nodes = assign(self.settings.micro_shards, WORKERS)
        ranges = self.trainer.ranges
        self.payloads = [range_payload(RangeOptimizer(self.trainer.optimizer, self.trainer.params,
                                                      ranges, r)) for r in range(len(ranges))]
        self.params = [p._data.copy() for p in self.trainer.params]

    def reset(self):
        ex, plane = self.ex, self.plane
        ex.workers = dict(self.registered)
        for ident, info in self.registered.items():
            info.channel = self.channels[ident]
        ex.diverged = False
        plane.version, plane.members = 1, list(WORKERS)
        plane.owners = [r % len(WORKERS) for r in range(len(self.trainer.ranges))]
        plane.acks, plane.lost, plane.loaded = set(), None, True
        plane.done, plane.step, plane.states, plane.suspects = set(), 0, {}, {}
        state = StepState(plan=self.plan, phase=0, round=1)
        for ident, nodes in self.nodes.items():
            for node in nodes:
                state.asked[node] = ident
        ex.state, ex.current_step = state, 0

    def deliver(self, ident: bytes, frames: list) -> bool:
        """Hand one message to the coordinator; returns True when it was rejected (and then
        checks that the step's bookkeeping did not change)."""
        self.reset()
        plane, before = self.plane, self.ex.rejected
        self.ex.handle([ident] + frames)
        rejected = self.ex.rejected > before
        if rejected:
            assert not plane.done and not plane.acks and not plane.states
            assert not self.ex.state.values and not self.ex.diverged
        assert all(np.array_equal(p._data, q) for p, q in zip(self.trainer.params, self.params))
        return rejected

    def messages(self) -> dict:
        """A valid message of every sharded type worker a's data socket may send."""
        info = self.registered[WORKERS[0]]
        node = self.nodes[WORKERS[0]][0]
        params, state = self.payloads[0]
        return {
            P.MAPACK: P.MapAck(info.id, 1),
            P.RANGEDONE: P.RangeDone(0, info.id, 1, 0),
            P.RANGESTATE: P.RangeState(info.id, 1, 0, 0, params, state),
            P.GRADS: P.Grads(0, info.id, 1, 0, node, count=self.plan.node_count(node),
                             loss_sum=1.5, compute_s=0.001),
            P.RANGEGRADS: P.RangeGrads(0, info.id, 1, node, 0, self.plan.node_count(node),
                                       [None] * len(params)),
            P.RANGEPARAMS: P.RangeParams(1, info.id, 1, 0, params),
            P.STEPTASK: P.StepTask(0, info.id, 1, 0, 0, [node], [node], [{"lr": 0.1}]),
            P.GATHER: P.Gather(1, [0]),
            P.RANGEMAP: P.RangeMap(1, [("tcp://127.0.0.1:1", "")], [0, 0, 0]),
            P.RANGENORM: P.RangeNorm(0, info.id, 1, 0, 2.0),
            P.CLIPSCALE: P.ClipScale(0, 1, 0.5),
        }

    def close(self):
        self.ex.close()


@pytest.fixture(scope="module")
def sharded():
    h = ShardedHarness()
    yield h
    h.close()


def test_the_sharded_messages_of_a_worker_are_taken(sharded):
    messages = sharded.messages()
    ident = WORKERS[0]
    for kind, check in ((P.MAPACK, lambda: sharded.plane.acks == {ident}),
                        (P.RANGEDONE, lambda: sharded.plane.done == {0}),
                        (P.RANGESTATE, lambda: set(sharded.plane.states) == {0}),
                        (P.GRADS, lambda: len(sharded.ex.state.values) == 1)):
        assert not sharded.deliver(ident, [bytes(f) for f in P.pack(messages[kind], JOB_ID)])
        assert check(), kind
    # a RANGENORM is refused while the job does not clip; a CLIPSCALE is never a worker's
    for kind in (P.RANGEGRADS, P.RANGEPARAMS, P.STEPTASK, P.GATHER, P.RANGEMAP, P.RANGENORM,
                 P.CLIPSCALE):
        assert sharded.deliver(ident, [bytes(f) for f in P.pack(messages[kind], JOB_ID)]), kind
    other = sharded.registered[WORKERS[1]].id  # range 0 is worker a's: b cannot report it
    assert sharded.deliver(WORKERS[1], P.pack(P.RangeDone(0, other, 1, 0), JOB_ID))


@settings(max_examples=3000, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_field_of_every_sharded_message_with_typed_garbage(sharded, data):
    """The sharded reduction's messages with one header entry or field replaced by typed
    garbage: ``handle`` raises nothing and a rejected one leaves the step's bookkeeping."""
    messages = sharded.messages()
    kind = data.draw(st.sampled_from(sorted(messages)))
    frames = _garbled(P.pack(messages[kind], JOB_ID), data)
    if frames is None:
        return
    sharded.deliver(WORKERS[0], frames)  # raises nothing


def test_a_nonfinite_node_is_checked_by_recomputing_the_step_without_its_worker(sharded):
    """Sharded, a worker's NaN node has been summed by the reducers when it is seen: the
    worker is evicted (its ranges lost, so the step is recomputed from the last gathered
    state without it); another worker's non-finite node of that step confirms the training
    diverged, and is accepted as a single process would."""
    a, b = WORKERS
    node_a, node_b = sharded.nodes[a][0], sharded.nodes[b][0]
    b_id = sharded.registered[b].id
    sharded.reset()
    sharded.ex.handle([b] + P.pack(P.RangeDone(0, b_id, 1, 1, [node_a]), JOB_ID))
    assert a not in sharded.ex.workers and sharded.plane.lost  # the step goes back
    assert sharded.plane.suspects == {0: a.hex()} and not sharded.ex.diverged
    suspects = dict(sharded.plane.suspects)
    sharded.reset()  # the recomputation, without a (here: a is not asked again)
    sharded.plane.suspects = suspects
    del sharded.ex.workers[a]
    sharded.ex.handle([b] + P.pack(P.RangeDone(0, b_id, 1, 1, [node_b]), JOB_ID))
    assert sharded.ex.diverged and b in sharded.ex.workers and not sharded.plane.lost
    assert not sharded.plane.suspects
    sharded.reset()
    sharded.ex.diverged = True  # diverged: every later non-finite node is the training's
    sharded.ex.handle([b] + P.pack(P.RangeDone(0, b_id, 1, 1, [node_a]), JOB_ID))
    assert a in sharded.ex.workers and not sharded.plane.lost
