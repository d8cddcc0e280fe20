"""dtrain.distributed.protocol: round trips, zero copy, split frames, hostile input, real ZeroMQ sockets."""

from __future__ import annotations

import itertools

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dtrain.distributed import protocol as P
from dtrain.distributed.protocol import BufferPool, Envelope, ProtocolError, decode, encode

RNG = np.random.default_rng(0)
SHAPES = [(), (0,), (1,), (5,), (2, 3), (0, 4), (3, 0, 2), (2, 1, 3)]
JOB = "9f2c"


def sample(dtype: str, shape: tuple, rng=RNG) -> np.ndarray:
    """A random array of any allowed dtype."""
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if dtype.startswith("int"):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


def as_bytes(frames: list) -> list[bytes]:
    """Frames as independent bytes objects, as they would arrive from a socket."""
    return [bytes(f) for f in frames]


def header_of(frames: list) -> dict:
    return msgpack.unpackb(frames[0], raw=False)


def with_header(frames: list, **changes) -> list:
    """The frames with header entries replaced (a value of ... deletes the key)."""
    header = header_of(frames)
    for key, value in changes.items():
        if value is ...:
            del header[key]
        else:
            header[key] = value
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]


def grads_message(**arrays) -> Envelope:
    arrays = arrays or {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}
    fields = {"nodes": [[0, 2], [2, 3]], "counts": [64, 32], "loss": [1.25, 0.5]}
    return Envelope(P.GRADS, JOB, step=7, worker=2, fields=fields, arrays=arrays)


# ---------------------------------------------------------------------------- round trips
TYPE_FIELDS = {
    P.RANGEMAP: {"version": 1, "owners": [0, 0]},
    P.MAPACK: {"version": 1},
    P.RANGESTATE: {"version": 1, "range": 0, "kinds": []},
    P.GATHER: {"version": 1, "ranges": [0]},
    P.STEPTASK: {"version": 1, "nodes": [[0, 4]]},
    P.RANGEGRADS: {"version": 1, "node": [0, 4], "range": 0},
    P.RANGEPARAMS: {"version": 1, "range": 0},
    P.RANGEDONE: {"version": 1, "range": 0},
    P.RANGENORM: {"version": 1, "range": 0, "partial": 2.5},
    P.CLIPSCALE: {"version": 1, "coef": 0.25},
    P.HELLO: {"name": "w0", "pid": 4242, "host": "node-1", "digest": "ab" * 16},
    P.WELCOME: {"settings": {"micro_shards": 8, "lr": 0.1, "tags": ["a", None]}},
    P.READY: {"channel": "network", "note": ""},
    P.TASK: {"epoch": 1, "batch": 17, "nodes": [[0, 4], [4, 6]]},
    P.GRADS: {"nodes": [[0, 4]], "counts": [128], "loss": [3.5]},
    P.HEARTBEAT: {},
    P.STOP: {"why": "done"},
    P.ERROR: {"traceback": "Traceback (most recent call last):\n  ...\nValueError: x"},
    P.BYE: {},
}


@pytest.mark.parametrize("kind", sorted(P.TYPES))
def test_round_trip_every_type_with_every_dtype_and_shape(kind):
    arrays = {
        f"{dtype}/{i}": sample(dtype, shape)
        for dtype in P.DEFAULT_DTYPES
        for i, shape in enumerate(SHAPES)
    }
    step = 3 if kind in P.STEP_TYPES else -1
    msg = Envelope(kind, JOB, step=step, worker=1, fields=TYPE_FIELDS[kind], arrays=arrays)
    got = decode(as_bytes(encode(msg)), job=JOB)
    assert got == msg
    assert list(got.arrays) == list(arrays)
    for name, a in arrays.items():
        assert got.arrays[name].dtype == a.dtype and got.arrays[name].shape == a.shape
        assert not got.arrays[name].flags.writeable


