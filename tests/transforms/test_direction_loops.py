"""Dense Hessians and Jacobians as one loop over unit directions (``tapead.transforms.directions``): the same
entries, bit for bit, as the unrolled sweeps; exactly symmetric; guards kept; compiled kernels equal to the
interpreter; and the 6x6 ``eigh`` Hessian that used to take seconds against JAX and finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, fd_hessian, fd_jacobian
from functions import lj, lj_start, rosenbrock, rosenbrock_start, seed_bar, seed_baz
from tapead.ir.structure import scalar
from tapead.transforms import ad, affine, directions, higher

RNG = np.random.default_rng(11)


def dense(x):
    """Every input reaches every instruction: a dense quadratic form through nonlinearities."""
    A = np.cos(np.arange(x.size)[:, None] * 0.3 + np.arange(x.size)[None, :])
    y = np.tanh(A @ x)
    return np.sum(y * y * np.exp(-0.1 * (x @ A @ x)))


def eigh_f(x):
    n = int(round(np.sqrt(x.size)))
    w, v = np.linalg.eigh(x.reshape(n, n), UPLO="L")
    return np.sum(w * np.sin(w)) + np.sum(v[0] ** 2 * w)


def eigh_parts(x):
    w, v = np.linalg.eigh(x.reshape(6, 6), UPLO="L")
    return np.concatenate([w, (v * v).ravel()])


@pytest.fixture
def always(monkeypatch):
    """Every Hessian and Jacobian sweep becomes a loop (the thresholds at their smallest; an affine gradient's
    constant Hessian, which would answer seed_bar's and seed_baz's without sweeping, is off)."""
    monkeypatch.setattr(directions, "LOOP_OVER", 0)
    monkeypatch.setattr(directions, "DENSE_FACTOR", 0)
    monkeypatch.setattr(affine, "constant_jacobian", lambda *args, **kwargs: None)


def test_the_outside_limit_is_the_code_generators_cut():
    """A loop's kernel is lowered unrolled when the code around the loop needs cutting: directions must stop
    where the code generator starts cutting, or a loop becomes n copies of its body."""
    from tapead.backend import codegen
    assert directions.OUTSIDE_LIMIT == codegen.CUT_ABOVE


def test_a_loop_whose_outside_code_would_be_cut_is_not_made(always, monkeypatch):
    monkeypatch.setattr(directions, "OUTSIDE_LIMIT", 10)  # below the 7 x 7 entries
    x = RNG.uniform(-1, 1, 7)
    tape = tapead.record(dense, x, structured=False).tape
    assert not higher.hessian_tape(tape).maps and not higher.value_gradient_hessian_tape(tape).maps
    assert not higher.jacobian_tape(tapead.record(lambda x: np.tanh(np.outer(x, x)).ravel(), x).tape).maps


def unrolled(build, *args):
    old = directions.LOOP_OVER, directions.DENSE_FACTOR
    directions.LOOP_OVER, directions.DENSE_FACTOR = 10 ** 15, 10 ** 15
    try:
        return build(*args)
    finally:
        directions.LOOP_OVER, directions.DENSE_FACTOR = old


CASES = [(seed_bar, RNG.uniform(0.5, 1.5, 3)), (seed_baz, RNG.uniform(0.5, 1.5, 6)),
         (rosenbrock, rosenbrock_start(12)), (lj, lj_start(atoms=5)), (dense, RNG.uniform(-1, 1, 7))]


@pytest.mark.parametrize("f, x", CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_hessian_loop_is_bitwise_the_unrolled_hessian(always, f, x):
    tape = tapead.record(f, x, structured=False).tape
    H = higher.hessian_tape(tape)
    assert len(H.maps) == 1 and H.maps[0].n == tape.n_inputs
    reference = unrolled(higher.hessian_tape, tape)
    assert not reference.maps
    got = tapead.evaluate(H, x)
    assert np.array_equal(got, tapead.evaluate(reference, x)) and np.array_equal(got, got.T)
    vgh = tapead.evaluate(higher.value_gradient_hessian_tape(tape), x)
    assert np.array_equal(vgh[1 + x.size:].reshape(got.shape), got)
    # the compiled loop is bitwise the compiled unrolled sweeps (the interpreter's numpy exp/tanh may differ
    # from libm's in the last bits)
    assert np.array_equal(tapead.Function(H).value(x), tapead.Function(reference).value(x))
    assert_close(got, fd_hessian(tapead.Function(tape).gradient, x), rtol=1e-6)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_jacobian_loops_are_bitwise_the_unrolled_jacobians(always, mode):
    x = RNG.uniform(0.5, 1.5, 5)

    def f(x):
        return np.stack([np.sin(x[0]) * x[1], x[2] ** 2 / (1.0 + x[3] ** 2), np.exp(x[1] * x[4]) - x[0]])
    tape = tapead.record(f, x).tape
    J = higher.jacobian_tape(tape, mode)
    assert len(J.maps) == 1 and J.maps[0].n == (5 if mode == "forward" else 3)
    got = tapead.evaluate(J, x)
    assert np.array_equal(got, tapead.evaluate(unrolled(higher.jacobian_tape, tape, mode), x))
    assert np.array_equal(tapead.Function(J).value(x),
                          tapead.Function(unrolled(higher.jacobian_tape, tape, mode)).value(x))
    assert_close(got, fd_jacobian(f, x), rtol=1e-7)


def test_weighted_hessian_loop(always):
    x, w = RNG.uniform(0.5, 1.5, 4), np.array([0.3, -1.2])

    def f(x):
        return np.stack([np.sin(x[0] * x[1]) * x[2], x[3] ** 3 / x[0]])
    tape = tapead.record(f, x).tape
    H = higher.hessian_tape(tape, weights=True)
    assert H.maps
    assert np.array_equal(tapead.evaluate(H, x, w), tapead.evaluate(unrolled(higher.hessian_tape, tape, True), x, w))
    assert_close(tapead.evaluate(H, x, w), tapead.Function(tapead.record(lambda x: w @ f(x), x).tape).hessian(x),
                 rtol=1e-13)


def test_hessian_loop_keeps_the_guards(always):
    def f(x):
        return np.sum(x ** 3) if x[0] > 0 else np.sum(np.sin(x) * x[1])
    fun = tapead.record(f, np.array([1.0, 2.0, 3.0]))
    assert fun.tape.guards.size and higher.hessian_tape(fun.tape).guards.size
    for x in (np.array([0.5, 1.5, -2.0]), np.array([-0.5, 1.5, 2.0])):  # the other branch re-records
        assert_close(fun.hessian(x), fd_hessian(fun.gradient, x), rtol=1e-6)


def test_a_body_over_the_limit_leaves_the_sweeps_unrolled(always, monkeypatch):
    monkeypatch.setattr(directions, "BODY_LIMIT", 10)
    x = RNG.uniform(-1, 1, 7)
    tape = tapead.record(dense, x, structured=False).tape
    H = higher.hessian_tape(tape)
    assert not H.maps
    assert np.array_equal(tapead.evaluate(H, x), tapead.evaluate(unrolled(higher.hessian_tape, tape), x))
    assert not higher.jacobian_tape(tapead.record(lambda x: np.tanh(np.outer(x, x)).ravel(), x).tape).maps


def test_only_dense_large_sweeps_become_loops():
    chain = tapead.record(rosenbrock, rosenbrock_start(400), structured=False).tape  # each direction reaches a few instructions
    assert not directions.as_loop(scalar(ad.value_and_grad(chain)), chain.n_inputs, 0)
    assert not higher.hessian_tape(chain).maps
    x = RNG.standard_normal(36)
    tape = tapead.record(eigh_f, x).tape  # Jacobi rotations: every direction reaches everything
    assert directions.as_loop(scalar(ad.value_and_grad(tape)), 36, 0)


def J_w(fun, x, w):
    """w . J(x), flat: the gradient of w . f."""
    return np.tensordot(w, fun.jacobian(x), 1).ravel()


def test_eigh_hessian_and_jacobian_as_loops_against_finite_differences_and_jax():
    M = RNG.standard_normal((6, 6))
    x = M.ravel()
    fun = tapead.record(eigh_f, x)
    H = fun.hessian(x)
    assert higher.hessian_tape(fun.tape).maps and np.array_equal(H, H.T)
    assert_close(H, fd_hessian(fun.gradient, x), rtol=1e-6, scale=np.abs(H).max())
    parts = tapead.record(eigh_parts, x)
    J = parts.jacobian(x)
    assert_close(J, fd_jacobian(eigh_parts, x), rtol=1e-6, scale=np.abs(J).max())
    w = RNG.standard_normal(42)  # the Lagrangian Hessian: a loop too (17 s of unrolled sweeps before)
    Hw = parts.hessian(x, weights=w)
    assert higher.hessian_tape(parts.tape, weights=True).maps
    assert_close(Hw.reshape(36, 36), fd_jacobian(lambda y: J_w(parts, y, w), x), rtol=1e-6, scale=np.abs(Hw).max())
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        def f_jax(x):  # numpy reads the lower triangle only: so does this
            A = x.reshape(6, 6)
            w, v = jnp.linalg.eigh(jnp.tril(A) + jnp.tril(A, -1).T)
            return jnp.sum(w * jnp.sin(w)) + jnp.sum(v[0] ** 2 * w)
        assert_close(H, np.asarray(jax.hessian(f_jax)(jnp.asarray(x))), rtol=1e-12, scale=np.abs(H).max())
    finally:
        jax.config.update("jax_enable_x64", before)
