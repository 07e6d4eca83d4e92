"""Columns made of runs (``tapead/backend/offsets.py``): a big loop over pairs ``i < j`` computes its gather and
scatter offsets from runs (the current run carried in registers) instead of reading a table entry per iteration.
The offsets are the same numbers either way, so the kernel's results are the interpreter's bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from functions import lj
from tapead.backend import offsets
from tapead.backend.codegen import lower_kernel
from tapead.runtime import branches
from tapead.transforms import ad, kernelspec


def _ir(fun, kind="value_and_gradient") -> str:
    derived = branches.program(fun, kind)
    return lower_kernel(derived, kernelspec.spec(fun.tape, kind, derived, 2, False))


def test_runs_of_pairs():
    i, j = np.triu_indices(100, 1)
    for col, b in ((3 * i + 1, 0), (3 * j + 2, 3)):
        rel = col.astype(np.int64) - col[0]
        nxt, c = offsets._runs(rel, b)
        assert len(nxt) == len(c) == 100  # 99 runs and the padding entry
        run = np.searchsorted(nxt[:-1], np.arange(len(rel)), side="right")
        assert np.array_equal(c[run] + b * np.arange(len(rel)), rel)  # what the loop computes, iteration by iteration


def test_short_runs_keep_their_table():
    rel = np.random.default_rng(0).integers(0, 50, 10_000).astype(np.int64)
    assert offsets._runs(rel - rel[0], int(rel[1] - rel[0])) is None


@pytest.mark.parametrize("atoms", [95, 120])
def test_pair_loops_compute_their_offsets_from_runs(monkeypatch, atoms):
    monkeypatch.setenv("TAPEAD_CACHE", "0")
    x = np.random.default_rng(atoms).uniform(0.0, atoms ** (1 / 3) * 1.2, 3 * atoms)
    t = tapead.record(lj, x)
    assert t.tape.maps and t.tape.maps[0].n >= offsets.RUNS_FROM
    ir = _ir(t)
    assert ".q0n = private" in ir and "q0r = phi i64" in ir  # offsets from runs, not one table entry per pair
    want = tapead.evaluate(ad.value_and_grad(t.tape), x)
    v, g = t.value_and_gradient(x)
    assert v == want[0] and np.array_equal(g, want[1:])
    X = np.stack([x, x * 1.01, x[::-1].copy()])
    G = t.gradient(X)
    for row, xi in zip(G, X):
        assert np.array_equal(row, tapead.evaluate(ad.value_and_grad(t.tape), xi)[1:])


def test_a_gather_by_random_indices_keeps_its_table(monkeypatch):
    monkeypatch.setenv("TAPEAD_CACHE", "0")
    rng = np.random.default_rng(5)
    idx = rng.integers(0, 300, 6000)

    def f(x):
        return np.sum(np.sin(x[idx]) * x[idx[::-1]])

    x = rng.uniform(-1.0, 1.0, 300)
    t = tapead.record(f, x)
    assert t.tape.maps
    assert "q0r = phi" not in _ir(t)
    want = tapead.evaluate(ad.value_and_grad(t.tape), x)
    assert np.array_equal(t.gradient(x), want[1:])
