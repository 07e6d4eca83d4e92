"""Bad inputs and untraceable code give tapead's documented errors with useful messages, and never crash."""
from __future__ import annotations

import inspect
import math
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tapead
from tapead import InputError, TapeadError, TapeFormatError, TracingError


def f_sum(x):
    return np.sum(np.sin(x) * x)


def grad_f_sum(x):
    return np.cos(x) * x + np.sin(x)


@pytest.fixture(scope="module")
def tape():
    return tapead.record(f_sum, np.ones(3))


@pytest.fixture(scope="module")
def tape_p():
    return tapead.record(lambda x, p: np.sum(x * p), np.ones(3), params=np.ones(3))


@pytest.fixture(scope="module")
def tape3():
    return tapead.record(lambda a, b, c: np.sum(a * c), np.ones(2), np.ones(3), np.ones(2))


def test_error_hierarchy():
    assert issubclass(TracingError, TypeError) and issubclass(TracingError, TapeadError)
    assert issubclass(InputError, ValueError) and issubclass(InputError, TapeadError)
    assert issubclass(TapeFormatError, ValueError)


# ---- arguments -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [(), (np.ones(3), np.ones(3))])
def test_wrong_number_of_arguments(tape, args):
    with pytest.raises(InputError, match="expected 1 argument"):
        tape.value(*args)
    with pytest.raises(InputError):
        tape.gradient(*args)


@pytest.mark.parametrize("x", [np.ones(4), np.ones((2, 2, 3)), np.ones((3, 1)), np.ones(0), np.ones((10 ** 6, 4))])
def test_wrong_shape_or_rank(tape, x):
    with pytest.raises(InputError, match="recorded with"):
        tape.value(x)
    with pytest.raises(InputError):
        tape.gradient(x)
    with pytest.raises(InputError):
        tape.evaluate(x)


def test_batch_sizes_must_agree(tape3):
    with pytest.raises(InputError, match="same N"):
        tape3.value(np.ones((3, 2)), np.ones((4, 3)), np.ones((3, 2)))
    with pytest.raises(InputError):  # one argument batched, another not
        tape3.value(np.ones((3, 2)), np.ones(3), np.ones((3, 2)))


@pytest.mark.parametrize("bad", ["abc", None, object(), {1: 2}, np.array([object()] * 3), np.ones(3, complex),
                                 np.ones(3, bool), [1, [2], 3], np.ones(3, "datetime64[s]"), b"abc"])
def test_refused_argument_kinds(tape, bad):
    with pytest.raises(InputError, match="argument 0"):
        tape.value(bad)
    with pytest.raises(InputError, match="argument 0"):
        tapead.record(f_sum, bad)


def test_bool_message_says_convert(tape):
    with pytest.raises(InputError, match="convert them explicitly"):
        tape.value(np.ones(3, bool))


@pytest.mark.parametrize("make", [
    lambda x: x.astype(np.int64), lambda x: x.astype(np.float32), lambda x: x.astype(np.float16),
    lambda x: x.astype(np.uint8), lambda x: x.tolist(), lambda x: np.repeat(x, 2)[::2],
    lambda x: np.repeat(x, 2)[::-2][::-1], lambda x: np.asfortranarray(np.stack([x, x]))[0]])
def test_converted_inputs_give_the_right_answer(tape, make):
    x = np.array([1.0, 2.0, 3.0])
    converted = make(x)
    assert tape.value(converted) == f_sum(x)
    assert np.array_equal(tape.gradient(converted), tape.gradient(x))
    assert np.allclose(tape.gradient(converted), grad_f_sum(x), rtol=1e-14)


def test_fortran_order_and_strided_batches(tape):
    X = np.random.default_rng(0).normal(size=(7, 3))
    expected = tape.gradient(X)
    assert np.array_equal(tape.gradient(np.asfortranarray(X)), expected)
    assert np.array_equal(tape.gradient(np.repeat(X, 2, axis=0)[::2]), expected)
    assert np.array_equal(tape.gradient(np.hstack([X, X])[:, :3]), expected)
    assert np.array_equal(tape.value(X.astype(np.float32)), tape.value(X.astype(np.float32).astype(np.float64)))


