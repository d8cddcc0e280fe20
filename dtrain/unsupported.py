"""torch's top-level names that dtrain does not provide, each with the reason and what to do.

``dtrain.compile`` and the like raise AttributeError with this text (so ``hasattr`` stays
False), instead of Python's bare "no attribute", so a ported script says what to change.
"""

from __future__ import annotations

_CPU = "dtrain computes in float32/float64 with NumPy on the CPU"

MISSING = {
    "compile": "dtrain runs eagerly; there is nothing to compile: use the model itself "
               "(drop `model = torch.compile(model)`)",
    "jit": "TorchScript is not supported; to ship a model, use dtrain.onnx.export",
    "export": "torch.export is not supported; to ship a model, use dtrain.onnx.export",
    "fx": "graph transformations (torch.fx) are not supported",
    "func": "function transforms (torch.func: vmap, grad, jacrev) are not supported",
    "vmap": "function transforms (torch.func: vmap, grad, jacrev) are not supported",
    "autocast": f"mixed precision is not supported: {_CPU}; drop the autocast block",
    "amp": f"mixed precision (autocast, GradScaler) is not supported: {_CPU}; drop it",
    "distributions": "torch.distributions is not provided; draw with dtrain.rand, randn, "
                     "normal, bernoulli or multinomial",
    "fft": "torch.fft is not provided; use numpy.fft on tensor.numpy() (no gradients)",
    "linalg": "torch.linalg is not provided; use numpy.linalg on tensor.numpy() (no gradients)",
    "sparse": "sparse tensors are not supported",
    "sparse_coo_tensor": "sparse tensors are not supported",
    "quantization": "quantization is not supported",
    "ao": "quantization and pruning (torch.ao) are not supported",
    "hub": "torch.hub downloads models and weights; dtrain has no model hub",
    "bfloat16": f"bfloat16 is not supported: {_CPU}",
    "xpu": f"Intel GPUs are not supported: {_CPU}",
    "mps": f"Apple GPUs are not supported: {_CPU} (dtrain.backends.mps answers queries)",
}


def missing(name: str) -> AttributeError:
    """The error for ``dtrain.<name>``: the reason when torch has the name, else Python's."""
    reason = MISSING.get(name)
    if reason is None:
        return AttributeError(f"module 'dtrain' has no attribute {name!r}")
    return AttributeError(f"module 'dtrain' has no attribute {name!r}: {reason}")
