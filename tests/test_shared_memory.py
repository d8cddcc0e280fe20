"""Shared-memory arrays: layout, privacy, cleanup of untrusted directories, use by local workers."""

import logging
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import dtrain
from dtrain.distributed import protocol as P
from dtrain.distributed import shared_memory as S
from dtrain.distributed.coordinator import Coordinator
from dtrain.distributed.trainer import Trainer

sys.path.insert(0, os.path.dirname(__file__))
import dist_jobs

SPECS = [((3, 5), np.float32), ((5,), np.float32), ((7, 2), np.float64)]


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape, dtype in SPECS]


def test_layout_aligns_every_array():
    offsets, size = S.layout(SPECS)
    assert offsets == [0, 64, 128] and size == 256  # 128 + 112 bytes, rounded up to 64
    assert all(o % S.ALIGN == 0 for o in offsets)


def test_write_then_read_round_trips_exactly_and_privately():
    board = S.SharedArrays(SPECS, 1)
    try:
        assert stat.S_IMODE(os.stat(board.dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(board.path).st_mode) == 0o600
        source, replica = _arrays(1), _arrays(2)
        board.write(0, source)
        S.SharedArrays(SPECS, description=board.describe()).read_into(0, replica)
        assert all(np.array_equal(a, b) for a, b in zip(source, replica))
    finally:
        board.close()
    assert not os.path.exists(board.dir)


def test_reader_refuses_another_machine_or_another_model():
    board = S.SharedArrays(SPECS, 1)
    try:
        with pytest.raises(OSError, match="another machine"):
            S.SharedArrays(SPECS, description={**board.describe(), "machine": "elsewhere"})
        with pytest.raises(OSError, match="not a params file of this model"):
            S.SharedArrays(SPECS[:2], description=board.describe())
    finally:
        board.close()


def test_read_only_readers_cannot_write_and_writable_ones_can():
    slots = S.SharedArrays(SPECS, 2, kind="grads")
    try:
        reader = S.SharedArrays(SPECS, kind="grads", description=slots.describe())
        with pytest.raises(ValueError):
            reader.views[0][0][0, 0] = 1.0
        writer = S.SharedArrays(SPECS, kind="grads", description=slots.describe(), writable=True)
        writer.views[1][2][:] = 3.0
        assert slots.views[1][2].sum() == 42.0
        reader.close()
        writer.close()
    finally:
        slots.close()


def test_directories_of_dead_processes_are_removed(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = tmp_path / f"dtrain-params-{child.stdout.strip()}-abc"
    alive = tmp_path / f"dtrain-grads-{os.getpid()}-def"
    for d in (dead, alive):
        d.mkdir(mode=0o700)
        (d / S.LOCK_NAME).touch()
    assert S.remove_stale(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and alive.exists()


def test_a_live_owner_in_another_pid_namespace_keeps_its_files(tmp_path):
    """Its pid means nothing here (the process looks gone), but it still holds its lock."""
    import fcntl

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    elsewhere = tmp_path / f"dtrain-params-{child.stdout.strip()}-abc"
    elsewhere.mkdir(mode=0o700)
    lock = os.open(elsewhere / S.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert S.remove_stale(str(tmp_path)) == [] and elsewhere.exists()
    finally:
        os.close(lock)
    assert S.remove_stale(str(tmp_path)) == [str(elsewhere)]  # released: gone now


def test_a_directory_without_an_owner_lock_is_left_alone(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    unproven = tmp_path / f"dtrain-grads-{child.stdout.strip()}-abc"
    unproven.mkdir(mode=0o700)
    assert S.remove_stale(str(tmp_path)) == [] and unproven.exists()


@pytest.mark.parametrize("name", ["dtrain-params-99999999999-x", "dtrain-grads-0-x",
                                  "dtrain-params-4194305-x", "dtrain-params-1" + "0" * 40 + "-x",
                                  "dtrain-params--1-x", "dtrain-grads-²-x"])
def test_a_neighbours_directory_in_the_shared_folder_changes_nothing(tmp_path, name):
    """Reproduces issue 18.3: one mkdir with a huge pid made every run fail (OverflowError)."""
    hostile = tmp_path / name
    hostile.mkdir(mode=0o700)
    assert S.remove_stale(str(tmp_path)) == []
    assert hostile.exists()


def test_only_our_own_private_directories_are_removed(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    pid = child.stdout.strip()
    shared = tmp_path / f"dtrain-params-{pid}-open"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / f"dtrain-grads-{pid}-link"
    link.symlink_to(target)
    file = tmp_path / f"dtrain-grads-{pid}-file"
    file.write_bytes(b"")
    assert S.remove_stale(str(tmp_path)) == []
    assert shared.exists() and target.exists() and link.exists() and file.exists()


def test_a_hostile_directory_in_dev_shm_does_not_stop_a_run():
    hostile = os.path.join(S.shm_root(), "dtrain-params-99999999999-x")
    os.makedirs(hostile, mode=0o700, exist_ok=True)
    try:
        reference, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0)
        model, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=2)
        for p, q in zip(model.parameters(), reference.parameters()):
            assert np.array_equal(p._data, q._data)
        assert os.path.isdir(hostile)
    finally:
        os.rmdir(hostile)


def _our_files() -> set:
    root = S.shm_root()
    return {n for n in os.listdir(root) if n.startswith(("dtrain-params-", "dtrain-grads-"))
            and f"-{os.getpid()}-" in n}


def test_local_workers_use_shared_memory_and_stay_bit_identical(caplog):
    reference, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0)
    with caplog.at_level(logging.INFO, logger="dtrain.coordinator"):
        model, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=2)
    assert caplog.text.count("arrays travel over shared-memory") == 2
    for p, q in zip(model.parameters(), reference.parameters()):
        assert np.array_equal(p._data, q._data)
    assert _our_files() == set()


def test_shared_memory_off_sends_every_array_over_the_socket(caplog):
    reference, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0)
    with caplog.at_level(logging.INFO, logger="dtrain.coordinator"):
        model, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=2, shared_memory=False)
    assert caplog.text.count("arrays travel over network") == 2
    assert "shared-memory" not in caplog.text
    for p, q in zip(model.parameters(), reference.parameters()):
        assert np.array_equal(p._data, q._data)


