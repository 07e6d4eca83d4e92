"""Products of traced matrices record as one loop over the output's entries (a dot product per entry): an MLP
is a few loops, not millions of scalar rows, and its gradient matches JAX/autograd, central differences and the
unrolled tape."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, fd_gradient, magnitude

RNG = np.random.default_rng(7)
X = RNG.normal(size=(40, 5))
Y = RNG.normal(size=40)
SIZES = [(5, 12), (12, 12), (12, 1)]
N_PARAMS = sum(a * b + b for a, b in SIZES)


def mlp(p, xp=np):
    h, at = X, 0
    for i, (a, b) in enumerate(SIZES):
        W = p[at:at + a * b].reshape(a, b)
        at += a * b
        c = p[at:at + b]
        at += b
        h = h @ W + c
        if i < len(SIZES) - 1:
            h = xp.tanh(h)
    return xp.mean((h[:, 0] - Y) ** 2)


def test_an_mlp_records_as_loops_and_its_gradient_is_right():
    p = RNG.normal(size=N_PARAMS) * 0.3
    t = tapead.record(mlp, p)
    u = tapead.record(mlp, p, structured=False)
    assert len(t.maps) >= 2 and sum(len(m.body) for m in t.maps) < len(u) // 10  # the two 480-entry products
    assert_close(t.value(p), mlp(p), 1e-13)
    g = t.gradient(p)
    assert_close(g, u.gradient(p), 1e-12, scale=magnitude(g))
    fd = fd_gradient(mlp, p)
    assert_close(g, fd, 1e-7, scale=magnitude(fd))
    import autograd
    import autograd.numpy as anp
    want = autograd.grad(lambda q: mlp(q, anp))(p)
    assert_close(g, want, 1e-12, scale=magnitude(want))
    v = np.cos(np.arange(p.size))
    assert_close(t.hvp(p, v=v), u.hvp(p, v=v), 1e-11, scale=magnitude(u.hvp(p, v=v)))


@pytest.mark.parametrize("case", ["both traced", "constant left", "constant right", "np.dot", "matmul"])
def test_matrix_products_match_the_unrolled_tape(case):
    A0, B0 = RNG.normal(size=(9, 6)), RNG.normal(size=(6, 11))

    def f(x):
        A, B = x[:54].reshape(9, 6), x[54:].reshape(6, 11)
        if case == "constant left":
            C = A0 @ B
        elif case == "constant right":
            C = A @ B0
        elif case == "np.dot":
            C = np.dot(A, B)
        elif case == "matmul":
            C = np.matmul(A, B)
        else:
            C = A @ B
        return np.sum(np.sin(C) * np.arange(C.size).reshape(C.shape))

    x = RNG.normal(size=54 + 66)
    t, u = tapead.record(f, x), tapead.record(f, x, structured=False)
    assert len(t.maps) >= 1
    assert_close(t.value(x), f(x), 1e-12, scale=magnitude(f(x)))
    assert_close(t.gradient(x), u.gradient(x), 1e-12, scale=magnitude(u.gradient(x)))
    assert_close(t.hessian(x), u.hessian(x), 1e-11, scale=magnitude(u.hessian(x)))
