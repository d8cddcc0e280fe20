"""Optimizers with PyTorch's names, options, state layout and arithmetic order."""

import importlib.util

from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["SGD", "Optimizer"]

if importlib.util.find_spec(__name__ + ".lr_scheduler") is not None:
    from . import lr_scheduler  # noqa: F401 - written alongside; imported once it exists

    __all__.append("lr_scheduler")