def test_message_equality_looks_at_every_byte_and_the_order():
    a = grads_message()
    b = grads_message(w=a.arrays["w"].copy(), b=a.arrays["b"].copy())
    assert a == b
    b.arrays["w"][0, 0] = np.nextafter(np.float32(1), np.float32(2))
    assert a != b
    assert a != grads_message(b=a.arrays["b"], w=a.arrays["w"])
    assert grads_message(w=np.float32([-0.0])) != grads_message(w=np.float32([0.0]))


def test_encode_and_decode_copy_nothing():
    w = sample("float32", (64, 32))
    frames = encode(grads_message(w=w))
    assert isinstance(frames[1], memoryview) and np.shares_memory(np.asarray(frames[1]), w)
    wire = as_bytes(frames)
    got = decode(wire).arrays["w"]
    assert np.shares_memory(got, np.frombuffer(wire[1], np.uint8))
    assert not got.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        got[0, 0] = 1


def test_writable_frames_still_give_read_only_arrays():
    frames = [bytearray(f) for f in encode(grads_message())]
    got = decode(frames)
    assert not got.arrays["w"].flags.writeable
    assert np.shares_memory(got.arrays["w"], np.frombuffer(frames[1], np.uint8))


def test_non_contiguous_and_big_endian_arrays_arrive_as_native_c_arrays():
    base = sample("float64", (4, 6))
    msg = grads_message(t=base.T, s=base[:, ::2], be=base.astype(">f4"), i=np.int32(7))
    got = decode(as_bytes(encode(msg)))
    np.testing.assert_array_equal(got.arrays["t"], base.T)
    np.testing.assert_array_equal(got.arrays["s"], base[:, ::2])
    assert got.arrays["be"].dtype == np.float32
    np.testing.assert_array_equal(got.arrays["be"], base.astype(np.float32))
    assert got.arrays["i"].shape == () and got.arrays["i"] == 7


def test_encode_rejects_arrays_that_cannot_cross_the_wire():
    with pytest.raises(TypeError, match="'o'.*object"):
        encode(grads_message(o=np.array([None, 1])))
    with pytest.raises(TypeError):
        encode(Envelope(P.TASK, JOB, step=1.5))


# ---------------------------------------------------------------------------- split frames
def test_arrays_over_the_frame_limit_span_consecutive_frames(monkeypatch):
    monkeypatch.setattr(P, "MAX_FRAME_BYTES", 64)
    big = sample("float64", (10, 7))  # 560 bytes: 9 frames of <= 64 bytes
    msg = grads_message(a=np.arange(3.0), big=big, exact=sample("int32", (16,)), e=np.zeros(0))
    frames = encode(msg)
    assert [spec[3] for spec in header_of(frames)["arrays"]] == [1, 9, 1, 1]
    assert len(frames) == 1 + 12
    assert all(f.nbytes <= 64 for f in frames[1:])
    assert all(np.shares_memory(np.asarray(f), big) for f in frames[2:11])
    got = decode(as_bytes(frames))
    assert got == msg
    assert not got.arrays["big"].flags.writeable


def test_a_sender_may_ask_for_smaller_frames_than_the_limit():
    big = sample("float32", (1000,))  # 4000 bytes: 4 frames of <= 1024 bytes
    msg = grads_message(small=np.arange(3.0), big=big)
    frames = encode(msg, 1024)
    assert [spec[3] for spec in header_of(frames)["arrays"]] == [1, 4]
    assert [f.nbytes for f in frames[1:]] == [24, 1024, 1024, 1024, 928]
    assert decode(as_bytes(frames)) == msg
    assert len(encode(msg)) == 3  # by default the limit decides


