"""Partially separable Hessians of loops that also read data (constants, parameters): a data set's rows, an
element's reference shape. The body's Hessian is taken along the columns that read inputs; entries a broadcast
input pairs with a broadcast input are ``sum`` outputs. Checked against the closed forms, the unrolled tape's
dense sweeps (to rounding: the separable Hessian adds per iteration), finite differences and JAX."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapead
from check import assert_close, fd_hessian, magnitude
from tapead.ir.contraction import Product
from tapead.ir.structure import Out
from tapead.transforms import higher, lowrank, separable

RNG = np.random.default_rng(11)
N, D = 400, 6
X, Y = RNG.normal(size=(N, D)), (RNG.uniform(size=N) < 0.5).astype(float)


def logreg(w):
    z = X @ w
    return np.sum(np.logaddexp(0.0, z) - Y * z) / N


def logreg_hessian(w):
    s = 1 / (1 + np.exp(-(X @ w)))
    return (X.T * (s * (1 - s))) @ X / N


def neo(ne):
    """A 2-D neo-Hookean energy over a strip of triangles; ``Dinv`` (one 2 x 2 matrix per triangle) is data."""
    T = np.stack([np.arange(ne), np.arange(ne) + 1, np.arange(ne) + 2], 1)
    X0 = np.stack([0.5 * np.arange(ne + 2), 0.8 * (np.arange(ne + 2) % 2)], 1)
    Dinv = np.linalg.inv(np.stack([X0[T[:, 1]] - X0[T[:, 0]], X0[T[:, 2]] - X0[T[:, 0]]], -1))

    def f(x):
        P = x.reshape(ne + 2, 2)
        xa, xb, xc = P[T[:, 0]], P[T[:, 1]], P[T[:, 2]]
        F = np.stack([xb - xa, xc - xa], -1) @ Dinv
        J = np.linalg.det(F)
        return np.sum(0.5 * (np.sum(F * F, axis=(1, 2)) - 2) - np.log(J) + np.log(J) ** 2)

    x = (X0 @ np.array([[1.02, 0.01], [-0.02, 0.99]])).ravel()
    return f, x + RNG.uniform(-0.01, 0.01, x.size)


def _separable_map(fun):
    H = higher.hessian_tape(fun.tape)
    assert len(H.maps) == 1 and separable.separable(fun.tape) is not None
    return H.maps[0]


def test_a_sum_of_a_function_of_one_linear_form_has_the_product_hessian():
    w = RNG.normal(size=D) * 0.3
    fun = tapead.record(logreg, w)
    H_tape = higher.hessian_tape(fun.tape)
    assert any(isinstance(m, Product) for m in H_tape.maps)  # X^T diag(phi'') X as one product loop
    assert lowrank.linear_form(separable._body(fun.tape)[2], D) is not None
    H = fun.hessian(w)
    assert np.array_equal(H, H.T)
    assert_close(H, logreg_hessian(w), 1e-13, scale=magnitude(H))
    assert_close(H, tapead.record(logreg, w, structured=False).hessian(w), 1e-13, scale=magnitude(H))
    v, g, H2 = fun.value_gradient_hessian(w)
    assert np.array_equal(H2, H) and v == fun.value(w) and np.array_equal(g, fun.gradient(w))
    rows, cols = fun.hessian_sparsity()
    assert len(rows) == D * D
    r, c, values = fun.sparse_hessian(w)  # (the separable sums: equal to rounding)
    assert np.array_equal(r, rows) and np.array_equal(c, cols)
    assert_close(values, H[rows, cols], 1e-13, scale=magnitude(H))


def test_two_linear_forms_of_broadcast_inputs_are_separable_with_sum_entries():
    Z = RNG.normal(size=(N, D))

    def f(w):
        return np.sum(np.log(1.0 + (X @ w) ** 2) * np.exp(0.1 * (Z @ w))) / N

    w = RNG.normal(size=D) * 0.3
    fun = tapead.record(f, w)
    m = _separable_map(fun)
    assert m.kinds == (Out.SUM,) * (D * D) and m.scatter_size == 0  # w is read whole by every row
    H = fun.hessian(w)
    assert np.array_equal(H, H.T)
    want = tapead.record(f, w, structured=False).hessian(w)
    assert_close(H, want, 1e-12, scale=magnitude(want))
    assert_close(H, fd_hessian(fun.gradient, w), 1e-6, scale=magnitude(want))


def test_an_element_reference_shape_read_as_data_keeps_a_finite_element_hessian_separable():
    f, x = neo(300)
    fun = tapead.record(f, x)
    m = _separable_map(fun)
    assert Out.SCATTER in m.kinds and m.tables.shape[1] > 6  # six vertex coordinates, and Dinv's entries
    H = fun.hessian(x)
    assert np.array_equal(H, H.T)
    want = tapead.record(f, x, structured=False).hessian(x)
    assert_close(H, want, 1e-12, scale=magnitude(want))
    assert_close(H, fd_hessian(fun.gradient, x), 1e-6, scale=magnitude(want))
    rows, cols = fun.hessian_sparsity()
    flat_rows, flat_cols = tapead.record(f, x, structured=False).hessian_sparsity()
    assert np.array_equal(rows, flat_rows) and np.array_equal(cols, flat_cols)


def test_a_broadcast_input_also_read_by_an_iteration_adds_both_entries_in_one_place():
    # x[0] is read by every iteration (a broadcast column) and by iteration 0 (the loop column): entry (0, 0)
    # gets both; the broadcast pair's entry then goes to the scatter range with the others
    c = np.linspace(0.5, 1.5, 300)

    def f(x):
        return np.sum(np.sin(x * x[0]) * c + x ** 3)

    x = np.linspace(0.1, 0.9, 300)
    fun = tapead.record(f, x)
    H = fun.hessian(x)
    want = tapead.record(f, x, structured=False).hessian(x)
    assert_close(H, want, 1e-12, scale=magnitude(want))
    assert np.array_equal(H, H.T)


def test_parameters_read_by_the_loop_are_data_too():
    def f(x, p):
        return np.sum(p * np.exp(x) * x)

    x, p = np.linspace(-1, 1, 200), np.linspace(1, 2, 200)
    fun = tapead.record(f, x, params=p)
    assert separable.separable(fun.tape) is not None
    H = fun.hessian(x, params=p)
    assert_close(np.diag(H), p * np.exp(x) * (x + 2), 1e-14, scale=magnitude(H))
    assert np.count_nonzero(H - np.diag(np.diag(H))) == 0


def test_a_column_mixing_inputs_and_constants_is_not_separable_and_still_right():
    idx = np.arange(250) % 203  # reads x (200 entries) and three constants through one gather

    def f(x):
        z = np.concatenate([x, np.array([0.5, 1.5, 2.5])])[idx]
        return np.sum(np.exp(0.1 * z) * z)

    x = np.linspace(-1, 1, 200)
    fun = tapead.record(f, x)
    assert fun.tape.maps and separable.separable(fun.tape) is None
    H = fun.hessian(x)
    want = tapead.record(f, x, structured=False).hessian(x)
    assert_close(H, want, 1e-12, scale=magnitude(want))


def test_logistic_regression_hessian_vs_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    w = RNG.normal(size=D) * 0.3

    def jf(w):
        z = jnp.asarray(X) @ w
        return jnp.sum(jnp.logaddexp(0.0, z) - jnp.asarray(Y) * z) / N

    want = np.asarray(jax.hessian(jf)(jnp.asarray(w)))
    assert_close(tapead.record(logreg, w).hessian(w), want, 1e-13, scale=magnitude(want))


def test_a_body_linear_in_its_inputs_has_an_empty_sparse_hessian():
    c = np.linspace(0.5, 1.5, 300)
    fun = tapead.record(lambda x: np.sum(c * x + np.sin(c)), np.linspace(-1, 1, 300))
    rows, cols, values = fun.sparse_hessian(np.linspace(-1, 1, 300))
    assert len(rows) == len(cols) == len(values) == 0
    assert np.count_nonzero(fun.hessian(np.linspace(-1, 1, 300))) == 0


def test_iterations_without_a_cotangent_are_seeded_with_a_zero_constant_not_nan():
    def f(x):
        y = np.exp(x) * x
        return np.sum(y[:100]) + np.sum(y[150:] ** 2)

    x = np.linspace(-1, 1, 300)
    fun = tapead.record(f, x)
    from tapead.transforms import ad
    g = ad.grad(fun.tape)
    assert not np.isnan(g.consts).any() and all(not np.isnan(m.body.consts).any() for m in g.maps)
    assert_close(fun.gradient(x), tapead.record(f, x, structured=False).gradient(x), 1e-13)


def test_a_linear_form_with_an_offset_and_a_poisson_likelihood():
    b = RNG.normal(size=N)

    def f(w):
        z = X @ w + b
        return np.sum(np.exp(z) - Y * z)

    w = RNG.normal(size=D) * 0.1
    fun = tapead.record(f, w)
    assert lowrank.linear_form(separable._body(fun.tape)[2], D) is not None
    s = np.exp(X @ w + b)
    assert_close(fun.hessian(w), (X.T * s) @ X, 1e-13, scale=magnitude((X.T * s) @ X))


def test_an_input_also_read_outside_the_linear_form_is_not_low_rank():
    def f(w):
        return np.sum(np.tanh(X @ w) * w[0])

    w = RNG.normal(size=D) * 0.3
    fun = tapead.record(f, w)
    assert lowrank.linear_form(separable._body(fun.tape)[2], D) is None
    want = tapead.record(f, w, structured=False).hessian(w)
    assert_close(fun.hessian(w), want, 1e-12, scale=magnitude(want))


PHIS = {  # phi(z, y): the body's function of its linear form, y a data value
    "logistic": lambda z, y: np.logaddexp(0.0, z) - y * z,
    "poisson": lambda z, y: np.exp(0.3 * z) - y * z,
    "cauchy": lambda z, y: np.log(1.0 + (z - y) ** 2),
    "tanh": lambda z, y: np.tanh(z) * y + z * z,
}


@settings(deadline=None, max_examples=max(10, settings().max_examples // 4))
@given(st.sampled_from(sorted(PHIS)), st.integers(1, 7), st.integers(2, 40), st.booleans(), st.booleans(),
       st.integers(0, 2 ** 16))
def test_random_sums_of_functions_of_a_linear_form(phi, d, n, offset, extra, seed):
    """Random generalised linear models: the product form (or the separable sums, when a second term reads the
    inputs) against the unrolled tape's sweeps, finite differences and value_gradient_hessian."""
    rng = np.random.default_rng(seed)
    Xr, yr, br = rng.normal(size=(n, d)), rng.normal(size=n), rng.normal(size=n) if offset else np.zeros(n)

    def f(w):
        z = Xr @ w + br if offset else np.sum(Xr * w, axis=1)
        total = np.sum(PHIS[phi](z, yr))
        return total + np.sum(np.sin(Xr[:, 0] * w[0])) if extra else 0.5 * total

    w = 0.3 * rng.normal(size=d)
    fun = tapead.record(f, w, structured=True)
    H, want = fun.hessian(w), tapead.record(f, w, structured=False).hessian(w)
    assert np.array_equal(H, H.T)
    assert_close(H, want, 1e-10, atol=1e-13, scale=magnitude(want))
    assert np.array_equal(fun.value_gradient_hessian(w)[2], H)
    assert_close(H, fd_hessian(fun.gradient, w), 1e-5, atol=1e-7, scale=magnitude(want))


def test_an_infinite_data_value_leaves_the_hessian_to_the_sweeps():
    Xi = X.copy()
    Xi[7, 1] = np.inf

    def f(w):
        return np.sum(Y * (Xi @ w)) + np.sum(np.exp(0.1 * np.sum(X * w, axis=1)))

    w = RNG.normal(size=D) * 0.3
    fun = tapead.record(f, w)
    assert separable.separable(fun.tape) is None
    want = tapead.record(f, w, structured=False).hessian(w)
    assert np.array_equal(np.isnan(fun.hessian(w)), np.isnan(want))
    assert_close(np.nan_to_num(fun.hessian(w)), np.nan_to_num(want), 1e-13, scale=magnitude(np.nan_to_num(want)))
