"""Every layer dtrain.nn exports survives dtrain.save(model) / dtrain.load(..., weights_only=False).

The layers are found by walking dtrain.nn, so a layer added later is covered as soon as it is
exported: it only needs a line in CASES (constructor and example inputs), and this file fails
naming it until it has one.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from io_helpers import assert_same

import dtrain
from dtrain import nn


def x(*shape):
    return dtrain.randn(*shape)


def labels(n, classes):
    return dtrain.randint(0, classes, (n,))


@dataclass
class Case:
    """How to build one layer and what to call it with."""

    make: Callable[[], nn.Module]
    inputs: Callable[[], tuple]


CASES = {
    "ELU": Case(lambda: nn.ELU(alpha=0.7), lambda: (x(3, 4),)),
    "GELU": Case(lambda: nn.GELU(approximate="tanh"), lambda: (x(3, 4),)),
    "Hardswish": Case(lambda: nn.Hardswish(), lambda: (x(3, 4),)),
    "LeakyReLU": Case(lambda: nn.LeakyReLU(0.2), lambda: (x(3, 4),)),
    "LogSoftmax": Case(lambda: nn.LogSoftmax(dim=1), lambda: (x(3, 4),)),
    "Mish": Case(lambda: nn.Mish(), lambda: (x(3, 4),)),
    "ReLU": Case(lambda: nn.ReLU(), lambda: (x(3, 4),)),
    "Sigmoid": Case(lambda: nn.Sigmoid(), lambda: (x(3, 4),)),
    "SiLU": Case(lambda: nn.SiLU(), lambda: (x(3, 4),)),
    "Softmax": Case(lambda: nn.Softmax(dim=-1), lambda: (x(3, 4),)),
    "Softplus": Case(lambda: nn.Softplus(beta=2.0, threshold=10.0), lambda: (x(3, 4),)),
    "Tanh": Case(lambda: nn.Tanh(), lambda: (x(3, 4),)),
    "Flatten": Case(lambda: nn.Flatten(1, 2), lambda: (x(2, 3, 4, 5),)),
    "Unflatten": Case(lambda: nn.Unflatten(1, (2, 3)), lambda: (x(4, 6),)),
    "Sequential": Case(lambda: nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)),
                       lambda: (x(3, 4),)),
    "ModuleList": Case(lambda: Stack(nn.ModuleList([nn.Linear(4, 4), nn.Tanh()])),
                       lambda: (x(3, 4),)),
    "ModuleDict": Case(lambda: Branches(nn.ModuleDict({"a": nn.Linear(4, 2), "b": nn.ReLU()})),
                       lambda: (x(3, 4),)),
    "Conv1d": Case(lambda: nn.Conv1d(2, 3, 3, padding=1), lambda: (x(2, 2, 7),)),
    "Conv2d": Case(lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False),
                   lambda: (x(2, 2, 7, 7),)),
    "ConvTranspose2d": Case(lambda: nn.ConvTranspose2d(2, 3, 3, stride=2),
                            lambda: (x(2, 2, 4, 4),)),
    "Dropout": Case(lambda: nn.Dropout(0.3), lambda: (x(6, 8),)),
    "Identity": Case(lambda: nn.Identity(3, unused="x"), lambda: (x(3, 4),)),
    "Linear": Case(lambda: nn.Linear(4, 3), lambda: (x(5, 4),)),
    "BCELoss": Case(lambda: nn.BCELoss(weight=dtrain.rand(4)),
                    lambda: (dtrain.rand(3, 4), dtrain.rand(3, 4))),
    "BCEWithLogitsLoss": Case(lambda: nn.BCEWithLogitsLoss(pos_weight=dtrain.rand(4) + 0.5),
                              lambda: (x(3, 4), dtrain.rand(3, 4))),
    "CrossEntropyLoss": Case(lambda: nn.CrossEntropyLoss(weight=dtrain.rand(5),
                                                         label_smoothing=0.1),
                             lambda: (x(6, 5), labels(6, 5))),
    "L1Loss": Case(lambda: nn.L1Loss(reduction="sum"), lambda: (x(3, 4), x(3, 4))),
    "MSELoss": Case(lambda: nn.MSELoss(), lambda: (x(3, 4), x(3, 4))),
    "HuberLoss": Case(lambda: nn.HuberLoss(delta=0.5), lambda: (x(3, 4), x(3, 4))),
    "SmoothL1Loss": Case(lambda: nn.SmoothL1Loss(beta=0.5), lambda: (x(3, 4), x(3, 4))),
    "KLDivLoss": Case(lambda: nn.KLDivLoss(reduction="batchmean", log_target=True),
                      lambda: (x(3, 4).log_softmax(1), x(3, 4).log_softmax(1))),
    "CosineSimilarity": Case(lambda: nn.CosineSimilarity(dim=1, eps=1e-6),
                             lambda: (x(3, 4), x(3, 4))),
    "PReLU": Case(lambda: nn.PReLU(4, init=0.1), lambda: (x(3, 4),)),
    "ReLU6": Case(lambda: nn.ReLU6(), lambda: (x(3, 4) * 5,)),
    "Hardtanh": Case(lambda: nn.Hardtanh(-0.5, 0.5), lambda: (x(3, 4),)),
    "LogSigmoid": Case(lambda: nn.LogSigmoid(), lambda: (x(3, 4),)),
    "Dropout2d": Case(lambda: nn.Dropout2d(0.3), lambda: (x(2, 4, 3, 3),)),
    "MaxPool1d": Case(lambda: nn.MaxPool1d(2, stride=1), lambda: (x(2, 3, 6),)),
    "AvgPool1d": Case(lambda: nn.AvgPool1d(3, stride=2, padding=1), lambda: (x(2, 3, 7),)),
    "DataParallel": Case(lambda: nn.DataParallel(nn.Linear(4, 2)), lambda: (x(3, 4),)),

    "NLLLoss": Case(lambda: nn.NLLLoss(ignore_index=1), lambda: (x(6, 5), labels(6, 5))),
    "BatchNorm1d": Case(lambda: nn.BatchNorm1d(4, momentum=0.3), lambda: (x(8, 4),)),
    "BatchNorm2d": Case(lambda: nn.BatchNorm2d(3), lambda: (x(4, 3, 5, 5),)),
    "GroupNorm": Case(lambda: nn.GroupNorm(2, 4), lambda: (x(3, 4, 5, 5),)),
    "LayerNorm": Case(lambda: nn.LayerNorm((3, 4), eps=1e-3), lambda: (x(2, 3, 4),)),
    "AdaptiveAvgPool2d": Case(lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda: (x(2, 3, 6, 6),)),
    "AvgPool2d": Case(lambda: nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
                      lambda: (x(2, 3, 5, 5),)),
    "MaxPool2d": Case(lambda: nn.MaxPool2d(2, return_indices=True), lambda: (x(2, 3, 6, 6),)),
    "Embedding": Case(lambda: nn.Embedding(10, 4, padding_idx=0), lambda: (labels(7, 10),)),
    "PixelShuffle": Case(lambda: nn.PixelShuffle(2), lambda: (x(2, 8, 3, 3),)),
    "PixelUnshuffle": Case(lambda: nn.PixelUnshuffle(2), lambda: (x(2, 2, 4, 4),)),
    "Upsample": Case(lambda: nn.Upsample(scale_factor=2, mode="nearest"),
                     lambda: (x(2, 3, 4, 4),)),
    "ConvTranspose1d": Case(lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2),
                            lambda: (x(2, 4, 5),)),
    "ConstantPad1d": Case(lambda: nn.ConstantPad1d((1, 2), 0.5), lambda: (x(2, 3, 4),)),
    "ConstantPad2d": Case(lambda: nn.ConstantPad2d(1, -1.0), lambda: (x(2, 3, 4, 4),)),
    "ZeroPad1d": Case(lambda: nn.ZeroPad1d(2), lambda: (x(2, 3, 4),)),
    "ZeroPad2d": Case(lambda: nn.ZeroPad2d((1, 0, 2, 1)), lambda: (x(2, 3, 4, 4),)),
    "ReflectionPad1d": Case(lambda: nn.ReflectionPad1d(2), lambda: (x(2, 3, 5),)),
    "ReflectionPad2d": Case(lambda: nn.ReflectionPad2d(1), lambda: (x(2, 3, 4, 4),)),
    "ReplicationPad1d": Case(lambda: nn.ReplicationPad1d((2, 1)), lambda: (x(2, 3, 5),)),
    "ReplicationPad2d": Case(lambda: nn.ReplicationPad2d(2), lambda: (x(2, 3, 4, 4),)),
    "CircularPad1d": Case(lambda: nn.CircularPad1d(1), lambda: (x(2, 3, 5),)),
    "CircularPad2d": Case(lambda: nn.CircularPad2d((1, 1, 2, 0)), lambda: (x(2, 3, 4, 4),)),
    "RNN": Case(lambda: nn.RNN(3, 4, num_layers=2, nonlinearity="relu", batch_first=True),
                lambda: (x(2, 5, 3),)),
    "LSTM": Case(lambda: nn.LSTM(3, 4, bidirectional=True), lambda: (x(5, 2, 3),)),
    "GRU": Case(lambda: nn.GRU(3, 4, num_layers=2, dropout=0.2), lambda: (x(5, 2, 3),)),
    "RNNBase": Case(lambda: nn.LSTM(3, 4), lambda: (x(5, 2, 3),)),  # abstract: a subclass
    "RNNCell": Case(lambda: nn.RNNCell(3, 4, nonlinearity="tanh"), lambda: (x(2, 3),)),
    "LSTMCell": Case(lambda: nn.LSTMCell(3, 4), lambda: (x(2, 3),)),
    "GRUCell": Case(lambda: nn.GRUCell(3, 4), lambda: (x(2, 3),)),
    "RNNCellBase": Case(lambda: nn.GRUCell(3, 4), lambda: (x(2, 3),)),  # abstract: a subclass
    "ReLU6": Case(lambda: nn.ReLU6(), lambda: (x(3, 4) * 5,)),
    "Hardtanh": Case(lambda: nn.Hardtanh(-0.5, 2.0), lambda: (x(3, 4),)),
    "LogSigmoid": Case(lambda: nn.LogSigmoid(), lambda: (x(3, 4),)),
    "PReLU": Case(lambda: nn.PReLU(3, init=0.1), lambda: (x(2, 3, 4),)),
    "CosineSimilarity": Case(lambda: nn.CosineSimilarity(dim=0), lambda: (x(3, 4), x(3, 4))),
    "MaxPool1d": Case(lambda: nn.MaxPool1d(3, stride=2, padding=1), lambda: (x(2, 3, 8),)),
    "AvgPool1d": Case(lambda: nn.AvgPool1d(2, count_include_pad=False), lambda: (x(2, 3, 8),)),
    "Dropout2d": Case(lambda: nn.Dropout2d(0.4), lambda: (x(2, 3, 4, 4),)),
    "DataParallel": Case(lambda: nn.DataParallel(nn.Linear(4, 2), device_ids=[0]),
                         lambda: (x(3, 4),)),
    "SmoothL1Loss": Case(lambda: nn.SmoothL1Loss(beta=0.5), lambda: (x(3, 4), x(3, 4))),
    "HuberLoss": Case(lambda: nn.HuberLoss(reduction="sum", delta=0.7),
                      lambda: (x(3, 4), x(3, 4))),
    "KLDivLoss": Case(lambda: nn.KLDivLoss(reduction="batchmean", log_target=True),
                      lambda: (x(3, 4), x(3, 4))),
}


class Stack(nn.Module):
    """Applies the layers of a ModuleList in order: a ModuleList has no forward of its own."""

    def __init__(self, layers: nn.ModuleList):
        super().__init__()
        self.layers = layers

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Branches(nn.Module):
    """Sums the branches of a ModuleDict, in key order."""

    def __init__(self, branches: nn.ModuleDict, scale: float = 1.0):
        super().__init__()
        self.branches = branches
        self.scale = scale

    def forward(self, x):
        return self.branches["b"](self.branches["a"](x)) * self.scale


class UserNet(nn.Module):
    """A user's model: keyword arguments, a submodule argument, a buffer, nested containers."""

    def __init__(self, sizes: tuple[int, ...], head: nn.Module, *, dropout: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(*(nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU())
                                    for a, b in zip(sizes, sizes[1:])))
        self.drop = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({"main": head, "aux": nn.Linear(sizes[-1], 1)})
        self.register_buffer("offset", dtrain.arange(float(head.out_features)))

    def forward(self, x):
        h = self.drop(self.body(x))
        return self.heads["main"](h) + self.offset + self.heads["aux"](h)


