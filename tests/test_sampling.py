"""multinomial/bernoulli/normal, finfo/iinfo, set_num_threads, and the errors for torch names
dtrain does not have: shapes, dtypes and limits as torch's, frequencies as the weights say."""

import numpy as np
import pytest

import dtrain

try:
    import torch
except ImportError:
    torch = None


def test_multinomial_without_replacement_frequencies():
    """The first draw follows the weights; the second the rest (the exponential-keys trick)."""
    dtrain.manual_seed(2)
    draws = dtrain.multinomial(dtrain.tensor([1.0, 2.0, 1.0]).expand(4000, 3), 2)
    first = np.bincount(draws[:, 0].numpy(), minlength=3) / 4000
    np.testing.assert_allclose(first, [0.25, 0.5, 0.25], atol=0.03)
    assert (draws[:, 0] != draws[:, 1]).all()


def test_multinomial_shapes_and_frequencies():
    dtrain.manual_seed(0)
    weights = dtrain.tensor([[1.0, 0.0, 3.0], [2.0, 2.0, 0.0]])
    many = dtrain.multinomial(weights, 4000, replacement=True)
    assert many.shape == (2, 4000) and many.dtype == dtrain.int64
    counts = np.stack([np.bincount(row, minlength=3) for row in many.numpy()]) / 4000
    np.testing.assert_allclose(counts, [[0.25, 0.0, 0.75], [0.5, 0.5, 0.0]], atol=0.03)
    once = weights.multinomial(2)
    assert sorted(once[1].tolist()) == [0, 1] and sorted(once[0].tolist()) == [0, 2]
    assert dtrain.multinomial(dtrain.tensor([0.2, 0.8]), 1).shape == (1,)
    # as torch: without replacement, zero weights are drawn last once the others are used up
    assert dtrain.multinomial(dtrain.tensor([0.0, 1.0, 0.0]), 3).tolist()[0] == 1


@pytest.mark.parametrize("weights, n, replacement, message", [
    ([0.5, 0.5], 3, False, "cannot sample n_sample > prob_dist.size"),
    ([1.0, -1.0], 1, True, "element < 0"),
    ([0.0, 0.0], 1, True, "sum of probabilities <= 0"),
])
def test_multinomial_errors_vs_torch(weights, n, replacement, message):
    with pytest.raises(RuntimeError, match=message):
        dtrain.multinomial(dtrain.tensor(weights), n, replacement)
    if torch is not None:
        with pytest.raises(RuntimeError, match=message):
            torch.multinomial(torch.tensor(weights), n, replacement)


def test_bernoulli_and_normal():
    dtrain.manual_seed(1)
    draws = dtrain.bernoulli(dtrain.full((200, 50), 0.3))
    assert draws.dtype == dtrain.float32 and set(np.unique(draws.numpy())) <= {0.0, 1.0}
    assert abs(draws.mean().item() - 0.3) < 0.02
    assert dtrain.rand(3, dtype=dtrain.float64).bernoulli().dtype == dtrain.float64
    noise = dtrain.normal(dtrain.full((100, 100), 2.0), 0.5)
    assert noise.shape == (100, 100) and abs(noise.mean().item() - 2.0) < 0.02
    assert abs(noise.std().item() - 0.5) < 0.02
    assert dtrain.normal(0.0, 1.0, size=(2, 3)).shape == (2, 3)
    assert dtrain.normal(0.0, dtrain.ones(4)).shape == (4,)
    with pytest.raises(TypeError, match="size"):
        dtrain.normal(0.0, 1.0)


@pytest.mark.skipif(torch is None, reason="needs torch")
def test_finfo_iinfo_vs_torch():
    for name in ("float16", "float32", "float64"):
        ours, theirs = dtrain.finfo(getattr(dtrain, name)), torch.finfo(getattr(torch, name))
        for field in ("bits", "eps", "max", "min", "tiny", "resolution"):
            assert float(getattr(ours, field)) == pytest.approx(float(getattr(theirs, field)),
                                                                rel=1e-3), (name, field)
    assert dtrain.finfo().eps == torch.finfo().eps
    for name in ("uint8", "int8", "int16", "int32", "int64"):
        ours, theirs = dtrain.iinfo(getattr(dtrain, name)), torch.iinfo(getattr(torch, name))
        assert (ours.min, ours.max, ours.bits) == (theirs.min, theirs.max, theirs.bits)


def test_finfo_without_torch():
    assert dtrain.finfo(dtrain.float32).eps == np.finfo(np.float32).eps
    assert dtrain.iinfo(dtrain.int64).max == 2**63 - 1


def test_set_num_threads():
    before = dtrain.get_num_threads()
    try:
        dtrain.set_num_threads(1)
        assert dtrain.get_num_threads() == 1
    finally:
        dtrain.set_num_threads(before)
    with pytest.raises(RuntimeError, match="positive"):
        dtrain.set_num_threads(0)


@pytest.mark.parametrize("name, words", [
    ("compile", "nothing to compile"), ("amp", "mixed precision"), ("autocast", "mixed"),
    ("jit", "onnx"), ("linalg", "numpy.linalg"), ("distributions", "multinomial"),
])
def test_missing_torch_names_say_why(name, words):
    with pytest.raises(AttributeError, match=f"no attribute '{name}': .*{words}"):
        getattr(dtrain, name)
    assert not hasattr(dtrain, name)
    with pytest.raises(AttributeError, match=r"no attribute 'no_such_thing'$"):
        dtrain.no_such_thing
