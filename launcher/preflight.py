"""Check a job in a second before any worker starts: build, forward, loss, backward, one step.

A missing or broken ``loss()`` used to surface at the first distributed step, after the
workers had started, and a (n,) target against (n, 1) outputs trained silently on a loss
broadcast to (n, n). The check runs the job's own code on one micro-shard of the first
mini-batch, on a throwaway model, so the run's model, optimizer and random state are untouched.
"""

from __future__ import annotations

import warnings

import numpy as np

from dtrain.autograd.grad_mode import no_grad
from dtrain.autograd.tensor import Tensor
from dtrain.distributed.compute import SampleSource, ShardComputer
from dtrain.distributed.job import Job
from dtrain.distributed.shards import Planner
from dtrain.distributed.trainer import build_master
from dtrain.process import blas_threads


class JobCheckError(ValueError):
    """The job's data or outputs cannot work; the message names the problem and the fix."""


def _output_grad(job, output: np.ndarray, target) -> np.ndarray:
    """The gradient of the job's loss with respect to the model's output."""
    leaf = Tensor._make(output.copy(), requires_grad=True)
    job.loss(leaf, target).backward()
    return leaf.grad._data


def check_targets(job, output, target) -> None:
    """Refuse targets that the loss silently broadcasts or misreads as class indices."""
    out, y = output._data, target._data
    if out.ndim == 2 and out.shape[1] > 1 and y.ndim == 1 and y.dtype.kind == "f":
        hint = "y.astype(np.int64)" if bool(np.all(np.mod(y, 1) == 0)) else \
            "integer class indices 0..C-1"
        raise JobCheckError(
            f"train_data() targets are floating-point class labels ({y.dtype}, shape (n,)) "
            f"for a model with {out.shape[1]} outputs: class labels must be integers; use "
            f"{hint}")
    if out.shape == y.shape or len(out) < 2 or y.dtype.kind != "f":
        return
    # A loss that broadcasts (n, 1) against (n,) mixes samples: changing one target then moves
    # the gradient of every other sample's output.
    moved = y.copy()
    moved[0] = moved[0] + 1
    with warnings.catch_warnings():  # the losses warn about this very mismatch
        warnings.simplefilter("ignore")
        before = _output_grad(job, out, target)
        after = _output_grad(job, out, Tensor._wrap(moved))
    if not np.allclose(before[1:], after[1:]):
        shape = ", ".join(("n", *map(str, out.shape[1:])))
        target_shape = ", ".join(("n", *map(str, y.shape[1:]))) + ("," if y.ndim == 1 else "")
        reshape = ", ".join(map(str, (-1, *out.shape[1:])))
        raise JobCheckError(
            f"loss() mixes samples: the model outputs ({shape}) but train_data() targets have "
            f"shape ({target_shape}), which the loss broadcasts against each other; return "
            f"targets shaped like the output (y.reshape({reshape})) or reshape the output in "
            "loss()")


def check_job(job, settings) -> None:
    """Run model, loss, backward and one optimizer step on one micro-shard; raise on failure."""
    model, phases = build_master(job, settings)
    source = SampleSource(job.train_data(), settings.dtype, "train_data()")
    if len(source) == 0:
        raise JobCheckError("train_data() returned no samples")
    plan = Planner(len(source), settings).plan(0, 0, 0)
    shard = next(k for k in range(plan.micro_shards) if len(plan.shard_ids(k)))
    x, y = source.fetch(plan.shard_ids(shard))
    params = list(model.parameters())
    with blas_threads(settings.threads):
        if type(job).phases is Job.phases:  # one phase made of the job's own loss()
            model.eval()
            with no_grad():
                output = model(x)
            check_targets(job, output, y)
        computer = ShardComputer(job, settings, model, source, phases)
        for k, phase in enumerate(phases):
            value = computer.shard_value(plan, shard, k)
            for p, g in zip(params, value.grads):
                p.grad = None if g is None else Tensor._wrap(g / value.count)
            if not phase.closure:
                phase.optimizer.step()
