"""Parameter ranges (issue #13): the cut is fixed by the model and ``param_ranges``, global
quantities are summed range by range in one order, and the trainer stays bit-identical for any
worker count with ranges."""

import os
import sys

import numpy as np
import pytest

import dtrain
from dtrain import nn, optim
from dtrain.distributed.param_ranges import model_ranges
from dtrain.distributed.range_sums import RangeSums, add_in_range_order
from dtrain.nn import global_sums

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
import dist_jobs
import service_jobs
from procs import dtrain_processes


def _model(seed: int = 0):
    dtrain.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3), nn.Tanh(),
                         nn.Linear(3, 40))


def _covered(ranges, sizes):
    """Every element of every parameter exactly once, in flat order."""
    seen = [(piece.param, piece.start, piece.stop) for pieces in ranges.ranges
            for piece in pieces]
    expected_next = {}
    for param, start, stop in seen:
        assert start == expected_next.get(param, 0) and stop > start
        expected_next[param] = stop
    assert expected_next == {i: n for i, n in enumerate(sizes) if n}
    params_in_order = [param for param, _, _ in seen]
    assert params_in_order == sorted(params_in_order)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13])
def test_the_cut_covers_every_element_once_and_is_balanced_by_bytes(count):
    model = _model()
    sizes = [p._data.size for p in model.parameters()]
    ranges = model_ranges(model, [optim.SGD(model.parameters(), lr=0.1)], count)
    assert len(ranges) == count
    _covered(ranges, sizes)
    per_range = [sum(piece.size for piece in pieces) for pieces in ranges.ranges]
    assert max(per_range) - min(per_range) <= 1  # element ranges: balanced to one element
    # fixed by the model and the setting alone: another build, another seed, the same cut
    assert model_ranges(_model(seed=3), [optim.Adam(_model().parameters())], count) == ranges


def test_whole_tensor_optimizers_keep_their_tensors_whole():
    model = _model()
    sizes = [p._data.size for p in model.parameters()]
    ranges = model_ranges(model, [optim.Adafactor(model.parameters())], 4)
    _covered(ranges, sizes)
    assert all(ranges.is_whole(piece) for pieces in ranges.ranges for piece in pieces)
    split = model_ranges(model, [optim.SGD(model.parameters(), lr=0.1)], 4)
    assert not all(split.is_whole(piece) for pieces in split.ranges for piece in pieces)


def test_frozen_parameters_are_not_cut():
    model = _model()
    model[0].weight.requires_grad_(False)
    ranges = model_ranges(model, [], 3)
    assert all(piece.param != 0 for pieces in ranges.ranges for piece in pieces)
    assert ranges.sizes[0] == 160


def test_a_model_smaller_than_its_ranges_gets_empty_ranges():
    model = nn.Linear(2, 1)  # 3 elements in 2 tensors
    ranges = model_ranges(model, [], 8)
    assert len(ranges) == 8
    _covered(ranges, ranges.sizes)
    assert sum(1 for pieces in ranges.ranges if pieces) == 3
    whole = model_ranges(model, [optim.Adafactor(model.parameters())], 3)
    assert sum(1 for pieces in whole.ranges if pieces) == 2
    assert all(whole.is_whole(piece) for pieces in whole.ranges for piece in pieces)
    frozen = nn.Linear(2, 1).requires_grad_(False)
    assert model_ranges(frozen, [], 4).ranges == ((),) * 4


def test_empty_ranges_leave_the_sums_those_of_the_filled_ones():
    """More ranges than elements: the result equals cutting into exactly as many as there
    are elements, so a tiny model trains under the default setting."""
    model = nn.Linear(2, 1)
    params = list(model.parameters())
    a = np.array([1e8, 1.0, -1e8], dtype=np.float32)
    b = np.array([1.0, 3.0, 1.0], dtype=np.float32)
    wide = RangeSums(model_ranges(model, [], 8), params)
    exact = RangeSums(model_ranges(model, [], 3), params)
    assert wide.dot(a, b, params).tobytes() == exact.dot(a, b, params).tobytes()
    _, history = dtrain.fit(dist_jobs.FullBatchLBFGS, workers=0, param_ranges=10_000,
                            max_steps=1)
    assert np.isfinite(history.loss[0])


def _vectors(model, dtype, seed=1):
    rng = np.random.default_rng(seed)
    params = list(model.parameters())
    n = sum(p._data.size for p in params)
    return params, (rng.standard_normal(n) * 3).astype(dtype), rng.standard_normal(n).astype(dtype)


def _held_apart(ranges, params, vector):
    """What each range's owner holds: its own contiguous copy of its elements, piece order."""
    offsets = np.cumsum([0] + [p._data.size for p in params])
    return [np.concatenate([vector[offsets[piece.param] + piece.start:
                                   offsets[piece.param] + piece.stop].copy()
                            for piece in pieces]) for pieces in ranges.ranges]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("count", [1, 3, 7])
