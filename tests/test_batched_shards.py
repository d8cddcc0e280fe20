"""Several micro-shards in one pass: every tree node keeps the bits of shard-by-shard passes.

The property: the bits of a micro-shard's value do not depend on how many shards one process
computes at once. Each kernel that mixes rows is checked here, over many shapes (narrow outputs
such as 512->10, odd and unequal shard sizes), against passes over each shard alone, byte for
byte; so a BLAS that is not row-invariant for some shape is caught, and must be routed per shard.
"""

import os
import sys

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd.segments import row_invariant, row_segments
from dtrain.distributed.compute import SampleSource, ShardComputer, same_bits
from dtrain.distributed.shards import BatchPlan, split_point

sys.path.insert(0, os.path.dirname(__file__))
import batched_jobs
import dist_jobs

SIZES = [(32,) * 8, (8,) * 32, (3, 5, 4), (1, 1, 1), (7, 6, 7, 6, 7), (33, 32)]
LINEAR_SHAPES = [(784, 512), (512, 512), (512, 10), (64, 10), (128, 64), (10, 3), (3, 1),
                 (1, 7), (200, 33)]


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _leaf(array):
    return dtrain.tensor(array, requires_grad=True)


def _pass(fn, x, params, g, sizes=None):
    """Run ``fn`` forward and backward; (output, input grad, per-parameter grads)."""
    for p in params:
        p.grad = None
    xt = _leaf(x)
    if sizes is None:
        out = fn(xt)
        out.backward(dtrain.tensor(g))
        return out._data, xt.grad._data, [p.grad._data for p in params]
    with row_segments(sizes) as seg:
        out = fn(xt)
    out.backward(dtrain.tensor(g))
    assert seg.refused is None, seg.refused
    assert all(p.grad is None for p in params), "a parameter gradient bypassed the segments"
    return out._data, xt.grad._data, [seg.group_grads(p) for p in params]


def _check_kernel(fn, params, x, g, sizes):
    """One segmented pass against one fresh pass per shard: rows and per-shard sums, bytes."""
    out, gx, grads = _pass(fn, x, params, g, sizes)
    start = 0
    for k, n in enumerate(sizes):
        rows = slice(start, start + n)
        ref_out, ref_gx, ref_grads = _pass(fn, x[rows].copy(), params, g[rows].copy())
        assert _same(out[rows], ref_out), f"output of shard {k} (sizes {sizes})"
        assert _same(gx[rows], ref_gx), f"input gradient of shard {k} (sizes {sizes})"
        for i, ref in enumerate(ref_grads):
            assert _same(grads[i][k], ref), f"parameter {i} gradient of shard {k} ({sizes})"
        start += n


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", LINEAR_SHAPES)
def test_linear_over_shards_has_per_shard_bits(shape, dtype):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    layer = nn.Linear(*shape).to(dtype)
    for sizes in SIZES:
        n = sum(sizes)
        x = rng.standard_normal((n, shape[0])).astype(dtype)
        g = rng.standard_normal((n, shape[1])).astype(dtype)
        _check_kernel(layer, list(layer.parameters()), x, g, sizes)


def _node_sum(values: dict, lo: int, hi: int):
    """A node's value from its shards' arrays along the reduction tree (the trainer's order)."""
    if hi - lo == 1:
        return values[lo]
    mid = split_point(lo, hi)
    return _node_sum(values, lo, mid) + _node_sum(values, mid, hi)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(784, 512), (512, 512), (512, 10), (300, 37)])
@pytest.mark.parametrize("sizes,nodes", [
    ((32,) * 8, [(0, 8)]), ((8,) * 32, [(0, 32)]), ((8,) * 32, [(0, 16), (16, 24), (24, 32)]),
    ((5,) * 12, [(0, 3), (3, 8), (8, 9), (9, 12)]), ((3,) * 6, [(0, 6)])])
