"""Fuzzing the coordinator's message handling: random and mutated frames from dtrain.workers.

Whatever arrives, ``handle`` raises nothing; a rejected message leaves the master parameters and
the step's collected gradients untouched (a worker that sent invalid gradients is evicted, as
designed). Hypothesis generates well over 10,000 cases in total, derandomized and bounded.
"""

import os
import sys

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtrain.distributed import protocol as P
from dtrain.distributed.compute import ShardComputer
from dtrain.distributed.coordinator import StepState, ZmqExecutor
from dtrain.distributed.shards import assign
from dtrain.distributed.trainer import Trainer
from dtrain.workers.worker import grads_message

sys.path.insert(0, os.path.dirname(__file__))
import dist_jobs

JOB_ID = "fuzzed-job"
WORKERS = [b"worker-a", b"worker-b"]


class Harness:
    """A coordinator with two registered workers and one step in flight."""

    def __init__(self):
        job = dist_jobs.MomentumGroups()
        self.settings = job.settings()
        self.ex = ZmqExecutor("tcp://127.0.0.1:0", job_id=JOB_ID, digest="digest",
                              settings=self.settings)
        self.trainer = Trainer(job, self.settings, self.ex)
        self.ex.attach(self.trainer)
        for ident in WORKERS:
            self.ex.handle([ident] + P.encode(P.Message(P.HELLO, "", -1, -1, {
                "name": ident.decode(), "pid": 1000 + len(self.ex.workers), "host": "h",
                "digest": "digest"})))
        self.registered = dict(self.ex.workers)
        self.plan = self.trainer.plan(0, 0, 0)
        computer = ShardComputer(job, self.settings, self.trainer.model,
                                 self.trainer.train_source)
        self.valid = {}
        for ident, nodes in assign(self.settings.micro_shards, WORKERS).items():
            for node in nodes:
                value = computer.node_value(self.plan, node)
                msg = grads_message(JOB_ID, 0, self.registered[ident].id, node, value, 0.001)
                msg.fields.update(phase=0, round=1)
                self.valid[node] = (ident, [bytes(f) for f in P.encode(msg)])
        self.params = [p._data.copy() for p in self.trainer.params]

    def reset(self):
        self.ex.workers = dict(self.registered)
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
                                     "phase", "step", "worker", "type", "job", "v"]))
    value = data.draw(FIELD_VALUES)
    if key in header:
        header[key] = value
    else:
        header["fields"][key] = value
    rejected = harness.deliver(ident, [msgpack.packb(header, use_bin_type=True)] + frames[1:])
    unchanged = (key in header and header[key] == msgpack.unpackb(frames[0], raw=False)[key]) \
        or (key in header["fields"] and value == msgpack.unpackb(frames[0],
                                                                 raw=False)["fields"][key])
    still_valid = key in ("worker", "phase") or (  # identity and round decide; any finite
        key == "loss_sum" and isinstance(value, float) and np.isfinite(value))  # loss is valid
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
