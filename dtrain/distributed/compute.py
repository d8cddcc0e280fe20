"""Forward/backward of micro-shards and their tree sums: the one computation every process shares.

The coordinator's in-process mode and every worker run exactly this code, so a node of the
reduction tree has the same bits wherever it is computed. A shard's value is the *sum* of its
samples' gradients (the job's mean loss backpropagated with weight n), its loss sum and its
sample count; batch-norm batch statistics are kept per shard so the coordinator can apply the
running-stat updates in shard order.

Several shards are computed in one forward and one backward (``row_segments``) when the phase's
loss is the job's loss on the model's output: every reduction over samples is still formed per
shard, and the per-shard values are added along the tree. The first batched pass for each shard
layout is checked bit for bit against shard-by-shard passes; a model with an op that mixes
samples without keeping shards apart (a custom reduction over the batch, a layer whose
parameter gradients are not yet per-shard) fails that check or refuses the pass, and is then
computed shard by shard, as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..autograd.engine import backward as _backward
from ..autograd.engine import when_gradient_final
from ..autograd.grad_mode import no_grad
from ..autograd.segments import row_segments
from ..autograd.tensor import Tensor
from ..nn.dropout import keyed_dropout
from ..nn.normalization import collect_batch_stats
from .shards import BatchPlan, Node, leaves, split_point

log = logging.getLogger("dtrain.compute")


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


def _same_array(a, b) -> bool:
    if a is None or b is None:
        return a is b
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def same_bits(a: ShardValue | None, b: ShardValue | None) -> bool:
    """True when two values are bit for bit equal (gradients, loss sum, count, batch-norm stats)."""
    if a is None or b is None:
        return a is b
    if a.count != b.count or not _same_array(a.loss_sum, b.loss_sum):
        return False
    if len(a.grads) != len(b.grads) or not all(map(_same_array, a.grads, b.grads)):
        return False
    if sorted(a.bn_stats) != sorted(b.bn_stats):
        return False
    for shard, records in a.bn_stats.items():
        other = b.bn_stats[shard]
        if len(records) != len(other):
            return False
        for (i, mean, var), (j, mean2, var2) in zip(records, other):
            if i != j or not _same_array(mean, mean2) or not _same_array(var, var2):
                return False
    return True


def add_values(a: ShardValue, b: ShardValue) -> ShardValue:
    """The tree's addition (``a`` is the left child)."""
    return a.add(b)


def batch_norm_modules(model) -> list:
    """The model's batch-norm modules in a fixed order (their positions identify them)."""
    return [m for m in model.modules() if hasattr(m, "apply_batch_stats")]


