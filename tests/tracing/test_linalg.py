"""np.linalg on traced values: values against numpy (interpreter and compiled kernels), gradients against finite
differences and JAX, pivot/order guards that flip (re-record), and loaded tapes that cannot re-record."""
import numpy as np
import pytest

import tapead
from check import fd_gradient
import tapead.runtime.branches

RNG = np.random.default_rng(1234)
SHAPES = [(1, 1), (4, 4), (6, 6), (2, 3, 3)]


def central(f, x):
    """Finite-difference gradient of a scalar function of one array (tests/check.py)."""
    return fd_gradient(f, x)


def check(f, x, x2, rtol=1e-12, atol=1e-13, grad_rtol=1e-6):
    """Values at a nearby point (same path) by interpreter and kernels; the gradient of a random weighting of
    the outputs against central differences. Returns the tape and the weighting."""
    t = tapead.record(f, x)
    ref = np.asarray(f(x2))
    assert np.allclose(t.evaluate(x2), ref, rtol=rtol, atol=atol)
    assert np.allclose(t.value(x2), ref, rtol=rtol, atol=atol)
    w = RNG.normal(size=ref.shape)
    scalar = lambda z: np.sum(w * np.asarray(f(z)))
    ts = tapead.record(scalar, x)
    g = ts.gradient(x2)
    assert np.allclose(g, central(scalar, x2), rtol=grad_rtol, atol=grad_rtol * 10)
    return ts, w


def jax_grad(fn, x):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return np.asarray(jax.grad(fn)(x))


def matrices(shape, spread=0.0):
    a = RNG.normal(size=shape) + (spread * np.eye(shape[-1]) if spread else 0.0)
    return a, a + 1e-3 * RNG.normal(size=shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_det_slogdet_inv(shape):
    a, a2 = matrices(shape, 2.0)
    for f in (np.linalg.det, np.linalg.inv, lambda m: np.stack(np.linalg.slogdet(m))):
        check(f, a, a2)


@pytest.mark.parametrize("shape", SHAPES)
def test_solve_vector_and_matrix_rhs(shape):
    a, a2 = matrices(shape, 2.0)
    n = shape[-1]
    b_vec, b_mat = RNG.normal(size=n), RNG.normal(size=shape[:-1] + (2,))
    check(lambda m: np.linalg.solve(m, b_vec), a, a2)
    check(lambda m: np.linalg.solve(m, b_mat), a, a2)
    x = np.concatenate([a.ravel(), b_mat.ravel()])
    split = lambda z: (z[:a.size].reshape(shape), z[a.size:].reshape(b_mat.shape))
    check(lambda z: np.linalg.solve(*split(z)), x, x + 1e-4)


def test_solve_broadcasts_like_numpy():
    a, b = RNG.normal(size=(3, 3)) + 3 * np.eye(3), RNG.normal(size=(2, 4, 3, 1))
    t = tapead.record(lambda m: np.linalg.solve(m, b), a)
    assert np.allclose(t.value(a), np.linalg.solve(a, b), rtol=1e-12)
    stack = RNG.normal(size=(4, 3, 3)) + 3 * np.eye(3)
    t = tapead.record(lambda v: np.linalg.solve(stack, v), np.ones(3))  # constant matrix: no guards
    assert len(t.guards) == 0 and np.allclose(t.value(np.arange(3.0)), np.linalg.solve(stack, np.arange(3.0)))
    with pytest.raises(ValueError, match="does not match"):
        tapead.record(lambda m: np.linalg.solve(m, np.ones(4)), a)


@pytest.mark.parametrize("shape", SHAPES)
def test_cholesky(shape):
    a, _ = matrices(shape)
    s = a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])
    t, _ = check(np.linalg.cholesky, s, s + 1e-3 * np.eye(shape[-1]))
    up = tapead.record(lambda m: np.linalg.cholesky(m, upper=True), s)
    assert np.allclose(up.value(s), np.linalg.cholesky(s, upper=True), rtol=1e-12)
    # only the lower triangle is read, as numpy
    g = tapead.record(lambda m: np.sum(np.linalg.cholesky(m)), s).gradient(s)
    assert np.all(g[..., np.triu_indices(shape[-1], 1)[0], np.triu_indices(shape[-1], 1)[1]] == 0.0)


def test_cholesky_not_positive_definite():
    s = np.diag([1.0, 2.0, 3.0])
    with pytest.raises(np.linalg.LinAlgError, match="positive definite"):
        tapead.record(np.linalg.cholesky, -s)
    t = tapead.record(np.linalg.cholesky, s)
    with pytest.raises(np.linalg.LinAlgError, match="positive definite"):  # the pivot guard flips: re-record
        t.value(np.diag([1.0, -2.0, 3.0]))


