"""Functions that branch in Python: guards, re-recording, path caching, "raise" mode and NaN-safe selects."""
import pickle

import numpy as np
import pytest

import tapead
from check import assert_close, fd_gradient, magnitude

RNG = np.random.default_rng(11)


def huber(x):
    r = x[0] - x[1]
    if abs(r) < 1.0:
        return 0.5 * r * r
    return abs(r) - 0.5


def huber_grad(x):
    d = np.clip(x[0] - x[1], -1.0, 1.0)
    return np.array([d, -d])


def material(x):
    """A piecewise law: linear elastic, then hardening, then a plateau (strain e, modulus p)."""
    e, k = x[0], x[1]
    if e < 0.01:
        return k * e * e / 2
    elif e < 0.05:
        return k * 0.01 * e - k * 0.0001 / 2 + 3 * k * (e - 0.01) ** 2
    return k * 0.01 * e - k * 0.0001 / 2 + 3 * k * 0.04 ** 2 + 6 * k * 0.04 * (e - 0.05)


def clamp(x):
    y = x[0] * x[1]
    if y > 2.0:
        y = 2.0 + 0 * y
    elif y < -2.0:
        y = -2.0 + 0 * y
    return y * x[0]


def newton_sqrt(x):
    """sqrt(a) by Newton steps until converged: the trip count depends on the input."""
    a = x[0]
    y = a
    while abs(y * y - a) > 1e-12 * a:
        y = 0.5 * (y + a / y)
    return y * x[1]


def logsumexp(x):
    m = max(x[0], x[1], x[2])  # builtin max compares traced values
    return m + np.log(np.exp(x[0] - m) + np.exp(x[1] - m) + np.exp(x[2] - m))


CASES = [
    (huber, np.array([0.2, 0.1]), lambda n: RNG.normal(0, 2, (n, 2)), lambda x: abs(abs(x[0] - x[1]) - 1) > 1e-4),
    (material, np.array([0.001, 2.0]), lambda n: np.stack([RNG.uniform(-0.02, 0.1, n), RNG.uniform(1, 3, n)], 1),
     lambda x: min(abs(x[0] - 0.01), abs(x[0] - 0.05)) > 1e-4),
    (clamp, np.array([1.0, 1.0]), lambda n: RNG.normal(0, 2, (n, 2)), lambda x: abs(abs(x[0] * x[1]) - 2) > 1e-3),
    (newton_sqrt, np.array([2.0, 1.0]), lambda n: np.stack([RNG.uniform(0.1, 50, n), RNG.normal(size=n)], 1),
     lambda x: True),
    (logsumexp, np.array([0.0, 1.0, 2.0]), lambda n: RNG.normal(0, 3, (n, 3)), lambda x: True),
]


@pytest.mark.parametrize("f, x0, sample, smooth_at", CASES, ids=[c[0].__name__ for c in CASES])
def test_derivatives_follow_the_path_taken(f, x0, sample, smooth_at):
    tape = tapead.record(f, x0)
    X = sample(1000)
    G = tape.gradient(X)
    V = tape.value(X)
    for i, x in enumerate(X):
        assert np.isclose(V[i], f(x), rtol=1e-12, atol=1e-14)
        if smooth_at(x):
            fd = fd_gradient(f, x, rel=1e-6)  # a step well inside the margin to the nearest kink
            assert_close(G[i], fd, scale=magnitude(V[i], fd))
    for x in X[:50]:  # single calls agree with the batch bit for bit
        assert np.array_equal(tape.gradient(x), G[np.flatnonzero((X == x).all(1))[0]])
    assert np.array_equal(tape.gradient(X), G)  # second pass: paths known


def test_huber_closed_form_and_paths_are_compiled_once():
    tape = tapead.record(huber, np.array([0.2, 0.1]))
    X = RNG.normal(0, 2, (2000, 2))
    G = tape.gradient(X)
    assert np.allclose(G, np.array([huber_grad(x) for x in X]))
    s = tape.stats
    assert s["records"] == 1 and s["paths"] == 2 and s["compiles"] == 1
    assert s["interpreted_points"] <= 3
    before = dict(s)
    tape.gradient(X)
    after = tape.stats
    assert after["records"] == before["records"] and after["native_points"] > before["native_points"]


def test_many_independent_branches_do_not_compile_every_path():
    def f(x):
        total = 0.0
        for v in x:
            total = total + (v if v > 0 else -v) * v
        return total

    tape = tapead.record(f, np.ones(12))
    X = RNG.normal(size=(200, 12))  # almost every point takes its own path among 4096
    G = tape.gradient(X)
    assert np.allclose(G, 2 * np.abs(X))
    assert tape.stats["compiles"] <= 2
    assert tape.stats["records"] >= 150


