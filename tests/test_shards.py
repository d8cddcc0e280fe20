"""The reduction tree: any contiguous split of micro-shards among workers sums to the same bits."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtrain.distributed.shards import BatchPlan, assign, batches_per_epoch, cover, is_tree_node, tree_sum


def _add(a, b):
    return a + b


def _shard_values(m, seed=0):
    rng = np.random.default_rng(seed)
    # values spanning magnitudes make float32 addition order-sensitive
    return {(i, i + 1): (rng.standard_normal(64) * 10.0 ** rng.integers(-4, 5)).astype(np.float32)
            for i in range(m)}


def _worker_nodes(m, nodes, shard_vals):
    """What a worker sends: each node's value computed by the same tree from its shards."""
    return {node: tree_sum(shard_vals, node, _add) for node in nodes}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(m=st.integers(1, 64), workers=st.integers(1, 12))
def test_any_worker_count_gives_identical_bits(m, workers):
    shard_vals = _shard_values(m, seed=m)
    reference = tree_sum(shard_vals, (0, m), _add)
    plan = assign(m, list(range(workers)))
    received = {}
    for nodes in plan.values():
        received.update(_worker_nodes(m, nodes, shard_vals))
    assert np.array_equal(tree_sum(received, (0, m), _add), reference)


def test_order_matters_so_the_test_can_fail():
    vals = _shard_values(16, seed=3)
    tree = tree_sum(vals, (0, 16), _add)
    sequential = vals[(0, 1)].copy()
    for i in range(1, 16):
        sequential = sequential + vals[(i, i + 1)]
    assert not np.array_equal(tree, sequential)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(m=st.integers(1, 40), data=st.data())
def test_cover_is_an_exact_partition_into_tree_nodes(m, data):
    lo = data.draw(st.integers(0, m - 1))
    hi = data.draw(st.integers(lo + 1, m))
    nodes = cover(lo, hi, m)
    shards = [s for a, b in nodes for s in range(a, b)]
    assert shards == list(range(lo, hi))
    assert all(is_tree_node(n, m) for n in nodes)


def test_is_tree_node_rejects_non_nodes():
    assert is_tree_node((0, 8), 8) and is_tree_node((4, 6), 8) and is_tree_node((3, 4), 8)
    for bad in [(1, 3), (0, 9), (-1, 2), (2, 2), "ab", (0.0, 1), [0], (True, 2.5)]:
        assert not is_tree_node(bad, 8), bad


def test_assign_balances_contiguous_ranges():
    plan = assign(8, ["a", "b", "c"])
    spans = {w: [s for a, b in nodes for s in range(a, b)] for w, nodes in plan.items()}
    assert spans == {"a": [0, 1], "b": [2, 3, 4], "c": [5, 6, 7]}
    assert assign(2, [1, 2, 3])[1] == []


def test_missing_shard_is_named():
    vals = _shard_values(4)
    del vals[(2, 3)]
    with pytest.raises(KeyError, match="micro-shard 2"):
        tree_sum(vals, (0, 4), _add)


def test_empty_shards_are_identity():
    vals = {(0, 1): np.ones(2), (1, 2): None, (2, 3): None, (3, 4): np.ones(2)}
    assert np.array_equal(tree_sum(vals, (0, 4), _add), np.full(2, 2.0))


def test_batch_plan_bounds_and_counts():
    plan = BatchPlan(step=0, epoch=0, batch=0, sample_ids=np.arange(10, 20), micro_shards=4)
    assert [plan.shard_bounds(i) for i in range(4)] == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert plan.node_count((0, 2)) == 5 and plan.node_count((0, 4)) == 10
    assert list(plan.shard_ids(1)) == [12, 13, 14]


def test_batches_per_epoch():
    assert batches_per_epoch(10, 3, drop_last=False) == 4
    assert batches_per_epoch(10, 3, drop_last=True) == 3
