"""Availability: what a stuck worker or a slow disk does to a run costs time, never the run.

Each test reproduces a failure that used to end (or stall) a whole run, then checks the run
finishes with the bits of the clean in-process run.
"""

import logging
import os
import sys
import time

import numpy as np
import pytest

import dtrain
from dtrain.distributed import checkpoint as C

sys.path.insert(0, os.path.dirname(__file__))
import dist_jobs
from conftest import assert_reduced_as_asked, with_sharded
from procs import dtrain_processes

pytestmark = pytest.mark.usefixtures("array_channel")


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.state_dict().values(),
                                                      b.state_dict().values()))


@with_sharded
def test_a_stuck_worker_is_evicted_and_its_nodes_recomputed(tmp_path, monkeypatch, caplog,
                                                             array_channel):
    """Issue 18.4: a worker spinning in loss() kept heartbeating from its beacon thread, was
    never evicted, and step_timeout then failed the run. Sharded, the stuck worker's ranges go
    with it: the run rolls back and recomputes over the others."""
    reference, _ = dtrain.fit(dist_jobs.StuckOnce, workers=0, reduction="coordinator")
    marker = tmp_path / "stuck"
    monkeypatch.setenv("DTRAIN_TEST_STUCK", str(marker))
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="dtrain.coordinator"):
        model, history = dtrain.fit(dist_jobs.StuckOnce, workers=3, step_timeout=600)
    assert marker.exists(), "no worker got stuck: the test did not test anything"
    assert "stuck" in caplog.text and "evicted" in caplog.text
    assert_reduced_as_asked(array_channel, caplog.text)
    assert _same(model, reference)
    # a few heartbeat timeouts, not the step timeout
    assert time.monotonic() - started < 600
    assert dtrain_processes(dist_jobs.__file__) == []


def test_a_slow_checkpoint_write_evicts_nobody(tmp_path, monkeypatch, caplog):
    """Issue 18.5: a checkpoint write longer than heartbeat_timeout evicted every worker."""
    reference, _ = dtrain.fit(dist_jobs.SlowSteps, workers=0, max_steps=12)
    real_save = C.save
    writes = []

    def slow_save(obj, path):
        time.sleep(3 * dist_jobs.SlowSteps.heartbeat_timeout)  # a slow disk
        writes.append(path)
        real_save(obj, path)

    monkeypatch.setattr(C, "save", slow_save)
    out = str(tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="dtrain.coordinator"):
        model, _ = dtrain.fit(dist_jobs.SlowSteps, workers=2, out=out, max_steps=12,
                              checkpoint_every=4)
    assert "evicted" not in caplog.text and "reconnected" not in caplog.text
    assert _same(model, reference)
    names = {os.path.basename(p) for p in writes}
    assert {"step-000000004.dtrain", "step-000000008.dtrain", "step-000000012.dtrain"} <= names


def test_a_failed_checkpoint_write_does_not_end_the_run(tmp_path, monkeypatch, caplog):
    """A full disk (or no descriptors left) costs a checkpoint, never the run."""
    reference, _ = dtrain.fit(dist_jobs.SlowSteps, workers=0, max_steps=8)
    real_save = C.save
    failed = []

    def failing_save(obj, path):
        if not failed:
            failed.append(path)
            raise OSError(28, "No space left on device")
        real_save(obj, path)

    monkeypatch.setattr(C, "save", failing_save)
    out = str(tmp_path / "run")
    with caplog.at_level(logging.ERROR):
        model, _ = dtrain.fit(dist_jobs.SlowSteps, workers=0, out=out, max_steps=8,
                              checkpoint_every=4)
    assert "not written" in caplog.text and _same(model, reference)
    assert os.path.basename(failed[0]) == "step-000000004.dtrain"
    assert "step-000000004.dtrain" not in os.listdir(os.path.join(out, "checkpoints"))
    assert "step-000000008.dtrain" in os.listdir(os.path.join(out, "checkpoints"))


def test_the_checkpoint_holds_the_state_of_its_step_not_a_later_one(tmp_path):
    """The writer snapshots at submit: training on while it writes cannot change the file."""
    writer = C.CheckpointWriter()
    weights = np.zeros(4, np.float32)
    state = {"step": 1, "model": {"w": dtrain.tensor(weights.copy())}, "arr": weights}
    writer.submit(str(tmp_path), state)
    state["model"]["w"]._data += 1
    weights += 1
    writer.close()
    saved = dtrain.load(C.checkpoint_path(str(tmp_path), 1))
    assert np.array_equal(saved["arr"], np.zeros(4, np.float32))
    assert np.array_equal(saved["model"]["w"].numpy(), np.zeros(4, np.float32))
