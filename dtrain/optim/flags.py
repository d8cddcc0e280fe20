"""PyTorch's kernel-choice options (``foreach``, ``fused``, ``capturable``, ``differentiable``).

PyTorch's optimizers take these flags and store them in every parameter group, so dtrain's do
too: the ``state_dict`` then has PyTorch's layout, and a PyTorch script passes them unchanged.
Their meaning here is their meaning on PyTorch's CPU path:

- ``foreach`` and ``fused`` pick PyTorch's multi-tensor or fused kernels; they do not change
  the update rule, so they are accepted (None, True or False; not both True) and dtrain always
  computes the single-tensor arithmetic (PyTorch's default on the CPU). The kernels round
  differently, at the last bit for most optimizers; ASGD's multi-tensor kernel also rounds its
  rate to float32 in another order, so it drifts from the single-tensor path at about 1e-8.
- ``capturable`` keeps step counters on the accelerator for CUDA graphs; PyTorch's CPU step
  fails with AssertionError (unless ``fused``, whose CPU kernel ignores it), and so does
  dtrain's.
- ``differentiable`` records the update in the autograd graph; PyTorch's step then fails on
  leaf parameters (every parameter an optimizer accepts) with RuntimeError, and so does
  dtrain's, whose updates never go through autograd.
"""

from __future__ import annotations


def check_flags(options: dict) -> None:
    """Raise ValueError for a kernel flag that is no bool, RuntimeError for PyTorch's conflicts."""
    for name in ("foreach", "fused"):
        value = options.get(name)
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"Invalid {name} value: {value!r} (must be None or a bool)")
    for name in ("capturable", "differentiable"):
        if not isinstance(options.get(name, False), bool):
            raise ValueError(f"Invalid {name} value: {options[name]!r} (must be a bool)")
    if options.get("fused") and options.get("foreach"):
        raise RuntimeError("fused=True and foreach=True cannot be used together")
    if options.get("fused") and options.get("differentiable"):
        raise RuntimeError("fused=True does not support differentiable=True")


def check_cpu_step(group: dict, who: str) -> None:
    """Raise as PyTorch's CPU step does for a group with ``capturable`` or ``differentiable``."""
    if group.get("capturable") and not group.get("fused"):
        raise AssertionError(f"{who}: capturable=True needs the parameters and step counters "
                             "on an accelerator (CUDA graphs); dtrain runs on the CPU, where "
                             "PyTorch fails the same way. Use capturable=False.")
    if group.get("differentiable"):
        raise RuntimeError(f"{who}: differentiable=True would put the in-place update of leaf "
                           "parameters into the autograd graph, which PyTorch refuses and "
                           "dtrain's NumPy updates cannot do. Use differentiable=False.")
