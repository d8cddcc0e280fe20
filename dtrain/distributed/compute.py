"""Forward/backward of micro-shards and their tree sums: the one computation every process shares.

The coordinator's in-process mode and every worker run exactly this code, so a node of the
reduction tree has the same bits wherever it is computed. A shard's value is the *sum* of its
samples' gradients (the job's mean loss backpropagated with weight n), its loss sum and its
sample count; batch-norm batch statistics are kept per shard so the coordinator can apply the
running-stat updates in shard order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..autograd.grad_mode import no_grad
from ..autograd.tensor import Tensor
from ..nn.dropout import keyed_dropout
from ..nn.normalization import collect_batch_stats
from .shards import BatchPlan, Node, split_point


class SampleSource:
    """Fetch samples by global index from what ``Job.train_data()``/``val_data()`` returned."""

    def __init__(self, data, dtype: str, what: str = "train_data()"):
        self.what = what
        self.dtype = np.dtype(dtype)
        self.arrays = None
        self.dataset = None
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(
                hasattr(a, "shape") for a in data):
            self.arrays = tuple(a._data if isinstance(a, Tensor) else a for a in data)
        elif hasattr(data, "tensors") and len(data.tensors) == 2:
            self.arrays = tuple(a._data if isinstance(a, Tensor) else np.asarray(a)
                                for a in data.tensors)
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self.dataset = data
        else:
            raise TypeError(f"{what} must return (inputs, targets) arrays, a TensorDataset or a "
                            f"Dataset, got {type(data).__name__}")
        if self.arrays is not None:
            x, y = self.arrays
            if len(x) != len(y):
                raise ValueError(f"{what}: inputs have {len(x)} samples but targets {len(y)}")

    def __len__(self) -> int:
        return len(self.arrays[0]) if self.arrays is not None else len(self.dataset)

    def fetch(self, ids: np.ndarray) -> tuple[Tensor, Tensor]:
        """Inputs (cast to the job's float dtype) and targets of the given samples."""
        if self.arrays is not None:
            x, y = (a[ids] for a in self.arrays)
        else:
            pairs = [self.dataset[int(i)] for i in ids]
            x = np.stack([_array(p[0]) for p in pairs])
            y = np.stack([_array(p[1]) for p in pairs])
        x = np.asarray(x)
        if x.dtype.kind == "f" or x.dtype.kind in "iub" and x.dtype != np.int64:
            x = x.astype(self.dtype, copy=False)
        y = np.asarray(y)
        if y.dtype.kind == "f":
            y = y.astype(self.dtype, copy=False)
        elif y.dtype.kind in "iub":
            y = y.astype(np.int64, copy=False)
        return Tensor._wrap(np.ascontiguousarray(x)), Tensor._wrap(np.ascontiguousarray(y))


def _array(value) -> np.ndarray:
    return value._data if isinstance(value, Tensor) else np.asarray(value)


@dataclass
class ShardValue:
    """Sums over the samples of a tree node: gradients, loss, count, batch-norm stats per shard."""

    grads: list  # one array per parameter (None where no gradient flowed)
    loss_sum: float
    count: int
    bn_stats: dict = field(default_factory=dict)  # shard -> list of (module index, mean, var)

    def add(self, other: ShardValue) -> ShardValue:
        """This node plus its right sibling, in place on the left operand (always the same order)."""
        for i, (a, b) in enumerate(zip(self.grads, other.grads)):
            if a is None:
                self.grads[i] = b
            elif b is not None:
                if a.flags.writeable:
                    np.add(a, b, out=a)
                else:  # a zero-copy view of a received frame: same sum, new array
                    self.grads[i] = np.add(a, b)
        self.loss_sum = self.loss_sum + other.loss_sum
        self.count += other.count
        self.bn_stats.update(other.bn_stats)
        return self


def add_values(a: ShardValue, b: ShardValue) -> ShardValue:
    """The tree's addition (``a`` is the left child)."""
    return a.add(b)


def batch_norm_modules(model) -> list:
    """The model's batch-norm modules in a fixed order (their positions identify them)."""
    return [m for m in model.modules() if hasattr(m, "apply_batch_stats")]


class ShardComputer:
    """Computes tree-node values for mini-batch plans with one model replica."""

    def __init__(self, job, settings, model, source: SampleSource, phases: list | None = None):
        self.job = job
        self.settings = settings
        self.model = model
        self.params = list(model.parameters())
        self.source = source
        self.bn_index = {id(m): i for i, m in enumerate(batch_norm_modules(model))}
        if phases is None:
            from .phases import build_phases

            phases = build_phases(job, model, with_optimizers=False)
        self.phases = phases

    def shard_value(self, plan: BatchPlan, shard: int, phase: int = 0) -> ShardValue | None:
        """Forward/backward of one micro-shard; None when the shard holds no samples."""
        ids = plan.shard_ids(shard)
        n = len(ids)
        if n == 0:
            return None
        x, y = self.source.fetch(ids)
        for p in self.params:
            p.grad = None
        self.model.train()
        spec = self.phases[phase]
        with keyed_dropout(self.settings.seed, plan.step, ids), collect_batch_stats() as stats:
            loss = spec.loss(self.model, x, y)
            if not isinstance(loss, Tensor) or loss.ndim != 0:
                raise TypeError(f"the loss of phase {spec.name!r} must be a scalar Tensor (the "
                                f"mean over samples), got {type(loss).__name__} of shape "
                                f"{getattr(loss, 'shape', None)}")
            loss.backward(Tensor._wrap(np.asarray(n, dtype=loss._data.dtype)))
        grads = [None] * len(self.params)
        for i in spec.param_indices:
            g = self.params[i].grad
            grads[i] = None if g is None else g._data
        for p in self.params:
            p.grad = None
        bn = [(self.bn_index[id(m)], np.array(mean), np.array(var)) for m, mean, var, *_ in stats]
        return ShardValue(grads=grads, loss_sum=float(loss.item()) * n, count=n,
                          bn_stats={shard: bn} if bn else {})

    def node_value(self, plan: BatchPlan, node: Node, phase: int = 0) -> ShardValue | None:
        """The value of a tree node, computed depth-first (at most log2(shards) values alive)."""
        lo, hi = node
        if hi - lo == 1:
            return self.shard_value(plan, lo, phase)
        mid = split_point(lo, hi)
        left = self.node_value(plan, (lo, mid), phase)
        right = self.node_value(plan, (mid, hi), phase)
        if left is None:
            return right
        if right is None:
            return left
        return left.add(right)


def evaluate(job, model, source: SampleSource, batch_size: int) -> dict:
    """Mean loss and metrics (e.g. accuracy) of ``model`` over a whole dataset, in eval mode."""
    was_training = model.training
    model.eval()
    total, loss_sum, sums = 0, 0.0, {}
    try:
        with no_grad():
            for start in range(0, len(source), batch_size):
                ids = np.arange(start, min(start + batch_size, len(source)))
                x, y = source.fetch(ids)
                output = model(x)
                loss_sum += float(job.loss(output, y).item()) * len(ids)
                for k, v in job.metrics(output, y).items():
                    sums[k] = sums.get(k, 0) + v
                total += len(ids)
    finally:
        model.train(was_training)
    result = {"loss": loss_sum / max(total, 1)}
    if "correct" in sums:
        result["accuracy"] = sums.pop("correct") / max(total, 1)
    result.update({k: v / max(total, 1) for k, v in sums.items()})
    return result
