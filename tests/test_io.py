"""dtrain.save/load: exact round trips, damaged files, no pickle (array tables: test_arraytable)."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import re
import struct
import time

import msgpack
import numpy as np
import pytest
from io_helpers import assert_same

import dtrain
from dtrain import nn
from dtrain.io import CheckpointError, container

RNG = np.random.default_rng(0)


def roundtrip(obj, tmp_path):
    path = tmp_path / "obj.ckpt"
    dtrain.save(obj, path)
    return dtrain.load(path)


# ------------------------------------------------------------------------------ round trips
ARRAYS = {
    "bool": RNG.random((3, 4)) > 0.5,
    "int8": RNG.integers(-128, 127, (5,), dtype=np.int8),
    "uint16": RNG.integers(0, 60000, (2, 3), dtype=np.uint16),
    "int32": RNG.integers(-(2**31), 2**31 - 1, (7,), dtype=np.int32),
    "int64": np.array([-(2**63), 2**63 - 1, 0], dtype=np.int64),
    "uint64": np.array([2**64 - 1, 0], dtype=np.uint64),
    "float16": RNG.standard_normal((4, 4)).astype(np.float16),
    "float32": RNG.standard_normal((2, 3, 4)).astype(np.float32),
    "float64": np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324, 1.0]),
    "complex64": (RNG.standard_normal(3) + 1j * RNG.standard_normal(3)).astype(np.complex64),
    "complex128": RNG.standard_normal(3) + 1j * RNG.standard_normal(3),
    "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
    "zero_d": np.array(3.5, dtype=np.float32),
    "zero_d_int": np.array(7),
    "empty": np.zeros((0, 3), dtype=np.int16),
    "empty_3d": np.ones((2, 0, 4), dtype=np.float64),
    "transposed": np.arange(12.0).reshape(3, 4).T,
    "strided": np.arange(40, dtype=np.int32).reshape(5, 8)[::2, 1::3],
    "fortran": np.asfortranarray(RNG.standard_normal((3, 5))),
    "reversed": np.arange(10.0)[::-1],
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_array_roundtrip_is_exact_writable_and_owned(name, tmp_path):
    a = ARRAYS[name]
    b = roundtrip(a, tmp_path)
    assert_same(a, b)
    assert b.flags.writeable and b.flags.c_contiguous
    b[...] = 0  # resumable training writes into loaded arrays
    assert_same(roundtrip(a, tmp_path), a)


def test_scalars_and_containers_roundtrip(tmp_path):
    obj = {
        "none": None, "true": True, "false": False, "zero": 0, "neg": -1,
        "i64max": 2**63 - 1, "i64min": -(2**63), "u64max": 2**64 - 1,
        "big": 2**64, "bigneg": -(2**200) + 12345, "float": 0.1, "negzero": -0.0,
        "nan": float("nan"), "inf": float("inf"), "complex": 1.5 - 2j,
        "str": "héllo ✓", "empty_str": "", "bytes": b"\x00\xff", "empty_bytes": b"",
        "list": [1, [2, [3, []]]], "tuple": (1, (2.0, "x"), ()), "list_of_tuples": [(1, 2)],
        "np_scalars": [np.float32(1.25), np.int64(-3), np.bool_(True), np.uint8(200)],
        "dtypes": [np.dtype(np.float32), np.dtype(">i2"), np.float64, np.int8],
    }
    out = roundtrip(obj, tmp_path)
    assert_same(obj, out)
    assert type(out["tuple"][2]) is tuple and type(out["list"]) is list


def test_dict_key_types_and_order_are_kept(tmp_path):
    obj = {3: "a", "b": 1, 1: {"z": 0, "a": 1}, -7: None, "0": 2, 0: 3, 2**70: "big"}
    out = roundtrip(obj, tmp_path)
    assert_same(obj, out)
    assert out["0"] == 2 and out[0] == 3
    assert_same(roundtrip({False: 0, "x": {True: 1}}, tmp_path), {False: 0, "x": {True: 1}})


def test_tensors_roundtrip_as_tensors_with_requires_grad(tmp_path):
    w = dtrain.randn(3, 4, requires_grad=True)
    frozen = dtrain.tensor([1.0, 2.0], dtype=dtrain.float64)
    ints = dtrain.tensor([1, 2, 3])
    param = nn.Parameter(dtrain.randn(2, 2))
    nonleaf = w * 2
    out = roundtrip({"w": w, "frozen": frozen, "ints": ints, "param": param,
                     "nonleaf": nonleaf, "scalar": dtrain.tensor(2.0)}, tmp_path)
    assert_same(w, out["w"])
    assert_same(frozen, out["frozen"])
    assert_same(ints, out["ints"])
    assert_same(nonleaf, out["nonleaf"])
    assert out["scalar"].shape == () and out["scalar"].item() == 2.0
    assert type(out["w"]) is dtrain.Tensor and type(out["param"]) is nn.Parameter
    assert out["param"].requires_grad and np.array_equal(out["param"]._data, param._data)
    assert out["nonleaf"].is_leaf and out["nonleaf"].grad_fn is None and out["w"].grad is None
    out["w"].sum().backward()  # loaded tensors are usable leaves
    assert np.array_equal(out["w"].grad._data, np.ones((3, 4), np.float32))


def test_shared_objects_stay_shared(tmp_path):
    a = np.arange(4.0)
    t = dtrain.ones(2, requires_grad=True)
    out = roundtrip({"x": a, "y": [a], "t1": t, "t2": (t,)}, tmp_path)
    assert out["x"] is out["y"][0]
    assert out["t1"] is out["t2"][0]


def optimizer_like_state(n_params: int) -> dict:
    state = {i: {"step": dtrain.tensor(float(10 + i)),
                 "exp_avg": RNG.standard_normal((i + 1, 3)).astype(np.float32),
                 "exp_avg_sq": RNG.random((i + 1, 3)).astype(np.float32)}
             for i in range(n_params)}
    groups = [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
               "amsgrad": False, "maximize": False, "foreach": None,
               "params": list(range(n_params // 2))},
              {"lr": 0.1, "betas": (0.5, 0.9), "eps": 1e-6, "weight_decay": 1e-2,
               "amsgrad": True, "maximize": False, "foreach": None,
               "params": list(range(n_params // 2, n_params))}]
    return {"state": state, "param_groups": groups}


def test_optimizer_state_dict_roundtrip(tmp_path):
    sd = optimizer_like_state(300)
    out = roundtrip(sd, tmp_path)
    assert_same(sd, out)
    assert list(out["state"]) == list(range(300))


def test_file_objects_and_path_types(tmp_path):
    obj = {"a": np.arange(3), 1: (2, 3)}
    buffer = io.BytesIO()
    dtrain.save(obj, buffer)
    buffer.seek(0)
    assert_same(obj, dtrain.load(buffer))
    for path in (str(tmp_path / "s.ckpt"), tmp_path / "p.ckpt", os.fsencode(tmp_path / "b.ckpt")):
        dtrain.save(obj, path)
        assert_same(obj, dtrain.load(path))
    with open(tmp_path / "f.ckpt", "wb") as f:
        dtrain.save(obj, f)
    with open(tmp_path / "f.ckpt", "rb") as f:
        assert_same(obj, dtrain.load(f))
    with pytest.raises(TypeError, match="path or a writable"):
        dtrain.save(obj, 3)
    with pytest.raises(TypeError, match="path or a readable"):
        dtrain.load(3)


def test_saving_overwrites_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ckpt"
    dtrain.save({"v": 1}, path)
    dtrain.save({"v": 2}, path)
    assert dtrain.load(path) == {"v": 2}
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_state_dict_roundtrip_restores_the_model(tmp_path):
    dtrain.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    fresh = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    fresh.load_state_dict(roundtrip(model.state_dict(), tmp_path))
    x = dtrain.randn(5, 4)
    assert np.array_equal(model(x)._data, fresh(x)._data)


def test_loaded_state_dict_with_wrong_shape_gets_the_modules_error(tmp_path):
    sd = roundtrip(nn.Linear(4, 3).state_dict(), tmp_path)
    with pytest.raises(RuntimeError, match=r"size mismatch for weight: .*\(3, 4\).*\(2, 4\)"):
        nn.Linear(4, 2).load_state_dict(sd)


def test_save_40mb_state_dict_is_fast(tmp_path):
    sd = {f"layer{i}.weight": np.full((1000, 1000), i, np.float32) for i in range(10)}
    path = tmp_path / "big.ckpt"
    start = time.perf_counter()
    dtrain.save(sd, path)
    out = dtrain.load(path)
    elapsed = time.perf_counter() - start
    assert_same(sd, out)
    # ~0.15 s measured on a shared 2-core machine; a per-element loop would take many seconds
    assert elapsed < 3.0, f"save+load of 40 MB took {elapsed:.2f} s"


# ---------------------------------------------------------------------------- refused values
@pytest.mark.parametrize("obj, where, what", [
    ({"a": [1, object()]}, r"obj\['a'\]\[1\]", "builtins.object"),
    ({"f": lambda x: x}, r"obj\['f'\]", "function"),
    ([{1, 2}], r"obj\[0\]", "builtins.set"),
    ({0: {"x": np.array(["a", "b"])}}, r"obj\[0\]\['x'\]", "dtype <U1"),
    ({"o": np.array([None], dtype=object)}, r"obj\['o'\]", "dtype object"),
    ({1.5: 0}, "obj", r"dict key 1.5 of type float"),
    ({(1, 2): 0}, "obj", "dict key .* of type tuple"),
])
def test_unsupported_values_raise_type_error_naming_where(obj, where, what):
    with pytest.raises(TypeError, match=f"cannot save {where}: .*{what}"):
        dtrain.save(obj, io.BytesIO())


def test_reference_cycle_is_refused():
    cyclic: list = [1]
    cyclic.append(cyclic)
    with pytest.raises(TypeError, match="reference cycle"):
        dtrain.save({"c": cyclic}, io.BytesIO())


def test_nesting_limits_are_checked_when_saving(tmp_path):
    deep = ()  # 31 tuples: the deepest nesting a file may hold
    for _ in range(30):
        deep = (deep,)
    assert_same(roundtrip(deep, tmp_path), deep)
    with pytest.raises(TypeError, match=r"cannot save obj(\[0\]){31}: tuples nested more than 31"):
        dtrain.save((deep,), io.BytesIO())
    deep_list: list = []
    for _ in range(5000):
        deep_list = [deep_list]
    with pytest.raises(TypeError, match="cannot save obj"):
        dtrain.save(deep_list, io.BytesIO())
    with pytest.raises(TypeError, match="cannot save obj: UnicodeEncodeError"):
        dtrain.save({"s": "\ud800"}, io.BytesIO())


def test_failed_save_keeps_old_file_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    dtrain.save({"w": np.arange(5)}, path)
    old = path.read_bytes()
    with pytest.raises(TypeError):
        dtrain.save({"w": np.arange(5), "bad": object()}, path)
    assert path.read_bytes() == old

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)  # the temp file is fully written by then
    with pytest.raises(OSError, match="disk full"):
        dtrain.save({"w": np.zeros(10**6)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert_same(dtrain.load(path), {"w": np.arange(5)})
    assert os.listdir(tmp_path) == ["ckpt"]


# ----------------------------------------------------------------------------- damaged files
def saved_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    dtrain.save(obj, buffer)
    return buffer.getvalue()


SAMPLE = {"w": np.arange(100, dtype=np.float32), "step": 3}


def load_bytes(data: bytes, tmp_path, name="damaged.ckpt"):
    path = tmp_path / name
    path.write_bytes(data)
    return dtrain.load(path)


@pytest.mark.parametrize("offset", [64, 100, -1, -200])
def test_flipped_payload_byte_is_a_checksum_error(offset, tmp_path):
    data = bytearray(saved_bytes(SAMPLE))
    data[offset] ^= 0x01
    with pytest.raises(CheckpointError, match=r"damaged.ckpt: checksum mismatch.*corrupted"):
        load_bytes(bytes(data), tmp_path)


@pytest.mark.parametrize("offset", [24, 40, 58])  # digest and reserved bytes of the header
def test_flipped_header_byte_is_detected(offset, tmp_path):
    data = bytearray(saved_bytes(SAMPLE))
    data[offset] ^= 0x80
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_bytes(bytes(data), tmp_path)


@pytest.mark.parametrize("keep, message", [
    (0, "empty file"),
    (5, "truncated inside the header"),
    (40, "truncated inside the header"),
    (64, "truncated: the header declares"),
    (300, "truncated: the header declares"),
    (-1, "truncated: the header declares"),
])
def test_truncated_file_is_reported(keep, message, tmp_path):
    data = saved_bytes(SAMPLE)
    with pytest.raises(CheckpointError, match=message):
        load_bytes(data[:keep], tmp_path)
    with pytest.raises(CheckpointError, match=message):  # the same through a file object
        dtrain.load(io.BytesIO(data[:keep]))


def test_trailing_bytes_are_reported(tmp_path):
    with pytest.raises(CheckpointError, match="unexpected bytes after the payload"):
        load_bytes(saved_bytes(SAMPLE) + b"\x00", tmp_path)


def test_non_dtrain_files_are_refused(tmp_path):
    np.save(tmp_path / "array.npy", np.arange(3))
    with pytest.raises(CheckpointError, match=r"array.npy: not a dtrain checkpoint \(wrong magic"):
        dtrain.load(tmp_path / "array.npy")
    with pytest.raises(CheckpointError, match="not a dtrain checkpoint"):
        load_bytes(b"\x80\x04\x95" + bytes(100), tmp_path)  # a pickle header is just foreign data
    with pytest.raises(CheckpointError, match="not a dtrain checkpoint"):
        load_bytes(b"hello", tmp_path)
    with pytest.raises(FileNotFoundError):
        dtrain.load(tmp_path / "missing.ckpt")


def test_newer_format_version_is_refused(tmp_path):
    data = bytearray(saved_bytes(SAMPLE))
    struct.pack_into("<I", data, 8, 2)
    with pytest.raises(CheckpointError, match="unsupported checkpoint format version 2 "
                                              r"\(this dtrain reads version 1\)"):
        load_bytes(bytes(data), tmp_path)
    assert issubclass(CheckpointError, ValueError)


def craft(table: list, tree: bytes, data: bytes = b"") -> bytes:
    """A file with a valid header and digest around an arbitrary payload (the documented layout)."""
    table_bytes = msgpack.packb(table)
    body = struct.pack("<QQ", len(table_bytes), len(tree)) + table_bytes + tree
    payload = body + bytes(-len(body) % 64) + data
    header = struct.pack("<8sIIQ32s8x", b"DTRAINCK", 1, 0, len(payload), bytes(32))
    digest = hashlib.blake2b(header + payload, digest_size=32).digest()
    return header[:24] + digest + header[56:] + payload


def test_crafted_valid_file_loads(tmp_path):
    """The layout documented in dtrain.io.container is the real one."""
    tree = msgpack.packb({"a": msgpack.ExtType(1, msgpack.packb(0)), "n": 1})
    out = load_bytes(craft([["<i4", [2], 0, 8]], tree, np.array([5, 6], np.int32).tobytes()),
                     tmp_path)
    assert_same(out, {"a": np.array([5, 6], np.int32), "n": 1})


def test_save_writes_the_documented_layout_byte_for_byte():
    """The array table is shared with the wire, but the file's bytes are the same as ever."""
    tree = msgpack.packb({"a": msgpack.ExtType(1, msgpack.packb(0)),
                          "b": msgpack.ExtType(1, msgpack.packb(1))})
    data = np.array([5, 6], ">i4").tobytes() + bytes(56) + np.float64([1.5]).tobytes()
    table = [[">i4", [2], 0, 8], ["<f8", [1], 64, 8]]
    assert saved_bytes({"a": np.array([5, 6], ">i4"), "b": np.float64([1.5])}) == \
        craft(table, tree, data)


