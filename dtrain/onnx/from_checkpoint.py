"""``export_checkpoint``: the model of a training script, with a checkpoint's weights, to ONNX."""

from __future__ import annotations

import numpy as np

from .export import export


def model_state(state, path: str) -> dict:
    """The model's state_dict in a loaded checkpoint (dtrain launch's, or a saved state_dict)."""
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        return state["model"]
    if isinstance(state, dict) and state and all(hasattr(v, "shape") for v in state.values()):
        return state
    raise ValueError(f"{path}: expected a checkpoint with a 'model' state_dict (as dtrain launch "
                     "writes) or a saved state_dict")


MAX_EXAMPLE_VALUES = 1 << 24  # an example input traces the model once; one sample is enough


def export_checkpoint(checkpoint, script, out, job_name: str | None = None,
                      input_shape: tuple | None = None, opset: int = 17,
                      dynamic_batch: bool = True):
    """Build ``script``'s job model, load ``checkpoint``'s weights and export it to ``out``.

    The example input has ``input_shape`` (zeros in the run's float dtype) or is one sample of
    the job's ``train_data()``. Returns the ``onnx.ModelProto``.
    """
    from ..distributed.compute import SampleSource
    from ..distributed.job import load_job
    from ..io import load

    job, _ = load_job(str(script), job_name)
    state = load(checkpoint)
    weights = model_state(state, str(checkpoint))
    from ..inference import build_trained_model

    model = build_trained_model(job, {**(state if isinstance(state, dict) else {}),
                                      "model": weights}, str(checkpoint))  # as trained
    dtype = job.dtype
    if input_shape is not None:
        if not input_shape or any(int(n) < 1 for n in input_shape):
            raise ValueError(f"input shape must be positive sizes, got {tuple(input_shape)}")
        values = int(np.prod([int(n) for n in input_shape], dtype=object))
        if values > MAX_EXAMPLE_VALUES:
            raise ValueError(f"input shape {','.join(str(int(n)) for n in input_shape)} holds "
                             f"{values} values, more than {MAX_EXAMPLE_VALUES} that an example "
                             "input needs: give the shape of a batch of one, e.g. 1,64")
        example = np.zeros(tuple(int(n) for n in input_shape), dtype=dtype)
    else:
        source = SampleSource(job.train_data(), dtype)
        if len(source) == 0:
            raise ValueError("train_data() is empty: pass an input shape for the example input")
        example, _ = source.fetch(np.arange(1))
    return export(model, example, out, opset=opset, dynamic_batch=dynamic_batch)