def test_raise_mode_names_the_comparison_and_line():
    tape = tapead.record(huber, np.array([0.2, 0.1]), on_branch="raise")
    assert np.allclose(tape.gradient(np.array([0.3, 0.0])), [0.3, -0.3])
    with pytest.raises(tapead.BranchError, match=r"lt .* at .*test_branches.py:\d+"):
        tape.gradient(np.array([5.0, 0.0]))
    with pytest.raises(tapead.BranchError):
        tape.gradient(np.array([[0.1, 0.0], [5.0, 0.0]]))
    with pytest.raises(tapead.BranchError):
        tape.value(np.array([5.0, 0.0]))


def test_forbid_mode_refuses_to_record_branches():
    with pytest.raises(tapead.TracingError, match="tapead.where"):
        tapead.record(huber, np.array([0.2, 0.1]), on_branch="forbid")


def test_a_tape_without_its_function_raises():
    tape = pickle.loads(pickle.dumps(tapead.record(huber, np.array([0.2, 0.1]))))
    assert np.allclose(tape.gradient(np.array([0.3, 0.0])), [0.3, -0.3])
    with pytest.raises(tapead.BranchError, match="no Python function"):
        tape.gradient(np.array([5.0, 0.0]))
    g = tapead.grad(tapead.record(huber, np.array([0.2, 0.1])))
    assert len(g.guards) == 1
    with pytest.raises(tapead.BranchError):
        g.value(np.array([5.0, 0.0]))


def test_interpreter_follows_paths_too():
    tape = tapead.record(huber, np.array([0.2, 0.1]))
    assert tape.evaluate(np.array([5.0, 0.0])) == 4.5
    assert np.allclose(tape.evaluate(np.array([[5.0, 0.0], [0.5, 0.0]])), [4.5, 0.125])


@pytest.mark.parametrize("x", [-1.0, 0.0, 4.0])
def test_where_gives_finite_derivatives_on_the_branch_taken(x):
    tape = tapead.record(lambda v: np.sum(np.where(v > 0, np.sqrt(v), 0.0) + np.where(v > 0, 0.0, v * v)),
                         np.array([1.0]))
    g = tape.gradient(np.array([x]))
    expected = 0.5 / np.sqrt(x) if x > 0 else 2 * x
    assert np.isfinite(g).all() and np.isclose(g[0], expected)
    h = tapead.jvp(tapead.grad(tape)).value(np.array([x]), np.array([1.0]))
    assert np.isfinite(h).all()
    expected_h = -0.25 * x ** -1.5 if x > 0 else 2.0
    assert np.isclose(h[0], expected_h)


def test_guarded_batches_with_params():
    def f(x, p):
        if x[0] > p[0]:
            return p[1] * x[0] * x[1]
        return x[1] ** 2

    tape = tapead.record(f, np.array([1.0, 2.0]), params=np.array([0.0, 3.0]))
    X = RNG.normal(size=(500, 2))
    P = np.stack([RNG.normal(size=500), RNG.uniform(1, 2, 500)], 1)
    G = tape.gradient(X, params=P)
    ref = np.array([[p[1] * x[1], p[1] * x[0]] if x[0] > p[0] else [0, 2 * x[1]] for x, p in zip(X, P)])
    assert np.allclose(G, ref)


def test_branch_not_taken_with_infinite_derivative_stays_zero():
    tape = tapead.record(lambda x: np.where(x[0] > 0, x[0] * x[0], np.exp(x[1])), np.array([1.0, 1.0]))
    x = np.array([1.0, 1000.0])  # exp(1000) = inf in the branch not taken
    assert np.array_equal(tape.gradient(x), [2.0, 0.0])
    assert np.array_equal(tape.hessian(x), [[2.0, 0.0], [0.0, 0.0]])


def test_branching_tape_from_several_threads():
    from concurrent.futures import ThreadPoolExecutor
    tape = tapead.record(huber, np.array([0.2, 0.1]))
    X = RNG.normal(0, 2, (400, 2))
    ref = np.array([huber_grad(x) for x in X])
    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(lambda x: tape.gradient(x), X))
        batches = list(pool.map(lambda k: tape.gradient(X[k::4]), range(4)))
    assert np.allclose(np.array(rows), ref)
    for k in range(4):
        assert np.allclose(batches[k], ref[k::4])
    assert tape.stats["paths"] == 2
