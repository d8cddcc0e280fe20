"""``export``: trace a dtrain model on an example input and write it as a checked ONNX file."""

from __future__ import annotations

import os

import numpy as np

from ..autograd.grad_mode import no_grad
from ..autograd.tensor import Tensor, get_default_dtype
from .graph import ExportError, GraphBuilder, NodeRecord
from .tracing import Tracer, flat_outputs, onnx_dtype, tracing

MIN_OPSET = 13
BATCH_DIM = "batch"


def require_onnx():
    """The ``onnx`` module, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install dtrain[onnx]") from None
    return onnx


def export(model, args=None, f=None, input_names=None, output_names=None,
           dynamic_batch: bool | None = None, opset: int | None = None, *, dynamic_axes=None,
           opset_version: int | None = None, example_input=None, path=None,
           export_params: bool = True, keep_initializers_as_inputs: bool = False,
           verbose=None, do_constant_folding: bool = True, dynamo=None):
    """Write ``model`` as an ONNX file at ``f``, traced from a run on ``args``.

    The call reads like ``torch.onnx.export(model, args, f, input_names=..., output_names=...,
    dynamic_axes=..., opset_version=...)``; dtrain's own names ``example_input``, ``path``,
    ``dynamic_batch`` and ``opset`` work too. ``args`` is a Tensor or array, or a tuple of them
    for several inputs. The model runs in eval mode under ``no_grad`` (its modes are restored
    after); its layers and tensor ops become ONNX nodes and its parameters and buffers
    initializers named by their dotted paths. Without ``dynamic_axes``, ``dynamic_batch``
    (default True) makes dim 0 of every input (and of outputs that keep it) the symbolic
    'batch'. ``dynamic_axes`` maps input and output names to ``{axis: name}`` (or a list of
    axes); an axis other than a batch dim 0 of every input is checked by tracing again with it
    grown, and refused when the graph depends on its size. ``f`` is a path or a binary file
    (None: nothing written). The model is checked with ``onnx.checker``; returns the
    ``onnx.ModelProto``. Raises ExportError naming an op or layer it cannot convert.
    ``verbose``, ``do_constant_folding`` and ``dynamo`` are accepted for torch's callers and
    change nothing (dtrain's tracer always folds constants).
    """
    onnx = require_onnx()
    from onnx import helper

    from ..nn.module import Module

    args = _one_of("args", args, "example_input", example_input)
    f = _one_of("f", f, "path", path)
    opset = _one_of("opset_version", opset_version, "opset", opset)
    opset = 17 if opset is None else opset
    if not export_params or keep_initializers_as_inputs:
        raise ValueError("ONNX export: dtrain always stores the parameters as initializers "
                         "(export_params=True, keep_initializers_as_inputs=False)")
    if not isinstance(model, Module):
        raise TypeError(f"export expects a dtrain.nn.Module, got {type(model).__name__}")
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an int from {MIN_OPSET} to {newest}, got {opset!r}")
    if args is None:
        raise TypeError("export needs an example input (args)")
    inputs = _example_inputs(args, model)
    input_names = _names(input_names, len(inputs), "input")
    axes = _DynamicAxes(dynamic_axes, dynamic_batch, inputs, input_names)
    if axes.batch:
        batch = _batch_size(inputs)
        if batch == 1:
            # trace a batch of two copies, so the batch dim differs from every size-1 dim
            inputs = axes.inputs = [Tensor._wrap(np.repeat(x._data, 2, axis=0)) for x in inputs]
    graph, tracer, outputs = _build(model, inputs, input_names, axes.batch, opset)
    output_names = _names(output_names, len(outputs), "output")
    axes.check_outputs(output_names)
    varying = axes.verify(lambda grown: _build(model, grown, input_names, axes.batch, opset),
                          graph, outputs)
    input_infos = [helper.make_tensor_value_info(n, onnx_dtype(x.dtype), axes.input_dims(i, x))
                   for i, (x, n) in enumerate(zip(inputs, input_names))]
    output_infos = _bind_outputs(graph, tracer, outputs, output_names, set(input_names),
                                 lambda i, t: axes.output_dims(output_names[i], t,
                                                               tracer.batched(t), varying[i]))
    proto = helper.make_model(
        graph.to_proto(f"dtrain_{type(model).__name__}", input_infos, output_infos),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="dtrain",
        producer_version=_version())
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    onnx.checker.check_model(proto, full_check=True)
    if f is not None:
        onnx.save_model(proto, f if hasattr(f, "write") else os.fspath(f))
    return proto


def _one_of(name: str, value, alias: str, alias_value):
    """A keyword given under torch's name or dtrain's older one, not both."""
    if value is not None and alias_value is not None:
        raise TypeError(f"export got both {name} and {alias} (they are the same argument)")
    return value if value is not None else alias_value


def _build(model, inputs: list, input_names: list, batched: bool, opset: int):
    """Trace ``model`` on ``inputs``: the graph, its tracer and the model's flat outputs."""
    graph = GraphBuilder(opset)
    for name in input_names:
        graph.reserve(name)
    tracer = Tracer(graph, dynamic_batch=batched,
                    batch_size=inputs[0].shape[0] if batched else None,
                    module_names={id(m): n for n, m in model.named_modules() if n},
                    constant_names={id(t): n for n, t in (*model.named_parameters(),
                                                          *model.named_buffers())})
    for x, name in zip(inputs, input_names):
        tracer.bind(x, name, batched)
    return graph, tracer, _outputs(_trace(model, inputs, tracer))


class _DynamicAxes:
    """Which input and output dims are symbolic, and the check that they may be.

    A dim 0 that is dynamic for every input is the batch dim of the tracer (converters keep
    it symbolic). Any other dynamic axis is verified by tracing again with it grown by one:
    the graph must come out the same, else the export depends on that size.
    """

    def __init__(self, dynamic_axes, dynamic_batch, inputs: list, input_names: list):
        if dynamic_axes is not None and dynamic_batch is not None:
            raise TypeError("export: pass dynamic_axes or dynamic_batch, not both")
        self.inputs, self.input_names = inputs, input_names
        self.sizes: dict[str, tuple] = {}  # symbol -> (example size, grown size) once verified
        if dynamic_axes is None:
            self.batch = dynamic_batch is not False
            self.named = {n: {0: BATCH_DIM} for n in input_names} if self.batch else {}
            self.extra = []
            return
        self.named = _parse_axes(dynamic_axes)
        for name, axes in self.named.items():
            if name not in input_names:
                continue
            x = inputs[input_names.index(name)]
            for axis in axes:
                if not -x.ndim <= axis < x.ndim:
                    raise ValueError(f"dynamic_axes: axis {axis} of input '{name}' is out of "
                                     f"range for its shape {tuple(x.shape)}")
            self.named[name] = {a % x.ndim: symbol for a, symbol in axes.items()}
        self.batch = all(0 in self.named.get(n, {}) for n in input_names)
        self.extra = [(input_names.index(n), a, symbol) for n, axes in self.named.items()
                      if n in input_names for a, symbol in axes.items()
                      if not (self.batch and a == 0)]

    def check_outputs(self, output_names: list) -> None:
        """Every name in dynamic_axes must be an input or an output."""
        unknown = set(self.named) - set(self.input_names) - set(output_names)
        if unknown:
            raise ValueError(f"dynamic_axes names {sorted(unknown)}, which are neither inputs "
                             f"{self.input_names} nor outputs {output_names}")

    def verify(self, build, graph, outputs: list) -> list:
        """Trace again with the extra axes grown; per output, the dims whose size followed.

        The batch dim grows too, so output dims that follow it (an RNN's h_n) are found.
        """
        if not self.extra:
            return [{} for _ in outputs]
        grow = self.extra + ([(i, 0, self.named[n][0]) for i, n in enumerate(self.input_names)]
                             if self.batch else [])
        sizes: dict[str, int] = {}
        for i, axis, symbol in grow:
            size = self.inputs[i].shape[axis]
            if sizes.setdefault(symbol, size) != size:
                raise ExportError(f"ONNX export: dynamic axis '{symbol}' has sizes "
                                  f"{sizes[symbol]} and {size} in the example inputs")
        # each symbol grows by a different amount, so an output dim tells which one it follows
        bigger = {symbol: size + k + 1 for k, (symbol, size) in enumerate(sizes.items())}
        grown = list(self.inputs)
        for i, axis, symbol in grow:
            data = grown[i]._data
            picks = np.arange(bigger[symbol]) % data.shape[axis]
            grown[i] = Tensor._wrap(np.take(data, picks, axis=axis))
        described = ", ".join(f"axis {a} of '{self.input_names[i]}'" for i, a, _ in self.extra)
        try:
            graph2, _, outputs2 = build(grown)
        except Exception as e:  # noqa: BLE001 - any failure means the size cannot vary
            raise ExportError(f"ONNX export: dynamic {described}: the model fails when they "
                              f"grow by one ({type(e).__name__}: {e})") from None
        if _graph_key(graph) != _graph_key(graph2):
            raise ExportError(f"ONNX export: dynamic {described}: the traced graph depends on "
                              "their sizes (a reshape or constant fixes them); export with "
                              "these axes static")
        self.sizes = {symbol: (sizes[symbol], bigger[symbol]) for symbol in sizes}
        return [{d: (a.shape[d], b.shape[d]) for d in range(a.ndim) if a.shape[d] != b.shape[d]}
                for a, b in zip(outputs, outputs2)]

    def input_dims(self, i: int, x: Tensor) -> list:
        """Input ``i``'s dims for its value info: sizes, or the names of its dynamic axes."""
        dims = [int(n) for n in x.shape]
        for axis, symbol in self.named.get(self.input_names[i], {}).items():
            dims[axis] = symbol
        return dims

    def output_dims(self, name: str, x: Tensor, batched: bool, varying: dict) -> list:
        """An output's dims: the batch name, the symbol of each dim that followed an input
        axis in ``verify``, and the names dynamic_axes gives it."""
        dims: list = [int(n) for n in x.shape]
        if batched and dims:
            first = self.named.get(self.input_names[0], {})
            dims[0] = first.get(0, BATCH_DIM)
        for d, pair in varying.items():
            dims[d] = next((symbol for symbol, sizes in self.sizes.items() if sizes == pair),
                           f"{name}_dim{d}")
        for axis, symbol in self.named.get(name, {}).items():
            if not -len(dims) <= axis < len(dims):
                raise ValueError(f"dynamic_axes: axis {axis} of output '{name}' is out of range "
                                 f"for its shape {tuple(x.shape)}")
            dims[axis] = symbol
        return dims


def _parse_axes(dynamic_axes) -> dict:
    """torch's dynamic_axes ({name: {axis: symbol}} or {name: [axes]}) as name -> axis -> symbol."""
    if not isinstance(dynamic_axes, dict):
        raise TypeError(f"dynamic_axes must be a dict, got {type(dynamic_axes).__name__}")
    parsed = {}
    for name, spec in dynamic_axes.items():
        if isinstance(spec, dict):
            pairs = spec.items()
        elif isinstance(spec, (list, tuple)):
            pairs = ((a, f"{name}_dynamic_axes_{k + 1}") for k, a in enumerate(spec))
        else:
            raise TypeError(f"dynamic_axes['{name}'] must be a dict or a list of axes, got "
                            f"{type(spec).__name__}")
        parsed[name] = {}
        for axis, symbol in pairs:
            if not isinstance(axis, int) or not isinstance(symbol, str) or not symbol:
                raise TypeError(f"dynamic_axes['{name}']: expected int axes and non-empty "
                                f"names, got {axis!r}: {symbol!r}")
            parsed[name][axis] = symbol
    return parsed


def _graph_key(graph: GraphBuilder) -> tuple:
    """Everything of a traced graph that a size could leak into."""
    nodes = tuple((n.op_type, tuple(n.inputs), tuple(n.outputs), repr(sorted(n.attrs.items())))
                  for n in graph.nodes)
    inits = tuple((k, v.dtype.str, v.shape, v.tobytes()) for k, v in graph.initializers.items())
    return nodes, inits


def _trace(model, inputs: list, tracer: Tracer):
    """One forward in eval mode under no_grad with the tracer active; modes restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with no_grad(), tracing(tracer, model):
            return model(*inputs)
    finally:
        for module, mode in modes:
            module.__dict__["training"] = mode


def _example_inputs(example, model) -> list[Tensor]:
    """The example as a list of tensors; float arrays take the model's float dtype."""
    several = isinstance(example, (tuple, list)) and example and all(
        isinstance(e, (Tensor, np.ndarray)) for e in example)
    items = list(example) if several else [example]
    dtype = next((p.dtype for p in model.parameters() if p.dtype.kind == "f"),
                 get_default_dtype())
    out = []
    for item in items:
        if isinstance(item, Tensor):
            out.append(item.detach())
            continue
        try:
            array = np.asarray(item)
        except Exception as e:  # noqa: BLE001 - report any unconvertible example
            raise TypeError(f"example_input must be a Tensor or an array, got "
                            f"{type(item).__name__}: {e}") from None
        if array.dtype.kind not in "fiub":
            raise TypeError(f"example_input must be numeric, got dtype {array.dtype}")
        out.append(Tensor._wrap(array.astype(dtype) if array.dtype.kind == "f" else array))
    return out


def _batch_size(inputs: list[Tensor]) -> int:
    sizes = {x.shape[0] if x.ndim else None for x in inputs}
    if None in sizes or len(sizes) != 1:
        raise ExportError("ONNX export: dynamic_batch needs every input to have the same dim 0 "
                          f"(the batch), got shapes {[tuple(x.shape) for x in inputs]}; pass "
                          "dynamic_batch=False for fixed shapes")
    size = sizes.pop()
    if size < 1:
        raise ExportError("ONNX export: the example batch is empty")
    return size


def _names(names, count: int, default: str) -> list[str]:
    if names is None:
        return [default] if count == 1 else [f"{default}{i}" for i in range(count)]
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != count:
        raise ValueError(f"{default}_names has {len(names)} names for {count} {default}s")
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{default}_names must be distinct non-empty strings, got {names}")
    return names


def _outputs(result) -> list:
    items = list(flat_outputs(result))
    for item in items:
        if not isinstance(item, Tensor):
            raise ExportError(f"ONNX export: the model must return a Tensor or a tuple of "
                              f"Tensors, got {type(item).__name__}")
    return items


def _bind_outputs(graph: GraphBuilder, tracer: Tracer, outputs: list, names: list[str],
                  graph_inputs: set, dims) -> list:
    """Give each output its name: rename the node output, or add an Identity."""
    from onnx import helper

    produced = graph.produced()
    renamed: dict[str, str] = {}
    infos = []
    for i, (tensor, name) in enumerate(zip(outputs, names)):
        graph.reserve(name)
        value = tracer.name(tensor)
        if value in produced and value not in renamed and value not in graph_inputs:
            graph.rename(value, name)
            renamed[value] = name
        else:
            source = renamed.get(value, value)
            graph.nodes.append(NodeRecord("Identity", [source], [name], graph.fresh("Identity")))
        infos.append(helper.make_tensor_value_info(name, onnx_dtype(tensor.dtype),
                                                   dims(i, tensor)))
    return infos


def _version() -> str:
    from .. import __version__

    return __version__