def test_inputs_are_not_modified(tape):
    x = np.array([1.0, 2.0, 3.0])
    tape.gradient(x)
    tape.value(x)
    assert np.array_equal(x, [1.0, 2.0, 3.0])


def test_scalar_arguments_keep_shape_0d():
    t = tapead.record(lambda x: np.sin(x) * x, 2.0)
    assert t.input_shapes == ((),) and t.output_shape == ()
    assert isinstance(t.value(2.0), float)
    t0 = tapead.record(lambda x: np.sin(x) * x, np.array(2.0))
    assert isinstance(t0.value(2.0), float)  # a float is one point, not a batch of one


def test_zero_d_array_arguments():
    t = tapead.record(lambda x, y: np.sin(x) * y, np.array(2.0), np.array(3.0))
    assert t.input_shapes == ((), ())
    g = t.gradient(np.array(0.5), np.array(2.0))
    assert np.allclose([float(g[0]), float(g[1])], [np.cos(0.5) * 2.0, np.sin(0.5)], rtol=1e-15)
    G = t.gradient(np.array([0.5, 1.0]), np.array([2.0, 3.0]))
    assert G[0].shape == (2,)


# ---- params -------------------------------------------------------------------------------------------------
def test_params_missing(tape_p):
    with pytest.raises(InputError, match="pass params="):
        tape_p.value(np.ones(3))


def test_params_extra(tape):
    with pytest.raises(InputError, match="without params"):
        tape.value(np.ones(3), params=np.ones(3))


@pytest.mark.parametrize("p", [np.ones(4), np.ones((3, 1)), np.ones((4, 3)), np.ones(0)])
def test_params_wrong_shape(tape_p, p):
    with pytest.raises(InputError, match="params have shape"):
        tape_p.value(np.ones(3), params=p)


def test_params_batch_mismatch(tape_p):
    with pytest.raises(InputError, match=r"\(5, 3\)"):
        tape_p.value(np.ones((5, 3)), params=np.ones((4, 3)))


@pytest.mark.parametrize("p", ["x", object(), np.ones(3, bool), np.ones(3, complex)])
def test_params_wrong_kind(tape_p, p):
    with pytest.raises(InputError, match="params"):
        tape_p.value(np.ones(3), params=p)


def test_params_converted(tape_p):
    assert tape_p.value(np.ones(3), params=np.array([1, 2, 3])) == 6.0
    assert tape_p.value(np.ones(3), params=[1.0, 2.0, 3.0]) == 6.0


# ---- out= ---------------------------------------------------------------------------------------------------
def _read_only(shape):
    a = np.empty(shape)
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("out, what", [
    (np.empty(3, np.float32), "dtype float32"), (np.empty(4), "shape"), (np.empty((1, 3)), "shape"),
    (np.empty(6)[::2], "not C-contiguous"), (np.empty((3, 2))[:, 0], "not C-contiguous"),
    (_read_only(3), "read-only"), ([0.0, 0.0, 0.0], "numpy array"), (np.empty(3, np.int64), "dtype"),
    (3.0, "numpy array")])
def test_bad_gradient_out(tape, out, what):
    with pytest.raises(InputError, match=what):
        tape.gradient(np.ones(3), out=out)


def test_bad_batch_out(tape):
    X = np.ones((4, 3))
    for out in [np.empty(3), np.empty((5, 3)), np.asfortranarray(np.empty((4, 3))), np.empty((4, 6))[:, :3]]:
        with pytest.raises(InputError):
            tape.gradient(X, out=out)
    for out in [np.empty(5), np.empty(()), np.empty(4, np.float32)]:
        with pytest.raises(InputError):
            tape.value(X, out=out)


def test_bad_value_out(tape):
    with pytest.raises(InputError, match="shape"):
        tape.value(np.ones(3), out=np.empty(1))


def test_multi_argument_out(tape3):
    args = (np.ones(2), np.ones(3), np.ones(2))
    for out in [(np.empty(2), np.empty(3)), np.empty(2), (np.empty(2), np.empty(3), np.empty(2), np.empty(2)),
                (np.empty(2), np.empty(3, np.float32), np.empty(2)), (np.empty(2), np.empty(2), np.empty(2))]:
        with pytest.raises(InputError, match="out"):
            tape3.gradient(*args, out=out)
    outs = (np.empty(2), np.empty(3), np.empty(2))
    got = tape3.gradient(*args, out=outs)
    assert all(g is o for g, o in zip(got, outs))


