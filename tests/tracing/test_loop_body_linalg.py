"""Stacking, small linear algebra and block transposes of loop arrays stay in the loop body: a neo-Hookean energy
written with ``np.stack``, ``Ds @ Dinv``, ``np.linalg.det``, ``Fᵀ F`` and its trace is one loop like the
component-wise form, and both compute what
the unrolled tape computes (values, gradients, HVPs), with gradients against central differences."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, assert_matches_unrolled, fd_gradient, magnitude

NE = 80
NV = NE + 2
T = np.stack([np.arange(NE), np.arange(NE) + 1, np.arange(NE) + 2], 1)
X0 = np.stack([0.5 * np.arange(NV), 0.8 * (np.arange(NV) % 2)], 1) + \
    np.random.default_rng(0).uniform(0, 0.05, (NV, 2))  # a strip of well-shaped triangles
DINV = np.linalg.inv(np.stack([X0[T[:, 1]] - X0[T[:, 0]], X0[T[:, 2]] - X0[T[:, 0]]], -1))
MU, LAM = 1.0, 2.0


def neo_hookean(x):
    P = x.reshape(NV, 2)
    xa, xb, xc = P[T[:, 0]], P[T[:, 1]], P[T[:, 2]]
    Ds = np.stack([xb - xa, xc - xa], -1)
    F = Ds @ DINV
    J = np.linalg.det(F)
    I1 = np.sum(F * F, axis=(1, 2))
    return np.sum(0.5 * MU * (I1 - 2) - MU * np.log(J) + 0.5 * LAM * np.log(J) ** 2)


def components(x):
    P = x.reshape(NV, 2)
    xa, xb, xc = P[T[:, 0]], P[T[:, 1]], P[T[:, 2]]
    d1, d2 = xb - xa, xc - xa
    F00 = d1[:, 0] * DINV[:, 0, 0] + d2[:, 0] * DINV[:, 1, 0]
    F01 = d1[:, 0] * DINV[:, 0, 1] + d2[:, 0] * DINV[:, 1, 1]
    F10 = d1[:, 1] * DINV[:, 0, 0] + d2[:, 1] * DINV[:, 1, 0]
    F11 = d1[:, 1] * DINV[:, 0, 1] + d2[:, 1] * DINV[:, 1, 1]
    J = F00 * F11 - F01 * F10
    I1 = F00 ** 2 + F01 ** 2 + F10 ** 2 + F11 ** 2
    return np.sum(0.5 * MU * (I1 - 2) - MU * np.log(J) + 0.5 * LAM * np.log(J) ** 2)


def inverse_and_concatenate(x):
    P = x.reshape(NV, 2)
    xa, xb, xc = P[T[:, 0]], P[T[:, 1]], P[T[:, 2]]
    Ds = np.concatenate([(xb - xa)[:, :, None], (xc - xa)[:, :, None]], axis=2)
    G = np.linalg.inv(Ds) @ np.linalg.inv(Ds @ DINV)
    M = np.stack([xa - xc, xb - xc, xc * 1.0], axis=1)  # (NE, 3, 2)
    return np.sum(G * G) + np.sum(M @ np.array([1.0, -2.0])) + np.sum(np.dot(xb - xc, np.array([[1.0, 2.0], [0.0, 3.0]])))


def cauchy_green(x):
    """``C = Fᵀ F`` spelled four ways, its trace and diagonal, a reshape that keeps the loop axis, ``.T``."""
    P = x.reshape(NV, 2)
    xa, xb, xc = P[T[:, 0]], P[T[:, 1]], P[T[:, 2]]
    F = np.stack([xb - xa, xc - xa], -1) @ DINV
    C1 = F.transpose(0, 2, 1) @ F
    C2 = np.einsum("nki,nkj->nij", F, F)
    C3 = np.swapaxes(F, 1, 2) @ F
    C4 = np.transpose(F, (0, 2, 1)) @ F.reshape(NE, 4).reshape(-1, 2, 2)
    I1 = np.trace(C1, axis1=1, axis2=2)
    J = np.linalg.det(F)
    d = np.diagonal(C2, axis1=1, axis2=2)  # (NE, 2)
    return np.sum(0.5 * (I1 - 2) - np.log(J) + 0.5 * np.log(J) ** 2) + 0.1 * np.sum(C3 * C4) + \
        0.01 * np.sum(d.T ** 2 * np.array([[1.0], [2.0]]))


CASES = [neo_hookean, components, inverse_and_concatenate, cauchy_green]


@pytest.mark.parametrize("f", CASES, ids=lambda f: f.__name__)
def test_stacked_bodies_are_loops_and_match_the_unrolled_tape(f):
    x0 = (X0 * 1.05).ravel()
    x1 = (X0 @ np.array([[1.02, 0.01], [-0.02, 0.99]])).ravel()  # an affine map: every triangle keeps J > 0
    s = tapead.record(f, x0)
    u = tapead.record(f, x0, structured=False)
    assert len(s) <= 8 and len(s.maps) >= 1 and len(u) > 500  # a few loops and the additions of their sums
    assert_matches_unrolled(f, x1, s, u, 1e-11)
    v = np.cos(np.arange(x1.size))
    h = u.hvp(x1, v=v)
    assert_close(s.hvp(x1, v=v), h, 1e-10, scale=magnitude(h))


def test_the_stacked_form_equals_the_component_form():
    x = (X0 * 1.03).ravel()
    a, b = tapead.record(neo_hookean, x), tapead.record(components, x)
    assert len(a.maps[0].body) <= 2 * len(b.maps[0].body)
    assert_close(a.value(x), b.value(x), 1e-13, scale=magnitude(b.value(x)))
    assert_close(a.gradient(x), b.gradient(x), 1e-12, scale=magnitude(b.gradient(x)))


def test_what_the_body_cannot_take_materialises_and_stays_right():
    def f(x):
        P = x.reshape(NV, 2)
        d = P[T[:, 1]] - P[T[:, 0]]
        S = np.stack([d, d * d], axis=0)  # in front of the loop axis
        A = np.stack([d, d[:, ::-1]], -1)  # (NE, 2, 2)
        return np.sum(S ** 2) + np.sum(np.linalg.det(A @ A + np.eye(2)) ** 2) + np.sum(np.linalg.eigvalsh(A @ A.transpose(0, 2, 1) + np.eye(2)))

    x = X0.ravel()
    t = tapead.record(f, x)
    assert_close(t.value(x), f(x), 1e-12, scale=magnitude(f(x)))
    fd = fd_gradient(f, x)
    assert_close(t.gradient(x), fd, 1e-7, scale=magnitude(fd))


def dihedral_energy(x, xp=np):
    """A torsion term of a force field: ``np.cross`` of loop arrays, row norms, ``arctan2``."""
    Q = np.stack([np.arange(90), np.arange(90) + 1, np.arange(90) + 2, np.arange(90) + 3], 1)
    P = x.reshape(-1, 3)
    p0, p1, p2, p3 = P[Q[:, 0]], P[Q[:, 1]], P[Q[:, 2]], P[Q[:, 3]]
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = xp.cross(b1, b2), xp.cross(b2, b3)
    m1 = xp.cross(n1, b2 / xp.sqrt(xp.sum(b2 * b2, axis=1))[:, None])
    phi = xp.arctan2(xp.sum(m1 * n2, axis=1), xp.sum(n1 * n2, axis=1))
    return xp.sum(1.5 * (1 + xp.cos(3 * phi - 0.2)))


def test_a_torsion_energy_with_cross_products_is_one_loop():
    x = np.random.default_rng(8).normal(size=93 * 3)
    s, u = tapead.record(dihedral_energy, x), tapead.record(dihedral_energy, x, structured=False)
    assert len(s) <= 8 and len(s.maps) == 1 and len(u) > 3000
    assert_matches_unrolled(dihedral_energy, x * 1.01, s, u, 1e-11)
    import autograd
    import autograd.numpy as anp
    ref = autograd.grad(lambda q: dihedral_energy(q, anp))(x)
    assert_close(s.gradient(x), ref, 1e-11, scale=magnitude(ref))
    v = np.cos(np.arange(x.size))
    assert_close(s.hvp(x, v=v), u.hvp(x, v=v), 1e-10, scale=magnitude(u.hvp(x, v=v)))
