"""ONNX export: onnxruntime must compute what dtrain computes, for any batch size.

Every model is exported from an example batch of 3 (or 1), checked by onnx.checker, run by
onnxruntime on batches of 1 and 7 (so the batch dim is really symbolic) and compared with the
dtrain forward in eval mode at atol 1e-5.
"""

import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import dtrain
import dtrain.nn.functional as F
from dtrain import nn
from dtrain.autograd import tensor as tensor_module
from dtrain.cli import main
from dtrain.onnx import ExportError, export

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ATOL = 1e-5


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def dtrain_forward(model, *xs):
    model.eval()
    with dtrain.no_grad():
        out = model(*(dtrain.tensor(x) for x in xs))
    return [o._data for o in (out if isinstance(out, tuple) else (out,))]


def check(model, shape, tmp_path, batches=(1, 7), opset=17, example_batch=3, atol=ATOL,
          seed=0):
    """Export ``model`` for inputs (batch, *shape); compare onnxruntime with dtrain."""
    rng = np.random.default_rng(seed)
    path = tmp_path / "model.onnx"
    example = rng.standard_normal((example_batch, *shape)).astype(np.float32)
    proto = export(model, example, path, opset=opset)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert proto.opset_import[0].version == opset
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    run = session(path)
    for batch in batches:
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        got = run.run(None, {"input": x})
        expected = dtrain_forward(model, x)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape and g.dtype == e.dtype
            np.testing.assert_allclose(g, e, rtol=0, atol=atol)
    return proto


def ops(proto) -> list[str]:
    return [node.op_type for node in proto.graph.node]


def trained_stats(model, shape, steps=3):
    """Give batch-norm layers real running statistics and affine parameters."""
    rng = np.random.default_rng(1)
    model.train()
    with dtrain.no_grad():
        for _ in range(steps):
            model(dtrain.tensor(rng.standard_normal((8, *shape)).astype(np.float32) * 2 + 1))
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.weight is not None:
            m.weight._data[...] = rng.uniform(0.5, 1.5, m.weight.shape)
            m.bias._data[...] = rng.standard_normal(m.bias.shape)
    return model


@pytest.fixture(autouse=True)
def seeded():
    dtrain.manual_seed(0)


# ------------------------------------------------------------------- the acceptance models
def test_mlp(tmp_path):
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 16),
                          nn.Tanh(), nn.Linear(16, 4), nn.LogSoftmax(dim=1))
    proto = check(model, (12,), tmp_path)
    assert ops(proto) == ["Gemm", "Relu", "Gemm", "Tanh", "Gemm", "LogSoftmax"]
    assert sorted(i.name for i in proto.graph.initializer) == sorted(
        name for name, _ in model.named_parameters())
    assert proto.graph.output[0].name == "output"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_export_restores_training_mode(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Sequential(nn.ReLU()))
    model.train()
    model[2].eval()
    export(model, np.ones((2, 4), np.float32), tmp_path / "m.onnx")
    assert [m.training for m in model.modules()] == [True, True, True, False, False]


def test_cnn(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    trained_stats(model, (3, 8, 8))
    proto = check(model, (3, 8, 8), tmp_path)
    assert ops(proto) == ["Conv", "BatchNormalization", "Relu", "MaxPool", "Flatten", "Gemm"]
    names = {i.name for i in proto.graph.initializer}
    assert {"1.running_mean", "1.running_var", "0.weight", "5.bias"} <= names
    assert "1.num_batches_tracked" not in names


class Residual(nn.Module):
    """A custom module whose forward is arithmetic on tensors."""

    def __init__(self, features):
        super().__init__()
        self.fc = nn.Linear(features, features)
        self.gate = nn.Parameter(dtrain.full((features,), 0.5)._data)

    def forward(self, x):
        h = self.fc(x)
        mixed = x * self.gate + (1 - self.gate) * h.tanh() - h / 4.0
        centered = mixed - mixed.mean(dim=1, keepdim=True)
        scale = (centered * centered).sum(dim=1, keepdim=True) / x.shape[1] + 1e-3
        return centered / scale.sqrt() + dtrain.exp(-x.abs()) @ self.fc.weight.T * 0.1


def test_batch_norm_layer_norm_and_custom_module(tmp_path):
    model = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.GELU(), Residual(16),
                          nn.LayerNorm(16), nn.Linear(16, 3), nn.Softmax(dim=-1))
    trained_stats(model, (10,))
    proto = check(model, (10,), tmp_path)
    assert ops(proto)[:2] == ["Gemm", "BatchNormalization"]
    assert "LayerNormalization" in ops(proto) and "Softmax" in ops(proto)
    # node names carry the module path of the layer or custom forward that made them
    assert any(node.name.startswith("3/") for node in proto.graph.node)