@pytest.mark.parametrize("curve", [True, False])
def test_a_curve_socket_sends_arrays_in_small_frames_and_plaintext_in_one(curve):
    """CURVE encrypts a frame whole, and large frames cost about twice the CPU per byte, so
    over CURVE ``send`` cuts arrays into CURVE_FRAME_BYTES pieces; the receiver gets the same
    bits either way."""
    ctx = zmq.Context()
    try:
        receiver, sender = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        if curve:
            server_public, server_secret = zmq.curve_keypair()
            receiver.curve_secretkey, receiver.curve_publickey = server_secret, server_public
            receiver.curve_server = True
            public, secret = zmq.curve_keypair()
            sender.curve_secretkey, sender.curve_publickey = secret, public
            sender.curve_serverkey = server_public
        port = receiver.bind_to_random_port("tcp://127.0.0.1")
        sender.connect(f"tcp://127.0.0.1:{port}")
        big = sample("float32", (300_000,))  # 1.2 MB
        msg = grads_message(small=np.arange(3.0), big=big)
        P.send(sender, msg)
        assert receiver.poll(30_000), "nothing arrived"
        frames = P.recv_frames(receiver)
        sizes = [f.buffer.nbytes for f in frames[1:]]
        if curve:
            assert max(sizes) == P.CURVE_FRAME_BYTES and len(sizes) == 1 + 5
        else:
            assert sizes == [24, big.nbytes]
        assert decode(frames) == msg
    finally:
        ctx.destroy(linger=0)


def test_buffer_pool_reuses_a_buffer_once_nothing_holds_it(monkeypatch):
    monkeypatch.setattr(P, "MAX_FRAME_BYTES", 100)
    pool = BufferPool()
    wire = as_bytes(encode(grads_message(g=sample("float32", (50, 3)))))
    first = decode(wire, buffers=pool).arrays["g"]
    second = decode(wire, buffers=pool).arrays["g"]  # first still alive: a new buffer
    assert (pool.hits, pool.misses) == (0, 2)
    assert not np.shares_memory(first, second)
    address = second.__array_interface__["data"][0]
    del second
    third = decode(wire, buffers=pool).arrays["g"]
    assert (pool.hits, pool.misses) == (1, 2)
    assert third.__array_interface__["data"][0] == address
    np.testing.assert_array_equal(third, first)
    other = grads_message(g=sample("float32", (50, 3)))
    view_of_third = third[1:]
    del third
    fourth = decode(as_bytes(encode(other)), buffers=pool).arrays["g"]  # a view still holds it
    assert fourth.__array_interface__["data"][0] != address
    np.testing.assert_array_equal(view_of_third, first[1:])
    assert pool.nbytes == 3 * 600


def test_buffer_pool_keys_by_name_dtype_and_shape():
    pool = BufferPool()
    a = pool.take("g", np.float32, (100,))
    assert a.flags.writeable and a.flags.c_contiguous
    address = a.__array_interface__["data"][0]
    del a
    for key in [("g", np.float64, (100,)), ("g", np.float32, (10, 10)), ("h", np.float32, (100,))]:
        assert pool.take(*key).__array_interface__["data"][0] != address
    assert pool.take("g", "float32", [100]).__array_interface__["data"][0] == address
    assert (pool.hits, pool.misses) == (1, 4)


def test_buffer_pool_drops_least_recently_used_free_buffers_to_stay_in_budget():
    pool = BufferPool(max_bytes=1000)
    kept = pool.take("kept", np.uint8, (400,))
    pool.take("old", np.uint8, (400,))
    pool.take("new", np.uint8, (400,))  # evicts "old", the free one; "kept" is in use
    assert pool.nbytes == 800
    pool.take("new", np.uint8, (400,))
    pool.take("old", np.uint8, (400,))
    assert (pool.hits, pool.misses) == (1, 4)
    assert pool.take("big", np.uint8, (2000,)).nbytes == 2000  # over budget: lent, not kept
    assert pool.nbytes <= 1000 and kept.nbytes == 400
    pool.clear()
    assert pool.nbytes == 0


# ---------------------------------------------------------------------------- rejections
def valid_frames() -> list:
    return as_bytes(encode(grads_message()))


