"""dtrain.optim.lr_scheduler against PyTorch's schedulers (where installed) and hand-computed values.

The matrix cases are written once for both libraries: ``L`` is ``dtrain.optim.lr_scheduler`` or
``torch.optim.lr_scheduler`` and ``o`` an optimizer of that library with two param groups whose
learning rates differ.
"""

from __future__ import annotations

import io
import math
import warnings
from functools import partial
from types import SimpleNamespace

import msgpack
import numpy as np
import pytest

import dtrain
import dtrain.optim.lr_scheduler as D
from dtrain import optim
from dtrain.nn import Parameter

LRS = (0.1, 0.03)
STEPS = 100


def make_opt(kind: str = "sgd", lrs=LRS):
    """A dtrain optimizer with one param group per learning rate."""
    groups = [{"params": [Parameter(dtrain.zeros(2))], "lr": lr} for lr in lrs]
    if kind == "adam":
        if not hasattr(optim, "Adam"):
            pytest.skip("dtrain.optim.Adam is not written yet")
        return optim.Adam(groups, lr=lrs[0])
    return optim.SGD(groups, lr=lrs[0], momentum=0.9)


def make_torch_opt(torch, kind: str = "sgd", lrs=LRS):
    """The same optimizer in PyTorch."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lrs[0])
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def snapshot(sched, opt) -> list[float]:
    """Last lrs, group lrs and the (cycled) momentum of every group, as one flat row."""
    row = [float(v) for v in sched.get_last_lr()]
    for group in opt.param_groups:
        row.append(float(group["lr"]))
        row.append(float(group["betas"][0] if "betas" in group else group.get("momentum", 0.0)))
    return row


def trajectory(sched, opt, steps: int) -> np.ndarray:
    """Rows of :func:`snapshot` after construction and after each of ``steps`` steps."""
    rows = [snapshot(sched, opt)]
    for _ in range(steps):
        opt.step()
        sched.step()
        rows.append(snapshot(sched, opt))
    return np.array(rows)


class Scale:
    """A callable object with state, so LambdaLR/CyclicLR must save its attributes."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __call__(self, x: float) -> float:
        return self.rate ** x


