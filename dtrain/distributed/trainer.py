"""The coordinator's training loop, independent of where the micro-shards are computed.

``Trainer`` owns the master model, the optimizer and the scheduler. For each step it plans the
mini-batch, asks an *executor* for the values of tree nodes covering all micro-shards (in this
process, or from worker processes over ZeroMQ), finishes the reduction tree, divides by the
batch size, and runs ``optimizer.step()`` and ``scheduler.step()`` exactly as a PyTorch loop
would. Because only the executor differs, in-process and distributed runs give the same bits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .. import random as _random
from ..process import blas_threads
from ..autograd.tensor import Tensor
from .compute import SampleSource, ShardComputer, add_values, batch_norm_modules, evaluate
from .phases import build_phases
from .shards import BatchPlan, Planner, batches_per_epoch, tree_sum

log = logging.getLogger("dtrain.trainer")


@dataclass
class History:
    """What a run produced: one record per step and one per epoch."""

    steps: list = field(default_factory=list)
    epochs: list = field(default_factory=list)

    @property
    def loss(self) -> list:
        return [r["loss"] for r in self.steps]

    @property
    def lr(self) -> list:
        return [r["lr"] for r in self.steps]


def build_master(job, settings):
    """Seed, then build the model and its phases (optimizers, schedulers) as a script would."""
    _random.manual_seed(settings.seed)
    model = job.model()
    model.to(settings.dtype)
    return model, build_phases(job, model)


def build_replica(job, settings):
    """A worker's copy of the model: same construction, parameters overwritten by broadcasts."""
    _random.manual_seed(settings.seed)
    model = job.model()
    model.to(settings.dtype)
    return model


def is_plateau(scheduler) -> bool:
    """True for ReduceLROnPlateau (and its subclasses), which is stepped with a metric."""
    from ..optim.lr_scheduler import ReduceLROnPlateau

    return isinstance(scheduler, ReduceLROnPlateau)


class InProcessExecutor:
    """Computes every micro-shard in this process, on the master model itself."""

    name = "in-process"

    def __init__(self):
        self.computer = None

    def start(self, trainer) -> None:
        self.computer = ShardComputer(trainer.job, trainer.settings, trainer.model,
                                      trainer.train_source, trainer.phases)

    def compute(self, plan: BatchPlan, trainer, phase: int = 0, round_id: int = 0) -> dict:
        root = (0, plan.micro_shards)
        with blas_threads(trainer.settings.threads):
            return self.computer.node_values(plan, [root], phase)

    def timings(self) -> dict:
        return {}

    def close(self) -> None:
        pass


