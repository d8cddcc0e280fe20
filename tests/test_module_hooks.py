"""Global parameter and buffer registration hooks (torch.nn.modules.module's), which
dtrain.load uses to hold a model file's constructors to a memory budget."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain
from dtrain import nn
from dtrain.nn import module as nn_module


def registrations(lib, module_api, build) -> list:
    """(kind, class, name, shape) of every registration while ``build(lib)`` runs."""
    seen = []

    def record(kind):
        def hook(module, name, value):
            shape = None if value is None else tuple(value.shape)
            seen.append((kind, type(module).__name__, name, shape))
        return hook

    handles = [module_api.register_module_parameter_registration_hook(record("param")),
               module_api.register_module_buffer_registration_hook(record("buffer"))]
    try:
        build(lib)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def build_layers(lib):
    lib.nn.Linear(2, 3, bias=False)
    bn = lib.nn.BatchNorm1d(3)
    bn.running_mean = lib.zeros(3)
    plain = lib.nn.Module()
    plain.register_buffer("absent", None)
    plain.register_parameter("w", lib.nn.Parameter(lib.ones(2)))
    plain.register_parameter("none", None)


def test_registration_hooks_see_what_torch_sees():
    torch = pytest.importorskip("torch")
    from torch.nn.modules import module as torch_module

    expected = registrations(torch, torch_module, build_layers)
    assert registrations(dtrain, nn_module, build_layers) == expected
    assert ("param", "Linear", "weight", (3, 2)) in expected


def test_registration_hooks_replace_values_and_are_removable():
    handle = nn_module.register_module_parameter_registration_hook(
        lambda module, name, p: nn.Parameter(np.zeros(p.shape, np.float32)))
    buffers = nn_module.register_module_buffer_registration_hook(
        lambda module, name, b: None if b is None else dtrain.full(tuple(b.shape), 7.0))
    try:
        layer = nn.Module()
        layer.w = nn.Parameter(dtrain.ones(2))
        layer.register_buffer("b", dtrain.ones(3))
    finally:
        handle.remove()
        buffers.remove()
    assert np.array_equal(layer.w.detach().numpy(), np.zeros(2, np.float32))
    assert np.array_equal(layer.b.numpy(), np.full(3, 7.0, np.float32))
    layer.w = nn.Parameter(dtrain.ones(2))  # the hooks are gone
    assert np.array_equal(layer.w.detach().numpy(), np.ones(2, np.float32))
