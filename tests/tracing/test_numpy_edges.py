"""Elementwise numpy functions at their domain edges: values against numpy (interpreter and compiled kernel),
derivatives against finite differences, JAX (when installed) and closed forms at 0, +-0, +-inf, NaN, tiny and
huge arguments and ties; dtype casts; and the recording of calls that used to crash."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tapead
from tapead import TracingError

INF, NAN = np.inf, np.nan
EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 2.5, INF, -INF, NAN, 1e-300, -1e-300, 1e308, -1e308, 5e-324]


def record(f, n):
    return tapead.record(lambda v: f(*[v[i] for i in range(n)]), np.full(n, 0.75))


def ulp_close(got, expected, ulps=4):
    got, expected = np.asarray(got, float), np.asarray(expected, float)
    with np.errstate(all="ignore"):
        tol = ulps * np.spacing(np.maximum(np.abs(got), np.abs(expected)))
        return (got == expected) | (np.isnan(got) & np.isnan(expected)) | (np.abs(got - expected) <= tol)


def same(got, expected):
    """Bitwise-equal floats up to NaN payloads, the sign of zero included."""
    got, expected = np.asarray(got, float), np.asarray(expected, float)
    return np.array_equal(got, expected, equal_nan=True) and np.array_equal(np.signbit(got[got == 0]),
                                                                            np.signbit(expected[expected == 0]))


_erf = np.vectorize(math.erf, otypes=[float])
_erfc = np.vectorize(math.erfc, otypes=[float])


# name -> (arity, numpy-style form, numpy reference, JAX form or None, sampling interval, smooth)
CASES = {
    "erf": (1, lambda x: tapead.table.ops_extra.erf(x), _erf, "jax.scipy.special.erf", (-3, 3), True),
    "erfc": (1, lambda x: tapead.table.ops_extra.erfc(x), _erfc, "jax.scipy.special.erfc", (-3, 3), True),
    "cbrt": (1, np.cbrt, np.cbrt, "jnp.cbrt", (0.2, 3), True),
    "exp2": (1, np.exp2, np.exp2, "jnp.exp2", (-3, 3), True),
    "log2": (1, np.log2, np.log2, "jnp.log2", (0.1, 3), True),
    "log10": (1, np.log10, np.log10, "jnp.log10", (0.1, 3), True),
    "arcsinh": (1, np.arcsinh, np.arcsinh, "jnp.arcsinh", (-3, 3), True),
    "arccosh": (1, np.arccosh, np.arccosh, "jnp.arccosh", (1.1, 4), True),
    "arctanh": (1, np.arctanh, np.arctanh, "jnp.arctanh", (-0.9, 0.9), True),
    "deg2rad": (1, np.deg2rad, np.deg2rad, "jnp.deg2rad", (-3, 3), True),
    "rad2deg": (1, np.rad2deg, np.rad2deg, "jnp.rad2deg", (-3, 3), True),
    "radians": (1, np.radians, np.radians, "jnp.radians", (-3, 3), True),
    "degrees": (1, np.degrees, np.degrees, "jnp.degrees", (-3, 3), True),
    "sinc": (1, np.sinc, np.sinc, "jnp.sinc", (-3, 3), True),
    "logaddexp": (2, np.logaddexp, np.logaddexp, "jnp.logaddexp", (-3, 3), True),
    "logaddexp2": (2, np.logaddexp2, np.logaddexp2, "jnp.logaddexp2", (-3, 3), True),
    "pow": (2, np.power, np.power, "jnp.power", (0.2, 3), True),
    "hypot": (2, np.hypot, np.hypot, "jnp.hypot", (-3, 3), True),
    "arctan2": (2, np.arctan2, np.arctan2, "jnp.arctan2", (-3, 3), True),
    "floor": (1, np.floor, np.floor, None, (-3, 3), False),
    "ceil": (1, np.ceil, np.ceil, None, (-3, 3), False),
    "trunc": (1, np.trunc, np.trunc, None, (-3, 3), False),
    "rint": (1, np.rint, np.rint, None, (-3, 3), False),
    "round": (1, np.round, np.round, None, (-3, 3), False),
    "fix": (1, np.fix, np.fix, None, (-3, 3), False),
    "fmod": (2, np.fmod, np.fmod, "jnp.fmod", (-3, 3), False),
    "remainder": (2, np.remainder, np.remainder, "jnp.remainder", (-3, 3), False),
    "mod": (2, lambda x, y: x % y, np.remainder, None, (-3, 3), False),
    "floor_divide": (2, lambda x, y: x // y, np.floor_divide, None, (-3, 3), False),
    "fmax": (2, np.fmax, np.fmax, None, (-3, 3), False),
    "fmin": (2, np.fmin, np.fmin, None, (-3, 3), False),
    "maximum": (2, np.maximum, np.maximum, None, (-3, 3), False),
    "minimum": (2, np.minimum, np.minimum, None, (-3, 3), False),
    "copysign": (2, np.copysign, np.copysign, None, (-3, 3), False),
    "heaviside": (2, np.heaviside, np.heaviside, None, (-3, 3), False),
    "sign": (1, np.sign, np.sign, None, (-3, 3), False),
    "isnan": (1, np.isnan, np.isnan, None, (-3, 3), False),
    "isinf": (1, np.isinf, np.isinf, None, (-3, 3), False),
    "isfinite": (1, np.isfinite, np.isfinite, None, (-3, 3), False),
    "float32": (1, lambda x: x.astype(np.float32), lambda x: x.astype(np.float32), None, (-3, 3), False),
    "int": (1, lambda x: x.astype(int), np.trunc, None, (-3, 3), False),
    "bool": (1, lambda x: x.astype(bool), lambda x: x != 0, None, (-3, 3), False),
}
SMOOTH = [n for n, c in CASES.items() if c[5]]
_TAPES: dict = {}


def tape_of(name):
    if name not in _TAPES:
        _TAPES[name] = record(*CASES[name][1::-1])
    return _TAPES[name]


def reference(name, x):
    n, ref = CASES[name][0], CASES[name][2]
    with np.errstate(all="ignore"):
        return np.asarray(ref(x[:, 0]) if n == 1 else ref(x[:, 0], x[:, 1]), float)


def points(name, k, seed):
    n, lo, hi = CASES[name][0], *CASES[name][4]
    x = np.random.default_rng(seed).uniform(lo, hi, (k, n))
    if name in ("fmod", "remainder", "mod", "floor_divide"):
        x[:, 1] = np.where(np.abs(x[:, 1]) < 0.3, 1.3, x[:, 1])
    return x


def edge_grid(n):
    return np.array(np.meshgrid(*[EDGES] * n, indexing="ij")).reshape(n, -1).T


# ---- values: numpy at random points and on the edge grid, interpreter and compiled kernel ------------------------
@pytest.mark.parametrize("name", CASES)
def test_value_matches_numpy(name):
    t = tape_of(name)
    x = np.vstack([points(name, 32, 0), edge_grid(CASES[name][0])])
    expected = reference(name, x)
    for got in (t.evaluate(x), t.value(x)):
        ok = ulp_close(got, expected)
        assert ok.all(), (name, x[~ok], got[~ok], expected[~ok])


@pytest.mark.parametrize("name", SMOOTH)
def test_gradient_vs_finite_differences(name):
    t = tape_of(name)
    x = points(name, 16, 1)
    for j in range(x.shape[1]):
        h = 1e-6 * np.maximum(1.0, np.abs(x[:, j]))
        plus, minus = x.copy(), x.copy()
        plus[:, j] += h
        minus[:, j] -= h
        fd = (reference(name, plus) - reference(name, minus)) / (2 * h)
        assert np.allclose(t.gradient(x)[:, j], fd, rtol=1e-6, atol=1e-7), name
        assert np.allclose(tapead.grad(t).evaluate(x)[:, j], fd, rtol=1e-6, atol=1e-7), name


@pytest.mark.parametrize("name", [n for n in CASES if n not in SMOOTH and CASES[n][0] <= 2])
def test_piecewise_derivatives_vs_finite_differences(name):
    """Away from jumps the non-smooth functions have the slopes finite differences see (0 for the steps)."""
    t = tape_of(name)
    x = points(name, 16, 2)
    g = t.gradient(x)
    for j in range(x.shape[1]):
        h = 1e-7
        plus, minus = x.copy(), x.copy()
        plus[:, j] += h
        minus[:, j] -= h
        fd = (reference(name, plus) - reference(name, minus)) / (2 * h)
        smooth_here = np.abs(reference(name, plus) - reference(name, minus)) < 1e-3
        if name == "float32":
            fd, smooth_here = np.ones_like(fd), np.ones_like(smooth_here)
        assert np.allclose(g[smooth_here, j], fd[smooth_here], rtol=1e-5, atol=1e-6), name


def _jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jax.scipy.special  # noqa: F401
    return jax, jnp


def _jax_form(name):
    jax, jnp = _jax()
    fn = eval(CASES[name][3], {"jax": jax, "jnp": jnp})
    return lambda v: fn(v[0]) if CASES[name][0] == 1 else fn(v[0], v[1])


@pytest.mark.parametrize("name", SMOOTH)
def test_gradient_and_hessian_vs_jax(name):
    jax, jnp = _jax()
    f = _jax_form(name)
    t = tape_of(name)
    for x in points(name, 6, 3):
        assert np.allclose(t.gradient(x), np.asarray(jax.grad(f)(jnp.asarray(x))), rtol=1e-12, atol=1e-14), name
        assert np.allclose(t.hessian(x), np.asarray(jax.hessian(f)(jnp.asarray(x))), rtol=1e-10, atol=1e-13), name


@pytest.mark.parametrize("name", ["fmod", "remainder"])
def test_modulo_gradient_vs_jax(name):
    jax, jnp = _jax()
    f = _jax_form(name)
    t = tape_of(name)
    for x in points(name, 8, 4):
        assert np.allclose(t.gradient(x), np.asarray(jax.grad(f)(jnp.asarray(x))), rtol=1e-12), (name, x)


# ---- closed forms at the edges: (function, point, value, gradient, Hessian or None) ----------------------------------
def _p(*v):
    return np.array(v, float)


S = 1.0 / np.sqrt(np.pi)
EDGE_TABLE = [
    # pow at x = 0: d/dy = 0 (0**y is constant in y on each side of 0), d/dx = y x**(y-1)
    ("pow", _p(0.0, 2.5), 0.0, _p(0.0, 0.0), np.zeros((2, 2))),
    ("pow", _p(0.0, 3.0), 0.0, _p(0.0, 0.0), np.zeros((2, 2))),
    ("pow", _p(0.0, 2.0), 0.0, _p(0.0, 0.0), _p(2.0, 0.0, 0.0, 0.0).reshape(2, 2)),
    ("pow", _p(0.0, 1.0), 0.0, _p(1.0, 0.0), None),
    ("pow", _p(0.0, 0.5), 0.0, _p(INF, 0.0), None),
    ("pow", _p(-0.0, 0.5), 0.0, _p(INF, 0.0), None),
    ("pow", _p(-INF, 0.5), INF, _p(0.0, NAN), None),
    ("pow", _p(0.0, -1.5), INF, _p(-INF, 0.0), None),
    ("cbrt", _p(0.0), 0.0, _p(INF), None),
    ("cbrt", _p(-0.0), -0.0, _p(INF), None),
    ("cbrt", _p(INF), INF, _p(0.0), None),
    ("cbrt", _p(1e-300), 1e-100, _p(1.0 / 3e-200), None),
    ("log2", _p(0.0), -INF, _p(INF), None),
    ("log10", _p(INF), INF, _p(0.0), None),
    ("exp2", _p(-INF), 0.0, _p(0.0), _p(0.0).reshape(1, 1)),
    ("arcsinh", _p(1e200), np.arcsinh(1e200), _p(1e-200), None),
    ("arcsinh", _p(0.0), 0.0, _p(1.0), _p(0.0).reshape(1, 1)),
    ("arccosh", _p(1.0), 0.0, _p(INF), None),
    ("arctanh", _p(1.0), INF, _p(INF), None),
    ("arctanh", _p(-1.0), -INF, _p(INF), None),
    ("erf", _p(0.0), 0.0, _p(2 * S), _p(0.0).reshape(1, 1)),
    ("erf", _p(INF), 1.0, _p(0.0), None),
    ("erfc", _p(-INF), 2.0, _p(-0.0), None),
    ("sinc", _p(0.0), 1.0, _p(0.0), _p(-np.pi ** 2 / 3).reshape(1, 1)),
    ("sinc", _p(1e-300), 1.0, _p(-np.pi ** 2 / 3 * 1e-300), None),
    ("logaddexp", _p(1.0, 1.0), 1.0 + np.log(2), _p(0.5, 0.5), _p(0.25, -0.25, -0.25, 0.25).reshape(2, 2)),
    ("logaddexp", _p(INF, INF), INF, _p(0.5, 0.5), None),
    ("logaddexp", _p(-INF, -INF), -INF, _p(0.5, 0.5), None),
    ("logaddexp", _p(INF, 0.0), INF, _p(1.0, 0.0), None),
    ("logaddexp", _p(-INF, 0.0), 0.0, _p(0.0, 1.0), None),
    ("logaddexp", _p(1000.0, -1000.0), 1000.0, _p(1.0, 0.0), None),
    ("logaddexp2", _p(3.0, 3.0), 4.0, _p(0.5, 0.5), None),
    ("hypot", _p(0.0, 0.0), 0.0, _p(0.0, 0.0), None),
    ("hypot", _p(-0.0, 0.0), 0.0, _p(0.0, 0.0), None),
    ("hypot", _p(0.0, 2.0), 2.0, _p(0.0, 1.0), None),
    ("hypot", _p(-0.0, -2.0), 2.0, _p(0.0, -1.0), None),
    ("maximum", _p(NAN, 1.0), NAN, _p(1.0, 0.0), None),
    ("maximum", _p(1.0, NAN), NAN, _p(0.0, 1.0), None),
    ("maximum", _p(NAN, NAN), NAN, _p(1.0, 0.0), None),
    ("maximum", _p(2.0, 2.0), 2.0, _p(1.0, 0.0), None),
    ("minimum", _p(NAN, 1.0), NAN, _p(1.0, 0.0), None),
    ("minimum", _p(1.0, NAN), NAN, _p(0.0, 1.0), None),
    ("fmax", _p(NAN, 1.0), 1.0, _p(0.0, 1.0), None),
    ("fmax", _p(1.0, NAN), 1.0, _p(1.0, 0.0), None),
    ("fmin", _p(NAN, 1.0), 1.0, _p(0.0, 1.0), None),
    ("fmin", _p(2.0, 2.0), 2.0, _p(1.0, 0.0), None),
    ("fmod", _p(5.0, 3.0), 2.0, _p(1.0, -1.0), None),
    ("fmod", _p(-5.0, 3.0), -2.0, _p(1.0, 1.0), None),
    ("remainder", _p(-5.0, 3.0), 1.0, _p(1.0, 2.0), None),
    ("remainder", _p(5.0, -3.0), -1.0, _p(1.0, 2.0), None),
    ("remainder", _p(6.0, 3.0), 0.0, _p(1.0, -2.0), None),
    ("floor_divide", _p(-5.0, 3.0), -2.0, _p(0.0, 0.0), None),
    ("copysign", _p(2.0, -1.0), -2.0, _p(-1.0, 0.0), None),
    ("copysign", _p(-2.0, -1.0), -2.0, _p(1.0, 0.0), None),
    ("copysign", _p(0.0, -1.0), -0.0, _p(0.0, 0.0), None),
    ("heaviside", _p(0.0, 0.5), 0.5, _p(0.0, 1.0), None),
    ("heaviside", _p(-0.0, 0.25), 0.25, _p(0.0, 1.0), None),
    ("heaviside", _p(2.0, 0.5), 1.0, _p(0.0, 0.0), None),
    ("floor", _p(2.0), 2.0, _p(0.0), None),
    ("rint", _p(2.5), 2.0, _p(0.0), None),
    ("rint", _p(-0.5), -0.0, _p(0.0), None),
    ("round", _p(0.5), 0.0, _p(0.0), None),
    ("round", _p(1.5), 2.0, _p(0.0), None),
    ("trunc", _p(-0.5), -0.0, _p(0.0), None),
    ("sign", _p(-0.0), 0.0, _p(0.0), None),
    ("sign", _p(NAN), NAN, _p(0.0), None),
    ("float32", _p(0.1), float(np.float32(0.1)), _p(1.0), None),
    ("int", _p(-1.5), -1.0, _p(0.0), None),
]


@pytest.mark.parametrize("name, x, value, gradient, hessian", EDGE_TABLE,
                         ids=[f"{c[0]}{tuple(c[1])}" for c in EDGE_TABLE])
def test_edge_closed_forms(name, x, value, gradient, hessian):
    t = tape_of(name)
    assert same(t.value(x), value), (t.value(x), value)
    assert same(t.evaluate(x[None])[0], value)
    assert np.allclose(t.gradient(x), gradient, rtol=1e-15, atol=0, equal_nan=True), (t.gradient(x), gradient)
    assert np.allclose(tapead.grad(t).evaluate(x[None])[0], gradient, rtol=1e-15, atol=0, equal_nan=True)
    if hessian is not None:
        assert np.allclose(t.hessian(x), hessian, rtol=1e-14, atol=0), (t.hessian(x), hessian)
        assert np.allclose(tapead.hessian_tape(t).evaluate(x[None])[0], hessian, rtol=1e-14, atol=0)


def test_constant_base_zero_power():
    """0.0 ** y: d/dy = 0 for y > 0 (it was NaN), and the value is numpy's."""
    t = tapead.record(lambda v: 0.0 ** v[0], np.array([2.0]))
    for y, value in [(2.0, 0.0), (0.5, 0.0), (3.5, 0.0), (0.0, 1.0), (-1.0, INF)]:
        assert t.value(np.array([y])) == value
        assert t.gradient(np.array([y]))[0] == 0.0


