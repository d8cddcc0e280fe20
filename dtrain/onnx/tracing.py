"""Tracing a forward pass into ONNX nodes, with no cost outside an export.

While ``tracing(tracer, model)`` is active, the op functions of dtrain (``add``, ``reshape``,
``conv2d``, ...), a few Tensor methods and ``Module.__call__`` are replaced by thin wrappers in
every ``dtrain.*`` namespace that holds them (and in the modules defining the model's classes).
A wrapper looks at a thread-local tracer: with none, or inside a converted call, it calls the
original at once. Otherwise, when an argument is a traced tensor (one computed from the example
input), the original runs and a converter appends the matching ONNX nodes. A dtrain layer with
a converter becomes nodes as a whole; containers and custom modules are traced through. Ops on
constants only (weights) are computed and become initializers; a traced tensor reaching an op
that has no converter raises ``ExportError`` naming it. The originals come back on exit.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
from contextlib import contextmanager

import numpy as np

from ..autograd.tensor import Tensor
from .graph import ExportError, GraphBuilder

_local = threading.local()
_install_lock = threading.Lock()

# modules whose public functions are ops: each is wrapped (converted, or refused when traced)
OP_MODULES = ("dtrain.autograd.tensor", "dtrain.autograd.creation", "dtrain.nn._kernels",
              "dtrain.nn.conv", "dtrain.nn.pooling", "dtrain.nn.normalization", "dtrain.nn.sparse",
              "dtrain.nn.dropout", "dtrain.nn.functional", "dtrain.nn.padding",
              "dtrain.nn.upsampling", "dtrain.nn.conv1d", "dtrain.nn.conv_transpose")
# public functions of those modules that are not ops
NOT_OPS = {"get_default_dtype", "set_default_dtype", "collect_batch_stats", "keyed_dropout",
           "keyed_uniform", "check_reduction", "resize_plan"}
# Tensor methods that make tensors without going through a module-level op function
TENSOR_METHODS = ("type", "clone", "detach", "argmax", "argmin", "sign", "isnan", "isfinite",
                  "any", "all", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
                  "__floordiv__", "__mod__", "__invert__", "__and__", "__or__", "zero_", "fill_",
                  "copy_", "uniform_", "normal_", "__setitem__")
# in-place methods traced as their out-of-place op (then the tensor takes the new value)
INPLACE = {"__iadd__": "add", "__isub__": "sub", "__imul__": "mul", "__itruediv__": "div",
           "add_": "add", "sub_": "sub", "mul_": "mul", "div_": "div", "pow_": "pow",
           "clamp_": "clamp", "neg_": "neg", "sqrt_": "sqrt"}
# methods that hand a tensor's values to Python: the graph would silently depend on them
VALUE_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__",
               "__array__")
# dtrain.nn modules that are traced through rather than converted as one layer
PASS_THROUGH = ("Module", "Sequential", "ModuleList", "ModuleDict", "Identity", "Unflatten")


def _display(name: str) -> str:
    return name.strip("_") if name.startswith("__") else name


def flat_outputs(obj) -> tuple:
    """A result as a flat tuple: nested tuples and lists (an LSTM's (h, c)) are unpacked."""
    if isinstance(obj, (tuple, list)):
        return tuple(item for part in obj for item in flat_outputs(part))
    return (obj,)


def _tensors(obj):
    """Every Tensor in an argument (through lists, tuples and dict values)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


class Tracer:
    """Maps traced tensors to ONNX value names and turns calls into nodes via converters."""

    def __init__(self, graph: GraphBuilder, *, dynamic_batch: bool, batch_size: int | None,
                 module_names: dict, constant_names: dict):
        self.g = graph
        self.ops: dict = {}  # original function -> converter(tracer, out, **arguments)
        self.layers: dict = {}  # Module class -> converter(tracer, module, out, input)
        self.dynamic_batch = dynamic_batch
        self.batch_size = batch_size
        self.module_names = module_names  # id(module) -> dotted path
        self.constant_names = constant_names  # id(parameter or buffer) -> dotted name
        self.suspended = 0
        self._values: dict[int, tuple] = {}  # id(tensor) -> (tensor, name, batched)
        self._constants: dict[int, tuple] = {}  # id(tensor) -> (tensor, initializer name)
        self._signatures: dict = {}
        self.ops_by_name: dict = {}  # op name -> original function of dtrain.autograd.tensor

    @property
    def opset(self) -> int:
        return self.g.opset

    # ------------------------------------------------------------------ values
    def is_traced(self, x) -> bool:
        """Whether ``x`` is a tensor computed from the graph inputs."""
        entry = self._values.get(id(x)) if isinstance(x, Tensor) else None
        return entry is not None and entry[0] is x

    def batched(self, x) -> bool:
        """Whether dim 0 of traced ``x`` is the (symbolic) batch dimension."""
        entry = self._values.get(id(x)) if isinstance(x, Tensor) else None
        return entry is not None and entry[0] is x and entry[2]

    def bind(self, tensor: Tensor, name: str, batched: bool) -> None:
        """Record that ``tensor`` is the value ``name`` of the graph."""
        self._values[id(tensor)] = (tensor, name, batched)

    def name(self, x, dtype=None) -> str:
        """The value name of ``x``: traced tensors by name, anything else as an initializer.

        With ``dtype`` the value is cast to it (a Cast node for traced tensors).
        """
        dtype = None if dtype is None else np.dtype(dtype)
        if self.is_traced(x):
            name = self._values[id(x)][1]
            if dtype is not None and x.dtype != dtype:
                name = self.g.op("Cast", [name], to=onnx_dtype(dtype))
            return name
        if isinstance(x, Tensor):
            if dtype is None or x.dtype == dtype:
                entry = self._constants.get(id(x))
                if entry is None or entry[0] is not x:
                    hint = self.constant_names.get(id(x))
                    entry = (x, self.g.const(x._data, name=hint))
                    self._constants[id(x)] = entry
                return entry[1]
            x = x._data
        if x is None:
            raise ExportError("ONNX export: expected a tensor or a number, got None")
        return self.g.const(np.asarray(x, dtype=dtype))

    # ----------------------------------------------------------------- tracing
    @contextmanager
    def suspend(self):
        """Inside, wrapped calls run untraced (the internals of a converted op or layer)."""
        self.suspended += 1
        try:
            yield
        finally:
            self.suspended -= 1

    @contextmanager
    def scope(self, path: str):
        """Node names inside get the module path ``path`` as prefix."""
        previous = self.g.scope
        self.g.scope = path
        try:
            yield
        finally:
            self.g.scope = previous

    def _traced_inputs(self, args, kwargs) -> list:
        return [t for t in _tensors((args, kwargs)) if self.is_traced(t)]

    def register(self, out, names, inputs: list) -> None:
        """Bind the outputs of a converted call; dim 0 stays the batch dim if it kept its size."""
        outs = flat_outputs(out)
        names = names if isinstance(names, (tuple, list)) else (names,)
        if len(outs) != len(names):
            raise ExportError(f"ONNX export: converter gave {len(names)} values for "
                              f"{len(outs)} outputs")
        from_batch = self.dynamic_batch and any(self.batched(t) for t in inputs)
        for tensor, name in zip(outs, names):
            if not isinstance(tensor, Tensor):
                raise ExportError(f"ONNX export: an op returned {type(tensor).__name__}, "
                                  "expected tensors")
            batched = from_batch and tensor.ndim > 0 and tensor.shape[0] == self.batch_size
            self.bind(tensor, name, batched)

    def call_op(self, fn, display: str, args: tuple, kwargs: dict):
        """Run op ``fn``; when it reads traced tensors, convert it (or refuse, naming it)."""
        inputs = self._traced_inputs(args, kwargs)
        if not inputs:
            with self.suspend():
                return fn(*args, **kwargs)
        converter = self.ops.get(fn)
        if converter is None:
            raise ExportError(f"ONNX export: no converter for op '{display}'")
        with self.suspend():
            out = fn(*args, **kwargs)
        if isinstance(out, Tensor) and any(out is t for t in inputs):
            return out  # the op returned its input (dropout in eval, a no-op cast)
        signature = self._signatures.get(fn)
        if signature is None:
            signature = self._signatures[fn] = inspect.signature(fn)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with self.suspend():
            names = converter(self, out, **bound.arguments)
        self.register(out, names, inputs)
        return out

    def call_module(self, module, call, args: tuple, kwargs: dict):
        """Convert a dtrain layer as a whole, or trace through a container or custom module."""
        inputs = self._traced_inputs(args, kwargs)
        if not inputs:
            with self.suspend():
                return call(module, *args, **kwargs)
        kind = type(module).__name__
        path = self.module_names.get(id(module), kind)
        converter = self._layer_converter(module)
        if converter is None:
            if type(module).__module__.startswith("dtrain.nn") and kind not in PASS_THROUGH:
                raise ExportError(f"ONNX export: no converter for {kind} (at '{path}')")
            with self.scope(path):
                return call(module, *args, **kwargs)
        try:  # a converter names the arguments it converts after (tracer, module, out)
            inspect.signature(converter).bind(self, module, None, *args, **kwargs)
        except TypeError:
            raise ExportError(f"ONNX export: {kind} (at '{path}') called with {len(args)} "
                              f"positional and {len(kwargs)} keyword arguments; its converter "
                              f"takes {inspect.signature(converter)}") from None
        with self.suspend():
            out = call(module, *args, **kwargs)
        with self.suspend(), self.scope(path):
            names = converter(self, module, out, *args, **kwargs)
        self.register(out, names, inputs)
        return out

    def _layer_converter(self, module):
        cls = type(module)
        for base in cls.__mro__:
            if base in self.layers:
                # a subclass with its own forward computes something else: trace it instead
                return self.layers[base] if cls.forward is base.forward else None
        return None

    def inplace(self, method: str, fn, self_tensor: Tensor, args: tuple, kwargs: dict):
        """An in-place op on a traced tensor: trace the out-of-place op, then rebind the name."""
        alpha = kwargs.pop("alpha", args[1] if method in ("add_", "sub_") and len(args) > 1
                           else 1)
        args = args[:1] if method in ("add_", "sub_") else args
        if alpha != 1:
            args = (self.call_op(self.ops_by_name["mul"], "mul", (args[0], alpha), {}),)
        new = self.call_op(fn, _display(method), (self_tensor, *args), kwargs)
        with self.suspend():
            np.copyto(self_tensor._data, new._data, casting="same_kind")
        self.bind(self_tensor, self.name(new, self_tensor.dtype),
                  self.dynamic_batch and self.batched(new))
        return self_tensor


def onnx_dtype(dtype) -> int:
    """The ONNX element type of a NumPy dtype."""
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# ------------------------------------------------------------------------------ patching
def _op_wrapper(fn, display: str):
    @functools.wraps(fn)
    def traced_op(*args, **kwargs):
        tracer = getattr(_local, "tracer", None)
        if tracer is None or tracer.suspended:
            return fn(*args, **kwargs)
        return tracer.call_op(fn, display, args, kwargs)

    return traced_op


def _raw_op_guard(fn):
    """``_op``, the constructor of every differentiable result: refuses traced inputs it sees."""

    @functools.wraps(fn)
    def guarded(data, inputs, backward_fn, name, *args, **kwargs):
        tracer = getattr(_local, "tracer", None)
        if tracer is not None and not tracer.suspended and any(
                tracer.is_traced(t) for t in inputs):
            op = name.split("Backward")[0]
            raise ExportError(f"ONNX export: no converter for op '{op}'")
        return fn(data, inputs, backward_fn, name, *args, **kwargs)

    return guarded


def _method_wrapper(fn, name: str):
    display = _display(name)

    @functools.wraps(fn)
    def traced_method(self, *args, **kwargs):
        tracer = getattr(_local, "tracer", None)
        if tracer is None or tracer.suspended:
            return fn(self, *args, **kwargs)
        return tracer.call_op(fn, display, (self, *args), kwargs)

    return traced_method


def _inplace_wrapper(fn, name: str, out_of_place):
    @functools.wraps(fn)
    def traced_inplace(self, *args, **kwargs):
        tracer = getattr(_local, "tracer", None)
        if tracer is None or tracer.suspended or not tracer._traced_inputs((self, args), kwargs):
            return fn(self, *args, **kwargs)
        return tracer.inplace(name, out_of_place, self, args, dict(kwargs))

    return traced_inplace


def _read_guard(fn, name: str):
    display = _display(name)

    @functools.wraps(fn)
    def guarded_read(self, *args, **kwargs):
        tracer = getattr(_local, "tracer", None)
        if tracer is not None and not tracer.suspended and tracer.is_traced(self):
            raise ExportError(f"ONNX export: the forward reads the values of a traced tensor "
                              f"({display}()); an ONNX graph cannot depend on data values")
        return fn(self, *args, **kwargs)

    return guarded_read


def _module_call_wrapper(call):
    @functools.wraps(call)
    def traced_call(self, *args, **kwargs):
        tracer = getattr(_local, "tracer", None)
        if tracer is None or tracer.suspended:
            return call(self, *args, **kwargs)
        return tracer.call_module(self, call, args, kwargs)

    return traced_call


class _Patches:
    """The replacements of one export and how to undo them."""

    def __init__(self):
        self.functions: dict[int, tuple] = {}  # id(original) -> (original, wrapper)
        self.undo: list[tuple] = []

    def set(self, owner, attr: str, value) -> None:
        self.undo.append((owner, attr, owner.__dict__[attr]))
        setattr(owner, attr, value)

    def restore(self) -> None:
        for owner, attr, value in reversed(self.undo):
            setattr(owner, attr, value)
        self.undo.clear()


def _install(extra_modules) -> tuple[_Patches, dict]:
    """Wrap the op functions everywhere they are bound; returns the patches and name -> op."""
    from ..autograd import tensor as tensor_module
    from ..nn.module import Module

    patches = _Patches()
    by_name = {}
    for module_name in OP_MODULES:
        module = sys.modules.get(module_name) or __import__(module_name, fromlist=["_"])
        for attr, obj in list(vars(module).items()):
            if (inspect.isfunction(obj) and obj.__module__ == module_name
                    and not attr.startswith("_") and attr not in NOT_OPS):
                patches.functions[id(obj)] = (obj, _op_wrapper(obj, attr))
                if module_name == "dtrain.autograd.tensor":
                    by_name[attr] = obj
    raw = tensor_module._op
    patches.functions[id(raw)] = (raw, _raw_op_guard(raw))

    namespaces = [m for name, m in list(sys.modules.items())
                  if m is not None and (name == "dtrain" or name.startswith("dtrain."))
                  and not name.startswith("dtrain.onnx")]
    namespaces += [m for m in extra_modules if m not in namespaces]
    for module in namespaces:
        for attr, obj in list(vars(module).items()):
            entry = patches.functions.get(id(obj))
            if entry is not None and entry[0] is obj:
                patches.set(module, attr, entry[1])

    for name in TENSOR_METHODS:
        patches.set(Tensor, name, _method_wrapper(Tensor.__dict__[name], name))
    for name, op in INPLACE.items():
        patches.set(Tensor, name, _inplace_wrapper(Tensor.__dict__[name], name, by_name[op]))
    for name in VALUE_READS:
        patches.set(Tensor, name, _read_guard(Tensor.__dict__[name], name))
    patches.set(Module, "__call__", _module_call_wrapper(Module.__dict__["__call__"]))
    return patches, by_name


@contextmanager
def tracing(tracer: Tracer, model):
    """Trace dtrain calls made by this thread into ``tracer`` (one export at a time)."""
    extra = {sys.modules.get(type(m).__module__) for m in model.modules()}
    extra = [m for m in extra if m is not None]
    from .registry import resolve

    with _install_lock:
        tracer.ops, tracer.layers = resolve()
        patches, by_name = _install(extra)
        tracer.ops_by_name = by_name
        _local.tracer = tracer
        try:
            yield tracer
        finally:
            _local.tracer = None
            patches.restore()
