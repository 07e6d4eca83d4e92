"""A loop column's offsets are computed when they are affine in the iteration, also when the first or last
iteration reads elsewhere (a padded stencil's edge: a select), and read from a table otherwise; every form computes
the unrolled tape's bits."""
from __future__ import annotations

import numpy as np

import tapead
from tapead.backend import codegen
from tapead.ir.interpret import interpret
from tapead.ir.structure import unroll
from tapead.transforms import ad

N = 100  # above the loop threshold


def padded(x):
    p = np.pad(x, 1)  # p[k - 1] is the padding at k = 0, p[k + 1] at k = N - 1
    return np.sum(p[:-2] * p[2:] + np.sin(p[1:-1]) * x)


IRREGULAR = np.arange(N)
IRREGULAR[N // 2] = 3  # one iteration in the middle reads elsewhere: a table


def irregular(x):
    return np.sum(np.cos(x[IRREGULAR]) * x)


def _tables(fun) -> int:
    return codegen.lower(fun.tape, "k").count("constant [")


def _bitwise(f, x):
    """The loop kernels against the interpreter and the unrolled tape (``structure.unroll``: the same additions in
    the same order), bit for bit, value and gradient."""
    fun = tapead.record(f, x)
    assert fun.tape.maps
    x1 = x + 0.01 * np.cos(np.arange(x.size))
    grad = ad.value_and_grad(fun.tape)
    want = interpret(unroll(grad), x1[None])[0][0]
    assert np.array_equal(interpret(grad, x1[None])[0][0], want)
    assert fun.value(x1) == want[0]
    assert np.array_equal(fun.gradient(x1), want[1:])
    return fun


def test_edges_of_a_padded_stencil_are_selected_not_tabled():
    fun = _bitwise(padded, np.linspace(-1.0, 1.0, N))
    assert _tables(fun) == 0
    assert codegen.lower(ad.value_and_grad(fun.tape), "g").count("constant [") == 0  # its reverse too


def test_an_irregular_column_reads_a_table():
    fun = _bitwise(irregular, np.linspace(-1.0, 1.0, N))
    assert _tables(fun) >= 1
