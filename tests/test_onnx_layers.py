"""ONNX export of the newer layers: onnxruntime must compute what dtrain computes (atol 1e-5)."""

import numpy as np
import pytest
from test_onnx import ATOL, check, check_unbatched, dtrain_forward, ops, session

import dtrain
import dtrain.nn.functional as F
from dtrain import nn
from dtrain.onnx import ExportError, export
from dtrain.onnx.tracing import flat_outputs

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def seeded():
    dtrain.manual_seed(0)


def randomized(model):
    """Parameters drawn far from their defaults (GroupNorm's ones and zeros prove nothing)."""
    rng = np.random.default_rng(3)
    for p in model.parameters():
        p._data[...] = rng.standard_normal(p.shape) * 0.5
    return model


@pytest.mark.parametrize("opset,expected", [
    (13, ["Sigmoid", "Mul", "Softplus", "Tanh", "Mul", "HardSigmoid", "Mul"]),
    (17, ["Sigmoid", "Mul", "Softplus", "Tanh", "Mul", "HardSwish"]),
    (18, ["Sigmoid", "Mul", "Mish", "HardSwish"]),
])
def test_new_activations(tmp_path, opset, expected):
    model = nn.Sequential(nn.SiLU(), nn.Mish(), nn.Hardswish())
    proto = check(model, (10,), tmp_path, opset=opset)
    assert ops(proto) == expected


@pytest.mark.parametrize("layer, shape", [
    (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1), (4, 9)),
    (lambda: nn.Conv1d(4, 6, 3, padding="same", dilation=2, groups=2, padding_mode="reflect"),
     (4, 9)),
    (lambda: nn.Conv1d(4, 6, 2, padding=1, padding_mode="replicate", bias=False), (4, 7)),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), (4, 5, 6)),
    (lambda: nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 3), groups=2, dilation=2,
                                output_padding=1, bias=False), (4, 5, 6)),
    (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
     (4, 7)),
    (lambda: nn.GroupNorm(2, 4), (4, 5, 6)),
    (lambda: nn.GroupNorm(3, 6, eps=1e-3), (6, 5)),
    (lambda: nn.GroupNorm(1, 4, affine=False), (4,)),
    (lambda: nn.PixelShuffle(2), (8, 3, 4)),
    (lambda: nn.PixelUnshuffle(2), (2, 4, 6)),
    (lambda: nn.Upsample(scale_factor=2), (2, 3, 4)),
    (lambda: nn.Upsample(scale_factor=(3, 2), mode="bilinear"), (2, 3, 4)),
    (lambda: nn.Upsample(scale_factor=1.5), (2, 3, 4)),
    (lambda: nn.Upsample(scale_factor=4, mode="linear"), (2, 5)),
    (lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), (2, 3, 4)),
    (lambda: nn.Upsample(size=(5, 7), mode="bilinear"), (2, 3, 4)),
    (lambda: nn.Upsample(scale_factor=1.7, mode="bilinear", align_corners=True), (2, 3, 4)),
    (lambda: nn.Upsample(size=9, mode="linear"), (2, 5)),
    (lambda: nn.Upsample(size=(3, 2), mode="area"), (2, 7, 5)),
    (lambda: nn.Upsample(size=3, mode="area"), (2, 7)),
    (lambda: nn.AdaptiveAvgPool2d((3, 5)), (2, 7, 8)),
    (lambda: nn.AdaptiveAvgPool2d(3), (2, 4, 4)),
    (lambda: nn.ZeroPad2d((1, 2, 0, 3)), (2, 4, 4)),
    (lambda: nn.ConstantPad2d(2, -1.5), (2, 4, 4)),
    (lambda: nn.ConstantPad1d((-1, 2), 0.5), (2, 4)),
    (lambda: nn.ReflectionPad2d((1, 0, 2, 1)), (2, 4, 4)),
    (lambda: nn.ReplicationPad1d(3), (2, 4)),
])
def test_new_layers(tmp_path, layer, shape):
    check(randomized(nn.Sequential(layer())), shape, tmp_path)


def test_unbatched_conv1d_and_conv_transpose(tmp_path):
    for model, shape in ((nn.Conv1d(3, 4, 3, padding=1), (3, 8)),
                         (nn.ConvTranspose1d(3, 4, 3, stride=2), (3, 8)),
                         (nn.ConvTranspose2d(3, 4, 3, stride=2), (3, 5, 4))):
        check_unbatched(model, shape, tmp_path)


