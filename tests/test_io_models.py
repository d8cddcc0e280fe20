"""Whole models: dtrain.save_model/load_model round trips and refused files."""

from __future__ import annotations

import io
import os
import pathlib

import numpy as np
import pytest
from io_helpers import assert_same
from model_zoo import MLP, Outer, Residual, WithCallable

import dtrain
from dtrain import nn
from dtrain.io import CheckpointError


def same_outputs(a, b, x):
    with dtrain.no_grad():
        return np.array_equal(a(x).data, b(x).data)


def test_save_model_sequential_mlp(tmp_path):
    dtrain.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    model.eval()
    dtrain.save_model(model, tmp_path / "mlp.model")
    rng_before = dtrain.get_rng_state()
    loaded = dtrain.load_model(tmp_path / "mlp.model")
    assert dtrain.get_rng_state() == rng_before, "load_model must not advance the global RNG"
    assert type(loaded) is nn.Sequential and repr(loaded) == repr(model)
    assert not any(m.training for m in loaded.modules())
    assert same_outputs(model, loaded, dtrain.randn(4, 6))
    assert_same(dict(model.state_dict()), dict(loaded.state_dict()))


def test_save_model_custom_classes(tmp_path):
    dtrain.manual_seed(2)
    shared = nn.Linear(5, 5)
    model = nn.Sequential(
        MLP((5, 7, 5), "relu", scale=2.0),
        Residual(nn.Sequential(shared, nn.Tanh())),
        Outer.Scaled(5, 0.5, dtype=dtrain.float64),
        Residual(shared),
    )
    model[0].train(False)
    model[0].layers[0].weight.requires_grad_(False)
    dtrain.save_model(model, tmp_path / "custom.model")
    loaded = dtrain.load_model(tmp_path / "custom.model")
    assert type(loaded[0]) is MLP and type(loaded[2]) is Outer.Scaled
    assert loaded[1].inner[0] is loaded[3].inner, "a shared submodule must stay shared"
    assert loaded[2].linear.weight.dtype == np.float64
    assert [m.training for m in loaded.modules()] == [m.training for m in model.modules()]
    assert [p.requires_grad for p in loaded.parameters()] == [
        p.requires_grad for p in model.parameters()]
    assert np.array_equal(loaded[0].scale.data, np.full(5, 2.0, np.float32))
    assert same_outputs(model, loaded, dtrain.randn(3, 5, dtype=dtrain.float64))


def test_save_model_keeps_dtype_of_a_cast_model(tmp_path):
    model = MLP((3, 4, 2)).double()
    buffer = io.BytesIO()
    dtrain.save_model(model, buffer)
    buffer.seek(0)
    loaded = dtrain.load_model(buffer)
    assert all(p.dtype == np.float64 for p in loaded.parameters())
    assert same_outputs(model, loaded, dtrain.randn(2, 3, dtype=dtrain.float64))


def test_save_model_refuses_unsavable_init_arguments(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2), WithCallable(2, fn=lambda x: x))
    with pytest.raises(TypeError, match=r"Sequential.__init__ argument 1 > WithCallable.__init__ "
                                        r"argument 'fn': function values cannot be stored"):
        dtrain.save_model(model, tmp_path / "bad.model")
    assert not os.listdir(tmp_path)


def test_save_model_refuses_local_classes(tmp_path):
    class Local(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="defined inside a function"):
        dtrain.save_model(Local(), tmp_path / "local.model")
    with pytest.raises(TypeError, match="expects a dtrain.nn.Module"):
        dtrain.save_model({"not": "a model"}, tmp_path / "dict.model")


def model_record(arch, state_dict=None) -> dict:
    return {"format": "dtrain.model", "version": 1, "arch": arch, "training": {},
            "requires_grad": {}, "state_dict": state_dict or {}}


@pytest.mark.parametrize("module_name, qualname, message", [
    ("os", "system", "os.system is not a dtrain.nn.Module subclass"),
    ("collections", "OrderedDict", "is not a dtrain.nn.Module subclass"),
    ("dtrain.autograd.tensor", "Tensor", "is not a dtrain.nn.Module subclass"),
    ("no_such_module_xyz", "Net", "cannot import module 'no_such_module_xyz'"),
    ("os; import sys", "x", "invalid class path"),
])
def test_load_model_refuses_non_module_classes(module_name, qualname, message, tmp_path):
    dtrain.save(model_record(["module", 0, module_name, qualname, [["value", "echo hi"]], []]),
                tmp_path / "evil.model")
    with pytest.raises(CheckpointError, match=message):
        dtrain.load_model(tmp_path / "evil.model")


def test_load_model_reports_mismatched_weights_and_plain_files(tmp_path):
    arch = ["module", 0, "dtrain.nn.linear", "Linear", [["value", 3], ["value", 2]], []]
    dtrain.save(model_record(arch, {"weight": np.zeros((2, 4), np.float32)}), tmp_path / "m")
    with pytest.raises(CheckpointError,
                       match=r"(?s)does not match the saved weights.*size mismatch"):
        dtrain.load_model(tmp_path / "m")
    dtrain.save(nn.Linear(2, 2).state_dict(), tmp_path / "sd")
    with pytest.raises(CheckpointError, match="not a dtrain.save_model file"):
        dtrain.load_model(tmp_path / "sd")
    dtrain.save(model_record(["value", 1]), tmp_path / "v")
    with pytest.raises(CheckpointError, match="arch is not a module"):
        dtrain.load_model(tmp_path / "v")


def test_load_model_reports_constructor_failures(tmp_path):
    arch = ["module", 0, "dtrain.nn.linear", "Linear", [["value", -1], ["value", 2]], []]
    dtrain.save(model_record(arch), tmp_path / "m")
    with pytest.raises(CheckpointError, match="constructing dtrain.nn.linear.Linear .*failed"):
        dtrain.load_model(tmp_path / "m")


def test_model_file_is_a_plain_checkpoint(tmp_path):
    """A model file loads with dtrain.load too: inspectable data, no code."""
    dtrain.save_model(nn.Sequential(nn.Linear(2, 3)), tmp_path / "m")
    record = dtrain.load(pathlib.Path(tmp_path / "m"))
    assert record["arch"][2:4] == ["dtrain.nn.container", "Sequential"]
    assert list(record["state_dict"]) == ["0.weight", "0.bias"]
