"""One training step of an MLP 784-512-512-10 (float32): dtrain vs hand-written NumPy vs PyTorch.

The floor is a hand-written NumPy forward/backward/SGD of the same network, measured in the same
run, interleaved round by round with dtrain and PyTorch CPU (when installed), so the printed
ratios (medians of per-round ratios, with their range) are stable on a noisy machine. Targets
(issue 14): dtrain <= 1.0x PyTorch at batch 256 and <= 1.15x at batch 32, 1 and 2 threads.
Run: ``python bench/bench_mlp_step.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from step_timing import SGDStep, softmax_cross_entropy
from threadpoolctl import threadpool_limits

import dtrain

SIZES = (784, 512, 512, 10)
LR = 0.01


def make_weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        bound = 1 / np.sqrt(fan_in)
        weights.append(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32))
        weights.append(rng.uniform(-bound, bound, (fan_out,)).astype(np.float32))
    return weights


class NumpyMLP:
    """The floor: forward, softmax cross-entropy, backward and SGD written by hand."""

    def __init__(self, weights):
        self.w = [w.copy() for w in weights]

    def step(self, x, y):
        W1, b1, W2, b2, W3, b3 = self.w
        h1 = x @ W1.T
        h1 += b1
        a1 = np.maximum(h1, 0)
        h2 = a1 @ W2.T
        h2 += b2
        a2 = np.maximum(h2, 0)
        z = a2 @ W3.T
        z += b3
        loss, dz = softmax_cross_entropy(z, y)
        grads = [None] * 6
        grads[4] = dz.T @ a2
        grads[5] = dz.sum(axis=0)
        da2 = dz @ W3
        da2 *= h2 > 0
        grads[2] = da2.T @ a1
        grads[3] = da2.sum(axis=0)
        da1 = da2 @ W2
        da1 *= h1 > 0
        grads[0] = da1.T @ x
        grads[1] = da1.sum(axis=0)
        for w, g in zip(self.w, grads):
            g *= LR
            w -= g
        return loss


def framework_step(lib, weights):
    """The same network written as a PyTorch user would, on dtrain or PyTorch CPU: its step."""
    nn = lib.nn
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    return SGDStep(lib, model, weights, LR).step


def one_round(step, inputs, r: int) -> float:
    """Mean seconds per step over one round of 5 steps."""
    start = time.perf_counter()
    for i in range(5):
        x, y = inputs[(r * 5 + i) % len(inputs)]
        step(x, y)
    return (time.perf_counter() - start) / 5


def spread(ratios: list[float]) -> str:
    """Median ratio and its range over the rounds."""
    return f"{np.median(ratios):5.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    weights = make_weights()
    rng = np.random.default_rng(1)
    print(f"{'threads':>7} {'batch':>5} {'floor ms':>9} {'dtrain/floor':>19} {'torch/floor':>19} "
          f"{'dtrain/torch':>19}   (median of {args.repeats} interleaved rounds, range)")
    for threads in (1, 2):
        if torch is not None:
            torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            for batch in (256, 32):
                xs = [rng.standard_normal((batch, 784)).astype(np.float32) for _ in range(8)]
                ys = [rng.integers(0, 10, batch) for _ in range(8)]
                floor_in = list(zip(xs, ys))
                nets = {"floor": (NumpyMLP(weights).step, floor_in),
                        "dtrain": (framework_step(dtrain, weights),
                                   [(dtrain.from_numpy(x), dtrain.from_numpy(y))
                                    for x, y in floor_in])}
                if torch is not None:
                    nets["torch"] = (framework_step(torch, weights),
                                     [(torch.from_numpy(x), torch.from_numpy(y))
                                      for x, y in floor_in])
                times = {k: [] for k in nets}
                for step, inputs in nets.values():
                    for x, y in inputs[:3]:  # warm-up
                        step(x, y)
                # rounds interleaved, so drifting machine load hits every contender alike
                for r in range(args.repeats):
                    for k, (step, inputs) in nets.items():
                        times[k].append(one_round(step, inputs, r))
                floor = times["floor"]
                cells = [spread([a / b for a, b in zip(times["dtrain"], floor)])]
                if torch is not None:
                    cells.append(spread([a / b for a, b in zip(times["torch"], floor)]))
                    cells.append(spread([a / b for a, b in zip(times["dtrain"], times["torch"])]))
                print(f"{threads:>7} {batch:>5} {np.median(floor) * 1e3:9.3f} "
                      + " ".join(f"{c:>19}" for c in cells))


if __name__ == "__main__":
    main()
