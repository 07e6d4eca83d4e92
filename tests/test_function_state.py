"""The recorded Function and its caches: options kept on other paths, first calls from several threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import tapead
from tapead.runtime import calls


def _guarded(x):
    if np.sum(x) > 0:
        return np.sum(np.sin(x) * x)
    return np.sum(np.cos(x) * x)


@pytest.mark.parametrize("structured, n, loops", [(False, 80, 0), (True, 8, 1), (None, 80, 1), (None, 8, 0)])
def test_another_path_is_recorded_with_the_same_structured_choice(structured, n, loops):
    x = np.linspace(-1.0, 2.0, n)
    t = tapead.record(_guarded, x, structured=structured)
    assert len(t.maps) == loops
    assert t.value(-x) == pytest.approx(np.sum(np.cos(-x) * -x), rel=1e-13)
    other = t.state.paths.paths[0].fun
    assert len(other.maps) == loops
    again = tapead.simplify(t)
    again.value(-x)
    assert len(again.state.paths.paths[0].fun.maps) == loops


def test_two_threads_first_calling_native_get_the_cached_callable(monkeypatch):
    """Both threads miss the cache; the second finishes building after the first returned. The callable each
    thread gets must be the one the Function keeps (its method record lives only as long as the cache entry)."""
    t = tapead.record(lambda x: np.sum(np.sin(x) * x), np.linspace(-1.0, 1.0, 5))
    both_missed = threading.Barrier(2, timeout=20)
    first_done = threading.Event()
    wait, builtin = calls.wait_for_upgrades, calls.builtin

    def waiting(fun, *a, **k):
        both_missed.wait()
        return wait(fun, *a, **k)

    def building(*a, **k):
        if threading.current_thread().name == "second":
            first_done.wait(20)
        return builtin(*a, **k)

    monkeypatch.setattr(calls, "wait_for_upgrades", waiting)
    monkeypatch.setattr(calls, "builtin", building)
    got = {}

    def first():
        got["first"] = t.native("gradient")
        first_done.set()

    threads = [threading.Thread(target=first, name="first"),
               threading.Thread(target=lambda: got.setdefault("second", t.native("gradient")), name="second")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert got["first"] is got["second"] is t.native("gradient")
    x, g = np.linspace(-0.5, 0.5, 5), np.empty(5)
    got["first"](x, None, None, g)
    np.testing.assert_array_equal(g, t.gradient(x))


@pytest.mark.parametrize("method", ["hessian", "gradient", "hvp", "jacobian"])
def test_two_threads_first_calling_a_derivative_agree_with_one(method):
    f = lambda x: np.sum(np.sin(x) * x ** 2)  # noqa: E731
    x = np.linspace(-1.0, 1.0, 70)
    kw = {"v": np.cos(x)} if method == "hvp" else {}
    want = getattr(tapead.record(f, x), method)(x, **kw)
    t = tapead.record(f, x)
    start = threading.Barrier(2, timeout=20)
    got = [None, None]

    def run(k):
        start.wait()
        got[k] = getattr(t, method)(x, **kw)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    for g in got:
        assert np.asarray(g).tobytes() == np.asarray(want).tobytes()
