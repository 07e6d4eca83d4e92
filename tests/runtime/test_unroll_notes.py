"""``Function.stats["unrolled"]``: every time a tape with loops is unrolled into scalar instructions to build
something for a Function, which derived tape or kernel needed it and why; never a silent unrolling."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from functions import lj, lj_start
from tapead.ir import structure
from tapead.ir.notes import noting_unrolls


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv("TAPEAD_CACHE", "0")  # (a derived tape read from the cache was unrolled elsewhere)
    monkeypatch.setenv("TAPEAD_BACKGROUND_O2", "0")


def _chain(x):
    y = np.cumsum(x * x)
    return np.sum(np.sin(y[1:] * x[:-1]))


X = np.linspace(0.1, 1.0, 200)


def test_a_tape_without_loops_notes_nothing():
    t = tapead.record(lambda x: np.sum(np.sin(x) * x), np.ones(3))
    t.hessian(np.ones(3))
    t.gradient(np.ones((4, 3)))
    assert t.stats["unrolled"] == []


def test_a_dense_hessian_swept_on_scalar_code_says_so():
    t = tapead.record(_chain, X)
    assert t.tape.maps
    t.hessian(X)
    notes = [n for n in t.stats["unrolled"] if n["for"] == "hessian_tape/False"]
    whys = {n["why"] for n in notes}
    assert "dense Hessian: the forward sweeps of the gradient read scalar instructions" in whys
    for n in notes:
        assert n["loops"] >= 1 and n["rows"] > len(X)


def test_a_separable_hessian_and_a_loop_gradient_do_not_unroll_for_themselves():
    x = lj_start(0)
    t = tapead.record(lj, x)
    t.gradient(x)
    t.hessian(x)
    fors = {n["for"] for n in t.stats["unrolled"]}
    assert not any(f.startswith("hessian_tape") for f in fors)
    # the gradient kernel looks at an unrolled copy for its batch loop (vectorised across points), and says so
    assert {n["why"] for n in t.stats["unrolled"] if n["for"] == "kernel/value_and_gradient"} == {
        "batch kernel: is an unrolled copy small enough to vectorise across points?"}


def test_sparsity_patterns_note_their_scalar_reading():
    t = tapead.record(lj, lj_start(0))
    t.jacobian_sparsity()
    t.hessian_sparsity()
    notes = {n["for"]: n for n in t.stats["unrolled"]}
    assert notes["jacobian_sparsity"]["why"] == "Jacobian sparsity: read on scalar code"
    assert notes["jacobian_sparsity"]["loops"] == 1


def test_notes_are_not_repeated_and_derived_kernels_are_prefixed():
    t = tapead.record(_chain, X)
    for _ in range(3):
        t.hessian(X)
    notes = t.stats["unrolled"]
    assert len(notes) == len({tuple(sorted(n.items())) for n in notes})
    assert all(n["for"].startswith(("hessian_tape/False", "kernel/")) for n in notes)


def test_scalar_notes_only_where_listened_to_and_only_for_loops():
    t = tapead.record(_chain, X).tape
    flat = structure.scalar(t)
    with noting_unrolls() as notes:
        assert structure.scalar(t, "a reason") is flat
        assert structure.scalar(flat, "already scalar") is flat
    assert notes == [dict(why="a reason", loops=len(t.maps), rows=structure.work(t))]
    structure.scalar(t, "nobody listens")  # (no error, nothing kept)
