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