# One line per case: (factory, optimizer kind).
CASES = {
    "step-7-0.5": (lambda L, o: L.StepLR(o, 7, 0.5), "sgd"),
    "step-1-0.9": (lambda L, o: L.StepLR(o, step_size=1, gamma=0.9), "sgd"),
    "step-30-default": (lambda L, o: L.StepLR(o, 30), "sgd"),
    "multistep-repeat": (lambda L, o: L.MultiStepLR(o, [3, 10, 10, 50], 0.3), "sgd"),
    "multistep-unsorted": (lambda L, o: L.MultiStepLR(o, [75, 25]), "sgd"),
    "multistep-at-0": (lambda L, o: L.MultiStepLR(o, [0, 5], 0.5), "sgd"),
    "exp-0.97": (lambda L, o: L.ExponentialLR(o, 0.97), "sgd"),
    "exp-1.01": (lambda L, o: L.ExponentialLR(o, gamma=1.01), "sgd"),
    "cos-13-min": (lambda L, o: L.CosineAnnealingLR(o, 13, 0.001), "sgd"),
    "cos-100": (lambda L, o: L.CosineAnnealingLR(o, T_max=100), "sgd"),
    "cos-30-past-tmax": (lambda L, o: L.CosineAnnealingLR(o, 30), "sgd"),
    "cos-7-min-between": (lambda L, o: L.CosineAnnealingLR(o, 7, eta_min=0.05), "sgd"),
    "warm-5-2": (lambda L, o: L.CosineAnnealingWarmRestarts(o, 5, 2, 0.002), "sgd"),
    "warm-10": (lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=10), "sgd"),
    "warm-3-3": (lambda L, o: L.CosineAnnealingWarmRestarts(o, 3, T_mult=3), "sgd"),
    "lambda-one": (lambda L, o: L.LambdaLR(o, lambda e: 0.99 ** e), "sgd"),
    "lambda-list": (lambda L, o: L.LambdaLR(o, [lambda e: 1 / (1 + e), Scale(0.98)]), "sgd"),
    "mult-one": (lambda L, o: L.MultiplicativeLR(o, lambda e: 0.98), "sgd"),
    "mult-list": (lambda L, o: L.MultiplicativeLR(o, [lambda e: 0.97, lambda e: 1.001]), "sgd"),
    "linear-0.1-0.9-30": (lambda L, o: L.LinearLR(o, 0.1, 0.9, 30), "sgd"),
    "linear-default": (lambda L, o: L.LinearLR(o), "sgd"),
    "linear-decay": (lambda L, o: L.LinearLR(o, 1.0, 0.2, total_iters=50), "sgd"),
    "linear-long": (lambda L, o: L.LinearLR(o, 0.5, 1.0, total_iters=200), "sgd"),
    "const-0.25-17": (lambda L, o: L.ConstantLR(o, 0.25, 17), "sgd"),
    "const-default": (lambda L, o: L.ConstantLR(o), "sgd"),
    "const-zero-iters": (lambda L, o: L.ConstantLR(o, 0.5, total_iters=0), "sgd"),
    "poly-40-2": (lambda L, o: L.PolynomialLR(o, 40, 2.0), "sgd"),
    "poly-default": (lambda L, o: L.PolynomialLR(o), "sgd"),
    "poly-150-0.5": (lambda L, o: L.PolynomialLR(o, total_iters=150, power=0.5), "sgd"),
    "onecycle-cos": (lambda L, o: L.OneCycleLR(o, [0.5, 0.2], total_steps=100), "sgd"),
    "onecycle-linear-3ph": (lambda L, o: L.OneCycleLR(o, 0.5, epochs=10, steps_per_epoch=11,
                                                      anneal_strategy="linear",
                                                      three_phase=True), "sgd"),
    "onecycle-opts": (lambda L, o: L.OneCycleLR(o, 1.0, total_steps=120, pct_start=0.5,
                                                div_factor=10.0, final_div_factor=100.0,
                                                base_momentum=[0.8, 0.7],
                                                max_momentum=0.99), "sgd"),
    "onecycle-no-mom": (lambda L, o: L.OneCycleLR(o, 0.5, total_steps=100,
                                                  cycle_momentum=False), "sgd"),
    "onecycle-adam": (lambda L, o: L.OneCycleLR(o, 0.01, total_steps=100), "adam"),
    "onecycle-adam-3ph": (lambda L, o: L.OneCycleLR(o, 0.01, total_steps=101,
                                                    three_phase=True), "adam"),
    "cyclic-tri": (lambda L, o: L.CyclicLR(o, 0.01, [0.1, 0.2], 7, 4), "sgd"),
    "cyclic-tri2": (lambda L, o: L.CyclicLR(o, 0.01, 0.1, 5, mode="triangular2"), "sgd"),
    "cyclic-exp": (lambda L, o: L.CyclicLR(o, [0.01, 0.02], 0.1, 6, 9, mode="exp_range",
                                           gamma=0.97), "sgd"),
    "cyclic-fn-cycle": (lambda L, o: L.CyclicLR(o, 0.01, 0.1, 8, scale_fn=Scale(0.8)), "sgd"),
    "cyclic-fn-iter": (lambda L, o: L.CyclicLR(o, 0.01, 0.1, 8, scale_fn=lambda x: 0.99 ** x,
                                               scale_mode="iterations"), "sgd"),
    "cyclic-no-mom": (lambda L, o: L.CyclicLR(o, 0.01, 0.1, 3, 12,
                                              cycle_momentum=False), "sgd"),
    "cyclic-adam": (lambda L, o: L.CyclicLR(o, 0.001, 0.01, 10, base_momentum=0.85,
                                            max_momentum=[0.95, 0.9]), "adam"),
    "seq-3": (lambda L, o: L.SequentialLR(o, [L.LinearLR(o, 0.1, total_iters=10),
                                              L.ExponentialLR(o, 0.95),
                                              L.CosineAnnealingLR(o, 20)], [10, 40]), "sgd"),
    "seq-const-step": (lambda L, o: L.SequentialLR(o, [L.ConstantLR(o, 0.1, 20),
                                                       L.StepLR(o, 10, 0.5)], [5]), "sgd"),
    "seq-lambda-multistep": (lambda L, o: L.SequentialLR(o, [L.LambdaLR(o, lambda e: e / 10),
                                                             L.MultiStepLR(o, [20, 30])],
                                                         milestones=[10]), "sgd"),
    "chain-const-exp": (lambda L, o: L.ChainedScheduler([L.ConstantLR(o, 0.1, 20),
                                                         L.ExponentialLR(o, 0.9)]), "sgd"),
    "chain-3": (lambda L, o: L.ChainedScheduler([L.LinearLR(o, 0.2, total_iters=15),
                                                 L.MultiStepLR(o, [30, 60]),
                                                 L.ExponentialLR(o, 0.99)], o), "sgd"),
}
CASE_IDS = list(CASES)


