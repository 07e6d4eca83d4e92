"""NaN-safe selects through compositions: several selects on one value, selects under max/min, selects in loops.

The rule (README, "Branch-free selects, NaN-safe"): a derivative that reaches a value only through branches that
were not taken is an exact 0, whatever the branch's own partials are (NaN, infinite), to every order, in every
``structured`` mode. Random compositions are checked against central differences wherever those are stable, and
the three ``structured`` modes against each other.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import tapead
from check import assert_close, magnitude

MODES = (False, None, True)


@pytest.mark.parametrize("f, x, want", [
    (lambda x: np.sum(np.where(x > 0, np.sqrt(x), 0.0) + np.where(x > 1, np.sqrt(x), 0.0)),
     [-1.0, 0.5, 4.0], [0.0, 0.5 / np.sqrt(0.5), 0.5]),
    (lambda u: np.min(np.where(u > 0, np.sqrt(u), 0.0)), [1.0, -1.0, 3.0], [0.0, 0.0, 0.0]),
    (lambda u: np.max(np.cbrt(u[[0, 2, 0]])), [0.0, 0.25, 1.0], [0.0, 0.0, 1.0 / 3.0]),
    (lambda x: np.std(x[:1]) + np.sum(x), [1.0, 2.0, 3.0], [1.0, 1.0, 1.0]),
    (lambda x: np.sum(np.std(x.reshape(3, 1), axis=1)), [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]),
    (lambda x: np.std(x), [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]),
    (lambda x: np.sum(np.var(x.reshape(1, 3), axis=0)), [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]),
])
@pytest.mark.parametrize("structured", MODES)
def test_reported_compositions_have_exact_zero_derivatives(f, x, want, structured):
    x = np.array(x)
    t = tapead.record(f, x, structured=structured)
    assert_close(t.gradient(x), np.array(want), 1e-15)
    v = np.array([0.3, -1.1, 0.7])
    for got in (t.hvp(x, v=v), t.hessian(x), [t.jvp(x, v=e) for e in np.eye(3)]):
        assert not np.isnan(got).any()
    assert_close(np.array([t.jvp(x, v=e) for e in np.eye(3)]), np.array(want), 1e-15)


def test_nan_in_an_input_the_output_ignores_stays_out_of_loop_derivatives():
    n = 70
    W = np.array([[0.5, -1.0], [2.0, 0.25]])

    def f(u):
        a = np.stack([u, u * u], axis=1) @ W
        return (a[:, 0] * a[:, 1])[1]

    u = np.linspace(0.1, 1.0, n)
    u[-1] = np.nan
    grads = [tapead.record(f, u, structured=s).gradient(u) for s in MODES]
    assert grads[0][-1] == 0.0 and not np.isnan(grads[0]).any()
    for g in grads[1:]:
        assert np.array_equal(g, grads[0])
    batch = tapead.record(f, u).gradient(np.stack([u, u]))
    assert np.array_equal(batch[1], grads[0])


def test_masked_contributions_united_across_a_loop_boundary():
    """A gather with repeated indices under a select inside a loop: the slot each index reads receives two
    masked cotangents; its own partial (sqrt at 0) is infinite, the derivative 0, in every mode."""
    index = np.repeat(np.arange(35), 2)

    def f(x):
        z = np.sqrt(x)[index]
        return np.sum(np.where(z > 0.5, np.log(z), 0.0))

    x = np.linspace(0.0, 1.0, 35)
    grads = [tapead.record(f, x, structured=s).gradient(x) for s in MODES]
    assert grads[0][0] == 0.0 and not np.isnan(grads[0]).any()
    for g in grads[1:]:
        assert_close(g, grads[0], 1e-13, scale=magnitude(grads[0]))
    for s in MODES:
        assert not np.isnan(tapead.record(f, x, structured=s).hvp(x, v=np.ones(35))).any()


def test_masked_tangents_summed_by_a_loop_stay_masked():
    """A loop's sum of tangents that all came through selects not taken, then an infinite partial (sqrt at 0):
    the tangent is 0 in every mode, as the unrolled sweep's union of masks gives it."""
    index = np.repeat(np.arange(35), 2)

    def f(x):
        return np.sqrt(np.sum(np.where(x[index] > 2.0, x[index] ** 2, 0.0)))

    x = np.linspace(0.0, 1.0, 35)
    for s in MODES:
        t = tapead.record(f, x, structured=s)
        assert t.jvp(x, v=np.ones(35)) == 0.0
        assert np.array_equal(t.gradient(x), np.zeros(35))


# ---- random compositions ----------------------------------------------------------------------------------
BRANCHES = {  # a function and the threshold above which its partials are finite
    "sqrt": (np.sqrt, 0.0), "log": (np.log, 0.0), "cbrt": (np.cbrt, 0.0), "pow1.5": (lambda v: v ** 1.5, 0.0),
    "arccosh": (np.arccosh, 1.0), "sqrt(v-1)": (lambda v: np.sqrt(v - 1.0), 1.0),
}


