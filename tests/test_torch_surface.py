"""The PyTorch API scripts actually type: ``.data``, dtype promotion, state dicts, devices,
printing, factories and Tensor methods, each against torch (where installed) and against a
closed form that needs no torch.

Reference cases build the same program for both libraries with ``m`` standing for the module
(``dtrain`` or ``torch``), as ``helpers.check`` does.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from helpers import check

import dtrain


def as_numpy(t) -> np.ndarray:
    """Values of a dtrain or torch tensor as a NumPy array."""
    return t._data if isinstance(t, dtrain.Tensor) else t.detach().numpy()


def dtype_name(t) -> str:
    """'float32', 'int64', ... for a dtrain or torch tensor."""
    return str(t.dtype).split(".")[-1]


# ====================================================================== 1. Tensor.data
SCORES = [[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]]


def test_data_is_a_tensor_so_old_accuracy_code_counts_right():
    out = dtrain.tensor(SCORES)
    predicted = out.data.max(1)[1]
    assert isinstance(predicted, dtrain.Tensor)
    np.testing.assert_array_equal(predicted._data, [1, 0, 2])
    target = dtrain.tensor([1, 0, 1])
    assert predicted.eq(target.data).sum().item() == 2


def test_data_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        out = m.tensor(SCORES, requires_grad=True) * 1
        d = out.data
        assert not d.requires_grad and d.grad_fn is None and d.is_leaf
        assert out.data.max(1)[1].tolist() == [1, 0, 2]
        assert (out.data.max(1)[1] == m.tensor([1, 0, 1])).sum().item() == 2
        assert out.data.size(0) == 3 and out.data.cpu().shape == (3, 3)


def test_data_shares_storage_and_is_not_recorded():
    p = dtrain.nn.Parameter(dtrain.zeros(3))
    p.data.add_(dtrain.ones(3), alpha=2)
    np.testing.assert_array_equal(p._data, [2.0, 2.0, 2.0])
    p.data.clamp_(max=1.5)
    p.data.mul_(2)
    p.data[0] = -1.0
    np.testing.assert_array_equal(p._data, [-1.0, 3.0, 3.0])
    p.data.copy_(dtrain.tensor([4.0, 5.0, 6.0]))
    np.testing.assert_array_equal(p._data, [4.0, 5.0, 6.0])
    dtrain.manual_seed(0)
    p.data.normal_(0, 0.01)
    assert np.abs(p._data).max() < 0.1
    assert p.grad_fn is None and p.requires_grad and p.is_leaf
    (p * p).sum().backward()
    np.testing.assert_allclose(p.grad._data, 2 * p._data)
    p.grad.data.zero_()
    np.testing.assert_array_equal(p.grad._data, 0.0)


def test_data_inplace_on_leaf_vs_torch():
    torch = pytest.importorskip("torch")
    results = {}
    for m in (dtrain, torch):
        m.manual_seed(0)
        w = m.nn.Parameter(m.tensor([1.0, -2.0, 3.0]))
        (w * m.tensor([1.0, 2.0, 3.0])).sum().backward()
        w.data.add_(w.grad.data, alpha=-0.5)   # an old-style SGD step
        w.grad.data.zero_()
        w.data.clamp_(-1.0, 1.0)
        results[m] = (as_numpy(w).copy(), as_numpy(w.grad).copy())
    for a, b in zip(results[dtrain], results[torch]):
        np.testing.assert_array_equal(a, b)


def test_data_assignment():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        p = m.nn.Parameter(m.zeros(3))
        new = m.ones(2, 2)
        p.data = new
        assert p.shape == (2, 2) and p.requires_grad
        new.add_(1)  # the parameter now uses new's storage
        assert p.sum().item() == 8.0
        with pytest.raises(TypeError, match="has to be a tensor"):
            p.data = [1.0, 2.0]
        with pytest.raises(RuntimeError, match="floating point"):
            p.data = m.zeros(2, dtype=m.int64)
        x = m.zeros(2)
        x.data = m.zeros(3, dtype=m.int64)
        assert dtype_name(x) == "int64"


def test_data_assignment_without_torch():
    p = dtrain.nn.Parameter(dtrain.zeros(3))
    src = dtrain.arange(4.0)
    p.data = src
    src[0] = 7.0
    assert p.tolist() == [7.0, 1.0, 2.0, 3.0] and p.requires_grad
    with pytest.raises(TypeError, match="list"):
        p.data = [1.0]


# ====================================================================== 2. dtype promotion
DTYPES = ["bool", "uint8", "int32", "int64", "float32", "float64"]
SCALARS = [True, 2, 2.5]
BINARY = {
    "add": lambda m, a, b: a + b, "sub": lambda m, a, b: a - b, "mul": lambda m, a, b: a * b,
    "div": lambda m, a, b: a / b, "floordiv": lambda m, a, b: a // b,
    "mod": lambda m, a, b: a % b, "pow": lambda m, a, b: a**b, "eq": lambda m, a, b: a == b,
    "lt": lambda m, a, b: a < b, "ge": lambda m, a, b: a >= b,
    "where": lambda m, a, b: m.where(m.tensor([True, False, True]), a, b),
}


def call_named(name: str, m, a):
    """``m.<name>(a)``: the unary function of that name in dtrain or torch."""
    return getattr(m, name)(a)


UNARY = {name: functools.partial(call_named, name)
         for name in ["sqrt", "exp", "log", "sigmoid", "tanh", "abs", "relu"]}
UNARY.update({
    "neg": lambda m, a: -a, "sign": lambda m, a: a.sign(), "sum": lambda m, a: a.sum(),
    "sum0": lambda m, a: a.sum(0), "mean": lambda m, a: a.mean(), "max": lambda m, a: a.max(),
    "amax": lambda m, a: m.amax(a, 0), "std": lambda m, a: a.std(), "var": lambda m, a: a.var(),
    "softmax": lambda m, a: m.softmax(a, 0), "log_softmax": lambda m, a: m.log_softmax(a, 0),
    "clamp_int": lambda m, a: m.clamp(a, 0, 2), "clamp_float": lambda m, a: m.clamp(a, 0, 2.5),
    "clamp_min_float": lambda m, a: a.clamp(min=1.5),
    "clamp_tensor": lambda m, a: m.clamp(a, m.tensor(0.5, dtype=m.float64), None),
})


def make(m, dtype: str, dim: bool):
    """A 3-vector (or a 0-d tensor) of ``dtype``, with a zero only among booleans."""
    values = [True, False, True] if dtype == "bool" else [1, 2, 3]
    return m.tensor(values if dim else values[0], dtype=getattr(m, dtype))


def outcome(m, fn, args: tuple):
    """('dtype', values) of ``fn(m, *args)``, or ('error', exception type name)."""
    try:
        out = fn(m, *args)
    except Exception as exc:  # noqa: BLE001 - the error type is what is compared
        return "error", type(exc).__name__
    return dtype_name(out), np.asarray(as_numpy(out), dtype=np.float64)


def assert_same_outcome(fn, *args):
    """``fn(m, *args)`` gives the same dtype and values, or the same error type, in both."""
    torch = pytest.importorskip("torch")
    (dt, dv), (tt, tv) = (outcome(m, fn, args) for m in (dtrain, torch))
    assert dt == tt, (dt, dv, tt, tv)
    if dt == "error":
        assert dv == tv
    else:
        np.testing.assert_allclose(dv, tv, rtol=1e-6, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [True, False], ids=["nd", "0d"])
def test_promotion_tensor_with_python_scalar(op, dtype, dim):
    for scalar in SCALARS:
        assert_same_outcome(lambda m, s: BINARY[op](m, make(m, dtype, dim), s), scalar)
        if op != "where":
            assert_same_outcome(lambda m, s: BINARY[op](m, s, make(m, dtype, dim)), scalar)


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("left", DTYPES)
def test_promotion_tensor_with_tensor(op, left):
    for right in DTYPES:
        for dims in [(True, True), (True, False), (False, True), (False, False)]:
            assert_same_outcome(lambda m, r, d: BINARY[op](m, make(m, left, d[0]),
                                                           make(m, r, d[1])), right, dims)


@pytest.mark.parametrize("op", sorted(UNARY))
@pytest.mark.parametrize("dtype", DTYPES)
def test_promotion_unary_and_reductions(op, dtype):
    for dim in (True, False):
        if op in ("std", "var") and not dim:
            continue  # torch warns about zero degrees of freedom
        assert_same_outcome(lambda m, d: UNARY[op](m, make(m, dtype, d)), dim)


INPLACE = {
    "int += float": lambda m: m.tensor([1, 2]).__iadd__(1.5),
    "int.add_(float)": lambda m: m.tensor([1, 2]).add_(1.5),
    "int *= int": lambda m: m.tensor([1, 2]).__imul__(3),
    "float += int tensor": lambda m: m.tensor([1.0, 2.0]).__iadd__(m.tensor([1, 2])),
    "float32 += float64": lambda m: m.tensor([1.0, 2.0]).__iadd__(
        m.tensor([1.0, 2.0], dtype=m.float64)),
    "int /= 2": lambda m: m.tensor([1, 2]).__itruediv__(2),
    "bool += 1": lambda m: m.tensor([True, False]).__iadd__(1),
    "int.clamp_(float)": lambda m: m.tensor([1, 2]).clamp_(0, 1.5),
    "int.sqrt_()": lambda m: m.tensor([1, 4]).sqrt_(),
    "int.mul_(bool)": lambda m: m.tensor([1, 2]).mul_(True),
    "uint8 -= 1": lambda m: m.tensor([1, 2], dtype=m.uint8).__isub__(1),
    "int.fill_(float)": lambda m: m.tensor([1, 2]).fill_(2.7),
    "int.copy_(float)": lambda m: m.tensor([1, 2]).copy_(m.tensor([1.7, -1.7])),
}


@pytest.mark.parametrize("name", sorted(INPLACE))
def test_inplace_promotion_vs_torch(name):
    assert_same_outcome(INPLACE[name])


def test_promotion_without_torch():
    out = dtrain.clamp(dtrain.tensor([1, 5]), 0, 2.5)
    assert out.dtype == dtrain.float32 and out.tolist() == [1.0, 2.5]
    for fn in (dtrain.sqrt, dtrain.exp, dtrain.log, dtrain.sigmoid, dtrain.tanh):
        assert fn(dtrain.tensor([1, 2])).dtype == dtrain.get_default_dtype()
        assert fn(dtrain.tensor([True])).dtype == dtrain.float32
    assert dtrain.sigmoid(dtrain.tensor([0])).item() == 0.5
    assert (dtrain.tensor([1, 2], dtype=dtrain.uint8).sum()).dtype == dtrain.int64
    assert (dtrain.tensor([7, -7]) // 2).tolist() == [3, -4]
    assert (dtrain.tensor([7, -7]) % 3).tolist() == [1, 2]
    assert (7.5 % dtrain.tensor([2.0])).tolist() == [1.5]
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        dtrain.tensor([1]) // 0
    with pytest.raises(RuntimeError, match="bool tensor"):
        dtrain.tensor([True]) - 1
    with pytest.raises(RuntimeError, match="floating point"):
        dtrain.tensor([1, 2]).std()


def test_promoted_ops_keep_gradients():
    check(lambda m, x: m.clamp(x, -0.5, 0.5), (3, 4))
    check(lambda m, x, y: x % y, (3, 4), np.full(4, 0.7))
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y = dtrain.clamp(x.double(), 0, 1.5)
    y.sum().backward()
    assert y.dtype == dtrain.float64 and x.grad.tolist() == [1.0, 0.0]


# ====================================================================== 3. state_dict values
def test_state_dict_values_are_tensors_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        m.manual_seed(0)
        net = m.nn.Sequential(m.nn.Linear(3, 2), m.nn.BatchNorm1d(2))
        sd = net.state_dict()
        w = sd["0.weight"]
        assert isinstance(w, m.Tensor) and not w.requires_grad and w.grad_fn is None
        assert w.size() == (2, 3) and w.size(1) == 3 and sd["1.num_batches_tracked"].dim() == 0
        snapshot = w.clone()
        assert m.equal(snapshot, w)
        with m.no_grad():
            net[0].weight.add_(1.0)
        # values share memory with the model (as torch's); the clone is a snapshot
        assert m.equal(sd["0.weight"], net[0].weight.detach())
        assert not m.equal(snapshot, w)
        other = m.nn.Sequential(m.nn.Linear(3, 2), m.nn.BatchNorm1d(2))
        other.load_state_dict({k: v.clone() for k, v in sd.items()})
        assert all(m.equal(a, b) for a, b in zip(other.state_dict().values(), sd.values()))


def test_load_state_dict_accepts_tensors_and_arrays():
    a, b = dtrain.nn.Linear(3, 2), dtrain.nn.Linear(3, 2)
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()})
    assert dtrain.equal(a.weight, b.weight)
    arrays = {k: np.full(v.shape, 0.5, np.float32) for k, v in a.state_dict().items()}
    b.load_state_dict(arrays)
    assert b.weight.tolist() == [[0.5] * 3] * 2 and b.weight.requires_grad
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        b.load_state_dict({"weight": dtrain.zeros(3, 3), "bias": dtrain.zeros(2)})


def test_state_dict_save_load_round_trip(tmp_path):
    net = dtrain.nn.Sequential(dtrain.nn.Linear(3, 2), dtrain.nn.BatchNorm1d(2))
    net(dtrain.randn(4, 3))
    dtrain.save(net.state_dict(), tmp_path / "sd.dtrain")
    loaded = dtrain.load(tmp_path / "sd.dtrain")
    assert list(loaded) == list(net.state_dict())
    assert all(isinstance(v, dtrain.Tensor) for v in loaded.values())
    fresh = dtrain.nn.Sequential(dtrain.nn.Linear(3, 2), dtrain.nn.BatchNorm1d(2))
    fresh.load_state_dict(loaded)
    for (k, v), w in zip(net.state_dict().items(), fresh.state_dict().values()):
        assert v.dtype == w.dtype and dtrain.equal(v, w), k
    model_path = tmp_path / "model.dtrain"
    dtrain.save_model(net.double(), model_path)
    assert dtrain.load_model(model_path)[0].weight.dtype == dtrain.float64


def test_optimizer_state_dict_layout_vs_torch():
    torch = pytest.importorskip("torch")
    layouts = []
    for m in (dtrain, torch):
        net = m.nn.Linear(2, 1)
        opt = m.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        net(m.ones(1, 2)).sum().backward()
        opt.step()
        sd = opt.state_dict()
        layouts.append((sorted(sd), sorted(sd["state"]), sorted(sd["state"][0]),
                        sd["param_groups"][0]["params"]))
        opt.load_state_dict(sd)
    assert layouts[0] == layouts[1]


# ====================================================================== 4. devices
FACTORIES = {
    "zeros": lambda m, d: m.zeros(2, 3, device=d), "ones": lambda m, d: m.ones(2, device=d),
    "empty": lambda m, d: m.empty(2, device=d), "full": lambda m, d: m.full((2,), 1.5, device=d),
    "randn": lambda m, d: m.randn(2, device=d), "rand": lambda m, d: m.rand(2, device=d),
    "tensor": lambda m, d: m.tensor([1, 2], device=d),
    "arange": lambda m, d: m.arange(3, device=d), "eye": lambda m, d: m.eye(2, device=d),
    "linspace": lambda m, d: m.linspace(0, 1, 3, device=d),
    "randint": lambda m, d: m.randint(0, 5, (3,), device=d),
    "zeros_like": lambda m, d: m.zeros_like(m.ones(2), device=d),
    "full_like": lambda m, d: m.full_like(m.ones(2), 3, device=d),
}


def test_device_objects_vs_torch():
    torch = pytest.importorskip("torch")
    for spec in ["cpu", "cpu:0", "cuda", "cuda:1", "mps"]:
        assert repr(dtrain.device(spec)) == repr(torch.device(spec))
        assert str(dtrain.device(spec)) == str(torch.device(spec))
    assert repr(dtrain.device(type="cpu")) == repr(torch.device(type="cpu"))
    assert repr(dtrain.device("cpu", 0)) == repr(torch.device("cpu", 0))
    assert dtrain.device("cpu") == dtrain.device("cpu") != dtrain.device("cpu:0")
    assert dtrain.device("cpu").type == "cpu" and dtrain.device("cpu:0").index == 0
    assert str(dtrain.zeros(1).device) == str(torch.zeros(1).device) == "cpu"
    for bad in ["garbage", "cpu:x"]:
        with pytest.raises(RuntimeError):
            torch.device(bad)
        with pytest.raises(RuntimeError, match="CPU only"):
            dtrain.device(bad)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_factories_take_the_cpu_device(name):
    make_fn = FACTORIES[name]
    for spec in ["cpu", "cpu:0", dtrain.device("cpu"), None]:
        assert make_fn(dtrain, spec).device == dtrain.device("cpu")
    for spec in ["cuda", "cuda:1", "mps", dtrain.device("cuda")]:
        with pytest.raises(dtrain.DeviceUnavailableError, match=f"'{spec}'.*CPU only"):
            make_fn(dtrain, spec)


def test_unavailable_devices_raise_torchs_error_types():
    torch = pytest.importorskip("torch")
    x, net = dtrain.zeros(2), dtrain.nn.Linear(2, 2)
    # torch raises AssertionError for CUDA on a CPU build and RuntimeError for mps
    for error in (AssertionError, RuntimeError):
        with pytest.raises(error, match="not available"):
            x.to("cuda")
        with pytest.raises(error, match="not available"):
            net.cuda()
    with pytest.raises(AssertionError):
        torch.zeros(2).to("cuda")
    with pytest.raises(RuntimeError):
        torch.zeros(2).to("mps")
    with pytest.raises(RuntimeError, match="'mps' is not available"):
        x.to("mps")
    with pytest.raises(RuntimeError, match="'cuda:1'"):
        dtrain.nn.Linear(2, 2, device="cuda:1")
    with pytest.raises(RuntimeError, match="'cuda'"):
        x.cuda()


def test_to_forms_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        x = m.tensor([1.5, 2.5], requires_grad=True)
        assert x.to("cpu") is x and x.to(m.device("cpu")) is x and x.cpu() is x
        assert x.to(m.float32) is x and x.to("cpu", copy=True) is not x
        y = x.to("cpu", m.float64)
        assert dtype_name(y) == "float64" and y.grad_fn is not None
        assert dtype_name(x.to(m.tensor([1], dtype=m.int32))) == "int32"
        assert dtype_name(x.to(device="cpu", dtype=m.float64, non_blocking=True)) == "float64"
        assert dtype_name(x.to(dtype=m.int32)) == "int32"
        y.sum().backward()
        assert x.grad.tolist() == [1.0, 1.0] and dtype_name(x.grad) == "float32"
        net = m.nn.Linear(2, 1, device="cpu")
        assert net.to("cpu") is net and net.cpu() is net
        assert dtype_name(net.to("cpu", m.float64).weight) == "float64"
        assert dtype_name(net.to(m.zeros(1, dtype=m.float32)).weight) == "float32"
        with pytest.raises(TypeError, match="floating point"):
            net.to(m.int64)
        for layer in (m.nn.Conv2d(1, 1, 3, device="cpu"), m.nn.BatchNorm1d(2, device="cpu"),
                      m.nn.LayerNorm(2, device="cpu"), m.nn.Embedding(3, 2, device="cpu")):
            assert str(layer.weight.device) == "cpu"


def test_accelerator_queries_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        assert m.cuda.is_available() is False and m.cuda.device_count() == 0
        m.cuda.manual_seed_all(0)
        m.cuda.manual_seed(0)
        assert m.accelerator.is_available() is False
        assert m.accelerator.current_accelerator() is None
        assert m.accelerator.device_count() == 0
        for name in ("current_device_index", "synchronize", "empty_cache", "memory_allocated",
                     "max_memory_allocated", "memory_stats", "reset_peak_memory_stats",
                     "current_stream", "get_memory_info"):
            with pytest.raises(RuntimeError, match="none is available"):
                getattr(m.accelerator, name)()
        with m.accelerator.device_index(None):
            pass
        assert m.backends.mps.is_available() is False and m.backends.mps.is_built() is False
        assert m.backends.cudnn.is_available() is False
        with pytest.raises(AssertionError):
            m.cuda.current_device()
    from dtrain.backends import cudnn

    cudnn.deterministic, cudnn.benchmark = True, False  # reproducibility preambles run
    acc = dtrain.accelerator.current_accelerator()
    device = acc.type if dtrain.accelerator.is_available() else "cpu"
    assert dtrain.ones(2, device=device).device.type == "cpu"


def test_device_arguments_survive_save_model(tmp_path):
    net = dtrain.nn.Linear(2, 1, device=dtrain.device("cpu"))
    dtrain.save_model(net, tmp_path / "m.dtrain")
    loaded = dtrain.load_model(tmp_path / "m.dtrain")
    assert dtrain.equal(loaded.weight, net.weight)


# ====================================================================== 5. printing, Size, dtype
REPR_CASES = {
    "float matrix": lambda m: m.tensor([[1.0, 2.5], [3.0, 4.0]]),
    "int vector": lambda m: m.tensor([1, 2, 3]), "bool": lambda m: m.tensor([True, False]),
    "0-d float": lambda m: m.tensor(3.5), "0-d int": lambda m: m.tensor(7),
    "float64": lambda m: m.tensor([1.0, 2.0], dtype=m.float64),
    "int32": lambda m: m.tensor([1, 2], dtype=m.int32),
    "uint8": lambda m: m.tensor([1, 2], dtype=m.uint8),
    "float16": lambda m: m.tensor([1.5, 2], dtype=m.float16),
    "empty": lambda m: m.zeros(0), "empty 2-d": lambda m: m.zeros(2, 0),
    "empty int": lambda m: m.zeros(0, dtype=m.int64),
    "scientific": lambda m: m.tensor([1e-5, 1e5]),
    "nan inf": lambda m: m.tensor([float("nan"), float("inf"), 1.0]),
    "summarized": lambda m: m.arange(2000.0), "3-d": lambda m: m.arange(24).reshape(2, 3, 4),
    "leaf": lambda m: m.tensor([1.0, 2.0], requires_grad=True),
    "grad_fn": lambda m: m.tensor([1.0, 2.0], requires_grad=True) * 2,
    "parameter": lambda m: m.nn.Parameter(m.ones(2)),
    "shape": lambda m: m.ones(2, 3).shape, "size": lambda m: m.ones(2, 3).size(),
    "size slice": lambda m: m.ones(2, 3, 4).shape[1:], "size 0-d": lambda m: m.tensor(1).shape,
    "dtype float32": lambda m: m.ones(2).dtype, "dtype int64": lambda m: m.int64,
    "dtype bool": lambda m: m.bool, "dtype half": lambda m: m.half,
    "dtype default": lambda m: m.get_default_dtype(),
    "type name": lambda m: m.ones(2).type(), "long type name": lambda m: m.ones(2).long().type(),
    "max values indices": lambda m: m.tensor([[1.0, 3.0], [4.0, 2.0]]).max(1),
}


@pytest.mark.parametrize("name", sorted(REPR_CASES))
def test_repr_and_str_vs_torch(name):
    torch = pytest.importorskip("torch")
    make_fn = REPR_CASES[name]
    for show in (repr, str):
        assert show(make_fn(dtrain)) == show(make_fn(torch)).replace("torch", "dtrain")


def test_size_is_a_tuple():
    s = dtrain.zeros(2, 3).shape
    assert isinstance(s, tuple) and type(s) is dtrain.Size and s == (2, 3) and s != [2, 3]
    assert hash(s) == hash((2, 3)) and {s: 1}[(2, 3)] == 1
    assert repr(s) == "dtrain.Size([2, 3])" and s.numel() == 6 and dtrain.Size([]).numel() == 1
    assert type(s[1:]) is dtrain.Size and type(s + (4,)) is dtrain.Size
    assert type((1,) + s) is dtrain.Size and s[0] == 2 and type(s[0]) is int
    assert dtrain.zeros(s).shape == s and dtrain.ones(2, 3).size() == s
    n, c = s
    assert (n, c) == (2, 3)


def test_dtypes_print_like_torch_and_stay_numpy_compatible():
    x = dtrain.zeros(2)
    assert repr(x.dtype) == str(x.dtype) == "dtrain.float32" and x.dtype is dtrain.float32
    assert x.dtype == np.float32 and x.dtype == np.dtype("float32") and x.dtype == "float32"
    assert np.dtype("float32") == x.dtype and np.float32 == x.dtype
    assert x.dtype != np.float64 and x.dtype != dtrain.float64 and x.dtype != "cpu"
    assert x.dtype != None
    assert dtrain.float is dtrain.float32 and dtrain.long is dtrain.int64
    assert dtrain.double is dtrain.float64 and dtrain.half is dtrain.float16
    assert dtrain.int is dtrain.int32 and dtrain.bool is dtrain.bool_
    assert np.zeros(2, x.dtype).dtype == np.float32
    assert np.arange(3).astype(dtrain.float64).dtype == np.float64
    assert x.dtype.kind == "f" and x.dtype.itemsize == 4 and x.dtype.is_floating_point
    assert not dtrain.int64.is_floating_point and dtrain.int64.is_signed
    assert not dtrain.uint8.is_signed and not dtrain.bool.is_signed
    assert {dtrain.float32: "f"}[np.dtype("float32")] == "f"
    assert dtrain.tensor([1, 2], dtype=np.int32).dtype is dtrain.int32
    assert dtrain.tensor([1, 2], dtype="float64").dtype is dtrain.float64
    assert dtrain.zeros(2).type("torch.DoubleTensor").dtype is dtrain.float64


def test_dtype_objects_round_trip_through_save(tmp_path):
    dtrain.save({"dtype": dtrain.float64, "shape": dtrain.zeros(2, 3).shape}, tmp_path / "x")
    loaded = dtrain.load(tmp_path / "x")
    assert loaded["dtype"] == dtrain.float64 and loaded["shape"] == (2, 3)
    net = dtrain.nn.Linear(2, 1, dtype=dtrain.float64)
    dtrain.save_model(net, tmp_path / "m")
    assert dtrain.load_model(tmp_path / "m").weight.dtype == dtrain.float64


# ====================================================================== 6. factories, functions
def test_like_factories_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        base = m.ones(2, 3, dtype=m.float64)
        for fn in (m.zeros_like, m.ones_like, m.empty_like, m.rand_like, m.randn_like):
            assert fn(base).shape == (2, 3) and dtype_name(fn(base)) == "float64"
            assert dtype_name(fn(base, dtype=m.float32)) == "float32"
            assert fn(base, requires_grad=True).requires_grad
        assert dtype_name(m.zeros_like(base, dtype=m.int64)) == "int64"
        assert m.full_like(base, 7, dtype=m.int32).tolist() == [[7, 7, 7]] * 2
        assert m.zeros_like(m.tensor([1, 2])).tolist() == [0, 0]
        for fn in (m.rand_like, m.randn_like):
            with pytest.raises(NotImplementedError):
                fn(m.tensor([1, 2]))
        assert m.randint(5, (4,)).shape == (4,) and m.randint(3, 5, (2, 2)).shape == (2, 2)


def test_rand_like_draws_from_the_global_generator():
    base = dtrain.zeros(1000)
    dtrain.manual_seed(3)
    u, n = dtrain.rand_like(base), dtrain.randn_like(base)
    dtrain.manual_seed(3)
    assert dtrain.equal(u, dtrain.rand(1000)) and dtrain.equal(n, dtrain.randn(1000))
    assert 0.0 <= u.min().item() and u.max().item() < 1.0 and abs(u.mean().item() - 0.5) < 0.05
    assert abs(n.mean().item()) < 0.1 and abs(n.std().item() - 1.0) < 0.1


def test_legacy_tensor_constructor_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        t = m.Tensor(2, 3)
        assert t.shape == (2, 3) and dtype_name(t) == "float32" and not t.requires_grad
        assert m.Tensor(m.Size([4, 1])).shape == (4, 1)
        d = m.Tensor([1, 2])
        assert d.tolist() == [1.0, 2.0] and dtype_name(d) == "float32"
        assert m.Tensor((2, 3)).tolist() == [2.0, 3.0]
        assert m.Tensor(np.array([1, 2])).tolist() == [1.0, 2.0]
        assert m.Tensor().shape == (0,) and dtype_name(m.Tensor()) == "float32"
        src = m.tensor([1, 2])
        alias = m.Tensor(src)
        assert dtype_name(alias) == "int64"
        alias[0] = 5
        assert src[0].item() == 5
        with pytest.raises(TypeError, match="must be a sequence"):
            m.Tensor(2.5)
        with pytest.raises(RuntimeError, match="negative dimension"):
            m.Tensor(-1)
        assert isinstance(m.tensor([1.0]), m.Tensor) and isinstance(m.nn.Parameter(t), m.Tensor)
    assert dtrain.Tensor(2, 3, device="cpu").tolist() == [[0.0] * 3] * 2  # repeatable contents


OUT_CASES = {
    "add": lambda m, a, b, o: m.add(a, b, out=o), "sub": lambda m, a, b, o: m.sub(a, b, out=o),
    "mul": lambda m, a, b, o: m.mul(a, b, out=o), "div": lambda m, a, b, o: m.div(a, b, out=o),
    "pow": lambda m, a, b, o: m.pow(a, b, out=o),
    "maximum": lambda m, a, b, o: m.maximum(a, b, out=o),
    "minimum": lambda m, a, b, o: m.minimum(a, b, out=o),
    "matmul": lambda m, a, b, o: m.matmul(a.reshape(1, 2), b.reshape(2, 1), out=o),
    "exp": lambda m, a, b, o: m.exp(a, out=o), "log": lambda m, a, b, o: m.log(a, out=o),
    "sqrt": lambda m, a, b, o: m.sqrt(a, out=o), "tanh": lambda m, a, b, o: m.tanh(a, out=o),
    "sigmoid": lambda m, a, b, o: m.sigmoid(a, out=o), "abs": lambda m, a, b, o: m.abs(a, out=o),
    "neg": lambda m, a, b, o: m.neg(a, out=o),
    "clamp": lambda m, a, b, o: m.clamp(a, 1.5, 3.0, out=o),
    "where": lambda m, a, b, o: m.where(a > 1.5, a, b, out=o),
    "sum": lambda m, a, b, o: m.sum(a, 0, out=o), "mean": lambda m, a, b, o: m.mean(a, 0, out=o),
    "cat": lambda m, a, b, o: m.cat([a, b], out=o),
    "stack": lambda m, a, b, o: m.stack([a, b], 1, out=o),
    "floor_divide": lambda m, a, b, o: m.floor_divide(a, b, out=o),
    "remainder": lambda m, a, b, o: m.remainder(a, b, out=o),
}


@pytest.mark.parametrize("name", sorted(OUT_CASES))
def test_out_argument_vs_torch(name):
    torch = pytest.importorskip("torch")
    fn = OUT_CASES[name]
    results = []
    for m in (dtrain, torch):
        a, b = m.tensor([1.0, 2.0]), m.tensor([3.0, 0.5])
        expected = fn(m, a, b, None)
        out = m.empty(expected.shape)
        returned = fn(m, a, b, out)
        assert returned is out and dtype_name(out) == "float32"
        results.append(as_numpy(out).copy())
        np.testing.assert_allclose(as_numpy(out), as_numpy(expected), rtol=1e-6)
        needs_grad = m.tensor([1.0, 2.0], requires_grad=True)
        if name == "floor_divide":  # not differentiable: out= is fine
            fn(m, needs_grad, b, m.empty(expected.shape))
        else:
            with pytest.raises(RuntimeError, match="out=... arguments don't support automatic"):
                fn(m, needs_grad, b, m.empty(expected.shape))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_out_argument_rules_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        a = m.tensor([1.0, 2.0])
        with pytest.raises(RuntimeError, match="can't be cast to the desired output type Long"):
            m.add(a, 1, out=m.zeros(2, dtype=m.int64))
        wide = m.zeros(2, dtype=m.float64)
        assert m.add(m.tensor([1, 2]), 1, out=wide) is wide and dtype_name(wide) == "float64"
        assert wide.tolist() == [2.0, 3.0]
        out = m.empty(0)
        m.add(a, 1, out=out)  # an empty out is resized silently
        assert out.tolist() == [2.0, 3.0]
        with pytest.warns(UserWarning, match="resized"):
            m.mul(a, 2, out=m.zeros(5))
        with m.no_grad():
            out = m.zeros(2)
            m.add(m.tensor([1.0, 2.0], requires_grad=True), 1, out=out)
        assert out.tolist() == [2.0, 3.0] and not out.requires_grad


def test_alpha_and_rounding_mode_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        x, y = m.tensor([5.0, -5.0, 7.5]), m.tensor([2.0, 2.0, -2.0])
        i, j = m.tensor([5, -5, 7]), m.tensor([2, 2, -2])
        assert m.add(x, y, alpha=2).tolist() == [9.0, -1.0, 3.5]
        assert m.sub(x, y, alpha=0.5).tolist() == [4.0, -6.0, 8.5]
        assert x.add(y, alpha=-1).tolist() == m.sub(x, y).tolist()
        assert m.add(i, j, alpha=3).tolist() == [11, 1, 1]
        with pytest.raises(RuntimeError, match="alpha must not be a floating point"):
            m.add(i, j, alpha=0.5)
        z = x.clone()
        z.sub_(y, alpha=2)
        assert z.tolist() == [1.0, -9.0, 11.5]
        for mode, fx, fi in [(None, [2.5, -2.5, -3.75], [2.5, -2.5, -3.5]),
                             ("trunc", [2.0, -2.0, -3.0], [2, -2, -3]),
                             ("floor", [2.0, -3.0, -4.0], [2, -3, -4])]:
            assert m.div(x, y, rounding_mode=mode).tolist() == fx
            assert x.div(y, rounding_mode=mode).tolist() == fx
            assert m.div(i, j, rounding_mode=mode).tolist() == fi
            assert dtype_name(m.div(i, j, rounding_mode=mode)) == ("float32" if mode is None
                                                                  else "int64")
        with pytest.raises(RuntimeError, match="rounding_mode to be one of"):
            m.div(x, y, rounding_mode="round")
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            m.div(i, 0, rounding_mode="floor")
        w = m.tensor([1.0, 2.0], requires_grad=True)
        m.div(w * 3, 2, rounding_mode="floor").sum().backward()
        assert w.grad.tolist() == [0.0, 0.0]


def test_factories_and_function_forms_without_torch():
    t = dtrain.Tensor(2, 3)
    assert t.shape == (2, 3) and t.dtype is dtrain.float32 and not t._data.any()
    assert dtrain.Tensor([1, 2]).tolist() == [1.0, 2.0] and dtrain.Tensor().numel() == 0
    out = dtrain.empty(3)
    assert dtrain.add(dtrain.tensor([1.0, 2.0, 3.0]), 1.0, alpha=2, out=out) is out
    assert out.tolist() == [3.0, 4.0, 5.0]
    assert dtrain.div(dtrain.tensor([-7, 7]), 2, rounding_mode="trunc").tolist() == [-3, 3]
    assert dtrain.div(dtrain.tensor([-7, 7]), 2, rounding_mode="floor").tolist() == [-4, 3]
    assert dtrain.div(dtrain.tensor([-7.0]), 2.0).tolist() == [-3.5]
    assert dtrain.sum(dtrain.tensor([1, 2]), dtype=dtrain.float64).dtype is dtrain.float64
    assert dtrain.where(dtrain.tensor([0, 3, 0, 4]) > 0)[0].tolist() == [1, 3]
    like = dtrain.randn_like(dtrain.zeros(2, 2, dtype=dtrain.float64))
    assert like.shape == (2, 2) and like.dtype is dtrain.float64


def test_functional_forms_gradients():
    check(lambda m, x, y: m.add(x, y, alpha=2.5), (3, 4), (4,))
    check(lambda m, x, y: m.sub(x, y, alpha=-0.5), (3,), (2, 3))
    check(lambda m, x, y: m.mul(x, y), (2, 3), (2, 3))
    check(lambda m, x, y: m.div(x, y), (2, 3), np.full((2, 3), 1.5))
    check(lambda m, x: m.clamp(x, -0.3, 0.3) + m.sigmoid(x) * m.tanh(x), (5,))


# ====================================================================== 7. Tensor methods
RNG = np.random.default_rng(11)


def distinct(*shape) -> np.ndarray:
    """Well-separated values in random order: no ties for sort/topk, no kinks for norms."""
    n = int(np.prod(shape))
    return ((RNG.permutation(n) - n / 2 + 0.25) / 3).reshape(shape)


INDEX = np.array([[0, 2, 1], [1, 0, 0]])
MASK = np.array([[True, False, True, False], [False, False, True, True],
                 [True, True, False, False]])

GRADIENT_CASES = {
    "gather dim1": (lambda m, x, i: x.gather(1, i), (3, 4), INDEX),
    "gather dim0 repeats": (lambda m, x, i: m.gather(x, 0, i), (3, 4), INDEX),
    "scatter src": (lambda m, x, i, s: x.scatter(1, i, s), (2, 4), np.array([[0, 3], [1, 2]]),
                    (2, 2)),
    "scatter_ on clone": (lambda m, x, s: x.clone().scatter_(0, m.tensor([[1, 0, 2]]), s),
                          (3, 3), (1, 3)),
    "scatter value": (lambda m, x: x.scatter(1, m.tensor([[0], [2]]), 2.5), (2, 3)),
    "scatter_add": (lambda m, x, s: x.scatter_add(0, m.tensor([[0, 1], [0, 1]]), s), (2, 2),
                    (2, 2)),
    "masked_fill": (lambda m, x, k: x.masked_fill(k, -1.5), (3, 4), MASK),
    "masked_fill broadcast": (lambda m, x: x.masked_fill(m.tensor([True, False, True]), 0.0),
                              (2, 3)),
    "masked_fill_ on clone": (lambda m, x, k: x.clone().masked_fill_(k, 2.0) * x, (3, 4), MASK),
    "where method": (lambda m, x, y, k: x.where(k, y), (3, 4), (3, 4), MASK),
    "repeat": (lambda m, x: x.repeat(2, 3), (2, 3)),
    "repeat new dims": (lambda m, x: x.repeat(2, 1, 2), (3,)),
    "expand": (lambda m, x: x.expand(2, 3, 4), (3, 1)),
    "expand -1": (lambda m, x: x.expand(4, -1), (1, 3)),
    "expand_as": (lambda m, x, y: x.expand_as(y) * y, (1, 4), (3, 4)),
    "cumsum": (lambda m, x: x.cumsum(1), (3, 4)),
    "cumsum dim0": (lambda m, x: m.cumsum(x, dim=0), (3, 4)),
    "topk": (lambda m, x: x.topk(2, dim=1).values, distinct(3, 5)),
    "topk smallest": (lambda m, x: m.topk(x, 3, 0, largest=False)[0], distinct(4, 2)),
    "sort": (lambda m, x: x.sort(dim=0).values, distinct(4, 3)),
    "sort descending": (lambda m, x: m.sort(x, descending=True)[0], distinct(2, 5)),
    "norm": (lambda m, x: x.norm(), distinct(3, 4)),
    "norm p1 dim": (lambda m, x: x.norm(1, dim=1), distinct(3, 4)),
    "norm p3 keepdim": (lambda m, x: x.norm(3, dim=0, keepdim=True), distinct(3, 4)),
    "norm inf": (lambda m, x: x.norm(float("inf"), dim=1), distinct(3, 4)),
    "norm function": (lambda m, x: m.norm(x, dim=(0, 1)), distinct(2, 3)),
    "chunk": (lambda m, x: m.cat([c * (i + 1) for i, c in enumerate(x.chunk(3, 1))], 1),
              (2, 5)),
    "split sizes": (lambda m, x: m.cat([c * (i + 1) for i, c in enumerate(x.split([1, 3]))]),
                    (4, 2)),
    "split size": (lambda m, x: m.stack([c.sum() for c in m.split(x, 2, dim=1)]), (2, 5)),
    "addcmul": (lambda m, x, a, b: x.addcmul(a, b, value=0.5), (3,), (3,), (2, 3)),
    "addcdiv": (lambda m, x, a, b: m.addcdiv(x, a, b, value=-2), (3,), (3,),
                RNG.uniform(1, 2, (3,))),
    "addcmul_ non-leaf": (lambda m, x, a, b: (x * 1).addcmul_(a, b, value=2), (3,), (3,), (3,)),
    "addcdiv_ non-leaf": (lambda m, x, a, b: (x * 1).addcdiv_(a, b), (3,), (3,),
                          RNG.uniform(1, 2, (3,))),
    "max dim values": (lambda m, x: x.max(1).values + x.min(dim=0)[0].sum(), distinct(3, 4)),
    "unbind": (lambda m, x: m.stack([t * (i + 1) for i, t in enumerate(x.unbind(1))]), (2, 3)),
    "index_select repeats": (lambda m, x: x.index_select(1, m.tensor([2, 0, 2])), (2, 3)),
    "index_select function": (lambda m, x: m.index_select(x, 0, m.tensor([1])), (2, 3)),
    "in-place unary": (lambda m, x: (x * 1).exp_() + (x * 1).tanh_() + (x * 1).sigmoid_()
                       + (x * 1).abs_(), (4,)),
    "relu_ and log_": (lambda m, x: (x * 1).relu_() + (x * x + 1).log_(), (4,)),
}


@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
def test_method_values_and_gradients(name):
    fn, *specs = GRADIENT_CASES[name]
    check(fn, *specs)


def test_grad_fn_names_vs_torch():
    torch = pytest.importorskip("torch")
    names = []
    for m in (dtrain, torch):
        x = m.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, -1.0]], requires_grad=True)
        i = m.tensor([[0], [2]])
        outs = [x.gather(1, i), x.scatter(1, i, m.ones(2, 1)), x.scatter(1, i, 2.0),
                x.scatter_add(1, i, m.ones(2, 1)), x.masked_fill(x > 1, 0.0), x.repeat(2, 1),
                x.cumsum(0), x.topk(1).values, x.sort().values, x.norm(), x.norm(1, dim=1),
                x.chunk(2)[0], x.split([1, 2], 1)[1], m.div(x, 2, rounding_mode="floor"),
                x % 2, x.max(1).values]
        names.append([type(o.grad_fn).__name__ if m is torch else o.grad_fn.name() for o in outs])
    assert names[0] == names[1]


def test_new_factories_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        f, i = m.ones(2, dtype=m.float64), m.tensor([1, 2])
        assert dtype_name(f.new_tensor([1, 2])) == "float64"
        assert f.new_tensor([1, 2]).tolist() == [1, 2]
        assert dtype_name(i.new_tensor([1.5], dtype=m.float32)) == "float32"
        assert f.new_zeros(2, 3).shape == (2, 3) and dtype_name(f.new_zeros((2,))) == "float64"
        assert i.new_ones(3).tolist() == [1, 1, 1] and dtype_name(i.new_ones(3)) == "int64"
        assert i.new_full((2,), 7).tolist() == [7, 7]
        assert dtype_name(f.new_full((1,), 3, dtype=m.int32)) == "int32"
        assert f.new_empty(4).shape == (4,) and f.new_zeros(2, requires_grad=True).requires_grad
        src = [1.0, 2.0]
        copied = f.new_tensor(src)
        src[0] = 5.0
        assert copied.tolist() == [1.0, 2.0]


def test_method_results_vs_torch():
    torch = pytest.importorskip("torch")
    outcomes = []
    for m in (dtrain, torch):
        x = m.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, -1.0]])
        values, indices = x.max(1)
        named = x.min(dim=0)
        sort = x.sort(1, descending=True)
        top = m.topk(x, 2)
        outcomes.append([
            values.tolist(), indices.tolist(), named.values.tolist(), named.indices.tolist(),
            sort.values.tolist(), sort.indices.tolist(), x.argsort(1).tolist(),
            m.argsort(x, 0, descending=True).tolist(), top.values.tolist(), top.indices.tolist(),
            [c.tolist() for c in x.chunk(2, 1)], [c.tolist() for c in x.split(1)],
            x.cumsum(0).tolist(), m.tensor([1, 2, 3]).cumsum(0).tolist(),
            dtype_name(m.tensor([True, True]).cumsum(0)), x.repeat(1, 2).tolist(),
            x.gather(1, m.tensor([[2], [0]])).tolist(),
            m.zeros(2, 3).scatter_(1, m.tensor([[2], [0]]), 9.0).tolist(),
            m.zeros(3).scatter_add_(0, m.tensor([0, 0, 2]), m.ones(3)).tolist(),
            x.masked_fill(x > 2, 0.0).tolist(), m.tensor([1, 2]).masked_fill(
                m.tensor([True, False]), 0.7).tolist(),
            round(x.norm().item(), 5), round(x.norm(1).item(), 5), x.norm(dim=1).shape,
            x.size(1), x.size(-1), x.numel(), x[0, 0].item(), x.tolist(),
            type(x.max(0)).__name__, type(x.sort()).__name__, type(x.topk(1)).__name__,
            m.max(x, m.ones(3)).tolist(), m.min(x, m.ones(3)).tolist(), x.get_device(),
            [t.tolist() for t in m.unbind(x, 1)], x.nelement(), x.element_size(),
            x.ndimension(), dtype_name(x.half()), dtype_name(x.short()), dtype_name(x.byte()),
            dtype_name(x.char()), dtype_name(x.type_as(m.tensor([1]))),
        ])
    assert outcomes[0] == outcomes[1]


def test_method_errors_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        x = m.zeros(3, 4)
        cases = [
            (lambda m, x: x.gather(1, m.tensor([[5]])), RuntimeError, "out of bounds"),
            (lambda m, x: x.masked_fill(m.tensor([1, 0, 1, 0]), 1.0), RuntimeError, "boolean"),
            (lambda m, x: x.split([1, 1]), RuntimeError, "sum exactly to 3"),
            (lambda m, x: x.topk(5), RuntimeError, "out of range"),
            (lambda m, x: x.repeat(2), RuntimeError, "can not be smaller"),
            (lambda m, x: m.tensor([1, 2]).norm(), RuntimeError, "floating point"),
            (lambda m, x: x.chunk(0), RuntimeError, "greater than 0"),
            (lambda m, x: x.expand(2, 3), RuntimeError, "expanded size"),
            (lambda m, x: x.index_select(1, m.tensor([4])), RuntimeError, "(?i)out of"),
        ]
        for fn, error, text in cases:
            with pytest.raises(error, match=text):
                fn(m, x)


def test_methods_without_torch():
    x = dtrain.tensor([[1.0, -2.0], [3.0, 4.0]], requires_grad=True)
    x.norm().backward()
    np.testing.assert_allclose(x.grad._data, x._data / np.sqrt(30.0), rtol=1e-6)
    z = dtrain.zeros(2, requires_grad=True)
    z.norm().backward()
    assert z.grad.tolist() == [0.0, 0.0]  # no nan at the origin
    parts = dtrain.arange(10).split(4)
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    y = dtrain.tensor([2.0, 2.0, 1.0])
    assert y.sort(descending=True).indices.tolist() == [0, 1, 2]  # ties keep their order
    assert y.argsort().tolist() == [2, 0, 1]
    w = dtrain.ones(3)
    w.addcmul_(dtrain.tensor([1.0, 2.0, 3.0]), dtrain.tensor([2.0, 2.0, 2.0]), value=0.5)
    w.addcdiv_(dtrain.ones(3), dtrain.tensor([2.0, 4.0, 8.0]))
    assert w.tolist() == [2.5, 3.25, 4.125]
    leaf = dtrain.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        leaf.scatter_(0, dtrain.tensor([0]), 2.0)
    with dtrain.no_grad():
        leaf.masked_fill_(dtrain.tensor([True, False]), 5.0)
    assert leaf.tolist() == [5.0, 1.0] and leaf.grad_fn is None


# ====================================================================== grad modes, comparisons
def test_set_grad_enabled_and_inference_mode_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        x = m.ones(2, requires_grad=True)
        for phase in ("train", "val"):
            with m.set_grad_enabled(phase == "train"):  # the transfer-learning tutorial's loop
                assert (x * 2).requires_grad == (phase == "train")
        assert m.is_grad_enabled()
        m.set_grad_enabled(False)  # also a plain call
        assert not m.is_grad_enabled() and not (x * 2).requires_grad
        m.set_grad_enabled(True)
        with m.inference_mode():
            assert not (x * 2).requires_grad
        with m.inference_mode(False):
            assert (x * 2).requires_grad

        @m.inference_mode()
        def predict(v):
            return (v * 2).requires_grad

        @m.set_grad_enabled(False)
        def frozen(v):
            return (v * 2).requires_grad

        assert predict(x) is False and frozen(x) is False and m.is_grad_enabled()


def test_comparison_functions_vs_torch():
    torch = pytest.importorskip("torch")
    results = []
    for m in (dtrain, torch):
        a, b = m.tensor([1.0, float("nan"), 3.0]), m.tensor([1.0, 2.0, 2.0])
        flags = m.tensor([True, False, True])
        results.append([
            m.eq(a, b).tolist(), m.ne(a, b).tolist(), m.lt(b, 2).tolist(), m.le(b, 2).tolist(),
            m.gt(a, b).tolist(), m.ge(a, b).tolist(), m.greater(b, 1).tolist(),
            m.isnan(a).tolist(), m.isfinite(a).tolist(), m.sign(b - 2).tolist(),
            m.logical_not(flags).tolist(), m.logical_and(flags, m.tensor([1, 1, 0])).tolist(),
            m.logical_or(flags, m.tensor([0, 1, 0])).tolist(), m.t(m.ones(2, 3)).shape,
            dtype_name(m.eq(a, b)),
        ])
    assert results[0] == results[1]
