"""Job hooks keep the promise: clipping, before_step and early stopping give the same bits for
any number of workers."""

import os
import sys

import numpy as np
import pytest

import dtrain

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
import dist_jobs
import service_jobs
from procs import dtrain_processes


def _params(model) -> list[np.ndarray]:
    return [p._data.copy() for p in model.parameters()]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_clip_grad_norm_is_bit_identical_for_any_worker_count():
    service_jobs.Clipped.seen_norms.clear()
    reference, _ = dtrain.fit(service_jobs.Clipped, workers=0)
    assert service_jobs.Clipped.seen_norms and \
        max(service_jobs.Clipped.seen_norms) <= 0.05 * (1 + 1e-5)  # before_step saw clipped
    unclipped, _ = dtrain.fit(service_jobs.Clipped, workers=0, clip_grad_norm=0.0)
    assert not _same(_params(reference), _params(unclipped))  # clipping did something
    for workers in (2, 3):
        model, _ = dtrain.fit(service_jobs.Clipped, workers=workers)
        assert _same(_params(model), _params(reference)), f"{workers} workers differ"
    assert dtrain_processes(service_jobs.__file__) == []


def test_early_stopping_stops_at_the_same_epoch_with_the_same_bits(tmp_path):
    reference, history = dtrain.fit(service_jobs.EarlyStop, workers=0)
    assert 1 <= len(history.epochs) <= 3
    model, other = dtrain.fit(service_jobs.EarlyStop, workers=2, out=str(tmp_path / "run"))
    assert [r["epoch"] for r in other.epochs] == [r["epoch"] for r in history.epochs]
    assert _same(_params(model), _params(reference))
    # a resumed early-stopped run knows it is finished
    _, resumed = dtrain.fit(service_jobs.EarlyStop, workers=0, resume=str(tmp_path / "run"))
    assert resumed.steps == []


def test_early_stopping_rules():
    early = dtrain.EarlyStopping("val_accuracy", patience=2, mode="max")
    assert [early({"val_accuracy": v}) for v in (0.5, 0.6, 0.6, 0.55)] == \
        [False, False, False, True]
    with pytest.raises(KeyError, match="has no 'val_loss'.*define val_data"):
        dtrain.EarlyStopping()({"train_loss": 1.0})


def test_gradient_accumulation_is_bit_identical_and_matches_the_larger_batch(tmp_path):
    small = {"batch_size": 8, "micro_shards": 4, "epochs": 2, "accumulate": 2}
    reference, history = dtrain.fit(service_jobs.Cosine, workers=0, **small)
    assert len(history.steps) == 16
    model, _ = dtrain.fit(service_jobs.Cosine, workers=2, **small)
    assert _same(_params(model), _params(reference))
    large, _ = dtrain.fit(service_jobs.Cosine, workers=0, batch_size=16, micro_shards=4,
                          epochs=2)
    for a, b in zip(_params(reference), _params(large)):  # same samples per optimizer step
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # stopped half-way through a group, resumed: the buffer is in the checkpoint
    out = str(tmp_path / "run")
    dtrain.fit(service_jobs.Cosine, workers=0, out=out, max_steps=3, **small)
    resumed, _ = dtrain.fit(service_jobs.Cosine, workers=2, resume=out, max_steps=0, **small)
    assert _same(_params(resumed), _params(reference))
    with pytest.raises(ValueError, match="accumulate > 1 works with one phase"):
        dtrain.fit(dist_jobs.FullBatchLBFGS, workers=0, accumulate=2, max_steps=1)
