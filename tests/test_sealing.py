"""Sealed peer messages (``dtrain/distributed/sealing.py``): a sealed message opens to the very
frames it was made of, under its key only; any change on the way (a bit, the frames' order or
number, the seal header) makes it fail to open with a ProtocolError, never an exception of the
cipher's; and no two frames are ever sealed under the same nonce."""

import os
import sys

import numpy as np
import pytest

from dtrain.distributed import protocol as P
from dtrain.distributed import sealing
from dtrain.distributed.sealing import MAGIC, NONCE_BYTES, Sealer, new_key, sender_key

sys.path.insert(0, os.path.dirname(__file__))  # dist_jobs, range_planes


def _message():
    grads = [np.arange(1000, dtype=np.float32) * 0.25, None, np.full((3, 4), -2.5, np.float32)]
    return P.RangeGrads(7, 1, 3, (0, 2), 1, 2, grads)


def test_a_sealed_message_opens_to_the_same_message_and_hides_its_arrays():
    sealer = Sealer(new_key(), 3)
    msg = _message()
    plain = P.decode(P.pack(msg, "job"), job="job")
    sealed = sealer.seal(P.pack(msg, "job"))
    arrays = msg.grads[0].tobytes()
    assert all(arrays[:64] not in bytes(frame) for frame in sealed)  # no plaintext on the wire
    got = P.decode(sealer.open(sealed), job="job")
    assert got == plain and (got.type, got.step, got.fields) == (P.RANGEGRADS, 7, plain.fields)
    assert sorted(got.arrays) == ["g0", "g2"]
    for name, want in zip(("g0", "g2"), msg.grads[::2]):
        assert got.arrays[name].tobytes() == want.tobytes()


def test_every_frame_gets_a_fresh_nonce():
    sealer = Sealer(new_key(), 3)
    frames = P.pack(_message(), "job")
    nonces = set()
    for _ in range(50):
        head = sealer.seal(frames)[0]
        count = len(frames)
        for i in range(count):
            nonces.add(head[-NONCE_BYTES * (count - i):][:NONCE_BYTES])
    assert len(nonces) == 50 * len(frames)


def _tampered(sealed):
    flipped = bytearray(sealed[1])
    flipped[3] ^= 0x10
    header = bytearray(sealed[0])
    header[-1] ^= 1  # the last frame's nonce
    return {
        "a bit of a frame": [sealed[0], bytes(flipped), *sealed[2:]],
        "a nonce": [bytes(header), *sealed[1:]],
        "frames reordered": [sealed[0], sealed[2], sealed[1], *sealed[3:]],
        "a frame dropped": sealed[:-1],
        "a frame added": [*sealed, sealed[-1]],
        "header cut": [sealed[0][:12], *sealed[1:]],
        "not sealed at all": P.pack(_message(), "job"),
        "nothing": [],
        "a tag's worth of bytes missing": [sealed[0], sealed[1][:8], *sealed[2:]],
    }


@pytest.mark.parametrize("case", list(_tampered([b"x" * 80] * 4)))
def test_a_changed_message_fails_to_open_with_a_protocol_error(case):
    sealer = Sealer(new_key(), 3)
    sealed = sealer.seal(P.pack(_message(), "job"))
    assert len(sealed) >= 4
    with pytest.raises(P.ProtocolError) as e:
        sealer.open(_tampered(sealed)[case])
    assert e.value.reason == "sealed"


def test_frames_of_another_message_do_not_open_in_this_one():
    sealer = Sealer(new_key(), 3)
    one, two = (sealer.seal(P.pack(_message(), "job")) for _ in range(2))
    with pytest.raises(P.ProtocolError, match="failed authentication"):
        sealer.open([one[0], one[1], two[2], *one[3:]])


def test_only_the_key_it_was_sealed_under_opens_it():
    sealed = Sealer(new_key(), 3).seal(P.pack(_message(), "job"))
    with pytest.raises(P.ProtocolError, match="not sealed under this range map's key"):
        Sealer(new_key(), 3).open(sealed)
    with pytest.raises(P.ProtocolError, match="not sealed under this range map's key"):
        Sealer(new_key(), 4).open(sealed)


@pytest.mark.parametrize("key", [b"", b"k" * 31, "k" * 32, None])
def test_a_seal_key_must_be_32_bytes(key):
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer(key, 0)


@pytest.mark.parametrize("sender", [-1, 1 << 32, "1", None])
def test_a_sender_is_a_worker_id(sender):
    with pytest.raises(ValueError, match="worker id"):
        Sealer(new_key(), sender)