def test_global_quantities_are_the_same_bits_from_full_vectors_or_held_ranges(dtype, count):
    model = _model()
    params, a, b = _vectors(model, dtype)
    ranges = model_ranges(model, [], count)
    sums = RangeSums(ranges, params)
    held_a, held_b = _held_apart(ranges, params, a), _held_apart(ranges, params, b)
    dot = add_in_range_order([np.einsum("i,i->", x, y) for x, y in zip(held_a, held_b)],
                             np.dtype(dtype))
    total = add_in_range_order([np.add.reduce(x) for x in held_a], np.dtype(dtype))
    assert sums.dot(a, b, params).tobytes() == dot.tobytes()
    assert sums.sum(a, params).tobytes() == total.tobytes()
    assert sums.dot(a, b, params).dtype == dtype
    if count == 1:  # one range: the flat single-vector arithmetic
        assert dot.tobytes() == global_sums.FLAT.dot(a, b, params).tobytes()
        assert total.tobytes() == global_sums.FLAT.sum(a, params).tobytes()
    # an optimizer listing the parameters in another order: the same ranges, the same bits
    order = [2, 0, 5, 1, 4, 3]
    offsets = np.cumsum([0] + [p._data.size for p in params])
    shuffled = [params[i] for i in order]
    a2 = np.concatenate([a[offsets[i]:offsets[i + 1]] for i in order])
    b2 = np.concatenate([b[offsets[i]:offsets[i + 1]] for i in order])
    assert sums.dot(a2, b2, shuffled).tobytes() == dot.tobytes()


def test_clip_grad_norm_uses_the_installed_sums_and_pytorchs_norm_otherwise():
    model = _model()
    params, a, _ = _vectors(model, np.float32)
    offsets = np.cumsum([0] + [p._data.size for p in params])

    def set_grads():
        for i, p in enumerate(params):
            p.grad = dtrain.tensor(a[offsets[i]:offsets[i + 1]].reshape(p.shape).copy())

    set_grads()
    flat_norm = nn.utils.clip_grad_norm_(model.parameters(), 1e9)
    per = [np.linalg.norm(a[offsets[i]:offsets[i + 1]]) for i in range(len(params))]
    assert flat_norm._data.tobytes() == np.float32(np.linalg.norm(np.float32(per))).tobytes()
    ranges = model_ranges(model, [], 5)
    sums = RangeSums(ranges, params)
    set_grads()
    with global_sums.using(sums):
        ranged = nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    expected = np.sqrt(sums.dot(a, a, params))
    assert ranged._data.tobytes() == expected.tobytes()
    assert global_sums.current() is global_sums.FLAT  # uninstalled on leaving
    clipped = np.concatenate([p.grad._data.ravel() for p in params])
    np.testing.assert_allclose(np.linalg.norm(clipped), 0.5, rtol=1e-5)


def _params(model):
    return [p._data.copy() for p in model.parameters()]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("job,overrides", [
    (service_jobs.Clipped, {"param_ranges": 5}),
    (dist_jobs.FullBatchLBFGSWolfe, {"param_ranges": 3}),
    (dist_jobs.FullBatchCG, {"param_ranges": 3, "epochs": 2}),
], ids=["clip_grad_norm", "lbfgs-closure", "nonlinear-cg-closure"])
def test_trainer_with_ranges_is_bit_identical_for_0_1_2_3_workers(job, overrides,
                                                                  monkeypatch):
    layouts = []
    find_layout = RangeSums._find_layout
    monkeypatch.setattr(RangeSums, "_find_layout",
                        lambda self, params: layouts.append(len(self.ranges))
                        or find_layout(self, params))
    reference, history = dtrain.fit(job, workers=0, **overrides)
    assert layouts and set(layouts) == {overrides["param_ranges"]}  # summed range by range
    for workers in (1, 2, 3):
        model, h = dtrain.fit(job, workers=workers, **overrides)
        assert _same(_params(model), _params(reference)), f"{workers} workers differ"
        assert [r["loss"] for r in h.steps] == [r["loss"] for r in history.steps]
    assert dtrain_processes(service_jobs.__file__) == []


def _direct_run(make_optimizer, sums):
    """A few closure steps of an optimizer outside any trainer, with ``sums`` installed."""
    job = dist_jobs.FullBatchLBFGS()
    dtrain.manual_seed(job.seed)
    model = job.model().double()
    opt = make_optimizer(model)
    x, y = job.train_data()
    xb, yb = dtrain.tensor(x, dtype=dtrain.float64), dtrain.tensor(y)

    def closure():
        opt.zero_grad()
        loss = job.loss(model(xb), yb)
        loss.backward()
        return loss

    ranges = sums(model) if sums else None
    for _ in range(3):
        if ranges is None:
            opt.step(closure)
        else:
            with global_sums.using(ranges):
                opt.step(closure)
    return _params(model)


@pytest.mark.parametrize("make_optimizer", [
    lambda m: optim.LBFGS(m.parameters(), lr=0.5, max_iter=6),
    lambda m: optim.LBFGS(m.parameters(), max_iter=6, line_search_fn="strong_wolfe"),
    lambda m: optim.NonlinearCG(m.parameters(), max_iter=6),
], ids=["lbfgs", "lbfgs-wolfe", "nonlinear-cg"])
def test_one_range_is_the_flat_arithmetic_and_more_ranges_the_same_maths(make_optimizer):
    flat = _direct_run(make_optimizer, None)

    def ranged(count):
        return lambda model: RangeSums(model_ranges(model, [], count), list(model.parameters()))

    assert _same(_direct_run(make_optimizer, ranged(1)), flat)  # bit for bit
    for a, b in zip(_direct_run(make_optimizer, ranged(4)), flat):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
