"""Phases of a training step: each with its own loss, parameters, optimizer and scheduler.

A plain job has one phase (``Job.loss`` with ``Job.optimizer``). A job may instead declare an
ordered list with ``Job.phases(model)`` — a GAN's discriminator phase, then its generator phase.
Each phase is reduced, applied and broadcast before the next one runs, exactly as in the
single-process loop. Optimizers that re-evaluate the model inside ``step(closure)`` (LBFGS,
NonlinearCG) are allowed in a single-phase job that declares ``closure = True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Phase:
    """One part of a step: ``loss(model, inputs, targets)`` minimized by ``optimizer``."""

    name: str
    loss: object  # callable(model, inputs, targets) -> scalar mean loss Tensor
    optimizer: object
    scheduler: object = None
    param_indices: list = field(default_factory=list)  # positions in model.parameters()
    closure: bool = False
    # set when ``loss`` is ``output_loss(model(inputs), targets)``: the model may then run once
    # over several micro-shards and the loss once per shard (see compute.ShardComputer)
    output_loss: object = None


def needs_closure(optimizer) -> bool:
    """True for optimizers whose step() must re-evaluate the model (LBFGS, NonlinearCG)."""
    return bool(getattr(type(optimizer), "requires_closure", False)) or \
        type(optimizer).__name__ in ("LBFGS", "NonlinearCG")


def _indices(model, optimizer, where: str) -> list[int]:
    position = {id(p): i for i, p in enumerate(model.parameters())}
    indices = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in position:
                raise ValueError(f"{where}: the optimizer holds a tensor that is not a parameter "
                                 "of the job's model")
            indices.append(position[id(p)])
    return sorted(indices)


def build_phases(job, model, *, with_optimizers: bool = True) -> list[Phase]:
    """The job's phases over ``model``, checked for combinations that cannot work."""
    declared = job.phases(model)
    wants_closure = bool(getattr(job, "closure", False))
    if declared is None:
        optimizer = job.optimizer(model)
        scheduler = job.scheduler(optimizer) if with_optimizers else None

        def loss(m, x, y):
            return job.loss(m(x), y)

        phase = Phase("train", loss, optimizer, scheduler, _indices(model, optimizer, "job"),
                      closure=needs_closure(optimizer), output_loss=job.loss)
        if phase.closure and not wants_closure:
            raise ValueError(
                f"{type(optimizer).__name__}.step() needs a closure that re-evaluates the "
                f"mini-batch; declare `closure = True` in {type(job).__name__} to let every step "
                "run several distributed evaluation rounds")
        if wants_closure and not phase.closure:
            raise ValueError(f"{type(job).__name__} sets closure = True but "
                             f"{type(optimizer).__name__} does not take a closure")
        return [phase]
    if wants_closure:
        raise ValueError(f"{type(job).__name__}: closure = True cannot be combined with "
                         "phases(); use one phase with a closure optimizer")
    if not isinstance(declared, (list, tuple)) or not declared:
        raise ValueError(f"{type(job).__name__}.phases() must return a non-empty list of "
                         "dtrain.Phase")
    names = set()
    for phase in declared:
        if not isinstance(phase, Phase):
            raise TypeError(f"{type(job).__name__}.phases() returned {phase!r}, not a Phase")
        if phase.name in names:
            raise ValueError(f"two phases are named {phase.name!r}")
        names.add(phase.name)
        if needs_closure(phase.optimizer):
            raise ValueError(f"phase {phase.name!r} uses {type(phase.optimizer).__name__}, "
                             "which needs a closure: closure optimizers work only in jobs "
                             "without phases")
        phase.param_indices = _indices(model, phase.optimizer, f"phase {phase.name!r}")
        if not phase.param_indices:
            raise ValueError(f"phase {phase.name!r} has no parameters")
    return list(declared)