@pytest.mark.parametrize("k", [-1, -2, -3, -4])
def test_negative_integer_powers_at_edges(k):
    """x ** k, k < 0: value, derivative k x**(k-1) and second derivative k (k-1) x**(k-2), exactly as
    closed forms evaluated with pow (the signs of zeros and infinities included), at 0, +-0, +-inf, 1e-300,
    1e308."""
    t = tapead.record(lambda v: v[0] ** k, np.array([1.3]))
    x = np.array([0.0, -0.0, INF, -INF, 1e-300, -1e-300, 1e308, 2.0, -3.0])
    with np.errstate(all="ignore"):
        value, d1, d2 = x ** float(k), k * x ** float(k - 1), k * (k - 1) * x ** float(k - 2)
    assert same(t.value(x[:, None]), value)
    assert same(t.gradient(x[:, None])[:, 0], d1)
    h = np.array([t.hessian(np.array([v]))[0, 0] for v in x])
    assert np.allclose(h, d2, rtol=1e-15, atol=0, equal_nan=False), (h, d2)
    assert not np.isnan(h).any()


@pytest.mark.parametrize("k", [2, 3, 4])
def test_positive_integer_powers_at_edges(k):
    t = tapead.record(lambda v: v[0] ** k, np.array([1.3]))
    x = np.array([0.0, -0.0, INF, -INF, 1e-300, 1e308, 2.0])
    with np.errstate(all="ignore"):
        d1 = k * x ** float(k - 1)
    assert np.array_equal(t.gradient(x[:, None])[:, 0], d1)
    h = np.array([t.hessian(np.array([v]))[0, 0] for v in x])
    with np.errstate(all="ignore"):
        assert np.array_equal(h, k * (k - 1) * x ** float(k - 2))


