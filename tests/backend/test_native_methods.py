"""Native methods: once compiled, ``f.value`` and ``f.gradient`` are builtins answering exactly right single-point
calls without Python, and every other call exactly as the class's Python method does."""
from __future__ import annotations

import collections
import gc
import inspect
import pickle
import sys
import types
import weakref

import numpy as np
import pytest

import tapead
from tapead.errors import InputError
from tapead.function import Function


def rosen(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def vector(x):
    return np.sin(x) * x[0]


def weighted(x, p):
    return np.sum(p * x ** 2) + np.prod(x)


X = np.linspace(-0.7, 1.3, 6)


def _native(f, name):
    return type(f.__dict__.get(name)) is types.BuiltinFunctionType


@pytest.fixture()
def f():
    t = tapead.record(rosen, X)
    t.gradient(X)
    t.value(X)
    return t


def test_methods_become_builtins_after_the_first_compile(f):
    assert _native(f, "gradient") and _native(f, "value")
    assert Function.gradient.__doc__ == f.gradient.__doc__
    assert str(inspect.signature(f.gradient)) == "(x, /, *more, params=None, out=None, threads=None)"


def test_native_method_results_are_the_python_methods_bit_for_bit(f):
    x = X + 0.25
    g, ref = np.empty(6), np.empty(6)
    assert f.gradient(x, out=g) is g
    Function.gradient(f, x, out=ref)
    assert g.tobytes() == ref.tobytes()
    a, b = f.gradient(x), f.gradient(x)  # allocated: a fresh array per call
    assert a is not b and a.tobytes() == ref.tobytes() and b.tobytes() == ref.tobytes()
    assert sys.getrefcount(a) == 2  # the native method drops its own reference to what it allocated
    v = f.value(x)
    assert type(v) is float and v == Function.value(f, x)
    assert f.gradient(x, out=None).tobytes() == ref.tobytes()
    assert f.gradient(x, params=None, out=g) is g


def test_calls_the_native_method_cannot_answer_go_to_the_python_method(f):
    x = X + 0.25
    ref = Function.gradient(f, x)
    assert np.array_equal(f.gradient(list(x)), ref)  # converted
    assert np.array_equal(f.gradient(x.astype(np.float32)), Function.gradient(f, x.astype(np.float32)))
    assert np.array_equal(f.gradient(x, out=np.empty(6), threads=1), ref)
    assert np.array_equal(f.gradient(x[::-1][::-1].copy(), **{"".join(["o", "ut"]): np.empty(6)}), ref)
    assert np.array_equal(f.gradient(np.stack([x, x])), np.stack([ref, ref]))  # a batch
    strided = np.empty(12)[::2]
    with pytest.raises(InputError) as native_error:
        f.gradient(x, out=strided)
    with pytest.raises(InputError) as python_error:
        Function.gradient(f, x, out=strided)
    assert str(native_error.value) == str(python_error.value)
    with pytest.raises(InputError):
        f.gradient(x, out=x)  # aliasing
    with pytest.raises(InputError):
        f.gradient(np.ones(5))
    with pytest.raises(InputError):
        f.gradient(x, params=np.ones(2))
    with pytest.raises(TypeError):
        f.gradient(x, outt=np.empty(6))
    o1, o2 = np.empty(()), np.empty(())  # a scalar tape's value takes no out natively: Python answers
    assert f.value(x, out=o1) == Function.value(f, x, out=o2) and o1 == o2
    assert f.value(x, threads=1) == Function.value(f, x)


def test_params_and_array_valued_values():
    p = np.array([1.0, 2.0, 3.0])
    f = tapead.record(weighted, X[:3], params=p)
    x = X[:3] + 0.5
    g = np.empty(3)
    ref = Function.gradient(f, x, params=p)
    assert f.gradient(x, params=p, out=g) is g and g.tobytes() == ref.tobytes()
    assert _native(f, "gradient")
    assert f.gradient(x, out=g, params=p) is g and g.tobytes() == ref.tobytes()
    with pytest.raises(InputError):
        f.gradient(x, out=g)  # params missing
    h = tapead.record(vector, X)
    v = h.value(X)
    assert _native(h, "value")
    out = np.empty(6)
    assert h.value(X + 1, out=out) is out and out.tobytes() == Function.value(h, X + 1).tobytes()
    assert h.value(X + 1).tobytes() == out.tobytes() and v.shape == (6,)


def test_a_method_kept_after_its_function_is_dropped_still_answers_everything():
    f = tapead.record(rosen, X)
    f.gradient(X)
    gradient = f.gradient
    ref = weakref.ref(f)
    x = X + 0.125
    expected = Function.gradient(f, x)
    del f
    assert ref() is None  # freed without the cycle collector: the method holds its Function weakly
    g = np.empty(6)
    assert gradient(x, out=g) is g and g.tobytes() == expected.tobytes()
    assert np.array_equal(gradient(list(x)), expected)  # a Function of the same tape answers the rest
    gc.collect()


def test_branches_take_the_python_path_and_record_the_other_side():
    def kink(x):
        return np.sum(x ** 2) if x[0] > 0 else np.sum(np.sin(x))

    f = tapead.record(kink, np.array([1.0, 2.0]))
    f.gradient(np.array([1.0, 2.0]))
    assert _native(f, "gradient")
    x = np.array([-1.0, 0.5])
    assert np.array_equal(f.gradient(x), np.cos(x))
    assert f.value(x) == np.sum(np.sin(x))


def test_several_arguments_keep_the_python_gradient_and_a_native_value():
    f = tapead.record(lambda a, b: np.sum(a * b), np.ones(2), np.ones(2))
    a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    assert f.value(a, b) == 11.0
    ga, gb = f.gradient(a, b)
    assert np.array_equal(ga, b) and np.array_equal(gb, a)
    assert "gradient" not in f.__dict__ and _native(f, "value")
    assert f.value(a, b) == 11.0


def test_the_hessian_method_is_its_hessian_functions_native_value():
    f = tapead.record(rosen, X)
    H = f.hessian(X)
    assert _native(f, "hessian")
    out = np.empty((6, 6))
    x = X + 0.5
    assert f.hessian(x, out=out) is out
    assert out.tobytes() == Function.hessian(f, x).tobytes()
    assert f.hessian(x).tobytes() == out.tobytes() and H.shape == (6, 6)
    with pytest.raises(InputError):
        f.hessian(x, out=np.empty((6, 5)))
    w = f.hessian(x, weights=None)
    assert w.tobytes() == out.tobytes()
    with pytest.raises(TypeError):
        f.hessian(x, out=out, threads=1)  # Function.hessian takes no threads: neither does its native method
    g = tapead.record(lambda x: np.sum(x ** 3), np.ones((2, 3)))  # out (2, 3, 2, 3): the Python path
    assert g.hessian(np.ones((2, 3))).shape == (2, 3, 2, 3) and "hessian" not in g.__dict__


def test_the_jacobian_method_is_its_jacobian_functions_native_value():
    f = tapead.record(vector, X)
    J = f.jacobian(X)
    assert _native(f, "jacobian") and J.shape == (6, 6)
    out = np.empty((6, 6))
    x = X + 0.5
    assert f.jacobian(x, out=out) is out
    assert out.tobytes() == Function.jacobian(f, x).tobytes()
    ref = np.empty((6, 6))
    assert Function.jacobian(f, x, out=ref) is ref and ref.tobytes() == out.tobytes()  # out returned on both paths
    assert f.jacobian(x, mode="forward").tobytes() == Function.jacobian(f, x, mode="forward").tobytes()
    B = np.stack([x, X])
    assert f.jacobian(B).shape == (2, 6, 6) and f.jacobian(B)[0].tobytes() == out.tobytes()
    with pytest.raises(InputError):
        f.jacobian(x, out=np.empty((6, 5)))
    with pytest.raises(InputError):
        f.jacobian(x, out=np.empty((6, 12))[:, ::2])  # a strided view: the Python path's error
    with pytest.raises(InputError):
        f.jacobian(out[0], out=out)  # the input overlaps out
    g = tapead.record(lambda a, b: a * b[0], np.ones(3), np.ones(2))  # two arguments: blocks, the Python path
    assert [j.shape for j in g.jacobian(np.ones(3), np.ones(2))] == [(3, 3), (3, 2)] and "jacobian" not in g.__dict__
    h = tapead.record(lambda a: a ** 3, np.ones((2, 3)))  # out (2, 3, 2, 3)
    assert h.jacobian(np.ones((2, 3))).shape == (2, 3, 2, 3) and _native(h, "jacobian")
    assert tapead.record(lambda a: a * 2.0, 1.5).jacobian(1.5) == 2.0  # a scalar of a scalar: a float


def test_calls_without_arguments_from_c_get_the_python_error(f):
    with pytest.raises(InputError):
        next(iter(f.gradient, None))  # C calls with no argument array at all
    with pytest.raises(InputError):
        collections.defaultdict(f.value)["missing"]


def test_native_methods_pickle_as_their_functions_methods(f):
    x = X + 0.5
    for name in ("gradient", "value"):
        method = getattr(f, name)
        assert _native(f, name)
        back = pickle.loads(pickle.dumps(method))
        assert np.array_equal(back(x), method(x))
    f.hessian(X)
    assert np.array_equal(pickle.loads(pickle.dumps(f.hessian))(x), f.hessian(x))


def test_a_subclass_overriding_a_method_keeps_every_call():
    class Logged(Function):
        calls = 0

        def gradient(self, *args, **kwargs):
            Logged.calls += 1
            return super().gradient(*args, **kwargs)

    f = Logged(tapead.record(rosen, X).tape)
    for _ in range(5):
        f.gradient(X)
    assert Logged.calls == 5 and "gradient" not in f.__dict__
    f.value(X)
    assert _native(f, "value")  # not overridden: native


def test_small_batches_with_out_run_natively_and_the_rest_in_python():
    f = tapead.record(rosen, X)
    B = np.random.default_rng(1).normal(size=(20, 6))
    G, ref = np.empty((20, 6)), np.empty((20, 6))
    f.gradient(B, out=G)
    Function.gradient(f, B, out=ref)
    assert _native(f, "gradient") and G.tobytes() == ref.tobytes()
    assert f.gradient(B, out=G) is G and G.tobytes() == ref.tobytes()
    calls = []
    fallback = f.gradient.__self__[0]
    original = fallback.method
    fallback.method = lambda *a, **k: calls.append(1) or original(*a, **k)
    assert f.gradient(B, out=G, threads=1) is G and f.gradient(B, threads=None, out=G) is G
    assert calls == []  # threads=1 and None: the native batch
    assert f.gradient(B, out=G, threads=2) is G and calls == [1]  # more threads: the Python path decides
    fallback.method = original
    assert G.tobytes() == ref.tobytes()
    assert f.gradient(B).tobytes() == ref.tobytes()  # allocated: the Python path
    big = np.random.default_rng(2).normal(size=(5000, 6))  # beyond the native bound: the Python path
    assert f.gradient(big).tobytes() == Function.gradient(f, big).tobytes()
    with pytest.raises(InputError):
        f.gradient(B, out=B)  # aliasing
    with pytest.raises(InputError):
        f.gradient(B, out=np.empty((19, 6)))
    assert f.gradient(np.empty((0, 6)), out=np.empty((0, 6))).shape == (0, 6)
    h = tapead.record(vector, X)
    V, Vref = np.empty((20, 6)), np.empty((20, 6))
    h.value(X)
    assert h.value(B, out=V) is V and V.tobytes() == Function.value(h, B, out=Vref).tobytes()


def test_batches_with_params_and_branches():
    p = np.array([1.0, 2.0, 3.0])
    f = tapead.record(weighted, X[:3], params=p)
    B = np.random.default_rng(3).normal(size=(10, 3))
    G = np.empty((10, 3))
    f.gradient(X[:3], params=p)
    assert f.gradient(B, params=p, out=G) is G  # shared params
    assert G.tobytes() == Function.gradient(f, B, params=p).tobytes()
    P = np.random.default_rng(4).normal(size=(10, 3))  # one row per point: the Python path
    assert f.gradient(B, params=P, out=G).tobytes() == Function.gradient(f, B, params=P).tobytes()

    def kink(x):
        return np.sum(x ** 2) if x[0] > 0 else np.sum(np.sin(x))

    k = tapead.record(kink, np.array([1.0, 2.0]))
    k.gradient(np.array([1.0, 2.0]))
    mixed = np.array([[1.0, 2.0], [-1.0, 0.5], [3.0, -2.0]])  # a point on the other path: guards fail
    out = np.empty((3, 2))
    assert k.gradient(mixed, out=out) is out
    assert np.array_equal(out, [[2.0, 4.0], np.cos([-1.0, 0.5]), [6.0, -4.0]])
    assert k.gradient.__self__[2] is False  # such batches are the Python path's now (its loop with statuses)
    assert k.gradient(mixed, out=out) is out and np.array_equal(out[1], np.cos([-1.0, 0.5]))
    one_path = np.array([[1.0, 2.0], [2.0, 1.0]])
    assert np.array_equal(k.gradient(one_path, out=np.empty((2, 2))), 2 * one_path)
    assert k.gradient.__self__[2] is True  # a batch without failures: native batches again


def test_a_batch_of_hessians_returns_out_on_both_paths():
    f = tapead.record(rosen, X)
    f.hessian(X)
    B = np.random.default_rng(5).normal(size=(4, 6))
    H, ref = np.empty((4, 6, 6)), np.empty((4, 6, 6))
    assert f.hessian(B, out=H) is H and Function.hessian(f, B, out=ref) is ref
    assert H.tobytes() == ref.tobytes()


def test_a_scalar_tapes_value_batch_with_out_runs_natively():
    f = tapead.record(rosen, X)
    f.value(X)
    B = np.random.default_rng(6).normal(size=(30, 6))
    V, ref = np.empty(30), np.empty(30)
    calls = []
    fallback = f.value.__self__[0]
    original = fallback.method
    fallback.method = lambda *a, **k: calls.append(1) or original(*a, **k)
    assert f.value(B, out=V) is V and calls == []
    fallback.method = original
    assert V.tobytes() == Function.value(f, B, out=ref).tobytes()
    o = np.empty(())
    assert f.value(X, out=o) == Function.value(f, X) == o  # one point with an out: the Python path
    with pytest.raises(InputError):
        f.value(B, out=np.empty(29))
    with pytest.raises(InputError):
        f.value(B, out=np.empty((30, 1)))
    assert np.array_equal(f.value(B), ref)  # no out: the Python path allocates