def spectra(shape):
    """Symmetric matrices with well-separated eigenvalues."""
    n = shape[-1]
    q, _ = np.linalg.qr(RNG.normal(size=shape))
    s = q @ (np.arange(1.0, n + 1) * 2.0 * np.eye(n)) @ np.swapaxes(q, -1, -2)
    return s, s + 1e-4 * (lambda e: e + np.swapaxes(e, -1, -2))(RNG.normal(size=shape))


@pytest.mark.parametrize("shape", SHAPES)
def test_eigvalsh_and_eigh(shape):
    s, s2 = spectra(shape)
    check(np.linalg.eigvalsh, s, s2, rtol=1e-11, atol=1e-12)
    t = tapead.record(lambda m: np.linalg.eigh(m).eigenvectors, s)
    v, w = t.value(s2), np.linalg.eigh(s2)[0]
    assert np.allclose(v @ (w[..., None] * np.swapaxes(v, -1, -2)), s2, atol=1e-12)  # V diag(w) V^T = S
    assert np.allclose(np.swapaxes(v, -1, -2) @ v, np.eye(shape[-1]), atol=1e-13)
    c = RNG.normal(size=shape[-1])
    proj = lambda m: np.sum(np.arange(1.0, shape[-1] + 1) * (np.swapaxes(np.linalg.eigh(m)[1], -1, -2) @ c) ** 2)
    g = tapead.record(proj, s).gradient(s2)  # sign-invariant function of the eigenvectors
    assert np.allclose(g, central(proj, s2), rtol=1e-5, atol=1e-6)


def test_eigh_upper_and_degenerate():
    s, _ = spectra((4, 4))
    lower_only = np.tril(s) + 7.0 * np.triu(np.ones((4, 4)), 1)
    t = tapead.record(lambda m: np.linalg.eigvalsh(m, UPLO="U"), np.triu(s) + np.tril(np.ones((4, 4)), -1))
    assert np.allclose(t.value(s), np.linalg.eigvalsh(s), rtol=1e-12)
    assert np.allclose(tapead.record(np.linalg.eigvalsh, lower_only).value(lower_only), np.linalg.eigvalsh(s))
    eye = tapead.record(lambda m: np.sum(np.linalg.eigvalsh(m)), np.eye(3))  # repeated eigenvalues
    assert eye.value(np.eye(3)) == 3.0 and np.all(np.isfinite(eye.gradient(np.eye(3))))


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (6, 6), (2, 3, 3), (5, 3), (3, 5)])
def test_singular_values_pinv_norms(shape):
    a, a2 = matrices(shape)
    check(lambda m: np.linalg.svd(m, compute_uv=False), a, a2, rtol=1e-11, atol=1e-12)
    check(np.linalg.pinv, a, a2, rtol=1e-10, atol=1e-11, grad_rtol=1e-5)
    for ord_ in ("nuc", 2, -2, 1, -np.inf):
        if len(shape) == 2:
            check(lambda m: np.linalg.norm(m, ord_), a, a2, rtol=1e-11, atol=1e-12)
    u, s, vh = tapead.record(lambda m: np.linalg.svd(m, full_matrices=False)[0], a).value(a2), *np.linalg.svd(
        a2, full_matrices=False)[1:]
    assert np.allclose(np.abs(np.swapaxes(u, -1, -2) @ a2 @ np.swapaxes(vh, -1, -2)),
                       s[..., None] * np.eye(s.shape[-1]), atol=1e-10)


def test_svd_refusals():
    a = RNG.normal(size=(4, 3))
    with pytest.raises(tapead.TracingError, match="full_matrices=False"):
        tapead.record(lambda m: np.linalg.svd(m)[1], a)
    with pytest.raises(tapead.TracingError, match="rank-deficient"):
        tapead.record(lambda m: np.linalg.svd(m, full_matrices=False)[0], np.ones((3, 3)))
    t = tapead.record(np.linalg.pinv, np.ones((3, 2)))  # rank 1: the zero singular value is dropped
    assert np.allclose(t.value(np.ones((3, 2))), np.linalg.pinv(np.ones((3, 2))), rtol=1e-12)


def _jax_cases():
    n = 4
    sym = lambda m, xnp: m + m.T
    return [
        ("det", lambda m, xnp: xnp.linalg.det(m), 2.0),
        ("slogdet", lambda m, xnp: xnp.linalg.slogdet(m)[1], 2.0),
        ("inv", lambda m, xnp: xnp.sum(xnp.linalg.inv(m) * xnp.arange(n * n).reshape(n, n)), 2.0),
        ("solve", lambda m, xnp: xnp.sum(xnp.linalg.solve(m, xnp.arange(1.0, n + 1)) ** 2), 2.0),
        ("cholesky", lambda m, xnp: xnp.sum(xnp.linalg.cholesky(m @ m.T + n * xnp.eye(n)) ** 3), 0.0),
        ("eigvalsh", lambda m, xnp: xnp.sum(xnp.linalg.eigvalsh(sym(m, xnp) + xnp.diag(xnp.arange(0.0, 4 * n, 4)))
                                            * xnp.arange(1.0, n + 1)), 0.0),
        ("svdvals", lambda m, xnp: xnp.sum(xnp.linalg.svd(m, compute_uv=False) * xnp.arange(1.0, n + 1)), 0.0),
        ("pinv", lambda m, xnp: xnp.sum(xnp.linalg.pinv(m[:, :3]) * xnp.arange(12.0).reshape(3, 4)), 0.0),
        ("nuc", lambda m, xnp: xnp.linalg.norm(m, "nuc"), 0.0),
    ]