REJECTIONS = {
    "version": (lambda: with_header(valid_frames(), v=2), "version 2, this side speaks version 1"),
    "version-missing": (lambda: with_header(valid_frames(), v=...), "version None"),
    "job": (lambda: with_header(valid_frames(), job="other"), "job 'other', this is job '9f2c'"),
    "job-type": (lambda: with_header(valid_frames(), job=12), "job id must be a string"),
    "garbage-msgpack": (lambda: [b"\xc1\x00"] + valid_frames()[1:], "not valid msgpack"),
    "garbage-truncated": (lambda: [valid_frames()[0][:-3]], "not valid msgpack"),
    "garbage-deep": (lambda: [b"\x91" * 5000 + b"\xc0"], r"not valid msgpack \(StackError"),
    "garbage-huge-list": (lambda: [b"\xdd\xff\xff\xff\xff"], "exceeds max_array_len"),
    "garbage-ext": (lambda: [b"\xc7\x00\x05"], "extension type 5 is not part of the protocol"),
    "garbage-not-map": (lambda: [msgpack.packb([1, 2])], "msgpack list, not a map"),
    "garbage-keys": (
        lambda: with_header(valid_frames(), fields=..., extra=1),
        r"missing \['fields'\], unexpected \['extra'\]",
    ),
    "garbage-empty": (list, "no header frame"),
    "garbage-frame": (lambda: [valid_frames()[0], "text"], "frame of type str"),
    "type": (lambda: with_header(valid_frames(), type="gradz"), "unknown message type 'gradz'"),
    "step": (lambda: with_header(valid_frames(), step=-1), "grads message has step -1"),
    "step-type": (lambda: with_header(valid_frames(), step=True), "step True"),
    "worker": (lambda: with_header(valid_frames(), worker="w"), "worker id 'w'"),
    "fields": (lambda: with_header(valid_frames(), fields=[1]), "fields must be a map"),
    "arrays": (lambda: with_header(valid_frames(), arrays={}), "array table must be a list"),
    "arrays-entry": (
        lambda: with_header(valid_frames(), arrays=[["w", "float32", [2, 3]]]),
        r"array entry 0 is \['w', 'float32', \[2, 3\]\]",
    ),
    "names": (
        lambda: with_header(
            valid_frames(), arrays=[["w", "float32", [2, 3], 1], ["w", "float32", [3], 1]]
        ),
        "array name 'w' appears twice",
    ),
    "names-empty": (
        lambda: with_header(valid_frames(), arrays=[["", "float32", [2, 3], 1]]),
        "array 0 is named ''",
    ),
    "dtype": (
        lambda: with_header(
            valid_frames(), arrays=[["w", "complex64", [3], 1], ["b", "float32", [3], 1]]
        ),
        "array 'w' has dtype 'complex64'; allowed: float32",
    ),
    "shape": (
        lambda: with_header(
            valid_frames(), arrays=[["w", "float32", [2, -3], 1], ["b", "float32", [3], 1]]
        ),
        r"array 'w' has shape \[2, -3\]",
    ),
    "shape-huge": (
        lambda: with_header(valid_frames(), arrays=[["w", "uint8", [0, 2**40, 2**40], 1]]),
        "array 'w' has shape",
    ),
    "frames-missing": (lambda: valid_frames()[:-1], "array 'b' declares 1 frames, 0 frames remain"),
    "frames-extra": (
        lambda: valid_frames() + [b"x"],
        "header declares 2 array frames, the message has 3",
    ),
    "length": (
        lambda: [*valid_frames()[:1], valid_frames()[1][:-1], valid_frames()[2]],
        r"array 'w' \(float32 \(2, 3\)\) needs 24 bytes, its 1 frame\(s\) hold 23",
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_decode_rejects_with_a_reason_and_a_message_naming_the_problem(case):
    make, message = REJECTIONS[case]
    with pytest.raises(ProtocolError, match=message) as info:
        decode(make(), job=JOB)
    assert info.value.reason == case.split("-")[0]
    assert info.value.reason in P.REASONS


def test_size_limits_cover_the_whole_message_the_declared_arrays_and_the_header(monkeypatch):
    frames = valid_frames()
    total = sum(len(f) for f in frames)
    assert decode(frames, max_bytes=total) is not None
    with pytest.raises(ProtocolError, match=f"message of {total} bytes exceeds the {total - 1}"):
        decode(frames, max_bytes=total - 1)
    lying = with_header(frames, arrays=[["w", "float64", [2**40], 1]])
    with pytest.raises(ProtocolError, match="arrays up to 'w' need 8796093022208 bytes") as info:
        decode(lying)
    assert info.value.reason == "size"
    monkeypatch.setattr(P, "MAX_HEADER_BYTES", 10)
    with pytest.raises(ProtocolError, match="header of .* bytes exceeds the 10 limit") as info:
        decode(frames)
    assert info.value.reason == "size"


def test_allowed_dtypes_is_the_receivers_choice():
    frames = as_bytes(encode(grads_message(w=np.ones(2, np.float32), h=np.float16([1, 2]))))
    with pytest.raises(ProtocolError, match="dtype 'float16'") as info:
        decode(frames)
    assert info.value.reason == "dtype"
    assert decode(frames, allowed_dtypes=("float32", "float16")).arrays["h"].dtype == np.float16
    with pytest.raises(ProtocolError, match="array 'w' has dtype 'float32'"):
        decode(frames, allowed_dtypes=("float64", "float16"))


def test_task_and_grads_need_a_step_other_messages_may_omit_it():
    assert decode(as_bytes(encode(Envelope(P.HEARTBEAT, JOB)))).step == -1
    with pytest.raises(ProtocolError, match="task message has step -1") as info:
        decode(as_bytes(encode(Envelope(P.TASK, JOB))))
    assert info.value.reason == "step"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_the_first_bad_array(dtype, bad):
    good = sample(dtype, (4, 5))
    broken = sample(dtype, (4, 5))
    broken[2, 3] = bad
    P.check_finite({"a": good, "n": np.int64([1, 2])})
    arrays = {"a": good, "i": np.int32([7]), "bad": broken, "worse": broken * np.nan}
    with pytest.raises(ProtocolError, match=r"array 'bad' holds 1 non-finite value\(s\), "
                       r"the first at index \(2, 3\)") as info:  # fmt: skip
        P.check_finite(arrays)
    assert info.value.reason == "nonfinite"


def test_check_finite_accepts_finite_arrays_whose_sum_overflows():
    huge = np.full(100, np.finfo(np.float32).max, np.float32)
    P.check_finite(
        {"huge": huge, "mixed": np.float64([1e308, -1e308, 1e308, 1e308]), "z": huge[:0]}
    )
    huge[-1] = np.inf
    with pytest.raises(ProtocolError, match="'huge' holds 1 non-finite value.*index \\(99,\\)"):
        P.check_finite({"huge": huge})
    strided = sample("float64", (6, 8))[:, ::2]
    P.check_finite({"strided": strided})
    strided[5, 3] = np.nan
    with pytest.raises(ProtocolError, match=r"'strided' holds 1 .* index \(5, 3\)"):
        P.check_finite({"strided": strided})


def test_expect_arrays_names_the_array_and_expected_versus_got():
    msg = decode(valid_frames())
    P.expect_arrays(msg, {"w": ((2, 3), np.float32), "b": ([3], "float32")})
    cases = [
        ({"w": ((2, 3), "float32")}, "names", r"missing arrays \[\], unexpected arrays \['b'\]"),
        (
            {"w": ((2, 3), "float32"), "b": ((3,), "float32"), "c": ((1,), "float32")},
            "names",
            r"missing arrays \['c'\]",
        ),
        (
            {"w": ((3, 2), "float32"), "b": ((3,), "float32")},
            "shape",
            r"array 'w': expected shape \(3, 2\), got \(2, 3\)",
        ),
        (
            {"w": ((2, 3), "float32"), "b": ((3,), "float64")},
            "dtype",
            "array 'b': expected dtype float64, got float32",
        ),
    ]
    for spec, reason, message in cases:
        with pytest.raises(ProtocolError, match=message) as info:
            P.expect_arrays(msg, spec)
        assert info.value.reason == reason


# ---------------------------------------------------------------------------- properties
# 1500 + 2500 + 2000 + 4000 = 10,000 generated cases. Strategies stay small so they run fast.
_FIELD_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.binary(max_size=6)
)
FIELD_VALUES = st.recursive(
    _FIELD_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4,
)  # fmt: skip


def random_array(dtype: str, shape: tuple, seed: int) -> np.ndarray:
    """Any bit pattern (NaNs, infinities, -0.0, subnormals) of a dtype; bools stay 0 or 1."""
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(rng.bytes(count), dtype).reshape(shape).copy()


ARRAYS = st.dictionaries(
    st.text("abw.0_/é", min_size=1, max_size=3),
    st.builds(
        random_array,
        st.sampled_from(P.DEFAULT_DTYPES),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
        st.integers(0, 2**32),
    ),
    max_size=3,
)


@st.composite
def messages(draw) -> Envelope:
    kind = draw(st.sampled_from(sorted(P.TYPES)))
    low = 0 if kind in P.STEP_TYPES else -1
    return Envelope(
        type=kind,
        job=draw(st.text(max_size=6)),
        step=draw(st.integers(low, 2**63 - 1)),
        worker=draw(st.integers(-1, 2**63 - 1)),
        fields=draw(st.dictionaries(st.text(max_size=4), FIELD_VALUES, max_size=3)),
        arrays=draw(ARRAYS),
    )


def message_from_seed(seed: int) -> Envelope:
    """A random valid message built with NumPy's generator: cheaper than a strategy to draw."""
    rng = np.random.default_rng(seed)
    kind = sorted(P.TYPES)[rng.integers(len(P.TYPES))]
    arrays = {}
    for i in range(rng.integers(0, 4)):
        dtype = np.dtype(P.DEFAULT_DTYPES[rng.integers(len(P.DEFAULT_DTYPES))])
        shape = tuple(int(d) for d in rng.integers(0, 4, rng.integers(0, 3)))
        raw = np.frombuffer(rng.bytes(int(np.prod(shape)) * dtype.itemsize), np.uint8)
        arrays[f"a{i}"] = (raw & 1 if dtype.kind == "b" else raw).view(dtype).reshape(shape)
    nodes = [[int(lo), int(lo) + 1] for lo in rng.integers(0, 9, rng.integers(0, 3))]
    return Envelope(kind, f"{seed:x}", step=int(rng.integers(0, 99)), worker=-1,
                   fields={"nodes": nodes, "loss": [0.5] * len(nodes)}, arrays=arrays)  # fmt: skip


def fuzz_settings(n: int):
    return settings(
        max_examples=n,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def assert_valid(msg: Envelope, job: str | None = None) -> None:
    """A decoded message is well formed and survives another round trip unchanged."""
    assert isinstance(msg, Envelope) and msg.type in P.TYPES and isinstance(msg.job, str)
    assert job is None or msg.job == job
    assert all(isinstance(a, np.ndarray) and not a.flags.writeable for a in msg.arrays.values())
    assert all(a.dtype.name in P.DEFAULT_DTYPES for a in msg.arrays.values())
    assert decode(as_bytes(encode(msg))) == msg


def decode_or_reject(frames, **kwargs) -> None:
    """The fuzz contract: a valid Envelope or a ProtocolError with a known reason, nothing else."""
    try:
        msg = decode(frames, **kwargs)
    except ProtocolError as e:
        assert e.reason in P.REASONS and str(e)
    else:
        assert_valid(msg, kwargs.get("job"))


@fuzz_settings(1500)
@given(msg=messages(), limit=st.sampled_from([1, 7, 64, None]), pooled=st.booleans())
def test_property_round_trip(msg, limit, pooled):
    saved = P.MAX_FRAME_BYTES
    P.MAX_FRAME_BYTES = limit or saved
    try:
        frames = encode(msg)
    finally:
        P.MAX_FRAME_BYTES = saved
    got = decode(as_bytes(frames), job=msg.job, buffers=BufferPool() if pooled else None)
    assert got == msg
    assert not any(a.flags.writeable for a in got.arrays.values())


@fuzz_settings(2500)
@given(frames=st.lists(st.binary(max_size=40), max_size=5))
def test_property_random_bytes_never_crash_decode(frames):
    decode_or_reject(frames)


SPEC_VALUES = st.one_of(
    st.text(max_size=4),
    st.sampled_from(P.DEFAULT_DTYPES),
    st.lists(st.integers(-2, 2**64 - 1), max_size=4),
    st.integers(-2, 2**64 - 1),
    _FIELD_LEAVES,
)
HEADER_VALUES = _FIELD_LEAVES | st.lists(st.lists(SPEC_VALUES, max_size=5), max_size=3)


@fuzz_settings(2000)
@given(
    header=st.fixed_dictionaries(
        {"v": st.just(P.VERSION)},
        optional={k: HEADER_VALUES for k in P._HEADER_KEYS if k != "v"},
    ),
    extra=st.dictionaries(st.text(max_size=3), _FIELD_LEAVES, max_size=1),
    frames=st.lists(st.binary(max_size=24), max_size=4),
)
def test_property_random_headers_never_crash_decode(header, extra, frames):
    header = {**header, **extra}
    decode_or_reject([msgpack.packb(header, use_bin_type=True), *frames])


MUTATIONS = ["flip", "truncate-header", "drop", "extra", "resize", "header-value", "spec-value"]


# What a mutated header entry or array-table slot is replaced with.
ODD_VALUES = [None, True, -2, -1, 0, 1, 2, 7, 2**31, 2**63, 2**64 - 1, -(2**63), 0.5, float("nan"),
              "", "w", "a0", "float32", "float16", "int64", "bool", b"\x00", [], [0], [1, 2],
              [2**62, 2**62], [-1], [[0, 1]], ["a0", "uint8", [0], 1], {}, {"k": 1}, {"": []}]  # fmt: skip


@fuzz_settings(4000)
@given(
    seed=st.integers(0, 2**32),
    kind=st.sampled_from(MUTATIONS),
    where=st.integers(0, 2**16),
    job=st.sampled_from([None, "own", "other"]),
)
def test_property_mutated_messages_never_crash_decode(seed, kind, where, job):
    msg = message_from_seed(seed)
    frames = [bytearray(f) for f in encode(msg)]
    i = where % len(frames)
    value = ODD_VALUES[where % len(ODD_VALUES)]
    if kind == "flip" and frames[i]:
        frames[i][(where >> 3) % len(frames[i])] ^= 1 << (where & 7)
    elif kind == "truncate-header":
        del frames[0][where % len(frames[0]) :]
    elif kind == "drop":
        del frames[i]
    elif kind == "extra":
        frames.insert(where % (len(frames) + 1), bytearray(where % 13))
    elif kind == "resize":
        delta = where % 17 - 8
        frames[i] = frames[i][: max(0, len(frames[i]) + delta)] + bytearray(max(0, delta))
    elif kind in ("header-value", "spec-value"):
        header = msgpack.unpackb(frames[0], raw=False)
        if kind == "header-value":
            header[P._HEADER_KEYS[(where >> 5) % len(P._HEADER_KEYS)]] = value
        elif header["arrays"]:
            header["arrays"][i % len(header["arrays"])][(where >> 5) % 4] = value
        frames[0] = bytearray(msgpack.packb(header, use_bin_type=True))
    decode_or_reject(frames, job={"own": msg.job}.get(job, job))


# ---------------------------------------------------------------------------- real sockets
_inproc = itertools.count()


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.term()


@pytest.fixture(params=["inproc", "tcp"])
def pair(request, context):
    """(router, dealer) connected over inproc or tcp://127.0.0.1, linger 0, closed after."""
    router = context.socket(zmq.ROUTER)
    dealer = context.socket(zmq.DEALER)
    for s in (router, dealer):
        s.linger = 0
    dealer.setsockopt(zmq.IDENTITY, b"worker-1")
    if request.param == "tcp":
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
    else:
        addr = f"inproc://protocol-test-{next(_inproc)}"
        router.bind(addr)
        dealer.connect(addr)
    yield router, dealer
    router.close()
    dealer.close()


def test_zeromq_conversation_round_trips(pair):
    router, dealer = pair
    hello = Envelope(P.HELLO, JOB, fields=TYPE_FIELDS[P.HELLO])
    P.send(dealer, hello)
    identity, got = P.recv(router, job=JOB, timeout=5)
    assert identity == b"worker-1" and got == hello
    welcome = Envelope(P.WELCOME, JOB, worker=3, fields=TYPE_FIELDS[P.WELCOME])
    P.send(router, welcome, identity)
    assert P.recv(dealer, job=JOB, timeout=5) == (None, welcome)
    task = Envelope(P.TASK, JOB, step=4, worker=3, fields=TYPE_FIELDS[P.TASK],
                   arrays={"w": sample("float32", (300, 200)), "mask": sample("bool", (7,))})  # fmt: skip
    P.send(router, task, identity)
    _, got = P.recv(dealer, router=False, timeout=5)
    assert got == task
    grads = grads_message(w=sample("float32", (300, 200)), b=sample("float32", (200,)))
    tracker = P.send(dealer, grads, track=True)
    identity, got = P.recv(router, job=JOB, timeout=5)
    assert got == grads and identity == b"worker-1"
    tracker.wait(5)
    assert tracker.done


def test_zeromq_receive_is_zero_copy_and_split_arrays_use_the_pool(pair, monkeypatch):
    router, dealer = pair
    monkeypatch.setattr(P, "MAX_FRAME_BYTES", 100_000)
    msg = grads_message(big=sample("float64", (300, 100)), small=sample("float32", (20_000,)))
    P.send(dealer, msg)
    assert router.poll(5000)
    frames = router.recv_multipart(copy=False)
    assert len(frames) == 1 + 1 + 3 + 1  # identity, header, big in 3 frames, small in 1
    pool = BufferPool()
    got = decode(frames[1:], buffers=pool)
    assert got == msg
    assert np.shares_memory(got.arrays["small"], np.frombuffer(frames[-1].buffer, np.uint8))
    assert (pool.hits, pool.misses) == (0, 1)
    del got
    P.send(dealer, msg)
    _, again = P.recv(router, buffers=pool, timeout=5)
    assert again == msg and (pool.hits, pool.misses) == (1, 1)


def test_zeromq_errors_carry_the_sender_and_receives_time_out(pair):
    router, dealer = pair
    dealer.send_multipart([b"\xc1garbage", b"x"])
    with pytest.raises(ProtocolError, match="not valid msgpack") as info:
        P.recv(router, timeout=5)
    assert info.value.reason == "garbage" and info.value.identity == b"worker-1"
    P.send(dealer, Envelope(P.BYE, "other-job"))
    with pytest.raises(ProtocolError) as info:
        P.recv(router, job=JOB, timeout=5)
    assert info.value.reason == "job" and info.value.identity == b"worker-1"
    with pytest.raises(TimeoutError, match="no message within 0.01 s"):
        P.recv(dealer, timeout=0.01)
    with pytest.raises(zmq.Again):
        P.recv(dealer, flags=zmq.NOBLOCK)
