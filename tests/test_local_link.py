"""The local link: packets between the coordinator and a worker on its machine, its trust rule
(only the process that said HELLO), its refusals (too large, peer not reading, bad packets) and
its use by local workers, which stay bit-identical to an in-process run."""

import logging
import os
import socket
import struct
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import zmq

import dtrain
from dtrain.distributed import local_link as L
from dtrain.distributed import protocol as P
from dtrain.distributed.coordinator import Coordinator
from dtrain.distributed.shared_memory import machine_id
from dtrain.distributed.trainer import Trainer

sys.path.insert(0, os.path.dirname(__file__))
import dist_jobs


@pytest.fixture
def pair(tmp_path):
    """(coordinator's end, worker's end) of a link in a private directory."""
    directory = tmp_path / "private"
    directory.mkdir(mode=0o700)
    listener = L.LinkListener(str(directory))
    worker = L.connect_link(listener.path)
    coordinator, why = listener.accept(os.getpid())
    listener.close()
    assert coordinator is not None, why
    assert not os.path.exists(listener.path)
    yield coordinator, worker
    coordinator.close()
    worker.close()


def test_frames_cross_as_one_packet_in_order(pair):
    coordinator, worker = pair
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert coordinator.send([b"header", array, b""])
    assert coordinator.send([b"second"])
    frames = worker.receive()
    assert [bytes(f) for f in frames[:1]] == [b"header"] and bytes(frames[2]) == b""
    assert np.array_equal(np.frombuffer(frames[1], np.float32).reshape(3, 4), array)
    assert [bytes(f) for f in worker.receive()] == [b"second"]
    assert worker.receive() is None  # nothing waiting: no block


def test_a_typed_message_round_trips_through_the_protocol(pair):
    coordinator, worker = pair
    assert worker.send(P.pack(P.Heartbeat(3, of=b"data", busy=0.25), "job"))
    msg = P.unpack(coordinator.receive(), job="job")
    assert isinstance(msg, P.Heartbeat) and (msg.worker, msg.of, msg.busy) == (3, b"data", 0.25)


def test_only_the_process_that_said_hello_is_let_in(tmp_path):
    listener = L.LinkListener(str(tmp_path))
    worker = L.connect_link(listener.path)
    try:
        link, why = listener.accept(os.getpid() + 1)  # HELLO named another process
        assert link is None and "did not connect" in why
        with pytest.raises(L.LinkClosed):  # its connection was closed, not kept
            worker.receive()
    finally:
        listener.close()
        worker.close()