@pytest.mark.parametrize("table, tree, message", [
    ([], msgpack.packb({"x": msgpack.ExtType(42, b"")}), "unknown extension type 42"),
    ([], msgpack.packb([msgpack.Timestamp(1, 0)]), "unknown extension type -1"),
    ([], msgpack.packb({"t": msgpack.Timestamp(1, 0)}), "unknown extension type -1"),
    ([], msgpack.packb(msgpack.ExtType(1, msgpack.packb(0))), "not in the array table"),
    ([["|O8", [1], 0, 8]], msgpack.packb(None), r"array 0 has dtype '\|O8'; allowed: numeric"),
    ([["<f8", [2], 0, 8]], msgpack.packb(None), r"array 0 \(float64 \(2,\)\) needs 16 bytes, "
                                                "its entry declares 8"),
    ([["<f8", [1000], 0, 8000]], msgpack.packb(None), "past the end of the payload"),
    ([["<f8", [-1], 0, 8]], msgpack.packb(None), r"array 0 has shape \[-1\]"),
    ([["<i8", [1], 0, 8]], msgpack.packb(msgpack.ExtType(2, msgpack.packb([0, 0, True,
                                                                          "tensor"]))),
     "marked requires_grad"),
    ([], msgpack.packb(msgpack.ExtType(3, msgpack.packb(5))), "tuple payload is not a list"),
    ([], msgpack.packb(msgpack.ExtType(5, msgpack.packb(["<f8", b"1"]))), "with 1 bytes"),
    ([], b"\x81\x01", "incomplete input"),  # a map whose value is missing
    ([], b"\xc1", "FormatError"),  # a byte msgpack never uses
    ([], b"\x91" * 5000 + b"\xc0", "StackError"),  # lists nested 5000 deep
    ([], b"\xc0\xc0", "ExtraData"),
    ([], msgpack.packb({"a": 1, "a ": 2}).replace(b"a ", b"a\xa0"), "UnicodeDecodeError"),
])
def test_malicious_or_malformed_payloads_are_refused(table, tree, message, tmp_path):
    data = np.zeros(1, np.int64).tobytes() if table else b""
    with pytest.raises(CheckpointError, match=f"malformed checkpoint payload: .*{message}"):
        load_bytes(craft(table, tree, data), tmp_path)


