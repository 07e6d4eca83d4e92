"""Statistics, binning, scatter-adds and lists of traced scalars: values against numpy, gradients against central
differences and JAX (when installed); a choice numpy makes by value (the median's element, a bin) is a guard,
so a call where the choice differs re-records and is still right."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, fd_gradient, magnitude
from tapead.errors import TracingError

I = np.array([0, 2, 2, 5, 1, 2, 0])


def add_at(x, xp=np):
    if xp is np:
        g = 0.0 * x
        np.add.at(g, I, x ** 2)
    else:
        g = xp.zeros(7).at[I].add(x ** 2)
    return xp.sum(g * xp.arange(7.0))


CASES = {  # name -> (numpy function of x (7,), the same in jax.numpy or None)
    "add.at": (add_at, lambda x, jnp: add_at(x, jnp)),
    "bincount": (lambda x: np.sum(np.bincount(I, weights=x ** 2, minlength=8) * np.arange(8.0)),
                 lambda x, jnp: jnp.sum(jnp.bincount(I, weights=x ** 2, length=8) * jnp.arange(8.0))),
    "trapezoid": (lambda x: np.trapezoid(x ** 2, np.cumsum(np.abs(x))),
                  lambda x, jnp: jnp.trapezoid(x ** 2, jnp.cumsum(jnp.abs(x)))),
    "trapezoid dx": (lambda x: np.trapezoid(np.sin(x), dx=0.3), lambda x, jnp: jnp.trapezoid(jnp.sin(x), dx=0.3)),
    "nansum": (lambda x: np.nansum(x ** 3), lambda x, jnp: jnp.nansum(x ** 3)),
    "nanmean": (lambda x: np.nanmean(x ** 3), lambda x, jnp: jnp.nanmean(x ** 3)),
    "ptp": (lambda x: np.ptp(x ** 2), lambda x, jnp: jnp.ptp(x ** 2)),
    "median odd": (lambda x: np.median(x ** 2), lambda x, jnp: jnp.median(x ** 2)),
    "median even": (lambda x: np.median(x[:6] ** 2), lambda x, jnp: jnp.median(x[:6] ** 2)),
    "median axis": (lambda x: np.sum(np.median(x[:6].reshape(2, 3), axis=1, keepdims=True) * x[:6].reshape(2, 3)),
                    lambda x, jnp: jnp.sum(jnp.median(x[:6].reshape(2, 3), axis=1, keepdims=True)
                                           * x[:6].reshape(2, 3))),
    "percentile": (lambda x: np.sum(np.percentile(x, [10, 50, 73.5])),
                   lambda x, jnp: jnp.sum(jnp.percentile(x, jnp.array([10, 50, 73.5])))),
    "quantile": (lambda x: np.quantile(np.sin(x), 0.3), lambda x, jnp: jnp.quantile(jnp.sin(x), 0.3)),
    "searchsorted": (lambda x: np.sum(x[np.searchsorted(np.sort(x), x[:3]) % 7]), None),
    "histogram": (lambda x: np.sum(np.histogram(x, bins=3, weights=x ** 2)[0]) + np.sum(np.histogram(x, bins=4)[1]),
                  None),
    "convolve same": (lambda x: np.sum(np.convolve(x, np.sin(x[:3]), mode="same") ** 2),
                      lambda x, jnp: jnp.sum(jnp.convolve(x, jnp.sin(x[:3]), mode="same") ** 2)),
    "convolve full": (lambda x: np.sum(np.convolve(x, x[:4]) ** 2),
                      lambda x, jnp: jnp.sum(jnp.convolve(x, x[:4]) ** 2)),
    "convolve valid": (lambda x: np.sum(np.convolve(x, x[:3], "valid")),
                       lambda x, jnp: jnp.sum(jnp.convolve(x, x[:3], "valid"))),
    "np.array of scalars": (lambda x: np.mean(np.array([x[0], x[1] + 2.0])) + np.std(np.array([x[2], x[3] ** 2])),
                            lambda x, jnp: jnp.mean(jnp.array([x[0], x[1] + 2.0]))
                            + jnp.std(jnp.array([x[2], x[3] ** 2]))),
    "np.mean of a list": (lambda x: np.mean([x[0], x[1] + 2.0]) * np.var([x[4], x[5], x[6]]),
                          lambda x, jnp: jnp.mean(jnp.array([x[0], x[1] + 2.0])) * jnp.var(jnp.array(x[4:7]))),
    "norm p=3": (lambda x: np.linalg.norm(x, ord=3), lambda x, jnp: jnp.linalg.norm(x, ord=3)),
    "norm p=0.5": (lambda x: np.linalg.norm(x, ord=0.5), lambda x, jnp: jnp.linalg.norm(x, ord=0.5)),
    "norm p=-inf": (lambda x: np.linalg.norm(x, ord=-np.inf), lambda x, jnp: jnp.linalg.norm(x, ord=-jnp.inf)),
    "norm p=0": (lambda x: np.linalg.norm(x, ord=0) + np.sum(x), lambda x, jnp: jnp.sum(x) + 7.0),
}
POINTS = [np.random.default_rng(0).normal(size=7), np.random.default_rng(1).normal(size=7) * 2]


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients(name):
    f, jf = CASES[name]
    t = tapead.record(f, POINTS[0])
    for x in POINTS:  # the second point takes other choices (sort order, bins): a new path is recorded there
        want = f(x)
        assert_close(t.value(x), want, 1e-13, scale=magnitude(want))
        g = t.gradient(x)
        fd = fd_gradient(f, x)
        assert_close(g, fd, 1e-7, scale=magnitude(fd, want))
        if jf is not None:
            jax = pytest.importorskip("jax")
            jax.config.update("jax_enable_x64", True)
            jg = np.asarray(jax.grad(lambda v: jf(v, jax.numpy))(x))
            assert_close(g, jg, 1e-12, scale=magnitude(jg))


def test_add_at_into_a_float_buffer_says_what_to_write():
    def f(x):
        g = np.zeros(7)
        np.add.at(g, I, x)
        return np.sum(g)

    with pytest.raises(TracingError, match="np.bincount"):
        tapead.record(f, POINTS[0])


def test_median_records_its_choice_as_guards():
    t = tapead.record(lambda x: np.median(x), POINTS[0])
    assert len(t.guards) > 0
    x = POINTS[0][::-1].copy()
    assert t.value(x) == np.median(x)
