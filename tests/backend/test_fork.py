"""Processes forked or spawned while tapead is busy: a child never inherits a lock whose owner it does not have.

A background O2 build (or any compilation in another thread) holds llvmlite's lock during each LLVM call; a
``fork`` at that moment used to hand the child a lock nobody in it would release, so the child's first
compilation hung. Forks now happen between LLVM calls, and a forked child starts its own thread pool.
"""
from __future__ import annotations

import multiprocessing as mp
import threading
import time

import numpy as np
import pytest

import tapead
from tapead.runtime import calls
from tapead.backend import jit
from test_background_exit import _lj


def child_work(k: int) -> float:
    t = tapead.record(lambda x: np.sum(np.sin(x) * x * k), np.ones(5))
    batch = t.gradient(np.ones((64, 5)), threads=2)  # the thread pool too
    return float(t.gradient(np.ones(5))[0] + batch[0, 0])


def _expected(k: int) -> float:
    return 2 * k * (np.cos(1.0) + np.sin(1.0))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_pool_started_while_llvm_is_busy_compiles(method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    t = tapead.record(lambda x: np.sum(x ** 3), np.ones(4))
    t.gradient(np.ones((64, 4)), threads=2)  # the parent's pool threads exist
    jit.initialize()
    lock = jit._llvm_lock()
    assert lock is not None
    held = threading.Event()

    def hold_llvm():  # an LLVM call in flight in another thread, as a background build has
        with lock:
            held.set()
            time.sleep(0.5)

    holder = threading.Thread(target=hold_llvm)
    holder.start()
    held.wait()
    try:
        with mp.get_context(method).Pool(2) as pool:
            got = pool.map_async(child_work, [1, 2, 3]).get(timeout=120)
    finally:
        holder.join()
    assert np.allclose(got, [_expected(k) for k in (1, 2, 3)], rtol=1e-12)


def test_a_pool_forked_during_a_background_build_compiles(monkeypatch):
    monkeypatch.setenv("TAPEAD_BACKGROUND_O2", "1")
    monkeypatch.setenv("TAPEAD_CACHE", "0")
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork start method here")
    n = 10
    x = np.random.default_rng(0).uniform(0, 3, 3 * n)
    t = tapead.record(_lj(n), x, structured=False)
    t.gradient(x)
    assert any(th.name == "tapead-O2" for th in threading.enumerate())  # a build in flight
    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map_async(child_work, [1, 2]).get(timeout=120)
    calls.wait_for_upgrades(t)
    assert np.allclose(got, [_expected(k) for k in (1, 2)], rtol=1e-12)
