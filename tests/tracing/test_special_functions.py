"""scipy.special.erfinv, erfcinv, i0, i0e, i1, i1e on traced values: values within 2 ulps (inverses) or 10 ulps
(Bessel) of scipy, first and second derivatives
against the closed forms (``sqrt(pi)/2 exp(y^2)``, and its derivative), JAX when installed, and central
differences; the edges (+-1, outside [-1, 1], NaN, the far tails of erfcinv) as scipy gives them."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, fd_gradient

sc = pytest.importorskip("scipy.special")

X = np.array([-0.999999, -0.9, -0.5, -0.3, 0.0, 1e-8, 0.2, 0.49, 0.5, 0.51, 0.8, 0.99, 0.9999999, 1 - 1e-15,
              -(1 - 1e-16)])
Q = np.array([1e-300, 1e-20, 1e-5, 0.3, 0.5, 1.0, 1.3, 1.7, 2 - 1e-10])


def _ulps(got, want):
    return np.abs(got - want) / np.spacing(np.abs(want))


@pytest.mark.parametrize("structured", [False, True])
def test_erfinv_values_and_derivatives(structured):
    t = tapead.record(lambda v: sc.erfinv(v), X, structured=structured)
    y = sc.erfinv(X)
    assert np.all(_ulps(t.value(X), y) <= 2)
    d = np.sqrt(np.pi) / 2 * np.exp(y ** 2)
    assert_close(np.diag(t.jacobian(X)), d, 1e-13)
    s = tapead.record(lambda v: np.sum(sc.erfinv(v)), X[:12], structured=structured)
    assert_close(np.diag(s.hessian(X[:12])), 2 * y[:12] * d[:12] ** 2, 1e-13, atol=1e-300)
    inner = X[1:12]
    assert_close(s.gradient(X[:12])[1:12], fd_gradient(lambda v: np.sum(sc.erfinv(v)), X[:12])[1:12], 1e-7,
                 scale=float(np.max(d[:12])))
    assert inner.size


def test_erfcinv_values_and_derivatives_in_the_tails():
    t = tapead.record(lambda v: sc.erfcinv(v), Q)
    y = sc.erfcinv(Q)
    assert np.all(_ulps(t.value(Q), y) <= 2)
    assert_close(np.diag(t.jacobian(Q)), -np.sqrt(np.pi) / 2 * np.exp(y ** 2), 1e-13)


def test_edges_as_scipy():
    t = tapead.record(lambda v: sc.erfinv(v), np.array([0.5]))
    for x in (1.0, -1.0, 1.5, -2.0, np.nan):
        got, want = t.value(np.array([x]))[0], sc.erfinv(x)
        assert got == want or (np.isnan(got) and np.isnan(want))
    c = tapead.record(lambda v: sc.erfcinv(v), np.array([0.5]))
    for q in (0.0, 2.0, -0.5, 2.5):
        got, want = c.value(np.array([q]))[0], sc.erfcinv(q)
        assert got == want or (np.isnan(got) and np.isnan(want))


def test_erfinv_gradient_against_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.scipy.special as jsc
    x = X[1:13]
    f = lambda v, s: np.sum(s.erfinv(v) * np.arange(1.0, 13.0))  # noqa: E731
    t = tapead.record(lambda v: f(v, sc), x)
    want = np.asarray(jax.grad(lambda v: jax.numpy.sum(jsc.erfinv(v) * jax.numpy.arange(1.0, 13.0)))(x))
    assert_close(t.gradient(x), want, 1e-9)  # JAX's own erfinv is this close in the far tail (0.9999999)


# ---- modified Bessel functions of the first kind ----------------------------------------------------------------
B = np.concatenate([np.linspace(-30, 30, 61), [1e-8, -1e-8, 19.99, 20.0, 20.01, 100.0, 700.0, 0.0]])


def _bessel_derivative(name, x):
    with np.errstate(all="ignore"):
        return {"i0": sc.i1(x), "i1": sc.i0(x) - sc.i1(x) / x, "i0e": sc.i1e(x) - np.sign(x) * sc.i0e(x),
                "i1e": sc.i0e(x) - sc.i1e(x) * (np.sign(x) + 1 / x)}[name]


@pytest.mark.parametrize("name", ["i0", "i0e", "i1", "i1e"])
def test_bessel_values_and_derivatives(name):
    f = getattr(sc, name)
    t = tapead.record(lambda v: f(v), B)
    got, want = t.value(B), f(B)
    nonzero = want != 0
    assert np.all(_ulps(got[nonzero], want[nonzero]) <= 10) and np.array_equal(got[~nonzero], want[~nonzero])
    d = _bessel_derivative(name, B)
    ok = np.isfinite(d) & (B != 0)
    J = np.diag(t.jacobian(B))
    assert np.all(np.abs(J[ok] - d[ok]) <= 1e-12 * np.abs(d[ok]) + 1e-15)
    inner = (np.abs(B) > 0.5) & (np.abs(B) < 25)
    fd = fd_gradient(lambda v: np.sum(f(v)), B[inner])
    assert_close(tapead.record(lambda v: np.sum(f(v)), B[inner]).gradient(B[inner]), fd, 1e-7,
                 scale=float(np.max(np.abs(fd))))


def test_numpy_i0_records():
    x = np.array([0.5, 2.0, -3.0])
    t = tapead.record(lambda v: np.sum(np.i0(v) * v), x)
    assert_close(t.value(x), np.sum(np.i0(x) * x), 1e-15)
    assert_close(t.gradient(x), np.i0(x) + x * sc.i1(x), 1e-13)