@st.composite
def compositions(draw):
    """An expression over ``x`` (a list of nested tuples) built from guarded branches, sums, products,
    maximum/minimum, clip and gathers with repeated indices; reduced by sum, max, min or one element."""
    n = draw(st.sampled_from([3, 5, 66]))
    depth = draw(st.integers(2, 5))
    exprs = [("x",)]
    for _ in range(depth):
        a = draw(st.integers(0, len(exprs) - 1))
        b = draw(st.integers(0, len(exprs) - 1))
        kind = draw(st.sampled_from(["branch", "branch", "add", "mul", "maximum", "minimum", "clip", "gather"]))
        if kind == "branch":
            exprs.append(("branch", draw(st.sampled_from(sorted(BRANCHES))), a, b,
                          draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))))
        elif kind == "gather":
            exprs.append(("gather", a, draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))))
        else:
            exprs.append((kind, a, b))
    reduce = draw(st.sampled_from(["sum", "max", "min", "item", "mean"]))
    values = draw(st.lists(st.sampled_from([-2.0, -0.5, 0.0, 0.25, 0.75, 1.0, 1.5, 3.0, 4.0]),
                           min_size=n, max_size=n))
    return exprs, reduce, np.array(values)


def run(exprs, reduce, x):
    vals = []
    for e in exprs:
        if e[0] == "x":
            v = x
        elif e[0] == "branch":
            fn, low = BRANCHES[e[1]]
            a, b = vals[e[2]], vals[e[3]]
            v = np.where(a > low + e[4], fn(a), 0.5 * b)
        elif e[0] == "gather":
            v = vals[e[1]][np.array(e[2])]
        elif e[0] == "add":
            v = vals[e[1]] + vals[e[2]]
        elif e[0] == "mul":
            v = vals[e[1]] * 0.5 * vals[e[2]]
        elif e[0] == "maximum":
            v = np.maximum(vals[e[1]], vals[e[2]])
        elif e[0] == "minimum":
            v = np.minimum(vals[e[1]], vals[e[2]])
        else:
            v = np.clip(vals[e[1]], -1.0, 2.0)
        vals.append(v)
    last = vals[-1]
    if reduce == "sum":
        return np.sum(last)
    if reduce == "mean":
        return np.mean(last)
    if reduce == "max":
        return np.max(last)
    if reduce == "min":
        return np.min(last)
    return last[1]


def stable_central_differences(f, x):
    """Central differences where the function is smooth across the step: the forward and backward one-sided
    differences agree (a kink, a tie of max/min or a switching select makes them differ); elsewhere NaN."""
    out = np.full(x.size, np.nan)
    h = 1e-6
    with np.errstate(all="ignore"):
        f0 = f(x)
        for i in range(x.size):
            e = np.zeros(x.size)
            e[i] = h
            up, down = f(x + e), f(x - e)
            right, left = (up - f0) / h, (f0 - down) / h
            if np.isfinite([right, left]).all() and abs(right - left) <= 1e-3 * max(1.0, abs(left)):
                out[i] = (up - down) / (2 * h)
    return out


@settings(deadline=None, max_examples=max(25, settings().max_examples // 4))
@given(compositions())
def test_random_compositions_match_central_differences(case):
    """At the drawn point (exact ties, exact zeros, values outside a branch's domain) no derivative is NaN where
    the function is smooth along that coordinate; at a point moved off every tie the gradient is the central
    difference; the three ``structured`` modes agree at both."""
    exprs, reduce, x = case
    note(repr(exprs))
    f = lambda v: run(exprs, reduce, v)  # noqa: E731
    generic = x + 1e-3 * np.sqrt(np.arange(2.0, x.size + 2.0))  # distinct offsets: no ties, no exact zeros
    for point, compare in ((x, False), (generic, True)):
        with np.errstate(all="ignore"):
            value = f(point)
        fd = stable_central_differences(f, point)
        stable = np.isfinite(fd)
        grads = []
        for structured in MODES:
            with np.errstate(all="ignore"):
                t = tapead.record(f, point, structured=structured)
            assert_close(t.value(point), value, 1e-14, scale=magnitude(value), nan="equal")
            g = t.gradient(point)
            grads.append(g)
            assert not np.isnan(g[stable]).any(), f"NaN where central differences give {fd[stable]}"
            if compare:
                assert_close(g[stable], fd[stable], 1e-5, scale=magnitude(fd[stable]))
            h = t.hvp(point, v=np.ones(point.size))
            assert not np.isnan(h[stable]).any()
        for g in grads[1:]:
            assert_close(g, grads[0], 1e-12, scale=magnitude(grads[0]), nan="equal")