def test_half_power_keeps_pow_conventions():
    t = tapead.record(lambda v: v[0] ** 0.5, np.array([1.3]))
    assert same(t.value(np.array([[-0.0], [-INF], [4.0]])), [0.0, INF, 2.0])
    assert np.array_equal(t.gradient(np.array([[-0.0], [0.0], [4.0]]))[:, 0], [INF, INF, 0.25])


def test_max_min_zero_signs_match_numpy():
    for f in (np.maximum, np.minimum, np.fmax, np.fmin):
        t = record(f, 2)
        x = np.array([[0.0, -0.0], [-0.0, 0.0], [1.0, 1.0], [NAN, 1.0], [1.0, NAN], [INF, -INF]])
        ref = f(x[:, 0], x[:, 1]) if f in (np.maximum, np.minimum) else None
        for got in (t.value(x), t.evaluate(x)):
            if ref is not None:
                assert same(got, ref), (f, got, ref)
            else:
                assert np.array_equal(got, f(x[:, 0], x[:, 1]), equal_nan=True)


def test_sign_of_zero_matches_numpy():
    t = tape_of("sign")
    x = np.array([[-0.0], [0.0], [NAN], [-2.0]])
    assert same(t.value(x), np.sign(x[:, 0]))
    assert same(t.evaluate(x), np.sign(x[:, 0]))


