"""Hessians of a product of the inputs and data read by one loop (``np.sum(phi(x @ A))``): the product is fused
into the loop for the Hessian (``transforms/fuse``), which is then the low-rank ``A diag(phi'') A^T`` loop, not the
unrolled tape's sweeps. Checked against the closed form, the unrolled tape (to rounding), JAX or autograd, and
finite differences; the gradient keeps the product loop; shapes that are not the form are left alone."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, fd_hessian
from tapead.ir.contraction import Product
from tapead.transforms import fuse, higher, separable

RNG = np.random.default_rng(5)
N, M = 24, 64  # (the product loop form: a one-row product at least the loop threshold, 64, long)
A = RNG.normal(size=(N, M))
X0 = RNG.normal(size=N) * 0.3


def row_form(x):
    return np.sum(np.exp(0.1 * (x @ A)))


def column_form(x):  # A.T @ x as a product whose traced factor is one column
    return np.sum(np.tanh(A.T @ x.reshape(-1, 1)) ** 2)


def closed_form(x):
    z = 0.1 * (x @ A)
    return A @ (0.01 * np.exp(z)[:, None] * A.T)


def test_the_hessian_of_x_at_a_is_the_low_rank_loop():
    fun = tapead.record(row_form, X0)
    assert [type(m) for m in fun.tape.maps][0] is Product
    assert fuse.fused(fun.tape) is not None and len(fuse.fused(fun.tape).maps) == 1
    x = X0 + 0.05 * np.cos(np.arange(N))
    H = fun.hessian(x)
    assert np.array_equal(H, H.T)
    assert_close(H, closed_form(x), rtol=1e-12)
    assert separable.hessian(fun.tape, higher.hessian_tape, False) is not None
    unrolled = tapead.record(row_form, X0, structured=False)
    assert_close(H, unrolled.hessian(x), rtol=1e-12)
    assert_close(H, fd_hessian(fun.gradient, x), rtol=1e-6)
    v, g, H2 = fun.value_gradient_hessian(x)
    assert np.array_equal(H2, H) and v == fun.value(x) and np.array_equal(g, fun.gradient(x))


def test_a_traced_column_times_data():
    fun = tapead.record(column_form, X0)
    x = X0[::-1].copy()
    H = fun.hessian(x)
    assert separable.hessian(fun.tape, higher.hessian_tape, False) is not None
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    ref = np.asarray(jax.hessian(lambda v: jax.numpy.sum(jax.numpy.tanh(A.T @ v) ** 2))(x))
    assert_close(H, ref, rtol=1e-11)


def test_a_product_read_elsewhere_is_not_fused():
    def f(x):
        z = x @ A
        return np.sum(np.exp(0.1 * z)) + z[3] * z[5]
    fun = tapead.record(f, X0)
    assert fuse.fused(fun.tape) is None
    x = X0 * 0.5
    assert_close(fun.hessian(x), closed_form(x) + np.outer(A[:, 3], A[:, 5]) + np.outer(A[:, 5], A[:, 3]),
                 rtol=1e-11)


def test_the_sparse_hessian_reads_the_fused_form_too():
    fun = tapead.record(row_form, X0)
    rows, cols, vals = fun.sparse_hessian(X0)
    dense = np.zeros((N, N))
    dense[rows, cols] = vals
    assert_close(dense, closed_form(X0), rtol=1e-12)


def test_at_size_the_hessian_never_unrolls():
    """n = 100: the unrolled tape's sweeps took 47 s to the first Hessian and 5.4 ms per call."""
    big = np.random.default_rng(2).normal(size=(100, 100))
    x = np.linspace(-1, 1, 100)
    fun = tapead.record(lambda v: np.sum(np.exp(0.1 * (v @ big))), x)
    H = fun.hessian(x)
    assert fun.stats["unrolled"] == []
    assert_close(H, big @ (0.01 * np.exp(0.1 * (x @ big))[:, None] * big.T), rtol=1e-12)
