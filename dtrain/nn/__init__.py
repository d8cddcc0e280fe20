"""Neural-network building blocks with PyTorch's names and semantics."""

from . import functional, init, utils
from .activation import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Softplus, Tanh
from .container import Flatten, ModuleDict, ModuleList, Sequential, Unflatten
from .dropout import Dropout, keyed_dropout
from .linear import Identity, Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .module import Module
from .parameter import Parameter

__all__ = [
    "Module", "Parameter", "Linear", "Identity", "Sequential", "ModuleList", "ModuleDict",
    "Flatten", "Unflatten", "Dropout", "keyed_dropout", "ReLU", "LeakyReLU", "Tanh", "Sigmoid",
    "GELU", "ELU", "Softplus", "Softmax", "LogSoftmax", "CrossEntropyLoss", "NLLLoss", "MSELoss",
    "L1Loss", "BCELoss", "BCEWithLogitsLoss", "functional", "init", "utils",
]
