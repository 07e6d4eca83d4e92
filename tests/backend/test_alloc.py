"""Zero allocation: repeated calls with out= retain no memory and their peak does not grow with the call count."""
from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

import tapead
from functions import FUNCTIONS

# Bytes of interpreter-level noise (a few small objects kept alive by caches inside CPython, numpy and ctypes
# come and go between measurements, independent of the call count). A leak of one 16-byte object
# per call would show as 160 KB over 10,000 calls, so these bounds still catch any per-call growth.
RETAINED_SLACK = 2048
PEAK_SLACK = 2048


def measure(call, n: int) -> tuple[int, int]:
    """(bytes retained, peak bytes above the start) over n calls, tracemalloc already running."""
    gc.collect()
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    for _ in range(n):
        call()
    after, peak = tracemalloc.get_traced_memory()
    gc.collect()
    after = min(after, tracemalloc.get_traced_memory()[0])
    return after - before, peak - before


def check_no_growth(call, n_small: int, n_large: int, repeats: int = 3) -> None:
    """Retained bytes and peak over n_large calls stay within the slack of those over n_small calls.

    A leak grows in every repetition, noise does not: the best of ``repeats`` measurements is compared.
    """
    for _ in range(50):  # warm up: compile, fill caches, settle free lists
        call()
    tracemalloc.start()
    try:
        for _ in range(200):
            call()
        peak_small = min(measure(call, n_small)[1] for _ in range(repeats))
        large = [measure(call, n_large) for _ in range(repeats)]
    finally:
        tracemalloc.stop()
    retained = min(r for r, _ in large)
    peak_large = min(p for _, p in large)
    assert retained <= RETAINED_SLACK, f"{[r for r, _ in large]} bytes retained over {n_large} calls"
    assert peak_large <= peak_small + PEAK_SLACK, (peak_small, [p for _, p in large])


@pytest.fixture(scope="module")
def rosen():
    case = FUNCTIONS["rosenbrock"]
    return tapead.record(case.f, *case.args0).compile(), case.args1[0].copy()


def test_gradient_out_does_not_allocate(rosen):
    t, x = rosen
    g = np.empty_like(x)
    check_no_growth(lambda: t.gradient(x, out=g), 100, 10_000)
    assert np.array_equal(g, t.gradient(x))


def test_value_out_does_not_allocate(rosen):
    t, x = rosen
    X = np.stack([x, x + 0.1])
    v = np.empty(2)
    check_no_growth(lambda: t.value(X, out=v), 100, 10_000)
    assert np.array_equal(v, t.value(X))


def test_scalar_value_does_not_grow(rosen):
    t, x = rosen
    check_no_growth(lambda: t.value(x), 100, 10_000)


def test_batch_gradient_out_does_not_allocate(rosen):
    t, x = rosen
    X = x + np.random.default_rng(0).normal(scale=0.1, size=(64, x.size))
    G = np.empty_like(X)
    check_no_growth(lambda: t.gradient(X, out=G), 100, 10_000)
    assert np.array_equal(G, t.gradient(X))


def test_batch_peak_does_not_depend_on_the_batch_size(rosen):
    t, x = rosen
    python_path = type(t).gradient  # (small batches run from the native method, which allocates nothing at all)
    peaks = []
    for n in (16, 4096):
        X = x + np.random.default_rng(1).normal(scale=0.1, size=(n, x.size))
        G = np.empty_like(X)
        for _ in range(20):
            python_path(t, X, out=G, threads=1)
        tracemalloc.start()
        try:
            peaks.append(min(measure(lambda: python_path(t, X, out=G, threads=1), 200)[1] for _ in range(3)))
        finally:
            tracemalloc.stop()
    assert peaks[1] <= peaks[0] + PEAK_SLACK, peaks


def test_small_native_batches_do_not_allocate(rosen):
    t, x = rosen
    X = x + np.random.default_rng(1).normal(scale=0.1, size=(16, x.size))
    G = np.empty_like(X)
    check_no_growth(lambda: t.gradient(X, out=G), 1000, 10000)
    check_no_growth(lambda: t.gradient(X, out=G, threads=1), 1000, 10000)


def test_multi_argument_params_out_does_not_allocate():
    case = FUNCTIONS["seed_foo4"]
    t = tapead.record(case.f, *case.args0, params=case.params).compile()
    outs = tuple(np.empty_like(a) for a in case.args1)
    check_no_growth(lambda: t.gradient(*case.args1, params=case.params, out=outs), 100, 10_000)
    P = np.tile(case.params, (16, 1))
    X = tuple(np.tile(a, (16, 1)) for a in case.args1)
    G = tuple(np.empty_like(a) for a in X)
    check_no_growth(lambda: t.gradient(*X, params=P, out=G), 20, 1_000)


def test_value_and_gradient_out_does_not_allocate(rosen):
    t, x = rosen
    v, g = np.empty(()), np.empty_like(x)
    check_no_growth(lambda: t.value_and_gradient(x, out=(v, g)), 100, 10_000)
