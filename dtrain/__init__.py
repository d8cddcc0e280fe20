"""dtrain: PyTorch's training API on NumPy, and data-parallel training over ZeroMQ."""

from . import accelerator, autograd, backends, cuda, data, datasets, nn, onnx, optim, utils
from .autograd import return_types
from .autograd.creation import (
    arange,
    as_tensor,
    empty,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    randint,
    randn,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
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
from .autograd.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .autograd.tensor import (
    Tensor,
    abs,
    amax,
    amin,
    cat,
    clamp,
    exp,
    get_default_dtype,
    log,
    log_softmax,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    relu,
    set_default_dtype,
    sigmoid,
    softmax,
    sqrt,
    stack,
    std,
    sum,
    tanh,
    var,
    where,
)
from .io import CheckpointError, load, load_model, save, save_model
from .random import Generator, get_rng_state, manual_seed, set_rng_state

bool = bool_
float = float32
double = float64
half = float16
long = int64
int = int32  # noqa: A001 - torch's alias; shadows the builtin inside this module only
short = int16
cfloat = complex64
cdouble = complex128

__version__ = "0.1.0"


def flatten(t, start_dim=0, end_dim=-1):
    return t.flatten(start_dim, end_dim)


def reshape(t, shape):
    return t.reshape(shape)


def transpose(t, dim0, dim1):
    return t.transpose(dim0, dim1)


def permute(t, dims):
    return t.permute(dims)


def squeeze(t, dim=None):
    return t.squeeze(dim)


def unsqueeze(t, dim):
    return t.unsqueeze(dim)


def clip(t, min=None, max=None):
    return clamp(t, min, max)


def argmax(t, dim=None, keepdim=False):
    return t.argmax(dim, keepdim)


def argmin(t, dim=None, keepdim=False):
    return t.argmin(dim, keepdim)


def numel(t):
    return t.numel()


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def allclose(a, b, rtol=1e-5, atol=1e-8) -> bool:
    return a.allclose(b, rtol, atol)


def equal(a, b) -> bool:
    return a.equal(b)


from .distributed.job import EarlyStopping, Job, Settings
from .distributed.phases import Phase
from .inference import load_trained, predict


def __getattr__(name: str):
    """``dtrain.fit`` is the launcher's: loaded on first use, so importing dtrain (the library
    every worker and tool imports) never imports the launcher."""
    if name == "fit":
        from .launcher.run import fit

        return fit
    raise AttributeError(f"module 'dtrain' has no attribute {name!r}")
