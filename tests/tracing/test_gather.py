"""Rows gathered by index arrays while loops are recorded are held as node ids (``tracing.gather``): the tapes,
values and gradients are those of numpy's gather of the tracers, whatever is done with the rows afterwards."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from tapead.tracing import tracer
from tapead.tracing.gather import GatheredArray

N = 40
I, J = np.triu_indices(N, 1)
X = np.random.default_rng(3).uniform(0.0, 4.0, 3 * N)


def pair_energy(x):
    p = x.reshape(N, 3)
    d = p[I] - p[J]
    r2 = np.sum(d * d, axis=1) + 1.0
    return np.sum(1.0 / r2 ** 3)


def assigned(x):
    p = x.reshape(N, 3)
    q = p[I]
    q[0, 0] = 2.0 * q[0, 0]  # the cells are made, then assigned to: they are the truth from here on
    return np.sum(np.sin(q - p[J]) ** 2)


def regathered(x):
    p = x.reshape(N, 3)
    q = p[I][::-1]
    r = p[J][np.arange(len(J))[::-1]]  # a gather of gathered rows
    return np.sum(np.cos(q) * r)


def with_constant_cells(x):
    p = np.concatenate([x, np.ones(3)]).reshape(N + 1, 3)  # a row of plain floats: numpy's gather answers
    k = np.arange(N + 1).repeat(2)
    return np.sum(p[k] ** 2 * p[k[::-1]])


def broadcast_along_the_last_axis(x):
    a = np.sin(x[:, None] * np.ones((3 * N, 3 * N)))  # a loop over axis 0
    q = x[np.arange(3 * N)[::-1].copy()]  # gathered, (3N,): broadcasts along the last axis, not the loop's
    return np.sum(a * q)


def source_assigned_after(x):
    p = x.reshape(N, 3).copy()
    q = p[I]
    p[0, 0] = 7.0 * p[0, 0]  # numpy's gather is a copy: q keeps the old rows
    return np.sum(q.T ** 2) + np.sum(p[J] * q)


def negative(x):
    p = x.reshape(N, 3)
    return np.sum(np.exp(-(p[-I - 1] - p[J]) ** 2))


@pytest.fixture()
def without_gather(monkeypatch):
    """Recording with numpy's gather of the tracers (the path before node ids)."""
    def record(f):
        with monkeypatch.context() as m:
            m.setattr(tracer.SURFACE, "gather", lambda a, idx: None)
            return tapead.record(f, X)
    return record


@pytest.mark.parametrize("f", [pair_energy, assigned, regathered, with_constant_cells, negative,
                               broadcast_along_the_last_axis, source_assigned_after])
def test_gathered_rows_record_the_same_tape(f, without_gather):
    t = tapead.record(f, X)
    ref = without_gather(f)
    assert t.tape.hash == ref.tape.hash
    x = X + 0.01
    assert t.value(x) == ref.value(x) == pytest.approx(f(x), rel=1e-12)
    assert t.gradient(x).tobytes() == ref.gradient(x).tobytes()
    assert t.tape.maps  # still a loop


def test_rows_are_node_ids_until_the_cells_are_needed():
    seen = {}

    def f(x):
        p = x.reshape(N, 3)
        q = p[I]
        seen["type"], seen["made"] = type(q), q._cells is not None
        seen["shape"], seen["len"] = q.shape, len(q)
        return np.sum(q * p[J])

    tapead.record(f, X)
    assert seen == {"type": GatheredArray, "made": False, "shape": (len(I), 3), "len": len(I)}


def test_made_cells_are_the_sources_tracers():
    seen = {}

    def f(x):
        p = x.reshape(N, 3)
        q = p[I][::2]
        seen["same"] = all(q.cells[k, 1] is p.cells[I[2 * k], 1] for k in range(len(q)))
        return np.sum(q)

    tapead.record(f, X)
    assert seen["same"]


def test_indices_out_of_range_raise_numpys_error():
    def f(x):
        p = x.reshape(N, 3)
        return np.sum(p[np.full(100, N)])

    with pytest.raises(IndexError):
        tapead.record(f, X)


def test_scalar_recording_never_gathers_ids():
    t = tapead.record(pair_energy, X, structured=False)
    assert not t.tape.maps
    np.testing.assert_allclose(t.gradient(X), tapead.record(pair_energy, X).gradient(X), rtol=1e-12)