def exported_layers() -> dict[str, type]:
    """Every public Module subclass exported by dtrain.nn or defined in one of its modules."""
    found = {name: obj for name, obj in vars(nn).items()
             if inspect.isclass(obj) and issubclass(obj, nn.Module)}
    for info in pkgutil.walk_packages(nn.__path__, nn.__name__ + "."):
        for name, obj in vars(importlib.import_module(info.name)).items():
            if (inspect.isclass(obj) and issubclass(obj, nn.Module) and not name.startswith("_")
                    and obj.__module__ == info.name):
                found[name] = obj
    found.pop("Module")
    return found


LAYERS = exported_layers()
# exported so torch scripts get a clear message, but never built: dtrain is data-parallel itself
REFUSED = {"DistributedDataParallel": nn.parallel.DistributedDataParallel}


def test_every_exported_layer_has_a_case():
    missing = sorted(set(LAYERS) - set(CASES) - set(REFUSED))
    assert not missing, (f"dtrain.nn exports {', '.join(missing)} without an entry in "
                         f"tests/test_io_layers.py CASES (constructor and example inputs)")


def outputs(model, inputs, seed):
    """The model's output(s) as NumPy arrays; the seed fixes dropout masks."""
    dtrain.manual_seed(seed)
    return _flat(model(*inputs))