class Trainer:
    """Runs epochs of steps: plan, compute (via the executor), reduce, step, schedule."""

    def __init__(self, job, settings, executor=None, *, on_step=None, on_epoch=None,
                 checkpoint_dir: str | None = None, keep_checkpoints: int = 3):
        self.job = job
        self.settings = settings.validate()
        self.model, self.phases = build_master(job, settings)
        self.rounds = 0  # evaluation rounds so far (several per step with closures or phases)
        self.params = list(self.model.parameters())
        self.bn_modules = batch_norm_modules(self.model)
        self.train_source = SampleSource(job.train_data(), settings.dtype, "train_data()")
        self.planner = Planner(len(self.train_source), self.settings)
        val = job.val_data()
        self.val_source = SampleSource(val, settings.dtype, "val_data()") if val is not None \
            else None
        self.executor = executor if executor is not None else InProcessExecutor()
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.history = History()
        self.epoch = 0  # the epoch to run next
        self.batch = 0  # the batch of that epoch to run next
        self.step = 0  # optimizer steps taken
        self._epoch_loss = [0.0, 0]
        self.checkpoint_dir = checkpoint_dir
        self.keep_checkpoints = keep_checkpoints
        self.job_id = getattr(self.executor, "job_id", None)

    @property
    def optimizer(self):
        """The optimizer of the first (usually the only) phase."""
        return self.phases[0].optimizer

    @property
    def scheduler(self):
        """The scheduler of the first (usually the only) phase."""
        return self.phases[0].scheduler

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        """Everything the rest of the run depends on, as plain data for ``dtrain.save``."""
        optimizers = [ph.optimizer.state_dict() for ph in self.phases]
        schedulers = [ph.scheduler.state_dict() if ph.scheduler is not None else None
                      for ph in self.phases]
        single = len(self.phases) == 1
        return {
            "model": self.model.state_dict(),
            "optimizer": optimizers[0] if single else optimizers,
            "scheduler": schedulers[0] if single else schedulers,
            "step": self.step, "epoch": self.epoch, "batch": self.batch,
            "epoch_loss": list(self._epoch_loss),
            "settings": self.settings.to_dict(),
            "rng": _random.get_rng_state(),
            "job_id": self.job_id,
        }

    def restore(self, state: dict) -> None:
        """Continue from ``state()`` output; the settings that shape the result must match."""
        saved = state["settings"]
        for key in ("batch_size", "micro_shards", "seed", "shuffle", "drop_last", "dtype",
                    "scheduler_step"):
            if saved.get(key) != getattr(self.settings, key):
                raise ValueError(f"cannot resume: checkpoint has {key}={saved.get(key)!r}, "
                                 f"this run has {getattr(self.settings, key)!r}")
        self.model.load_state_dict(state["model"])
        single = len(self.phases) == 1
        optimizers = [state["optimizer"]] if single else state["optimizer"]
        schedulers = [state.get("scheduler")] if single else state.get("scheduler")
        if len(optimizers) != len(self.phases):
            raise ValueError(f"cannot resume: checkpoint has {len(optimizers)} optimizer(s), "
                             f"the job has {len(self.phases)} phase(s)")
        for ph, opt_state, sched_state in zip(self.phases, optimizers, schedulers):
            ph.optimizer.load_state_dict(opt_state)
            if ph.scheduler is not None and sched_state is not None:
                ph.scheduler.load_state_dict(sched_state)
        self.step, self.epoch, self.batch = state["step"], state["epoch"], state["batch"]
        self._epoch_loss = list(state.get("epoch_loss", [0.0, 0]))
        if state.get("rng") is not None:
            _random.set_rng_state(state["rng"])

    def save_checkpoint(self) -> str | None:
        """Write a checkpoint now (when a checkpoint directory is set)."""
        if not self.checkpoint_dir:
            return None
        from .checkpoint import write_checkpoint

        return write_checkpoint(self.checkpoint_dir, self.state(), self.keep_checkpoints)

    # ------------------------------------------------------------------ planning
    def batches_per_epoch(self) -> int:
        s = self.settings
        return batches_per_epoch(len(self.train_source), s.batch_size, s.drop_last)

    def plan(self, epoch: int, batch: int, step: int) -> BatchPlan:
        """The micro-shard plan of one step, derived only from (seed, epoch, batch)."""
        return self.planner.plan(epoch, batch, step)

    def state_arrays(self) -> dict:
        """The parameters the workers need for the next step, by state_dict name."""
        return {name: p._data for name, p in self.model.named_parameters()}

    # ------------------------------------------------------------------ stepping
    def reduce(self, plan: BatchPlan, values: dict, phase: int) -> float:
        """Finish the tree, set the phase's mean gradients, apply batch-norm statistics."""
        root = (0, plan.micro_shards)
        total = tree_sum(values, root, add_values)
        if total is None or total.count != plan.size:
            raise RuntimeError(f"step {plan.step}: reduced {0 if total is None else total.count} "
                               f"samples, expected {plan.size}")
        count = total.count
        for i in self.phases[phase].param_indices:
            p, g = self.params[i], total.grads[i]
            if g is None:
                p.grad = None
                continue
            if g.flags.writeable and g.dtype == p._data.dtype:
                np.divide(g, count, out=g)  # the tree's own array: no copy
            else:
                g = np.divide(g, count).astype(p._data.dtype, copy=False)
            p.grad = Tensor._wrap(g)
        for shard in sorted(total.bn_stats):
            for index, mean, var in total.bn_stats[shard]:
                self.bn_modules[index].apply_batch_stats(mean, var)
        return total.loss_sum / count

    def evaluate_round(self, plan: BatchPlan, phase: int) -> float:
        """One distributed forward/backward of the mini-batch with the current parameters."""
        self.rounds += 1
        values = self.executor.compute(plan, self, phase, self.rounds)
        return self.reduce(plan, values, phase)

    def run_phase(self, plan: BatchPlan, phase: int) -> tuple[float, int]:
        """Compute, reduce and apply one phase; returns (its loss, evaluation rounds used)."""
        ph = self.phases[phase]
        before = self.rounds
        if ph.closure:
            losses = []

            def closure():
                losses.append(self.evaluate_round(plan, phase))
                return Tensor._wrap(np.asarray(losses[-1], dtype=self.params[0]._data.dtype))

            ph.optimizer.step(closure)
            loss = losses[0]
        else:
            loss = self.evaluate_round(plan, phase)
            ph.optimizer.step()
        if ph.scheduler is not None and self.settings.scheduler_step == "step" \
                and not is_plateau(ph.scheduler):
            ph.scheduler.step()
        return loss, self.rounds - before

    def train_step(self) -> dict:
        """One step on the next mini-batch (every phase in order); returns its record."""
        started = time.perf_counter()
        plan = self.plan(self.epoch, self.batch, self.step)
        lr = [g["lr"] for ph in self.phases for g in ph.optimizer.param_groups]
        losses, rounds = {}, 0
        for k, ph in enumerate(self.phases):
            losses[ph.name], used = self.run_phase(plan, k)
            rounds += used
        loss = next(iter(losses.values()))
        elapsed = time.perf_counter() - started
        record = {"step": self.step, "epoch": self.epoch, "batch": self.batch, "loss": loss,
                  "lr": lr[0] if len(lr) == 1 else lr, "samples": plan.size,
                  "samples_per_s": plan.size / elapsed if elapsed > 0 else 0.0,
                  "seconds": elapsed, "rounds": rounds}
        if len(self.phases) > 1:
            record["phase_losses"] = losses
        if rounds > len(self.phases):
            log.info("step %d: %d evaluation rounds", self.step, rounds)
        record.update(self.executor.timings())
        self._epoch_loss[0] += loss * plan.size
        self._epoch_loss[1] += plan.size
        self.step += 1
        self.batch += 1
        self.history.steps.append(record)
        if self.on_step is not None:
            self.on_step(record)
        every = self.settings.checkpoint_every
        if every and self.step % every == 0:
            self.save_checkpoint()
        return record

    def end_epoch(self) -> dict:
        """Validation, epoch-cadence scheduling, the epoch record."""
        record = {"epoch": self.epoch, "step": self.step,
                  "train_loss": self._epoch_loss[0] / max(self._epoch_loss[1], 1),
                  "lr": [g["lr"] for ph in self.phases for g in ph.optimizer.param_groups]}
        if self.val_source is not None:
            with blas_threads(self.settings.threads):
                val = evaluate(self.job, self.model, self.val_source,
                               self.settings.eval_batch_size)
            record.update({f"val_{k}": v for k, v in val.items()})
        for ph in self.phases:
            if ph.scheduler is None:
                continue
            if is_plateau(ph.scheduler):
                ph.scheduler.step(record.get("val_loss", record["train_loss"]))
            elif self.settings.scheduler_step == "epoch":
                ph.scheduler.step()
        self.epoch += 1
        self.batch = 0
        self._epoch_loss = [0.0, 0]
        self.history.epochs.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)
        self.save_checkpoint()
        return record

    def finished(self) -> bool:
        s = self.settings
        return self.epoch >= s.epochs or (s.max_steps and self.step >= s.max_steps)

    def run(self) -> History:
        """Train until the configured epochs (or max_steps) are done."""
        try:
            self.executor.start(self)  # inside: a failed start still closes its socket/files
            per_epoch = self.batches_per_epoch()
            if per_epoch == 0:
                raise ValueError(f"train_data() has {len(self.train_source)} samples: not one "
                                 f"batch of {self.settings.batch_size} with drop_last")
            while not self.finished():
                while self.batch < per_epoch:
                    self.train_step()
                    if self.settings.max_steps and self.step >= self.settings.max_steps:
                        break
                if self.batch >= per_epoch:
                    self.end_epoch()
                elif self.settings.max_steps and self.step >= self.settings.max_steps:
                    break
        finally:
            self.executor.close()
        return self.history
