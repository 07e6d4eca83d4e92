"""Batches whose points take several paths through an ``if``: the points on known, compiled paths are answered
natively, one pass per path, with the bits each point gets on its own."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapead
from tapead.runtime.calls import kernel
from check import Counting


def two_paths(x):
    if x[0] > 0:
        return x[0] * x[1] + np.sin(x[1])
    return x[0] ** 2 - x[1]


def three_paths(x):
    if x[0] > 0:
        return np.exp(x[1]) * x[0]
    if x[1] > 0:
        return x[0] * x[1] ** 3
    return np.cos(x[0] + x[1])




def mixed(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 2))


@pytest.mark.parametrize("f", [two_paths, three_paths])
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_results_are_the_bits_of_each_point_alone(f, threads, monkeypatch):
    monkeypatch.setattr("tapead.runtime.calls.OPS_PER_THREAD", 1)
    t = tapead.record(f, np.array([0.5, 0.5]))
    X = mixed(3000)
    t.gradient(X, threads=threads), t.value(X, threads=threads)  # finds and compiles the other paths
    G = t.gradient(X, threads=threads)
    V, G2 = t.value_and_gradient(X, threads=threads)
    v = t.value(X, threads=threads)
    for i in range(0, len(X), 37):
        assert np.array_equal(G[i], t.gradient(X[i])), i
        assert V[i] == t.value(X[i]) == v[i] and np.array_equal(G2[i], G[i]), i
    # and against the interpreter and the closed forms (the paths are right, not only consistent)
    assert np.allclose(v, t.evaluate(X), rtol=1e-14, atol=1e-14)
    assert np.allclose(v, [f(x) for x in X], rtol=1e-14, atol=1e-14)


def test_known_paths_run_natively_in_one_pass_each():
    t = tapead.record(two_paths, np.array([0.5, 0.5]))
    X = mixed(5000, 1)
    other = int(np.sum(X[:, 0] <= 0))
    t.gradient(X)  # records and compiles the other path
    _, k = kernel(t, "value_and_gradient")
    counters = [Counting(k.batch)] + [Counting(fn) for fn in k.fast.values()]
    k.batch, k.fast = counters[0], dict(zip(k.fast, counters[1:]))
    before = dict(t.stats)
    for _ in range(3):
        G = t.gradient(X, threads=1)
    after = t.stats
    # one pass of the recorded path's kernel per call (with per-point statuses: the batch is known to be mixed)
    assert sum(c.calls for c in counters) == 3
    assert counters[0].calls == 3
    assert after["native_points"] - before["native_points"] == 3 * other
    assert after["interpreted_points"] == before["interpreted_points"] and after["records"] == before["records"]
    assert np.array_equal(G[X[:, 0] <= 0], np.stack([2 * X[X[:, 0] <= 0, 0], -np.ones(other)], axis=1))


def test_a_batch_on_one_path_again_returns_to_the_fast_loop():
    t = tapead.record(two_paths, np.array([0.5, 0.5]))
    t.gradient(mixed(500, 2))
    _, k = kernel(t, "value_and_gradient")
    Y = np.abs(mixed(400, 3)) + 0.1  # every point on the recorded path
    t.gradient(Y)  # one status pass finds no failure and forgets that batches were mixed
    counters = [Counting(k.batch)] + [Counting(fn) for fn in k.fast.values()]
    k.batch, k.fast = counters[0], dict(zip(k.fast, counters[1:]))
    t.gradient(Y, threads=1)
    assert counters[0].calls == 0 and sum(c.calls for c in counters) == 1


@settings(max_examples=30, deadline=None)
@given(signs=st.lists(st.sampled_from([-1.0, 1.0]), min_size=1, max_size=40), seed=st.integers(0, 99))
def test_any_mix_of_paths(signs, seed, shared_tape):
    X = mixed(len(signs), seed)
    X[:, 0] = np.abs(X[:, 0]) * signs
    X[:, 1] = np.where(np.arange(len(signs)) % 3 == 0, -np.abs(X[:, 1]), np.abs(X[:, 1]))
    G = shared_tape.gradient(X)
    for i, x in enumerate(X):
        assert np.array_equal(G[i], shared_tape.gradient(x))


@pytest.fixture(scope="module")
def shared_tape():
    t = tapead.record(three_paths, np.array([0.5, 0.5]))
    t.gradient(mixed(200, 5))  # compile the three paths first: later points all run natively
    return t


ULPS = 8  # the interpreter (numpy's vectorised libm) against the kernels (the C library's): a few ulps


def test_rows_on_a_path_not_yet_compiled_are_within_a_few_ulps_then_bitwise():
    """The first points a path answers (``branches.COMPILE_AFTER``) run through the interpreter, whose
    transcendental functions are numpy's; once the path is compiled every row is the bits of its point alone."""
    rng = np.random.default_rng(5)

    def f(u):
        s = np.sum(np.abs(u) ** 1.5)
        if s > 95.0:
            return np.log(s) * np.sum(np.abs(u) ** 1.5 * np.tanh(u))
        return np.sqrt(s) + np.sum(np.exp(u * 0.1) ** 2.5)

    X = rng.normal(size=(12, 63)) * 1.5
    paths = [bool(np.sum(np.abs(x) ** 1.5) > 95.0) for x in X]
    assert 0 < sum(paths) < 12
    for kind in ("value", "gradient"):
        t = tapead.record(f, X[0])
        cold = getattr(t, kind)(X)
        alone = np.array([getattr(t, kind)(x) for x in X])
        scale = np.max(np.abs(alone), axis=tuple(range(1, alone.ndim)), keepdims=True) if alone.ndim > 1 else \
            np.abs(alone)
        assert np.all(np.abs(cold - alone) <= ULPS * np.spacing(scale))
        assert np.array_equal(getattr(t, kind)(X), alone)  # the paths are compiled now: bitwise