class Functional(nn.Module):
    """The new functional forms inside a custom forward."""

    def __init__(self):
        super().__init__()
        self.conv = randomized(nn.Conv1d(4, 4, 3))
        self.up = randomized(nn.ConvTranspose2d(4, 4, 2, stride=2))
        self.norm = randomized(nn.GroupNorm(2, 4))

    def forward(self, x):
        h = F.pad(x, (1, 2, 0, 1), mode="reflect")
        h = F.pad(h, (1, 1, 2, 2), value=0.5)
        h = F.pad(h, (-1, 1, 1, -1))
        h = F.silu(h) + F.mish(h) + F.hardswish(h)
        h = F.interpolate(h, scale_factor=2, mode="bilinear")
        h = F.interpolate(h, size=(5, 5)) + F.interpolate(h, size=(5, 5), mode="nearest-exact")
        h = (F.normalize(h, dim=1) + F.normalize(h, p=1, dim=-1) + F.normalize(h, p=3, dim=2)
             + F.normalize(h, p=float("inf")))
        h = F.pixel_shuffle(F.pixel_unshuffle(h[..., :4, :4], 2), 2)
        h = F.group_norm(h, 2, self.norm.weight, self.norm.bias) + F.pad(
            h, (1, 1, 1, 1), mode="replicate")[..., 1:-1, 1:-1]
        h = F.conv_transpose2d(h, self.up.weight, self.up.bias, stride=2)
        line = F.conv1d(h.flatten(2), self.conv.weight, self.conv.bias, padding="same")
        line = F.conv_transpose1d(line * 0.1, self.conv.weight, stride=2, output_padding=1)
        return line.flatten(1)


def test_functional_forms(tmp_path):
    check(Functional(), (4, 4, 4), tmp_path)


def test_pad_circular_from_opset_19(tmp_path):
    class Circular(nn.Module):
        def forward(self, x):
            return F.pad(x, (1, 2, 2, 0), mode="circular")

    check(Circular(), (2, 4, 5), tmp_path, opset=19)
    check(nn.Sequential(nn.CircularPad2d((2, 0, 1, 1))), (2, 4, 5), tmp_path, opset=19)


# -------------------------------------------------------------------------- recurrent
class Recurrent(nn.Module):
    """A recurrent layer called with or without its initial state; returns every output."""

    def __init__(self, layer):
        super().__init__()
        self.rnn = layer

    def forward(self, x, h=None, c=None):
        if h is None:
            return self.rnn(x)
        return self.rnn(x, (h, c) if isinstance(self.rnn, (nn.LSTM, nn.LSTMCell)) else h)


RNN_CASES = [("RNN", {}), ("RNN", {"nonlinearity": "relu", "bidirectional": True}),
             ("LSTM", {}), ("LSTM", {"num_layers": 2, "bidirectional": True}),
             ("LSTM", {"batch_first": True, "num_layers": 3, "bias": False}),
             ("GRU", {"num_layers": 2, "bidirectional": True}),
             ("GRU", {"batch_first": True, "bias": False, "bidirectional": True})]


def forward_all(model, *xs) -> list:
    """dtrain's eval forward with nested outputs ((h, c) of an LSTM) flattened."""
    model.eval()
    with dtrain.no_grad():
        return [o._data for o in flat_outputs(model(*(dtrain.tensor(x) for x in xs)))]


def run_recurrent(tmp_path, model, args, **options):
    path = tmp_path / "rnn.onnx"
    proto = export(model, args, path, **options)
    run = session(path)
    names = [i.name for i in run.get_inputs()]
    return proto, run, names


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("cls,options", RNN_CASES)
def test_recurrent_layers_with_dynamic_steps_and_batch(tmp_path, cls, options, with_state):
    layer = getattr(nn, cls)(3, 4, **options)
    model = Recurrent(layer)
    rng = np.random.default_rng(0)
    batch_first = options.get("batch_first", False)
    states = 1 + (cls == "LSTM") if with_state else 0

    def inputs(steps, batch):
        x = rng.standard_normal((batch, steps, 3) if batch_first else (steps, batch, 3))
        hidden = (layer.num_layers * layer._directions, batch, 4)
        return [x.astype(np.float32)] + [rng.standard_normal(hidden).astype(np.float32)
                                         for _ in range(states)]

    names = ["x", "h", "c"][:1 + states]
    axes = {"x": {0: "batch", 1: "steps"} if batch_first else {0: "steps", 1: "batch"}}
    axes.update({name: {1: "batch"} for name in names[1:]})
    proto, run, _ = run_recurrent(tmp_path, model, tuple(inputs(5, 2)), input_names=names,
                                  dynamic_axes=axes)
    assert ops(proto).count(cls) == layer.num_layers
    dims = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in proto.graph.output]
    width = 4 * layer._directions
    assert dims[0] == (["batch", "steps", width] if batch_first else ["steps", "batch", width])
    assert all(d[1] == "batch" for d in dims[1:])
    for steps, batch in ((5, 2), (7, 3), (1, 1)):
        args = inputs(steps, batch)
        got = run.run(None, dict(zip(names, args)))
        expected = forward_all(model, *args)
        assert len(got) == len(expected) == (3 if cls == "LSTM" else 2)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=0, atol=ATOL)


