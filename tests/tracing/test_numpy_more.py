"""Sorting, arg-extremes, statistics, interpolation, padding and the selection helpers on traced values: values
against numpy (interpreter and kernels), gradients against finite differences and JAX, order guards that flip."""
import numpy as np
import pytest

import tapead
from check import fd_gradient

RNG = np.random.default_rng(77)


def central(f, x):
    """Finite-difference gradient of a scalar function of one array (tests/check.py)."""
    return fd_gradient(f, x)


def check(f, x, x2=None, grad=True):
    """Values at ``x2`` (interpreter and kernels, following any new path) and the gradient of a random weighting
    of the outputs against central differences."""
    x2 = x if x2 is None else x2
    t = tapead.record(f, x)
    ref = np.asarray(f(x2), dtype=float)
    assert np.allclose(t.evaluate(x2), ref, rtol=1e-13, atol=1e-14, equal_nan=True)
    assert np.allclose(t.value(x2), ref, rtol=1e-13, atol=1e-14, equal_nan=True)
    if grad:
        w = RNG.normal(size=ref.shape)
        scalar = lambda z: np.sum(w * np.asarray(f(z)))
        g = tapead.record(scalar, x).gradient(x2)
        assert np.allclose(g, central(scalar, x2), rtol=1e-6, atol=1e-7)
    return t


X = RNG.normal(size=(3, 4))


@pytest.mark.parametrize("f", [
    lambda x: np.sort(x), lambda x: np.sort(x, axis=0), lambda x: np.sort(x, axis=None),
    lambda x: np.partition(x, 2), lambda x: np.take_along_axis(x, np.argsort(x, axis=1), axis=1),
    lambda x: x.ravel()[np.argsort(x, axis=None)],
], ids=["sort", "sort0", "sortNone", "partition", "argsort", "argsortNone"])
def test_sorting(f):
    check(f, X, X + 1e-3)
    check(f, X, RNG.normal(size=X.shape))  # another order: re-recorded, still right


def test_partition_is_a_partition():
    x = RNG.normal(size=9)
    p = tapead.record(lambda v: np.partition(v, 4), x).value(x)
    assert p[4] == np.partition(x, 4)[4] and np.all(p[:4] <= p[4]) and np.all(p[5:] >= p[4])


def test_sort_nans_last_and_nan_appearing_changes_path():
    x = np.array([3.0, np.nan, 1.0, 2.0])
    t = tapead.record(np.sort, x)
    assert np.array_equal(t.value(x), np.sort(x), equal_nan=True)
    t = tapead.record(np.sort, np.array([3.0, 0.5, 1.0, 2.0]))
    y = np.array([3.0, 0.5, np.nan, 2.0])
    assert np.array_equal(t.value(y), np.sort(y), equal_nan=True)


@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin(name):
    fn = getattr(np, name)
    for x in (X, np.array([[1.0, 3, 3, 0], [np.nan, 1, 2, 3], [2, np.nan, 1, 9]])):
        for axis in (None, 0, 1):
            assert np.array_equal(tapead.record(lambda v: v.ravel()[:0].sum() + fn(v, axis=axis), x).value(x),
                                  fn(x, axis=axis))
    t = tapead.record(lambda v: v[fn(v)] * 1.0, np.array([1.0, 5.0, 2.0]))
    y = np.array([7.0, 5.0, 0.5])  # the winner changes: re-recorded
    assert t.value(y) == y[fn(y)] and np.array_equal(t.gradient(y), np.eye(3)[fn(y)])


@pytest.mark.parametrize("f", [
    lambda x: np.var(x), lambda x: np.var(x, axis=0, ddof=1), lambda x: np.std(x, axis=1, keepdims=True),
    lambda x: np.std(x, ddof=1), lambda x: np.var(x, axis=(0, 1), correction=1),
    lambda x: np.average(x, axis=1, weights=[1.0, 2.0, 3.0, 4.0]),
    lambda x: np.average(x[0], weights=x[1] ** 2), lambda x: np.stack(np.average(x, axis=0, returned=True)),
    lambda x: np.polyval(x[0], x[1]), lambda x: np.polyval([1.0, -2.0, 0.5], x),
    lambda x: np.gradient(x[0]), lambda x: np.gradient(x, axis=1), lambda x: np.stack(np.gradient(x, 0.5)),
    lambda x: np.gradient(x[1], [0.0, 0.5, 2.0, 2.5], edge_order=2),
    lambda x: np.pad(x, 1), lambda x: np.pad(x, ((1, 0), (2, 1)), mode="edge"),
    lambda x: np.pad(x[0], 2, mode="reflect"), lambda x: np.pad(x, 1, constant_values=x[0, 0]),
    lambda x: np.vsplit(np.vstack([x, x]), 2)[1], lambda x: np.hsplit(x, 2)[0],
    lambda x: np.dsplit(x.reshape(1, 3, 4), [1])[1], lambda x: np.rollaxis(x, 1), lambda x: np.rot90(x, 3),
    lambda x: np.linspace(x[0, 0], x[0, 1], 5), lambda x: np.linspace(x[0], x[1], 3, endpoint=False, axis=1),
    lambda x: np.stack(np.linspace(x[0, 0], x[0, 1], 4, retstep=True)[:1])[0],
    lambda x: np.select([x < 0, x > 1], [x ** 2, 2 * x], default=x),
    lambda x: np.real(x) + np.imag(x) + np.real_if_close(x),
], ids=lambda f: None)
def test_array_functions(f):
    check(f, X, X + 1e-3)