@pytest.mark.parametrize("x", [1e-300, 1e-200, 1e-150, 3.0, 1e300])
def test_atan2_hessian_at_tiny_and_huge_arguments(x):
    """No NaN from overflowing partial terms: the diagonal -+2xy/r**4 is -+inf where it exceeds the double range,
    and entries that are representable are right."""
    t = record(np.arctan2, 2)
    h = t.hessian(np.array([x, x]))
    assert not np.isnan(h).any(), h
    with np.errstate(over="ignore"):
        diag = 0.5 / x / x
    assert np.isclose(h[0, 0], -diag, rtol=1e-14) and np.isclose(h[1, 1], diag, rtol=1e-14), h
    if np.isfinite(diag):
        assert abs(h[0, 1]) <= 1e-15 * diag and h[0, 1] == h[1, 0], h
    h = t.hessian(np.array([x, 2 * x]))  # atan2(y, x): (y*y - x*x) / r**4 off the diagonal
    with np.errstate(over="ignore"):
        assert np.isclose(h[0, 1], (1.0 - 4.0) / 25.0 / x / x, rtol=1e-14), h


# ---- casts ----------------------------------------------------------------------------------------------------------
def test_astype_int_truncates_with_zero_derivative():
    t = tapead.record(lambda v: np.sum(v.astype(int)), np.array([1.5, 2.5]))
    x = np.array([[1.5, 2.5], [-1.5, 0.9], [-0.2, 7.0]])
    assert np.array_equal(t.value(x), [3.0, -1.0, 7.0])
    assert np.array_equal(t.evaluate(x).ravel(), [3.0, -1.0, 7.0])
    assert np.array_equal(t.gradient(x), np.zeros_like(x))


