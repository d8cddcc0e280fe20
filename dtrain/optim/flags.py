"""PyTorch's kernel-choice options (``foreach``, ``capturable``, ``differentiable``) on the CPU.

PyTorch's optimizers take these flags and store them in every parameter group, so dtrain's do
too: the ``state_dict`` then has PyTorch's layout, and a PyTorch script passes them unchanged.
Their meaning here is their meaning on PyTorch's CPU path:

- ``foreach`` picks PyTorch's multi-tensor kernels; it does not change the update rule, so it
  is accepted (None, True or False) and dtrain always computes the single-tensor arithmetic.
- ``capturable`` keeps step counters on the accelerator for CUDA graphs; PyTorch's CPU step
  fails with AssertionError, and so does dtrain's.
- ``differentiable`` records the update in the autograd graph; PyTorch's step then fails on
  leaf parameters (every parameter an optimizer accepts) with RuntimeError, and so does
  dtrain's, whose updates never go through autograd.
"""

from __future__ import annotations


def check_flags(options: dict) -> None:
    """Raise ValueError if a group's ``foreach``/``capturable``/``differentiable`` is no bool."""
    foreach = options.get("foreach")
    if foreach is not None and not isinstance(foreach, bool):
        raise ValueError(f"Invalid foreach value: {foreach!r} (must be None or a bool)")
    for name in ("capturable", "differentiable"):
        if not isinstance(options.get(name, False), bool):
            raise ValueError(f"Invalid {name} value: {options[name]!r} (must be a bool)")


def check_cpu_step(group: dict, who: str) -> None:
    """Raise as PyTorch's CPU step does for a group with ``capturable`` or ``differentiable``."""
    if group.get("capturable"):
        raise AssertionError(f"{who}: capturable=True needs the parameters and step counters "
                             "on an accelerator (CUDA graphs); dtrain runs on the CPU, where "
                             "PyTorch fails the same way. Use capturable=False.")
    if group.get("differentiable"):
        raise RuntimeError(f"{who}: differentiable=True would put the in-place update of leaf "
                           "parameters into the autograd graph, which PyTorch refuses and "
                           "dtrain's NumPy updates cannot do. Use differentiable=False.")