def test_interp():
    xp, fp = np.array([0.0, 1.0, 2.5, 3.0]), np.array([1.0, 3.0, 2.0, 5.0])
    x = np.array([-1.0, 0.2, 1.1, 2.2, 2.9, 4.0])  # (knots: see the JAX test)
    check(lambda v: np.interp(v, xp, fp), x)
    check(lambda v: np.interp(v, xp, fp, left=-1.0, right=9.0), x, x[::-1].copy())  # brackets change
    z = np.concatenate([x, fp])
    check(lambda v: np.interp(v[:6], xp, v[6:]), z, z + 1e-3)  # traced fp
    check(lambda v: np.interp(0.7, v[:4], v[4:]), np.concatenate([xp, fp]))  # traced xp
    with pytest.raises(tapead.TracingError, match="period"):
        tapead.record(lambda v: np.interp(v, xp, fp, period=2.0), x)


def test_interp_gradient_matches_jax_at_knots():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    xp, fp = np.array([0.0, 1.0, 2.5, 3.0]), np.array([1.0, 3.0, 2.0, 5.0])
    x = np.array([0.0, 0.2, 1.0, 2.5, 2.7])  # knots included: the slope to the right
    g = tapead.record(lambda v: np.sum(np.interp(v, xp, fp) ** 2), x).gradient(x)
    ref = jax.grad(lambda v: jax.numpy.sum(jax.numpy.interp(v, xp, fp) ** 2))(x)
    assert np.allclose(g, ref, rtol=1e-13)


def test_var_std_gradient_matches_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    f = lambda v, xnp: xnp.sum(xnp.std(v, axis=0, ddof=1) * xnp.var(v, axis=1)[:, None].sum())
    g = tapead.record(lambda v: f(v, np), X).gradient(X)
    assert np.allclose(g, jax.grad(lambda v: f(v, jnp))(X), rtol=1e-12)


def test_nan_to_num_and_angle():
    x = np.array([1.5, np.nan, np.inf, -np.inf, -0.0, 0.0, -2.0])
    t = tapead.record(lambda v: np.nan_to_num(v), x)
    assert np.array_equal(t.value(x), np.nan_to_num(x))
    assert np.array_equal(t.gradient(x) if False else tapead.record(lambda v: np.sum(np.nan_to_num(v, nan=7.0,
                          posinf=1.0)), x).gradient(x), [1, 0, 0, 0, 1, 1, 1])
    t = tapead.record(np.angle, x)
    assert np.array_equal(t.value(x), np.angle(x), equal_nan=True)
    assert np.array_equal(np.signbit(t.value(x)), np.signbit(np.angle(x)))
    assert np.array_equal(tapead.record(lambda v: np.angle(v, deg=True), x).value(x), np.angle(x, deg=True),
                          equal_nan=True)


def test_isclose_and_allclose():
    a = np.array([1.0, 1.0 + 1e-9, np.nan, np.inf, -np.inf, 2.0])
    b = np.array([1.0, 1.0, np.nan, np.inf, np.inf, 3.0])
    z = np.concatenate([a, b])
    for eq in (False, True):
        t = tapead.record(lambda v: np.isclose(v[:6], v[6:], equal_nan=eq) * 1.0, z)
        assert np.array_equal(t.value(z), np.isclose(a, b, equal_nan=eq))
    f = lambda v: v[0] if np.allclose(v[:2], v[2:]) else -v[0]
    t = tapead.record(f, np.array([1.0, 2.0, 1.0, 2.0]))
    assert t.value(np.array([3.0, 2.0, 3.0, 2.0])) == 3.0
    assert t.value(np.array([3.0, 2.0, 4.0, 2.0])) == -3.0  # the guard flips: re-recorded


def test_loaded_sort_tape_refuses_another_order(tmp_path):
    x = np.array([1.0, 2.0, 3.0])
    tapead.record(np.sort, x).save(tmp_path / "s.tape")
    t = tapead.load(tmp_path / "s.tape")
    assert np.array_equal(t.value(x * 2), x * 2)
    with pytest.raises(tapead.BranchError):
        t.value(np.array([2.0, 1.0, 3.0]))


def test_sort_gradient_matches_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    w = np.arange(1.0, 13.0).reshape(3, 4)
    f = lambda v, xnp: xnp.sum(w * xnp.sort(v, axis=0) ** 2)
    g = tapead.record(lambda v: f(v, np), X).gradient(X)
    assert np.allclose(g, jax.grad(lambda v: f(v, jax.numpy))(X), rtol=1e-14)


def test_refusals_are_tracing_errors():
    with pytest.raises(tapead.TracingError, match="order"):
        tapead.record(lambda v: np.sort(v, order="a"), X)
    with pytest.raises(tapead.TracingError, match="mode"):
        tapead.record(lambda v: np.pad(v, 1, mode="median"), X)
    with pytest.raises(tapead.TracingError, match="spacing"):
        tapead.record(lambda v: np.gradient(v[0], v[1]), X)
