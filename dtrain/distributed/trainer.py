"""The coordinator's training loop, independent of where the micro-shards are computed.

``Trainer`` owns the master model, the optimizer and the scheduler. For each step it plans the
mini-batch, asks an *executor* for the values of tree nodes covering all micro-shards (in this
process, or from worker processes over ZeroMQ), finishes the reduction tree, divides by the
batch size, and runs ``optimizer.step()`` and ``scheduler.step()`` exactly as a PyTorch loop
would. Because only the executor differs, in-process and distributed runs give the same bits.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .. import random as _random
from ..autograd.tensor import Tensor
from ..nn import global_sums
from ..nn.utils import clip_grad_norm_
from ..optim.lr_scheduler import ReduceLROnPlateau
from ..process import blas_threads

# Imported here, not when first used: a module imported mid-run opens its file, which fails
# while a connection flood holds every descriptor the process may have.
from .accumulation import add_to_buffer, buffer_mean
from .checkpoint import CheckpointWriter, checkpoint_path, resume_conflicts
from .compute import SampleSource, ShardComputer, add_values, batch_norm_modules, evaluate
from .param_ranges import model_ranges
from .phases import build_phases
from .range_optimizer import group_options, record_range_step
from .range_sums import RangeSums
from .sharded import RangesLost, sharding_refusal
from .shards import BatchPlan, Planner, batches_per_epoch, tree_sum

log = logging.getLogger("dtrain.trainer")


class TrainingStopped(KeyboardInterrupt):
    """Training stopped between two steps on request (Ctrl-C, SIGTERM); state is consistent."""


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
                 checkpoint_dir: str | None = None):
        self.job = job
        self.settings = settings.validate()
        self.model, self.phases = build_master(job, settings)
        self.rounds = 0  # evaluation rounds so far (several per step with closures or phases)
        self.params = list(self.model.parameters())
        # the job's parameter ranges; global quantities are summed over them in range order
        self.ranges = model_ranges(self.model, [ph.optimizer for ph in self.phases],
                                   self.settings.param_ranges)
        self.range_sums = RangeSums(self.ranges, self.params)
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
        self.checkpoints = None  # the CheckpointWriter, made on the first checkpoint
        self.job_id = getattr(self.executor, "job_id", None)
        self.digest = getattr(self.executor, "digest", None)  # the script's, for resume
        self.training = False  # True between the executor's start and the end of the run
        self.stop_requested = False  # set (e.g. by Ctrl-C): checkpoint after this step, stop
        self.stopped = False  # the job's on_epoch_end ended training (early stopping)
        self.sharded = False  # the workers' reducers own the ranges (reduction = sharded)
        self.reduction_auto = False  # sharded was reduction = auto's choice, not the user's
        self.stale = False  # sharded: the master model lags the reducers' ranges
        self.snapshot = None  # sharded: (state, steps, epochs) of the last gathered state
        self.on_rollback = None  # called with (step, epoch) rolled back to: drop later records
        self._acc = [None] * len(self.params)  # gradient sums of an accumulation group
        self._acc_count = 0
        if settings.accumulate > 1 and (len(self.phases) > 1 or self.phases[0].closure):
            raise ValueError("setting accumulate > 1 works with one phase and an optimizer "
                             "without closure; set accumulate = 1 for phases or LBFGS-like "
                             "optimizers (or use a larger batch_size)")

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
            "digest": self.digest,
            "stopped": self.stopped,
            "accumulated": {"count": self._acc_count, "grads": list(self._acc)},
        }

    def restore(self, state: dict) -> None:
        """Continue from ``state()`` output; the settings that shape the result must match."""
        conflicts = resume_conflicts(state, self.settings)
        if conflicts:
            raise ValueError(f"cannot resume: the checkpoint's run was trained with "
                             f"{', '.join(conflicts)}")
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
        self.stopped = bool(state.get("stopped", False))
        accumulated = state.get("accumulated") or {"count": 0, "grads": []}
        if accumulated["count"]:
            self._acc = [None if g is None else np.array(g) for g in accumulated["grads"]]
            self._acc_count = accumulated["count"]
        if state.get("rng") is not None:
            _random.set_rng_state(state["rng"])

    def save_checkpoint(self, metrics: dict | None = None, wait: bool = False) -> str | None:
        """Checkpoint now (when a checkpoint directory is set): snapshotted at once, written by
        a background thread so the coordinator keeps serving its workers; ``wait`` blocks until
        it is on disk. ``metrics`` are the epoch record's values, which ``keep_best`` may rank
        it by. Returns the path it goes to."""
        if not self.checkpoint_dir:
            return None
        self.sync()
        s = self.settings
        if self.checkpoints is None:
            self.checkpoints = CheckpointWriter(s.keep_checkpoints, keep_best=s.keep_best)
        serve = getattr(self.executor, "serve", None)  # keep answering workers while we wait
        self.checkpoints.submit(self.checkpoint_dir, self.state(), metrics=metrics,
                                idle=(lambda: serve(0.05)) if serve else None)
        if wait:
            self.checkpoints.flush()
        return checkpoint_path(self.checkpoint_dir, self.step)

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
        if self.settings.accumulate > 1 and not self.sharded:  # sharded: the reducers do
            self._accumulate(total, phase)
        for i in self.phases[phase].param_indices if self.settings.accumulate == 1 else ():
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

    def _accumulate(self, total, phase: int) -> None:
        """Add a mini-batch's gradient sums to the accumulation buffers (``accumulate`` > 1)."""
        for i in self.phases[phase].param_indices:
            g = total.grads[i]
            if g is not None:
                self._acc[i] = add_to_buffer(self._acc[i], g, self.params[i].dtype)
        self._acc_count += total.count

    def _flush_accumulated(self, phase: int) -> None:
        """Set the mean of the accumulated gradients as the phase's gradients; empty buffers."""
        for i in self.phases[phase].param_indices:
            g = self._acc[i]
            self.params[i].grad = None if g is None else Tensor._wrap(
                buffer_mean(g, self._acc_count, self.params[i].dtype))
        self._acc = [None] * len(self.params)
        self._acc_count = 0

    def _ends_group(self) -> bool:
        """True when the current mini-batch ends an accumulation group (or its epoch)."""
        k = self.settings.accumulate
        return (self.batch + 1) % k == 0 or self.batch + 1 >= self.batches_per_epoch()

    def evaluate_round(self, plan: BatchPlan, phase: int) -> float:
        """One distributed forward/backward of the mini-batch with the current parameters."""
        self.rounds += 1
        values = self.executor.compute(plan, self, phase, self.rounds)
        return self.reduce(plan, values, phase)

    def before_step(self, phase: int) -> None:
        """Clip the phase's gradients (``clip_grad_norm``), then the job's ``before_step`` hook.

        Both see the reduced mean gradients, which are the same bits for any worker count, and
        form global norms range by range (``range_sums``, also for ``clip_grad_norm_`` called
        in the hook), so the result depends on ``param_ranges``, never on the workers.
        """
        ph = self.phases[phase]
        with global_sums.using(self.range_sums):
            if self.settings.clip_grad_norm:
                clip_grad_norm_([self.params[i] for i in ph.param_indices],
                                self.settings.clip_grad_norm)
            self.job.before_step(self.model, ph.optimizer)

    # ------------------------------------------------------------------ sharded reduction
    def choose_reduction(self) -> None:
        """Reduce by range on the workers when the job asks and can; else say why not."""
        if self.settings.reduction != "sharded":
            return
        why = sharding_refusal(self, self.executor)
        if why is not None:
            log.log(logging.INFO if self.reduction_auto else logging.WARNING,
                    "reduction = %s: the coordinator reduces this run instead, because %s",
                    "auto" if self.reduction_auto else "sharded", why)
            if getattr(self.executor, "plane", None) is not None:
                self.executor.plane = None
            return
        self.sharded = True
        self.take_snapshot()

    def sharded_round(self, plan: BatchPlan, hold: bool) -> float:
        """One step on the reducers: they sum and step the ranges (``hold``: only add the sums
        to their accumulation buffers); here the loss, batch-norm statistics and the step count
        the scheduler checks."""
        self.rounds += 1
        self.stale = True
        values = self.executor.plane.run_step(plan, group_options(self.optimizer), self, hold)
        loss = self.reduce(plan, values, 0)
        if not hold:
            record_range_step(self.optimizer)
        return loss

    def sync(self) -> None:
        """Gather the reducers' ranges into the master model and optimizer (sharded: before
        anything reads them), and keep that state to roll back to."""
        if not (self.sharded and self.stale):
            return
        self.executor.plane.gather(self)
        self.stale = False
        self.take_snapshot()

    def take_snapshot(self) -> None:
        self.snapshot = (copy.deepcopy(self.state()), len(self.history.steps),
                         len(self.history.epochs))

    def roll_back(self, why: str) -> None:
        """A reducer was lost: continue from the last gathered state; the steps since are
        recomputed with the same plans, so only time is lost."""
        state, steps, epochs = self.snapshot
        log.warning("%s: its parameter ranges are lost; rolling back to step %d and "
                    "recomputing %d step(s)", why, state["step"], self.step - state["step"])
        self.restore(copy.deepcopy(state))
        del self.history.steps[steps:]
        del self.history.epochs[epochs:]
        self.stale = False
        if self.on_rollback is not None:
            self.on_rollback(self.step, self.epoch)

    def run_phase(self, plan: BatchPlan, phase: int) -> tuple[float, int]:
        """Compute, reduce and apply one phase; returns (its loss, evaluation rounds used)."""
        ph = self.phases[phase]
        before = self.rounds
        if self.sharded:
            hold = self.settings.accumulate > 1 and not self._ends_group()
            loss = self.sharded_round(plan, hold)
            if hold:
                return loss, self.rounds - before
        elif ph.closure:
            losses = []

            def closure():
                losses.append(self.evaluate_round(plan, phase))
                self.before_step(phase)
                return Tensor._wrap(np.asarray(losses[-1], dtype=self.params[0]._data.dtype))

            with global_sums.using(self.range_sums):  # LBFGS's, NonlinearCG's dot products
                ph.optimizer.step(closure)
            loss = losses[0]
        else:
            loss = self.evaluate_round(plan, phase)
            if self.settings.accumulate > 1:
                if not self._ends_group():
                    return loss, self.rounds - before
                self._flush_accumulated(phase)
            self.before_step(phase)
            with global_sums.using(self.range_sums):
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
        gather = self.settings.gather_every
        if gather and self.step % gather == 0:
            self.sync()  # a state to roll back to (sharded only; a no-op otherwise)
        return record

    def end_epoch(self) -> dict:
        """Validation, epoch-cadence scheduling, the epoch record."""
        self.sync()
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
        if self.job.on_epoch_end(record, self.model):
            self.stopped = True
            log.info("the job stopped training after epoch %d (on_epoch_end)", record["epoch"] + 1)
        if self.on_epoch is not None:
            self.on_epoch(record)
        self.save_checkpoint(record)
        return record

    def finished(self) -> bool:
        """True when the epochs or max_steps are done, or the job stopped training."""
        s = self.settings
        steps_done = bool(s.max_steps) and self.step >= s.max_steps
        return self.stopped or self.epoch >= s.epochs or steps_done

    def run(self) -> History:
        """Train until the configured epochs (or max_steps) are done."""
        # The job's BLAS thread count for the whole run, not only inside each step's computation:
        # the job's hooks, clipping and the optimizer then sum in the same order on any machine.
        with blas_threads(self.settings.threads):
            return self._run()

    def _run(self) -> History:
        self.training = True
        try:
            self.executor.start(self)  # inside: a failed start still closes its socket/files
            per_epoch = self.batches_per_epoch()
            if per_epoch == 0:
                raise ValueError(f"train_data() has {len(self.train_source)} samples: not one "
                                 f"batch of {self.settings.batch_size} with drop_last")
            self.choose_reduction()
            while True:
                try:
                    while not self.finished():
                        self.run_epoch(per_epoch)
                    self.sync()
                    break
                except RangesLost as e:
                    self.roll_back(str(e))
        finally:
            self.training = False
            if self.checkpoints is not None:
                self.checkpoints.close()  # the last checkpoint is on disk before run() returns
            self.executor.close()
        return self.history

    def run_epoch(self, per_epoch: int) -> None:
        """The rest of the current epoch (or up to max_steps), then its end."""
        while self.batch < per_epoch:
            self.train_step()
            if self.stop_requested:
                self._stop()
            if self.settings.max_steps and self.step >= self.settings.max_steps:
                break
        if self.batch >= per_epoch:
            self.end_epoch()

    def _stop(self) -> None:
        """Stop as asked between two steps, leaving a checkpoint to resume from."""
        path = self.save_checkpoint()
        where = f"; checkpoint {path} (resume with --resume)" if path else ""
        raise TrainingStopped(f"stopped after step {self.step}{where}")
