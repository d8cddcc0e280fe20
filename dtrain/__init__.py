"""dtrain: PyTorch's training API on NumPy, and data-parallel training over ZeroMQ."""

from __future__ import annotations

import numpy as np

from . import accelerator, autograd, backends, cuda, data, datasets, nn, onnx, optim, utils
from .autograd import return_types
from .autograd.creation import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from .autograd.anomaly import is_anomaly_enabled
from .autograd.device import DeviceUnavailableError, device
from .autograd.dtypes import (
    Size,
    bool_,
    complex64,
    complex128,
    dtype,
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    uint8,
)
from .autograd.functional import (
    abs,
    add,
    addcdiv,
    addcmul,
    cat,
    clamp,
    clip,
    concat,
    concatenate,
    div,
    divide,
    eq,
    exp,
    floor_divide,
    ge,
    greater,
    greater_equal,
    gt,
    isfinite,
    isnan,
    le,
    less,
    less_equal,
    log,
    logical_and,
    logical_not,
    logical_or,
    lt,
    matmul,
    maximum,
    mean,
    minimum,
    mm,
    mul,
    multiply,
    ne,
    neg,
    negative,
    not_equal,
    pow,
    relu,
    remainder,
    sigmoid,
    sign,
    sqrt,
    stack,
    sub,
    subtract,
    sum,
    t,
    tanh,
    true_divide,
    where,
)
from .autograd.grad_mode import (
    enable_grad,
    inference_mode,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from .autograd.indexing import gather, index_select, masked_fill, scatter, scatter_add
from .autograd.pieces import chunk, cumsum, norm, split, unbind
from .autograd.mathops import (
    all,
    any,
    bmm,
    ceil,
    cos,
    dot,
    einsum,
    expm1,
    flip,
    floor,
    isclose,
    log1p,
    log2,
    log10,
    logsumexp,
    narrow,
    outer,
    prod,
    reciprocal,
    roll,
    round,
    rsqrt,
    sin,
    square,
    tril,
    triu,
    trunc,
)
from .autograd.legacy import (
    BoolTensor,
    ByteTensor,
    CharTensor,
    DoubleTensor,
    FloatTensor,
    HalfTensor,
    IntTensor,
    LongTensor,
    ShortTensor,
)
from .autograd.sampling import bernoulli, multinomial, normal
from .autograd.selection import argwhere, bincount, diag, masked_select, nonzero, unique
from .autograd.sorting import argsort, sort, topk
from .autograd.tensor import (
    Tensor,
    amax,
    amin,
    get_default_dtype,
    log_softmax,
    max,
    min,
    set_default_dtype,
    softmax,
    std,
    var,
)
from .io import CheckpointError, load, load_model, save, save_model
from .process import get_num_threads, keep_freed_memory_by_default, set_num_threads
from .random import (
    Generator,
    are_deterministic_algorithms_enabled,
    get_rng_state,
    initial_seed,
    is_deterministic_algorithms_warn_only_enabled,
    manual_seed,
    seed,
    set_rng_state,
    use_deterministic_algorithms,
)

bool = bool_
float = float32
double = float64
half = float16
long = int64
int = int32  # torch's alias; shadows the builtin inside this module only
short = int16
cfloat = complex64
cdouble = complex128

__version__ = "0.1.0"


def flatten(input, start_dim=0, end_dim=-1):
    return input.flatten(start_dim, end_dim)


def reshape(input, shape):
    return input.reshape(shape)


def transpose(input, dim0, dim1):
    return input.transpose(dim0, dim1)


def permute(input, dims):
    return input.permute(dims)


def squeeze(input, dim=None):
    return input.squeeze(dim)


def unsqueeze(input, dim):
    return input.unsqueeze(dim)


def argmax(input, dim=None, keepdim=False):
    return input.argmax(dim, keepdim)


def argmin(input, dim=None, keepdim=False):
    return input.argmin(dim, keepdim)


def numel(input):
    return input.numel()


def finfo(type=None) -> np.finfo:
    """Limits of a float dtype (``eps``, ``max``, ``tiny``, ...); the default dtype when none."""
    return np.finfo(np.dtype(get_default_dtype() if type is None else type))


def iinfo(type) -> np.iinfo:
    """Limits of an integer dtype (``min``, ``max``, ``bits``)."""
    return np.iinfo(np.dtype(type))


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def allclose(a, b, rtol=1e-5, atol=1e-8) -> bool:
    return a.allclose(b, rtol, atol)


def equal(a, b) -> bool:
    return a.equal(b)


from .distributed.job import EarlyStopping, Job, Settings
from .distributed.phases import Phase
from .inference import load_trained, predict


keep_freed_memory_by_default()  # a step's freed temporaries serve the next (dtrain.process)


def __getattr__(name: str):
    """``dtrain.fit`` is the launcher's: loaded on first use, so importing dtrain (the library
    every worker and tool imports) never imports the launcher."""
    if name == "fit":
        from .launcher.run import fit

        return fit
    from .unsupported import missing

    raise missing(name)
