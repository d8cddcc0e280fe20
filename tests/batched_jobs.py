"""Jobs for the batched micro-shard tests (importable by path by worker processes, which put
this folder on sys.path, so ``dist_jobs`` beside it imports)."""

import numpy as np
from dist_jobs import blobs as dist_blobs

import dtrain
import dtrain.nn.functional as F
from dtrain import nn, optim


def blobs(n: int):
    """A small, learnable classification set: 12 features, 4 classes."""
    return dist_blobs(n, features=12, classes=4)


def images(n: int, seed: int = 0):
    """8x8 three-channel images whose class is the brightest quadrant."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, :, (c // 2) * 4:(c // 2) * 4 + 4, (c % 2) * 4:(c % 2) * 4 + 4] += 1.5
    return x, y.astype(np.int64)


class FourClasses(dtrain.Job):
    """What every job here shares: cross-entropy over 4 classes, 2 epochs of 8 micro-shards."""

    epochs = 2
    micro_shards = 8

    def loss(self, output, target):
        return F.cross_entropy(output, target)


class MLPDropout(FourClasses):
    """An MLP with a narrow output layer and dropout, 8 micro-shards of 4."""

    batch_size = 32
    seed = 11

    def model(self):
        return nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 64),
                             nn.Tanh(), nn.Linear(64, 4))

    def optimizer(self, model):
        return optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def train_data(self):
        return blobs(96)


class MLPOddShards(MLPDropout):
    """7 micro-shards that do not divide the batch of 20 (sizes 2 and 3), a partial last batch."""

    batch_size = 20
    micro_shards = 7

    def train_data(self):
        return blobs(70)


class CNNBatchNorm(FourClasses):
    """conv - batch norm - relu - pool - conv - relu - pool - linear, with Adam."""

    batch_size = 24
    seed = 5

    def model(self):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 2 * 2, 4))

    def optimizer(self, model):
        return optim.Adam(model.parameters(), lr=1e-2)

    def train_data(self):
        return images(72)


class LayerNormMLP(MLPDropout):
    """LayerNorm's affine gradients are summed over every row: its passes must be refused."""

    def model(self):
        return nn.Sequential(nn.Linear(12, 16), nn.LayerNorm(16), nn.Linear(16, 4))


class _BatchCentered(nn.Module):
    def forward(self, x):
        return x - x.mean(0)  # mixes the samples of every shard in the batch


class BatchMeanMLP(MLPDropout):
    """A forward that subtracts the batch mean: no kernel can tell, the bit check must."""

    def model(self):
        return nn.Sequential(nn.Linear(12, 16), _BatchCentered(), nn.Linear(16, 4))


class _FixedBatch(nn.Module):
    def forward(self, x):
        return x.view(4, -1)  # only a shard of 4 samples fits: one pass over 8 shards cannot


class FixedBatchMLP(MLPDropout):
    """A forward written for the shard size: the batched pass raises, shard by shard works."""

    def model(self):
        return nn.Sequential(nn.Linear(12, 16), _FixedBatch(), nn.Linear(16, 4))
