"""Batch calls: native call counts, thread splits, params shared or per point, N = 0 and 1."""
import numpy as np
import pytest

import tapead
from tapead.runtime.calls import kernel
from check import Counting


def f(x, p):
    return np.sum(np.sin(x) * p[0]) + p[1] * x[0] * x[-1]


@pytest.fixture(scope="module")
def tape():
    return tapead.record(f, np.ones(6), params=np.array([2.0, 3.0]))




@pytest.mark.parametrize("threads", [1, 2])
def test_a_batch_makes_at_most_threads_native_calls(tape, threads, monkeypatch):
    monkeypatch.setattr("tapead.runtime.calls.OPS_PER_THREAD", 1)
    X = np.random.default_rng(0).normal(size=(1001, 6))
    _, k = kernel(tape, "value_and_gradient")
    counters = [Counting(k.batch)] + [Counting(f) for f in k.fast.values()]
    monkeypatch.setattr(k, "batch", counters[0])
    monkeypatch.setattr(k, "fast", dict(zip(k.fast, counters[1:])))
    G = tape.gradient(X, params=np.array([2.0, 3.0]), threads=threads)
    assert sum(c.calls for c in counters) == threads
    assert np.array_equal(G[500], tape.gradient(X[500], params=np.array([2.0, 3.0])))


def test_thread_count_and_split_never_change_bits(tape, monkeypatch):
    monkeypatch.setattr("tapead.runtime.calls.OPS_PER_THREAD", 1)
    rng = np.random.default_rng(1)
    X, P = rng.normal(size=(777, 6)), rng.normal(size=(777, 2))
    ref = tape.gradient(X, params=P, threads=1)
    for threads in (2, 3):
        assert np.array_equal(tape.gradient(X, params=P, threads=threads), ref)
    assert np.array_equal(tape.gradient(X[100:345], params=P[100:345]), ref[100:345])
    assert np.array_equal(np.array([tape.gradient(x, params=p) for x, p in zip(X[:20], P[:20])]), ref[:20])


def test_batch_sizes_zero_and_one_and_params(tape):
    p = np.array([2.0, 3.0])
    assert tape.gradient(np.zeros((0, 6)), params=p).shape == (0, 6)
    assert tape.value(np.zeros((0, 6)), params=p).shape == (0,)
    x = np.linspace(0, 1, 6)
    assert np.array_equal(tape.gradient(x[None], params=p)[0], tape.gradient(x, params=p))
    assert np.array_equal(tape.gradient(x[None], params=p[None])[0], tape.gradient(x, params=p))
    v, g = tape.value_and_gradient(np.stack([x, x]), params=p)
    assert v.shape == (2,) and g.shape == (2, 6)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts(tape, threads):
    with pytest.raises(tapead.InputError, match="threads"):
        tape.gradient(np.ones((3, 6)), params=np.ones(2), threads=threads)


def test_one_tape_from_several_python_threads(tape):
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(2)
    X, p = rng.normal(size=(64, 6)), np.array([2.0, 3.0])
    ref = tape.gradient(X, params=p)
    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(lambda x: tape.gradient(x, params=p), X))
    assert np.array_equal(np.array(rows), ref)