def test_astype_float32_rounds_and_float64_copies():
    x = np.array([0.1, 1e39, -3.3, 2.0 ** -149 * 0.7])
    t = tapead.record(lambda v: v.astype(np.float32) - v.astype(float), x)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float32).astype(float) - x
    assert same(t.value(x), expected) and same(t.evaluate(x[None])[0], expected)
    assert np.array_equal(t.jacobian(x), np.zeros((4, 4)))


def test_astype_bool_and_refused_dtypes():
    t = tapead.record(lambda v: v.astype(bool) * 1.0, np.array([0.0, 2.0, -0.0]))
    assert np.array_equal(t.value(np.array([0.0, 2.0, -0.0])), [0.0, 1.0, 0.0])
    for dtype in (np.complex128, np.float16, np.uint8, str):
        with pytest.raises(TracingError, match="astype"):
            tapead.record(lambda v: v.astype(dtype), np.ones(2))


# ---- calls that used to crash while recording -----------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # np.row_stack is a deprecated alias of np.vstack
@pytest.mark.parametrize("stack", ["vstack", "hstack", "column_stack", "row_stack", "stack", "concatenate",
                                   "dstack"])
def test_stacking_one_traced_array(stack):
    if not hasattr(np, stack):
        pytest.skip(f"np.{stack} is not in this numpy")
    fn = getattr(np, stack)
    x = np.array([1.0, 2.0, 3.0])
    if stack in ("concatenate", "stack"):
        x = x.reshape(1, 3)
    expected = fn(x)
    t = tapead.record(lambda v: fn(v) * np.arange(1.0, 4.0).reshape(np.shape(expected)[:-1] + (-1,)
                                                                   if expected.shape[-1] == 3 else expected.shape),
                      x)
    assert t.value(x).shape == expected.shape


