"""A worker's peer sender (``workers/peer_sender.py``): messages leave in the order they were
queued, sealed once for all the peers they go to; one that cannot be sent is logged and the
next ones still leave; closing stops the thread and its sockets."""

import logging
import threading

import numpy as np
import pytest
import zmq

from dtrain.distributed import protocol as P
from dtrain.distributed.sealing import Sealer, new_key
from dtrain.workers.peer_sender import PeerSender


def _grads(step: int) -> P.RangeGrads:
    return P.RangeGrads(step, 1, 3, (0, 2), 1, 2, [np.full(5000, step, np.float32)])


@pytest.fixture
def mailboxes():
    """Two ROUTERs on loopback, as two reducers' mailboxes, and their (address, key) peers."""
    ctx = zmq.Context()
    routers = []
    try:
        for _ in range(2):
            router = ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            router.bind("tcp://127.0.0.1:0")
            routers.append(router)
        peers = [(r.getsockopt(zmq.LAST_ENDPOINT).decode(), "") for r in routers]
        yield ctx, routers, peers
    finally:
        for router in routers:
            router.close(0)
        ctx.term()


def _receive(router) -> list:
    assert router.poll(10_000), "the message never arrived"
    return router.recv_multipart()[1:]


def test_messages_leave_in_order_sealed_once_for_every_peer(mailboxes):
    ctx, routers, peers = mailboxes
    key = new_key()
    sealer, opener = Sealer(key, 1), Sealer(key, 2)
    sender = PeerSender(ctx, None)
    try:
        for peer in peers:
            sender.connect(peer)
        for step in range(5):
            sender.send(peers, _grads(step), "job", sealer)
        got = [[_receive(router) for _ in range(5)] for router in routers]
        assert got[0] == got[1]  # the same sealed bytes to each peer
        for step, frames in enumerate(got[0]):
            msg = P.decode(opener.open(frames), job="job")
            assert msg.step == step and (msg.arrays["g0"] == step).all()
        sender.flush()
    finally:
        sender.close()


def test_a_message_that_cannot_be_sent_is_logged_and_the_next_leaves(mailboxes, caplog):
    ctx, routers, peers = mailboxes
    sender = PeerSender(ctx, None)
    bad = _grads(1)
    bad.grads = [np.array(["x"], dtype=object)]  # pack refuses it
    try:
        sender.connect(peers[0])
        with caplog.at_level(logging.WARNING, logger="dtrain.worker"):
            sender.send([("tcp://127.0.0.1:1", "")], _grads(0), "job")  # never connected
            sender.send([peers[0]], bad, "job")
            sender.send([peers[0]], _grads(2), "job")
            assert P.decode(_receive(routers[0]), job="job").step == 2
            sender.flush()
        warnings = [r.getMessage() for r in caplog.records]
        assert any("no connection to peer tcp://127.0.0.1:1" in w for w in warnings), warnings
        assert any("not sent" in w and "dtype object" in w for w in warnings), warnings
    finally:
        sender.close()


def test_a_dropped_peer_gets_nothing_more_and_close_stops_the_thread(mailboxes):
    ctx, routers, peers = mailboxes
    sender = PeerSender(ctx, None)
    sender.connect(peers[0])
    sender.send([peers[0]], _grads(0), "job")
    assert P.decode(_receive(routers[0]), job="job").step == 0
    sender.drop(peers[0])
    sender.send([peers[0]], _grads(1), "job")
    sender.flush()
    assert not sender.sockets and not routers[0].poll(200)
    sender.close()
    assert not sender._thread.is_alive() and not sender.sockets


def test_a_foreground_send_has_left_when_it_returns_a_background_one_leaves_alone(
        mailboxes, monkeypatch):
    ctx, routers, peers = mailboxes
    threads = []
    send_packed = P.send_packed

    def recording(sock, frames, flags=0):
        threads.append(threading.current_thread().name)
        return send_packed(sock, frames, flags)

    monkeypatch.setattr(P, "send_packed", recording)
    sender = PeerSender(ctx, None)
    try:
        sender.connect(peers[0])
        sender.send([peers[0]], _grads(0), "job")
        sender.send([peers[0]], _grads(1), "job", background=False)
        assert len(threads) == 2  # both sent when it returns (by whichever thread got there)
        assert [P.decode(_receive(routers[0]), job="job").step for _ in range(2)] == [0, 1]
        sender.send([peers[0]], _grads(2), "job")
        assert P.decode(_receive(routers[0]), job="job").step == 2
        assert threads[2] == "dtrain-peer-sender"
    finally:
        sender.close()


def test_a_peer_that_takes_nothing_costs_dropped_messages_not_a_blocked_worker(
        mailboxes, monkeypatch, caplog):
    """Nobody listens at the stuck peer's address, so ZeroMQ queues what is sent to it until
    SNDHWM messages wait; the next ones are dropped (and logged), and a message to another
    peer still leaves."""
    from dtrain.workers import peer_sender
    from test_faults import _free_port

    ctx, routers, peers = mailboxes
    monkeypatch.setattr(peer_sender, "SNDHWM", 2)
    stuck = (f"tcp://127.0.0.1:{_free_port()}", "")
    sender = PeerSender(ctx, None)
    try:
        sender.connect(stuck)
        sender.connect(peers[0])
        def sends():
            for step in range(5):
                sender.send([stuck], _grads(step), "job", background=False)
            sender.send([peers[0]], _grads(9), "job", background=False)

        with caplog.at_level(logging.WARNING, logger="dtrain.worker"):
            caller = threading.Thread(target=sends, daemon=True)
            caller.start()
            caller.join(60)  # returns at once unless a send blocks
            assert not caller.is_alive(), "a send to the stuck peer blocked the worker"
        assert P.decode(_receive(routers[0]), job="job").step == 9
        dropped = [r.getMessage() for r in caplog.records
                   if "not taking messages" in r.getMessage()]
        assert len(dropped) == 3 and all(stuck[0] in d for d in dropped), dropped
        assert "dropped a rangegrads of step 4" in dropped[-1]
    finally:
        sender.close()