def test_value_and_gradient_out(tape):
    v, g = np.empty(()), np.empty(3)
    value, grad = tape.value_and_gradient(np.ones(3), out=(v, g))
    assert grad is g and float(v) == value == f_sum(np.ones(3))
    with pytest.raises(InputError):
        tape.value_and_gradient(np.ones(3), out=(np.empty(()), np.empty(4)))


def test_value_and_gradient_out_not_a_pair(tape):
    with pytest.raises(InputError):
        tape.value_and_gradient(np.ones(3), out=np.empty(3))


def test_gradient_of_vector_tape():
    t = tapead.record(lambda x: x * 2.0, np.ones(3))
    with pytest.raises(InputError, match="scalar"):
        t.gradient(np.ones(3))
    with pytest.raises(TapeadError, match="scalar"):
        tapead.grad(t)


# ---- tracing errors -------------------------------------------------------------------------------------------
def test_float_of_traced_value():
    with pytest.raises(TracingError, match="float"):
        tapead.record(lambda x: float(x[0]), np.ones(3))


def test_int_of_traced_value():
    with pytest.raises(TracingError, match="int"):
        tapead.record(lambda x: int(x[0]), np.ones(3))


@pytest.mark.parametrize("fn", [math.sin, math.exp, math.sqrt])
def test_math_module_on_traced_value(fn):
    with pytest.raises(TracingError, match="np.sin"):
        tapead.record(lambda x: fn(x[0]), np.ones(3))


def _branchy(x):
    if x[0] > 0:
        return x[0]
    return -x[0]


def test_if_on_traced_value_names_the_line():
    line = inspect.getsourcelines(_branchy)[1] + 1
    with pytest.raises(TracingError) as e:
        tapead.record(_branchy, np.ones(3), on_branch="forbid")
    assert f"test_errors.py:{line}" in str(e.value)
    assert "where" in str(e.value)


@pytest.mark.parametrize("fn", [lambda x: max(x[0], x[1]), lambda x: x[0] and x[1], lambda x: x[0] < x[1] < x[2],
                                lambda x: sorted(x)])
def test_other_python_control_flow_when_forbidden(fn):
    with pytest.raises(TracingError, match="truth value"):
        tapead.record(fn, np.ones(3), on_branch="forbid")


def test_branch_records_guards_and_raise_mode_refuses_the_other_path():
    t = tapead.record(_branchy, np.array([1.0, 2.0, 3.0]), on_branch="raise")
    assert len(t.guards) == 1
    assert t.value(np.array([2.0, 0.0, 0.0])) == 2.0
    with pytest.raises(tapead.BranchError):
        t.value(np.array([-2.0, 0.0, 0.0]))


def test_on_branch_must_be_known():
    with pytest.raises(ValueError, match="on_branch"):
        tapead.record(_branchy, np.ones(3), on_branch="sometimes")


def _store_into_float_array(x):
    y = np.zeros(3)
    y[0] = x[0]
    return y


def test_storing_into_float_array_suggests_zeros_like():
    with pytest.raises(TracingError, match="np.zeros_like"):
        tapead.record(_store_into_float_array, np.ones(3))


def test_zeros_like_slice_assignment_works():
    def f(x):
        y = np.zeros_like(x)
        y[0:1] = x[1:2] * 2.0
        y[[2]] = np.sin(x[[0]])
        return y
    t = tapead.record(f, np.ones(3))
    assert np.allclose(t.value(np.array([0.5, 2.0, 9.0])), [4.0, 0.0, np.sin(0.5)], rtol=1e-15)


def test_zeros_like_element_assignment_works():
    def f(x):
        y = np.zeros_like(x)
        y[0] = x[1] * 2.0
        y[2] = np.sin(x[0])
        y[1] += x[2]
        return y
    t = tapead.record(f, np.ones(3))
    assert np.allclose(t.value(np.array([0.5, 2.0, 9.0])), [4.0, 9.0, np.sin(0.5)], rtol=1e-15)


@pytest.mark.parametrize("fn", [
    lambda x: x[x[0]], lambda x: x[x > 0], lambda x: x[x[0], ...],
    lambda x: x[[0, x[1]]]])
