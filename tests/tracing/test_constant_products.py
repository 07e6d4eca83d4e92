"""A constant matrix times a traced vector records as one loop over the matrix's long axis (``X @ w``,
``x @ A``, ``np.dot``), computing what the unrolled product computes; short matrices keep the product on cells."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, assert_matches_unrolled, magnitude

RNG = np.random.default_rng(4)
X = RNG.normal(size=(150, 7))
Y = (RNG.uniform(size=150) < 0.5).astype(float)
A = RNG.normal(size=(90, 90))


def logistic(w):
    z = X @ w
    return np.sum(np.logaddexp(0.0, z) - Y * z) / len(Y)


def logistic_dot(w):
    z = np.dot(X, w)
    return np.mean(np.log1p(np.exp(-z * (2 * Y - 1))))


def quadratic(x):
    return x.T @ A @ x + np.sum(np.matmul(x, A[:, :5]) ** 2)


CASES = [(logistic, 7), (logistic_dot, 7), (quadratic, 90)]


@pytest.mark.parametrize("f, n", CASES, ids=lambda c: getattr(c, "__name__", str(c)))
def test_constant_products_are_loops(f, n):
    x0 = np.linspace(-0.5, 0.5, n)
    x1 = x0 + 0.1 * np.cos(np.arange(n))
    s = tapead.record(f, x0)
    u = tapead.record(f, x0, structured=False)
    assert len(s.maps) >= 1 and len(s) < len(u) // 4
    assert_matches_unrolled(f, x1, s, u)
    H = s.hessian(x1)
    assert_close(H, u.hessian(x1), 1e-11, scale=magnitude(H))


def test_the_hessian_of_a_quadratic_form_is_a_plus_a_transposed():
    x = np.linspace(-1, 1, 90)
    t = tapead.record(lambda v: v.T @ A @ v, x)
    assert_close(t.gradient(x), (A + A.T) @ x, 1e-12, scale=magnitude((A + A.T) @ x))
    assert_close(t.hessian(x), A + A.T, 1e-13, scale=magnitude(A))


def test_short_matrices_keep_the_product_on_cells():
    t = tapead.record(lambda w: np.sum(X[:5] @ w), np.ones(7))
    assert t.maps == () and len(t) > 5
    assert_close(t.gradient(np.ones(7)), X[:5].sum(axis=0), 1e-14, scale=magnitude(X))
