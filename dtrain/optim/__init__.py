"""Optimizers with PyTorch's names, options, state layout and arithmetic order."""

import importlib.util

from .adagrad import Adagrad
from .adam import Adam
from .adamw import AdamW
from .lbfgs import LBFGS
from .nonlinear_cg import NonlinearCG
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["LBFGS", "SGD", "Adagrad", "Adam", "AdamW", "NonlinearCG", "Optimizer", "RMSprop"]

if importlib.util.find_spec(__name__ + ".lr_scheduler") is not None:
    from . import lr_scheduler

    __all__.append("lr_scheduler")
