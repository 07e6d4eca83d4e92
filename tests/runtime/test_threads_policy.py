"""threads= validated the same way for every call, the default thread count, and the other argument checks that
used to depend on the batch size (params on an empty batch, the assembly length, zero params)."""
import numpy as np
import pytest

import tapead
from tapead.runtime import threads as policy
from tapead.runtime.calls import kernel
from check import Counting

BAD = [0, -1, True, False, 2.5, "2", np.int64(2)]


def f(x):
    return np.sum(x ** 2) + x[0] * x[1]


def spring(x, p):
    d = x[2:] - x[:2]
    return 0.5 * p[0] * (np.sqrt(d[0] ** 2 + d[1] ** 2) - p[1]) ** 2


@pytest.fixture(scope="module")
def tape():
    return tapead.record(f, np.ones(3))


@pytest.fixture(scope="module")
def element():
    return tapead.record(spring, np.array([0.0, 0.0, 1.0, 0.5]), params=np.array([1.0, 0.8]))


# ---- 7. threads= and the other checks, whatever the batch size ------------------------------------------------
@pytest.mark.parametrize("threads", BAD)
@pytest.mark.parametrize("compiled", [False, True])
def test_bad_threads_refused_for_points_and_empty_batches(threads, compiled):
    t = tapead.record(f, np.ones(3))
    if compiled:
        t.compile()
    for X in (np.ones(3), np.zeros((0, 3)), np.ones((5, 3))):
        for call in (lambda: t.value(X, threads=threads), lambda: t.gradient(X, threads=threads),
                     lambda: t.value_and_gradient(X, threads=threads), lambda: t(X, threads=threads),
                     lambda: t.value(X, out=np.empty(X.shape[:-1]), threads=threads),
                     lambda: t.gradient(X, out=np.empty(X.shape), threads=threads)):
            with pytest.raises(tapead.InputError, match="threads must be"):
                call()


@pytest.mark.parametrize("threads", BAD)
def test_bad_threads_refused_by_assembly_even_without_elements(element, threads):
    X, C = np.zeros((0, 4)), np.zeros((0, 4), int)
    with pytest.raises(tapead.InputError, match="threads must be"):
        element.assemble_gradient(X, C, 3, params=np.ones(2), threads=threads)
    with pytest.raises(tapead.InputError, match="threads must be"):
        element.assemble_value(X, params=np.ones(2), threads=threads)


def test_good_threads_accepted(tape):
    x = np.array([1.0, 2.0, 3.0])
    for threads in (None, 1, 2, 64):
        assert np.array_equal(tape.gradient(x, threads=threads), [4.0, 5.0, 6.0])
        assert tape.gradient(np.zeros((0, 3)), threads=threads).shape == (0, 3)


def test_params_refused_on_a_tape_without_params_for_any_batch_size(tape, element):
    for X in (np.ones(3), np.zeros((0, 3)), np.ones((2, 3))):
        with pytest.raises(tapead.InputError, match="without params"):
            tape.gradient(X, params=np.zeros(2))
    plain = tapead.record(lambda x: np.sum(x * x), np.ones(4))
    for n in (0, 3):
        with pytest.raises(tapead.InputError, match="without params"):
            plain.assemble_gradient(np.zeros((n, 4)), np.zeros((n, 4), int), 4, params=np.ones(2))
    with pytest.raises(tapead.InputError, match="params"):  # wrong params shape, no elements
        element.assemble_gradient(np.zeros((0, 4)), np.zeros((0, 4), int), 4, params=np.ones(3))


def test_huge_assembly_length_is_an_input_error(element):
    X, C = np.zeros((1, 4)), np.zeros((1, 4), int)
    for M in (2 ** 50, 2 ** 62):
        with pytest.raises(tapead.InputError, match="M ="):
            element.assemble_gradient(X, C, M, params=np.ones(2))
        with pytest.raises(tapead.InputError, match="M ="):
            element.assemble_hessian(X, C, M, params=np.ones(2))
    assert element.assemble_gradient(X, C, 4, params=np.ones(2)).shape == (4,)


