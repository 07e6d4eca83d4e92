"""Hessians along the linear front (``tapead/transforms/front.py``): a program whose nonlinear part reads the
inputs through fewer affine combinations than inputs (a pair through ``p_i - p_j``, an element through edge
vectors) is swept once per combination. Checked against the unit sweeps (the algorithm it replaces; bitwise where
every entry is one term), against finite differences of the gradient, for exact symmetry, for the cut it finds,
and for the value/gradient/Hessian tape agreeing with the Hessian tape and the gradient kernel bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tapead
from tapead.ir.structure import scalar
from tapead.transforms import ad, front, higher

from check import assert_close, fd_hessian, magnitude
from functions import lj, lj_start


def _unit_sweeps(monkeypatch, f, x, **record):
    """The Hessian the unit sweeps give (the cut turned off while a fresh tape derives it)."""
    with monkeypatch.context() as m:
        m.setattr(front, "cut", lambda g, n, outputs: None)
        return tapead.record(f, x, **record).hessian(x)


def _cut_of(f, x):
    g = scalar(ad.value_and_grad(tapead.record(f, x).tape))
    return front.cut(g, x.size, g.outputs[1:])


def pair(x):
    d = x[:3] - x[3:]
    r2 = np.sum(d * d)
    return 1.0 / r2 ** 6 - 2.0 / r2 ** 3


def element(x):
    """A neo-Hookean triangle: nodes a, b, c read through the edge vectors b - a and c - a (4 combinations of 6)."""
    a, b, c = x[0:2], x[2:4], x[4:6]
    Ds = np.stack([b - a, c - a], -1)
    F = Ds @ np.array([[1.1, 0.2], [-0.1, 0.9]])
    J = np.linalg.det(F)
    return 0.5 * (np.sum(F * F) - 2) - np.log(J) + 0.5 * np.log(J) ** 2


def element_plain(x):
    """The same energy in the edge vectors themselves (F = Ds)."""
    a, b, c = x[0:2], x[2:4], x[4:6]
    F = np.stack([b - a, c - a], -1)
    J = np.linalg.det(F)
    return 0.5 * (np.sum(F * F) - 2) - np.log(J) + 0.5 * np.log(J) ** 2


def mixed(x):
    """A combination that also reads an input directly (z2 = z1 + x[4]), a scaled copy of a combination (2 z1:
    no new variable), an affine term returned as is, and a product with a parameter-free constant."""
    z1 = x[0] - 3.0 * x[1]
    z2 = z1 + x[4]
    return np.sin(z1) * np.exp(2.0 * z1 / 7.0) + z2 ** 3 + x[2] + 0.5 * x[3] + np.cos(z2 - 0.25 * z1)


PAIR_X = np.array([0.1, -0.3, 0.2, 1.0, 0.4, -0.5])
ELEMENT_X = np.array([0.0, 0.0, 1.05, 0.02, 0.1, 0.95])
MIXED_X = np.array([0.3, -0.2, 0.7, 1.1, -0.4])


@pytest.mark.parametrize("f, x, k", [(pair, PAIR_X, 3), (element_plain, ELEMENT_X, 4), (mixed, MIXED_X, 2)])
def test_the_cut_is_the_combinations_the_nonlinear_part_reads(f, x, k):
    groups, L = _cut_of(f, x)
    assert len(groups) == k
    assert L.shape == (k, x.size)


def test_a_loop_recomputing_its_combinations_sweeps_each_once(monkeypatch):
    """The reverse of a loop recomputes its body: each combination is computed twice, one direction."""
    rng = np.random.default_rng(3)
    I, J = rng.integers(0, 20, 18), rng.integers(20, 40, 18)

    def f(x):
        d = x[I] - x[J]
        return np.sum(np.sin(d) * d) * (1.0 + np.sum(d) ** 2)

    x = rng.uniform(-1.0, 1.0, 40)
    t = tapead.record(f, x, structured=True)
    assert t.tape.maps
    g = scalar(ad.value_and_grad(t.tape))
    groups, L = front.cut(g, x.size, g.outputs[1:])
    assert len(groups) == len({(int(i), int(j)) for i, j in zip(I, J)})
    assert any(len(group) > 1 for group in groups)
    H = t.hessian(x)
    assert np.array_equal(H, H.T)
    assert_close(H, _unit_sweeps(monkeypatch, f, x, structured=True), rtol=1e-12, scale=magnitude(H))
    assert_close(H, fd_hessian(t.gradient, x), rtol=1e-6)


def test_dense_combinations_keep_the_unit_sweeps():
    """15 dense combinations of 20 inputs: fewer sweeps, but every entry would add 15 terms."""
    A = np.random.default_rng(0).standard_normal((15, 20))
    assert _cut_of(lambda x: np.sum(np.sin(A @ x)) ** 2, np.linspace(-1.0, 1.0, 20)) is None


def test_no_cut_when_the_inputs_are_read_directly():
    assert _cut_of(lambda x: np.sum(np.sin(x) * x), np.arange(1.0, 5.0)) is None
    assert _cut_of(lambda x: np.sum((x[1:] - x[:-1]) ** 4), np.arange(1.0, 6.0) ** 1.5) is None  # 4 of 5: not worth it


@pytest.mark.parametrize("f, x", [(pair, PAIR_X), (element, ELEMENT_X), (element_plain, ELEMENT_X), (mixed, MIXED_X),
                                  (lj, lj_start(0))])
def test_front_hessian_matches_unit_sweeps_and_differences(monkeypatch, f, x):
    t = tapead.record(f, x)
    H = t.hessian(x)
    assert np.array_equal(H, H.T)
    H0 = _unit_sweeps(monkeypatch, f, x)
    assert_close(H, H0, rtol=1e-13, scale=magnitude(H0))
    assert_close(H, fd_hessian(t.gradient, x), rtol=1e-6)


@pytest.mark.parametrize("f, x", [(pair, PAIR_X), (lj, lj_start(0))])
def test_one_term_entries_keep_the_unit_sweeps_bits(monkeypatch, f, x):
    """Every entry of a pair's Hessian is one sweep's entry or its negation: the same bits as the unit sweeps."""
    assert np.array_equal(tapead.record(f, x).hessian(x), _unit_sweeps(monkeypatch, f, x))


def test_fewer_operations_than_the_unit_sweeps(monkeypatch):
    t = tapead.record(pair, PAIR_X)
    ops = len(higher.hessian_tape(t.tape).code)
    with monkeypatch.context() as m:
        m.setattr(front, "cut", lambda g, n, outputs: None)
        ops_before = len(higher.hessian_tape(tapead.record(pair, PAIR_X).tape).code)
    assert ops < 0.7 * ops_before


@pytest.mark.parametrize("f, x", [(pair, PAIR_X), (element, ELEMENT_X), (mixed, MIXED_X)])
def test_value_gradient_hessian_agrees_bitwise(f, x):
    t = tapead.record(f, x)
    v, g, H = t.value_gradient_hessian(x)
    v0, g0 = t.value_and_gradient(x)
    assert v == v0 and np.array_equal(g, g0)
    assert np.array_equal(H, t.hessian(x))


def test_lagrangian_hessian_of_a_vector_function(monkeypatch):
    def two(x):
        d = x[:2] - x[2:]
        return np.stack([np.sum(d * d) ** 2, np.sin(d[0] * d[1])])
    x, w = np.array([0.3, -0.1, 1.2, 0.5]), np.array([0.7, -1.3])
    tape = tapead.record(two, x).tape
    g = scalar(ad.vjp(tape))
    assert front.cut(g, x.size, g.outputs) is not None  # (w is an input the cut does not follow)
    got = tapead.evaluate(higher.hessian_tape(tape, weights=True), x, w)
    assert np.array_equal(got, got.T)
    assert_close(got, tapead.record(lambda z: w @ two(z), x).hessian(x), rtol=1e-13, scale=magnitude(got))
    assert_close(got, fd_hessian(tapead.record(lambda z: w @ two(z), x).gradient, x), rtol=1e-6)


def test_guards_keep_the_unit_sweeps(monkeypatch):
    def branchy(x):
        d = x[:2] - x[2:]
        r = np.sum(d * d)
        return r ** 2 if r > 1.0 else np.cos(r)
    x = np.array([0.3, -0.1, 1.2, 0.5])
    t = tapead.record(branchy, x)
    assert_close(t.hessian(x), fd_hessian(t.gradient, x), rtol=1e-6)


def test_sparse_and_hvp_agree_with_the_dense_hessian():
    x = lj_start(0)[:18]
    t = tapead.record(lj, x)
    H = t.hessian(x)
    v = np.linspace(-1.0, 1.0, x.size)
    assert_close(t.hvp(x, v=v), H @ v, rtol=1e-12, scale=magnitude(H))
    rows, cols, vals = t.sparse_hessian(x)
    S = np.zeros_like(H)
    S[rows, cols] = vals
    assert_close(S, H, rtol=1e-13, scale=magnitude(H))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_random_programs_of_affine_combinations(seed):
    """Random programs reading n inputs through k < n random combinations (integer and fractional weights,
    combinations of combinations, some read directly), then a random nonlinear tail: the front Hessian equals
    the unit sweeps' to rounding and finite differences to their accuracy."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 8))
    k = int(rng.integers(1, n))
    W = rng.choice([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], size=(k, n))
    ops = rng.integers(0, 5, size=k)

    def f(x):
        z = [W[i] @ x for i in range(k)]
        if k > 1:
            z[1] = z[1] + 2.0 * z[0]
        total = 0.0
        for i, (zi, op) in enumerate(zip(z, ops)):
            zj = z[(i + 1) % k]
            total = total + [np.sin(zi) * zj, zi * zi * zj, np.exp(0.3 * zi), np.tanh(zi - zj), zi / (2.0 + zj * zj)][op]
        return total

    x = rng.uniform(-1.0, 1.0, n)
    t = tapead.record(f, x)
    H = t.hessian(x)
    assert np.array_equal(H, H.T)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(front, "cut", lambda g, n, outputs: None)
        H0 = tapead.record(f, x).hessian(x)
    assert_close(H, H0, rtol=1e-12, scale=magnitude(H0))
    assert_close(H, fd_hessian(t.gradient, x), rtol=1e-6)