def test_each_sender_seals_under_a_key_of_its_own_that_every_peer_opens():
    """A sender's key is derived from the map's key and its id: another worker of the map
    opens what it sealed; the same message claimed by another sender does not open."""
    key = new_key()
    sealed = Sealer(key, 1).seal(P.pack(_message(), "job"))
    assert Sealer(key, 2).open(sealed) == Sealer(key, 1).open(sealed)
    assert sender_key(key, 1) != sender_key(key, 2) != key
    for at in (0, 4):  # the sender, then the generation, claimed otherwise
        claimed = bytearray(sealed[0])
        claimed[len(MAGIC) + at:len(MAGIC) + at + 4] = (2).to_bytes(4, "big")
        with pytest.raises(P.ProtocolError, match="failed authentication"):
            Sealer(key, 2).open([bytes(claimed), *sealed[1:]])


def test_a_sender_moves_to_a_new_key_before_it_seals_too_many_frames(monkeypatch):
    """After FRAMES_PER_KEY frames a sender's next message is sealed under its next
    generation's key; every peer still opens both generations' messages."""
    monkeypatch.setattr(sealing, "FRAMES_PER_KEY", 10)
    key = new_key()
    sender, peer = Sealer(key, 5), Sealer(key, 6)
    frames = P.pack(_message(), "job")  # 3 frames: 3 messages fit in a generation
    sealed = [sender.seal(frames) for _ in range(7)]
    generations = [int.from_bytes(s[0][len(MAGIC) + 4:len(MAGIC) + 8], "big") for s in sealed]
    assert generations == [0, 0, 0, 1, 1, 1, 2]
    assert sender_key(key, 5, 0) != sender_key(key, 5, 1)
    for s in sealed:
        assert peer.open(s) == [bytes(f) for f in frames]


@pytest.mark.parametrize("seal", [b"k" * 31, "k" * 32, 5])
def test_a_range_map_with_a_malformed_seal_key_is_rejected(seal):
    env = P.decode(P.pack(P.RangeMap(1, [("tcp://1.2.3.4:5", "")], [0], [], b"k" * 32), "j"))
    env.fields["seal"] = seal
    with pytest.raises(P.ProtocolError, match="seal must be empty or 32 bytes") as e:
        P.RangeMap.check(env)
    assert "k" * 31 not in str(e.value)  # a key's bytes never reach a log
    env.fields["seal"] = b"s" * 32
    assert P.RangeMap.check(env).seal == b"s" * 32


def test_a_sealing_worker_opens_only_sealed_peer_messages_and_needs_a_map_key(caplog):
    """A worker whose peers seal (keys on, peer_cipher aes-gcm): its mailbox carries no ZeroMQ
    mechanism; a peer message in the clear is rejected as ``sealed``, the same message sealed
    under the map's key by another worker is taken; a range map without a key is refused."""
    import logging

    import zmq

    import dist_jobs
    from dtrain.distributed.security import ephemeral_pair
    from range_planes import owning_plane

    ctx = zmq.Context()
    key = new_key()
    _, keys = ephemeral_pair()
    plane, model, _, _ = owning_plane(ctx, dist_jobs.MomentumGroups(), lambda msg: None,
                                      keys=keys, seal=key)
    peer = ctx.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    try:
        assert plane.mailbox.getsockopt(zmq.MECHANISM) == zmq.NULL and plane.auth is None
        peer.connect(plane.address)
        grads = [np.zeros(P.piece_spec(plane.schema, p)[0], np.float32)
                 for p in plane.schema.ranges.ranges[0]]
        msg = P.RangeGrads(0, 1, 1, (0, 1), 0, 1, grads)
        with caplog.at_level(logging.WARNING, logger="dtrain.worker"):
            for frames in (P.pack(msg, "job"), Sealer(key, 1).seal(P.pack(msg, "job"))):
                peer.send_multipart(frames)
                assert plane.mailbox.poll(10_000), "the message never arrived"
                plane.poll()
        rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
        assert len(rejected) == 1 and "(sealed)" in rejected[0], rejected
        assert len(plane.reducer.early) == 1  # the sealed one, waiting for its step's task
        with pytest.raises(P.ProtocolError, match="carries no seal key"):
            plane.use_map(P.RangeMap(2, [(plane.address, keys.public.decode())],
                                     [0] * len(plane.schema.ranges)))
    finally:
        peer.close(0)
        plane.close()
        ctx.term()


def test_the_wire_model_counts_a_sealed_message_as_sent():
    """bench/wire_bytes.py's sealed frames are the sizes a Sealer really produces."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))
    import wire_bytes

    frames = P.pack(_message(), "job")
    sealed = Sealer(new_key(), 1).seal(frames)
    assert wire_bytes.sealed_frames(tuple(memoryview(f).nbytes for f in frames)) == \
        tuple(len(f) for f in sealed)
