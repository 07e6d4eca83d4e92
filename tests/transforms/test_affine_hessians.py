"""Hessians whose gradient is affine (quadratic forms): the constant Hessian by array rules (``affine``), checked
against ``A + A.T``, the unrolled tape's dense sweeps, finite differences and JAX; anything not affine falls
back to the sweeps and stays right."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, fd_hessian, magnitude
from tapead.transforms import ad, affine

RNG = np.random.default_rng(5)


def quadratic(A):
    return lambda x: x.T @ A @ x


def _gradient_jacobian(fun):
    g = ad.value_and_grad(fun.tape)
    n = fun.tape.n_inputs
    return affine.constant_jacobian(g, g.outputs[1:1 + n], n)


@pytest.mark.parametrize("n", [40, 200])
def test_the_hessian_of_a_quadratic_form_is_computed_as_a_plus_a_transposed(n):
    A = RNG.normal(size=(n, n))
    x = np.linspace(-1, 1, n)
    fun = tapead.record(quadratic(A), x)
    assert _gradient_jacobian(fun) is not None  # the array rules applied
    H = fun.hessian(x)
    assert np.array_equal(H, A + A.T)  # one or two terms per entry: the sweeps' bits
    v, g, H2 = fun.value_gradient_hessian(x)
    assert np.array_equal(H2, H) and v == fun.value(x) and np.array_equal(g, fun.gradient(x))
    assert np.array_equal(fun.hessian(x + 1.0), H)  # constant


def test_the_array_rules_agree_with_the_unrolled_sweeps():
    n = 40
    A, B = RNG.normal(size=(n, n)), RNG.normal(size=(n, n))
    c = RNG.normal(size=n)

    def f(x):
        y = x @ A  # a row product
        z = B @ x  # a column product
        return y @ z + 3.0 * (x @ c) - 0.5 * (x @ x) + (y @ A) @ x

    x = np.linspace(-1, 1, n)
    fun = tapead.record(f, x)
    assert _gradient_jacobian(fun) is not None
    want = tapead.record(f, x, structured=False).hessian(x)
    H = fun.hessian(x)
    assert_close(H, want, 1e-13, scale=magnitude(want))
    assert np.array_equal(H, H.T)
    assert_close(H, fd_hessian(fun.gradient, x), 1e-6, scale=magnitude(want))


def test_a_gradient_that_is_not_affine_is_swept():
    n = 40
    A = RNG.normal(size=(n, n))

    def f(x):
        return x.T @ A @ x + np.sum(np.sin(x) * x ** 2)

    x = np.linspace(-1, 1, n)
    fun = tapead.record(f, x)
    assert _gradient_jacobian(fun) is None
    want = tapead.record(f, x, structured=False).hessian(x)
    assert_close(fun.hessian(x), want, 1e-13, scale=magnitude(want))


def test_a_product_of_two_traced_factors_is_not_affine():
    def f(x):
        M = x.reshape(8, 8)
        return np.sum(M @ M.T)

    x = np.linspace(-1, 1, 64)
    fun = tapead.record(f, x)
    want = tapead.record(f, x, structured=False).hessian(x)
    assert_close(fun.hessian(x), want, 1e-13, scale=magnitude(want))


def test_a_parameter_as_coefficient_is_not_constant():
    n = 30
    A = RNG.normal(size=(n, n))

    def f(x, p):
        return x.T @ A @ x * p[0]

    x = np.linspace(-1, 1, n)
    fun = tapead.record(f, x, params=np.array([2.0]))
    assert _gradient_jacobian(fun) is None
    assert_close(fun.hessian(x, params=np.array([3.0])), 3.0 * (A + A.T), 1e-13, scale=magnitude(A))


def test_guards_are_kept_by_falling_back():
    n = 30
    A = RNG.normal(size=(n, n))

    def f(x):
        q = x.T @ A @ x
        return q if x[0] > 0 else 2.0 * q

    x = np.linspace(0.1, 1, n)
    fun = tapead.record(f, x)
    assert _gradient_jacobian(fun) is None
    assert_close(fun.hessian(x), A + A.T, 1e-13, scale=magnitude(A))
    assert_close(fun.hessian(-x), 2 * (A + A.T), 1e-13, scale=magnitude(A))  # the other path, retaped


def test_a_quadratic_hessian_vs_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    n = 60
    A = RNG.normal(size=(n, n))
    x = np.linspace(-1, 1, n)
    want = np.asarray(jax.hessian(lambda v: v @ (jax.numpy.asarray(A) @ v))(jax.numpy.asarray(x)))
    assert_close(tapead.record(quadratic(A), x).hessian(x), want, 1e-13, scale=magnitude(A))


def test_an_infinite_or_nan_coefficient_is_left_to_the_sweeps():
    # inf * 0 would be NaN in every entry its row meets; the sweeps have no term there
    n = 6
    A = np.arange(36.0).reshape(6, 6) / 10
    A[2, 3] = np.nan
    c = np.arange(1.0, 7.0)
    c[0] = np.inf
    x = np.linspace(-1, 1, n)
    for f in (quadratic(A), lambda v: np.sum(c * v * v)):
        fun = tapead.record(f, x)
        assert _gradient_jacobian(fun) is None
        H = fun.hessian(x)
        assert np.count_nonzero(np.isnan(H)) <= 2  # only the entries the coefficient itself reaches