def _flat(out) -> list:
    """Arrays of an output that may nest tuples (an LSTM returns (out, (h, c)))."""
    if isinstance(out, tuple):
        return [a for item in out for a in _flat(item)]
    return [out.detach().numpy()]


def check_roundtrip(model, make_inputs, tmp_path, training: bool):
    model.train(training)
    dtrain.save(model, tmp_path / "model.pth")
    loaded = dtrain.load(tmp_path / "model.pth", weights_only=False)
    assert type(loaded) is type(model)
    assert [m.training for m in loaded.modules()] == [training] * len(list(model.modules()))
    assert_same(dict(model.state_dict()), dict(loaded.state_dict()))
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in model.named_parameters()]
    for seed in (1, 2):
        inputs = make_inputs()
        assert_same(outputs(model, inputs, seed), outputs(loaded, inputs, seed))
    # running statistics and other buffers move on identically
    assert_same(dict(model.state_dict()), dict(loaded.state_dict()))
    return loaded


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_layers_say_why(name):
    with pytest.raises(RuntimeError, match="dtrain launch"):
        REFUSED[name](nn.Linear(4, 2))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(set(LAYERS) - set(REFUSED)))
def test_layer_whole_model_roundtrip(name, training, tmp_path):
    if name not in CASES:
        pytest.fail(f"no CASES entry for dtrain.nn.{name}: add its constructor and example inputs")
    dtrain.manual_seed(0)
    case = CASES[name]
    model = case.make()
    assert isinstance(model, LAYERS[name]) or any(isinstance(m, LAYERS[name])
                                                  for m in model.modules())
    check_roundtrip(model, case.inputs, tmp_path, training)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_user_defined_model_with_nested_containers_and_buffers(training, tmp_path):
    dtrain.manual_seed(5)
    model = UserNet((4, 8, 6), nn.Linear(6, 3), dropout=0.25)
    for _ in range(3):  # running statistics that differ from their initial values
        model(x(16, 4))
    assert int(model.body[0][1].num_batches_tracked.item()) == 3
    loaded = check_roundtrip(model, lambda: (x(5, 4),), tmp_path, training)
    assert type(loaded.heads["main"]) is nn.Linear and loaded.drop.p == 0.25
    assert not np.array_equal(loaded.body[1][1].running_var.detach().numpy(), np.ones(6))
    dtrain.manual_seed(9)
    model.train().zero_grad()
    loaded.train().zero_grad()
    model(x(4, 4)).sum().backward()
    dtrain.manual_seed(9)
    loaded(x(4, 4)).sum().backward()
    for (name, p), q in zip(model.named_parameters(), loaded.parameters()):
        assert_same(p.grad.detach().numpy(), q.grad.detach().numpy(), f"{name}.grad")
