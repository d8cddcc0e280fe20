"""A worker's peer receiver (``workers/peer_receiver.py``): every message in the mailbox comes
out of ``take`` opened, in order, or as the ProtocolError it raised while opening (whatever the
opener raised); thousands queued while the main thread is busy all come out; closing stops
the thread and closes the mailbox."""

import logging

import pytest
import zmq

from dtrain.distributed import protocol as P
from dtrain.workers.peer_receiver import PeerReceiver


def _opener(frames):
    """Upper-cases a message; 'bad' fails to open, 'boom' raises what a cipher might."""
    data = frames[0].bytes
    if data == b"bad":
        raise P.ProtocolError("sealed", "frame 0 failed authentication")
    if data == b"boom":
        raise RuntimeError("the cipher fell over")
    return [data.upper(), *frames[1:]]


@pytest.fixture
def receiver():
    ctx = zmq.Context()
    mailbox = ctx.socket(zmq.ROUTER)
    mailbox.setsockopt(zmq.LINGER, 0)
    mailbox.bind("tcp://127.0.0.1:0")
    peer = ctx.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.connect(mailbox.getsockopt(zmq.LAST_ENDPOINT).decode())
    got = PeerReceiver(ctx, mailbox, _opener)
    try:
        yield got, peer
    finally:
        got.close()
        peer.close(0)
        ctx.term()


def _take(receiver):
    assert receiver.inbox.poll(10_000), "nothing came out of the receiver"
    return receiver.take()


def test_messages_come_out_opened_and_in_order(receiver):
    got, peer = receiver
    assert got.take() is None and got.mechanism == zmq.NULL
    for i in range(3):
        peer.send_multipart([b"msg%d" % i, b"tail"])
    for i in range(3):
        assert [bytes(f) for f in _take(got)] == [b"MSG%d" % i, b"tail"]


@pytest.mark.parametrize("payload,reason,text", [(b"bad", "sealed", "failed authentication"),
                                                 (b"boom", "sealed", "the cipher fell over")])
def test_what_fails_to_open_comes_out_as_a_rejection_and_the_next_still_opens(
        receiver, payload, reason, text):
    got, peer = receiver
    peer.send_multipart([payload])
    peer.send_multipart([b"good"])
    assert got.inbox.poll(10_000)
    with pytest.raises(P.ProtocolError, match=text) as e:
        got.take()
    assert e.value.reason == reason
    assert [bytes(f) for f in _take(got)] == [b"GOOD"]


def test_thousands_waiting_all_come_out_in_order(receiver):
    got, peer = receiver
    count = 3000  # more than ZeroMQ's default high-water mark of 1000
    for i in range(count):
        peer.send_multipart([b"m", b"%d" % i])
    seen = [int(bytes(_take(got)[1])) for _ in range(count)]
    assert seen == list(range(count))


def test_close_stops_the_thread_and_the_mailbox(caplog):
    ctx = zmq.Context()
    mailbox = ctx.socket(zmq.ROUTER)
    mailbox.bind("tcp://127.0.0.1:0")
    got = PeerReceiver(ctx, mailbox, _opener)
    with caplog.at_level(logging.WARNING):
        got.close()
    assert not got._thread.is_alive() and mailbox.closed and got.inbox.closed
    assert not caplog.records
    ctx.term()  # returns: every socket is closed
