"""Many-output tapes: constant output runs are stored from tables, and kernels stay exact."""
import numpy as np

import tapead
from tapead import codegen
from tapead.higher import hessian_tape


def _quadratic(x):
    return 0.01 * np.sum(x * x)


def test_dense_hessian_of_a_quadratic_is_exact_and_stored_from_a_table():
    n = 300
    x = np.linspace(-1.0, 2.0, n)
    tape = tapead.record(_quadratic, x)
    H = tape.hessian(x)
    assert np.array_equal(H, 0.02 * np.eye(n))
    ir = codegen.lower(hessian_tape(tape), "k")
    assert ir.count("store double") < 50  # not one store per entry (n^2 = 90,000 of them)
    assert ir.count("@llvm.memcpy") >= 2


def test_mixed_constant_and_computed_outputs_match_the_interpreter_bitwise():
    def f(x):
        y = np.zeros_like(x)
        y[::7] = np.sin(x[::7]) * x[1::7]
        return np.concatenate([y, 3.0 + 0 * x[:2] ** 0, x[:12] * 0.0 + 1.5])
    x = np.linspace(0.3, 1.7, 70)
    tape = tapead.record(f, x)
    for point in (x, x[::-1].copy()):
        assert np.array_equal(tape.value(point), tape.evaluate(point))
    J = tape.jacobian(x)
    Jr = tapead.jacobian_tape(tape).evaluate(x).reshape(J.shape)
    assert np.array_equal(J, Jr)
    batch = np.stack([x, 2 * x, -x])
    assert np.array_equal(tape.value(batch), tape.evaluate(batch))
