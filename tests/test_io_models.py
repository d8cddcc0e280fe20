"""Whole models: dtrain.save_model/load_model round trips and refused files."""

from __future__ import annotations

import io
import os
import pathlib
import sys
import types

import numpy as np
import pytest
from io_helpers import assert_same
from model_zoo import MLP, Outer, Residual, WithCallable

import dtrain
from dtrain import nn
from dtrain.io import CheckpointError, codec, container, models


def same_outputs(a, b, x):
    with dtrain.no_grad():
        return np.array_equal(a(x)._data, b(x)._data)


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
    assert np.array_equal(loaded[0].scale._data, np.full(5, 2.0, np.float32))
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
    ("no_such_module_xyz", "Net", "module 'no_such_module_xyz', which is not imported"),
    ("dtrain.no_such_module", "Net", "cannot import module 'dtrain.no_such_module'"),
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


def test_model_file_is_plain_data(tmp_path):
    """A model file is an ordinary checkpoint: its record decodes without running any code."""
    dtrain.save(nn.Sequential(nn.Linear(2, 3)), tmp_path / "m")
    _, tree, arrays = container.read(pathlib.Path(tmp_path / "m"))
    record = codec.decode(tree, arrays)
    assert record["arch"][2:4] == ["dtrain.nn.container", "Sequential"]
    assert list(record["state_dict"]) == ["0.weight", "0.bias"]


# ------------------------------------------------------ dtrain.save(model) / dtrain.load(PATH)
def test_save_module_and_load_with_weights_only_false(tmp_path):
    """PyTorch's save/load tutorial: ``torch.save(model, PATH)``; ``model = torch.load(PATH,
    weights_only=False)``; ``model.eval()``."""
    dtrain.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
    dtrain.save(model, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match=r"holds a whole model.*weights_only=True \(the "
                                              r"default.*dtrain.load\(f, weights_only=False\)"):
        dtrain.load(tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="weights_only=False"):
        dtrain.load(tmp_path / "model.pth", weights_only=True)
    loaded = dtrain.load(tmp_path / "model.pth", weights_only=False)
    assert type(loaded) is nn.Sequential
    loaded.eval()
    model.eval()
    assert same_outputs(model, loaded, dtrain.randn(3, 4))
    assert_same(dict(model.state_dict()), dict(loaded.state_dict()))