class ShardComputer:
    """Computes tree-node values for mini-batch plans with one model replica."""

    def __init__(self, job, settings, model, source: SampleSource, phases: list | None = None,
                 batched: bool = True):
        self.job = job
        self.batched = batched  # may several shards share one forward/backward
        self.verdicts: dict = {}  # (phase, nodes, shard sizes) -> one pass checked exact (bool)
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
            _check_loss(spec, loss)
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

    def node_values(self, plan: BatchPlan, nodes, phase: int = 0, on_final=None) -> dict:
        """The values of several tree nodes (node -> value), their shards in one pass if allowed.

        ``on_final(param, {node: gradient or None})``, if given, hears each parameter's node
        gradients (the bits the values will hold) as soon as backward has finished them, so
        they can leave while backward goes on; only in a batched pass of a layout already
        shown exact (a first pass may still be refused), so it may hear some or none.
        """
        nodes = [tuple(node) for node in nodes]
        shards = [s for node in nodes for s in leaves(node)]
        values = None
        if self.batched and self.phases[phase].output_loss is not None \
                and sum(1 for s in shards if len(plan.shard_ids(s))) > 1 \
                and len(set(shards)) == len(shards):
            values = self._checked_batch(plan, nodes, phase, on_final)
        if values is None:
            return {node: self.node_value(plan, node, phase) for node in nodes}
        return values

    def _checked_batch(self, plan: BatchPlan, nodes: list, phase: int,
                       on_final=None) -> dict | None:
        """Node values from one pass, or None where that pass is refused or was unequal."""
        key = (phase, tuple(nodes), tuple(len(plan.shard_ids(s)) for n in nodes for s in leaves(n)))
        verdict = self.verdicts.get(key)
        if verdict is False:
            return None
        if verdict is None:
            try:
                values, refused = self.batch_values(plan, nodes, phase)
            except Exception as e:  # noqa: BLE001 - e.g. a forward that fixes the batch size;
                # the shard-by-shard passes below raise again if the error is not the batching's
                values, refused = {}, f"{type(e).__name__}: {e}"
                for p in self.params:
                    p.grad = None
        else:
            values, refused = self.batch_values(plan, nodes, phase, on_final)
        if verdict is None:
            if refused is None:
                reference = {node: self.node_value(plan, node, phase) for node in nodes}
                if not all(same_bits(values[node], reference[node]) for node in nodes):
                    refused = "its values differ from shard-by-shard passes"
            self.verdicts[key] = refused is None
            if refused is not None:
                log.info("phase %d computes micro-shards one by one: a pass over several "
                         "shards is not exact here (%s)", phase, refused)
        return values if refused is None else None

    def batch_values(self, plan: BatchPlan, nodes: list, phase: int = 0,
                     on_final=None) -> tuple:
        """One forward/backward over the shards of several nodes: ({node: value}, refusal).

        The model runs once over all the shards' samples inside ``row_segments``; the loss runs
        once per shard on its rows of the output, each backpropagated with its sample count, so
        every value has the bits of shard-by-shard passes added along the tree, unless a kernel
        refused (the refusal says why; the values are then not to be used). ``on_final``: as
        in ``node_values``, heard only when every node holds samples.
        """
        spec = self.phases[phase]
        shards = [s for node in nodes for s in leaves(node) if len(plan.shard_ids(s))]
        ids_of = [plan.shard_ids(s) for s in shards]
        sizes = [len(ids) for ids in ids_of]
        groups = None  # the nodes as ranges of positions in ``shards``, when none is empty
        if len(shards) == sum(hi - lo for lo, hi in nodes):
            ends = np.cumsum([hi - lo for lo, hi in nodes])
            groups = [(int(e) - (hi - lo), int(e)) for e, (lo, hi) in zip(ends, nodes)]
        ids = np.concatenate(ids_of)
        x, y = self.source.fetch(ids)
        for p in self.params:
            p.grad = None
        self.model.train()
        with keyed_dropout(self.settings.seed, plan.step, ids), collect_batch_stats() as stats:
            with row_segments(sizes, groups) as seg:
                output = self.model(x)
            if stats:
                seg.refuse("a batch norm saw a batch that is not the shards'")
            if not isinstance(output, Tensor) or output.ndim == 0 or not seg.covers(output._data):
                return {}, "the model's output is not one row per sample"
            pieces, losses = [], []
            for (lo, hi), n in zip(seg.bounds, sizes):
                piece = Tensor._wrap(output._data[lo:hi], output.requires_grad)
                loss = spec.output_loss(piece, Tensor._wrap(y._data[lo:hi]))
                _check_loss(spec, loss)
                pieces.append(piece)
                losses.append(loss)
            trained = [(t, n) for t, n in zip(losses, sizes) if t.requires_grad]
            if trained:
                _backward([t for t, _ in trained],
                          [Tensor._wrap(np.asarray(n, dtype=t._data.dtype)) for t, n in trained])
            if output.requires_grad:
                seed = [np.zeros_like(p._data) if p.grad is None else p.grad._data for p in pieces]
                final = None if on_final is None or groups is None else \
                    self._final_listener(seg, spec, nodes, on_final)
                with when_gradient_final(final):
                    output.backward(Tensor._wrap(np.concatenate(seed)))
        for i in spec.param_indices:
            if self.params[i].grad is not None:
                seg.refuse(f"parameter {i} got a gradient summed over all the shards")
        for p in self.params:
            p.grad = None
        summed = {i: seg.group_grads(self.params[i]) for i in spec.param_indices}
        per_shard = {}
        for k, (shard, n) in enumerate(zip(shards, sizes)):
            grads = [None] * len(self.params)
            if groups is None:  # the shards' own gradients, added along the tree below
                for i, arrays in summed.items():
                    grads[i] = None if arrays is None else arrays[k]
            bn = [(self.bn_index[id(m)], np.array(mean), np.array(var))
                  for m, mean, var, *_ in seg.bn_records[k]]
            per_shard[shard] = ShardValue(grads=grads, loss_sum=float(losses[k].item()) * n,
                                          count=n, bn_stats={shard: bn} if bn else {})
        values = {node: _tree(per_shard, node) for node in nodes}
        if groups is not None:  # the gradients were added along each node's tree already
            for j, node in enumerate(nodes):
                for i, arrays in summed.items():
                    values[node].grads[i] = None if arrays is None else arrays[j]
        return values, seg.refused

    def _final_listener(self, seg, spec, nodes: list, on_final):
        """The engine's listener for a batched pass: a trained parameter whose gradient is
        final goes to ``on_final`` with its node sums, unless the pass is already refused or
        the gradient bypassed the per-shard sums (which refuses the pass at its end)."""
        position = {id(self.params[i]): i for i in spec.param_indices}

        def final(leaf) -> None:
            i = position.get(id(leaf))
            if i is None or seg.refused is not None or leaf.grad is not None:
                return
            sums = seg.group_grads(leaf)
            on_final(i, {node: None if sums is None else sums[j] for j, node in enumerate(nodes)})

        return final

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


def _check_loss(spec, loss) -> None:
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        raise TypeError(f"the loss of phase {spec.name!r} must be a scalar Tensor (the mean over "
                        f"samples), got {type(loss).__name__} of shape "
                        f"{getattr(loss, 'shape', None)}")


def _tree(values: dict, node: Node) -> ShardValue | None:
    """A node's value from its shards' values (absent: no samples), added along the tree."""
    lo, hi = node
    if hi - lo == 1:
        return values.get(lo)
    mid = split_point(lo, hi)
    left, right = _tree(values, (lo, mid)), _tree(values, (mid, hi))
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