# ---------------------------------------------------------------- against PyTorch
@pytest.mark.parametrize("case", CASE_IDS)
def test_lr_sequence_matches_pytorch(case):
    torch = pytest.importorskip("torch")
    factory, kind = CASES[case]
    opt, topt = make_opt(kind), make_torch_opt(torch, kind)
    ours = trajectory(factory(D, opt), opt, STEPS)
    theirs = trajectory(factory(torch.optim.lr_scheduler, topt), topt, STEPS)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    # Same arithmetic in the same order (e.g. the recursive cosine form): bit-identical.
    np.testing.assert_array_equal(ours, theirs)
    assert [g["initial_lr"] for g in opt.param_groups] == \
        [g["initial_lr"] for g in topt.param_groups]


@pytest.mark.parametrize("t_mult", [1, 2])
def test_warm_restarts_fractional_epochs_match_pytorch(t_mult):
    torch = pytest.importorskip("torch")
    epochs = [0.5, 1.25, 3.9, 4.0, 4.1, None, None, 7, 11.5, 12, None, 27.3, 28, 60.25, None]
    rows = []
    for lib, opt in ((D, make_opt()), (torch.optim.lr_scheduler, make_torch_opt(torch))):
        sched = lib.CosineAnnealingWarmRestarts(opt, T_0=4, T_mult=t_mult, eta_min=0.001)
        out = []
        for epoch in epochs:
            opt.step()
            sched.step(epoch)
            out.append([*sched.get_last_lr(), sched.T_cur, sched.T_i, sched.last_epoch])
        rows.append(out)
    np.testing.assert_allclose(rows[0], rows[1], rtol=0, atol=1e-12)


CLOSED_FORM = ["step-7-0.5", "multistep-repeat", "exp-0.97", "cos-13-min", "linear-0.1-0.9-30",
               "const-0.25-17", "poly-40-2", "lambda-one"]


@pytest.mark.parametrize("case", CLOSED_FORM)
def test_step_with_epoch_uses_closed_form_like_pytorch(case):
    torch = pytest.importorskip("torch")
    factory, kind = CASES[case]
    rows = []
    for lib, opt in ((D, make_opt(kind)), (torch.optim.lr_scheduler, make_torch_opt(torch))):
        sched = factory(lib, opt)
        out = []
        for epoch in (3, 4, 17, 10, 60, 0, 1):
            opt.step()
            with pytest.warns(UserWarning, match="epoch"):
                sched.step(epoch)
            out.append(sched.get_last_lr())
        rows.append(out)
    np.testing.assert_allclose(rows[0], rows[1], rtol=0, atol=1e-12)


RESUMABLE = ["step-7-0.5", "exp-0.97", "cos-13-min", "linear-0.1-0.9-30", "poly-40-2",
             "onecycle-cos", "cyclic-tri2", "warm-5-2"]


@pytest.mark.parametrize("case", RESUMABLE)
def test_resume_with_last_epoch_matches_pytorch(case):
    torch = pytest.importorskip("torch")
    factory, kind = CASES[case]
    rows = []
    for lib, opt in ((D, make_opt(kind)), (torch.optim.lr_scheduler, make_torch_opt(torch))):
        factory(lib, opt)  # sets initial_lr (and the cyclic groups' bounds)
        resumed = SimpleNamespace(**{name: partial(getattr(lib, name), last_epoch=20)
                                     for name in lib.__all__})
        rows.append(trajectory(factory(resumed, opt), opt, 30))
    np.testing.assert_allclose(rows[0], rows[1], rtol=0, atol=1e-12)


