"""Maps (structured recording): a tape recorded with loops computes exactly what the scalar tape computes.

Every program is recorded three ways (``structured=None``, ``True``, ``False``) at one point and compared at
another: values, gradients, the interpreter, Hessians, Jacobians, batches and threads. The structured tapes must
really hold maps (``len(tape.maps) >= 1``), so the comparison fails if structure silently disappears.
"""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, assert_gradient, magnitude
from functions import lj, lj_start
from tapead.ir import structure
from tapead.errors import BranchError

RTOL = 1e-12
CHARGES = np.linspace(-1.0, 1.0, 15)
ROW = np.array([0.5, -1.0, 2.0])


def _pairs(x, np=np):
    n = x.shape[0] // 3
    p = x.reshape(n, 3)
    i, j = np.triu_indices(n, 1)
    d = p[i] - p[j]
    return i, j, np.sqrt(np.sum(d * d, axis=1))


def morse(x, np=np):
    _, _, r = _pairs(x, np)
    e = np.exp(-1.3 * (r - 1.1))
    return np.sum(2.0 * (1.0 - e) ** 2)


def coulomb(x, np=np):
    """A constant array (the charges, gathered per pair) varies along the loop."""
    i, j, r = _pairs(x, np)
    return np.sum(CHARGES[i] * CHARGES[j] / r)


def chained_rosenbrock(x, np=np):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def softplus(x, np=np):
    return np.sum(np.where(x > 0, x + np.log1p(np.exp(-x)), np.log1p(np.exp(x))))


def centred(X):
    """mean over the loop axis (keepdims: a row of traced scalars broadcast back) and over the block axis."""
    m = np.mean(X, axis=0, keepdims=True)
    v = np.mean((X - m) ** 2, axis=1, keepdims=True)
    return np.sum(v * np.cos(X)) + np.mean(X)


def row_sums(X):
    return np.sum(np.sin(np.sum(X * X, axis=1)))


def scaled(X, s):
    """A traced scalar argument and a constant row broadcast along the loop."""
    return np.sum(np.tanh(s * X * ROW)) + s ** 2


def with_params(x, p):
    """Params read in the loop: two shared scalars and one row varying along it."""
    return np.sum(p[0] * np.sin(x) + p[1] * x ** 2 + p[2:] * x)


def vector_out(x):
    """A loop array returned: each outputs, and a vector tape."""
    return np.sin(x) * x[0] + x ** 2


def python_tail(x):
    y = np.exp(-x * x)
    s = 0.0
    for k in range(5):
        s = s + y[k] * y[k + 1]
    return s + np.sum(y)


def in_place(x):
    y = x * x
    y[0] = y[0] + 3.0 * x[1]
    return np.sum(np.sin(y))


def _cases():
    lj0 = lj_start(0)
    pos = lj_start(3, atoms=15)
    x200 = np.linspace(-1.0, 1.2, 200)
    x80 = np.linspace(-2.0, 2.0, 80)
    X = np.linspace(-1.0, 1.0, 240).reshape(80, 3)
    p = np.concatenate([[0.7, -0.3], np.linspace(0.0, 1.0, 80)])
    return {  # name: (f, args0, params)
        "lj": (lj, (lj0,), None), "morse": (morse, (pos,), None), "coulomb": (coulomb, (pos,), None),
        "rosenbrock": (chained_rosenbrock, (x200,), None), "softplus": (softplus, (x80,), None),
        "centred": (centred, (X,), None), "row_sums": (row_sums, (X,), None),
        "scaled": (scaled, (X, np.array(0.8)), None), "params": (with_params, (x80,), p),
        "vector_out": (vector_out, (x80,), None), "python_tail": (python_tail, (x80,), None),
        "in_place": (in_place, (x80,), None)}


CASES = _cases()