# ------------------------------------------------------------------------ layer matrix
@pytest.mark.parametrize("opset", [17, 20])
def test_activations(tmp_path, opset):
    model = nn.Sequential(nn.GELU(), nn.GELU("tanh"), nn.ELU(0.5), nn.LeakyReLU(0.2),
                          nn.Softplus(), nn.Softplus(beta=2.0, threshold=1.0), nn.Sigmoid(),
                          nn.Tanh(), nn.ReLU(), nn.Softmax(dim=1))
    proto = check(model, (10,), tmp_path, opset=opset)
    assert ("Gelu" in ops(proto)) == (opset >= 20)


@pytest.mark.parametrize("layer, shape, opset", [
    (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), (4, 9, 9), 17),
    (lambda: nn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2), (4, 8, 8), 17),
    (lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), (4, 8, 8), 17),
    (lambda: nn.Conv2d(4, 6, (3, 2), padding=(2, 1), padding_mode="replicate"), (4, 8, 8), 17),
    (lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular"), (4, 8, 8), 19),
    (lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 9, 9), 17),
    (lambda: nn.MaxPool2d(3, stride=2, ceil_mode=True), (2, 8, 8), 17),
    (lambda: nn.MaxPool2d(2, dilation=2), (2, 9, 9), 17),
    (lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 9, 9), 17),
    (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 9, 9), 17),
    (lambda: nn.AvgPool2d(3, stride=2, ceil_mode=True), (2, 8, 8), 17),
    (lambda: nn.AvgPool2d(2, divisor_override=3), (2, 8, 8), 17),
    (lambda: nn.AdaptiveAvgPool2d(1), (2, 8, 8), 17),
    (lambda: nn.AdaptiveAvgPool2d((2, 4)), (2, 8, 8), 17),
    (lambda: nn.BatchNorm1d(4, affine=False), (4, 5), 17),
    (lambda: nn.LayerNorm((4, 5), elementwise_affine=False), (4, 5), 17),
    (lambda: nn.LayerNorm(5, bias=False), (3, 5), 17),
    (lambda: nn.LayerNorm(5), (3, 5), 13),
    (lambda: nn.Flatten(0, 1), (4, 5), 17),
    (lambda: nn.Flatten(2), (3, 4, 5), 17),
    (lambda: nn.Unflatten(1, (2, 6)), (12,), 17),
    (lambda: nn.Identity(), (3,), 17),
])
def test_layer(tmp_path, layer, shape, opset):
    model = trained_stats(nn.Sequential(layer()), shape)
    check(model, shape, tmp_path, opset=opset)


def check_unbatched(model, shape, tmp_path) -> None:
    """Export ``model`` for one input of ``shape`` (no batch dimension) and compare the runs."""
    path = tmp_path / "m.onnx"
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    export(model, x, path, dynamic_batch=False)
    np.testing.assert_allclose(session(path).run(None, {"input": x})[0],
                               dtrain_forward(model, x)[0], atol=ATOL)


def test_unbatched_conv_and_pool(tmp_path):
    check_unbatched(nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2)), (3, 8, 8), tmp_path)


