"""Row segments: one forward/backward over several micro-shards, every batch reduction per shard.

Inside ``row_segments(sizes)`` the leading axis of a batch is the concatenation of micro-shards
of the given sizes. Row-wise ops (elementwise maths, activations, pooling, keyed dropout) need
nothing: each row's bits are those of a pass over its shard alone. The kernels that mix rows ask
this module how to stay per-shard:

- a GEMM whose rows are samples (``x @ W.T``, ``g @ W``) runs on the whole batch only where this
  BLAS was *shown* row-invariant for that exact shape (a probe, cached per shape, compares the
  whole product with separate per-shard products on random data); elsewhere it runs per shard,
  as one stacked ``np.matmul`` when the shards are equally sized;
- a reduction over samples (weight and bias gradients, batch-norm statistics) is formed per
  shard, and the per-shard gradients of a leaf are handed to ``Segments.deliver`` instead of
  the autograd engine, so the caller can add them along the fixed reduction tree.

A kernel that cannot keep its reduction per shard marks the pass with ``refuse(reason)``; the
caller then computes the shards one by one instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

_local = threading.local()
_row_invariant: dict = {}  # GEMM signature -> whether products in pieces equal the whole's


_BLOCK_BYTES = 3 << 18  # per-shard weight-gradient blocks that stay in cache while added


class Segments:
    """The micro-shard layout of one batched pass and the per-shard results it produced.

    ``groups`` are ranges of consecutive shards (positions in ``sizes``), each the shards of one
    reduction-tree node, whose leaf gradients the caller wants summed along the tree; by
    default every shard is its own group.
    """

    def __init__(self, sizes, groups=None):
        self.sizes = tuple(int(s) for s in sizes)
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"row_segments needs positive shard sizes, got {self.sizes}")
        self.count = len(self.sizes)
        self.rows = sum(self.sizes)
        ends = np.cumsum(self.sizes)
        self.bounds = [(int(e - s), int(e)) for s, e in zip(self.sizes, ends)]
        self.equal = len(set(self.sizes)) == 1
        self.groups = [(k, k + 1) for k in range(self.count)] if groups is None else \
            [tuple(g) for g in groups]
        if [k for lo, hi in self.groups for k in range(lo, hi)] != list(range(self.count)):
            raise ValueError(f"groups {self.groups} do not split {self.count} shards in order")
        self.grads: dict = {}  # id(leaf) -> [leaf, per-shard (shards, ...) or per-group list]
        self.bn_records: list = [[] for _ in self.sizes]  # per shard: (module, mean, var, n)
        self.refused: str | None = None
        self._threads: int | None = None

    @property
    def threads(self) -> int:
        """BLAS threads during this pass (read once: threadpoolctl's query is not free)."""
        if self._threads is None:
            self._threads = _threads()
        return self._threads

    def covers(self, x: np.ndarray) -> bool:
        """True when ``x``'s leading axis is this pass's batch (so its rows are the shards)."""
        return x.ndim >= 1 and x.shape[0] == self.rows

    def stacked(self, x: np.ndarray) -> np.ndarray:
        """(shards, rows per shard, ...) view of a contiguous batch array (equal shards only)."""
        return x.reshape((self.count, self.sizes[0]) + x.shape[1:])

    def per_shard(self, fn, *arrays) -> np.ndarray:
        """``fn`` applied to each shard's rows of ``arrays``, results stacked on a new axis 0."""
        return np.stack([fn(*(a[lo:hi] for a in arrays)) for lo, hi in self.bounds])

    def row_sums(self, x: np.ndarray) -> np.ndarray:
        """Each shard's ``x_s.sum(axis=0)`` (a bias gradient), stacked: (shards, ...).

        Equal shards take one reduction over the (shards, rows, ...) view, which adds each
        shard's rows in the order its own ``sum(axis=0)`` does (tests check the bits; NumPy's
        ``add.reduceat`` does not, so unequal shards are summed one by one).
        """
        if self.equal and x.flags.c_contiguous:
            return self.stacked(x).sum(axis=1)
        return self.per_shard(lambda xs: xs.sum(axis=0), x)

    def refuse(self, reason: str) -> None:
        """Mark the pass as unable to stand for per-shard passes (the first reason is kept)."""
        if self.refused is None:
            self.refused = reason

    def _accepts(self, leaf) -> bool:
        if leaf.grad_fn is not None:
            self.refuse(f"a gradient reduced over samples reaches a non-leaf ({leaf.grad_fn})")
            return False
        from .engine import _hooks

        if id(leaf) in _hooks:
            self.refuse("a parameter has a gradient hook")
        return True

    def deliver(self, leaf, grads: np.ndarray):
        """Accept per-shard gradients (shards, *shape) of ``leaf``; returns what autograd gets.

        A leaf's per-shard gradients accumulate here, in the engine's order, exactly as each
        shard's own pass accumulates into ``.grad``. A non-leaf cannot carry a shard axis
        through the graph: the pass is refused and autograd gets the plain sum, so it runs on.
        """
        if not self._accepts(leaf):
            return grads.sum(axis=0)
        if grads.dtype != leaf._data.dtype:
            grads = grads.astype(leaf._data.dtype)
        entry = self.grads.get(id(leaf))
        if entry is None:
            self.grads[id(leaf)] = [leaf, grads]
        elif isinstance(entry[1], list):
            self.refuse("a parameter is used twice after its tree sums were formed")
        else:
            entry[1] = entry[1] + grads
        return None

    def deliver_outer(self, leaf, g: np.ndarray, x: np.ndarray):
        """Accept the weight gradient ``sum over each shard of g_s.T @ x_s`` of ``leaf``.

        Where the shards are equal and this BLAS gives row blocks of ``g_s.T @ x_s`` the bits
        of the whole product (probed), the per-shard products are formed a block of output
        rows at a time and added along each group's tree while in cache, the last addition
        writing the node's rows; otherwise they are formed whole (``shard_outer``) and added
        later.
        """
        fused = (self.equal and leaf.grad_fn is None and id(leaf) not in self.grads
                 and g.flags.c_contiguous and x.flags.c_contiguous and g.dtype == x.dtype
                 and g.dtype == leaf._data.dtype)
        if fused:
            out, width = g.shape[1], x.shape[1]
            block = _block_height(g[:self.sizes[0]].T, x[:self.sizes[0]],
                                  _BLOCK_BYTES // (self.count * width * g.itemsize),
                                  self.threads)
            fused = block is not None
        if not fused:
            return self.deliver(leaf, shard_outer(self, g, x))
        if not self._accepts(leaf):
            return None
        G3T, X3 = self.stacked(g).transpose(0, 2, 1), self.stacked(x)
        sums = [np.empty((out, width), dtype=g.dtype) for _ in self.groups]
        buffers = {}  # block height -> (shards, height, width) products, reused block to block
        for r in range(0, out, block):
            h = min(block, out - r)
            part = buffers.get(h)
            if part is None:
                part = buffers[h] = np.empty((self.count, h, width), dtype=g.dtype)
            np.matmul(G3T[:, r:r + h], X3, out=part)
            for total, (lo, hi) in zip(sums, self.groups):
                tree_sum_into(part, lo, hi, total[r:r + h])
        self.grads[id(leaf)] = [leaf, sums]
        return None

    def group_grads(self, leaf) -> list | None:
        """``leaf``'s gradient summed along each group's tree (None: no gradient reached it).

        The sums are kept, so asking again (once while backward runs, once after) adds once;
        a later delivery to ``leaf`` then refuses the pass, as after ``deliver_outer``.
        """
        entry = self.grads.get(id(leaf))
        if entry is None:
            return None
        if not isinstance(entry[1], list):
            entry[1] = [tree_sum(entry[1], lo, hi) for lo, hi in self.groups]
        return entry[1]


_TILES = (8, 24, 16, 32, 48, 64)  # block heights tried in turn, as multiples (see below)


def _block_height(gT: np.ndarray, x: np.ndarray, budget: int, threads: int) -> int | None:
    """Rows per block of a weight gradient ``gT @ x`` formed a block at a time: the largest
    multiple of the first tile in ``_TILES`` within ``budget`` rows (at least one tile) whose
    blocks this BLAS computes with the whole product's bits (probed); None if none does.

    A BLAS treats the rows of a product in tiles (OpenBLAS's Haswell kernels on AMD EPYC: 24),
    and rows past the last whole tile in a tail kernel that sums differently, so blocks are
    exact only at the right multiples; 8 comes first, as it suits most kernels.
    """
    out = gT.shape[0]
    if out <= max(8, budget):
        return out  # one block: the whole product itself
    for tile in _TILES:
        block = max(tile, budget // tile * tile)
        if block >= out:
            return out
        blocks = tuple(min(block, out - r) for r in range(0, out, block))
        if _probe(gT, x, blocks, threads, "blocks"):
            return block
    return None


def tree_sum_into(stack: np.ndarray, lo: int, hi: int, out: np.ndarray | None = None) -> None:
    """``tree_sum(stack, lo, hi)`` formed in place in ``stack`` (same additions, same bits).

    The sum is left in ``stack[lo]``, or, given ``out``, the last addition writes it there
    (a node's rows of the caller's array: no copy afterwards).
    """
    n = hi - lo
    if n == 1:
        if out is not None:
            out[...] = stack[lo]
        return
    if n & (n - 1) == 0:
        step = 1
        while 2 * step < n:
            left = stack[lo:hi:2 * step]
            np.add(left, stack[lo + step:hi:2 * step], out=left)
            step *= 2
        np.add(stack[lo], stack[lo + step], out=stack[lo] if out is None else out)
        return
    mid = lo + n // 2
    tree_sum_into(stack, lo, mid)
    tree_sum_into(stack, mid, hi)
    np.add(stack[lo], stack[mid], out=stack[lo] if out is None else out)


def tree_sum(stack: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``stack[lo:hi]`` added along the reduction tree (split at the middle, left + right).

    A power-of-two range is the perfect tree, so it is added a level at a time (one NumPy call
    per level); the additions, and so the bits, are those of the node-by-node recursion.
    """
    n = hi - lo
    if n == 1:
        return stack[lo]
    if n & (n - 1) == 0:
        level = stack[lo:hi]
        while len(level) > 1:
            level = level[0::2] + level[1::2]
        return level[0]
    mid = lo + n // 2
    return tree_sum(stack, lo, mid) + tree_sum(stack, mid, hi)


@contextmanager
def row_segments(sizes, groups=None) -> Iterator[Segments]:
    """Within this block (this thread), batches of ``sum(sizes)`` rows are micro-shards."""
    previous = getattr(_local, "segments", None)
    _local.segments = Segments(sizes, groups)
    try:
        yield _local.segments
    finally:
        _local.segments = previous


def active_segments(x: np.ndarray) -> Segments | None:
    """The active layout when ``x``'s leading axis is its batch; None otherwise (plain pass)."""
    seg = getattr(_local, "segments", None)
    if seg is None or seg.count == 1 or not seg.covers(x):
        return None
    return seg


def _threads() -> int:
    from ..process import _blas_controller

    controller = _blas_controller()
    if controller is None or not controller.lib_controllers:
        return 0
    return controller.lib_controllers[0].num_threads


def _like(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random values in an array of ``a``'s shape, dtype and memory order.

    Magnitudes spread over many binades, so that two summation orders round differently
    (values of one scale often add up to the same bits in any order when the sums are short).
    """
    out = np.empty_like(a, order="K")
    out[...] = rng.standard_normal(a.shape) * np.exp2(rng.integers(-12, 13, a.shape))
    return out


_PROBES = 3  # independent draws; any difference marks the shape as not row-invariant


MIN_BATCHED = 64  # narrower products than this never run on the whole batch


def row_invariant(a: np.ndarray, b: np.ndarray, sizes: tuple, threads: int | None = None) -> bool:
    """Whether this BLAS gives ``a @ b``'s rows the bits of per-shard products, for this shape.

    Which kernel a BLAS picks (and so its summation order) depends on the shapes, the operand
    layouts and the thread count, not on the values; random operands with the same signature
    therefore tell, and the answer is cached. Some BLAS treat the rows of a short product in
    blocks (a row's bits then depend on the row count), so every shard size is probed.

    Narrow products (fewer than ``MIN_BATCHED`` inner or output columns) always run per shard:
    their kernels (gemv-like, alignment-peeled) were seen to change bits with the operands'
    memory alignment, which a probe on fresh arrays cannot pin down, and they are cheap anyway.
    """
    if a.shape[1] < MIN_BATCHED or b.shape[1] < MIN_BATCHED:
        return False
    return _probe(a, b, sizes, threads, "rows")


def _probe(a: np.ndarray, b: np.ndarray, sizes: tuple, threads: int | None, mode: str) -> bool:
    """Whether pieces of ``a @ b`` computed apart have the whole product's bits (cached).

    ``rows``: row blocks of ``a`` copied into arrays of their own (a shard's own pass);
    ``blocks``: row blocks of ``a`` taken as views (a weight gradient formed a block at a time).
    """
    if threads is None:
        threads = _threads()
    key = (mode, a.dtype.str, b.dtype.str, a.shape[1], b.shape[1], a.strides, b.strides,
           a.shape[0] if mode == "blocks" else None, tuple(sizes), threads)
    known = _row_invariant.get(key)
    if known is None:
        rng = np.random.default_rng(len(_row_invariant))
        known = all(_pieces_equal(_like(a, rng), _like(b, rng), sizes, mode)
                    for _ in range(_PROBES))
        _row_invariant[key] = known
    return known


def _pieces_equal(a: np.ndarray, b: np.ndarray, sizes: tuple, mode: str) -> bool:
    whole = a @ b
    start = 0
    for n in sizes:
        if mode == "rows":
            part = np.empty_like(a[start:start + n], order="K")
            part[...] = a[start:start + n]
        else:
            part = a[start:start + n]
        if not np.array_equal(part @ b, whole[start:start + n]):
            return False
        start += n
    return True


def rows_matmul(seg: Segments | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a batch ``a`` (rows are samples) with each shard's rows as its own product."""
    if seg is None or row_invariant(a, b, seg.sizes, seg.threads):
        return a @ b
    if seg.equal and a.flags.c_contiguous:
        return np.matmul(seg.stacked(a), b).reshape(a.shape[0], b.shape[1])
    return np.concatenate([a[lo:hi] @ b for lo, hi in seg.bounds])


def shard_outer(seg: Segments, g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-shard ``g_s.T @ x_s`` (weight gradients), stacked: (shards, g.shape[1], x.shape[1])."""
    if seg.equal and g.flags.c_contiguous and x.flags.c_contiguous:
        return np.matmul(seg.stacked(g).transpose(0, 2, 1), seg.stacked(x))
    return seg.per_shard(lambda gs, xs: gs.T @ xs, g, x)
