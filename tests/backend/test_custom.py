"""User-defined ops: recorded as one op, compiled, differentiated by their own rule (to higher orders), exported."""
import numpy as np
import pytest

import tapead


@tapead.custom_op
def softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


@softplus.derivative
def _(x):
    return (1 / (1 + np.exp(-x)),)


@tapead.custom_op
def norm3(x, y, z):
    return np.sqrt(x * x + y * y + z * z)


@norm3.derivative
def _(x, y, z):
    n = norm3(x, y, z)
    d = tapead.where(n > 0, n, 1.0)
    return x / d, y / d, z / d


def energy(v):
    return np.sum(softplus(v)) + norm3(v[0], v[1], v[2])


def test_one_op_each_and_right_values():
    tape = tapead.record(energy, np.ones(3))
    counts = tape.op_counts()
    assert counts["custom.softplus"] == 3 and counts["custom.norm3"] == 1
    for x in (np.array([0.3, -2.0, 5.0]), np.array([800.0, -800.0, 1.0]), np.zeros(3)):
        expected = np.sum(np.logaddexp(0, x)) + np.linalg.norm(x)
        assert np.isclose(tape(x), expected) and np.isclose(tape.evaluate(x), expected)


def test_gradient_uses_the_rule_finite_at_zero():
    tape = tapead.record(energy, np.ones(3))
    g = tape.gradient(np.zeros(3))
    assert np.array_equal(g, [0.5, 0.5, 0.5])  # the body's sqrt would give NaN at 0
    x = np.array([0.3, -2.0, 5.0])
    expected = 1 / (1 + np.exp(-x)) + x / np.linalg.norm(x)
    assert np.allclose(tape.gradient(x), expected, rtol=1e-14)
    assert np.allclose(tapead.grad(tape).evaluate(x), expected, rtol=1e-14)


def test_second_derivatives_match_finite_differences():
    tape = tapead.record(energy, np.ones(3))
    x = np.array([0.3, -2.0, 5.0])
    h = 1e-6
    fd = np.array([(tape.gradient(x + h * e) - tape.gradient(x - h * e)) / (2 * h) for e in np.eye(3)])
    assert np.allclose(tape.hessian(x), fd, rtol=1e-6, atol=1e-8)


def test_plain_numbers_and_arrays():
    assert np.isclose(softplus(3.0), np.logaddexp(0, 3.0))
    assert np.allclose(softplus(np.array([1.0, -40.0])), np.logaddexp(0, [1.0, -40.0]))


def test_save_load_and_export(tmp_path):
    tape = tapead.record(energy, np.ones(3))
    path = tmp_path / "t.tape"
    tape.save(path)
    loaded = tapead.load(path)
    x = np.array([0.3, -2.0, 5.0])
    assert np.array_equal(loaded.gradient(x), tape.gradient(x))
    files = tape.export(tmp_path, "energy", hessian=True)
    assert files["object"].exists() and "energy_gradient" in files["header"].read_text()


def test_rules_must_be_given_and_sized():
    @tapead.custom_op
    def nothing(x):
        return x * 2

    with pytest.raises(tapead.TracingError, match="derivative"):
        tapead.record(lambda v: nothing(v[0]), np.ones(1))

    @tapead.custom_op
    def wrong(x, y):
        return x * y

    @wrong.derivative
    def _(x, y):
        return (y,)

    with pytest.raises(tapead.TracingError, match="partials"):
        tapead.grad(tapead.record(lambda v: wrong(v[0], v[1]), np.ones(2)))
    with pytest.raises(ValueError, match="1 to 3"):
        tapead.custom_op(lambda a, b, c, d: a, name="four")
