"""smooth_l1_loss, huber_loss and kl_div (functions and modules), and nn.DataParallel on the
CPU: values and gradients against torch and finite differences."""

import os
import sys
import warnings

import numpy as np
import pytest

import dtrain

sys.path.insert(0, os.path.dirname(__file__))
from helpers import check, torch

# differences on both sides of 1 and of 0.5, none on a kink
INPUT = np.array([[0.1, -2.0, 0.7], [1.6, -0.3, 3.0]])
TARGET = np.array([[0.0, 0.0, 0.0], [0.0, 0.05, 0.2]])
PROBS = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("function,module,option", [
    *[("smooth_l1_loss", "SmoothL1Loss", {"beta": beta}) for beta in (1.0, 0.5, 0.0)],
    *[("huber_loss", "HuberLoss", {"delta": delta}) for delta in (1.0, 0.5, 2.5)],
])
def test_smooth_l1_and_huber_loss(reduction, function, module, option):
    check(lambda m, x, t: getattr(m.nn.functional, function)(x, t, reduction=reduction, **option),
          INPUT.copy(), TARGET.copy())
    check(lambda m, x, t: getattr(m.nn, module)(reduction=reduction, **option)(x, t),
          INPUT.copy(), TARGET.copy())


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    target = np.log(PROBS) if log_target else PROBS.copy()
    check(lambda m, x, t: m.nn.functional.kl_div(x.log_softmax(1), t, reduction=reduction,
                                                 log_target=log_target), (2, 3), target)
    check(lambda m, x, t: m.nn.KLDivLoss(reduction=reduction, log_target=log_target)(
        x.log_softmax(1), t), (2, 3), target)


def test_kl_div_zero_targets_and_mean_warning():
    # a zero target contributes 0; its own gradient is nan, as torch's (one-sided there)
    check(lambda m, x, t: m.nn.functional.kl_div(x, t, reduction="sum"), (2, 3),
          np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]), fd=False)
    with pytest.warns(UserWarning, match="batchmean"):
        dtrain.nn.functional.kl_div(dtrain.zeros(2, 3), dtrain.ones(2, 3) / 3)
    with pytest.raises(ValueError, match="not a valid value"):
        dtrain.nn.KLDivLoss(reduction="avg")
    with pytest.raises(RuntimeError, match="negative values for beta"):
        dtrain.nn.functional.smooth_l1_loss(dtrain.zeros(2), dtrain.zeros(2), beta=-1.0)


def data_parallel_case(m):
    m.manual_seed(0)
    inner = m.nn.Linear(2, 1)
    model = m.nn.DataParallel(inner, device_ids=[0, 1])
    return repr(model), list(model.state_dict()), model.device_ids, model.module is inner


def test_data_parallel_runs_the_module_on_the_cpu():
    ours = data_parallel_case(dtrain)
    assert ours[1:] == (["module.weight", "module.bias"], [], True)
    model = dtrain.nn.DataParallel(dtrain.nn.Linear(2, 1))
    x = dtrain.ones(3, 2)
    np.testing.assert_array_equal(model(x).detach().numpy(), model.module(x).detach().numpy())
    if torch is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns that no GPU is there
            theirs = data_parallel_case(torch)
        assert ours == theirs


def test_parallel_functions_say_what_to_do():
    import dtrain.nn.parallel as parallel

    with pytest.raises(RuntimeError, match="device type could not be determined"):
        parallel.data_parallel(dtrain.nn.Linear(2, 1), dtrain.ones(1, 2))
    with pytest.raises(RuntimeError, match="dtrain.Job"):
        parallel.DistributedDataParallel(dtrain.nn.Linear(2, 1))


@pytest.mark.parametrize("size_average, reduce, expected", [
    (False, None, "sum"), (True, None, "mean"), (None, False, "none"), (True, True, "mean")])
def test_legacy_size_average_and_reduce(size_average, reduce, expected):
    """Pre-1.0 code: ``F.nll_loss(output, target, size_average=False)`` sums, with torch's
    deprecation warning; the modules take the flags in torch's positions too."""
    logp = dtrain.tensor([[-0.1, -2.4], [-1.6, -0.2], [-0.5, -0.9]])
    target = dtrain.tensor([0, 1, 1])
    want = dtrain.nn.functional.nll_loss(logp, target, reduction=expected).tolist()
    with pytest.warns(UserWarning, match=f"reduction='{expected}' instead"):
        got = dtrain.nn.functional.nll_loss(logp, target, size_average=size_average,
                                            reduce=reduce)
    assert got.tolist() == want
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        layer = dtrain.nn.MSELoss(size_average, reduce)
    assert layer.reduction == expected
    with pytest.warns(UserWarning, match="deprecated"):
        assert dtrain.nn.CrossEntropyLoss(None, size_average, -100, reduce).reduction == expected


def test_loss_signatures_are_torchs():
    """Positional arguments land where torch puts them (size_average before ignore_index)."""
    import inspect

    if torch is None:
        pytest.skip("needs torch")
    for name in ("nll_loss", "cross_entropy", "mse_loss", "l1_loss", "binary_cross_entropy",
                 "binary_cross_entropy_with_logits", "smooth_l1_loss", "huber_loss", "kl_div",
                 "leaky_relu"):
        ours = list(inspect.signature(getattr(dtrain.nn.functional, name)).parameters)
        theirs = list(inspect.signature(getattr(torch.nn.functional, name)).parameters)
        assert ours == theirs[:len(ours)], name
    for name in ("CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss",
                 "KLDivLoss", "BCELoss", "BCEWithLogitsLoss"):
        ours = list(inspect.signature(getattr(dtrain.nn, name)).parameters)
        assert ours == list(inspect.signature(getattr(torch.nn, name)).parameters), name
