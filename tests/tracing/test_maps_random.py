"""Random vectorised programs: recorded as loops (``structured=True``) they compute what the scalar tape computes.

A program gathers rows of its argument ``P`` (``m`` atoms by 3) through random index arrays into arrays of ``n``
rows, runs a random chain of elementwise numpy operations over them, reduces some results (over the loop axis,
the block axis, everything, the mean) and may finish with scalar Python code reading single elements (which
materialises a loop array). Values and gradients of the structured and the scalar tape agree through the compiled
kernels and the interpreter, and the gradient agrees with finite differences where no select is near its switch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

import tapead
from check import REL_STEP, assert_close, fd_gradient, magnitude

UNARY = ("sin", "tanh", "gauss", "square", "rowsum")
BINARY = ("add", "sub", "mul", "where")
REDUCTIONS = ("sum", "sum0", "sum1", "mean")
LIMIT = 1e3  # finite differences are checked only when every intermediate stays within [-LIMIT, LIMIT]
MARGIN = 1e-2  # ... and every select's comparison is at least this far from switching


@dataclass
class Program:
    n: int
    vectors: bool  # (n,) arrays as such (block of one scalar), else as (n, 1) columns
    sources: list  # ("gather3", idx) -> P[idx] (n, 3); ("gather1", idx, c) -> P[idx, c]; ("const", array)
    steps: list = field(default_factory=list)  # (op, i, j): pool[i] op pool[j] (j unused by unary ops)
    reductions: list = field(default_factory=list)  # (pool index, kind, coefficient)
    tail: int | None = None  # a pool index whose first elements a scalar Python loop reads
    branch: float | None = None  # a Python `if` on the result (a guard on a loop's sum): its threshold

    def __call__(self, P, stats=None):
        return run(self, P, stats)


def _lift(a, b):
    """(n,) against (n, 3): the vector becomes a column, as a user would write it."""
    if a.ndim < b.ndim:
        return a[:, None], b
    if b.ndim < a.ndim:
        return a, b[:, None]
    return a, b


def _step(op: str, a, b, stats, vectors: bool):
    if op == "sin":
        return np.sin(a)
    if op == "tanh":
        return np.tanh(a)
    if op == "gauss":
        return np.exp(-0.5 * (a * a))
    if op == "square":
        return np.square(a)
    if op == "rowsum":
        return np.sum(a, axis=1, keepdims=not vectors) if a.ndim == 2 else a - 1.0
    a, b = _lift(a, b)
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if stats is not None:  # where: the distance of the comparison from switching, at a numeric point
        stats["margin"] = min(stats["margin"], float(np.min(np.abs(a - b), initial=np.inf)))
    return np.where(a > b, a, 0.5 * b + 0.25)


def _reduce(kind: str, a, coef: float):
    if kind == "sum":
        return coef * np.sum(a)
    if kind == "mean":
        return coef * np.mean(a)
    if kind == "sum0":
        return coef * np.sum(np.sin(np.sum(a, axis=0)))
    return coef * np.sum(np.cos(np.sum(a, axis=1, keepdims=True) if a.ndim == 2 else a))


def run(prog: Program, P, stats=None):
    pool = []
    for src in prog.sources:
        if src[0] == "gather3":
            pool.append(P[src[1]])
        elif src[0] == "gather1":
            pool.append(P[src[1], src[2]] if prog.vectors else P[src[1], src[2]:src[2] + 1])
        else:
            pool.append(src[1] if prog.vectors or src[1].ndim == 2 else src[1][:, None])
    for op, i, j in prog.steps:
        pool.append(_step(op, pool[i], pool[j], stats, prog.vectors))
        if stats is not None:
            stats["largest"] = max(stats["largest"], float(np.max(np.abs(pool[-1]))))
    s = 0.0
    for k, kind, coef in prog.reductions:
        s = s + _reduce(kind, pool[k], coef)
    if prog.tail is not None:
        a = pool[prog.tail]
        for k in range(min(prog.n, 3)):
            s = s * 0.5 + np.sin(a[k] if a.ndim == 1 else a[k, k % a.shape[1]])
    if prog.branch is not None:
        s = s * 1.5 if s > prog.branch else s - 0.5
    return s


def _runs(n: int, m: int, length: int, start: int, shuffled: bool) -> np.ndarray:
    """``n`` indices in runs of ``length`` equal ones (``np.repeat``), counting up from ``start`` modulo ``m``."""
    idx = (start + np.arange(n) // length) % m
    return np.random.default_rng(n * 31 + length).permutation(idx) if shuffled else idx


@st.composite
def programs(draw, vectors=None):
    n = draw(st.integers(2, 80))
    m = draw(st.integers(2, 12))
    vectors = draw(st.booleans()) if vectors is None else vectors
    index = st.one_of(  # random, sorted, runs of one index, shuffled runs: the patterns of real gathers
        st.lists(st.integers(0, m - 1), min_size=n, max_size=n).map(np.array),
        st.lists(st.integers(0, m - 1), min_size=n, max_size=n).map(np.sort),
        st.tuples(st.integers(1, 5), st.integers(0, m - 1), st.booleans()).map(
            lambda r: _runs(n, m, *r)))
    sources = [("gather3", draw(index))]
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["gather3", "gather1", "const"]))
        if kind == "gather1":
            sources.append(("gather1", draw(index), draw(st.integers(0, 2))))
        elif kind == "gather3":
            sources.append(("gather3", draw(index)))
        else:
            shape = draw(st.sampled_from([(n,), (n, 3)]))
            sources.append(("const", np.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape)))
    prog = Program(n, vectors, sources)
    # loop results that depend on P (the reduced ones): an elementwise op on P's gathers is a loop, a row sum of
    # a gather (an ordinary traced array) is not
    looped = [False] * len(sources)
    traced = [kind != "const" for kind, *_ in sources]
    for k in range(draw(st.integers(3, 8))):
        i = 0 if k == 0 else draw(st.integers(0, len(traced) - 1))  # the first step reads P[idx]
        j = draw(st.integers(0, len(traced) - 1))
        op = draw(st.sampled_from((UNARY[:-1] if k == 0 else UNARY) + BINARY))
        prog.steps.append((op, i, j))
        traced.append(traced[i] or (op in BINARY and traced[j]))
        looped.append(looped[i] or op != "rowsum")
    results = [k for k in range(len(sources), len(traced)) if traced[k] and looped[k]]
    prog.reductions = [(results[-1], draw(st.sampled_from(REDUCTIONS)), 1.0)]
    for _ in range(draw(st.integers(0, 2))):
        prog.reductions.append((draw(st.sampled_from(results)), draw(st.sampled_from(REDUCTIONS)),
                                draw(st.sampled_from([-1.5, 0.5, 2.0]))))
    if draw(st.booleans()):
        prog.tail = draw(st.sampled_from(results))
    prog.branch = 0.0 if draw(st.booleans()) else None  # its threshold is set below the value at P0
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    P0 = rng.normal(size=(m, 3))
    return prog, P0, P0 + 0.05 * rng.normal(size=(m, 3))


# each example compiles four kernels: a fifth of the profile's examples (ci: 40, dev: 10, long: 1000)
@settings(deadline=None, max_examples=max(10, settings().max_examples // 5))
@given(programs(vectors=False))
def test_structured_matches_scalar_tape(case):
    check_program(*case)


@settings(deadline=None, max_examples=max(10, settings().max_examples // 5))
@given(programs(vectors=True))
def test_structured_matches_scalar_tape_with_vectors(case):
    check_program(*case)


def check_program(prog: Program, P0: np.ndarray, P1: np.ndarray) -> None:
    if prog.branch is not None:  # the branch taken at P0 and at P1 (the tapes' guards hold at both points)
        prog.branch = None
        with np.errstate(all="ignore"):
            v0, v1 = prog(P0), prog(P1)
        prog.branch = float(v0 - 0.5 * abs(v0) - 0.1)
        assume(np.isfinite(v0) and np.isfinite(v1) and v1 > prog.branch)
    note(repr(prog))
    stats = {"margin": np.inf, "largest": 0.0}
    with np.errstate(all="ignore"):
        want_value = prog(P1, stats)
    assume(np.isfinite(want_value) and stats["largest"] < 1e12)
    s = tapead.record(prog, P0, structured=True)
    u = tapead.record(prog, P0, structured=False)
    assert len(s.maps) >= 1 and u.maps == ()
    assert len(s.guards) == len(u.guards) == (prog.branch is not None)
    value = u.value(P1)
    assert_close(value, want_value, 1e-10, atol=1e-12, scale=magnitude(want_value))
    for got in (s.value(P1), s.evaluate(P1)):
        assert_close(got, value, 1e-10, atol=1e-12, scale=magnitude(value))
    g = u.gradient(P1)
    G = tapead.grad(s)
    for got in (s.gradient(P1), G.evaluate(P1).reshape(P1.shape), G.value(P1).reshape(P1.shape)):
        assert_close(got, g, 1e-10, atol=1e-12, scale=magnitude(g, value))
    if not len(s.guards):  # Hessians: separable (a loop reading data too), affine or swept, against the sweeps
        H, want = s.hessian(P1), u.hessian(P1)
        assert_close(H, want, 1e-9, atol=1e-12, scale=magnitude(want, g))
        assert np.array_equal(s.value_gradient_hessian(P1)[2], H, equal_nan=True)
    if stats["margin"] > MARGIN and stats["largest"] < LIMIT:
        # a smaller step than the default: steep oscillating bodies (sin of x^4 over 74 copies of one point) have
        # third derivatives in the 1e6 that the default step's truncation error cannot resolve
        fd = fd_gradient(s, P1, rel=REL_STEP / 10)
        assert_close(s.gradient(P1), fd, 1e-6, scale=magnitude(fd, value))