class Functional(nn.Module):
    """Layers used through dtrain.nn.functional inside a custom forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = trained_stats(nn.BatchNorm2d(4), (4, 6, 6))
        self.norm = nn.LayerNorm((4, 4))
        self.head = nn.Linear(64, 5)

    def forward(self, x):
        h = F.conv2d(x, self.conv.weight, self.conv.bias, padding=1)
        h = F.batch_norm(h, self.bn.running_mean, self.bn.running_var, self.bn.weight,
                         self.bn.bias)
        h = F.max_pool2d(h, 2) + F.avg_pool2d(h, 2) + F.adaptive_avg_pool2d(h, 4)
        h = F.layer_norm(h, (4, 4), self.norm.weight, self.norm.bias)
        h = F.relu(h) + F.leaky_relu(h, 0.1) + F.elu(h) + F.gelu(h) + F.softplus(h)
        h = F.dropout(h, 0.5, training=self.training).flatten(1)
        return F.log_softmax(F.linear(h, self.head.weight, self.head.bias), dim=1)


def test_functional_forms(tmp_path):
    check(Functional(), (3, 8, 8), tmp_path)


class TensorOps(nn.Module):
    """Shape ops, reductions, indexing and in-place arithmetic in one forward."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(dtrain.randn(6, 4)._data * 0.3)

    def forward(self, x):
        h = (x @ self.w).sigmoid() * 2 - 1  # (B, 4)
        h = dtrain.cat([h, h.sum(dim=1, keepdim=True), h.amax(1, keepdim=True)], dim=1)
        g = h.reshape(h.shape[0], 3, 2).transpose(1, 2).permute(0, 2, 1).flatten(1)
        g = g + g.max(dim=1, keepdim=True).values - g.min(1, keepdim=True)[0]
        g = g[:, 1:5] * g[:, ::-1][:, :4] + g[:, ::2].sum(1, keepdim=True)
        g = g + g[..., -1, None] + g.var(1, keepdim=True) + g.std(dim=1, keepdim=True)
        g = g.unsqueeze(1).squeeze(1) + dtrain.stack([g[:, 0], g[:, 3]], dim=1).mean(1)[:, None]
        g = g.expand(2, g.shape[0], 4)[1] + dtrain.maximum(g, 0.2) - dtrain.minimum(g, -0.2)
        g = g + dtrain.zeros_like(g) + dtrain.ones_like(g) * dtrain.full_like(g, 0.5)
        g += 1
        g.mul_(0.5)
        g.sub_(x[:, :4], alpha=0.25)
        g = g.clamp(-1.5, 1.5) + g.clamp(min=0.0) + (g ** 2).sqrt() + g.exp().log()
        g = g.float().clone().detach() + g.T.T + g.argmax(1, keepdim=True).float() / 10
        g = g / 8
        return g.softmax(dim=1) + g.log_softmax(-1) - g.relu() + g.abs() / (g.sum() * 0 + 3)


def test_tensor_ops_in_custom_forward(tmp_path):
    check(TensorOps(), (6,), tmp_path)


def test_embedding_with_integer_input(tmp_path):
    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.fc = nn.Linear(4, 2)

        def forward(self, idx):
            return self.fc(self.emb(idx).mean(dim=1)) + F.embedding(idx, self.emb.weight)[:, 0, :2]

    model = Bag()
    path = tmp_path / "bag.onnx"
    export(model, np.array([[1, 2, 3]]), path)
    idx = np.random.default_rng(0).integers(0, 10, (7, 3))
    np.testing.assert_allclose(session(path).run(None, {"input": idx})[0],
                               dtrain_forward(model, idx)[0], atol=ATOL)


def test_several_inputs_and_outputs_with_names(tmp_path):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(5, 2)

        def forward(self, x, y):
            h = self.a(x) + self.b(y)
            return h, h.relu(), x

    model = TwoHeads()
    path = tmp_path / "two.onnx"
    rng = np.random.default_rng(0)
    proto = export(model, (rng.standard_normal((2, 3)), rng.standard_normal((2, 5))), path,
                   input_names=["x", "y"], output_names=["h", "r", "x_again"])
    assert [i.name for i in proto.graph.input] == ["x", "y"]
    assert [o.name for o in proto.graph.output] == ["h", "r", "x_again"]
    x, y = (rng.standard_normal((7, n)).astype(np.float32) for n in (3, 5))
    for got, expected in zip(session(path).run(None, {"x": x, "y": y}),
                             dtrain_forward(model, x, y)):
        np.testing.assert_allclose(got, expected, atol=ATOL)


