"""Loops over later axes: programs written with the long axis last ((3, n) positions, per-column data) or in the
middle ((2, n, 3) fields) record as loops, and compute what the unrolled tape computes, to rounding (a loop's sums add in iteration order, the
unrolled tape's reductions in numpy's order), with gradients against central differences."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, assert_matches_unrolled, fd_gradient, magnitude

N = 12  # atoms: 66 pairs, above the loop threshold
I, J = np.triu_indices(N, 1)
W = np.linspace(0.5, 1.5, 3)[:, None]


def lj3(x):
    X = x.reshape(3, N)
    d = X[:, I] - X[:, J]
    r2 = np.sum(d * d, axis=0)
    r6 = 1 / r2 ** 3
    return np.sum(4 * (r6 * r6 - r6))


def weighted_rows(x):
    X = x.reshape(3, N)
    d = (X[:, I] - X[:, J]) * W  # a (3, 1) column broadcast along the loop
    return np.sum(np.sqrt(np.sum(d ** 2, axis=0) + 0.1)) + np.sum(np.tanh(d[1]) * d[0])


def with_vector_and_select(x):
    X = x.reshape(3, N)
    d = X[:, I] - X[:, J]
    s = np.sum(d, axis=0)  # (pairs,): a 1-D loop meets the (3, pairs) one
    e = np.where(d > 0, d * s, -0.5 * d)
    return np.sum(e.T @ np.ones(3)) + np.mean(np.exp(-0.1 * d.sum(axis=0) ** 2))


def morse_columns(x):
    X = x.reshape(3, N)
    d = X[:, I] - X[:, J]
    r = np.sqrt(np.sum(d * d, axis=0, keepdims=True))  # (1, pairs)
    e = np.exp(-(r - 1.2))
    return np.sum((1 - e) ** 2) + np.sum(d / r)


def middle_axis(x):
    """A (2, pairs, 3) field: the long axis in the middle, reduced over the others and indexed around it."""
    X = x.reshape(3, N)
    d = X[:, I] - X[:, J]  # (3, pairs): a loop over the last axis
    f = np.stack([d.T, 0.5 * d.T ** 2])  # (2, pairs, 3): materialised, then a loop over the middle axis
    g = np.sin(f) * np.linspace(1.0, 2.0, 3)  # a trailing (3,) vector broadcast
    r = np.sum(g * g, axis=(0, 2))  # over the short axes: (pairs,)
    return np.sum(np.sqrt(r + 0.1)) + np.sum(g[1, :, 0] * g[0, :, 2]) + np.mean(np.sum(g, axis=1) ** 2)


def middle_axis_keepdims(x):
    X = x.reshape(3, N)
    f = np.stack([X[:, I], X[:, J]]).transpose(0, 2, 1)  # (2, pairs, 3)
    e = np.exp(-0.3 * f)
    s = np.sum(e, axis=1, keepdims=True)  # over the loop: (2, 1, 3)
    t = np.sum(e * e, axis=2, keepdims=True)  # in the body: (2, pairs, 1)
    return np.sum(s ** 2) + np.sum(np.log(t))


CASES = [lj3, weighted_rows, with_vector_and_select, morse_columns, middle_axis, middle_axis_keepdims]


def _point(seed: int) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3), -1).reshape(-1, 3)[:N] * 1.3
    return (grid + np.random.default_rng(seed).uniform(0, 0.1, grid.shape)).T.ravel()


@pytest.mark.parametrize("f", CASES, ids=lambda f: f.__name__)
def test_last_axis_programs_are_loops_and_match_the_unrolled_tape(f):
    x0, x1 = _point(0), _point(1)
    s = tapead.record(f, x0)
    u = tapead.record(f, x0, structured=False)
    assert len(s.maps) >= 1 and len(u) > 100  # a loop, not 66 x 3 scalars
    assert len(s) < 10 if f not in (middle_axis, middle_axis_keepdims) else len(s) * 5 < len(u)  # (np.stack materialises)
    assert_close(u.value(x1), f(x1), 1e-13, scale=magnitude(f(x1)))
    assert_matches_unrolled(f, x1, s, u)
    g = s.gradient(x1)
    v = np.cos(np.arange(x1.size))
    assert_close(s.hvp(x1, v=v), u.hvp(x1, v=v), 1e-11, scale=magnitude(u.hvp(x1, v=v)))
    X = np.stack([x0, x1])
    assert_close(s.gradient(X)[1], g, 1e-13, scale=magnitude(g))


def test_the_two_layouts_give_the_same_loop():
    """Lennard-Jones with positions (n, 3) and (3, n): the same one-loop tape size, the same gradient."""
    def lj(x):
        p = x.reshape(N, 3)
        d = p[I] - p[J]
        r6 = 1 / np.sum(d * d, axis=1) ** 3
        return np.sum(4 * (r6 * r6 - r6))

    x = _point(2)
    rows = tapead.record(lj, x.reshape(3, N).T.ravel())
    cols = tapead.record(lj3, x)
    assert len(rows) == len(cols) == 1 and len(rows.maps[0].body) == len(cols.maps[0].body)
    g_rows = rows.gradient(x.reshape(3, N).T.ravel()).reshape(N, 3).T.ravel()
    assert_close(cols.gradient(x), g_rows, 1e-13, scale=magnitude(g_rows))


def test_anything_else_materialises_and_stays_right():
    def f(x):
        X = x.reshape(3, N)
        d = X[:, I] - X[:, J]
        d[0, 3] = 2.0 * d[1, 4]  # an assignment: the loop becomes ordinary traced scalars
        return np.sum(d.reshape(-1)[::7] ** 2) + np.sum(np.cumsum(d, axis=1))

    x = _point(3)
    t = tapead.record(f, x)
    assert_close(t.value(x), f(x), 1e-13, scale=magnitude(f(x)))
    assert_close(t.gradient(x), fd_gradient(f, x), 1e-7, scale=magnitude(fd_gradient(f, x)))


def test_stacking_loops_along_the_loop_axis_is_a_loop_over_the_second_axis():
    def f(x):
        a = np.sin(x[:300])
        b = np.cos(x[300:]) * x[:300]
        S = np.stack([a, b * b, a * b])  # (3, 300): the loop now over axis 1
        T = np.stack([np.stack([a, b], -1), np.stack([b, a], -1)])  # (2, 300, 2): over the middle axis
        return np.sum(S ** 2 * np.array([[1.0], [2.0], [3.0]])) + np.sum(np.exp(-T) * T[1, :, :1]) + \
            np.sum(S[1] * S[2]) + np.sum(np.sum(T, axis=0) ** 2)

    x = np.random.default_rng(6).normal(size=600)
    s, u = tapead.record(f, x), tapead.record(f, x, structured=False)
    assert len(s) < 10 and len(u) > 5000
    assert_matches_unrolled(f, x * 0.9, s, u)
    v = np.cos(np.arange(x.size))
    assert_close(s.hvp(x, v=v), u.hvp(x, v=v), 1e-11, scale=magnitude(u.hvp(x, v=v)))
