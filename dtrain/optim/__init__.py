"""Optimizers with PyTorch's names, options, state layout and arithmetic order."""

import importlib.util

from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam
from .adamax import Adamax
from .adamw import AdamW
from .asgd import ASGD
from .lbfgs import LBFGS
from .nadam import NAdam
from .nonlinear_cg import NonlinearCG
from .optimizer import Optimizer
from .radam import RAdam
from .rmsprop import RMSprop
from .rprop import Rprop
from .sgd import SGD

__all__ = ["ASGD", "LBFGS", "SGD", "Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW",
           "Adamax", "NAdam", "NonlinearCG", "Optimizer", "RAdam", "RMSprop", "Rprop"]

if importlib.util.find_spec(__name__ + ".lr_scheduler") is not None:
    from . import lr_scheduler, swa_utils

    __all__ += ["lr_scheduler", "swa_utils"]
