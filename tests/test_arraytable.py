"""The array-table codec on its own: both layouts round trip, zero copy, every bad entry named."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from io_helpers import assert_same

from dtrain.io import arraytable as T
from dtrain.io.arraytable import TableError

RNG = np.random.default_rng(0)
ARRAYS = {
    "float32": RNG.standard_normal((2, 3, 4)).astype(np.float32),
    "transposed": np.arange(12.0).reshape(3, 4).T,
    "empty": np.zeros((0, 3), dtype=np.int16),
    "zero_d": np.array(3.5, dtype=np.float32),
    "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
    "bool": RNG.random((5,)) > 0.5,
    "uint8": np.arange(200, dtype=np.uint8),
}
WIRE = T.named_dtypes(("float32", "float64", "int16", "bool", "uint8"))


def packed_blob(table: list, buffers: list, size: int) -> bytearray:
    blob = bytearray(size)
    for (_, _, offset, nbytes), buffer in zip(table, buffers):
        blob[offset:offset + nbytes] = buffer
    return blob


def through_msgpack(table: list) -> list:
    return msgpack.unpackb(msgpack.packb(table))


# ---------------------------------------------------------------------------- round trips
def test_packed_round_trip_gives_owned_copies_or_read_only_views():
    arrays = list(ARRAYS.values())
    table, buffers, size = T.encode_packed(arrays)
    assert [entry[2] % T.ALIGN for entry in table] == [0] * len(arrays)
    assert [entry[0] for entry in table][:5] == ["<f4", "<f8", "<i2", "<f4", ">f8"]
    blob = packed_blob(table, buffers, size)
    for copy in (True, False):
        out = T.decode_packed(through_msgpack(table), blob, copy=copy)
        for a, b in zip(arrays, out):
            assert_same(a, b)
            assert b.flags.writeable == copy
            assert np.shares_memory(b, np.frombuffer(blob, np.uint8)) == (not copy and b.size > 0)
    shifted = T.decode_packed(table, bytes(10) + bytes(blob), start=10)
    assert_same(arrays[0], shifted[0])


@pytest.mark.parametrize("limit", [1 << 20, 64, 7])
def test_frames_round_trip_is_little_endian_and_read_only(limit):
    table, payloads = T.encode_frames(ARRAYS, limit)
    assert all(p.nbytes <= limit for p in payloads)
    assert table[0] == ["float32", "float32", [2, 3, 4], -(-96 // limit)]
    wire = [bytes(p) for p in payloads]
    out = T.decode_frames(through_msgpack(table), [memoryview(w) for w in wire], WIRE)
    assert list(out) == list(ARRAYS)
    for name, a in ARRAYS.items():
        np.testing.assert_array_equal(out[name], a)
        assert out[name].shape == a.shape and not out[name].flags.writeable
    assert out["big_endian"].dtype == np.dtype("<f8")


def test_frames_are_zero_copy_both_ways():
    w = RNG.standard_normal((64, 32)).astype(np.float32)
    table, payloads = T.encode_frames({"w": w}, 1 << 20)
    assert isinstance(payloads[0], memoryview) and np.shares_memory(np.asarray(payloads[0]), w)
    frame = bytearray(payloads[0])  # what a receiver holds: its own, writable buffer
    got = T.decode_frames(table, [memoryview(frame)], WIRE)["w"]
    assert np.shares_memory(got, np.frombuffer(frame, np.uint8))
    assert not got.flags.writeable
    np.testing.assert_array_equal(got, w)


def test_split_frames_are_joined_into_the_buffer_the_caller_allocates():
    big = np.arange(40.0)
    table, payloads = T.encode_frames({"big": big}, 64)
    assert table == [["big", "float64", [40], 5]]
    given = []

    def allocate(name, dtype, shape):
        given.append((name, dtype, shape))
        return np.empty(shape, dtype)

    got = T.decode_frames(table, payloads, WIRE, allocate=allocate)["big"]
    assert given == [("big", np.dtype("<f8"), [40])]
    np.testing.assert_array_equal(got, big)
    assert not got.flags.writeable and not np.shares_memory(got, big)


def test_aligned_offsets_place_runs_on_align_boundaries():
    assert T.aligned_offsets([8, 0, 100, 1]) == ([0, 64, 64, 192], 193)
    assert T.aligned_offsets([]) == ([], 0)


def test_unstorable_dtypes_are_refused_when_encoding_naming_the_array():
    with pytest.raises(TypeError, match="array 1 has dtype object"):
        T.encode_packed([np.zeros(1), np.array([None])])
    with pytest.raises(TypeError, match="array 'o' has dtype <U1"):
        T.encode_frames({"o": np.array(["x"])}, 64)


# ---------------------------------------------------------------------------- rejections
F32 = np.zeros(2, np.float32).tobytes()

FRAMES_REJECTIONS = [
    ({"a": 1}, [], "arrays", "array table must be a list, got {'a': 1}"),
    ([["w", "float32", [2]]], [F32], "arrays",
     r"array entry 0 is \['w', 'float32', \[2\]\], not \[name, dtype, shape, nframes\]"),
    ([["", "float32", [2], 1]], [F32], "names", "array 0 is named ''; need a non-empty str"),
    ([[7, "float32", [2], 1]], [F32], "names", "array 0 is named 7"),
    ([["w", "float32", [2], 1], ["w", "float32", [2], 1]], [F32, F32], "names",
     "array name 'w' appears twice"),
    ([["w", "complex64", [2], 1]], [F32], "dtype",
     "array 'w' has dtype 'complex64'; allowed: float32, float64"),
    ([["w", "<f4", [2], 1]], [F32], "dtype", "array 'w' has dtype '<f4'"),
    ([["w", "float32", [2, -1], 1]], [F32], "shape", r"array 'w' has shape \[2, -1\]"),
    ([["w", "float32", [2.0], 1]], [F32], "shape", r"array 'w' has shape \[2.0\]"),
    ([["w", "float32", [1] * 65, 1]], [F32], "shape", "need at most 64 non-negative int dims"),
    ([["w", "uint8", [0, 2**40, 2**40], 1]], [b""], "shape", "array 'w' has shape"),
    ([["w", "float32", [2], 0]], [F32], "frames", "array 'w' declares 0 frames, 1 frames remain"),
    ([["w", "float32", [2], 2]], [F32], "frames", "array 'w' declares 2 frames, 1 frames remain"),
    ([["w", "float32", [2], 1]], [F32, F32], "frames",
     "header declares 1 array frames, the message has 2"),
    ([["w", "float32", [3], 1]], [F32], "length",
     r"array 'w' \(float32 \(3,\)\) needs 12 bytes, its 1 frame\(s\) hold 8"),
]


@pytest.mark.parametrize("table, payloads, reason, message", FRAMES_REJECTIONS)
def test_frames_reject_each_malformed_entry_naming_it(table, payloads, reason, message):
    with pytest.raises(TableError, match=message) as info:
        T.decode_frames(table, [memoryview(p) for p in payloads], WIRE)
    assert info.value.reason == reason and reason in T.REASONS


def test_frames_limits_are_the_readers():
    table, payloads = T.encode_frames({"a": np.zeros(4), "b": np.zeros(4)}, 1 << 20)
    assert len(T.decode_frames(table, payloads, WIRE, max_bytes=64)) == 2
    with pytest.raises(TableError, match="arrays up to 'b' need 64 bytes, over the 63 limit") \
            as info:
        T.decode_frames(table, payloads, WIRE, max_bytes=63)
    assert info.value.reason == "size"
    deep = [["d", "float32", [1] * 4, 1]]
    with pytest.raises(TableError, match="need at most 3 non-negative int dims"):
        T.decode_frames(deep, [memoryview(F32[:4])], WIRE, max_ndim=3)
    assert T.decode_frames(deep, [memoryview(F32[:4])], WIRE)["d"].ndim == 4


PACKED_REJECTIONS = [
    ({"a": 1}, 0, "arrays", "array table must be a list"),
    ([["<f4", [2], 0]], 8, "arrays",
     r"array entry 0 is \['<f4', \[2\], 0\], not \[dtype, shape, offset, nbytes\]"),
    ([["<U4", [1], 0, 16]], 16, "dtype", "array 0 has dtype '<U4'; allowed: numeric or bool"),
    ([["|O8", [1], 0, 8]], 16, "dtype", r"array 0 has dtype '\|O8'"),
    ([["float32", [1], 0, 4]], 16, "dtype", "array 0 has dtype 'float32'"),
    ([["<f4", [2.0], 0, 8]], 8, "shape", r"array 0 has shape \[2.0\]"),
    ([["<f4", [1] * 65, 0, 4]], 8, "shape", "need at most 64 non-negative int dims"),
    ([["<f4", [2], 0, 8], ["<f4", [2], 4, 8]], 64, "offset",
     "array 1 has offset 4; need an int >= 8, where the previous array ends"),
    ([["<f4", [2], -1, 8]], 64, "offset", "array 0 has offset -1"),
    ([["<f4", [2], 0, 4]], 8, "length",
     r"array 0 \(float32 \(2,\)\) needs 8 bytes, its entry declares 4"),
    ([["<f4", [2], 0, True]], 8, "length", "its entry declares True"),
    ([["<f4", [2], 0, 8]], 7, "length", "array 0 extends past the end of the payload"),
]


@pytest.mark.parametrize("table, size, reason, message", PACKED_REJECTIONS)
def test_packed_rejects_each_malformed_entry_naming_it(table, size, reason, message):
    with pytest.raises(TableError, match=message) as info:
        T.decode_packed(table, bytes(size))
    assert info.value.reason == reason and reason in T.REASONS


@pytest.mark.parametrize("shape", [[-1], [2.5], "2", [True], [2**31, 2**31, 2**31]])
def test_both_layouts_check_a_shape_the_same_way(shape):
    errors = []
    for decode in (lambda: T.decode_frames([["x", "float32", shape, 1]], [b""], WIRE),
                   lambda: T.decode_packed([["<f4", shape, 0, 0]], b"")):
        with pytest.raises(TableError) as info:
            decode()
        errors.append((info.value.reason, str(info.value).split(" has ", 1)[1]))
    assert errors[0] == errors[1] and errors[0][0] == "shape"


def test_the_files_dtype_spelling_refuses_anything_but_numbers():
    assert T.parse_dtype(">i2") == np.dtype(">i2") and T.dtype_name(np.dtype(">i2")) == ">i2"
    for bad in ("|O8", "<U4", "float32", 4, "<V8"):
        with pytest.raises(TableError, match="invalid dtype"):
            T.parse_dtype(bad)
    with pytest.raises(TypeError, match="numeric or bool only"):
        T.dtype_name(np.dtype([("a", "<f4")]))
