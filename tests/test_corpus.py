"""The corpus ladder: every function of tests/functions.py recorded at args0 and checked at args1 against numpy,
its closed-form gradient, finite differences, the interpreter, the gradient tape and the batch rule."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, assert_gradient, magnitude
from functions import FUNCTIONS, Case

NAMES = list(FUNCTIONS)
SCALAR_NAMES = [n for n in NAMES if not FUNCTIONS[n].vector]
VECTOR_NAMES = [n for n in NAMES if FUNCTIONS[n].vector]
_TAPES: dict = {}


def as_tuple(g) -> tuple:
    return g if isinstance(g, tuple) else (g,)


def scalar_fn(case: Case):
    """The scalar function the gradient refers to: f itself, or sum(f) for vector functions."""
    if not case.vector:
        return case.f
    return lambda *a: np.sum(case.f(*a))


def tape_of(name: str, kind: str = "f") -> tapead.Tape:
    """Tapes recorded once per session at args0: kind 'f' (the function) or 's' (the scalar it differentiates)."""
    key = (name, kind)
    if key not in _TAPES:
        case = FUNCTIONS[name]
        fn = case.f if kind == "f" else scalar_fn(case)
        _TAPES[key] = tapead.record(fn, *case.args0, params=case.params)
    return _TAPES[key]


def pcall(t: tapead.Tape, method: str, case: Case, args: tuple, **kw):
    return getattr(t, method)(*args, params=case.params, **kw)


def batch_points(case: Case, n: int, seed: int = 0) -> tuple:
    """n points near args1 (one extra leading axis per argument)."""
    rng = np.random.default_rng(seed)
    return tuple(a + 0.01 * rng.standard_normal((n,) + a.shape) for a in case.args1)


# ---- values ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_value_matches_numpy(name):
    case = FUNCTIONS[name]
    t = tape_of(name)
    expected = case.call(case.f, case.args1)
    got = pcall(t, "value", case, case.args1)
    assert np.allclose(got, expected, rtol=1e-12, atol=0)
    if not case.vector:
        assert isinstance(got, float)
    else:
        assert got.shape == np.shape(expected)


@pytest.mark.parametrize("name", NAMES)
def test_compiled_value_matches_interpreter(name):
    case = FUNCTIONS[name]
    t = tape_of(name)
    assert np.allclose(pcall(t, "value", case, case.args1), pcall(t, "evaluate", case, case.args1),
                       rtol=1e-13, atol=0)


# ---- gradients ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_closed_form(name):
    case = FUNCTIONS[name]
    got = as_tuple(pcall(tape_of(name, "s"), "gradient", case, case.args1))
    expected = as_tuple(case.call(case.grad, case.args1))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_close(g, e, 1e-10, scale=magnitude(e))


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name):
    case = FUNCTIONS[name]
    grads = pcall(tape_of(name, "s"), "gradient", case, case.args1)
    assert_gradient(scalar_fn(case), *case.args1, params=case.params, gradient=grads)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_tape_matches_compiled_gradient(name):
    case = FUNCTIONS[name]
    t = tape_of(name, "s")
    compiled = np.concatenate([g.ravel() for g in as_tuple(pcall(t, "gradient", case, case.args1))])
    gt = tapead.grad(t)
    assert np.allclose(pcall(gt, "evaluate", case, case.args1), compiled, rtol=1e-13, atol=0)
    assert np.allclose(pcall(gt, "value", case, case.args1), compiled, rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", SCALAR_NAMES)
def test_value_and_gradient(name):
    case = FUNCTIONS[name]
    t = tape_of(name)
    v, g = pcall(t, "value_and_gradient", case, case.args1)
    assert v == pcall(t, "value", case, case.args1)
    for a, b in zip(as_tuple(g), as_tuple(pcall(t, "gradient", case, case.args1))):
        assert np.array_equal(a, b)


# ---- the batch rule -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 7, 100])
@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_points_bitwise(name, n):
    case = FUNCTIONS[name]
    t, ts = tape_of(name), tape_of(name, "s")
    X = batch_points(case, n)
    V = pcall(t, "value", case, X)
    G = as_tuple(pcall(ts, "gradient", case, X))
    assert V.shape == (n,) + t.output_shape
    assert [g.shape for g in G] == [(n,) + s for s in t.input_shapes]
    for i in range(n):
        point = tuple(x[i] for x in X)
        assert np.array_equal(V[i], pcall(t, "value", case, point))
        for g, e in zip(G, as_tuple(pcall(ts, "gradient", case, point))):
            assert np.array_equal(g[i], e)
    if n:
        assert np.allclose(V, pcall(t, "evaluate", case, X), rtol=1e-13, atol=0)


def test_params_shared_and_batched():
    case = FUNCTIONS["seed_foo4"]
    t = tape_of("seed_foo4")
    rng = np.random.default_rng(3)
    X = batch_points(case, 7)
    P = case.params + rng.normal(size=(7, 4))
    shared = t.value(*X, params=case.params)
    batched = t.value(*X, params=P)
    G = t.gradient(*X, params=P)
    for i in range(7):
        point = tuple(x[i] for x in X)
        assert shared[i] == t.value(*point, params=case.params)
        assert batched[i] == t.value(*point, params=P[i])
        assert np.isclose(batched[i], case.f(*point, P[i]), rtol=1e-13)
        for g, e in zip(G, case.grad(*point, P[i])):
            assert_close(g[i], e, 1e-12, scale=magnitude(e))
    assert np.allclose(t.evaluate(*X, params=P), batched, rtol=1e-13, atol=0)


def test_params_change_without_recording_again():
    case = FUNCTIONS["seed_foo4"]
    t = tape_of("seed_foo4")
    p = np.array([1.5, -2.0, 0.25, 7.0])
    assert np.isclose(t.value(*case.args1, params=p), case.f(*case.args1, p), rtol=1e-14)


def test_multi_argument_gradient_tuple():
    case = FUNCTIONS["seed_foo4"]
    g = tape_of("seed_foo4").gradient(*case.args1, params=case.params)
    assert isinstance(g, tuple) and len(g) == 4
    assert [a.shape for a in g] == [(3,), (3,), (0,), (2,)]
    assert np.array_equal(g[1], np.zeros(3))  # X is ignored by the function
    assert g[2].size == 0  # U is empty


# ---- out= ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SCALAR_NAMES)
def test_out_filled_in_place(name):
    case = FUNCTIONS[name]
    t = tape_of(name)
    expected = as_tuple(pcall(t, "gradient", case, case.args1))
    outs = tuple(np.full(a.shape, np.nan) for a in case.args1)
    result = pcall(t, "gradient", case, case.args1, out=outs if len(outs) > 1 else outs[0])
    for r, o, e in zip(as_tuple(result), outs, expected):
        assert r is o
        assert np.array_equal(o, e)
    X = batch_points(case, 5)
    outs = tuple(np.full(x.shape, np.nan) for x in X)
    pcall(t, "gradient", case, X, out=outs if len(outs) > 1 else outs[0])
    for o, e in zip(outs, as_tuple(pcall(t, "gradient", case, X))):
        assert np.array_equal(o, e)
    v = np.full(5, np.nan)
    assert pcall(t, "value", case, X, out=v) is v
    assert np.array_equal(v, pcall(t, "value", case, X))


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_value_out(name):
    case = FUNCTIONS[name]
    t = tape_of(name)
    v = np.empty(t.output_shape)
    assert t.value(*case.args1, out=v) is v
    assert np.allclose(v, case.f(*case.args1), rtol=1e-13, atol=0)


# ---- vector functions: Jacobians --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_jacobian_by_vjp(name):
    case = FUNCTIONS[name]
    t = tape_of(name)
    x = case.args1[0]
    n = x.size
    vt = tapead.vjp(t)
    rows = vt.value(np.tile(x, (n, 1)), np.eye(n))  # row k = e_k^T J
    expected = case.jacobian(x)
    assert_close(rows, expected, 1e-12, scale=magnitude(expected))
    assert np.allclose(vt.evaluate(np.tile(x, (n, 1)), np.eye(n)), rows, rtol=1e-13, atol=0)
    assert np.array_equal(rows, np.tril(rows))  # lower-triangular


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_jacobian_by_jvp(name):
    case = FUNCTIONS[name]
    t = tape_of(name)
    x = case.args1[0]
    n = x.size
    cols = tapead.jvp(t).value(np.tile(x, (n, 1)), np.eye(n))  # row j = J e_j
    expected = case.jacobian(x)
    assert_close(cols.T, expected, 1e-12, scale=magnitude(expected))


def test_ac_cumprod_records_every_product():
    case = FUNCTIONS["ac_cumprod"]
    t = tape_of("ac_cumprod")
    assert t.output_shape == (20,)
    assert t.op_counts() == {"mul": 19}
    x = case.args1[0]
    assert np.allclose(t.value(x), np.cumprod(x), rtol=1e-14, atol=0)
