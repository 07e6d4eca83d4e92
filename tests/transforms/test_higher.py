"""Jacobians, Hessians, HVPs, third derivatives and sparse derivatives: against finite differences, the
interpreter, closed forms and each other."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, fd_hessian, fd_jacobian, magnitude
from functions import cumprod, rosenbrock, rosenbrock_chained, seed_bar
from functions import lj as lj_small
from tapead.runtime import derivatives
from tapead.transforms import sparsity
from tapead.errors import InputError

RNG = np.random.default_rng(7)


def lj_start(atoms=8):
    sites = [(i, j, k) for k in range(2) for j in range(2) for i in range(2)][:atoms]
    return 1.1 * np.array(sites, float).ravel() + RNG.uniform(-0.05, 0.05, 3 * atoms)


def vec_f(x):
    """A small vector-valued function with couplings of every kind."""
    return np.stack([np.sin(x[0]) * x[1], x[0] ** 2 * x[2] / (1.0 + x[1] ** 2), np.exp(x[1] * x[2]) - x[0]])


# ---- Jacobians, JVPs, VJPs ----------------------------------------------------------------------------
def test_cumprod_jacobian_all_modes_match_closed_form_and_interpreter():
    # n = 100 through the interpreter; the compiled kernels at n = 20 (keeps compile time out of the suite)
    for n, compiled in ((100, False), (20, True)):
        t = tapead.record(cumprod, RNG.uniform(0.8, 1.2, n))
        x = RNG.uniform(0.8, 1.2, n)
        exact = np.tril(np.cumprod(x)[:, None] / x[None, :])
        for mode in ("forward", "reverse", "auto"):
            jt = tapead.jacobian_tape(t, mode)
            assert jt.output_shape == (n, n) and jt.input_shapes == ((n,),)
            assert_close(jt.evaluate(x), exact, rtol=1e-12)
            if compiled:
                assert_close(derivatives.jacobian(t, x, mode=mode), exact, rtol=1e-12)
    assert_close(exact, fd_jacobian(cumprod, x))


def test_small_jacobian_fd_jvp_vjp_and_batches():
    x0 = np.array([0.3, -0.4, 0.9])
    t = tapead.record(vec_f, x0)
    x = np.array([0.7, 0.2, -0.5])
    J = derivatives.jacobian(t, x)
    assert_close(J, fd_jacobian(vec_f, x))
    assert_close(J, tapead.jacobian_tape(t).evaluate(x), rtol=1e-14)
    v, w = RNG.normal(size=3), RNG.normal(size=3)
    assert_close(derivatives.jvp(t, x, v=v), J @ v, rtol=1e-12)
    assert_close(derivatives.vjp(t, x, w=w), w @ J, rtol=1e-12)
    X = RNG.normal(size=(5, 3))
    JB = derivatives.jacobian(t, X, mode="forward")
    assert JB.shape == (5, 3, 3)
    for k in range(5):
        assert_close(JB[k], derivatives.jacobian(t, X[k], mode="reverse"), rtol=1e-12)
    assert_close(derivatives.jvp(t, X, v=v), np.einsum("kij,j->ki", JB, v), rtol=1e-12)  # one shared v
    W = RNG.normal(size=(5, 3))
    assert_close(derivatives.vjp(t, X, w=W), np.einsum("ki,kij->kj", W, JB), rtol=1e-12)
    out = np.empty((3, 3))
    assert derivatives.jacobian(t, x, out=out) is not None and np.array_equal(out, J)


def test_seed_bar_exact():
    t = tapead.record(seed_bar, np.ones(3))
    x = np.array([1.5, -2.0, 0.25])
    assert_close(derivatives.jacobian(t, x), [x[1], x[0] + x[2], x[1]], rtol=0)
    H = derivatives.hessian(t, x)
    assert np.array_equal(H, [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    rows, cols = t.hessian_sparsity()
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1)]
    ht = tapead.hessian_tape(t)  # a constant Hessian: no ops left, the entries are constants
    assert len(ht) == 0 and ht.output_shape == (3, 3) and np.array_equal(ht.evaluate(x), H)
    assert "(3, 3)" in str(ht) and str(ht).count("1.0") == 4


def test_per_argument_jacobians_of_two_argument_tape():
    def f(x, u):
        return np.stack([x[1] * u[0], -np.sin(x[0]) + x[1] * u[1] ** 2, x[0] * x[1]])

    x0, u0 = np.array([0.1, 0.2]), np.array([1.0, -1.0])
    t = tapead.record(f, x0, u0)
    x, u = np.array([0.4, -0.3]), np.array([0.5, 2.0])
    Jx, Ju = derivatives.jacobian(t, x, u)
    assert Jx.shape == (3, 2) and Ju.shape == (3, 2)
    assert_close(Jx, fd_jacobian(lambda y: f(y, u), x))
    assert_close(Ju, fd_jacobian(lambda y: f(x, y), u))
    dense = tapead.jacobian_tape(t).evaluate(x, u)
    assert_close(np.concatenate([Jx, Ju], axis=1), dense, rtol=1e-14)
    outs = (np.empty((3, 2)), np.empty((3, 2)))
    derivatives.jacobian(t, x, u, out=outs)
    assert np.array_equal(outs[0], Jx) and np.array_equal(outs[1], Ju)
    X, U = RNG.normal(size=(4, 2)), RNG.normal(size=(4, 2))
    JX, JU = derivatives.jacobian(t, X, U)
    assert JX.shape == (4, 3, 2)
    assert_close(JU[2], derivatives.jacobian(t, X[2], U[2])[1], rtol=1e-14)
    assert_close(derivatives.jvp(t, x, u, v=(np.ones(2), np.zeros(2))), Jx @ np.ones(2), rtol=1e-12)
    gx, gu = derivatives.vjp(t, x, u, w=np.array([1.0, 2.0, 3.0]))
    assert_close(gu, np.array([1.0, 2.0, 3.0]) @ Ju, rtol=1e-12)


# ---- Hessians -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("f,x", [(rosenbrock, np.linspace(-1.0, 1.2, 20)),
                                 (rosenbrock_chained, np.linspace(-1.0, 1.2, 20)),
                                 (lj_small, lj_start(4))])
def test_hessian_matches_fd_of_gradient_and_is_symmetric(f, x):
    t = tapead.record(f, x + 0.01)
    H = derivatives.hessian(t, x)
    assert np.array_equal(H, H.T)
    assert_close(H, fd_hessian(t.gradient, x), scale=magnitude(H))
    assert_close(H, tapead.hessian_tape(t).evaluate(x), rtol=1e-12)
    v = RNG.normal(size=x.size)
    assert_close(derivatives.hvp(t, x, v=v), H @ v, rtol=1e-10)
    assert_close(tapead.hvp_tape(t).evaluate(x, v), H @ v, rtol=1e-10)
    val, g, H2 = derivatives.value_gradient_hessian(t, x)
    assert np.isclose(val, t(x)) and np.allclose(g, t.gradient(x), rtol=1e-13)
    assert_close(H2, H, rtol=1e-13)


def test_lj_8_atoms_hessian_interpreted():
    x = lj_start(8)
    t = tapead.record(lj_small, x + 0.01)
    H = tapead.hessian_tape(t).evaluate(x)
    assert np.array_equal(H, H.T)
    assert_close(H, fd_hessian(t.gradient, x), scale=magnitude(H))
    rows, cols = t.hessian_sparsity()
    assert len(rows) == 24 * 24
    assert_close(tapead.sparse_hessian_tape(t).evaluate(x), H[rows, cols], rtol=1e-13)


def test_batch_hessians_equal_per_point():
    x = lj_start(4)
    t = tapead.record(lj_small, x)
    X = x + RNG.uniform(-0.03, 0.03, (6, x.size))
    HB = derivatives.hessian(t, X)
    assert HB.shape == (6, 12, 12)
    val, g, H = derivatives.value_gradient_hessian(t, X)
    assert val.shape == (6,) and g.shape == (6, 12)
    for k in (0, 3, 5):
        assert_close(HB[k], derivatives.hessian(t, X[k]), rtol=1e-13)
        assert_close(H[k], HB[k], rtol=1e-13)
    V = RNG.normal(size=(6, 12))
    assert_close(derivatives.hvp(t, X, v=V), np.einsum("kij,kj->ki", HB, V), rtol=1e-10)
    out = np.empty((6, 12, 12))
    derivatives.hessian(t, X, out=out)
    assert np.array_equal(out, HB)


def test_weighted_hessian_equals_hessian_of_weighted_sum():
    x0 = np.array([0.3, -0.4, 0.9])
    w = np.array([0.5, -2.0, 1.5])
    t = tapead.record(vec_f, x0)
    direct = tapead.record(lambda x: np.dot(w, vec_f(x)), x0)
    x = np.array([0.7, 0.2, -0.5])
    Hw = derivatives.hessian(t, x, weights=w)
    assert_close(Hw, derivatives.hessian(direct, x), rtol=1e-12)
    rows, cols, vals = derivatives.sparse_hessian(t, x, weights=w)
    assert_close(vals, Hw[rows, cols], rtol=1e-12)
    X = RNG.normal(size=(3, 3))
    assert_close(derivatives.hessian(t, X, weights=w)[1], derivatives.hessian(direct, X[1]), rtol=1e-12)
    with pytest.raises(InputError, match="weights"):
        derivatives.hessian(t, x)


def test_third_derivative_by_composition():
    t = tapead.record(lambda x: np.sin(x[0] * x[1]) + x[2] ** 3 * x[0], np.array([0.5, 0.3, 0.2]))
    x, v = np.array([0.4, -0.7, 1.1]), np.array([0.3, 0.5, -0.2])
    third = tapead.jvp(tapead.hessian_tape(t))  # d/de H(x + e v)
    h = 1e-5
    fd = (derivatives.hessian(t, x + h * v) - derivatives.hessian(t, x - h * v)) / (2 * h)
    assert_close(third.value(x, v), fd, rtol=1e-6)
    assert_close(third.evaluate(x, v), third.value(x, v), rtol=1e-13)
    jh = tapead.jacobian_tape(tapead.hvp_tape(t))  # d(H v)/d(x, v): its v block is H itself
    assert_close(jh.evaluate(x, v)[:, 3:], derivatives.hessian(t, x), rtol=1e-13)


def test_two_argument_hessian_blocks_and_params():
    def f(x, u, p):
        return p[0] * np.sum(x ** 2 * u[0]) + np.exp(u[1] * x[1])

    x, u, p = np.array([0.3, -0.2]), np.array([1.5, 0.5]), np.array([2.0])
    t = tapead.record(f, x, u, params=p)
    blocks = derivatives.hessian(t, x, u, params=p)
    full = tapead.hessian_tape(t).evaluate(x, u, params=p)
    assert_close(np.block([[blocks[0][0], blocks[0][1]], [blocks[1][0], blocks[1][1]]]), full, rtol=1e-14)
    gfun = lambda y: np.concatenate(t.gradient(y[:2], y[2:], params=p))
    assert_close(full, fd_jacobian(gfun, np.concatenate([x, u])))
    hx, hu = derivatives.hvp(t, x, u, v=(np.ones(2), np.zeros(2)), params=p)
    assert_close(np.concatenate([hx, hu]), full @ np.array([1.0, 1, 0, 0]), rtol=1e-12)
    P = np.array([[2.0], [3.0]])  # params batched along with the points
    HB = derivatives.hessian(t, np.stack([x, x]), np.stack([u, u]), params=P)
    assert_close(HB[1][1][1], derivatives.hessian(t, x, u, params=P[1])[1][1], rtol=1e-14)


def test_errors_say_what_to_do():
    t = tapead.record(lambda x: np.sum(x ** 3), np.ones(3))
    with pytest.raises(InputError, match="mode"):
        derivatives.jacobian(t, np.ones(3), mode="sideways")
    with pytest.raises(InputError, match=r"\(3,\)"):
        derivatives.hvp(t, np.ones(3), v=np.ones(4))
    with pytest.raises(InputError, match="shape"):
        derivatives.hessian(t, np.ones(3), out=np.empty((3, 4)))


# ---- sparsity -----------------------------------------------------------------------------------------
def _dense(rows, cols, vals, shape):
    D = np.zeros(shape)
    D[rows, cols] = vals
    return D


@pytest.mark.parametrize("f,colours,nnz", [(rosenbrock, 2, 200), (rosenbrock_chained, 3, 298)])
def test_rosenbrock_sparse_hessian_colours_and_values(f, colours, nnz):
    x = np.linspace(-1.1, 1.3, 100)
    t = tapead.record(f, x + 0.1)
    rows, cols = t.hessian_sparsity()
    assert len(rows) == nnz
    assert sparsity.color_columns(rows, cols, 100).max() + 1 == colours
    r, c, vals = derivatives.sparse_hessian(t, x)
    dense = tapead.hessian_tape(t).evaluate(x)  # the interpreter: no 10,000-output kernel to compile
    assert_close(_dense(r, c, vals, (100, 100)), dense, rtol=1e-13)
    assert np.count_nonzero(dense) == nnz  # exact on this function
    X = x + RNG.uniform(-0.1, 0.1, (3, 100))
    _, _, VB = derivatives.sparse_hessian(t, X)
    assert VB.shape == (3, nnz)
    assert_close(VB[2], derivatives.sparse_hessian(t, X[2])[2], rtol=1e-14)


def test_sparse_jacobian_equals_dense():
    x = RNG.uniform(0.8, 1.2, 30)
    t = tapead.record(cumprod, x)
    rows, cols, vals = derivatives.sparse_jacobian(t, x)
    assert len(rows) == 30 * 31 // 2
    assert_close(_dense(rows, cols, vals, (30, 30)), derivatives.jacobian(t, x), rtol=1e-14)

    def banded(x):
        return np.concatenate([x[1:] * x[:-1], np.sin(x[:1])])

    t = tapead.record(banded, x)
    rows, cols = t.jacobian_sparsity()
    colors = sparsity.color_columns(rows, cols, 30)
    assert colors.max() + 1 == 2
    r, c, vals = derivatives.sparse_jacobian(t, x)
    assert_close(_dense(r, c, vals, (30, 30)), derivatives.jacobian(t, x), rtol=1e-14)
    assert tapead.sparse_jacobian_tape(t).output_shape == (len(r),)


def test_lj_sparse_hessian_dense_pattern():
    x = lj_start(4)
    t = tapead.record(lj_small, x)
    r, c, vals = derivatives.sparse_hessian(t, x)
    assert len(r) == 12 * 12
    assert_close(_dense(r, c, vals, (12, 12)), derivatives.hessian(t, x), rtol=1e-12)


def test_structural_nonzero_reported_even_when_zero_at_point():
    t = tapead.record(lambda x: x[0] ** 2 * x[1] + x[2] * 3.0, np.ones(3))
    x = np.array([1.0, 0.0, 2.0])  # d2f/dx0^2 = 2 x1 = 0 here
    r, c, vals = derivatives.sparse_hessian(t, x)
    pairs = list(zip(r.tolist(), c.tolist()))
    assert (0, 0) in pairs and vals[pairs.index((0, 0))] == 0.0
    assert (2, 2) not in pairs and (0, 2) not in pairs  # linear in x2
    tj = tapead.record(lambda x: np.stack([x[0] * x[1], x[2]]), np.ones(3))
    rj, cj, vj = derivatives.sparse_jacobian(tj, x)
    pairs = list(zip(rj.tolist(), cj.tolist()))
    assert pairs == [(0, 0), (0, 1), (1, 2)] and vj[0] == 0.0


def test_sparsity_rules_for_each_kind_of_op():
    def f(x):
        return (x[0] / x[1] + np.abs(x[2]) + np.maximum(x[3], x[4]) + np.exp(x[5] + x[6])
                + tapead.where(x[7] > 0, x[8], -x[8]))

    t = tapead.record(f, np.arange(1.0, 10.0), on_branch=None)
    rows, cols = t.hessian_sparsity()
    pairs = set(zip(rows.tolist(), cols.tolist()))
    assert pairs == {(0, 1), (1, 0), (1, 1), (5, 5), (5, 6), (6, 5), (6, 6)}
    x = RNG.uniform(0.5, 1.5, 9)
    dense = derivatives.hessian(t, x)
    assert set(zip(*np.nonzero(dense))) <= pairs


def test_to_scipy():
    pytest.importorskip("scipy")
    t = tapead.record(rosenbrock_chained, np.ones(10))
    x = np.linspace(0, 1, 10)
    r, c, v = derivatives.sparse_hessian(t, x)
    m = sparsity.to_scipy(r, c, v, (10, 10))
    assert_close(m.toarray(), derivatives.hessian(t, x), rtol=1e-14)
    assert sparsity.to_scipy(r, c, v, (10, 10), format="coo").nnz == len(v)


def test_derived_tapes_keep_guards():
    def f(x):
        return x[0] ** 2 * x[1] if x[0] > 0 else x[1] ** 3

    t = tapead.record(f, np.array([1.0, 2.0]), on_branch="raise")
    assert len(tapead.hessian_tape(t).guards) == 1 and len(tapead.sparse_jacobian_tape(t).guards) == 1
    assert_close(derivatives.hessian(t, np.array([0.5, 3.0])), [[6.0, 1.0], [1.0, 0.0]], rtol=1e-14)
    with pytest.raises(tapead.BranchError):
        derivatives.hessian(t, np.array([-0.5, 3.0]))


def test_many_directions_at_one_point_run_as_one_batch():
    import tapead
    t = tapead.record(lambda x: np.stack([np.sin(x[0]) * x[1], x[0] * x[1] * x[2]]), np.ones(3))
    x = np.array([0.3, -1.2, 2.0])
    V = np.random.default_rng(5).normal(size=(7, 3))
    J = t.jacobian(x)
    assert np.allclose(t.jvp(x, v=V), V @ J.T)
    W = np.random.default_rng(6).normal(size=(4, 2))
    assert np.allclose(t.vjp(x, w=W), W @ J)
    s = tapead.record(lambda x: np.sum(np.sin(x) * x[::-1]), np.ones(3))
    H = s.hessian(x)
    assert np.allclose(s.hvp(x, v=V), V @ H)
    assert np.allclose(s.hvp(x, v=V[0]), H @ V[0])
