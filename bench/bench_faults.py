"""What surviving faults costs: a worker killed mid-run, and checkpointing a 10M-parameter model.

1. Throughput of a 2-worker run of the MLP 784-512-512-10 (batch 256) with one worker SIGKILLed
   at a third of the run and restarted (``max_restarts=1``), against the same run without a
   fault: the ratio of steps/s, and the seconds the fault cost. The final parameters are checked
   to be bit-identical.
2. Checkpointing the 784-2048-2048-2048-10 MLP (10.0M parameters) with Adam state, through the
   same code the trainer uses every ``checkpoint_every`` steps: seconds per checkpoint, next to
   one training step of the same model (in-process), so the overhead per checkpoint reads as a
   number of steps.

    python bench/bench_faults.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dtrain
from dtrain import optim
from dtrain.distributed.checkpoint import write_checkpoint
from dtrain.distributed.trainer import Trainer
from dtrain.process import command_line

JOB_FILE = os.path.join(HERE, "dist_mlp_job.py")


def _worker_pid(rank: int) -> int | None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = command_line(int(pid))
        except OSError:
            continue
        if "worker" in argv and JOB_FILE in argv and "--rank" in argv \
                and argv[argv.index("--rank") + 1] == str(rank):
            return int(pid)
    return None


def run(steps: int, kill_at: int | None, out: str):
    """One 2-worker run; returns (seconds, model)."""
    killer = None
    if kill_at is not None:
        metrics = os.path.join(out, "metrics.jsonl")

        def kill():
            while True:
                try:
                    with open(metrics) as f:
                        if sum(1 for _ in f) >= kill_at:
                            break
                except FileNotFoundError:
                    pass
                time.sleep(0.002)
            os.kill(_worker_pid(1), signal.SIGKILL)

        killer = threading.Thread(target=kill, daemon=True)
        killer.start()
    started = time.perf_counter()
    model, _ = dtrain.fit(JOB_FILE, workers=2, job_name="MLP512", out=out, max_steps=steps,
                          max_restarts=1)
    elapsed = time.perf_counter() - started
    if killer is not None:
        killer.join(timeout=5)
    return elapsed, model


def worker_failure(steps: int) -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        clean_s, clean = run(steps, None, a)
        fault_s, faulty = run(steps, steps // 3, b)
    same = all(np.array_equal(p._data, q._data)
               for p, q in zip(clean.parameters(), faulty.parameters()))
    print(f"worker failure, MLP 784-512-512-10, batch 256, 2 workers, {steps} steps:")
    print(f"  clean run      {steps / clean_s:8.1f} steps/s  ({clean_s:.2f} s)")
    print(f"  one SIGKILL    {steps / fault_s:8.1f} steps/s  ({fault_s:.2f} s)")
    print(f"  ratio {clean_s / fault_s:.3f} of clean throughput; the fault cost "
          f"{fault_s - clean_s:.2f} s; parameters bit-identical: {same}")


def checkpoint_cost(repeats: int) -> None:
    import dist_mlp_job

    class Big(dist_mlp_job.MLP2048):
        def model(self):
            return dist_mlp_job.mlp(dist_mlp_job.SIZES["MLP2048"])

        def optimizer(self, model):
            return optim.Adam(model.parameters(), lr=1e-3)

    job = Big()
    trainer = Trainer(job, job.settings(max_steps=2))
    trainer.run()  # two steps, so Adam has its state
    n = sum(p._data.size for p in trainer.params)
    step_s = min(r["seconds"] for r in trainer.history.steps)
    times = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(repeats):
            t = time.perf_counter()
            path = write_checkpoint(d, trainer.state())
            times.append(time.perf_counter() - t)
        size = os.path.getsize(path)
    best = min(times)
    print(f"checkpoint, MLP 784-2048-2048-2048-10 ({n / 1e6:.1f}M parameters) with Adam state:")
    print(f"  {size / 2**20:.0f} MiB per checkpoint, {best:.3f} s (best of {repeats}, median "
          f"{np.median(times):.3f} s); one training step (batch 256, in-process) {step_s:.3f} s")
    print(f"  overhead per checkpoint = {best / step_s:.1f} steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    worker_failure(30 if args.quick else 150)
    checkpoint_cost(2 if args.quick else 5)


if __name__ == "__main__":
    main()