METRICS = [1 / (1 + 0.1 * min(i, 15)) + 0.002 * (i % 3) - 0.0005 * (i // 20)
           for i in range(80)]
PLATEAU = {
    "default": {},
    "patience-2": {"patience": 2, "factor": 0.5},
    "patience-0-cooldown": {"patience": 0, "cooldown": 3, "factor": 0.7},
    "min-abs": {"threshold_mode": "abs", "threshold": 0.05, "patience": 1},
    "max-rel": {"mode": "max", "patience": 3},
    "max-abs": {"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "patience": 2,
                "cooldown": 1},
    "min-lr-list": {"min_lr": [0.02, 0.01], "factor": 0.5, "patience": 1},
    "min-lr-scalar": {"min_lr": 0.025, "factor": 0.5, "patience": 1},
    "eps": {"factor": 0.9, "patience": 0, "eps": 0.005},
}


@pytest.mark.parametrize("case", list(PLATEAU))
def test_reduce_on_plateau_matches_pytorch(case):
    torch = pytest.importorskip("torch")
    rows = []
    for lib, opt in ((D, make_opt()), (torch.optim.lr_scheduler, make_torch_opt(torch))):
        sched = lib.ReduceLROnPlateau(opt, **PLATEAU[case])
        out = []
        for metric in METRICS:
            opt.step()
            sched.step(metric)
            out.append([*sched.get_last_lr(), *(g["lr"] for g in opt.param_groups),
                        sched.best, sched.num_bad_epochs, sched.cooldown_counter])
        rows.append(out)
    np.testing.assert_allclose(rows[0], rows[1], rtol=0, atol=1e-12)
    assert len({tuple(r[:2]) for r in rows[0]}) > 1 or case == "default"


def test_step_order_warning_matches_pytorch():
    torch = pytest.importorskip("torch")
    pattern = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"
    for lib, opt in ((D, make_opt()), (torch.optim.lr_scheduler, make_torch_opt(torch))):
        sched = lib.StepLR(opt, 3)
        with pytest.warns(UserWarning, match=pattern):
            sched.step()


# ---------------------------------------------------------------- state_dict
def resume(factory, kind: str, opt, sched):
    """A fresh optimizer and scheduler restored, in PyTorch's order, from a dtrain checkpoint."""
    state = sched.state_dict()
    assert msgpack.unpackb(msgpack.packb(state)) == state  # plain data only
    buffer = io.BytesIO()
    dtrain.save({"optimizer": opt.state_dict(), "scheduler": state}, buffer)
    buffer.seek(0)
    checkpoint = dtrain.load(buffer)
    opt2 = make_opt(kind)
    sched2 = factory(D, opt2)
    opt2.load_state_dict(checkpoint["optimizer"])
    sched2.load_state_dict(checkpoint["scheduler"])
    return opt2, sched2


@pytest.mark.parametrize("case", CASE_IDS)
def test_state_dict_round_trip_mid_run_continues_identically(case):
    factory, kind = CASES[case]
    opt = make_opt(kind)
    sched = factory(D, opt)
    trajectory(sched, opt, 37)
    opt2, sched2 = resume(factory, kind, opt, sched)
    np.testing.assert_array_equal(trajectory(sched2, opt2, 63), trajectory(sched, opt, 63))


def test_plateau_state_dict_round_trip_mid_run():
    opt = make_opt()
    sched = D.ReduceLROnPlateau(opt, patience=1, cooldown=2, factor=0.5, min_lr=[0.02, 0.001])
    for metric in METRICS[:30]:
        sched.step(metric)
    opt2, sched2 = resume(lambda L, o: L.ReduceLROnPlateau(o), "sgd", opt, sched)
    for metric in METRICS[30:]:
        sched.step(metric)
        sched2.step(metric)
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert sched2.best == sched.best and sched2.min_lrs == [0.02, 0.001]


def test_state_dict_holds_plain_data_only():
    opt = make_opt()
    sched = D.LambdaLR(opt, [lambda e: 0.5, Scale(0.9)])
    state = sched.state_dict()
    assert "optimizer" not in state
    assert state["lr_lambdas"] == [None, {"rate": 0.9}]
    assert msgpack.unpackb(msgpack.packb(state)) == state
    milestones = D.MultiStepLR(make_opt(), [8, 2, 8]).state_dict()["milestones"]
    assert milestones == [2, 8, 8]
    sched.stray = object()
    with pytest.raises(TypeError, match="stray"):
        sched.state_dict()


def test_callable_object_state_is_restored():
    opt = make_opt()
    sched = D.LambdaLR(opt, Scale(0.9))
    scale = sched.lr_lambdas[0]
    state = sched.state_dict()
    scale.rate = 0.1
    sched.load_state_dict(state)
    assert scale.rate == 0.9


def test_load_state_dict_accepts_pytorch_milestone_counter():
    from collections import Counter

    sched = D.MultiStepLR(make_opt(), [1])
    state = sched.state_dict()
    state["milestones"] = Counter({3: 1, 7: 2})
    sched.load_state_dict(state)
    assert sched.milestones == Counter({3: 1, 7: 2})


def test_load_state_dict_rejects_wrong_group_count():
    state = D.StepLR(make_opt(lrs=(0.1,)), 3).state_dict()
    with pytest.raises(ValueError, match="base_lrs"):
        D.StepLR(make_opt(), 3).load_state_dict(state)


# ---------------------------------------------------------------- warnings and bookkeeping
def test_scheduler_step_before_optimizer_step_warns_once():
    opt = make_opt()
    sched = D.StepLR(opt, 3)
    with pytest.warns(UserWarning, match=r"`lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"):
        sched.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()


def test_right_step_order_does_not_warn_and_counts_optimizer_steps():
    opt = make_opt()
    first, second = D.StepLR(opt, 3), D.ExponentialLR(opt, 0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
        first.step()
        second.step()
    assert opt._opt_step_count == 1  # wrapped once, although two schedulers share it


def test_replacing_optimizer_step_after_construction_warns():
    opt = make_opt()
    sched = D.StepLR(opt, 3)
    opt.step = lambda: None
    with pytest.warns(UserWarning, match="replaced"):
        sched.step()


def test_get_lr_outside_step_warns():
    sched = D.StepLR(make_opt(), 3)
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()


def test_initial_lr_is_set_once_per_group():
    opt = make_opt()
    D.StepLR(opt, 3, gamma=0.5)
    assert [g["initial_lr"] for g in opt.param_groups] == list(LRS)
    opt.param_groups[0]["lr"] = 0.7
    D.ExponentialLR(opt, 0.9)  # a second scheduler keeps the first one's initial_lr
    assert [g["initial_lr"] for g in opt.param_groups] == list(LRS)


def test_resuming_without_initial_lr_is_a_key_error():
    with pytest.raises(KeyError, match="initial_lr"):
        D.StepLR(make_opt(), 3, last_epoch=5)


def test_old_base_class_name_still_subclasses():
    class Halving(D._LRScheduler):
        def get_lr(self):
            return [base * 0.5 ** self.last_epoch for base in self.base_lrs]

    opt = make_opt(lrs=(1.0,))
    sched = Halving(opt)
    opt.step()
    sched.step()
    opt.step()
    sched.step()
    assert sched.get_last_lr() == [0.25] and isinstance(sched, D.LRScheduler)


# ---------------------------------------------------------------- hand-computed (no torch)
def lrs_over(sched, opt, steps: int, group: int = 0) -> list[float]:
    """Group ``group``'s learning rate after construction and after each step."""
    column = len(opt.param_groups) + 2 * group  # after the get_last_lr() entries
    return [row[column] for row in trajectory(sched, opt, steps).tolist()]


def test_step_lr_by_hand():
    opt = make_opt(lrs=(1.0, 0.5))
    sched = D.StepLR(opt, step_size=3, gamma=0.1)
    assert lrs_over(sched, opt, 7, 1) == pytest.approx(
        [0.5, 0.5, 0.5, 0.05, 0.05, 0.05, 0.005, 0.005], rel=1e-15)


def test_multistep_lr_by_hand():
    opt = make_opt(lrs=(1.0,))
    sched = D.MultiStepLR(opt, milestones=[2, 5, 5], gamma=0.5)
    assert lrs_over(sched, opt, 6) == [1.0, 1.0, 0.5, 0.5, 0.5, 0.125, 0.125]


def test_cosine_endpoints_and_closed_form_by_hand():
    opt = make_opt(lrs=(1.0,))
    sched = D.CosineAnnealingLR(opt, T_max=10, eta_min=0.01)
    got = lrs_over(sched, opt, 20)
    want = [0.01 + 0.99 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(21)]
    assert got == pytest.approx(want, abs=1e-12)
    assert (got[0], got[5], got[10], got[20]) == pytest.approx((1.0, 0.505, 0.01, 1.0), abs=1e-12)


def test_linear_lr_by_hand():
    opt = make_opt(lrs=(1.0,))
    sched = D.LinearLR(opt, start_factor=0.25, end_factor=1.0, total_iters=4)
    assert lrs_over(sched, opt, 6) == pytest.approx(
        [0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0, 1.0], abs=1e-15)


def test_constant_exponential_polynomial_by_hand():
    opt = make_opt(lrs=(1.0,))
    assert lrs_over(D.ConstantLR(opt, factor=0.5, total_iters=3), opt, 4) == [
        0.5, 0.5, 0.5, 1.0, 1.0]
    opt = make_opt(lrs=(1.0,))
    assert lrs_over(D.ExponentialLR(opt, 0.5), opt, 3) == [1.0, 0.5, 0.25, 0.125]
    opt = make_opt(lrs=(1.0,))
    assert lrs_over(D.PolynomialLR(opt, total_iters=4, power=2.0), opt, 5) == pytest.approx(
        [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0], abs=1e-15)


def test_warm_restarts_by_hand():
    opt = make_opt(lrs=(1.0,))
    sched = D.CosineAnnealingWarmRestarts(opt, T_0=4, T_mult=2)
    got = lrs_over(sched, opt, 13)
    assert got[0] == got[4] == got[12] == 1.0  # restarts at 4 and 4 + 8
    assert got[2] == pytest.approx(0.5, abs=1e-15) and got[8] == pytest.approx(0.5, abs=1e-15)
    sched.step(1.5)
    assert sched.get_last_lr()[0] == pytest.approx((1 + math.cos(math.pi * 1.5 / 4)) / 2)
    sched.step(5.0)  # one cycle of 4 done: T_cur = 1 of T_i = 8
    assert (sched.T_cur, sched.T_i) == (1.0, 8)
    assert sched.get_last_lr()[0] == pytest.approx((1 + math.cos(math.pi / 8)) / 2)


def test_one_cycle_by_hand():
    opt = make_opt(lrs=(1.0,))
    sched = D.OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=0.3)
    rows = trajectory(sched, opt, 9)  # columns: last lr, group lr, group momentum
    assert rows[0].tolist() == pytest.approx([0.04, 0.04, 0.95])  # initial lr, max momentum
    assert rows[2].tolist() == pytest.approx([1.0, 1.0, 0.85])  # the peak at step 2
    assert rows[9].tolist() == pytest.approx([4e-6, 4e-6, 0.95])  # min lr at the last step
    opt.step()
    sched.step()  # step 10 == total_steps is still allowed
    opt.step()
    with pytest.raises(ValueError, match="total_steps"):
        sched.step()


def test_cyclic_by_hand():
    opt = make_opt(lrs=(1.0,))
    sched = D.CyclicLR(opt, base_lr=0.1, max_lr=1.0, step_size_up=2, mode="triangular2")
    assert lrs_over(sched, opt, 8) == pytest.approx(
        [0.1, 0.55, 1.0, 0.55, 0.1, 0.325, 0.55, 0.325, 0.1], abs=1e-15)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.9)


