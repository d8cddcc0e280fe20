"""A rogue peer attacks the coordinator during training: every bad message is rejected and logged,
training completes, and the result equals the clean run bit for bit."""

import logging
import os
import socket
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

import dtrain
from dtrain.dist import protocol as P
from dtrain.dist.job import file_digest

sys.path.insert(0, os.path.dirname(__file__))
import dist_jobs
from procs import dtrain_processes

STEPS = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_header(frames, **changes):
    header = msgpack.unpackb(bytes(frames[0]), raw=False)
    header.update(changes)
    return [msgpack.packb(header, use_bin_type=True)] + list(frames[1:])


class Rogue(threading.Thread):
    """Sends garbage, then poses as a worker and answers tasks with bad gradients."""

    def __init__(self, address: str, digest: str):
        super().__init__(daemon=True)
        self.address = address
        self.digest = digest
        self.done = []
        self.error = None

    def _recv(self, sock, kinds, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sock.poll(100):
                msg = P.decode(sock.recv_multipart())
                if msg.type in kinds:
                    return msg
        raise TimeoutError(f"rogue: no {kinds} from the coordinator")

    def _hello(self, sock):
        sock.send_multipart(P.encode(P.Message(P.HELLO, "", -1, -1, {
            "name": "rogue", "pid": 0, "host": "nowhere", "digest": self.digest})))
        return self._recv(sock, {P.WELCOME})

    def run(self):
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.address)
        try:
            sock.send_multipart([b"\x00\xffgarbage", b"more"])
            self.done.append("garbage")
            sock.send_multipart(P.encode(P.Message(P.HELLO, "", -1, -1, {
                "name": "impostor", "digest": "0" * 64})))
            self.done.append("digest")
            welcome = self._hello(sock)
            job = welcome.job
            beat = P.encode(P.Message(P.HEARTBEAT, job, -1, welcome.worker))
            sock.send_multipart(_with_header(beat, v=P.VERSION + 1))
            self.done.append("version")
            sock.send_multipart(P.encode(P.Message(P.HEARTBEAT, "not-this-job", -1, 0)))
            self.done.append("job")
            task = self._recv(sock, {P.TASK})
            node = task.fields["nodes"][0]
            wrong = {f"g{i}": np.zeros((3, 3), np.float32) for i in range(4)}
            sock.send_multipart(P.encode(P.Message(P.GRADS, job, task.step, welcome.worker, {
                "node": node, "count": self._count(task, node), "loss_sum": 1.0, "grads": [0, 1, 2, 3], "bn": []},
                wrong)))
            self.done.append("shape")
            welcome = self._hello(sock)  # evicted for that: join again
            task = self._recv(sock, {P.TASK})
            params = [a for a in task.arrays.values()]
            plan_count = None
            for lo, hi in task.fields["nodes"][:1]:
                plan_count = (lo, hi)
            bad = {f"g{i}": np.full(a.shape, np.nan, a.dtype) for i, a in enumerate(params)}
            sock.send_multipart(P.encode(P.Message(P.GRADS, job, task.step, welcome.worker, {
                "node": list(plan_count), "count": self._count(task, plan_count),
                "loss_sum": 1.0, "grads": list(range(len(params))), "bn": []}, bad)))
            self.done.append("nonfinite")
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            sock.close(0)

    @staticmethod
    def _count(task, node):
        job = dist_jobs.Slow()
        plan_size = job.batch_size
        lo, hi = node
        return (hi * plan_size // job.micro_shards) - (lo * plan_size // job.micro_shards)


def test_rogue_peer_is_rejected_and_the_result_is_unchanged(caplog):
    clean, clean_history = dtrain.fit(dist_jobs.Slow, workers=2, max_steps=STEPS)
    address = f"tcp://127.0.0.1:{_free_port()}"
    rogue = Rogue(address, file_digest(dist_jobs.__file__))
    rogue.start()
    with caplog.at_level(logging.WARNING, logger="dtrain.coordinator"):
        model, history = dtrain.fit(dist_jobs.Slow, workers=2, max_steps=STEPS, bind=address)
    rogue.join(timeout=10)
    assert rogue.error is None, rogue.error
    assert rogue.done == ["garbage", "digest", "version", "job", "shape", "nonfinite"]
    text = caplog.text
    for reason in ("(garbage)", "(digest)", "(version)", "(job)", "(shape)", "(nonfinite)"):
        assert reason in text, f"no rejection logged for {reason}"
    assert "evicted" in text
    for p, q in zip(model.parameters(), clean.parameters()):
        assert np.array_equal(p.data, q.data)
    assert [r["loss"] for r in history.steps] == [r["loss"] for r in clean_history.steps]
    assert dtrain_processes(dist_jobs.__file__) == []


@pytest.mark.parametrize("frames", [[], [b""], [b"\x81\xa1v\x01"], [b"x" * 100, b"y"]])
def test_decode_errors_never_escape_the_coordinator(frames):
    from dtrain.dist.coordinator import ZmqExecutor
    from dtrain.dist.job import Settings

    ex = ZmqExecutor("tcp://127.0.0.1:0", job_id="j", digest="d", settings=Settings())
    try:
        ex.handle([b"peer-id"] + frames)
        assert ex.rejected == 1
    finally:
        ex.sock.close(0)
