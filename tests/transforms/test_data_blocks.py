"""Data blocks: the constants a loop reads from a data table (a closure constant of thousands of entries) are
kept as arrays by the recorder and read in bulk by the transforms that replay the tape.

Checked here: ``Recorder.values_at`` against the node-by-node values (one block, many blocks, blocks mixed
with scalar nodes, unknown values); derivatives of programs reading data tables against the unrolled tape
(``structured=False``), central differences and closed forms; and that a transform reads a data table without
copying it (the derived gradient tape of `tanh(X @ w)` holds X once).
"""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close
from tapead.tracing.recorder import BULK, Recorder
from tapead.transforms import ad
from tapead.transforms.slotvalues import SlotValues


def test_values_at_reads_blocks_and_single_nodes_like_the_value_list():
    rng = np.random.default_rng(0)
    rec = Recorder()
    ids = [rec.input(0.5), rec.const(2.0)]
    blocks = []
    for k in range(12):  # more blocks than the range test handles: the bisection path too
        blocks.append(rec.constants(rng.normal(size=(BULK + k, 2))))
        ids.append(rec.input(float(k)))
    every = np.concatenate([np.array(ids)] + [b.ravel() for b in blocks])
    order = rng.permutation(len(every))
    got = rec.values_at(every[order])
    assert np.array_equal(got, np.array([rec.values[i] for i in every[order].tolist()]))
    one = blocks[3][::-1]  # inside one block, any order
    assert np.array_equal(rec.values_at(one), np.array([rec.values[i] for i in one.ravel().tolist()]))
    assert rec.values_at(np.array([], np.int64)).shape == (0,)
    unknown = rec.input(None)
    assert rec.values_at(np.array([blocks[0][0, 0], unknown])) is None


def test_values_at_keeps_the_bits_of_a_block():
    rec = Recorder()
    data = np.array([-0.0, 0.0, np.inf, -np.inf, 5e-324, np.nan] * (BULK // 4), np.float64)
    ids = rec.constants(data)
    assert rec.values_at(ids).view(np.int64).tolist() == data.view(np.int64).tolist()


@pytest.mark.parametrize("form", ["matmul", "sum", "quadratic"])
def test_gradients_reading_data_tables_match_the_unrolled_tape_and_differences(form):
    rng = np.random.default_rng(1)
    n, d = 300, 7
    X, y = rng.normal(size=(n, d)), (rng.uniform(size=n) < 0.5).astype(float)
    A = rng.normal(size=(d * 12, d * 12))

    def f(w):
        if form == "quadratic":
            return w.T @ A @ w
        z = X @ w if form == "matmul" else np.sum(X * w, axis=1)
        return np.sum(np.logaddexp(0.0, z) - y * z) / n

    w = rng.normal(size=A.shape[0] if form == "quadratic" else d) * 0.3
    t, u = tapead.record(f, w), tapead.record(f, w, structured=False)
    assert t.maps, "the data table is read by a loop"
    g = t.gradient(w)
    assert_close(g, u.gradient(w), rtol=1e-13)
    if form == "quadratic":
        assert_close(g, (A + A.T) @ w, rtol=1e-12)
        assert_close(t.hessian(w), A + A.T, rtol=1e-14)
    h = 1e-6
    fd = np.array([(f(w + h * e) - f(w - h * e)) / (2 * h) for e in np.eye(len(w))])
    assert_close(g, fd, rtol=1e-6, atol=1e-8)


def test_a_transform_reads_a_data_table_without_copying_it():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 6))

    def f(w):
        return np.sum(np.tanh(X @ w))

    tape = tapead.record(f, rng.normal(size=6))
    vg = ad.value_and_grad(tape.tape)
    data = set(X.ravel().tolist())
    held = [v for v in vg.consts.tolist() if v in data]
    assert len(held) == X.size  # the forward product and its reverse read the same table: no copy
    vals = SlotValues([], [], tape.tape.consts)
    assert vals.first_const == 0 and vals.consts is tape.tape.consts and list(vals) == tape.tape.consts.tolist()


def test_a_replay_makes_one_node_per_pool_constant_its_loops_read():
    rec = Recorder()
    xs = ad.tracers(rec, rec.inputs_of([None, None]))
    consts = np.arange(300.0) * 0.5 + 0.25
    vals = SlotValues(xs, [], consts)
    a = vals.pool_ids(rec, np.arange(10, 110))
    made = len(rec.kinds)
    b = vals.pool_ids(rec, np.arange(50, 150))  # overlapping: only the 40 new ones are made
    assert np.array_equal(b[:60], a[40:]) and len(rec.kinds) == made + 40
    assert rec.values_at(b).tolist() == consts[50:150].tolist()
    other = Recorder()  # another recorder gets its own nodes
    c = vals.pool_ids(other, np.arange(0, 100))
    assert other.values_at(c).tolist() == consts[:100].tolist()