def test_unbatched_recurrent_input(tmp_path):
    model = Recurrent(nn.GRU(3, 4, num_layers=2, bidirectional=True))
    x = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    h = np.random.default_rng(2).standard_normal((4, 4)).astype(np.float32)
    _, run, names = run_recurrent(tmp_path, model, (x, h), dynamic_batch=False)
    for g, e in zip(run.run(None, dict(zip(names, (x, h)))), forward_all(model, x, h)):
        np.testing.assert_allclose(g, e, rtol=0, atol=ATOL)


def test_lstm_weights_are_stored_in_onnx_gate_order(tmp_path):
    """Checks the gate reordering directly, independent of any runtime."""
    onnx = pytest.importorskip("onnx")
    layer = nn.LSTM(2, 3)
    proto = export(Recurrent(layer), np.ones((4, 2, 2), np.float32), tmp_path / "m.onnx")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    W = inits["rnn.W_l0"][0]
    i, f, g, o = np.split(layer.weight_ih_l0._data, 4)
    np.testing.assert_array_equal(W, np.concatenate([i, o, f, g]))
    B = inits["rnn.B_l0"][0]
    assert B.shape == (24,)
    np.testing.assert_array_equal(B[12:15], layer.bias_hh_l0._data[:3])


def test_recurrent_layer_outputs_are_flattened(tmp_path):
    model = nn.LSTM(3, 4)
    proto = export(model, np.ones((5, 2, 3), np.float32), tmp_path / "m.onnx",
                   output_names=["y", "h", "c"], dynamic_batch=False)
    assert [o.name for o in proto.graph.output] == ["y", "h", "c"]
    assert [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output] == [
        [5, 2, 4], [1, 2, 4], [1, 2, 4]]


def test_layer_called_with_arguments_its_converter_does_not_take(tmp_path):
    class Calls(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x, x)

    with pytest.raises((ExportError, TypeError)):
        export(Calls(), np.ones((2, 3), np.float32), tmp_path / "m.onnx")


def test_flat_outputs():
    a, b, c = dtrain.zeros(1), dtrain.zeros(2), dtrain.zeros(3)
    assert flat_outputs((a, (b, [c]))) == (a, b, c)
    assert flat_outputs(a) == (a,)


# ---------------------------------------------------------------- torch's export call
class FullyConvolutional(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(),
                                  nn.ConvTranspose2d(4, 4, 2, stride=2),
                                  nn.Upsample(scale_factor=2, mode="bilinear"),
                                  nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
                                  nn.Upsample(scale_factor=(1, 3)), nn.Conv2d(4, 2, 1))

    def forward(self, x):
        return self.body(x)


def test_torch_style_call_with_dynamic_axes(tmp_path):
    model = FullyConvolutional()
    x = dtrain.randn(2, 3, 5, 6)
    path = str(tmp_path / "m.onnx")
    proto = export(model, (x,), path, export_params=True, opset_version=17,
                   do_constant_folding=True, input_names=["image"], output_names=["mask"],
                   dynamic_axes={"image": {0: "batch_size", 2: "height", 3: "width"},
                                 "mask": {0: "batch_size"}}, dynamo=False, verbose=False)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch_size", 3, "height", "width"]
    assert ops(proto).count("Resize") == 2 and "Gather" not in ops(proto)
    out_dims = [d.dim_param or d.dim_value
                for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ["batch_size", 2, "mask_dim2", "mask_dim3"]  # 2 * height is no input's
    run = session(path)
    for shape in ((1, 3, 5, 6), (3, 3, 7, 4), (2, 3, 9, 9)):
        image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(run.run(None, {"image": image})[0],
                                   dtrain_forward(model, image)[0], rtol=0, atol=ATOL)


def test_dynamic_axes_list_form_and_same_size_axes(tmp_path):
    model = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.Hardswish())
    proto = export(model, np.ones((4, 2, 4), np.float32), tmp_path / "m.onnx",
                   dynamic_axes={"input": [0, 2], "output": {1: "channels"}})
    assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim
            ] == ["input_dynamic_axes_1", 2, "input_dynamic_axes_2"]
    assert [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim
            ] == ["input_dynamic_axes_1", "channels", "input_dynamic_axes_2"]


