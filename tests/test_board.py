"""The shared parameter board: layout, privacy, cleanup, and its use by same-machine workers."""

import logging
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import dtrain
from dtrain.distributed import board as B
from dtrain.distributed import protocol as P
from dtrain.distributed.coordinator import ZmqExecutor
from dtrain.distributed.trainer import Trainer

sys.path.insert(0, os.path.dirname(__file__))
import dist_jobs

SPECS = [((3, 5), np.float32), ((5,), np.float32), ((7, 2), np.float64)]


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return [dtrain.tensor(rng.standard_normal(shape).astype(dtype)) for shape, dtype in SPECS]


def test_layout_aligns_every_array():
    offsets, size = B.layout(SPECS)
    assert offsets == [0, 64, 128] and size == 256  # 128 + 112 bytes, rounded up to 64
    assert all(o % B.ALIGN == 0 for o in offsets)


def test_write_then_read_round_trips_exactly_and_privately():
    board = B.SharedSlots(SPECS, 1)
    try:
        assert stat.S_IMODE(os.stat(board.dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(board.path).st_mode) == 0o600
        source = _params(1)
        board.write(0, [t._data for t in source])
        replica = _params(2)
        B.SharedSlots(SPECS, 0, description=board.describe()).read_into(0, replica)
        assert all(np.array_equal(a._data, b._data) for a, b in zip(source, replica))
    finally:
        board.close()
    assert not os.path.exists(board.dir)


def test_reader_refuses_another_machine_or_another_model():
    board = B.SharedSlots(SPECS, 1)
    try:
        with pytest.raises(OSError, match="another machine"):
            B.SharedSlots(SPECS, 0, description={**board.describe(), "machine": "elsewhere"})
        with pytest.raises(OSError, match="not a board board of this model"):
            B.SharedSlots(SPECS[:2], 0, description=board.describe())
    finally:
        board.close()


def test_boards_of_dead_coordinators_are_removed(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = tmp_path / f"dtrain-board-{child.stdout.strip()}-abc"
    alive = tmp_path / f"dtrain-board-{os.getpid()}-def"
    dead.mkdir()
    alive.mkdir()
    B.remove_stale_boards(str(tmp_path))
    assert not dead.exists() and alive.exists()


def test_local_workers_switch_to_the_board_and_stay_bit_identical(caplog):
    reference, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0)
    with caplog.at_level(logging.INFO, logger="dtrain.coordinator"):
        model, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=2)
    assert caplog.text.count("reads parameters from the shared board") == 2
    for p, q in zip(model.parameters(), reference.parameters()):
        assert np.array_equal(p._data, q._data)


def test_workers_on_another_machine_get_parameters_in_the_task():
    job = dist_jobs.MomentumGroups()
    settings = job.settings()
    ex = ZmqExecutor("tcp://127.0.0.1:0", job_id="j", digest="d", settings=settings, board=True)
    try:
        trainer = Trainer(job, settings, ex)
        ex.attach(trainer)
        assert ex.board is not None
        sent = []
        ex._send = lambda identity, msg: sent.append(msg)
        for ident, machine in ((b"near", B.machine_id()), (b"far", "other-host/boot")):
            ex.handle([ident] + P.encode(P.Message(P.HELLO, "", -1, -1, {
                "name": ident.decode(), "pid": 7, "host": ident.decode(), "digest": "d",
                "machine": machine})))
        welcomes = {m.worker: m.fields for m in sent if m.type == P.WELCOME}
        assert "board" in welcomes[0] and "board" not in welcomes[1]
    finally:
        ex.close()


def test_only_our_own_kind_of_board_file_is_opened(tmp_path):
    board = B.SharedSlots(SPECS, 2, kind="grads")
    try:
        desc = board.describe()
        with pytest.raises(OSError, match="not a board board"):  # a gradient board is not
            B.SharedSlots(SPECS, 0, description=desc)  # a parameter board
        for path in ("/etc/passwd", str(tmp_path / "arrays"), desc["path"] + "x"):
            with pytest.raises(OSError):
                B.SharedSlots(SPECS, 0, kind="grads", description={**desc, "path": path})
        reader = B.SharedSlots(SPECS, 0, kind="grads", description=desc)
        board.write(1, [np.ones(s, d) for s, d in SPECS])
        assert reader.slots == 2 and reader.views[1][2].sum() == 14
        reader.close()
    finally:
        board.close()


def test_local_workers_write_gradients_to_their_boards(caplog):
    with caplog.at_level(logging.INFO, logger="dtrain.coordinator"):
        dtrain.fit(dist_jobs.MomentumGroups, workers=2)
    assert caplog.text.count("writes gradients to its shared board") == 2