def test_reduce_on_plateau_by_hand():
    opt = make_opt(lrs=(1.0,))
    sched = D.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    got = []
    for metric in [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]:
        sched.step(dtrain.tensor(metric))  # a 0-d loss tensor works like a float
        got.append(sched.get_last_lr()[0])
    assert got == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    sched = D.ReduceLROnPlateau(make_opt(lrs=(1.0,)), mode="max", factor=0.5, patience=0,
                                cooldown=1, min_lr=0.2)
    got = []
    for metric in [1.0, 0.9, 0.9, 0.9, 0.9, 0.9]:
        sched.step(metric)
        got.append(sched.get_last_lr()[0])
    assert got == [1.0, 0.5, 0.5, 0.25, 0.25, 0.2]


def test_sequential_and_chained_by_hand():
    opt = make_opt(lrs=(1.0,))
    seq = D.SequentialLR(opt, [D.ConstantLR(opt, 0.5, total_iters=10), D.ExponentialLR(opt, 0.5)],
                         milestones=[2])
    assert lrs_over(seq, opt, 4) == [0.5, 0.5, 1.0, 0.5, 0.25]
    opt = make_opt(lrs=(1.0,))
    chain = D.ChainedScheduler([D.ConstantLR(opt, 0.5, total_iters=2), D.ExponentialLR(opt, 0.9)])
    assert lrs_over(chain, opt, 3) == pytest.approx([0.5, 0.45, 0.81, 0.729], abs=1e-15)