@pytest.mark.parametrize("name, fn, spread", _jax_cases(), ids=[c[0] for c in _jax_cases()])
def test_gradients_match_jax(name, fn, spread):
    jnp = pytest.importorskip("jax.numpy")
    a = RNG.normal(size=(4, 4)) + spread * np.eye(4)
    g = tapead.record(lambda m: fn(m, np), a).gradient(a)
    assert np.allclose(g, jax_grad(lambda m: fn(m, jnp), a), rtol=1e-9, atol=1e-10)


def test_small_matrices_record_without_guards_when_branching_is_forbidden():
    a = RNG.normal(size=(2, 3, 3)) + 3 * np.eye(3)
    for f in (np.linalg.det, np.linalg.inv, lambda m: np.linalg.solve(m, np.ones(3))):
        t = tapead.record(f, a, on_branch="forbid")
        assert len(t.guards) == 0 and np.allclose(t.value(a + 0.1), f(a + 0.1), rtol=1e-12)
    with pytest.raises(tapead.TracingError, match="truth value"):
        tapead.record(np.linalg.det, np.eye(4), on_branch="forbid")


def test_pivot_flip_re_records_and_stays_exact():
    a = np.array([[4.0, 1, 0, 2], [1, 3, 1, 0], [0, 1, 5, 1], [2, 0, 1, 6]])
    b = a[[3, 1, 2, 0]] * [[1.0], [1], [1], [10]]  # the largest entry of column 0 moves: other pivots
    f = lambda m: np.linalg.solve(m, np.arange(1.0, 5.0))
    t = tapead.record(f, a)
    assert np.allclose(t.value(b), f(b), rtol=1e-13)
    assert np.allclose(t.evaluate(b), f(b), rtol=1e-13)
    assert tapead.runtime.branches.stats(t)["records"] >= 1
    g = tapead.record(lambda m: np.linalg.det(m), a)
    assert np.allclose(g.gradient(b), np.linalg.det(b) * np.linalg.inv(b).T, rtol=1e-12)


def test_loaded_tape_refuses_a_flipped_pivot(tmp_path):
    a = np.array([[4.0, 1, 0, 2], [1, 3, 1, 0], [0, 1, 5, 1], [2, 0, 1, 6]])
    tapead.record(np.linalg.det, a).save(tmp_path / "det.tape")
    t = tapead.load(tmp_path / "det.tape")
    assert np.isclose(t.value(a * 1.01), np.linalg.det(a * 1.01), rtol=1e-13)
    with pytest.raises(tapead.BranchError, match="when recorded"):
        t.value(a[[1, 0, 2, 3]] * [[1.0], [9], [1], [1]])


def test_eigenvalue_order_flip_re_records():
    s = np.diag([1.0, 2.0, 3.0]) + 0.1
    t = tapead.record(np.linalg.eigvalsh, s)
    swapped = np.diag([3.0, 2.0, 1.0]) + 0.1
    assert np.allclose(t.value(swapped), np.linalg.eigvalsh(swapped), rtol=1e-13)


def test_singular_pivot_det_and_inv():
    a = np.ones((4, 4))  # rank one: column 1 has no pivot after the first step
    t = tapead.record(np.linalg.det, a)
    b = a + np.diag([0.0, 0.0, 1.0, 2.0])  # rank three: det 0, gradient = adjugate^T
    for x in (a, b):
        g = t.gradient(x)
        assert t.value(x) == 0.0 and np.allclose(g, central(np.linalg.det, x), atol=1e-7)
    with pytest.raises(np.linalg.LinAlgError, match="Singular"):
        tapead.record(np.linalg.inv, a)
    with pytest.raises(np.linalg.LinAlgError, match="Singular"):
        tapead.record(np.linalg.inv, np.ones((2, 2)))
    sign, logdet = tapead.record(lambda m: np.stack(np.linalg.slogdet(m)), a).value(a)
    assert sign == 0.0 and logdet == -np.inf


def test_non_square_is_numpys_error():
    with pytest.raises(np.linalg.LinAlgError, match="square"):
        tapead.record(np.linalg.det, np.ones((2, 3)))
