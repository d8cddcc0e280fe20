"""Where a batched micro-shard step spends its time: per-part timers at 1, 8 and 32 shards.

The step of ``bench_shards`` (MLP 784-512-512-10, float32, SGD, 1 BLAS thread, in-process) with
wall-clock timers wrapped around the functions a batched pass goes through: the per-shard
weight-gradient products and their tree sums (``Segments.deliver_outer``), the row GEMMs
(``rows_matmul``: whole-batch where probed row-invariant, stacked per shard elsewhere), the
per-shard bias sums, the per-shard losses, the autograd engine (at 1 shard it also holds the
plain weight- and input-gradient GEMMs, run inside the layers' backward) and the optimizer.
Each part's time is exclusive (its timed callees are subtracted); layouts are interleaved step
by step and medians are printed, so the parts of one layout can be set against another's.

Run: ``python bench/shard_step_parts.py [--batch 256] [--steps 40]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

from threadpoolctl import threadpool_limits

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_shards import trainer  # noqa: E402

from dtrain.autograd import engine, segments  # noqa: E402
from dtrain.distributed import compute  # noqa: E402
from dtrain.distributed import trainer as trainer_module  # noqa: E402
from dtrain.nn import _kernels  # noqa: E402
from dtrain.optim import sgd  # noqa: E402


class PartTimers:
    """Exclusive wall-clock seconds per label of the wrapped functions, since ``clear``."""

    def __init__(self):
        self.seconds: dict = {}
        self._inner: list = []

    def clear(self) -> None:
        self.seconds = {}

    def wrap(self, owner, name: str, label: str) -> None:
        """Replace ``owner.name`` by a timed version that books its time under ``label``."""
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            self._inner.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                inner = self._inner.pop()
                self.seconds[label] = self.seconds.get(label, 0.0) + spent - inner
                if self._inner:
                    self._inner[-1] += spent

        setattr(owner, name, timed)


def instrument() -> PartTimers:
    """Timers around the parts of a step (the library's functions, patched in this process)."""
    timers = PartTimers()
    parts = [(segments.Segments, "deliver_outer", "weight grads: per-shard GEMMs + tree"),
             (segments.Segments, "row_sums", "bias grads: per-shard sums"),
             (segments.Segments, "deliver", "bias grads: delivery"),
             (segments.Segments, "group_grads", "node sums of other gradients"),
             (_kernels, "rows_matmul", "row GEMMs (forward, input grads)"),
             (_kernels, "cross_entropy", "losses: forward (one per shard)"),
             (engine, "run_backward", "autograd engine + other backward ops"),
             (compute.SampleSource, "fetch", "fetch samples"),
             (compute.ShardComputer, "batch_values", "batched pass: rest"),
             (compute.ShardComputer, "shard_value", "one-shard pass: rest"),
             (trainer_module.Trainer, "reduce", "finish tree, mean gradients"),
             (sgd, "sgd", "SGD update"),
             (trainer_module.Trainer, "train_step", "step: rest")]
    for owner, name, label in parts:
        timers.wrap(owner, name, label)
    return timers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    timers = instrument()
    with threadpool_limits(limits=1):
        runs = {s: trainer(args.batch, s, True) for s in args.shards}
        steps = {s: [] for s in runs}
        parts = {s: [] for s in runs}
        for _ in range(args.steps):
            for s, t in runs.items():  # interleaved: drifting load hits every layout alike
                if t.batch >= t.batches_per_epoch() - 1:
                    t.batch = 0  # stay inside the epoch the bench job plans for
                timers.clear()
                start = time.perf_counter()
                t.train_step()
                steps[s].append(time.perf_counter() - start)
                parts[s].append(timers.seconds)
    for s in runs:
        step_ms = statistics.median(steps[s]) * 1e3
        print(f"{s} micro-shard(s), batch {args.batch}: step {step_ms:.2f} ms (median); parts "
              "(medians, exclusive):")
        labels = sorted({k for p in parts[s] for k in p})
        for label in labels:
            ms = statistics.median(p.get(label, 0.0) for p in parts[s]) * 1e3
            print(f"  {label:40s} {ms:7.3f} ms")


if __name__ == "__main__":
    main()