def test_zero_params_evaluate_like_the_kernel():
    t = tapead.record(lambda x, p: np.sum(x ** 2) + np.sum(p), np.ones(2), params=np.zeros(0))
    x, X = np.array([1.0, 2.0]), np.array([[1.0, 2.0], [3.0, 4.0]])
    assert t.evaluate(x, params=np.zeros(0)) == t.value(x, params=np.zeros(0)) == 5.0
    for P in (np.zeros(0), np.zeros((2, 0))):
        assert np.array_equal(t.evaluate(X, params=P), [5.0, 25.0])
        assert np.array_equal(t.value(X, params=P), [5.0, 25.0])
        assert np.array_equal(t.gradient(X, params=P), 2 * X)


# ---- 11. the default thread count -----------------------------------------------------------------------------


def native_calls(t, X, **kw) -> int:
    """How many native batch calls ``t.gradient(X, **kw)`` makes (one per thread)."""
    _, k = kernel(t, "value_and_gradient")
    batch, fast = k.batch, k.fast
    counters = [Counting(batch)] + [Counting(fn) for fn in fast.values()]
    k.batch, k.fast = counters[0], dict(zip(fast, counters[1:]))
    try:
        t.gradient(X, **kw)
    finally:
        k.batch, k.fast = batch, fast
    return sum(c.calls for c in counters)


def test_default_keeps_small_batches_on_one_thread(monkeypatch):
    """A batch whose one-thread time is far below the split threshold is never split (it used to be split
    over all cores as soon as ops x points passed a fixed count)."""
    t = tapead.record(lambda x: np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), np.ones(100))
    X = np.ones((2000, 100))
    t.gradient(X, threads=1)  # times the kernel
    monkeypatch.setattr(policy, "idle_cores", lambda: 8)
    _, k = kernel(t, "value_and_gradient")
    k.point_seconds = 1e-7  # 2000 points: 0.2 ms, well below one split's worth of work
    assert native_calls(t, X) == 1


def test_default_splits_long_batches_over_idle_cores_only(monkeypatch):
    t = tapead.record(f, np.ones(3))
    X = np.random.default_rng(0).normal(size=(4000, 3))
    ref = t.gradient(X, threads=1)
    _, k = kernel(t, "value_and_gradient")
    k.point_seconds = 1e-6  # as if each point took 1 us: 4 ms on one thread
    monkeypatch.setattr(policy, "idle_cores", lambda: 2)
    assert native_calls(t, X) == 2
    k.point_seconds = 1e-6
    monkeypatch.setattr(policy, "idle_cores", lambda: 1)  # a busy machine: one thread
    assert native_calls(t, X) == 1
    k.point_seconds = None
    monkeypatch.setattr(policy, "idle_cores", lambda: 8)  # an untimed kernel: one thread, which times it
    assert native_calls(t, X) == 1
    assert np.array_equal(t.gradient(X), ref)


def test_one_thread_calls_time_the_kernel():
    t = tapead.record(f, np.ones(3))
    t.gradient(np.ones((100, 3)))
    _, k = kernel(t, "value_and_gradient")
    assert 0 < k.point_seconds < 1e-2  # (a loose bound: the machine may be busy)


def test_idle_core_estimate_is_within_the_cores():
    for _ in range(3):
        assert 1 <= policy.idle_cores() <= policy.cores()
    assert policy.default_threads(10 ** 6, None) == 1
    assert policy.default_threads(10, 1e-6) == 1
    assert 1 <= policy.default_threads(10 ** 6, 1e-6) <= policy.cores()


def test_a_cgroup_cpu_quota_bounds_the_cores(tmp_path, monkeypatch):
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(policy, "CPU_MAX", str(quota))
    quota.write_text("100000 100000\n")  # one CPU's worth of time
    assert policy.cores() == 1
    quota.write_text("max 100000\n")
    unbounded = policy.cores()
    quota.write_text("150000 100000\n")  # 1.5 CPUs: two threads may run
    assert policy.cores() == min(2, unbounded)
    quota.write_text("garbage")
    assert policy.cores() == unbounded