def test_a_message_too_large_for_one_packet_is_left_to_the_socket(pair):
    coordinator, worker = pair
    assert not coordinator.send([b"h", np.zeros(L.MAX_PACKET_BYTES // 4, np.float32)])
    assert worker.receive() is None


def test_a_peer_that_does_not_read_never_blocks_the_sender(pair):
    coordinator, _ = pair
    frames = [b"x" * 1000]
    with pytest.raises(L.LinkFull):
        for _ in range(100_000):  # the socket buffer holds a few hundred of these
            coordinator.send(frames)


def test_a_closed_peer_reads_and_writes_as_closed(pair):
    coordinator, worker = pair
    worker.send([b"last words"])
    worker.close()
    assert [bytes(f) for f in coordinator.receive()] == [b"last words"]  # still delivered
    with pytest.raises(L.LinkClosed):
        coordinator.receive()
    with pytest.raises(L.LinkClosed):
        coordinator.send([b"anyone?"])


@pytest.mark.parametrize("packet, reason", [
    (b"\x01\x00", "garbage"),  # no whole frame table
    (struct.pack("<I", 0), "garbage"),  # no frames
    (struct.pack("<I", 1000) + b"\x00" * 8, "garbage"),  # table longer than the packet
    (struct.pack("<II", 1, 10) + b"short", "garbage"),  # frames shorter than announced
    (struct.pack("<II", 1, 1) + b"too long", "garbage"),  # and longer
    (struct.pack("<I", L.MAX_FRAMES + 1) + b"\x00" * 4 * (L.MAX_FRAMES + 1), "garbage"),
    (b"\x00" * (L.MAX_PACKET_BYTES + 1), "size"),  # cut by the receiver's buffer
])
def test_packets_that_are_not_ours_are_protocol_errors(pair, packet, reason):
    coordinator, worker = pair
    worker.sock.send(packet)
    worker.send([b"next"])
    with pytest.raises(P.ProtocolError) as e:
        coordinator.receive()
    assert e.value.reason == reason
    assert [bytes(f) for f in coordinator.receive()] == [b"next"]  # the link goes on


# ------------------------------------------------------------------ the coordinator's use
class _Joined:
    """A coordinator that this test process joined as a local worker, link and all."""

    def __init__(self):
        job = dist_jobs.MomentumGroups()
        settings = job.settings()
        self.co = Coordinator("tcp://127.0.0.1:0", job_id="j", digest="d", settings=settings)
        self.co.attach(Trainer(job, settings, self.co))
        self.ident = b"local"
        welcome = []
        send = self.co._send
        self.co._send = lambda identity, msg, info=None: welcome.append(msg)
        self.co.handle([self.ident] + P.pack(P.Hello(
            instance="i", name="local", pid=os.getpid(), host="h", digest="d",
            machine=machine_id()), ""))
        self.co._send = send
        self.info = self.co.workers[self.ident]
        self.link = L.connect_link(welcome[0].shared_memory["link"])
        self.co.handle([self.ident] + P.pack(P.Ready(self.info.id, "shared-memory"), "j"))
        assert self.info.link is not None

    def close(self):
        self.link.close()
        self.co.close()


def test_a_bad_packet_on_a_link_is_rejected_and_the_worker_stays(caplog):
    joined = _Joined()
    try:
        joined.info.last_seen = 0.0
        joined.link.sock.send(b"\xff\xff\xff\xff")  # not a frame table
        joined.link.send(P.pack(P.Grads(5, joined.info.id, 0, 0, (0, 1), count=1), "j"))
        with caplog.at_level(logging.DEBUG, logger="dtrain.coordinator"):
            joined.co.poll_once(1.0)
        assert joined.co.rejected == 2  # the packet, and gradients for no step in flight
        assert "garbage" in caplog.text and "not the current one" in caplog.text
        assert joined.ident in joined.co.workers and joined.co.evictions == 0
        joined.link.send(P.pack(P.Heartbeat(joined.info.id), "j"))
        joined.co.poll_once(1.0)
        assert joined.info.last_seen > 0  # a good message after them is handled
    finally:
        joined.close()


def test_a_worker_whose_link_ends_is_evicted_at_once():
    joined = _Joined()
    try:
        slots = joined.info.channel.slots.path
        joined.link.close()  # what the kernel does when the process dies, however it dies
        joined.co.poll_once(1.0)
        assert joined.ident not in joined.co.workers and joined.co.evictions == 1
        assert not os.path.exists(slots) and not joined.co.links
    finally:
        joined.close()


def test_a_worker_that_stops_reading_its_link_never_blocks_the_coordinator(caplog):
    joined = _Joined()
    try:
        with caplog.at_level(logging.WARNING, logger="dtrain.coordinator"):
            for _ in range(100_000):
                joined.co._send(joined.ident, P.Stop(joined.info.id, 0, "test", "x" * 1000))
                if "not reading its local link" in caplog.text:
                    break
        assert "not reading its local link: dropped a stop" in caplog.text
        assert joined.ident in joined.co.workers
    finally:
        joined.close()


def test_local_workers_talk_over_links_and_stay_bit_identical(caplog, monkeypatch):
    sent = []
    send = L.LocalLink.send
    monkeypatch.setattr(L.LocalLink, "send", lambda self, frames: sent.append(
        P.decode(list(frames)).type) or send(self, frames))
    reference, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0)
    with caplog.at_level(logging.INFO, logger="dtrain.coordinator"):
        model, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=2)
    assert caplog.text.count("its messages over a local link") == 2
    assert sent.count(P.TASK) >= 2 * 4  # the coordinator's TASKs took the links
    for p, q in zip(model.parameters(), reference.parameters()):
        assert np.array_equal(p._data, q._data)


def test_no_link_when_the_sharded_reduction_orders_the_messages():
    job = dist_jobs.MomentumGroups()
    settings = job.settings(reduction="sharded")
    co = Coordinator("tcp://127.0.0.1:0", job_id="j", digest="d", settings=settings)
    try:
        co.attach(Trainer(job, settings, co))
        sent = []
        co._send = lambda identity, msg, info=None: sent.append(msg)
        co.handle([b"w"] + P.pack(P.Hello(instance="i", name="w", pid=os.getpid(), host="h",
                                          digest="d", machine=machine_id()), ""))
        assert sent[0].shared_memory is not None and "link" not in sent[0].shared_memory
    finally:
        co.close()


STRANGER = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
print("in", flush=True)
print("closed" if s.recv(10) == b"" else "kept", flush=True)
"""


def test_a_stranger_that_connects_first_is_turned_away():
    job = dist_jobs.MomentumGroups()
    co = Coordinator("tcp://127.0.0.1:0", job_id="j", digest="d", settings=job.settings())
    stranger = ours = None
    try:
        co.attach(Trainer(job, job.settings(), co))
        sent = []
        co._send = lambda identity, msg, info=None: sent.append(msg)
        co.handle([b"w"] + P.pack(P.Hello(instance="i", name="w", pid=os.getpid(), host="h",
                                          digest="d", machine=machine_id()), ""))
        offer = sent[0].shared_memory
        directory = os.path.dirname(offer["link"])
        assert directory == os.path.dirname(offer["grads"]["path"])  # the private directory
        assert os.stat(directory).st_mode & 0o777 == 0o700
        stranger = subprocess.Popen([sys.executable, "-c", STRANGER, offer["link"]],
                                    stdout=subprocess.PIPE, text=True)
        assert stranger.stdout.readline().strip() == "in"  # connected before the worker
        ours = L.connect_link(offer["link"])
        co.handle([b"w"] + P.pack(P.Ready(co.workers[b"w"].id, "shared-memory"), "j"))
        link = co.workers[b"w"].link
        assert link is not None
        pid = struct.unpack("3i", link.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        12))[0]
        assert pid == os.getpid()  # the HELLO's process got the link
        assert stranger.stdout.readline().strip() == "closed"  # the stranger was cut off
    finally:
        if stranger is not None:
            stranger.kill()
            stranger.wait()
            stranger.stdout.close()
        if ours is not None:
            ours.close()
        co.close()


def test_a_worker_ignores_a_bad_packet_and_falls_back_to_the_socket_when_the_link_ends(
        pair, caplog):
    from dtrain.workers.worker import Worker

    coordinator, worker_end = pair
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    pull.bind("inproc://coordinator-socket")
    push.connect("inproc://coordinator-socket")
    worker = SimpleNamespace(link=worker_end, sock=pull)
    worker._close_link = lambda: Worker._close_link(worker)
    try:
        coordinator.sock.send(b"\x00\x00")  # not a frame table
        coordinator.send([b"good"])
        with caplog.at_level(logging.WARNING, logger="dtrain.worker"):
            assert Worker._receive(worker) is None
        assert "ignored a bad packet" in caplog.text
        assert [bytes(f) for f in Worker._receive(worker)] == [b"good"]
        coordinator.close()
        push.send(b"over the socket")
        with caplog.at_level(logging.WARNING, logger="dtrain.worker"):
            frames = Worker._receive(worker)
        assert worker.link is None and "closed the local link" in caplog.text
        assert [bytes(f) for f in frames] == [b"over the socket"]
    finally:
        pull.close(0)
        push.close(0)
        ctx.term()
