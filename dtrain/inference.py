"""Use a trained run: rebuild its model from the script and the run's final checkpoint, predict.

The checkpoint holds the run's effective settings and hyperparameters (``--set hidden=256``),
so the model is rebuilt exactly as it was trained, in the run's dtype, before its weights load.
"""

from __future__ import annotations

import os

import numpy as np

from .autograd.grad_mode import no_grad
from .autograd.tensor import Tensor
from .io import CheckpointError, load

FINAL = "checkpoint.dtrain"


def checkpoint_file(run) -> str:
    """A run directory's final checkpoint, or ``run`` itself when it is a checkpoint file."""
    run = os.fspath(run)
    path = os.path.join(run, FINAL) if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no trained model at {path}: pass a run's --out directory "
                                "(with checkpoint.dtrain) or a checkpoint file")
    return path


def build_trained_model(job, state: dict, path: str = "the checkpoint"):
    """``job``'s model as the checkpointed run built it (its settings applied), weights loaded,
    in eval mode; ``path`` names the checkpoint in errors."""
    from .distributed.job import apply_settings
    from .distributed.settings import Settings

    saved = state.get("settings") if isinstance(state, dict) else None
    if isinstance(saved, dict):
        known = {k: v for k, v in saved.items() if k in Settings.__dataclass_fields__}
        try:
            settings = Settings(**{**Settings().to_dict(), **known}).validate()
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: its settings cannot rebuild the model: {e} (was "
                                  "the file written by dtrain?)") from None
        apply_settings(job, settings)
    model = job.model()
    model.to(job.dtype)
    model.load_state_dict(state["model"])
    model.eval()
    return model


def load_trained(run, script, job_name: str | None = None):
    """The final model of ``run`` (a run directory or checkpoint) built by ``script``'s job."""
    from .distributed.job import load_job

    path = checkpoint_file(run)
    state = load(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path} is not a training checkpoint (no 'model' state_dict)")
    job, _ = load_job(os.fspath(script), job_name)
    return build_trained_model(job, state, path)


def predict(model, inputs, batch_size: int = 1024) -> np.ndarray:
    """``model``'s outputs for ``inputs`` (an array of samples), in batches, without gradients."""
    inputs = np.asarray(inputs)
    if inputs.ndim == 0 or len(inputs) == 0:
        raise ValueError(f"predict needs an array of samples, got shape {inputs.shape}")
    dtype = next(iter(model.parameters())).dtype if list(model.parameters()) else np.float32
    if inputs.dtype.kind == "f":
        inputs = inputs.astype(dtype, copy=False)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with no_grad():
            for start in range(0, len(inputs), batch_size):
                batch = np.ascontiguousarray(inputs[start:start + batch_size])
                out = model(Tensor._wrap(batch))
                outputs.append(np.array(out._data))
    finally:
        model.train(was_training)
    return np.concatenate(outputs)