def test_whole_model_needs_weights_only_false_in_torch_too(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 3)
    torch.save(model, tmp_path / "torch.pth")
    with pytest.raises(Exception, match="weights_only"):
        torch.load(tmp_path / "torch.pth")
    assert type(torch.load(tmp_path / "torch.pth", weights_only=False)) is torch.nn.Linear
    dtrain.save(nn.Linear(2, 3), tmp_path / "dtrain.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        dtrain.load(tmp_path / "dtrain.pth")
    assert type(dtrain.load(tmp_path / "dtrain.pth", weights_only=False)) is nn.Linear


@pytest.mark.parametrize("weights_only", [None, True, False])
def test_state_dicts_and_optimizer_state_load_whatever_weights_only(weights_only, tmp_path):
    dtrain.manual_seed(4)
    model = MLP((3, 5, 2))
    optimizer = dtrain.optim.Adam(model.parameters(), lr=1e-2)
    model(dtrain.randn(4, 3)).sum().backward()
    optimizer.step()
    obj = {"model": dict(model.state_dict()), "optimizer": optimizer.state_dict(), "epoch": 3,
           "nested": {"a": [np.arange(3), (1, "x")], 7: dtrain.tensor([1.0])}}
    dtrain.save(obj, tmp_path / "ckpt")
    assert_same(obj, dtrain.load(tmp_path / "ckpt", weights_only=weights_only))
    assert_same(obj, dtrain.load(tmp_path / "ckpt", "cpu", weights_only=weights_only))


def test_load_model_takes_either_kind_of_whole_model_file(tmp_path):
    model = MLP((2, 3))
    dtrain.save(model, tmp_path / "a")
    dtrain.save_model(model, tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert same_outputs(model, dtrain.load_model(tmp_path / "a", map_location="cpu"),
                        dtrain.randn(2, 2))


def test_module_inside_a_container_gets_a_clear_error():
    with pytest.raises(TypeError, match=r"cannot save obj\['model'\]: a Linear module inside "
                                        r"another object .*state_dict\(\)"):
        dtrain.save({"model": nn.Linear(2, 2)}, io.BytesIO())


def test_weights_only_must_be_a_bool(tmp_path):
    dtrain.save({"a": 1}, tmp_path / "c")
    with pytest.raises(TypeError, match="weights_only must be True, False or None, got 'no'"):
        dtrain.load(tmp_path / "c", weights_only="no")


# ------------------------------------------------------------------------------ map_location
class CpuDevice:
    """Stands for ``dtrain.device('cpu')`` or ``torch.device('cpu')``: its str() is the location."""

    def __init__(self, name: str):
        self.name = name

    def __str__(self):
        return self.name


@pytest.mark.parametrize("location", [
    None, "cpu", "cpu:0", CpuDevice("cpu"), CpuDevice("cpu:0"), {"cuda:0": "cpu"},
    {"cpu": "cpu"}, {"cpu": CpuDevice("cpu")}, {"cuda:1": "cuda:0"}, lambda storage, loc: storage,
    lambda storage, loc: None,
], ids=repr)
def test_map_location_cpu_forms_are_accepted(location, tmp_path):
    obj = {"w": np.arange(6.0).reshape(2, 3), "t": dtrain.ones(2, requires_grad=True)}
    dtrain.save(obj, tmp_path / "c")
    assert_same(obj, dtrain.load(tmp_path / "c", map_location=location))
    model = MLP((2, 3))
    dtrain.save(model, tmp_path / "m")
    loaded = dtrain.load(tmp_path / "m", map_location=location, weights_only=False)
    assert_same(dict(model.state_dict()), dict(loaded.state_dict()))


def test_map_location_torch_device(tmp_path):
    torch = pytest.importorskip("torch")
    dtrain.save({"w": np.ones(2)}, tmp_path / "c")
    assert_same(dtrain.load(tmp_path / "c", map_location=torch.device("cpu")), {"w": np.ones(2)})
    with pytest.raises(RuntimeError, match="dtrain runs on the CPU only"):
        dtrain.load(tmp_path / "c", map_location=torch.device("cuda", 0))


@pytest.mark.parametrize("location, error, message", [
    ("cuda", RuntimeError, "asks for device .cuda., but dtrain runs on the CPU only"),
    ("cuda:1", RuntimeError, "dtrain runs on the CPU only"),
    ("mps", RuntimeError, "asks for device 'mps'"),
    (CpuDevice("cuda:0"), RuntimeError, "asks for device 'cuda:0'"),
    ({"cpu": "cuda:0"}, RuntimeError, r"map_location\['cpu'\]='cuda:0' asks for device"),
    ("not a device!", ValueError, "is not a device"),
    (3, TypeError, "map_location=3 is not a device"),
])
def test_map_location_other_devices_are_refused_before_reading(location, error, message, tmp_path):
    with pytest.raises(error, match=message):
        dtrain.load(tmp_path / "missing.pth", map_location=location)


def test_map_location_callable_sees_every_stored_array_once(tmp_path):
    a, t = np.arange(4.0), dtrain.zeros(3)
    dtrain.save({"a": a, "t": t, "again": a}, tmp_path / "c")
    seen = []

    def relocate(storage, location):
        seen.append((storage.shape, location))
        return storage * 2

    out = dtrain.load(tmp_path / "c", map_location=relocate)
    assert seen == [((4,), "cpu"), ((3,), "cpu")]
    assert_same(out["a"], a * 2)
    assert out["again"] is out["a"]
    with pytest.raises(TypeError, match="map_location returned list for a stored float64 array"):
        dtrain.load(tmp_path / "c", map_location=lambda storage, loc: [1])
    with pytest.raises(TypeError, match="the same shape and dtype"):
        dtrain.load(tmp_path / "c", map_location=lambda storage, loc: storage[:1])


# ------------------------------------------------------------- what a model file may import
PLUGIN = """
import pathlib
from dtrain import nn

pathlib.Path({marker!r}).write_text("imported")


class Net(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.lin = nn.Linear(n, n)

    def forward(self, x):
        return self.lin(x)
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A package ``dtrain_test_plugin_<n>.models`` on sys.path, not imported; importing it
    writes a marker file."""
    package = f"dtrain_test_plugin_{os.getpid()}_{len(os.listdir(tmp_path))}"
    marker = tmp_path / "imported.txt"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "models.py").write_text(PLUGIN.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    sd = {"lin.weight": np.zeros((2, 2), np.float32), "lin.bias": np.ones(2, np.float32)}
    dtrain.save(model_record(["module", 0, f"{package}.models", "Net", [["value", 2]], []], sd),
                tmp_path / "plugin.model")
    yield package, marker, tmp_path / "plugin.model"
    for name in (package, f"{package}.models"):
        sys.modules.pop(name, None)


def test_model_from_a_module_not_imported_is_refused_before_importing(plugin):
    package, marker, path = plugin
    message = (rf"names class Net from module '{package}.models', which is not imported.*"
               rf"allowed_modules=\['{package}.models'\]")
    with pytest.raises(CheckpointError, match=message):
        dtrain.load(path, weights_only=False)
    with pytest.raises(CheckpointError, match=message):
        dtrain.load_model(path, allowed_modules=["other", f"{package}.model"])
    assert not marker.exists() and f"{package}.models" not in sys.modules


@pytest.mark.parametrize("allow", ["module", "package"])
def test_allowed_modules_lets_a_trusted_module_be_imported(plugin, allow):
    package, marker, path = plugin
    name = package if allow == "package" else f"{package}.models"
    model = dtrain.load(path, weights_only=False, allowed_modules=[name])
    assert marker.exists() and type(model).__name__ == "Net"
    assert np.array_equal(model.lin.bias.detach().numpy(), np.ones(2, np.float32))
    marker.unlink()  # imported now: the next load needs no permission and imports nothing
    assert type(dtrain.load_model(path)).__name__ == "Net" and not marker.exists()


def test_allowed_modules_is_checked(tmp_path):
    dtrain.save(MLP((2, 2)), tmp_path / "m")
    with pytest.raises(TypeError, match="allowed_modules must be a list of module names, got str"):
        dtrain.load_model(tmp_path / "m", allowed_modules="model_zoo")
    with pytest.raises(ValueError, match="'os; x' is not a module name"):
        dtrain.load(tmp_path / "m", weights_only=False, allowed_modules=["os; x"])
    with pytest.raises(ValueError, match="allowed_modules applies to whole models, which load "
                                         "with weights_only=False"):
        dtrain.load(tmp_path / "m", allowed_modules=["model_zoo"])


@pytest.mark.parametrize("module_name, qualname", [
    ("model_zoo", "Missing"), ("model_zoo", "Outer.Missing"), ("__main__", "Net"),
])
def test_class_the_process_cannot_find_is_named(module_name, qualname, tmp_path):
    dtrain.save(model_record(["module", 0, module_name, qualname, [], []]), tmp_path / "m")
    with pytest.raises(CheckpointError, match=rf"the model's class {module_name}.{qualname} is "
                                              "not defined in this process"):
        dtrain.load(tmp_path / "m", weights_only=False)


def test_class_lookup_runs_no_module_getattr(tmp_path, monkeypatch):
    calls = []
    lazy = types.ModuleType("dtrain_test_lazy_module")
    lazy.__getattr__ = lambda name: calls.append(name) or nn.Linear
    monkeypatch.setitem(sys.modules, lazy.__name__, lazy)
    dtrain.save(model_record(["module", 0, lazy.__name__, "Linear", [], []]), tmp_path / "m")
    with pytest.raises(CheckpointError, match="is not defined in this process"):
        dtrain.load_model(tmp_path / "m")
    assert calls == []


# ---------------------------------------------------------------- memory a model file may ask
def peak_rss_growth(fn) -> int:
    """Bytes by which the process's peak resident memory grows while ``fn`` runs (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak (VmHWM) to the current resident size
    except OSError:
        pytest.skip("resetting the peak resident size needs Linux /proc/self/clear_refs")

    def peak() -> int:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    before = peak()
    fn()
    return peak() - before


def crafted_model_file(tmp_path, model, arch_args) -> pathlib.Path:
    """A real model's record whose recorded constructor arguments are replaced."""
    record = models.model_record(model)
    record["arch"][4] = [["value", a] for a in arch_args]
    dtrain.save(record, tmp_path / "crafted.model")
    return tmp_path / "crafted.model"


def test_tiny_file_asking_for_a_37_gib_linear_is_refused(tmp_path):
    path = crafted_model_file(tmp_path, nn.Linear(2, 2), [100000, 100000])
    assert path.stat().st_size < 1024
    with pytest.raises(CheckpointError, match=r"constructing dtrain.nn.linear.Linear from its "
                                              r"saved arguments (was stopped|ran out of memory)"):
        dtrain.load(path, weights_only=False)
    assert not dtrain.nn.module._global_parameter_registration_hooks
    assert not dtrain.nn.module._global_buffer_registration_hooks


@pytest.mark.parametrize("model, args, culprit", [
    (nn.Linear(2, 2), [12000, 12000], r"Linear.weight \(576000000 bytes\)"),
    (MLP((2, 3)), [(2, 20, 12000, 12000)], r"Linear.weight \(576000000 bytes\)"),
    (nn.BatchNorm1d(2), [150_000_000], r"BatchNorm1d.weight \(600000000 bytes\)"),
])
def test_constructor_over_the_memory_budget_is_stopped_before_filling(model, args, culprit,
                                                                       tmp_path):
    path = crafted_model_file(tmp_path, model, args)

    def load():
        with pytest.raises(CheckpointError, match=rf"was stopped: registering {culprit} brings the "
                                                  r"model to \d+ bytes, over the budget of"):
            dtrain.load(path, weights_only=False)

    # the weights are only reserved (np.empty), never written: the peak barely moves
    assert peak_rss_growth(load) < 100 << 20


def test_budget_leaves_models_that_match_their_weights_alone(tmp_path):
    model = nn.Sequential(nn.Linear(3000, 3000), nn.Linear(3000, 2000))  # 60 MB of weights
    dtrain.save(model, tmp_path / "big.model")
    loaded = dtrain.load(tmp_path / "big.model", weights_only=False)
    assert_same(dict(model.state_dict()), dict(loaded.state_dict()))


def test_model_record_with_tensor_state_dict_values_loads(tmp_path):
    """state_dict values may be Tensors (as torch's are), also for a model cast after building."""
    model = MLP((3, 4, 2)).double()
    record = models.model_record(model)
    record["state_dict"] = {k: dtrain.tensor(v) for k, v in record["state_dict"].items()}
    dtrain.save(record, tmp_path / "m")
    loaded = dtrain.load_model(tmp_path / "m")
    assert all(p.dtype == np.float64 for p in loaded.parameters())
    assert same_outputs(model, loaded, dtrain.randn(2, 3, dtype=dtrain.float64))
