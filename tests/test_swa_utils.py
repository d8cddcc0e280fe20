"""dtrain.optim.swa_utils against torch.optim.swa_utils: SWALR rates, averages, update_bn."""

from __future__ import annotations

import numpy as np
import pytest
from test_lr_scheduler import STEPS, make_opt, make_torch_opt, resume, trajectory

import dtrain
from dtrain import nn
from dtrain.optim import lr_scheduler, swa_utils

# ---------------------------------------------------------------- SWALR
SWALR_CASES = {
    "cos-default": lambda S, L, o: S.SWALR(o, swa_lr=0.05),
    "linear-per-group": lambda S, L, o: S.SWALR(o, [0.05, 0.01], anneal_epochs=5,
                                                anneal_strategy="linear"),
    "no-annealing": lambda S, L, o: S.SWALR(o, 0.02, anneal_epochs=0),
    "cos-long": lambda S, L, o: S.SWALR(o, 0.2, anneal_epochs=30),
    "after-cosine": lambda S, L, o: L.SequentialLR(o, [L.CosineAnnealingLR(o, 40),
                                                      S.SWALR(o, 0.01, anneal_epochs=7)], [40]),
}


def torch_libs():
    torch = pytest.importorskip("torch")
    return torch, torch.optim.swa_utils, torch.optim.lr_scheduler


@pytest.mark.parametrize("case", list(SWALR_CASES))
def test_swalr_matches_pytorch_bit_for_bit(case):
    torch, tswa, tlr = torch_libs()
    opt, topt = make_opt(), make_torch_opt(torch)
    ours = trajectory(SWALR_CASES[case](swa_utils, lr_scheduler, opt), opt, STEPS)
    theirs = trajectory(SWALR_CASES[case](tswa, tlr, topt), topt, STEPS)
    np.testing.assert_array_equal(ours, theirs)
    assert [g["swa_lr"] for g in opt.param_groups] == [g["swa_lr"] for g in topt.param_groups]
    assert len(np.unique(ours[:, 0])) > 1 or case == "no-annealing"


def test_swalr_taking_over_mid_run_matches_pytorch():
    """The SWA recipe: one scheduler until swa_start, then SWALR, on the same optimizer."""
    torch, tswa, tlr = torch_libs()
    rows = []
    for S, L, opt in ((swa_utils, lr_scheduler, make_opt()),
                      (tswa, tlr, make_torch_opt(torch))):
        cosine, swa = L.CosineAnnealingLR(opt, T_max=60), None
        out = []
        for epoch in range(STEPS):
            opt.step()
            if epoch >= 30:
                swa = swa or S.SWALR(opt, swa_lr=0.02, anneal_epochs=5)
                swa.step()
            else:
                cosine.step()
            out.append([g["lr"] for g in opt.param_groups])
        rows.append(out)
    np.testing.assert_array_equal(rows[0], rows[1])


@pytest.mark.parametrize("case", ["cos-default", "linear-per-group", "no-annealing"])
def test_swalr_state_dict_round_trip_continues_identically(case):
    def factory(L, o):
        return SWALR_CASES[case](swa_utils, L, o)

    opt = make_opt()
    sched = factory(lr_scheduler, opt)
    trajectory(sched, opt, 4)
    opt2, sched2 = resume(factory, "sgd", opt, sched)
    assert sched2.anneal_func is not None and "anneal_func" not in sched.state_dict()
    np.testing.assert_array_equal(trajectory(sched2, opt2, 20), trajectory(sched, opt, 20))


@pytest.mark.parametrize("kwargs", [{"swa_lr": 0.1, "anneal_strategy": "exp"},
                                    {"swa_lr": 0.1, "anneal_epochs": -1},
                                    {"swa_lr": 0.1, "anneal_epochs": 2.5},
                                    {"swa_lr": [0.1, 0.2, 0.3]}])
def test_swalr_rejects_bad_options_like_pytorch(kwargs):
    torch, tswa, _ = torch_libs()
    with pytest.raises(ValueError):
        tswa.SWALR(make_torch_opt(torch), **kwargs)
    with pytest.raises(ValueError):
        swa_utils.SWALR(make_opt(), **kwargs)


# ---------------------------------------------------------------- AveragedModel
def model_pair():
    """The same float64 model in dtrain and PyTorch (PyTorch's copy of dtrain's weights)."""
    torch = pytest.importorskip("torch")
    dtrain.manual_seed(0)
    ours = nn.Sequential(nn.Linear(4, 5, dtype="float64"), nn.BatchNorm1d(5, dtype="float64"),
                         nn.ReLU(), nn.Linear(5, 2, dtype="float64"))
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5),
                                 torch.nn.ReLU(), torch.nn.Linear(5, 2)).double()
    theirs.load_state_dict({k: torch.tensor(np.array(v._data)) for k, v in
                            ours.state_dict().items()})
    return ours, theirs