def _moved(args, scale=0.02, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(a + scale * rng.normal(size=np.shape(a)) for a in args)


@pytest.fixture(scope="module", params=sorted(CASES))
def recorded(request):
    f, args0, params = CASES[request.param]
    tapes = {s: tapead.record(f, *args0, params=params, structured=s) for s in (None, True, False)}
    return request.param, tapes, _moved(args0), params


def _flat(a) -> list:
    """The arrays of a result: one array, a tuple per argument, or (Hessians) a tuple of tuples."""
    return [x for part in a for x in _flat(part)] if isinstance(a, tuple) else [np.asarray(a)]


def _close(got, want, rtol=RTOL):
    got, want = _flat(got), _flat(want)
    assert len(got) == len(want)
    scale = magnitude(*want)
    for g, w in zip(got, want):
        assert_close(g, w, rtol, scale=scale)


def test_structured_tapes_have_maps(recorded):
    _, tapes, _, _ = recorded
    assert len(tapes[None].maps) >= 1 and len(tapes[True].maps) >= 1
    assert tapes[False].maps == ()
    for t in (tapes[None], tapes[True]):
        t.check()
        assert structure.unroll(t).maps == () and structure.records(t) < len(structure.unroll(t))


def test_values_gradients_interpreter_agree(recorded):
    name, tapes, x1, p = recorded
    ref = tapes[False]
    want = ref.value(*x1, params=p)
    vector = ref.output_shape != ()
    for t in (tapes[None], tapes[True]):
        _close(t.value(*x1, params=p), want)
        _close(t.evaluate(*x1, params=p), want)
        if vector:
            _close(t.jacobian(*x1, params=p), ref.jacobian(*x1, params=p))
            continue
        _close(t.gradient(*x1, params=p), ref.gradient(*x1, params=p))
        v, g = t.value_and_gradient(*x1, params=p)
        _close(v, want)
        _close(g, ref.gradient(*x1, params=p))
    if not vector:
        assert_gradient(tapes[None], *x1, params=p, rtol=1e-6)
    else:
        from check import fd_jacobian
        J = fd_jacobian(lambda y: tapes[None].evaluate(y, params=p), x1[0])
        assert_close(tapes[None].jacobian(*x1, params=p), J, 1e-6, scale=magnitude(J))


def test_hessians_agree(recorded):
    name, tapes, x1, p = recorded
    if tapes[False].output_shape != ():
        pytest.skip("vector output: its Jacobian is compared instead")
    want = tapes[False].hessian(*x1, params=p)
    _close(tapes[None].hessian(*x1, params=p), want)


@pytest.mark.parametrize("N", [0, 1, 7])
def test_batches_and_threads_agree(recorded, N):
    name, tapes, x1, p = recorded
    X = tuple(np.stack([a + 0.01 * k for k in range(N)]) if N else np.zeros((0,) + np.shape(a)) for a in x1)
    ref = tapes[False]
    for t in (tapes[None], tapes[True]):
        for threads in (None, 2):
            _close(t.value(*X, params=p, threads=threads), ref.value(*X, params=p, threads=1))
            if ref.output_shape == ():
                _close(t.gradient(*X, params=p, threads=threads), ref.gradient(*X, params=p, threads=1))
        if N:  # an empty batch: see test_interpreter_on_an_empty_batch
            _close(t.evaluate(*X, params=p), ref.evaluate(*X, params=p))


def test_interpreter_on_an_empty_batch():
    t = tapead.record(lj, lj_start(0))
    assert t.evaluate(np.zeros((0, t.n_inputs))).shape == (0,)


def guarded(x):
    if np.sum(x) > 0:
        return np.sum(x * x)
    return np.sum(np.cos(x))


def test_guard_on_a_loop_result_never_answers_wrong():
    x0, x1 = np.linspace(0.0, 1.0, 80), np.linspace(-1.0, 0.0, 80)
    t = tapead.record(guarded, x0)
    assert len(t.maps) >= 1 and len(t.guards) == 1
    assert_close(t.value(x1), guarded(x1), RTOL)
    assert_close(t.gradient(x1), -np.sin(x1), RTOL)
    assert_close(t.gradient(x0), 2 * x0, RTOL)
    strict = tapead.record(guarded, x0, on_branch="raise")
    assert_close(strict.value(x0), guarded(x0), RTOL)
    with pytest.raises(BranchError):
        strict.value(x1)
    with pytest.raises(BranchError):
        strict.gradient(x1)


# ---- unroll: the meaning of a map, bit for bit ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["lj", "morse"])
def test_unrolled_gradient_tape_is_bitwise_equal(name):
    """Sums and scatters add in iteration order in the loop kernel and in ``unroll``: the same bits."""
    f, args0, _ = CASES[name]
    G = tapead.grad(tapead.record(f, *args0))
    assert len(G.maps) >= 1 and "scatter" in G.maps[0].kinds
    U = structure.unroll(G)
    assert U.maps == ()
    X = np.stack([a for a, in (_moved(args0, seed=s) for s in range(5))])
    assert np.array_equal(G.value(X), U.value(X))
    assert np.array_equal(G.value(X[0]), tapead.record(f, *args0).gradient(X[0]))
    assert_close(G.evaluate(X), U.evaluate(X), 1e-13, scale=magnitude(U.evaluate(X)))
    assert_close(G.evaluate(X), G.value(X), 1e-13, scale=magnitude(U.evaluate(X)))


# ---- independent oracles ----------------------------------------------------------------------------------------
ORACLE_CASES = ["morse", "coulomb", "rosenbrock", "softplus"]


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_gradient_matches_autograd(name):
    autograd = pytest.importorskip("autograd")
    anp = pytest.importorskip("autograd.numpy")
    f, args0, _ = CASES[name]
    t = tapead.record(f, *args0)
    assert len(t.maps) >= 1
    x1, = _moved(args0)
    want = autograd.grad(lambda y: f(y, anp))(x1)
    assert_close(t.gradient(x1), want, RTOL, scale=magnitude(want))


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_gradient_matches_jax(name):
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    f, args0, _ = CASES[name]
    t = tapead.record(f, *args0)
    x1, = _moved(args0)
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        want = np.asarray(jax.grad(lambda y: f(y, jnp))(jnp.asarray(x1)))
    finally:
        jax.config.update("jax_enable_x64", before)
    assert want.dtype == np.float64
    assert_close(t.gradient(x1), want, RTOL, scale=magnitude(want))
