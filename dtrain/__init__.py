"""dtrain: PyTorch's training API on NumPy, and data-parallel training over ZeroMQ."""

from . import autograd, data, datasets, nn, onnx, optim
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
from .autograd.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .autograd.tensor import (
    Tensor,
    abs,
    amax,
    amin,
    bool_,
    cat,
    clamp,
    exp,
    float32,
    float64,
    get_default_dtype,
    int32,
    int64,
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
    uint8,
    var,
    where,
)
from .io import CheckpointError, load, load_model, save, save_model
from .random import get_rng_state, manual_seed, set_rng_state

bool = bool_
float = float32
double = float64
long = int64

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


def fit(job, workers: int = 0, *, out=None, job_name=None, progress: bool = False,
        max_restarts: int = 0, bind: str = "tcp://127.0.0.1:0", resume=None,
        insecure: bool = False, overwrite: bool = False, tensorboard: bool = False,
        **settings):
    """Train ``job`` (a Job, Job class or script path); returns (model, history).

    ``workers=0`` trains in this process; ``workers=N`` starts a coordinator here and N local
    worker processes. The result is bit-identical for every value of ``workers``. Keyword
    settings override the job's (listed below), as do keywords naming the job's own
    hyperparameters (its plain class attributes); any other keyword is an error naming it.
    With ``out`` a directory gets metrics.jsonl, checkpoints and the final checkpoint; it must
    be new or empty unless ``resume`` (continue from the newest valid checkpoint of such a
    directory) or ``overwrite=True``; ``tensorboard=True`` adds TensorBoard event files
    there. Local workers talk to the coordinator over CURVE with
    ephemeral keys unless ``insecure=True``. A script that calls ``fit`` with workers must do
    so under ``if __name__ == "__main__":``.

    Settings:
    """
    from dtrain.launcher.run import RunConfig, run

    return run(RunConfig(job=job, workers=workers, job_name=job_name, out=out, bind=bind,
                         max_restarts=max_restarts, progress=progress, epoch_lines=progress,
                         resume=resume, insecure=insecure, overwrite=overwrite,
                         tensorboard=tensorboard,
                         overrides=settings))


def _document_settings(func) -> None:
    from .distributed.settings import SPECS

    lines = [f"        {s.name} ({s.type.__name__}, default {s.default!r}): {s.help}"
             for s in SPECS]
    func.__doc__ = func.__doc__.rstrip() + "\n" + "\n".join(lines) + "\n"


_document_settings(fit)
