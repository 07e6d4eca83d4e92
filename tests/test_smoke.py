import numpy as np

import tapead


def test_record_value_gradient_batch():
    tape = tapead.record(lambda x: np.sin(x[0]) * x[1] ** 2, np.array([0.3, 2.0]))
    x = np.array([1.1, -0.7])
    assert np.isclose(tape(x), np.sin(1.1) * 0.49)
    assert np.allclose(tape.gradient(x), [np.cos(1.1) * 0.49, np.sin(1.1) * 2 * -0.7])
    X = np.random.default_rng(0).normal(size=(5, 2))
    G = tape.gradient(X)
    assert G.shape == (5, 2)
    assert np.allclose(G[3], tape.gradient(X[3]))


def test_assume_finite_folds_zero_products_everywhere():
    def f(x):
        return np.dot(x[:2], np.array([10.0, 0.0])) * (3e3 + x[3]) + x[2] * -(-1e4 + x[4])

    strict = tapead.record(f, np.ones(5))
    lean = tapead.record(f, np.ones(5), assume_finite=True)
    assert len(lean) < len(strict) and len(tapead.grad(lean)) == 6
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert np.array_equal(lean.gradient(x), strict.gradient(x))
    x[1] = np.inf
    assert np.isnan(strict(x)) and not np.isnan(lean(x))  # the documented trade-off
