"""Stepping the job's optimizer range by range (what a reducer will do) gives the bits of
stepping the whole model, for every optimizer the trainer steps, and the ranges' state
gathers into one whole state_dict that can be cut again for another range count."""

import os
import sys

import numpy as np
import pytest

import dtrain
from dtrain import nn, optim
from dtrain.distributed.param_ranges import model_ranges
from dtrain.distributed.range_optimizer import (RangeOptimizer, gather, group_options,
                                                record_range_step)
from dtrain.launcher.run import LaunchError

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
import service_jobs

SHAPES = [(7, 5), (7,), (3, 2, 4), (4,), (1,)]


class Params:
    """A model in all but name: parameters of several shapes, including a stack of matrices."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.list = [nn.Parameter(dtrain.tensor(rng.standard_normal(s).astype(np.float32)))
                     for s in SHAPES]

    def parameters(self):
        return iter(self.list)


def _grads(step: int) -> list:
    rng = np.random.default_rng(100 + step)
    grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    if step == 0:
        grads[1] = None  # no gradient on the first step: its state starts a step later
    return grads


OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "sgd-momentum-decay": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.2,
                                               weight_decay=1e-2),
    "sgd-nesterov-maximize": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True,
                                                  weight_decay=1e-2, maximize=True),
    "adam": lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
    "adam-amsgrad": lambda ps: optim.Adam(ps, lr=1e-2, amsgrad=True),
    "adamw": lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "adamw-amsgrad": lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1, amsgrad=True),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=1e-2),
    "rmsprop-centered-momentum": lambda ps: optim.RMSprop(ps, lr=1e-2, momentum=0.9,
                                                          centered=True, weight_decay=1e-2),
    "adagrad": lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=1e-2, weight_decay=1e-2,
                                        initial_accumulator_value=0.1),
    "adadelta": lambda ps: optim.Adadelta(ps, lr=1.0, weight_decay=1e-2),
    "adamax": lambda ps: optim.Adamax(ps, lr=1e-2, weight_decay=1e-2),
    "nadam": lambda ps: optim.NAdam(ps, lr=1e-2),
    "nadam-decoupled": lambda ps: optim.NAdam(ps, lr=1e-2, weight_decay=1e-2,
                                              decoupled_weight_decay=True),
    "radam": lambda ps: optim.RAdam(ps, lr=1e-2),
    "radam-decoupled": lambda ps: optim.RAdam(ps, lr=1e-2, weight_decay=1e-2,
                                              decoupled_weight_decay=True),
    "rprop": lambda ps: optim.Rprop(ps, lr=1e-2),
    "asgd": lambda ps: optim.ASGD(ps, lr=1e-2, t0=2, weight_decay=1e-2),
    "adafactor": lambda ps: optim.Adafactor(ps, lr=1e-2, weight_decay=1e-2),
    "sgd-groups": lambda ps: optim.SGD([{"params": ps[:2]},
                                        {"params": ps[2:], "lr": 0.05, "momentum": 0.5}],
                                       lr=0.1, momentum=0.9),
    "adam-groups-reordered": lambda ps: optim.Adam([{"params": [ps[3], ps[0]], "lr": 3e-2},
                                                    {"params": [ps[4], ps[2], ps[1]]}],
                                                   lr=1e-2, amsgrad=True),
}


def _job(name: str, seed: int = 0):
    model = Params(seed)
    opt = OPTIMIZERS[name](model.list)
    return model, opt, optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


def same_bits(a, b, where="") -> None:
    """Assert two state values are equal bit for bit, recursively, with their types."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert sorted(a, key=str) == sorted(b, key=str), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            same_bits(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same_bits(x, y, f"{where}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), where
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), where
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def _run_both_ways(steps, whole_run, ranged_run, count: int, name: str) -> None:
    """Step the whole optimizer and, cut into ``count`` ranges, the ranged one; then gather
    the ranges into the job's optimizer and compare parameters and state bit for bit."""
    whole_model, whole, whole_sched = whole_run
    model, opt, sched = ranged_run  # holds the options (the scheduler's lr) and gathers
    ranges = model_ranges(model, [opt], count)
    ranged = [RangeOptimizer(opt, model.list, ranges, r) for r in range(len(ranges))]
    for step in steps:
        grads = _grads(step)
        for p, g in zip(whole_model.list, grads):
            p.grad = None if g is None else dtrain.tensor(g)
        whole.step()
        whole_sched.step()
        for r in ranged:
            r.step(r.grads_of(grads), group_options(opt))
        record_range_step(opt)
        sched.step()
    gather(opt, model.list, ranged)
    same_bits(opt.state_dict(), whole.state_dict(), name)
    same_bits([p._data for p in model.list], [p._data for p in whole_model.list], "params")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_stepping_every_range_is_stepping_the_whole_model(name, tmp_path):
    whole_run, ranged_run = _job(name), _job(name)
    counts = (3, 2) if name == "adafactor" else (3, 5)
    _run_both_ways(range(3), whole_run, ranged_run, counts[0], name)

    # a checkpoint holds the whole state in one file; resumed, it is cut for another count
    model, opt, sched = ranged_run
    path = str(tmp_path / "checkpoint.dtrain")
    dtrain.save({"params": [p._data for p in model.list], "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict()}, path)
    saved = dtrain.load(path)
    model, opt, sched = resumed = _job(name, seed=9)
    for p, value in zip(model.list, saved["params"]):
        p._data[...] = value
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    _run_both_ways(range(3, 6), whole_run, resumed, counts[1], name)
    first_lr = OPTIMIZERS[name](Params().list).param_groups[0]["lr"]
    assert opt.param_groups[0]["lr"] != first_lr  # the scheduler did change it


def test_ranges_own_their_slices():
    model, opt, _ = _job("adam")
    ranges = model_ranges(model, [opt], 4)
    ranged = [RangeOptimizer(opt, model.list, ranges, r) for r in range(4)]
    assert sum(t._data.size for r in ranged for t in r.tensors) == \
        sum(p._data.size for p in model.list)
    before = [p._data.copy() for p in model.list]
    ranged[0].step(ranged[0].grads_of(_grads(1)), group_options(opt))
    assert all(np.array_equal(a, p._data) for a, p in zip(before, model.list))  # copies
    assert len(ranged[0].optimizer.state) == len(ranged[0].tensors)
    assert not opt.state  # the job's optimizer only gets state by gather


def test_closure_optimizers_are_not_stepped_by_range():
    model = Params()
    lbfgs = optim.LBFGS(model.list)
    ranges = model_ranges(model, [lbfgs], 2)
    with pytest.raises(ValueError, match="LBFGS searches along all parameters.*coordinator"):
        RangeOptimizer(lbfgs, model.list, ranges, 0)


def test_a_checkpoint_of_a_run_with_ranges_resumes_on_other_worker_counts(tmp_path):
    """The trainer's checkpoint holds the whole state; resuming needs the same ranges."""
    settings = {"param_ranges": 3, "epochs": 2}
    reference, _ = dtrain.fit(service_jobs.Clipped, workers=0, **settings)
    out = str(tmp_path / "run")
    dtrain.fit(service_jobs.Clipped, workers=2, out=out, max_steps=3, **settings)
    resumed, _ = dtrain.fit(service_jobs.Clipped, workers=3, resume=out, max_steps=0,
                            **settings)
    for a, b in zip(reference.parameters(), resumed.parameters()):
        assert np.array_equal(a._data, b._data)
    with pytest.raises(LaunchError, match="param_ranges=3 \\(this run: 2\\)"):
        dtrain.fit(service_jobs.Clipped, workers=0, resume=out, max_steps=0,
                   **{**settings, "param_ranges": 2})


def test_a_checkpoint_from_before_the_setting_counts_as_one_range():
    """Such a run summed flat: resuming it under the default 8 ranges would change its bits."""
    from dtrain.distributed.checkpoint import resume_conflicts
    from dtrain.distributed.settings import Settings

    old = {"settings": {"seed": 0}}
    assert resume_conflicts(old, Settings(param_ranges=1)) == []
    assert resume_conflicts(old, Settings()) == ["param_ranges=1 (this run: 8)"]
