"""Whole-command wall time of ``dtrain launch --workers N SCRIPT`` vs ``--workers 0``.

Issue #14's acceptance point: ``--workers 2`` on examples/digits.py within 1.2x of
``--workers 0``, start-up, training and teardown included. Each round runs every
configuration once, back to back, each into a fresh ``--out`` directory, without a progress
bar; the printed ratio is the median over rounds of time / in-process time in that round,
which keeps it stable on a loaded machine.
Run: ``python bench/bench_launch.py [--repeats N] [--script PATH] [--workers N]
[--start-method fork|spawn ...] [-- EXTRA LAUNCH OPTIONS]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits.py")


def launch_seconds(script: str, workers: int, out: str, options: list) -> float:
    """Wall time of one ``dtrain launch`` command; raises if it fails."""
    argv = [sys.executable, "-m", "dtrain", "launch", "--workers", str(workers),
            "--no-progress", "--out", out, *options, script]
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--script", default=DIGITS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--start-method", dest="methods", action="append",
                        choices=["fork", "spawn"],
                        help="repeatable [default: none given, the launcher's default]")
    parser.add_argument("extra", nargs="*", help="more dtrain launch options (after --)")
    args = parser.parse_args()
    configs = [("in-process", 0, [])] + [
        (method, args.workers, ["--start-method", method]) for method in args.methods or []]
    if not args.methods:
        configs.append((f"{args.workers} workers", args.workers, []))
    times = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for name, workers, options in configs:
                out = os.path.join(tmp, f"{name}-{round_}")
                times[name].append(launch_seconds(args.script, workers, out,
                                                  options + args.extra))
    for name, _, _ in configs:
        ratios = [t / t0 for t, t0 in zip(times[name], times["in-process"])]
        print(f"{name:>10}: median {statistics.median(times[name]):.2f} s "
              f"(runs {', '.join(f'{t:.2f}' for t in times[name])}), "
              f"median ratio to in-process {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
