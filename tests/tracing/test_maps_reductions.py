"""Reductions of loop arrays over every axis, with and without keepdims, broadcast back against the loop.

Each structured mode must compute what the unrolled tape computes: values to rounding, gradients to rounding
(the order of additions differs between a loop's sum output and a chain of scalar additions).
"""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, magnitude

FUNCS = [np.sum, np.mean, np.max, np.min, np.std, np.var, np.prod]
AXES = [0, 1, None, (0, 1), -1]


@pytest.mark.parametrize("func", FUNCS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("rows", [3, 70])
def test_keepdims_reductions_of_loops(func, axis, rows):
    def f(x):
        a = np.sin(x.reshape(rows, 2)) + 1.5
        r = func(a, axis=axis, keepdims=True)
        return np.sum(r * a) + np.sum(func(a, axis=axis))

    x = np.linspace(0.1, 2.0, 2 * rows)
    want = f(x)
    u = tapead.record(f, x, structured=False)
    for structured in (None, True):
        t = tapead.record(f, x, structured=structured)
        assert_close(t.value(x), want, 1e-13, scale=magnitude(want))
        assert_close(t.gradient(x), u.gradient(x), 1e-12, scale=magnitude(u.gradient(x)))


@pytest.mark.parametrize("structured", [False, None, True])
def test_keepdims_sum_of_a_one_dimensional_loop(structured):
    def f(x):
        a = np.sin(x)
        return np.sum(a.sum(axis=0, keepdims=True) * a) + np.sum(np.max(a, axis=0, keepdims=True))

    x = np.linspace(0.0, 1.0, 140)
    t = tapead.record(f, x, structured=structured)
    assert_close(t.value(x), f(x), 1e-13, scale=magnitude(f(x)))
    g = np.cos(x) * 2 * np.sum(np.sin(x))
    g[np.argmax(np.sin(x))] += np.cos(x[np.argmax(np.sin(x))])
    assert_close(t.gradient(x), g, 1e-12, scale=magnitude(g))