# ---------------------------------------------------------------- bad input
class NoMomentum:
    """An optimizer with neither 'momentum' nor 'betas', for cycle_momentum errors."""

    def __init__(self) -> None:
        self.defaults = {"lr": 0.1}
        self.param_groups = [{"params": [], "lr": 0.1}, {"params": [], "lr": 0.1}]

    def step(self) -> None:
        pass


BAD = [
    (lambda o: D.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor"),
    (lambda o: D.ReduceLROnPlateau(o, mode="avg"), ValueError, "mode"),
    (lambda o: D.ReduceLROnPlateau(o, threshold_mode="pct"), ValueError, "threshold_mode"),
    (lambda o: D.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, "min_lr"),
    (lambda o: D.StepLR(o, step_size=0), ValueError, "step_size"),
    (lambda o: D.MultiStepLR(o, milestones=[1.5]), ValueError, "milestones"),
    (lambda o: D.ConstantLR(o, factor=1.5), ValueError, "factor"),
    (lambda o: D.LinearLR(o, start_factor=0), ValueError, "start_factor"),
    (lambda o: D.LinearLR(o, end_factor=2), ValueError, "end_factor"),
    (lambda o: D.CosineAnnealingLR(o, T_max=0), ValueError, "T_max"),
    (lambda o: D.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, "T_0"),
    (lambda o: D.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0), ValueError, "T_mult"),
    (lambda o: D.CosineAnnealingWarmRestarts(o, T_0=5, eta_min="0"), ValueError, "eta_min"),
    (lambda o: D.CyclicLR(o, 0.01, 0.1, mode="sine"), ValueError, "mode"),
    (lambda o: D.CyclicLR(o, 0.01, 0.1, scale_mode="epoch"), ValueError, "scale_mode"),
    (lambda o: D.CyclicLR(o, 0.01, [0.1, 0.2, 0.3]), ValueError, "max_lr"),
    (lambda o: D.CyclicLR(o, [0.01], 0.1), ValueError, "base_lr"),
    (lambda o: D.CyclicLR(o, 0.01, 0.1, step_size_up=0), ValueError, "step_size_up"),
    (lambda o: D.CyclicLR(o, 0.01, 0.1, base_momentum=[0.8]), ValueError, "base_momentum"),
    (lambda o: D.OneCycleLR(o, 0.1, total_steps=10, anneal_strategy="exp"), ValueError,
     "anneal_strategy"),
    (lambda o: D.OneCycleLR(o, 0.1, total_steps=10, pct_start=1.5), ValueError, "pct_start"),
    (lambda o: D.OneCycleLR(o, 0.1), ValueError, "total_steps"),
    (lambda o: D.OneCycleLR(o, 0.1, total_steps=0), ValueError, "total_steps"),
    (lambda o: D.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=0), ValueError, "steps_per_epoch"),
    (lambda o: D.LambdaLR(o, [lambda e: 1.0]), ValueError, "lr_lambda"),
    (lambda o: D.LambdaLR(o, 0.5), TypeError, "lr_lambda"),
    (lambda o: D.MultiplicativeLR(o, [None, None]), TypeError, "lr_lambda"),
    (lambda o: D.SequentialLR(o, [D.StepLR(o, 2), D.StepLR(o, 3)], [1, 2]), ValueError,
     "milestones"),
    (lambda o: D.SequentialLR(o, [D.StepLR(o, 2)] * 3, [5, 2]), ValueError, "milestones"),
    (lambda o: D.SequentialLR(o, [], []), ValueError, "schedulers"),
    (lambda o: D.SequentialLR(o, [D.StepLR(make_opt(), 2), D.StepLR(o, 2)], [3]), ValueError,
     "optimizer"),
    (lambda o: D.ChainedScheduler([D.StepLR(o, 2), D.ReduceLROnPlateau(o)]), ValueError,
     "ReduceLROnPlateau"),
    (lambda o: D.ChainedScheduler([]), ValueError, "schedulers"),
    (lambda o: D.StepLR(object(), 3), TypeError, "param_groups"),
    (lambda o: D.CyclicLR(NoMomentum(), 0.01, 0.1), ValueError, "cycle_momentum"),
    (lambda o: D.OneCycleLR(NoMomentum(), 0.1, total_steps=5), ValueError, "cycle_momentum"),
]


@pytest.mark.parametrize("make,error,option", BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_arguments_name_the_option(make, error, option):
    with pytest.raises(error, match=option):
        make(make_opt())
