"""The native callables: same results and errors as the methods, through the compiled entry point."""
import numpy as np
import pytest

import tapead


def f(x, p):
    return np.sum(np.sin(x) * p[0]) + x[0] * x[1] * p[1]


@pytest.fixture(scope="module")
def tape():
    return tapead.record(f, np.ones(3), params=np.array([2.0, 3.0]))


def test_native_gradient_and_value(tape):
    grad, val = tape.native("gradient"), tape.native("value")
    x, p = np.array([0.1, 0.2, 0.3]), np.array([2.0, 3.0])
    g = np.empty(3)
    assert grad(x, p, None, g) is g
    assert np.array_equal(g, tape.gradient(x, params=p))
    v = np.empty(())
    g2 = np.empty(3)
    grad(x, p, v, g2)
    assert float(v) == tape(x, params=p) and np.array_equal(g2, g)
    assert val(x, p) == tape(x, params=p)


def test_native_falls_back_to_the_python_path(tape):
    grad = tape.native("gradient")
    p = np.array([2.0, 3.0])
    g = np.empty(3)
    grad([1, 2, 3], p, None, g)  # a list is converted by the Python path
    assert np.array_equal(g, tape.gradient(np.array([1.0, 2.0, 3.0]), params=p))
    G = np.empty((4, 3))
    grad(np.ones((4, 3)), p, None, G)  # a batch
    assert np.array_equal(G[2], tape.gradient(np.ones(3), params=p))
    with pytest.raises(tapead.InputError):
        grad(np.ones(3), p, None, np.empty(3, np.float32))
    with pytest.raises(tapead.InputError):
        grad(np.ones(3), None, None, g)  # params are required
    with pytest.raises(tapead.InputError, match="positional"):
        grad(np.ones(3), p)


def test_native_gradient_follows_branches():
    def h(x):
        return x[0] * x[0] if x[0] > 0 else -x[0]

    t = tapead.record(h, np.array([1.0]))
    grad = t.native("gradient")
    g = np.empty(1)
    grad(np.array([-2.0]), None, None, g)
    assert g[0] == -1.0
    grad(np.array([3.0]), None, None, g)
    assert g[0] == 6.0


def test_native_allocates_nothing(tape):
    import tracemalloc
    grad = tape.native("gradient")
    x, p, g = np.array([0.1, 0.2, 0.3]), np.array([2.0, 3.0]), np.empty(3)
    for _ in range(100):
        grad(x, p, None, g)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(10_000):
        grad(x, p, None, g)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after - before < 2048


def test_the_native_value_entry_of_0d_tapes_agrees_with_value_on_every_call_shape():
    """Fuzzed call shapes (batches that match and do not, outs of every shape, lists, scalars, strided and
    float32 arrays): the native entry returns what ``value`` returns, or raises an InputError as it does."""
    import itertools
    from tapead.errors import InputError
    one = tapead.record(lambda x: x ** 2 + 1, np.array(1.5))
    two = tapead.record(lambda x, y: x * y + np.sin(x), np.array(1.5), np.array(0.5))
    shapes = [(), (1,), (3,), (4,), (3, 1), (1, 3), (0,), (2, 2)]
    outs = [None, np.zeros(3), np.zeros(()), np.zeros(4), np.zeros((3, 1)), np.zeros(3)[::1]]
    calls = 0
    for t, n_args in ((one, 1), (two, 2)):
        fn = t.native("value")
        for arg_shapes in itertools.product(shapes, repeat=n_args):
            args = [np.linspace(0.5, 1.5, int(np.prod(s))).reshape(s) for s in arg_shapes]
            for out in outs:
                calls += 1
                try:
                    want = t.value(*args, out=None if out is None else out.copy())
                except InputError:
                    with pytest.raises(InputError):
                        fn(*args, None) if out is None else fn(*args, None, out.copy())
                    continue
                got = fn(*args, None) if out is None else fn(*args, None, out.copy())
                assert np.shape(got) == np.shape(want) and np.array_equal(got, want)
    assert calls == (8 + 64) * len(outs)
