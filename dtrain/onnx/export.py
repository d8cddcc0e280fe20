"""``export``: trace a dtrain model on an example input and write it as a checked ONNX file."""

from __future__ import annotations

import os

import numpy as np

from ..autograd.grad_mode import no_grad
from ..autograd.tensor import Tensor, get_default_dtype
from .graph import ExportError, GraphBuilder, NodeRecord
from .tracing import Tracer, onnx_dtype, tracing

MIN_OPSET = 13
BATCH_DIM = "batch"


def require_onnx():
    """The ``onnx`` module, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install dtrain[onnx]") from None
    return onnx


def export(model, example_input, path, input_names=None, output_names=None,
           dynamic_batch: bool = True, opset: int = 17):
    """Write ``model`` as an ONNX file at ``path``, traced from a run on ``example_input``.

    ``example_input`` is a Tensor or array (or a tuple of them for several inputs). The model
    runs once in eval mode under ``no_grad`` (its modes are restored after); its layers and
    tensor ops become ONNX nodes and its parameters and buffers initializers named by their
    dotted paths. With ``dynamic_batch`` dim 0 of every input (and of outputs that keep it) is
    the symbolic 'batch'. The model is checked with ``onnx.checker`` before it is written;
    returns the ``onnx.ModelProto``. Raises ExportError naming an op or layer it cannot convert.
    """
    onnx = require_onnx()
    from onnx import helper

    from ..nn.module import Module

    if not isinstance(model, Module):
        raise TypeError(f"export expects a dtrain.nn.Module, got {type(model).__name__}")
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an int from {MIN_OPSET} to {newest}, got {opset!r}")
    inputs = _example_inputs(example_input, model)
    input_names = _names(input_names, len(inputs), "input")
    batch = _batch_size(inputs) if dynamic_batch else None
    if batch == 1:
        # trace a batch of two copies, so the batch dim differs from every size-1 dim
        inputs = [Tensor._wrap(np.repeat(x._data, 2, axis=0)) for x in inputs]
        batch = 2

    graph = GraphBuilder(opset)
    for name in input_names:
        graph.reserve(name)
    tracer = Tracer(graph, dynamic_batch=dynamic_batch, batch_size=batch,
                    module_names={id(m): n for n, m in model.named_modules() if n},
                    constant_names={id(t): n for n, t in (*model.named_parameters(),
                                                          *model.named_buffers())})
    for x, name in zip(inputs, input_names):
        tracer.bind(x, name, dynamic_batch)
    result = _trace(model, inputs, tracer)

    outputs = _outputs(result)
    output_names = _names(output_names, len(outputs), "output")
    input_infos = [helper.make_tensor_value_info(n, onnx_dtype(x.dtype), _dims(x, dynamic_batch))
                   for x, n in zip(inputs, input_names)]
    output_infos = _bind_outputs(graph, tracer, outputs, output_names, set(input_names))
    proto = helper.make_model(
        graph.to_proto(f"dtrain_{type(model).__name__}", input_infos, output_infos),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="dtrain",
        producer_version=_version())
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, os.fspath(path))
    return proto


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
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    for item in items:
        if not isinstance(item, Tensor):
            raise ExportError(f"ONNX export: the model must return a Tensor or a tuple of "
                              f"Tensors, got {type(item).__name__}")
    return items


def _dims(x: Tensor, batched: bool) -> list:
    dims = [int(n) for n in x.shape]
    if batched and dims:
        dims[0] = BATCH_DIM
    return dims


def _bind_outputs(graph: GraphBuilder, tracer: Tracer, outputs: list, names: list[str],
                  graph_inputs: set) -> list:
    """Give each output its name: rename the node output, or add an Identity."""
    from onnx import helper

    produced = graph.produced()
    renamed: dict[str, str] = {}
    infos = []
    for tensor, name in zip(outputs, names):
        graph.reserve(name)
        value = tracer.name(tensor)
        if value in produced and value not in renamed and value not in graph_inputs:
            graph.rename(value, name)
            renamed[value] = name
        else:
            source = renamed.get(value, value)
            graph.nodes.append(NodeRecord("Identity", [source], [name], graph.fresh("Identity")))
        infos.append(helper.make_tensor_value_info(name, onnx_dtype(tensor.dtype),
                                                   _dims(tensor, tracer.batched(tensor))))
    return infos


def _version() -> str:
    from .. import __version__

    return __version__
