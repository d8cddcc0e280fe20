"""The distributed path against the in-process run and a hand-written loop: same bits."""

import os
import sys

import numpy as np
import pytest

import dtrain
from dtrain.data import epoch_permutation

sys.path.insert(0, os.path.dirname(__file__))
import dist_jobs
from procs import dtrain_processes


pytestmark = pytest.mark.usefixtures("array_channel")

def _params(model):
    return [p._data.copy() for p in model.parameters()]


def _buffers(model):
    return [b.clone() for b in model.state_dict().values()]


def _same(a, b):
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y)
                                    for x, y in zip(a, b))


@pytest.mark.parametrize("job", [dist_jobs.MomentumGroups, dist_jobs.AdamDropout])
def test_bit_identical_for_any_worker_count(job):
    reference, history = dtrain.fit(job, workers=0)
    assert len(history.steps) > 0
    ref = _buffers(reference)
    for workers in (1, 2, 3):
        model, h = dtrain.fit(job, workers=workers)
        assert _same(_buffers(model), ref), f"{workers} workers differ from in-process"
        assert [r["loss"] for r in h.steps] == [r["loss"] for r in history.steps]
        assert [r["lr"] for r in h.steps] == [r["lr"] for r in history.steps]


def test_a_different_seed_gives_different_bits():
    a, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0)
    b, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0, seed=8)
    assert not _same(_params(a), _params(b))


def test_distributed_equals_hand_written_loop_float64():
    job = dist_jobs.Float64Reference()
    model, history = dtrain.fit(dist_jobs.Float64Reference, workers=2)

    dtrain.manual_seed(job.seed)
    ref = job.model().double()
    opt = job.optimizer(ref)
    sched = job.scheduler(opt)
    x, y = job.train_data()
    for epoch in range(job.epochs):
        order = epoch_permutation(len(x), job.seed, epoch)
        for start in range(0, len(x), job.batch_size):
            ids = order[start:start + job.batch_size]
            opt.zero_grad()
            out = ref(dtrain.tensor(x[ids], dtype=dtrain.float64))
            loss = job.loss(out, dtrain.tensor(y[ids]))
            loss.backward()
            opt.step()
        sched.step()
    assert len(history.steps) == job.epochs * 7
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p._data, q._data, rtol=0, atol=1e-9)


def test_no_process_left_after_success():
    dtrain.fit(dist_jobs.MomentumGroups, workers=2)
    assert dtrain_processes(dist_jobs.__file__) == []


def test_failure_in_the_training_script_is_reported_and_cleaned_up(monkeypatch):
    monkeypatch.setenv("DTRAIN_TEST_FAIL", "1")
    from dtrain.distributed.coordinator import WorkerError

    with pytest.raises(WorkerError, match="deliberate failure in the training script"):
        dtrain.fit(dist_jobs.FailsAtStep3, workers=2)
    assert dtrain_processes(dist_jobs.__file__) == []


def test_resume_from_a_mid_epoch_checkpoint_is_bit_identical(tmp_path):
    full, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0)
    out = str(tmp_path / "run")
    dtrain.fit(dist_jobs.MomentumGroups, workers=2, out=out, max_steps=9, checkpoint_every=4)
    from dtrain.distributed.checkpoint import list_checkpoints

    names = [os.path.basename(p) for p in list_checkpoints(os.path.join(out, "checkpoints"))]
    assert names[0] == "step-000000008.dtrain"  # 6 steps per epoch: 4, epoch end 6, 8
    os.remove(os.path.join(out, "checkpoint.dtrain"))
    resumed, history = dtrain.fit(dist_jobs.MomentumGroups, workers=2, resume=out, max_steps=0)
    assert history.steps[0]["step"] == 8
    assert _same(_buffers(resumed), _buffers(full))


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path, caplog):
    full, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0)
    out = str(tmp_path / "run")
    dtrain.fit(dist_jobs.MomentumGroups, workers=0, out=out, max_steps=9, checkpoint_every=4)
    os.remove(os.path.join(out, "checkpoint.dtrain"))  # else resume takes the final one
    newest = os.path.join(out, "checkpoints", "step-000000008.dtrain")
    with open(newest, "r+b") as f:
        f.seek(os.path.getsize(newest) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with caplog.at_level("WARNING"):
        resumed, history = dtrain.fit(dist_jobs.MomentumGroups, workers=0, resume=out,
                                      max_steps=0)
    assert "skipping damaged checkpoint" in caplog.text
    assert history.steps[0]["step"] == 6
    assert _same(_buffers(resumed), _buffers(full))


def test_genuinely_diverging_training_continues_like_single_process(caplog):
    """NaN gradients confirmed by a second worker are the training's own: accepted, not evicted
    forever; the run matches the in-process one (NaN included)."""
    reference, ref_history = dtrain.fit(dist_jobs.Diverges, workers=0)
    assert not np.isfinite(ref_history.steps[-1]["loss"])
    with caplog.at_level("WARNING"):
        model, history = dtrain.fit(dist_jobs.Diverges, workers=2)
    assert "the training diverged" in caplog.text
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(p._data, q._data)  # NaN == NaN here
