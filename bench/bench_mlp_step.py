"""One training step of an MLP 784-512-512-10 (float32): dtrain vs hand-written NumPy vs PyTorch.

The floor is a hand-written NumPy forward/backward/SGD of the same network, measured in the same
run, so the printed ratios (time / floor) are stable on a noisy machine. Targets (issue 2):
dtrain <= 1.10x the floor at batch 256 and <= 1.35x at batch 32. PyTorch CPU is measured too when
installed. Run: ``python bench/bench_mlp_step.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import dtrain
from dtrain import nn

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
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        n = x.shape[0]
        loss = float(np.log(s).mean() - z[np.arange(n), y].mean())
        dz = e / s
        dz[np.arange(n), y] -= 1
        dz /= n
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


class DtrainMLP:
    """The same network written as a PyTorch user would, on dtrain."""

    def __init__(self, weights):
        self.model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                   nn.Linear(512, 10))
        for p, w in zip(self.model.parameters(), weights):
            p._data[...] = w
        self.loss_fn = nn.CrossEntropyLoss()
        self.opt = dtrain.optim.SGD(self.model.parameters(), lr=LR)

    def step(self, x, y):
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()


class TorchMLP:
    """The same network on PyTorch CPU (when installed)."""

    def __init__(self, weights):
        import torch

        self.torch = torch
        self.model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                                         torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                         torch.nn.Linear(512, 10))
        with torch.no_grad():
            for p, w in zip(self.model.parameters(), weights):
                p.copy_(torch.from_numpy(w))
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)

    def step(self, x, y):
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()


def timed(step, inputs, repeats: int) -> float:
    """Median seconds per step over ``repeats`` rounds of 5 steps (after warm-up)."""
    for x, y in inputs[:3]:
        step(x, y)
    rounds = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(5):
            x, y = inputs[(r * 5 + i) % len(inputs)]
            step(x, y)
        rounds.append((time.perf_counter() - start) / 5)
    return float(np.median(rounds))


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
    print(f"{'threads':>7} {'batch':>5} {'floor ms':>9} {'dtrain':>8} {'torch':>8}   (ratios to floor)")
    for threads in (1, 2):
        if torch is not None:
            torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            for batch in (256, 32):
                xs = [rng.standard_normal((batch, 784)).astype(np.float32) for _ in range(8)]
                ys = [rng.integers(0, 10, batch) for _ in range(8)]
                floor_in = list(zip(xs, ys))
                dt_in = [(dtrain.from_numpy(x), dtrain.from_numpy(y)) for x, y in floor_in]
                floor_net, dt_net = NumpyMLP(weights), DtrainMLP(weights)
                # interleave the measurements so drifting machine load hits both alike
                f1 = timed(floor_net.step, floor_in, args.repeats)
                d1 = timed(dt_net.step, dt_in, args.repeats)
                f2 = timed(floor_net.step, floor_in, args.repeats)
                d2 = timed(dt_net.step, dt_in, args.repeats)
                floor, ours = min(f1, f2), min(d1, d2)
                theirs = ""
                if torch is not None:
                    t_in = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in floor_in]
                    t = timed(TorchMLP(weights).step, t_in, args.repeats)
                    theirs = f"{t / floor:7.2f}x"
                print(f"{threads:>7} {batch:>5} {floor * 1e3:9.3f} {ours / floor:7.2f}x {theirs:>8}")


if __name__ == "__main__":
    main()