def test_indexing_with_traced_value(fn):
    with pytest.raises(TracingError, match="where"):
        tapead.record(fn, np.ones(3))


@pytest.mark.parametrize("fn, name", [(np.fft.fft, "np.fft.fft"), (np.spacing, "np.spacing"),
                                      (np.nanmedian, "np.nanmedian"), (np.signbit, "np.signbit")])
def test_unsupported_numpy_function_is_named(fn, name):
    with pytest.raises(TracingError, match=name.replace(".", r"\.")):
        tapead.record(fn, np.ones(3))


@pytest.mark.parametrize("fn", [np.lexsort, lambda x: np.sort(x, order="f")])
def test_sorting_refused(fn):
    with pytest.raises(TracingError, match="sort"):
        tapead.record(fn, np.ones(3))


def test_returning_a_tuple():
    with pytest.raises(TracingError, match="np.stack"):
        tapead.record(lambda x: (x[0], x[1]), np.ones(3))


def test_record_needs_a_callable():
    with pytest.raises(TracingError, match="callable"):
        tapead.record(None, np.ones(3))


# ---- malformed tapes ----------------------------------------------------------------------------------------
def _malformed():
    from tapead import Function, Tape
    return [Function(Tape(code=np.array([[0, 0, 99, -1]]), consts=np.zeros(0), input_shapes=[(2,)],
                          param_shape=None, outputs=np.array([2]), output_shape=())),
            Function(Tape(code=np.array([[999, 0, 1, -1]]), consts=np.zeros(0), input_shapes=[(2,)],
                          param_shape=None, outputs=np.array([2]), output_shape=())),
            Function(Tape(code=np.zeros((0, 4)), consts=np.zeros(0), input_shapes=[(2,)], param_shape=None,
                          outputs=np.array([7]), output_shape=()))]


@pytest.mark.parametrize("i", range(3))
def test_malformed_tape_fails_check(i):
    with pytest.raises(TapeFormatError):
        _malformed()[i].check()


@pytest.mark.parametrize("i", range(3))
def test_malformed_tape_refused_at_compile(i):
    with pytest.raises(TapeFormatError):
        _malformed()[i].value(np.ones(2))


# ---- calls that could crash native code run in a subprocess ---------------------------------------------------
_PRELUDE = """
import numpy as np, tapead
t = tapead.record(lambda x: np.sum(np.sin(x) * x), np.ones(3))
t.compile()
"""

CRASHERS = {
    "huge_wrong_shape": ("t.gradient(np.ones((2_000_000, 4)))", "InputError"),
    "noncontiguous_out": ("t.gradient(np.ones((100, 3)), out=np.empty((100, 6))[:, ::2])", "InputError"),
    "short_batch_out": ("t.gradient(np.ones((100, 3)), out=np.empty((10, 3)))", "InputError"),
    "short_value_out": ("t.value(np.ones((100, 3)), out=np.empty(10))", "InputError"),
    "read_only_out": ("o = np.empty(3); o.setflags(write=False); t.gradient(np.ones(3), out=o)", "InputError"),
    "float32_out": ("t.gradient(np.ones((50, 3)), out=np.empty((50, 3), np.float32))", "InputError"),
    "short_params": ("tp = tapead.record(lambda x, p: np.sum(x * p), np.ones(3), params=np.ones(3)); "
                     "tp.value(np.ones((100, 3)), params=np.ones((10, 3)))", "InputError"),
    "object_input": ("t.value(np.array([None, None, None]))", "InputError"),
    "bad_tape": ("from tapead import Function, Tape; Function(Tape(code=np.array([[0, 0, 99, -1]]), "
                 "consts=np.zeros(0), input_shapes=[(2,)], param_shape=None, outputs=np.array([2]), "
                 "output_shape=())).value(np.ones(2))",
                 r"TapeFormatError: instruction 0 \(\w+\): argument 1 is slot 99, not one of the 2 slots"),
}


@pytest.mark.parametrize("name", list(CRASHERS))
def test_bad_calls_end_in_a_clean_exception(name):
    body, error = CRASHERS[name]
    script = _PRELUDE + body + "\n"
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])  # a signal would be negative
    assert "Traceback" in r.stderr
    assert re.search(error, r.stderr), r.stderr[-2000:]