def test_dynamic_axes_the_graph_depends_on_are_refused(tmp_path):
    flat = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with pytest.raises(ExportError, match=r"axis 2 of 'input'.*model fails.*cannot be "
                                          r"multiplied"):
        export(flat, np.ones((2, 1, 6, 6), np.float32), tmp_path / "m.onnx",
               dynamic_axes={"input": {0: "n", 2: "h"}})

    class Reshapes(nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], x.shape[1] * x.shape[2]) * 2

    with pytest.raises(ExportError, match=r"axis 1 of 'input'.*depends on their sizes"):
        export(Reshapes(), np.ones((2, 3, 4), np.float32), tmp_path / "m.onnx",
               dynamic_axes={"input": {1: "rows"}})
    up = nn.Sequential(nn.Upsample(scale_factor=1.5))  # Gather indices follow the size
    with pytest.raises(ExportError, match="depends on their sizes"):
        export(up, np.ones((1, 1, 3, 3), np.float32), tmp_path / "m.onnx",
               dynamic_axes={"input": {2: "h"}})
    assert not (tmp_path / "m.onnx").exists()


def test_export_argument_errors_and_file_objects(tmp_path):
    import io

    onnx = pytest.importorskip("onnx")
    model = nn.Sequential(nn.Linear(4, 2), nn.Mish())
    x = np.ones((2, 4), np.float32)
    with pytest.raises(TypeError, match="both args and example_input"):
        export(model, x, tmp_path / "m.onnx", example_input=x)
    with pytest.raises(TypeError, match="both f and path"):
        export(model, x, tmp_path / "m.onnx", path=tmp_path / "n.onnx")
    with pytest.raises(TypeError, match="both opset_version and opset"):
        export(model, x, tmp_path / "m.onnx", opset=17, opset_version=17)
    with pytest.raises(TypeError, match="dynamic_axes or dynamic_batch"):
        export(model, x, tmp_path / "m.onnx", dynamic_batch=True, dynamic_axes={})
    with pytest.raises(ValueError, match="export_params=True"):
        export(model, x, tmp_path / "m.onnx", export_params=False)
    with pytest.raises(ValueError, match=r"neither inputs \['input'\] nor outputs"):
        export(model, x, tmp_path / "m.onnx", dynamic_axes={"inptu": {0: "n"}})
    with pytest.raises(ValueError, match="axis 2 of input 'input' is out of range"):
        export(model, x, tmp_path / "m.onnx", dynamic_axes={"input": {2: "n"}})
    with pytest.raises(TypeError, match="example input"):
        export(model, f=tmp_path / "m.onnx")
    buffer = io.BytesIO()
    proto = export(model, args=x, f=buffer)
    assert onnx.load_from_string(buffer.getvalue()) == proto
    assert export(model, example_input=x, path=None).graph.node[0].op_type == "Gemm"
    static = export(model, x, dynamic_axes={})
    assert [d.dim_value for d in static.graph.input[0].type.tensor_type.shape.dim] == [2, 4]


@pytest.mark.parametrize("cls", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("unbatched", [False, True])
def test_cells(tmp_path, cls, unbatched):
    cell = getattr(nn, cls)(3, 4, **({"nonlinearity": "relu"} if cls == "RNNCell" else {}))
    model = Recurrent(cell)
    rng = np.random.default_rng(0)
    lead = () if unbatched else (2,)
    x = rng.standard_normal(lead + (3,)).astype(np.float32)
    states = [rng.standard_normal(lead + (4,)).astype(np.float32)
              for _ in range(2 if cls == "LSTMCell" else 1)]
    for args in ((x,), (x, *states)):
        proto, run, names = run_recurrent(tmp_path, model, args, dynamic_batch=False)
        assert cls.removesuffix("Cell") in ops(proto)
        got = run.run(None, dict(zip(names, args)))
        expected = forward_all(model, *args)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=0, atol=ATOL)


def test_text_classifier_with_dynamic_batch_and_length(tmp_path):
    class TextClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 8)
            self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=True,
                                dropout=0.1)
            self.head = nn.Linear(32, 3)

        def forward(self, tokens):
            out, _ = self.lstm(self.emb(tokens))
            return self.head(out[:, -1])

    model = TextClassifier()
    path = tmp_path / "text.onnx"
    tokens = np.random.default_rng(0).integers(0, 50, (4, 7))
    proto = export(model, tokens, path, input_names=["tokens"], output_names=["logits"],
                   dynamic_axes={"tokens": {0: "batch", 1: "seq"}, "logits": {0: "batch"}})
    assert ops(proto).count("LSTM") == 2
    run = session(path)
    for shape in ((4, 7), (2, 11), (1, 1)):
        t = np.random.default_rng(1).integers(0, 50, shape)
        np.testing.assert_allclose(run.run(None, {"tokens": t})[0], dtrain_forward(model, t)[0],
                                   rtol=0, atol=ATOL)
