"""Neural-network building blocks with PyTorch's names and semantics."""

from . import functional, init, utils
from .activation import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Softplus, Tanh
from .container import Flatten, ModuleDict, ModuleList, Sequential, Unflatten
from .conv import Conv2d
from .dropout import Dropout, keyed_dropout, keyed_randn
from .linear import Identity, Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .module import Module
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm, collect_batch_stats
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .sparse import Embedding

__all__ = [
    "Module", "Parameter", "Linear", "Identity", "Sequential", "ModuleList", "ModuleDict",
    "Flatten", "Unflatten", "Dropout", "keyed_dropout", "keyed_randn", "ReLU", "LeakyReLU", "Tanh", "Sigmoid",
    "GELU", "ELU", "Softplus", "Softmax", "LogSoftmax", "CrossEntropyLoss", "NLLLoss", "MSELoss",
    "L1Loss", "BCELoss", "BCEWithLogitsLoss", "functional", "init", "utils",
    "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d",
    "LayerNorm", "Embedding", "collect_batch_stats",
]