def test_static_batch_fixes_every_dim(tmp_path):
    model = nn.Sequential(nn.Linear(4, 2))
    proto = export(model, np.ones((5, 4), np.float32), tmp_path / "m.onnx", dynamic_batch=False)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [5, 4]
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [5, 2]


def test_view_with_batch_size_from_a_batch_of_one(tmp_path):
    class Viewer(nn.Module):
        def forward(self, x):
            return x.view(x.shape[0], -1).sum(dim=1, keepdim=True) * x.flatten(1)

    # traced from a single sample: the batch dim must not be baked in as 1
    check(Viewer(), (2, 3), tmp_path, example_batch=1)


def test_size_one_dims_are_not_taken_for_the_batch(tmp_path):
    class BatchStats(nn.Module):
        def forward(self, x):
            mean = x.mean(dim=0, keepdim=True)  # (1, F) for every batch size
            return x - mean, mean.reshape(1, -1).squeeze()

    # even when traced from a single sample, the mean's dim 0 stays a fixed 1
    proto = check(BatchStats(), (5,), tmp_path, example_batch=1)
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 5]
    assert [d.dim_value for d in proto.graph.output[1].type.tensor_type.shape.dim] == [5]


# ------------------------------------------------------------------------- refusals
class UsesWhere(nn.Module):
    def forward(self, x):
        return dtrain.where(x._data > 0, x, x * 0.1)


class UsesComparison(nn.Module):
    def forward(self, x):
        return x * (x > 0)


class ReadsValue(nn.Module):
    def forward(self, x):
        return x * float(x.sum().item())


class PadsCircular(nn.Module):
    def forward(self, x):
        return F.pad(x, (1, 1, 1, 1), mode="circular")


class CustomOp(nn.Module):
    def forward(self, x):
        return tensor_module._op(np.cbrt(x._data), (x,), lambda g: (g,), "CbrtBackward0")


@pytest.mark.parametrize("model, message, shape", [
    (UsesWhere, "no converter for op 'where'", (2, 4)),
    (UsesComparison, "no converter for op 'gt'", (2, 4)),
    (ReadsValue, r"reads the values of a traced tensor \(item\(\)\)", (2, 4)),
    (CustomOp, "no converter for op 'Cbrt'", (2, 4)),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False)),
     "no converter for BatchNorm1d without running statistics", (2, 4)),
    (lambda: nn.Sequential(nn.MaxPool2d(2, return_indices=True)),
     "MaxPool2d with return_indices", (2, 1, 4, 4)),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.L1Loss())),
     r"no converter for L1Loss \(at '1.0'\)", (2, 4)),
    (PadsCircular, "pad mode 'circular' at opset 17", (2, 1, 4, 4)),
])
def test_unsupported_ops_and_layers_are_named(tmp_path, model, message, shape):
    x = np.ones(shape, np.float32)
    with pytest.raises(ExportError, match=message):
        export(model(), x, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_leaves_dtrain_as_it_was(tmp_path):
    """After an export, failed or not, no op, method or Module.__call__ stays wrapped."""
    from dtrain.nn.module import Module

    def snapshot():
        return (dict(vars(tensor_module)), dict(vars(dtrain)), dict(vars(F)),
                dict(dtrain.Tensor.__dict__), Module.__dict__["__call__"])

    before = snapshot()
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    export(model, np.ones((2, 4), np.float32), tmp_path / "m.onnx")
    with pytest.raises(ExportError):
        export(UsesWhere(), np.ones((2, 4), np.float32), tmp_path / "w.onnx")
    after = snapshot()
    for old, new in zip(before[:4], after[:4]):
        assert {k: v for k, v in new.items() if old.get(k) is not v} == {}
    assert after[4] is before[4]
    x = dtrain.randn(3, 4, requires_grad=True)
    model(x).sum().backward()  # autograd still records after the no_grad trace
    assert x.grad is not None and dtrain.is_grad_enabled()


def test_bad_arguments(tmp_path):
    model = nn.Sequential(nn.Linear(4, 2))
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="opset must be an int from 13"):
        export(model, x, tmp_path / "m.onnx", opset=12)
    with pytest.raises(ValueError, match="input_names has 2 names for 1 inputs"):
        export(model, x, tmp_path / "m.onnx", input_names=["a", "b"])
    with pytest.raises(TypeError, match="expects a dtrain.nn.Module"):
        export(lambda t: t, x, tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="dynamic_batch needs every input"):
        export(model, np.ones((), np.float32), tmp_path / "m.onnx")


