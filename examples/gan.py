"""A small GAN on a ring of eight 2-D Gaussians, trained distributed with two phases per step.

    dtrain launch --workers 2 examples/gan.py      # writes runs/gan/samples.png

Each step runs the discriminator phase (real vs generated points, the generator's output
detached), then the generator phase (fool the updated discriminator), each with its own Adam,
exactly like the classic PyTorch GAN loop. Latent noise comes from ``keyed_randn``, keyed by
(seed, step, sample), so the run is bit-identical for any number of workers.
"""

import math
import os
import struct
import zlib

import numpy as np

import dtrain
import dtrain.nn.functional as F
from dtrain import nn, optim

LATENT = 8


def ring_of_gaussians(n: int = 4096, modes: int = 8, radius: float = 2.0, std: float = 0.05,
                      seed: int = 0) -> np.ndarray:
    """Points around a circle: the classic mode-collapse test set."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, modes, n)
    angles = 2 * math.pi * k / modes
    centers = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
    return (centers + std * rng.standard_normal((n, 2))).astype(np.float32)


class GAN(dtrain.Job):
    """Generator 8-64-64-2 and discriminator 2-64-64-1, Adam(1e-3, betas=(0.5, 0.999)) each."""

    batch_size = 128
    epochs = 40
    micro_shards = 4
    seed = 0

    def model(self):
        return nn.ModuleDict({
            "G": nn.Sequential(nn.Linear(LATENT, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                               nn.Linear(64, 2)),
            "D": nn.Sequential(nn.Linear(2, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64),
                               nn.LeakyReLU(0.2), nn.Linear(64, 1)),
        })

    def phases(self, model):
        betas = (0.5, 0.999)
        return [
            dtrain.Phase("discriminator", self.d_loss,
                         optim.Adam(model["D"].parameters(), lr=1e-3, betas=betas)),
            dtrain.Phase("generator", self.g_loss,
                         optim.Adam(model["G"].parameters(), lr=1e-3, betas=betas)),
        ]

    def d_loss(self, model, real, _targets):
        """Real points labelled 1, generated ones 0; the generator gets no gradient here."""
        n = len(real)
        fake = model["G"](nn.keyed_randn(n, LATENT, dtype=real.dtype)).detach()
        ones = dtrain.ones(n, 1, dtype=real.dtype)
        zeros = dtrain.zeros(n, 1, dtype=real.dtype)
        return (F.binary_cross_entropy_with_logits(model["D"](real), ones)
                + F.binary_cross_entropy_with_logits(model["D"](fake), zeros))

    def g_loss(self, model, real, _targets):
        """The generator wants its points labelled real by the (just updated) discriminator."""
        n = len(real)
        fake = model["G"](nn.keyed_randn(n, LATENT, dtype=real.dtype))
        ones = dtrain.ones(n, 1, dtype=real.dtype)
        return F.binary_cross_entropy_with_logits(model["D"](fake), ones)

    def train_data(self):
        x = ring_of_gaussians()
        return x, np.zeros(len(x), dtype=np.int64)

    def finish(self, model, out):
        """Draw 2000 generated points over the real ring into OUT/samples.png."""
        if not out:
            return
        dtrain.manual_seed(1)
        with dtrain.no_grad():
            fake = model["G"](dtrain.randn(2000, LATENT)).numpy()
        write_scatter_png(os.path.join(out, "samples.png"), ring_of_gaussians(2000), fake)


def write_scatter_png(path: str, real: np.ndarray, fake: np.ndarray, size: int = 400,
                      extent: float = 3.0) -> None:
    """A scatter plot as a PNG (real points grey, generated points red) with no plotting library."""
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    for points, color in ((real, (150, 150, 150)), (fake, (220, 30, 30))):
        px = np.clip(((points + extent) / (2 * extent) * (size - 1)).astype(int), 0, size - 1)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                image[np.clip(size - 1 - px[:, 1] + dy, 0, size - 1),
                      np.clip(px[:, 0] + dx, 0, size - 1)] = color
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)
