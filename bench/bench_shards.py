"""In-process training step at 1, 8 and 32 micro-shards: the cost of the world-size promise.

MLP 784-512-512-10 (float32, SGD, 1 BLAS thread), global batch 256 (and 64), stepped by the
coordinator's own ``Trainer.train_step`` in-process (workers=0): plan, compute the micro-shards,
finish the tree, SGD. Each configuration is run two ways: ``batched`` (one forward/backward over
all the shards, reductions per shard: the default) and ``per-shard`` (one pass per shard, the
previous behaviour). Ratios are to the 1-micro-shard step measured in the same run, every
configuration interleaved over ``--repeats`` rounds, median per configuration (and the spread,
min-max of the per-round ratios). Targets (issue 14): 8 shards <= 1.15x, 32 shards <= 1.3x.

Run: ``python bench/bench_shards.py [--repeats N] [--steps N] [--batch 256 64]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from threadpoolctl import threadpool_limits

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from dist_mlp_job import MLP512  # noqa: E402
from step_timing import median_seconds  # noqa: E402

from dtrain.distributed.trainer import Trainer  # noqa: E402


def trainer(batch: int, shards: int, batched: bool) -> Trainer:
    """A started in-process trainer of the bench MLP with the given shard layout."""
    job = MLP512()
    t = Trainer(job, job.settings(batch_size=batch, micro_shards=shards, shuffle=False))
    t.executor.start(t)
    t.executor.computer.batched = batched
    for _ in range(3):  # warm-up, and the first layout's bit-for-bit check
        t.train_step()
    return t


def step_time(t: Trainer, steps: int) -> float:
    """Median seconds of ``steps`` training steps."""
    return median_seconds(lambda _: t.train_step(), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--shards", type=int, nargs="+", default=[8, 32])
    args = parser.parse_args()
    with threadpool_limits(limits=1):
        for batch in args.batch:
            configs = [(1, True)] + [(s, b) for s in args.shards for b in (True, False)]
            runs = {c: trainer(batch, *c) for c in configs}
            times = {c: [] for c in configs}
            for _ in range(args.repeats):
                for c in configs:  # interleaved: drifting load hits every configuration alike
                    times[c].append(step_time(runs[c], args.steps))
            base = times[(1, True)]
            print(f"batch {batch}: 1 micro-shard {statistics.median(base) * 1e3:.2f} ms")
            for c in configs[1:]:
                ratios = [t / b for t, b in zip(times[c], base)]
                verdicts = runs[c].executor.computer.verdicts
                path = "batched" if c[1] and all(verdicts.values()) else "per-shard"
                ms = statistics.median(times[c]) * 1e3
                print(f"  {c[0]:>3} micro-shards {path:>9}: {ms:7.2f} ms  "
                      f"{statistics.median(ratios):5.2f}x  (rounds {min(ratios):.2f}-"
                      f"{max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