class _Harness:
    """A coordinator fed HELLOs by hand; what it sends is recorded instead of sent."""

    def __init__(self, **overrides):
        job = dist_jobs.MomentumGroups()
        settings = job.settings(**overrides)
        self.co = Coordinator("tcp://127.0.0.1:0", job_id="j", digest="d", settings=settings)
        self.co.attach(Trainer(job, settings, self.co))
        self.sent = []
        self.co._send = lambda identity, msg, info=None: self.sent.append(msg)

    def hello(self, ident: bytes, machine: str, instance: str | None = None):
        hello = P.Hello(instance=instance or ident.hex(), name=ident.decode(), pid=7,
                        host="h", digest="d", machine=machine)
        self.co.handle([ident] + P.pack(hello, ""))
        return self.sent[-1]

    def ready(self, ident: bytes, channel: str):
        info = self.co.workers[ident]
        self.co.handle([ident] + P.pack(P.Ready(info.id, channel), "j"))


def test_only_workers_on_this_machine_are_offered_shared_memory():
    h = _Harness()
    try:
        near = h.hello(b"near", S.machine_id())
        far = h.hello(b"far", "other-host/boot")
        assert near.shared_memory is not None and far.shared_memory is None
        h.ready(b"far", "shared-memory")  # not offered: refused, the worker stays unready
        assert h.co.rejected == 1 and not h.co.workers[b"far"].ready
    finally:
        h.co.close()


def test_shared_memory_off_offers_nothing():
    h = _Harness(shared_memory=False)
    try:
        assert h.hello(b"near", S.machine_id()).shared_memory is None
        assert h.co.board is None
    finally:
        h.co.close()


def test_an_evicted_workers_gradient_slots_are_removed_at_once():
    h = _Harness()
    try:
        offer = h.hello(b"near", S.machine_id()).shared_memory
        grads = offer["grads"]["path"]
        declined = h.hello(b"other", S.machine_id()).shared_memory["grads"]["path"]
        h.ready(b"near", "shared-memory")
        h.ready(b"other", "network")  # declined: its offered slots go at once
        assert os.path.exists(grads) and not os.path.exists(declined)
        h.co.evict(h.co.workers[b"near"], "test")
        assert not os.path.exists(grads)
        assert os.path.exists(offer["params"]["path"])  # the others still read the board
    finally:
        h.co.close()
    assert not os.path.exists(offer["params"]["path"])


def test_only_our_own_kind_of_file_is_opened(tmp_path):
    slots = S.SharedArrays(SPECS, 2, kind="grads")
    try:
        desc = slots.describe()
        with pytest.raises(OSError, match="not a params file"):  # gradient slots are not
            S.SharedArrays(SPECS, description=desc)  # a parameter board
        for path in ("/etc/passwd", str(tmp_path / "arrays"), desc["path"] + "x"):
            with pytest.raises(OSError):
                S.SharedArrays(SPECS, kind="grads", description={**desc, "path": path})
        reader = S.SharedArrays(SPECS, kind="grads", description=desc)
        slots.write(1, [np.ones(s, d) for s, d in SPECS])
        assert reader.slots == 2 and reader.views[1][2].sum() == 14
        reader.close()
    finally:
        slots.close()
