"""torch's extra math (elementwise functions, prod/logsumexp, bmm/outer/dot/einsum, tril/triu,
flip/roll, any/all/isclose): values and gradients against torch and finite differences."""

import os
import sys

import numpy as np
import pytest

import dtrain

sys.path.insert(0, os.path.dirname(__file__))
from helpers import check, torch

POSITIVE = np.array([[0.5, 1.5, 2.0], [3.0, 0.25, 1.1]])
NO_TIES = np.array([[0.3, -1.7, 2.2], [-0.6, 1.4, -2.9]])  # no .5 ties, far from integers

UNARY = ["sin", "cos", "log1p", "expm1", "log2", "log10", "square", "reciprocal", "rsqrt"]


@pytest.mark.parametrize("name", UNARY)
def test_unary_functions_and_methods(name):
    check(lambda m, x: getattr(m, name)(x), POSITIVE.copy())
    check(lambda m, x: getattr(x, name)(), POSITIVE.copy())


@pytest.mark.parametrize("name", ["floor", "ceil", "trunc", "round"])
def test_step_functions(name):
    check(lambda m, x: getattr(m, name)(x), NO_TIES.copy(), fd=False)
    check(lambda m, x: getattr(x, name)(), NO_TIES.copy(), fd=False)


def test_round_half_even_and_decimals():
    check(lambda m, x: m.round(x, decimals=1), NO_TIES.copy(), fd=False)
    got = dtrain.round(dtrain.tensor([0.5, 1.5, 2.5, -0.5]))
    assert got.tolist() == [0.0, 2.0, 2.0, -0.0]
    assert dtrain.floor(dtrain.tensor([3, -2])).tolist() == [3, -2]


def test_prod():
    check(lambda m, x: m.prod(x), (2, 3))
    check(lambda m, x: x.prod(1), (2, 3))
    check(lambda m, x: x.prod(0, keepdim=True), (2, 3))
    check(lambda m, x: x.prod(1), np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 4.0]]))  # zeros


def test_logsumexp():
    check(lambda m, x: m.logsumexp(x, 1), (3, 4))
    check(lambda m, x: x.logsumexp(0, keepdim=True), (3, 4))
    big = dtrain.logsumexp(dtrain.tensor([1000.0, 1000.0]), 0).item()
    assert big == pytest.approx(1000 + np.log(2))


def test_matrix_products():
    check(lambda m, a, b: m.bmm(a, b), (2, 3, 4), (2, 4, 5))
    check(lambda m, a, b: a.bmm(b), (2, 3, 4), (2, 4, 5))
    check(lambda m, a, b: m.outer(a, b), (3,), (4,))
    check(lambda m, a, b: a.dot(b), (3,), (3,))
    with pytest.raises(RuntimeError, match="3D"):
        dtrain.bmm(dtrain.ones(2, 3), dtrain.ones(3, 2))


@pytest.mark.parametrize("equation, shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("ij->ji", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("ij,j", [(2, 3), (3,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("bi,bi->b", [(3, 4), (3, 4)]),
])
def test_einsum(equation, shapes):
    check(lambda m, *xs: m.einsum(equation, *xs), *shapes)


def test_einsum_list_form_and_refusals():
    a, b = dtrain.ones(2, 3), dtrain.ones(3, 2)
    assert dtrain.einsum("ij,jk->ik", [a, b]).tolist() == [[3.0, 3.0], [3.0, 3.0]]
    with pytest.raises(NotImplementedError, match=r"\.\.\."):
        dtrain.einsum("...ij->...ji", a)
    with pytest.raises(NotImplementedError, match="repeated index"):
        dtrain.einsum("ii->i", dtrain.ones(2, 2))


@pytest.mark.parametrize("diagonal", [0, 1, -1])
def test_triangles(diagonal):
    check(lambda m, x: m.tril(x, diagonal), (3, 4))
    check(lambda m, x: x.triu(diagonal), (2, 3, 4))


def test_causal_mask_idiom():
    """The attention mask of minGPT-style code: tril of ones, then masked_fill."""
    def case(m):
        scores = m.arange(9.0).view(3, 3)
        mask = m.tril(m.ones(3, 3)).view(1, 3, 3)
        return scores.view(1, 3, 3).masked_fill(mask == 0, float("-inf")).softmax(-1)
    out = case(dtrain)
    assert out[0, 0].tolist() == [1.0, 0.0, 0.0]
    if torch is not None:
        np.testing.assert_allclose(out._data, case(torch).numpy(), rtol=1e-6)


def test_flip_and_roll():
    check(lambda m, x: m.flip(x, [0, 1]), (2, 3))
    check(lambda m, x: x.flip(1), (2, 3))
    check(lambda m, x: x.flip(0, 1), (2, 3))
    check(lambda m, x: m.roll(x, 1), (2, 3))
    check(lambda m, x: x.roll(-1, 1), (2, 3))
    check(lambda m, x: m.roll(x, (1, 2), (0, 1)), (2, 3))


def test_any_all_isclose():
    def case(m):
        x = m.tensor([[True, False], [False, False]])
        a = m.tensor([1.0, 2.0, 3.0])
        return (m.any(x), x.any(1), x.all(0, keepdim=True), m.all(x), m.isclose(a, a + 1e-9),
                a.isclose(a + 1))
    ours = case(dtrain)
    assert [t.tolist() for t in ours] == [True, [True, False], [[False, False]], False,
                                          [True] * 3, [False] * 3]
    if torch is not None:
        assert [t.tolist() for t in ours] == [t.tolist() for t in case(torch)]
