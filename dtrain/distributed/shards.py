"""Micro-shards and the fixed reduction tree that make results independent of the worker count.

Every mini-batch is cut into ``micro_shards`` contiguous pieces. Their gradient sums are added
along one fixed binary tree over the shard indices: node ``(lo, hi)`` is the sum of shards
``lo..hi-1``, and its value is ``value(lo, mid) + value(mid, hi)`` with ``mid = (lo + hi) // 2``.
A worker given a contiguous range of shards sends the values of the maximal tree nodes that its
range covers; the coordinator finishes the tree. Floating-point addition is done in the same
order whoever computes a node, so the total is bit-identical for 1, 2, 3 or N workers, and a
node can be recomputed elsewhere after a fault without changing the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Node = tuple  # (lo, hi): the shards lo..hi-1


def split_point(lo: int, hi: int) -> int:
    """Where the tree splits node (lo, hi) into its two children."""
    return (lo + hi) // 2


def is_tree_node(node, micro_shards: int) -> bool:
    """True when ``node`` is a node of the reduction tree over ``micro_shards`` shards."""
    if not (isinstance(node, (tuple, list)) and len(node) == 2):
        return False
    lo, hi = node
    if not (isinstance(lo, int) and isinstance(hi, int)):
        return False
    if not 0 <= lo < hi <= micro_shards:
        return False
    a, b = 0, micro_shards
    while (a, b) != (lo, hi):
        mid = split_point(a, b)
        if hi <= mid:
            b = mid
        elif lo >= mid:
            a = mid
        else:
            return False
    return True


def cover(lo: int, hi: int, micro_shards: int) -> list[Node]:
    """The maximal tree nodes whose shards lie inside [lo, hi), in shard order."""
    out: list[Node] = []

    def visit(a: int, b: int) -> None:
        if b <= lo or a >= hi:
            return
        if lo <= a and b <= hi:
            out.append((a, b))
            return
        mid = split_point(a, b)
        visit(a, mid)
        visit(mid, b)

    if 0 <= lo < hi <= micro_shards:
        visit(0, micro_shards)
    return out


def leaves(node: Node) -> range:
    """The shard indices under a tree node."""
    return range(node[0], node[1])


def assign(micro_shards: int, workers: list) -> dict:
    """Balanced contiguous shard ranges: worker -> list of tree nodes covering its range."""
    if not workers:
        return {}
    n = len(workers)
    out = {}
    for i, w in enumerate(workers):
        lo = i * micro_shards // n
        hi = (i + 1) * micro_shards // n
        out[w] = cover(lo, hi, micro_shards) if hi > lo else []
    return out


def tree_sum(known: dict, node: Node, add: Callable) -> object:
    """Sum ``node`` along the fixed tree from the values in ``known`` (node -> value).

    A value of None stands for "no samples" and is the identity of ``add(a, b)``. Raises
    KeyError naming the first micro-shard whose value is missing.
    """
    if node in known:
        return known[node]
    lo, hi = node
    if hi - lo == 1:
        raise KeyError(f"no value for micro-shard {lo}")
    mid = split_point(lo, hi)
    left = tree_sum(known, (lo, mid), add)
    right = tree_sum(known, (mid, hi), add)
    if left is None:
        return right
    if right is None:
        return left
    return add(left, right)


@dataclass(frozen=True)
class BatchPlan:
    """One mini-batch: its global step, its sample ids, and how they split into micro-shards."""

    step: int
    epoch: int
    batch: int
    sample_ids: np.ndarray  # global dataset indices of the batch, in batch order
    micro_shards: int

    def shard_bounds(self, shard: int) -> tuple[int, int]:
        """Positions [start, stop) of micro-shard ``shard`` within the batch."""
        n = len(self.sample_ids)
        return shard * n // self.micro_shards, (shard + 1) * n // self.micro_shards

    def shard_ids(self, shard: int) -> np.ndarray:
        """The global sample ids of one micro-shard (possibly empty for tiny batches)."""
        start, stop = self.shard_bounds(shard)
        return self.sample_ids[start:stop]

    def node_count(self, node: Node) -> int:
        """How many samples a tree node holds."""
        start = self.shard_bounds(node[0])[0]
        stop = self.shard_bounds(node[1] - 1)[1]
        return stop - start

    @property
    def size(self) -> int:
        return len(self.sample_ids)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The sample order of an epoch: a permutation keyed only by (seed, epoch)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    from ..data import epoch_permutation

    return epoch_permutation(n, seed, epoch)


def batches_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Number of mini-batches an epoch of ``n`` samples yields."""
    return n // batch_size if drop_last else -(-n // batch_size)


def plan_batch(order: np.ndarray, *, step: int, epoch: int, batch: int, batch_size: int,
               micro_shards: int) -> BatchPlan:
    """The plan of mini-batch ``batch`` of an epoch whose sample order is ``order``."""
    ids = order[batch * batch_size:(batch + 1) * batch_size]
    return BatchPlan(step=step, epoch=epoch, batch=batch, sample_ids=ids,
                     micro_shards=micro_shards)


class Planner:
    """Plans the mini-batches of a data set: what the coordinator and every worker agree on.

    The epoch's sample order is computed once per epoch, on first use.
    """

    def __init__(self, n: int, settings):
        self.n = n
        self.settings = settings
        self._order = None  # (epoch, its sample order)

    def plan(self, epoch: int, batch: int, step: int) -> BatchPlan:
        """The micro-shard plan of one step, derived only from (seed, epoch, batch)."""
        s = self.settings
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.n, s.seed, epoch, s.shuffle))
        return plan_batch(self._order[1], step=step, epoch=epoch, batch=batch,
                          batch_size=s.batch_size, micro_shards=s.micro_shards)
