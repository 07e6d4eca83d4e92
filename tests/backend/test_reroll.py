"""A scalar tape's repeated steps (a Python loop over time steps) compile as loops (``backend/reroll``) that
compute the straight-line code's bits: steps that differ, constants that differ per step, guards inside steps,
steps reading inputs through an irregular index, batches, and random step programs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tapead
from tapead.backend import codegen, reroll
from tapead.ir.interpret import interpret
from tapead.transforms import ad


def lotka_volterra(steps: int, h: float = 0.01, odd_step: int | None = None):
    """RK4 for Lotka-Volterra, state and parameters in z; ``odd_step``: one step takes an extra operation."""
    def f(z):
        x, y, a, b, c, d = z[0], z[1], z[2], z[3], z[4], z[5]

        def rhs(x, y):
            return a * x - b * x * y, d * x * y - c * y
        for k in range(steps):
            k1 = rhs(x, y)
            k2 = rhs(x + 0.5 * h * k1[0], y + 0.5 * h * k1[1])
            k3 = rhs(x + 0.5 * h * k2[0], y + 0.5 * h * k2[1])
            k4 = rhs(x + h * k3[0], y + h * k3[1])
            x = x + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            y = y + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
            if k == odd_step:
                x = x * 1.0001 + 0.001 * y
        return x * x + y * y
    return f


Z0 = np.array([1.0, 0.5, 1.1, 0.4, 0.4, 0.1])


def _loops(tape) -> list:
    """``(steps, body length)`` of the loops the gradient kernel of ``tape`` compiles."""
    return [(m.n, len(m.body)) for m in codegen.loop_form(ad.value_and_grad(tape)).maps]


def _bitwise(f, x0, points):
    """The compiled value and gradient against the straight-line kernels of the same tapes, bit for bit (the same
    instructions on the same operands in the same order), and against the interpreter to rounding (numpy's
    exp and tanh are not libm's)."""
    fun = tapead.record(f, x0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codegen, "REROLL_ABOVE", 1 << 62)
        straight = tapead.record(f, x0)
        wants = [(straight.value(x), straight.gradient(x)) for x in points]
    grad = ad.value_and_grad(fun.tape)
    for x, (value, gradient) in zip(points, wants):
        assert fun.value(x) == value
        assert np.array_equal(fun.gradient(x), gradient)
        np.testing.assert_allclose(interpret(grad, np.asarray(x)[None])[0][0], np.r_[value, gradient], rtol=1e-12,
                                   atol=1e-14)
    return fun


def test_rk4_steps_compile_as_two_loops_with_the_straight_line_bits():
    f = lotka_volterra(200)
    fun = _bitwise(f, Z0, [Z0, Z0 * 1.01])
    loops = _loops(fun.tape)
    assert [n for n, _ in loops] == [199, 199]  # the forward steps and their reverse
    assert all(size <= 120 for _, size in loops)
    assert len(codegen.loop_form(ad.value_and_grad(fun.tape)).code) < len(ad.value_and_grad(fun.tape).code) / 5
    autograd = pytest.importorskip("autograd")
    np.testing.assert_allclose(fun.gradient(Z0), autograd.grad(f)(Z0), rtol=1e-11)


def test_a_step_that_differs_is_not_rolled_into_the_others():
    f = lotka_volterra(200, odd_step=97)
    fun = _bitwise(f, Z0, [Z0, Z0 * 0.99])
    assert len(_loops(fun.tape)) >= 3  # the run is cut around the odd step
    plain = tapead.record(lotka_volterra(200), Z0)
    assert not np.array_equal(fun.gradient(Z0), plain.gradient(Z0))


def test_steps_with_their_own_constants():
    def f(z):
        x, y = z[0], z[1]
        for k in range(600):
            x = x + (0.001 * k) * np.sin(y)  # a different constant at every step
            y = y - 0.01 * x * np.cos(x)
        return x * y
    fun = _bitwise(f, np.array([0.3, 0.2]), [np.array([0.3, 0.2]), np.array([-0.1, 0.4])])
    assert _loops(fun.tape)


def test_guards_inside_steps_keep_their_branches():
    def f(z):
        x = z[0]
        for k in range(700):
            x = x * 0.999 + 0.002 if x > 0.5 else x + 0.003 * z[1]  # a guard per step
        return x * x
    x0 = np.array([0.7, 1.0])
    fun = _bitwise(f, x0, [x0])
    assert len(fun.tape.guards) == 700 and _loops(fun.tape)
    other = np.array([0.2, 0.5])  # other branches: answered by the path it really takes
    assert np.array_equal(fun.gradient(other), tapead.record(f, other).gradient(other))


def test_a_recurrence_reading_inputs_by_step_index():
    def f(x):
        s = x[0]
        for k in range(2000):
            s = 0.9 * s + np.sin(x[k % 8] * s)
        return s
    x0 = np.linspace(0.1, 0.8, 8)
    fun = _bitwise(f, x0, [x0, x0[::-1].copy()])
    assert _loops(fun.tape)


def test_batches_of_points_are_the_points():
    fun = tapead.record(lotka_volterra(120), Z0)
    X = Z0 * (1 + 0.01 * np.arange(5))[:, None]
    G = fun.gradient(X)
    for x, g in zip(X, G):
        assert np.array_equal(fun.gradient(x), g)
    assert np.array_equal(fun.value(X), np.array([fun.value(x) for x in X]))


def test_a_small_or_unrepeated_tape_is_left_alone():
    fun = tapead.record(lambda x: np.sum(np.sin(x) * x), np.ones(5))
    assert reroll.rerolled(fun.tape) is fun.tape
    picks = np.random.default_rng(0).integers(0, 4, 3000)  # no period: a different operation at every step

    def f(x):
        s = x[0]
        for p in picks.tolist():
            s = [np.sin(s) + x[1], s * x[1] - 0.5, np.tanh(s * 0.7), s / (1.0 + x[1] * x[1])][p]
        return s
    straight = tapead.record(f, np.array([0.3, 0.4]))
    grad = ad.value_and_grad(straight.tape)
    assert codegen.kernel_records(grad) > codegen.REROLL_ABOVE
    assert codegen.loop_form(grad) is grad


def test_overlapping_stretches_make_disjoint_runs(monkeypatch_module):
    """Two runs of one period back to back: a stretch reaches up to a period past its last match, into the next."""
    def f(z):
        x = z[0] + z[1]
        for _ in range(20):
            x = np.sin(x) * 1.1
        for _ in range(20):
            x = np.cos(x) * 1.1
        return x
    fun = _bitwise(f, np.array([0.2, 0.3]), [np.array([0.2, 0.3])])
    for tape in (fun.tape, ad.value_and_grad(fun.tape)):
        taken = np.zeros(len(tape.code), bool)
        for s, L, steps in reroll._runs(tape.code.astype(np.int64), tape.first_result):
            assert not taken[s:s + L * steps].any()
            taken[s:s + L * steps] = True


OPS = [lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a - 0.5 * b, lambda a, b: np.sin(a) * b,
       lambda a, b: np.tanh(a + b), lambda a, b: np.exp(-a * a) + b, lambda a, b: a / (1.0 + b * b)]


@given(st.lists(st.tuples(st.integers(0, len(OPS) - 1), st.integers(0, 3), st.integers(0, 3)), min_size=2,
                max_size=8), st.integers(8, 30), st.integers(0, 2 ** 16))
@settings(max_examples=25)  # (each example compiles four kernels)
def test_random_step_programs(monkeypatch_module, program, steps, seed):
    """A random step over a state of four values and the inputs, repeated: loops or not, the same bits."""
    def f(z):
        s = [z[0], z[1], z[2], z[3]]
        for _ in range(steps):
            for op, i, j in program:
                s[i] = OPS[op](s[i], s[j]) * 0.5 + 0.1 * z[4]
        return s[0] + s[1] * s[2] - s[3]
    x0 = np.random.default_rng(seed).uniform(-1, 1, 5)
    fun = _bitwise(f, x0, [x0, x0 * 0.9])
    assert _loops(fun.tape) or len(program) * steps < reroll.MIN_ROWS


@pytest.fixture(scope="module")
def monkeypatch_module():
    """Every tape of the random programs is large enough to re-roll."""
    mp = pytest.MonkeyPatch()
    mp.setattr(codegen, "REROLL_ABOVE", 0)
    mp.setattr(reroll, "MIN_ROWS", 16)
    mp.setattr(reroll, "MIN_STEPS", 4)
    yield mp
    mp.undo()