def test_missing_onnx_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install dtrain\[onnx\]"):
        export(nn.Linear(2, 2), np.ones((1, 2)), tmp_path / "m.onnx")


# ----------------------------------------------------------------------- dtrain export
JOB = textwrap.dedent("""
    import numpy as np
    import dtrain
    import dtrain.nn.functional as F
    from dtrain import nn, optim

    def blobs(n, seed=0):
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((3, 10)) * 2
        y = rng.integers(0, 3, n)
        return (centers[y] + rng.standard_normal((n, 10))).astype(np.float32), y

    class Tiny(dtrain.Job):
        batch_size = 16
        micro_shards = 2

        def model(self):
            return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                 nn.Dropout(0.2), nn.Linear(16, 3))

        def loss(self, output, target):
            return F.cross_entropy(output, target)

        def optimizer(self, model):
            return optim.SGD(model.parameters(), lr=0.1)

        def train_data(self):
            return blobs(64)
""")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A training script and the checkpoint of one epoch of it (written by dtrain.fit)."""
    root = tmp_path_factory.mktemp("job")
    script = root / "tiny.py"
    script.write_text(JOB)
    dtrain.fit(str(script), workers=0, out=str(root / "run"), epochs=1)
    return script, root / "run" / "checkpoint.dtrain"


def test_cli_export_of_a_real_checkpoint(trained, tmp_path):
    script, checkpoint = trained
    out = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(main, ["export", str(checkpoint), "--script", str(script),
                                       "--onnx", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output

    job, _ = dtrain.distributed.job.load_job(str(script))
    model = job.model()
    model.load_state_dict(dtrain.load(checkpoint)["model"])
    assert model[1].running_mean._data.any()  # trained statistics travel to the ONNX file
    x = np.random.default_rng(5).standard_normal((7, 10)).astype(np.float32)
    np.testing.assert_allclose(session(out).run(None, {"input": x})[0],
                               dtrain_forward(model, x)[0], atol=ATOL)


def test_cli_export_of_a_saved_state_dict_with_input_shape(trained, tmp_path):
    script, checkpoint = trained
    weights = tmp_path / "weights.dtrain"
    state = dtrain.load(checkpoint)["model"]
    dtrain.save(state, weights)
    out = tmp_path / "w.onnx"
    result = CliRunner().invoke(main, ["export", str(weights), "--script", str(script),
                                       "--onnx", str(out), "--input-shape", "1,10",
                                       "--job", "Tiny", "--opset", "18"])
    assert result.exit_code == 0, result.output
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version == 18
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim][1:] == [10]


def test_cli_export_errors(trained, tmp_path):
    script, checkpoint = trained
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(checkpoint), "--script", str(script),
                                  "--onnx", str(tmp_path / "m.onnx"), "--input-shape", "1,x"])
    assert result.exit_code == 2 and "expected sizes separated by commas" in result.output
    other = tmp_path / "other.dtrain"
    dtrain.save({"step": 3}, other)
    result = runner.invoke(main, ["export", str(other), "--script", str(script),
                                  "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "expected a checkpoint with a 'model' state_dict" in \
        result.output
    result = runner.invoke(main, ["export", str(checkpoint), "--script", str(script),
                                  "--onnx", str(tmp_path / "m.onnx"), "--input-shape", "1,11"])
    assert result.exit_code == 1 and "cannot be multiplied" in result.output
