"""Which form a derived tape takes: structured (loops) or unrolled, whichever executes less for a small tape, and
a loop over directions where unrolled sweeps would be large; each form checked against the other and against
finite differences of the gradient."""
from __future__ import annotations

import numpy as np

import tapead
from check import assert_close
from tapead.ir.structure import scalar, work
from tapead.transforms import ad, higher, separable


def two_loops(x):
    """Not one sum over one loop: products and quotients of loop sums (no separable Hessian)."""
    a = np.tanh(x[:-1] * x[1:])
    b = np.exp(-x ** 2)
    return np.sum(a) * np.sum(b) + np.sum(a * a) / np.sum(b)


def pairs(n):
    i, j = np.triu_indices(n, 1)

    def lj(x):
        p = x.reshape(n, 3)
        d = p[i] - p[j]
        r6 = 1.0 / np.sum(d * d, axis=1) ** 3
        return np.sum(4.0 * (r6 * r6 - r6))
    return lj


def fd_hvp(fun, x, v, h=1e-6):
    return (fun.gradient(x + h * v) - fun.gradient(x - h * v)) / (2 * h)


def test_small_structured_hvp_takes_the_lighter_unrolled_form():
    x = np.linspace(0.1, 1.0, 20)
    fun = tapead.record(two_loops, x, structured=True)
    assert fun.tape.maps and work(fun.tape) <= higher.BOTH_WAYS
    g = ad.grad(fun.tape)
    structured, unrolled = ad.jvp(g), ad.jvp(scalar(g))
    assert work(unrolled) < work(structured)  # the finding: small loops' structured HVP executes more
    chosen = higher.hvp_tape(fun.tape)
    assert not chosen.maps and work(chosen) == work(unrolled)
    v = np.cos(np.arange(20.0))
    assert_close(tapead.evaluate(chosen, x, v), tapead.evaluate(structured, x, v), rtol=1e-13)
    assert_close(fun.hvp(x, v=v), fd_hvp(fun, x, v), rtol=1e-6)


def test_large_structured_hvp_keeps_its_loops():
    x = np.linspace(0.1, 1.0, 2_000)
    fun = tapead.record(two_loops, x, structured=True)
    assert work(fun.tape) > higher.BOTH_WAYS
    assert higher.hvp_tape(fun.tape).maps


def test_separable_hessian_is_kept_when_lighter_and_agrees_with_value_gradient_hessian():
    x = 1.1 * np.array([(i, j, k) for k in range(2) for j in range(2) for i in range(2)], float).ravel()
    x += np.random.default_rng(3).uniform(-0.05, 0.05, x.size)
    fun = tapead.record(pairs(8), x, structured=True)
    H = higher.hessian_tape(fun.tape)
    assert H.maps  # the pair blocks scattered: lighter than the dense sweeps here
    rec, g, _, dense = higher._hessian_sweeps(fun.tape, False)
    assert work(H) <= work(higher.finish_tape(rec, g, dense, (24, 24)))
    vgh = tapead.evaluate(higher.value_gradient_hessian_tape(fun.tape), x)
    assert np.array_equal(vgh[1 + 24:].reshape(24, 24), tapead.evaluate(H, x))
    assert_close(tapead.evaluate(H, x), tapead.record(pairs(8), x, structured=False).hessian(x), rtol=1e-12)


def test_a_heavier_separable_hessian_gives_way_to_the_dense_one():
    # a chain of pair terms: the dense sweeps share the chain's work, the pair blocks repeat it per pair
    x = np.linspace(0.2, 1.4, 12)
    fun = tapead.record(lambda x: np.sum(np.log(1.0 + x[:-1] ** 2 + x[1:] ** 2)), x, structured=True)
    sep = separable.hessian(fun.tape, higher.hessian_tape, False)
    assert sep is not None
    rec, g, _, dense = higher._hessian_sweeps(fun.tape, False)
    dense = higher.finish_tape(rec, g, dense, (12, 12))
    assert work(dense) < work(sep)
    chosen = higher.hessian_tape(fun.tape)
    assert not chosen.maps and work(chosen) == work(dense)
    assert np.array_equal(tapead.evaluate(chosen, x), tapead.evaluate(dense, x))
    assert_close(tapead.evaluate(sep, x), tapead.evaluate(dense, x), rtol=1e-12)
    vgh = tapead.evaluate(higher.value_gradient_hessian_tape(fun.tape), x)
    assert np.array_equal(vgh[13:].reshape(12, 12), tapead.evaluate(chosen, x))
