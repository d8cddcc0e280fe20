"""Optimizer step time for 10M float32 parameters in 20 tensors: dtrain vs a plain NumPy floor.

The floor is the same update written by hand as in-place NumPy on arrays of the same sizes, with
one preallocated scratch array, measured in the same run: each round times one step of every
contender back to back, and the printed ratio is the median over rounds of time / floor time in
that round, which keeps it stable on a loaded machine. Target: <= 1.2x for SGD with
momentum and for Adam. PyTorch (single-tensor and foreach) is timed too when installed.
Run: ``python bench/bench_optim.py [--repeats N] [--numel N] [--tensors N]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import dtrain
from dtrain import nn, optim

LR, MOMENTUM, BETAS, EPS = 1e-3, 0.9, (0.9, 0.999), 1e-8


def make_arrays(numel: int, tensors: int, seed: int = 0):
    """Parameter and gradient arrays of ``numel`` float32 values in ``tensors`` pieces."""
    rng = np.random.default_rng(seed)
    sizes = [numel // tensors + (i < numel % tensors) for i in range(tensors)]
    params = [rng.standard_normal(n, dtype=np.float32) for n in sizes]
    grads = [rng.standard_normal(n, dtype=np.float32) for n in sizes]
    return params, grads


class FloorSGD:
    """Hand-written SGD with momentum: buf = m buf + g; p -= lr buf."""

    def __init__(self, params, grads):
        self.params, self.grads = params, grads
        self.bufs = [g.copy() for g in grads]
        self.tmp = np.empty(max(p.size for p in params), np.float32)

    def step(self):
        for p, g, buf in zip(self.params, self.grads, self.bufs):
            tmp = self.tmp[: p.size]
            buf *= MOMENTUM
            buf += g
            np.multiply(buf, LR, out=tmp)
            p -= tmp


class FloorAdam:
    """Hand-written Adam: the textbook update, every operation in place."""

    def __init__(self, params, grads):
        self.params, self.grads = params, grads
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.tmp = np.empty(max(p.size for p in params), np.float32)
        self.t = 0

    def step(self):
        self.t += 1
        b1, b2 = BETAS
        step_size = LR / (1 - b1**self.t)
        bc2_sqrt = (1 - b2**self.t) ** 0.5
        for p, g, m, v in zip(self.params, self.grads, self.m, self.v):
            tmp = self.tmp[: p.size]
            m *= b1
            np.multiply(g, 1 - b1, out=tmp)
            m += tmp
            v *= b2
            np.multiply(g, g, out=tmp)
            tmp *= 1 - b2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp /= bc2_sqrt
            tmp += EPS
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p -= tmp


def dtrain_optimizer(name: str, params, grads):
    """A dtrain optimizer over Parameters wrapping copies of ``params``, gradients set once."""
    tensors = []
    for p, g in zip(params, grads):
        t = nn.Parameter(p.copy())
        t.grad = dtrain.tensor(g)
        tensors.append(t)
    if name == "sgd":
        return optim.SGD(tensors, lr=LR, momentum=MOMENTUM)
    return optim.Adam(tensors, lr=LR, betas=BETAS, eps=EPS)


def torch_optimizer(name: str, params, grads, foreach: bool):
    """PyTorch's optimizer on the same data, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    tensors = []
    for p, g in zip(params, grads):
        t = torch.tensor(p, requires_grad=True)
        t.grad = torch.from_numpy(g)
        tensors.append(t)
    if name == "sgd":
        return torch.optim.SGD(tensors, lr=LR, momentum=MOMENTUM, foreach=foreach)
    return torch.optim.Adam(tensors, lr=LR, betas=BETAS, eps=EPS, foreach=foreach)


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def bench(name: str, numel: int, tensors: int, repeats: int) -> dict:
    """Seconds per step of each contender: (median, min, median of the paired ratio to floor)."""
    params, grads = make_arrays(numel, tensors)
    floor = (FloorSGD if name == "sgd" else FloorAdam)([p.copy() for p in params], grads)
    contenders = {"numpy floor": floor.step,
                  "dtrain": dtrain_optimizer(name, params, grads).step}
    for foreach in (False, True):
        opt = torch_optimizer(name, params, grads, foreach)
        if opt is not None:
            contenders[f"torch foreach={foreach}"] = opt.step
    times = {k: [] for k in contenders}
    for step in contenders.values():  # warm-up: state, scratch and page faults
        step()
        step()
    for _ in range(repeats):
        for key, step in contenders.items():
            times[key].append(timed(step))
    floor = np.array(times["numpy floor"])
    return {k: (float(np.median(v)), float(np.min(v)), float(np.median(np.array(v) / floor)))
            for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per contender")
    parser.add_argument("--numel", type=int, default=10_000_000, help="parameters in total")
    parser.add_argument("--tensors", type=int, default=20, help="number of parameter tensors")
    args = parser.parse_args()
    print(f"{args.numel:,} float32 parameters in {args.tensors} tensors, BLAS pinned to 1 "
          f"thread, median (min) of {args.repeats} rounds; ratio = median of time / floor time")
    with threadpool_limits(limits=1):
        for name, label in (("sgd", "SGD momentum=0.9"), ("adam", "Adam")):
            results = bench(name, args.numel, args.tensors, args.repeats)
            print(f"\n{label}")
            for key, (median, best, ratio) in results.items():
                print(f"  {key:20s} {median * 1e3:8.2f} ms ({best * 1e3:7.2f})   {ratio:5.2f}x")


if __name__ == "__main__":
    main()