def drift(ours, theirs, rng) -> None:
    """Move both models' parameters and running statistics by the same random amounts."""
    torch = pytest.importorskip("torch")
    pairs = [(a, b, rng.standard_normal) for a, b in zip(ours.parameters(), theirs.parameters())]
    pairs += [(a, b, rng.random) for a, b in zip(ours.buffers(), theirs.buffers())
              if a._data.dtype.kind == "f"]  # running variances stay positive
    for a, b, noise in pairs:
        a._data[...] += noise(a._data.shape)
        with torch.no_grad():
            b.copy_(torch.from_numpy(a._data.copy()))
    for a, b in zip(ours.buffers(), theirs.buffers()):
        if a._data.dtype.kind == "i":
            a._data[...] += 3
            b += 3


AVERAGING = {
    "swa": lambda S: {},
    "ema": lambda S: {"avg_fn": S.get_ema_avg_fn(0.9)},
    "ema-multi": lambda S: {"multi_avg_fn": S.get_ema_multi_avg_fn(0.3)},
    "swa-multi": lambda S: {"multi_avg_fn": S.get_swa_multi_avg_fn()},
    "swa-buffers": lambda S: {"use_buffers": True},
    "ema-buffers": lambda S: {"avg_fn": S.get_ema_avg_fn(0.5), "use_buffers": True},
}


@pytest.mark.parametrize("case", list(AVERAGING))
def test_averaged_model_matches_pytorch(case):
    torch, tswa, _ = torch_libs()
    ours, theirs = model_pair()
    avg = swa_utils.AveragedModel(ours, **AVERAGING[case](swa_utils))
    tavg = tswa.AveragedModel(theirs, **AVERAGING[case](tswa))
    rng = np.random.default_rng(3)
    for _ in range(6):
        drift(ours, theirs, rng)
        avg.update_parameters(ours)
        tavg.update_parameters(theirs)
    assert list(avg.state_dict()) == list(tavg.state_dict())
    assert int(avg.n_averaged.item()) == int(tavg.n_averaged) == 6
    for (name, a), b in zip(avg.state_dict().items(), tavg.state_dict().values()):
        np.testing.assert_allclose(np.array(a._data), b.numpy(), rtol=1e-14, atol=1e-14,
                                   err_msg=name)
    x = np.random.default_rng(4).standard_normal((3, 4))
    avg.eval()
    tavg.eval()
    with torch.no_grad():
        np.testing.assert_allclose(avg(dtrain.tensor(x)).data,
                                   tavg(torch.from_numpy(x)).numpy(), rtol=1e-12)


def test_averaged_model_is_a_copy_that_starts_from_the_first_update():
    model = nn.Linear(2, 1, dtype="float64")
    avg = swa_utils.AveragedModel(model)
    assert avg.module is not model and int(avg.n_averaged.item()) == 0
    model.weight._data[...] = 4.0
    avg.update_parameters(model)
    np.testing.assert_array_equal(avg.module.weight._data, [[4.0, 4.0]])
    model.weight._data[...] = 0.0
    avg.update_parameters(model)  # the mean of 4 and 0
    np.testing.assert_array_equal(avg.module.weight._data, [[2.0, 2.0]])


def test_averaged_model_option_errors_match_pytorch():
    torch, tswa, _ = torch_libs()
    ours, theirs = model_pair()
    with pytest.raises(AssertionError):
        tswa.AveragedModel(theirs, avg_fn=tswa.get_swa_avg_fn(),
                           multi_avg_fn=tswa.get_swa_multi_avg_fn())
    with pytest.raises(AssertionError, match="Only one of avg_fn and multi_avg_fn"):
        swa_utils.AveragedModel(ours, avg_fn=swa_utils.get_swa_avg_fn(),
                                multi_avg_fn=swa_utils.get_swa_multi_avg_fn())
    for lib in (tswa, swa_utils):
        with pytest.raises(ValueError):
            lib.get_ema_avg_fn(1.5)
        with pytest.raises(ValueError):
            lib.get_ema_multi_avg_fn(-0.1)
    with pytest.raises(ValueError, match="device"):
        swa_utils.AveragedModel(ours, device="cuda")


# ---------------------------------------------------------------- update_bn
def test_update_bn_matches_pytorch_and_restores_the_model():
    torch, tswa, _ = torch_libs()
    ours, theirs = model_pair()
    ours.eval()
    theirs.eval()
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((8, 4)) * (i + 1) for i in range(4)]
    swa_utils.update_bn([[dtrain.tensor(b), 0] for b in batches], ours)
    tswa.update_bn([[torch.from_numpy(b), 0] for b in batches], theirs)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        np.testing.assert_allclose(np.array(a._data), b.numpy(), rtol=1e-12, err_msg=name)
    assert not ours.training and ours[1].momentum == 0.1
    assert int(ours[1].num_batches_tracked.item()) == 4
    swa_utils.update_bn([dtrain.tensor(b) for b in batches[:1]], ours)  # bare tensors too
    np.testing.assert_allclose(ours[1].running_mean._data,
                               batches[0].mean(0) @ ours[0].weight._data.T + ours[0].bias._data,
                               rtol=1e-12)


def test_update_bn_without_batchnorm_does_nothing():
    model = nn.Linear(2, 2)
    swa_utils.update_bn(iter([]), model)
    assert model.training