@pytest.mark.parametrize("f", [lambda a: np.max(a, axis=(0, 1)), lambda a: np.min(a, axis=(0, 2)),
                               lambda a: np.amax(a, axis=(2, 0), keepdims=True), lambda a: a.max(axis=(1,)),
                               lambda a: np.maximum.reduce(a, axis=(0, 1))])
def test_extremes_over_tuple_axes(f):
    x = np.random.default_rng(5).normal(size=(2, 3, 4))
    t = tapead.record(lambda v: f(v.reshape(2, 3, 4)), x.ravel())
    assert np.array_equal(t.value(x.ravel()), f(x))
    j = t.jacobian(x.ravel()).reshape(np.size(f(x)), -1)
    assert np.array_equal(j.sum(axis=1), np.ones(np.size(f(x))))  # each output picks one input


@pytest.mark.parametrize("f", [lambda a: a.sum(axis=0, keepdims=True), lambda a: a.max(axis=1, keepdims=True),
                               lambda a: a.min(1, None, True), lambda a: a.ravel(order="F"),
                               lambda a: a.flatten("F"), lambda a: a.mean(), lambda a: np.mean(a),
                               lambda a: a.mean(axis=0, keepdims=True), lambda a: np.mean(a, axis=(0, 1)),
                               lambda a: np.sum(a, dtype=float), lambda a: a.sum(0, np.float64),
                               lambda a: a.prod(axis=1), lambda a: a.cumsum(axis=1), lambda a: a.clip(0.0, 0.5),
                               lambda a: a.round(1), lambda a: a.transpose(1, 0), lambda a: a.squeeze(),
                               lambda a: a.any(axis=0), lambda a: a.all(), lambda a: a.trace(),
                               lambda a: a.dot(np.ones(3)), lambda a: divmod(a, 0.3)[0] + a % 0.3,
                               lambda a: np.divmod(a, 0.4)[1], lambda a: a // 0.25])
def test_methods_with_numpy_signatures(f):
    x = np.random.default_rng(6).uniform(-1, 1, (2, 3))
    t = tapead.record(lambda v: f(v.reshape(2, 3)), x.ravel())
    expected = np.asarray(f(x), float)
    assert np.allclose(t.value(x.ravel()), expected, rtol=1e-15, atol=0)
    assert np.allclose(t.evaluate(x.ravel()[None]).reshape(expected.shape), expected, rtol=1e-15, atol=0)


def test_mean_gradient():
    t = tapead.record(lambda v: np.mean(v * v), np.ones(4))
    assert np.allclose(t.gradient(np.arange(4.0)), np.arange(4.0) / 2)


def test_storing_into_a_float_array_names_the_line_and_the_fix():
    def f(x):
        out = np.zeros(2)
        out[0] = x[0] * 2.0
        return out

    with pytest.raises(TracingError) as e:
        tapead.record(f, np.ones(2))
    msg = str(e.value)
    assert "out[0] = x[0] * 2.0" in msg and "np.zeros_like(x" in msg and "np.stack" in msg
    with pytest.raises(TracingError, match="float"):
        tapead.record(lambda x: float(x[0]), np.ones(2))


def test_float_dtype_other_than_float64_is_refused():
    with pytest.raises(TracingError, match="dtype"):
        tapead.record(lambda x: np.sum(x, dtype=np.float32), np.ones(2))
    with pytest.raises(TracingError, match="dtype"):
        tapead.record(lambda x: np.sin(x, dtype=np.float32), np.ones(2))


# ---- round with decimals: numpy's rint(x * 10**d) / 10**d -----------------------------------------------------------
@pytest.mark.parametrize("d", [0, 1, 2, 3, -1, -2])
def test_round_decimals_match_numpy(d):
    x = np.array([0.285, 1234.5, -0.125, 2.5, 0.5, -1e-300, 1e300, 15.0, 25.0])
    t = tapead.record(lambda v: np.round(v, d), x)
    assert same(t.value(x), np.round(x, d)) and same(t.evaluate(x[None])[0], np.round(x, d))
    assert np.array_equal(t.jacobian(x), np.zeros((9, 9)))


# ---- scipy.special ufuncs reach the same path by name ---------------------------------------------------------------
def test_scipy_special_ufuncs():
    sc = pytest.importorskip("scipy.special")
    x = np.array([-40.0, -2.0, -0.0, 0.3, 3.0, 800.0, -800.0])
    for f in (sc.erf, sc.erfc, sc.expit):
        t = tapead.record(lambda v: f(v), x)
        assert ulp_close(t.value(x), f(x)).all(), f
        assert ulp_close(t.evaluate(x[None])[0], f(x)).all(), f
    g = np.diag(tapead.record(lambda v: sc.expit(v), x).jacobian(x))
    e = sc.expit(x)
    assert np.allclose(g, e * (1 - e), rtol=1e-14, atol=0) and not np.isnan(g).any()
    p = np.array([0.0, 1e-300, 0.25, 0.5, 0.75, 1.0])
    t = tapead.record(lambda v: sc.logit(v), p)
    with np.errstate(divide="ignore"):
        assert np.allclose(t.value(p), sc.logit(p), rtol=1e-15, atol=1e-16)
        assert np.array_equal(np.diag(t.jacobian(p)), 1 / p + 1 / (1 - p))


@pytest.mark.parametrize("name", ["j0", "struve"])
def test_scipy_special_not_in_the_table_is_refused_by_name(name):
    sc = pytest.importorskip("scipy.special")
    f = getattr(sc, name)
    with pytest.raises(TracingError, match=name):
        tapead.record(lambda v: f(v) if name == "j0" else f(1.0, v), np.array([0.5]))
