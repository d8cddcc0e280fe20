"""Closure optimizers (LBFGS, NonlinearCG) and multi-phase steps (a GAN) across workers."""

import logging
import os
import sys

import numpy as np
import pytest

import dtrain
from dtrain.data import epoch_permutation
from dtrain.nn import keyed_dropout

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
import dist_jobs

GAN = os.path.join(os.path.dirname(HERE), "examples", "gan.py")


def _state(model):
    return [a.clone() for a in model.state_dict().values()]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("job", [dist_jobs.FullBatchLBFGS, dist_jobs.FullBatchLBFGSWolfe,
                                 dist_jobs.FullBatchCG])
def test_closure_optimizers_are_bit_identical_across_workers(job, caplog):
    with caplog.at_level(logging.INFO, logger="dtrain.trainer"):
        reference, history = dtrain.fit(job, workers=0)
    assert all(r["rounds"] > 1 for r in history.steps)  # several evaluations per step
    assert "evaluation rounds" in caplog.text
    assert history.steps[-1]["loss"] < history.steps[0]["loss"]
    for workers in (1, 3):
        model, h = dtrain.fit(job, workers=workers)
        assert _same(_state(model), _state(reference)), f"{workers} workers differ"
        assert [r["rounds"] for r in h.steps] == [r["rounds"] for r in history.steps]


def test_closure_equals_single_process_lbfgs():
    job = dist_jobs.FullBatchLBFGSWolfe()
    model, _ = dtrain.fit(dist_jobs.FullBatchLBFGSWolfe, workers=2)
    dtrain.manual_seed(job.seed)
    ref = job.model().double()
    opt = job.optimizer(ref)
    x, y = job.train_data()
    for _ in range(job.epochs):
        order = epoch_permutation(len(x), job.seed, _)
        xb, yb = dtrain.tensor(x[order], dtype=dtrain.float64), dtrain.tensor(y[order])

        def closure(xb=xb, yb=yb):
            opt.zero_grad()
            loss = job.loss(ref(xb), yb)
            loss.backward()
            return loss

        opt.step(closure)
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p._data, q._data, rtol=0, atol=1e-9)


def test_gan_phases_bit_identical_across_workers():
    reference, history = dtrain.fit(GAN, workers=0, max_steps=12)
    assert set(history.steps[0]["phase_losses"]) == {"discriminator", "generator"}
    for workers in (1, 3):
        model, _ = dtrain.fit(GAN, workers=workers, max_steps=12)
        assert _same(_state(model), _state(reference)), f"{workers} workers differ"


def test_gan_equals_hand_written_loop_float64():
    from dtrain.distributed.job import load_job

    steps = 50
    model, _ = dtrain.fit(GAN, workers=2, max_steps=steps, dtype="float64")
    job, _ = load_job(GAN)
    dtrain.manual_seed(job.seed)
    ref = job.model().double()
    d_phase, g_phase = job.phases(ref)
    opt_d, opt_g = d_phase.optimizer, g_phase.optimizer
    x, _ = job.train_data()
    per_epoch = len(x) // job.batch_size
    assert steps > per_epoch  # the run crosses an epoch boundary
    for step in range(steps):
        epoch, batch = divmod(step, per_epoch)
        order = epoch_permutation(len(x), job.seed, epoch)
        ids = order[batch * job.batch_size:(batch + 1) * job.batch_size]
        real = dtrain.tensor(x[ids], dtype=dtrain.float64)
        with keyed_dropout(job.seed, step, ids):  # the latent noise of this step's samples
            opt_d.zero_grad()
            job.d_loss(ref, real, None).backward()
            opt_d.step()
        with keyed_dropout(job.seed, step, ids):
            opt_g.zero_grad()
            job.g_loss(ref, real, None).backward()
            opt_g.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p._data, q._data, rtol=0, atol=1e-9)


@pytest.mark.parametrize("job, message", [
    (dist_jobs.LBFGSWithoutClosure, "declare `closure = True`"),
    (dist_jobs.ClosureWithSGD, "does not take a closure"),
    (dist_jobs.PhasesWithClosure, "closure optimizers work only in jobs without phases"),
])
def test_wrong_combinations_fail_before_training(job, message):
    with pytest.raises(ValueError, match=message):
        dtrain.fit(job, workers=0)
