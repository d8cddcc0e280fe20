"""Run one ``dtrain coordinator`` or ``dtrain worker`` command with timers around its parts.

``python bench/timed_dtrain.py OUT.json WARMUP dtrain-arguments...`` wraps a few methods of the
coordinator (or worker) process, runs the command as ``dtrain`` would, and at exit writes the
seconds spent in each part of every step after ``WARMUP`` steps (tasks, on a worker) to
OUT.json. Only the main thread is timed; ZeroMQ's I/O threads (where CURVE encrypts) are not,
so their work shows up as waiting. ``bench_crosshost.py`` reads the files:

- coordinator: ``send`` (TASK encode and send; the shared board's copy for local workers),
  ``receive`` (GRADS decode and checks), ``exchange`` (the whole round: send, wait, receive),
  ``reduce`` (tree sum and mean), ``step`` (the whole step: exchange, reduce, optimizer);
- worker: ``decode`` (every message), ``copy in`` (the parameters into the replica),
  ``compute`` (forward/backward), ``copy out`` (gradients into a shared slot, if any),
  ``send`` (GRADS encode and send), ``task`` (all of a TASK), ``gap`` (between two TASKs);
  with the sharded reduction a step is a STEPTASK and the computation runs once the ranges'
  parameters are in, so ``task`` + ``gap`` is the whole step; ``compute`` then includes the
  range slices sent while backward runs, ``send`` is those sent after it, ``reduce`` the
  reducer's tree sums and optimizer steps and ``send params`` its new ranges for every worker;
  ``send range`` (one range's slices) and ``poll`` (serving the mailbox) are timed too, and
  every label's calls made during ``compute`` are also summed under ``LABEL in compute``: so
  ``compute`` minus ``send range in compute`` and ``poll in compute`` is forward/backward alone;
- every process, per step (task) after the warm-up: ``threads``, the CPU seconds of each of its
  threads by name (``/proc/self/task``; ZeroMQ's I/O threads are ``ZMQbg/IO/N``, where CURVE
  encrypts and decrypts), from one step's start to the next.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from collections import defaultdict


class Timers:
    """Seconds per label and per step, counted only in the main thread and only once ``on``.

    A call nested in a call under the same label (``node_value`` recurses) is not counted twice,
    except across a call under ``outer``; a call made while one under ``outer`` runs is also
    summed under ``LABEL in OUTER``.
    """

    def __init__(self, warmup: int, outer: str = "compute"):
        self.warmup = warmup
        self.outer = outer
        self.seen = 0  # steps (coordinator) or tasks (worker) started so far
        self.steps: list[dict] = []  # one {label: seconds} per timed step
        self.active: set = set()
        self.last_end = None
        self.cpu: list[dict] = []  # thread CPU seconds by name at each timed step's start

    @property
    def on(self) -> bool:
        return self.seen > self.warmup

    def _begin_step(self) -> None:
        self.seen += 1
        if self.on:
            self.steps.append(defaultdict(float))
            self.cpu.append(thread_cpu())

    def wrap(self, owner, name: str, label: str, counts: bool = False) -> None:
        """Time every call of ``owner.name`` under ``label``; ``counts``: it starts a step."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread() or \
                    label in self.active:
                return original(*args, **kwargs)
            if counts:
                self._begin_step()
            if not self.on:
                return original(*args, **kwargs)
            began = time.perf_counter()
            nested = self.outer in self.active
            saved = self.active
            # calls under ``outer`` start afresh: a poll that computes polls again inside
            self.active = {label} if label == self.outer else self.active | {label}
            try:
                return original(*args, **kwargs)
            finally:
                self.active = saved
                seconds = time.perf_counter() - began
                self.steps[-1][label] += seconds
                if nested:
                    self.steps[-1][f"{label} in {self.outer}"] += seconds

        setattr(owner, name, timed)

    def wrap_task(self, owner, name: str) -> None:
        """Like ``wrap`` for the worker's TASK handler, also timing the gap before each TASK."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            self._begin_step()
            began = time.perf_counter()
            if self.on and self.last_end is not None:
                self.steps[-1]["gap"] += began - self.last_end
            try:
                return original(*args, **kwargs)
            finally:
                self.last_end = time.perf_counter()
                if self.on:
                    self.steps[-1]["task"] += self.last_end - began

        setattr(owner, name, timed)

    def report(self) -> dict:
        """Each timed step's seconds by label, with its threads' CPU seconds (but the last
        step's, which has no next start)."""
        for step, (now, then) in zip(self.steps, zip(self.cpu, self.cpu[1:])):
            step["threads"] = {name: then[name] - now.get(name, 0.0) for name in then}
        return {"steps": [dict(step) for step in self.steps]}


def thread_cpu() -> dict:
    """CPU seconds (user + system) of this process's threads, summed by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict = defaultdict(float)
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return dict(out)


def instrument(role: str, timers: Timers) -> None:
    """Wrap the parts of a coordinator or a worker process."""
    from dtrain.distributed import protocol

    if role == "coordinator":
        from dtrain.distributed.coordinator import Coordinator
        from dtrain.distributed.trainer import Trainer

        timers.wrap(Trainer, "train_step", "step", counts=True)
        timers.wrap(Trainer, "reduce", "reduce")
        timers.wrap(Coordinator, "compute", "exchange")
        timers.wrap(Coordinator, "_ask", "send")
        timers.wrap(Coordinator, "handle", "receive")
    elif role == "worker":
        from dtrain.workers.ranges import RangePlane
        from dtrain.workers.worker import Worker

        from dtrain.distributed import channels
        from dtrain.distributed.compute import ShardComputer
        from dtrain.distributed.reducer import RangeReducer

        timers.wrap_task(Worker, "_task")
        timers.wrap_task(RangePlane, "task")
        timers.wrap(protocol, "decode", "decode")
        timers.wrap(channels.NetworkFromCoordinator, "read_params", "copy in")
        timers.wrap(channels.SharedMemoryFromCoordinator, "read_params", "copy in")
        timers.wrap(RangePlane, "_write", "copy in")
        timers.wrap(ShardComputer, "node_values", "compute")
        timers.wrap(Worker, "_grads", "copy out")
        timers.wrap(Worker, "_send", "send")
        timers.wrap(RangePlane, "_send_node", "send")
        timers.wrap(RangePlane, "_send_range", "send range")
        timers.wrap(RangePlane, "poll", "poll")
        timers.wrap(RangeReducer, "add", "reduce")
        timers.wrap(RangePlane, "_answer", "send params")
    else:
        raise SystemExit(f"timed_dtrain.py: expected coordinator or worker, not {role!r}")


def main() -> None:
    if len(sys.argv) < 4:
        raise SystemExit(__doc__.splitlines()[2].strip())
    out, warmup, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    timers = Timers(warmup)
    instrument(args[0], timers)
    from dtrain.cli import main as dtrain_main

    try:
        dtrain_main(args=args, prog_name="dtrain")
    finally:
        with open(out, "w") as f:
            json.dump({"role": args[0], **timers.report()}, f)


if __name__ == "__main__":
    main()
