"""Where converters are declared: by the dtrain module and name of the op or layer they convert.

Declarations are resolved to the objects themselves only at the first export (so importing
``dtrain.onnx`` imports nothing of ``dtrain.nn``), while nothing is patched.
"""

from __future__ import annotations

import importlib

_OPS: list[tuple] = []  # (module, attribute, converter); module "Tensor" means a Tensor method
_LAYERS: list[tuple] = []  # (module, class name, converter)
_resolved: list = []


def converts(module: str, *names: str):
    """Declare a converter for the op functions ``module.name`` (``converter(tracer, out, **args)``)."""

    def declare(converter):
        for name in names:
            _OPS.append((module, name, converter))
        return converter

    return declare


def converts_layer(module: str, *names: str):
    """Declare a converter for layers ``module.name`` (``converter(tracer, layer, out, input)``)."""

    def declare(converter):
        for name in names:
            _LAYERS.append((module, name, converter))
        return converter

    return declare


def resolve() -> tuple[dict, dict]:
    """(original function -> converter, layer class -> converter); call with nothing patched."""
    if not _resolved:
        from ..autograd.tensor import Tensor
        from . import layers, ops, recurrent, resize  # noqa: F401 - importing declares them

        functions, classes = {}, {}
        for module, name, converter in _OPS:
            owner = Tensor.__dict__ if module == "Tensor" else vars(importlib.import_module(module))
            functions[owner[name]] = converter
        for module, name, converter in _LAYERS:
            classes[getattr(importlib.import_module(module), name)] = converter
        _resolved.append((functions, classes))
    return _resolved[0]
