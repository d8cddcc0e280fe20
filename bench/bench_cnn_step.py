"""One training step of a small CNN (float32, 1 thread): dtrain vs hand-written NumPy vs PyTorch.

The network: conv3x3 3->32 (pad 1), [BatchNorm2d], ReLU, max-pool 2, conv3x3 32->64 (pad 1),
[BatchNorm2d], ReLU, max-pool 2, linear 64*8*8 -> 10, on 32x32 inputs, batch 64, SGD. The floor
is the same step written by hand in NumPy with im2col + one GEMM per convolution (col2im for
the input gradient), reshape-max pooling and closed-form batch norm, measured in the same run,
interleaved with dtrain and PyTorch over ``--repeats`` rounds. Printed: median step time and the
ratios dtrain/PyTorch and dtrain/floor, with their spread over the rounds. Targets (issue 14):
dtrain <= 1.3x PyTorch and <= 1.1x the floor, with and without batch norm.

Run: ``python bench/bench_cnn_step.py [--repeats N] [--batch 64]``.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from numpy.lib.stride_tricks import as_strided
from step_timing import SGDStep, median_seconds, softmax_cross_entropy
from threadpoolctl import threadpool_limits

import dtrain

LR = 0.01
EPS = 1e-5
CHANNELS = (3, 32, 64)
SIDE = 32
CLASSES = 10


def make_weights(seed: int = 0) -> list[np.ndarray]:
    """conv1 w/b, conv2 w/b, linear w/b (uniform +-1/sqrt(fan_in), as PyTorch's default)."""
    rng = np.random.default_rng(seed)
    shapes = [((32, 3, 3, 3), 27), ((32,), 27), ((64, 32, 3, 3), 288), ((64,), 288),
              ((10, 64 * 8 * 8), 4096), ((10,), 4096)]
    return [rng.uniform(-1, 1, s).astype(np.float32) / np.float32(np.sqrt(f)) for s, f in shapes]


# ------------------------------------------------------------------ the NumPy floor
def im2col(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (C*9, N*H*W): every 3x3 window of the 1-padded input, one column each.

    Channel-major columns keep the copy's inner loop on contiguous image rows and make each
    convolution, and its weight gradient, one large GEMM over the whole batch.
    """
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    s = xp.strides
    windows = as_strided(xp, (c, 3, 3, n, h, w), (s[1], s[2], s[3], s[0], s[2], s[3]))
    return windows.reshape(c * 9, n * h * w)


def col2im(dcols: np.ndarray, shape: tuple) -> np.ndarray:
    """The adjoint of im2col: window gradients (C*9, N*H*W) added back into (N, C, H, W)."""
    n, c, h, w = shape
    d = dcols.reshape(c, 3, 3, n, h, w)
    dxp = np.zeros((n, c, h + 2, w + 2), dtype=dcols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i:i + h, j:j + w] += d[:, i, j].transpose(1, 0, 2, 3)
    return dxp[:, :, 1:-1, 1:-1]


class NumpyCNN:
    """The floor: forward, loss, backward and SGD of the CNN written by hand."""

    def __init__(self, weights, batch_norm: bool):
        self.w = [w.copy() for w in weights]
        self.bn = [[np.ones(c, np.float32), np.zeros(c, np.float32)] for c in CHANNELS[1:]] \
            if batch_norm else None

    def conv_block(self, x, k, cache):
        n, _, h, w = x.shape
        wk, bk = self.w[2 * k], self.w[2 * k + 1]
        cols = im2col(x)
        z = (wk.reshape(wk.shape[0], -1) @ cols).reshape(-1, n, h, w).transpose(1, 0, 2, 3)
        z = np.ascontiguousarray(z)
        z += bk[:, None, None]
        bn = None
        if self.bn is not None:
            mean = z.mean(axis=(0, 2, 3))
            xhat = z - mean[:, None, None]
            var = np.square(xhat).mean(axis=(0, 2, 3))
            invstd = 1 / np.sqrt(var + EPS)
            xhat *= invstd[:, None, None]
            gamma, beta = self.bn[k]
            z = xhat * gamma[:, None, None] + beta[:, None, None]
            bn = (xhat, invstd)
        a = np.maximum(z, 0)
        c = a.shape[1]
        p = a.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
        cache.append((x.shape, cols, z, a, p, bn))
        return p

    def conv_block_back(self, gp, k, cache, grads, need_x):
        shape, cols, z, a, p, bn = cache
        n, c, h, w = a.shape
        mask = a.reshape(n, c, h // 2, 2, w // 2, 2) == p[:, :, :, None, :, None]
        ga = (mask * gp[:, :, :, None, :, None]).reshape(a.shape)
        gz = ga * (z > 0)
        if bn is not None:
            xhat, invstd = bn
            gamma = self.bn[k][0]
            m = n * h * w
            sum_g = gz.sum(axis=(0, 2, 3))
            sum_gx = (gz * xhat).sum(axis=(0, 2, 3))
            self.bn[k][0] -= LR * sum_gx
            self.bn[k][1] -= LR * sum_g
            gz = (gz - (sum_g / m)[:, None, None] - xhat * (sum_gx / m)[:, None, None]) * \
                (gamma * invstd)[:, None, None]
        g2 = np.ascontiguousarray(gz.transpose(1, 0, 2, 3)).reshape(c, n * h * w)
        wk = self.w[2 * k]
        grads[2 * k] = (g2 @ cols.T).reshape(wk.shape)
        grads[2 * k + 1] = g2.sum(axis=1)
        if need_x:
            return col2im(wk.reshape(c, -1).T @ g2, shape)
        return None

    def step(self, x, y):
        caches = []
        h = self.conv_block(x, 0, caches)
        h = self.conv_block(h, 1, caches)
        n = x.shape[0]
        flat = h.reshape(n, -1)
        loss, dz = softmax_cross_entropy(flat @ self.w[4].T + self.w[5], y)
        grads = [None] * 6
        grads[4] = dz.T @ flat
        grads[5] = dz.sum(axis=0)
        gh = (dz @ self.w[4]).reshape(h.shape)
        gh = self.conv_block_back(gh, 1, caches[1], grads, True)
        self.conv_block_back(gh, 0, caches[0], grads, False)
        for w, g in zip(self.w, grads):
            g *= LR
            w -= g
        return loss


# ------------------------------------------------------------------ dtrain and PyTorch
def layers(mod, batch_norm: bool) -> list:
    """The CNN's layers from a torch-like module namespace (dtrain.nn or torch.nn)."""
    out = []
    for cin, cout in zip(CHANNELS[:-1], CHANNELS[1:]):
        out.append(mod.Conv2d(cin, cout, 3, padding=1))
        if batch_norm:
            out.append(mod.BatchNorm2d(cout))
        out += [mod.ReLU(), mod.MaxPool2d(2)]
    return out + [mod.Flatten(), mod.Linear(64 * 8 * 8, CLASSES)]


def framework_step(lib, weights, batch_norm: bool):
    """The CNN's step on dtrain or PyTorch, weights copied from the floor's (and BatchNorm's
    starting ones and zeros, as the floor's)."""
    model = lib.nn.Sequential(*layers(lib.nn, batch_norm))
    ordered = []
    for k, channels in enumerate(CHANNELS[1:]):
        ordered += weights[2 * k:2 * k + 2]
        if batch_norm:
            ordered += [np.ones(channels, np.float32), np.zeros(channels, np.float32)]
    return SGDStep(lib, model, ordered + weights[4:], LR).step


def timed(step, inputs, steps: int) -> float:
    """Median seconds per step over ``steps`` steps."""
    return median_seconds(lambda i: step(*inputs[i % len(inputs)]), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    weights = make_weights()
    rng = np.random.default_rng(1)
    data = [(rng.standard_normal((args.batch, 3, SIDE, SIDE)).astype(np.float32),
             rng.integers(0, CLASSES, args.batch)) for _ in range(4)]
    print(f"batch {args.batch}, 1 thread; median ms per step, ratios median (min-max over "
          f"{args.repeats} rounds)")
    with threadpool_limits(limits=1):
        for batch_norm in (False, True):
            nets = {"floor": (NumpyCNN(weights, batch_norm).step, data),
                    "dtrain": (framework_step(dtrain, weights, batch_norm),
                               [(dtrain.from_numpy(x), dtrain.from_numpy(y)) for x, y in data]),
                    "torch": (framework_step(torch, weights, batch_norm),
                              [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in data])}
            times = {k: [] for k in nets}
            for step, inputs in nets.values():
                timed(step, inputs, 2)  # warm-up
            for _ in range(args.repeats):
                for k, (step, inputs) in nets.items():
                    times[k].append(timed(step, inputs, args.steps))
            name = "CNN + BatchNorm" if batch_norm else "CNN"
            parts = [f"{k} {statistics.median(v) * 1e3:.2f}" for k, v in times.items()]
            print(f"{name:<16} " + ", ".join(parts))
            for base in ("torch", "floor"):
                r = [a / b for a, b in zip(times["dtrain"], times[base])]
                print(f"{'':<16} dtrain/{base}: {statistics.median(r):.2f}x "
                      f"({min(r):.2f}-{max(r):.2f})")


if __name__ == "__main__":
    main()