def test_weight_gradient_node_sums_have_the_trees_bits(shape, sizes, nodes, dtype):
    """The blocked weight gradient (per-shard products a block of rows at a time, added along
    each node's tree in cache) equals products on each shard's own arrays added node by node,
    byte for byte: power-of-two and other node sizes, several blocks per product."""
    rng = np.random.default_rng(sum(shape) + len(sizes))
    n = sum(sizes)
    x = (rng.standard_normal((n, shape[0])) * np.exp2(rng.integers(-8, 9, (n, shape[0]))))
    g = (rng.standard_normal((n, shape[1])) * np.exp2(rng.integers(-8, 9, (n, shape[1]))))
    x, g = x.astype(dtype), g.astype(dtype)
    weight = _leaf(np.zeros((shape[1], shape[0]), dtype))
    groups = [(lo - nodes[0][0], hi - nodes[0][0]) for lo, hi in nodes]
    with row_segments(sizes, groups) as seg:
        seg.deliver_outer(weight, g, x)
    sums = seg.group_grads(weight)
    starts = np.cumsum((0,) + sizes[:-1])
    own = {k: g[s:s + m].copy().T @ x[s:s + m].copy()
           for k, (s, m) in enumerate(zip(starts, sizes))}
    for (lo, hi), total in zip(nodes, sums):
        assert _same(total, _node_sum(own, lo, hi)), f"node {(lo, hi)} of {sizes}"


def test_weight_gradient_blocks_follow_the_row_tiles_this_blas_keeps_exact(monkeypatch):
    """A BLAS that tiles rows by 24 (OpenBLAS's Haswell kernels on AMD EPYC) gives 8-row blocks
    other bits than the whole product: the next tile whose blocks the probe finds exact is used,
    and with none the products are formed whole (None)."""
    from dtrain.autograd import segments

    asked = []

    def probe(a, b, blocks, threads, mode):
        asked.append(blocks)
        return all(h % 24 == 0 for h in blocks[:-1])

    monkeypatch.setattr(segments, "_probe", probe)
    gT, x = np.zeros((512, 8), np.float32), np.zeros((8, 784), np.float32)
    assert segments._block_height(gT, x, 7, 1) == 24
    assert asked[0][0] == 8 and asked[-1][0] == 24
    assert segments._block_height(gT, x, 100, 1) == 96  # the budget's multiple of 8 is one
    assert segments._block_height(gT, x, 600, 1) == 512  # one block: nothing to probe
    monkeypatch.setattr(segments, "_probe", lambda *args: False)
    assert segments._block_height(gT, x, 7, 1) is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("width", [1, 2, 3, 7, 10, 17, 64, 512])
def test_row_sums_have_each_shards_own_bits(width, dtype):
    """A bias gradient's per-shard sums, taken in one reduction where the shards are equal, are
    each shard's own ``sum(axis=0)`` on an array of its own; magnitudes spread over many
    binades, so another order of additions would show."""
    rng = np.random.default_rng(width)
    for sizes in SIZES + [(64,) * 4, (100, 101), (300,), (17,) * 6, (2,) * 16]:
        n = sum(sizes)
        g = (rng.standard_normal((n, width)) * np.exp2(rng.integers(-12, 13, (n, width))))
        g = g.astype(dtype)
        with row_segments(sizes) as seg:
            sums = seg.row_sums(g)
        assert sums.shape == (len(sizes), width) and sums.dtype == g.dtype
        start = 0
        for k, rows in enumerate(sizes):
            own = g[start:start + rows].copy().sum(axis=0)
            assert _same(sums[k], own), f"shard {k} of {sizes}, width {width}"
            start += rows