def test_deeply_nested_tuples_are_refused_cleanly(tmp_path):
    nested = msgpack.packb([])
    for _ in range(3000):
        nested = msgpack.packb(msgpack.ExtType(3, b"\x91" + nested))  # a 1-tuple around the last
    with pytest.raises(CheckpointError, match="nested more than 32 extension levels"):
        load_bytes(craft([], nested), tmp_path)
    nested = msgpack.packb([])
    for _ in range(20):
        nested = msgpack.packb(msgpack.ExtType(3, b"\x91" + nested))
    assert str(load_bytes(craft([], nested), tmp_path)) == "(" * 20 + "[]" + ",)" * 20


# ------------------------------------------------------------------- killed writers' leftovers
def test_checkpoint_directory_is_cleaned_of_a_killed_writers_temporaries(tmp_path):
    from dtrain.distributed.checkpoint import checkpoint_path, write_checkpoint

    state = {"model": {"w": np.arange(3.0)}, "optimizer": {}, "step": 4, "epoch": 0, "batch": 4,
             "settings": {}}
    leftover = container.temporary_path(checkpoint_path(str(tmp_path), 3))
    pathlib.Path(leftover).write_bytes(saved_bytes(SAMPLE)[:100])  # what a kill mid-write leaves
    others = [container.temporary_path(str(tmp_path / "notes.txt")), str(tmp_path / "x.dtrain.tmp"),
              str(tmp_path / "step-000000001.dtrain.tmp")]
    for path in others:
        pathlib.Path(path).write_text("not ours")
    assert os.path.basename(leftover).startswith(".step-000000003.dtrain.")
    path = write_checkpoint(str(tmp_path), state)
    assert not os.path.exists(leftover)
    assert sorted(os.listdir(tmp_path)) == sorted(  # the retention manifest is the writer's too
        [os.path.basename(path), "manifest.json"] + [os.path.basename(p) for p in others])
    assert_same(dtrain.load(path)["model"], state["model"])


def test_remove_temporaries_matches_the_target_name(tmp_path):
    target = re.compile(r"model-\d+\.ckpt")
    ours = container.temporary_path(str(tmp_path / "model-12.ckpt"))
    theirs = container.temporary_path(str(tmp_path / "model-x.ckpt"))
    for path in (ours, theirs):
        pathlib.Path(path).write_bytes(b"")
    assert container.remove_temporaries(str(tmp_path), target) == [ours]
    assert os.listdir(tmp_path) == [os.path.basename(theirs)]