@pytest.mark.parametrize("shape", LINEAR_SHAPES)
def test_the_row_invariance_rule_holds_on_fresh_operands(shape):
    """Where the probe says whole-batch rows are per-shard rows, they are, for other data too;
    where whole-batch rows differ from per-shard products, the probe says so."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((shape[1], shape[0])).astype(np.float32)
    for sizes in SIZES:
        x = rng.standard_normal((sum(sizes), shape[0])).astype(np.float32)
        whole = x @ w.T
        starts = np.cumsum((0,) + sizes[:-1])
        exact = all(_same(whole[s:s + n], x[s:s + n].copy() @ w.T) for s, n in zip(starts, sizes))
        if not exact:
            assert not row_invariant(x, w.T, sizes), f"{shape} {sizes}: probe missed it"
        if row_invariant(x, w.T, sizes):
            assert exact, f"{shape} {sizes}: rows depend on the row count"


def test_a_row_dependent_gemm_is_caught_when_the_rule_is_bypassed(monkeypatch):
    """The linear check can fail: forcing whole-batch GEMMs breaks it wherever this BLAS's
    narrow-output kernel depends on the row count (skipped where it never does)."""
    import dtrain.autograd.segments as segments

    rng = np.random.default_rng(3)
    x = rng.standard_normal((256, 512)).astype(np.float32)
    w = rng.standard_normal((10, 512)).astype(np.float32)
    if all(_same((x @ w.T)[i * 32:(i + 1) * 32], x[i * 32:(i + 1) * 32].copy() @ w.T)
           for i in range(8)):
        pytest.skip("this BLAS is row-invariant for 512->10")
    monkeypatch.setattr(segments, "row_invariant", lambda a, b, sizes, threads=None: True)
    layer = nn.Linear(512, 10)
    g = rng.standard_normal((256, 10)).astype(np.float32)
    with pytest.raises(AssertionError, match="output of shard"):
        _check_kernel(layer, list(layer.parameters()), x, g, (32,) * 8)


CONVS = [
    dict(in_channels=3, out_channels=32, kernel_size=3, padding=1),
    dict(in_channels=32, out_channels=64, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2),
    dict(in_channels=4, out_channels=8, kernel_size=3, padding=1, groups=2, bias=False),
    dict(in_channels=2, out_channels=16, kernel_size=5, padding=2),  # o > 3c: unfolds the input
    dict(in_channels=5, out_channels=3, kernel_size=1),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
]


@pytest.mark.parametrize("spec", CONVS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_conv2d_over_shards_has_per_shard_bits(spec):
    rng = np.random.default_rng(1)
    layer = nn.Conv2d(**spec)
    hw = 8 if spec["in_channels"] > 8 else 9
    for sizes in [(4, 4, 4), (3, 1, 2), (1, 1)]:
        x = rng.standard_normal((sum(sizes), spec["in_channels"], hw, hw)).astype(np.float32)
        with dtrain.no_grad():
            g = rng.standard_normal(layer(dtrain.tensor(x)).shape).astype(np.float32)
        _check_kernel(layer, list(layer.parameters()), x, g, sizes)


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.BatchNorm2d(6), (6, 5, 5)),
    (lambda: nn.BatchNorm1d(7), (7,)),
    (lambda: nn.BatchNorm1d(4), (4, 9)),
    (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)), (3, 8, 8)),
    (lambda: nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Sigmoid(),
                           nn.GELU(), nn.Linear(16, 3)), (12,)),
])
def test_normalization_and_whole_models_over_shards_have_per_shard_bits(make, shape):
    rng = np.random.default_rng(2)
    model = make()
    for sizes in [(5, 5, 5, 5), (3, 4, 3), (2, 2)]:
        x = rng.standard_normal((sum(sizes),) + shape).astype(np.float32)
        with dtrain.no_grad():
            g = rng.standard_normal(model(dtrain.tensor(x)).shape).astype(np.float32)
        _check_kernel(model, list(model.parameters()), x, g, sizes)


def test_batch_norm_statistics_and_running_stats_are_per_shard():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 3, 4, 4)).astype(np.float32)
    sizes = (3, 2, 4)
    whole, alone = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    with row_segments(sizes):
        whole(dtrain.tensor(x))
    start = 0
    for n in sizes:
        alone(dtrain.tensor(x[start:start + n].copy()))
        start += n
    assert whole.num_batches_tracked.item() == alone.num_batches_tracked.item() == 3
    for a, b in zip(whole.state_dict().values(), alone.state_dict().values()):
        assert _same(a._data, b._data)


# ------------------------------------------------------------------ the shard computer
def _computer(job_class, **overrides):
    job = job_class()
    settings = job.settings(**overrides).validate()
    dtrain.manual_seed(settings.seed)
    model = job.model()
    model.to(settings.dtype)
    source = SampleSource(job.train_data(), settings.dtype)
    return ShardComputer(job, settings, model, source), source


def _plan(source, computer, size, step=3):
    ids = np.random.default_rng(step).permutation(len(source))[:size]
    return BatchPlan(step=step, epoch=0, batch=0, sample_ids=ids,
                     micro_shards=computer.settings.micro_shards)


@pytest.mark.parametrize("job", [batched_jobs.MLPDropout, batched_jobs.CNNBatchNorm,
                                 batched_jobs.MLPOddShards])
def test_one_pass_gives_each_shard_the_bits_of_its_own_pass(job):
    computer, source = _computer(job)
    plan = _plan(source, computer, computer.settings.batch_size)
    m = plan.micro_shards
    layouts = [[(k, k + 1) for k in range(m)], [(0, m)], [(0, m // 2), (m // 2, m)],
               [(0, m // 2), (m // 2, (m // 2 + m) // 2)]]
    for nodes in layouts:
        values, refused = computer.batch_values(plan, nodes)
        assert refused is None
        for node in nodes:
            assert same_bits(values[node], computer.node_value(plan, node)), f"node {node}"
    root = (0, m)
    assert same_bits(computer.node_values(plan, [root])[root], computer.node_value(plan, root))
    assert list(computer.verdicts.values()) == [True]


@pytest.mark.parametrize("job,why", [(batched_jobs.LayerNormMLP, "summed over all the shards"),
                                     (batched_jobs.BatchMeanMLP, None),
                                     (batched_jobs.FixedBatchMLP, RuntimeError)])
def test_a_pass_that_mixes_shards_is_refused_and_computed_shard_by_shard(job, why):
    computer, source = _computer(job)
    plan = _plan(source, computer, computer.settings.batch_size)
    if why is RuntimeError:
        with pytest.raises(RuntimeError):
            computer.batch_values(plan, [(0, plan.micro_shards)])
    else:
        _, refused = computer.batch_values(plan, [(0, plan.micro_shards)])
        if why is None:
            assert refused is None  # nothing refuses: only the bit-for-bit check can tell
        else:
            assert why in refused
    root = (0, plan.micro_shards)
    got = computer.node_values(plan, [root])[root]
    assert list(computer.verdicts.values()) == [False]
    assert same_bits(got, computer.node_value(plan, root))
    assert same_bits(computer.node_values(plan, [root])[root], computer.node_value(plan, root))


# ------------------------------------------------------------------ whole runs
GAN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "gan.py")


def _state(model):
    return [v._data.copy() for v in model.state_dict().values()]


@pytest.mark.parametrize("job,overrides", [
    (batched_jobs.MLPDropout, {}),
    (batched_jobs.MLPOddShards, {}),
    (batched_jobs.CNNBatchNorm, {}),
    (GAN, {"max_steps": 6}),
    (dist_jobs.FullBatchLBFGS, {}),
], ids=["mlp-dropout", "mlp-7-shards-of-20", "cnn-batchnorm", "gan-phases", "lbfgs-closure"])
def test_bit_identical_for_0_1_2_3_and_8_workers(job, overrides):
    reference, history = dtrain.fit(job, workers=0, **overrides)
    ref = _state(reference)
    for workers in (1, 2, 3, 8):
        model, h = dtrain.fit(job, workers=workers, **overrides)
        assert all(_same(a, b) for a, b in zip(_state(model), ref)), f"{workers} workers differ"
        assert [r["loss"] for r in h.steps] == [r["loss"] for r in history.steps]
