"""Adversarial correctness checks: derivative edge cases, NaN-safe selects, native argument handling, branches.
"""
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import tapead

warnings.filterwarnings("ignore", category=RuntimeWarning)


# ---- NaN-safe selects: reverse mode (fine) ---------------------------------------------------------------
@pytest.mark.parametrize("f", [
    lambda x: np.where(x > 0, np.sqrt(x) ** 3, 0.0),
    lambda x: np.where(x > 0, x * np.log(x), 0.0),
    lambda x: np.where(x > 0, np.where(x < 4, np.sqrt(x) * np.log(x), 0.0) ** 2, 0.0),
    lambda x: np.sqrt(np.maximum(x, 0.0)) ** 3,
    lambda x: np.where(x > 0, x ** x, 1.0),
])
def test_select_masks_stay_zero_to_second_order_in_reverse(f):
    t = tapead.record(f, 0.5)
    for x in (-2.0, -0.5):
        assert t.gradient(x) == 0.0
        assert float(np.ravel(t.hessian(x))[0]) == 0.0
        assert float(np.ravel(tapead.grad(tapead.grad(t)).value(x))[0]) == 0.0


def test_cotangent_through_select_and_another_path_is_not_masked():
    t = tapead.record(lambda x: np.where(x > 0, np.sqrt(x), 0.0) + np.where(x > -1, np.sqrt(x + 1), 0.0), 1.0)
    assert np.isclose(t.gradient(-0.5), 0.5 / np.sqrt(0.5))
    assert np.isclose(float(t.hessian(-0.5)), -0.25 * 0.5 ** -1.5)


# ---- NaN-safe selects: forward mode (defect) -------------------------------------------------------------
def test_forward_mode_is_nan_safe_like_reverse_mode():
    t = tapead.record(lambda x: np.sqrt(np.maximum(x, 0.0)), np.ones(3))
    x = np.array([-1.0, 4.0, -2.0])
    assert np.array_equal(t.jacobian(x, mode="reverse"), np.diag([0.0, 0.25, 0.0]))
    assert np.array_equal(t.jacobian(x), np.diag([0.0, 0.25, 0.0]))  # auto = forward here: NaN on the diagonal


def test_hvp_agrees_with_hessian_through_a_select():
    t = tapead.record(lambda v: np.sqrt(np.maximum(v[0], 0.0)) * v[1], np.array([1.0, 2.0]))
    x = np.array([-1.0, 2.0])
    H = t.hessian(x)
    assert np.array_equal(H, np.zeros((2, 2)))
    assert np.array_equal(t.hvp(x, v=np.array([1.0, 0.0])), H[:, 0])


# ---- derivative rules at edge values ---------------------------------------------------------------------
def test_compiled_and_interpreted_gradients_agree_at_edge_values():
    fs = [np.sqrt, np.abs, np.log, np.tanh, np.arcsin, np.log1p, np.sign, lambda x: x ** 1.5,
          lambda x: 2.0 ** x, lambda x: np.maximum(x, 0.0), lambda x: np.clip(x, -1.0, 1.0),
          lambda x: np.hypot(x, 0.0), lambda x: np.arctan2(1.0, x), lambda x: x / x]
    pts = np.array([0.0, -0.0, 1.0, -1.0, 1e-300, 1e300, np.inf, -np.inf, np.nan])
    for f in fs:
        t = tapead.record(f, 0.7)
        compiled = t.gradient(pts)
        interpreted = tapead.grad(t).evaluate(pts).ravel()
        assert np.allclose(compiled, interpreted, rtol=1e-14, atol=0, equal_nan=True)


def test_atan2_gradient_at_tiny_arguments():
    t = tapead.record(lambda v: np.arctan2(v[0], v[1]), np.array([1.0, 1.0]))
    s = 1e-200
    assert np.allclose(t.gradient(np.array([s, s])), [0.5 / s, -0.5 / s])


# ---- Hessian sparsity is a superset of the truth ------------------------------------------------------------
@tapead.custom_op
def review_softplus2(x, y):
    return np.log1p(np.exp(x * y))


@review_softplus2.derivative
def _(x, y):
    s = 1 / (1 + np.exp(-x * y))
    return (s * y, s * x)


@pytest.mark.parametrize("f", [
    lambda x: x[0] ** x[1] + x[2], lambda x: np.arctan2(x[0], x[1]) + x[2] * x[3],
    lambda x: np.hypot(x[0], x[1]) + x[2], lambda x: np.where(x[0] > 0, x[1] * x[2], x[3] ** 2),
    lambda x: np.maximum(x[0] * x[1], x[2]) ** 2, lambda x: abs(x[0] - x[1]) * x[2],
    lambda x: review_softplus2(x[0], x[1]) + x[2], lambda x: x[0] / (x[1] + x[2]),
    lambda x: np.clip(x[0] * x[1], -1, 1) + x[2] ** 3, lambda x: (x[0] > x[1]) * x[2] * x[3],
])
def test_hessian_sparsity_covers_dense_hessian(f):
    t = tapead.record(f, np.array([0.5, 0.7, 0.9, 1.1]))
    r, c = t.hessian_sparsity()
    pattern = np.zeros((4, 4), bool)
    pattern[r, c] = True
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.uniform(0.1, 2, 4) * rng.choice([-1, 1], 4)
        H = t.hessian(x)
        assert not np.any((H != 0) & ~pattern)
        rr, cc, vals = t.sparse_hessian(x)
        S = np.zeros((4, 4))
        S[rr, cc] = vals
        assert np.allclose(S, H, rtol=1e-12, atol=1e-14, equal_nan=True)


# ---- custom ops ------------------------------------------------------------------------------------------
def test_custom_ops_with_the_same_name_do_not_replace_each_other():
    def make(body, partial):
        def review_collide(x):
            return body(x)
        op = tapead.custom_op(review_collide)
        op.derivative(lambda x: (partial(x),))
        return op

    square = make(lambda x: x * x, lambda x: 2 * x)
    t = tapead.record(lambda x: square(x), 2.0)
    assert t.evaluate(2.0) == 4.0
    sine = make(np.sin, np.cos)
    with pytest.raises(tapead.TapeadError, match="already named"):
        tapead.record(lambda x: sine(x), 2.0)  # a second op under the same name is refused
    assert t.value(2.0) == 4.0 and t.gradient(2.0) == 4.0


# ---- tracing -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduce", [np.max, np.min])
def test_max_min_initial_is_refused_by_name(reduce):
    x = np.array([1.0, -2.0, 3.0])
    with pytest.raises(tapead.TracingError, match=r"supports axis= and keepdims= only, got \['initial'\]"):
        tapead.record(lambda v: reduce(v, initial=10.0), x)


def test_max_keepdims_is_honoured():
    x = np.array([1.0, -2.0, 3.0])
    t = tapead.record(lambda v: np.max(v, keepdims=True), x)
    v = np.asarray(t.value(x))
    assert v.shape == (1,) and v[0] == 3.0
    assert np.array_equal(t.jacobian(np.array([4.0, -2.0, 3.0])), [[1.0, 0.0, 0.0]])


@pytest.mark.parametrize("ord_", [1, 2, "fro", "nuc", np.inf])
def test_matrix_norms_record_with_numpy_values_and_gradients(ord_):
    from check import assert_close, fd_gradient
    M = np.array([[1.0, -2.0], [3.0, 4.5]])
    t = tapead.record(lambda m: np.linalg.norm(m, ord_, axis=(0, 1)), M)
    P = M + np.array([[0.1, 0.2], [-0.3, 0.05]])
    assert np.isclose(t.value(P), np.linalg.norm(P, ord_), rtol=1e-13)
    assert_close(t.gradient(P), fd_gradient(lambda m: np.linalg.norm(m, ord_), P), 1e-6)


def test_boolean_operators_on_traced_comparisons():
    x = np.array([1.5, -2.0, 0.5])
    f = lambda v: np.where((v > 0) & (v < 1) | ~(v > -1), v, 0.0)
    assert np.array_equal(tapead.record(f, x).value(x), f(x))


@pytest.mark.parametrize("f", [
    lambda x: np.mean(x.reshape(2, 2), axis=0), lambda x: np.einsum("ij,jk->ik", x.reshape(2, 2), x.reshape(2, 2)),
    lambda x: np.cross(x[:3], x[1:]), lambda x: np.where(x > 0, 1.0, x), lambda x: np.clip(x, None, 2.0),
    lambda x: sum(v * v for v in x), lambda x: max(x[0], x[1], x[2]), lambda x: np.linalg.norm(x.reshape(2, 2), axis=1),
])
def test_numpy_surface_values(f):
    x = np.array([1.5, -2.0, 3.0, 0.5])
    assert np.allclose(tapead.record(f, x).value(x), f(x))


def test_inplace_updates_on_views_follow_numpy():
    def f(x):
        y = x.copy()
        y[1:] += y[:-1]
        y[::-1] += x
        y[[0, 0]] += 1.0
        return y
    x = np.array([1.0, 2.0, 3.0, 4.0])
    t = tapead.record(f, x)
    assert np.array_equal(t.value(x), f(x))
    assert np.allclose(t.jacobian(x), t.jacobian(x, mode="reverse"))


# ---- native entry points -------------------------------------------------------------------------------------
_PROBES = {
    "big-endian input": "print(g(x.astype('>f8'), None, None, out).tolist())",
    "negative strides": "print(g(x[::-1][::-1], None, None, out).tolist())",
    "int64 memoryview": "print(g(memoryview(np.array([1, 2, 3])), None, None, out).tolist())",
    "array.array": "print(g(array.array('d', [1, 2, 3]), None, None, out).tolist())",
    "unaligned": "b = np.zeros(25, np.uint8)[1:].view('f8'); b[:] = x; print(g(b, None, None, out).tolist())",
    "subclass": "class A(np.ndarray): pass\nprint(g(x.view(A), None, None, out).tolist())",
    "long double": "print(g(x.astype(np.longdouble), None, None, out).tolist())",
}


@pytest.mark.parametrize("name", sorted(_PROBES))
def test_native_entry_reads_odd_buffers_correctly(name):
    pre = ("import numpy as np, tapead, array\n"
           "t = tapead.record(lambda x: np.sum(x ** 2 * np.arange(1.0, 4.0)), np.ones(3))\n"
           "g = t.native('gradient'); x = np.array([1.0, 2.0, 3.0]); out = np.empty(3)\n")
    r = subprocess.run([sys.executable, "-c", pre + textwrap.dedent(_PROBES[name])], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[2.0, 8.0, 18.0]"


@pytest.mark.parametrize("code", [
    "o = np.empty(3); o.flags.writeable = False; g(x, None, None, o)",
    "g(x, None, None, np.empty(3, '>f8'))",
    "g(x, None, None, np.empty(6)[::2])",
    "g(x, x, None, np.empty(3))",
    "g(b'abcdefghabcdefghabcdefgh', None, None, np.empty(3))",
])
def test_native_entry_refuses_bad_outputs_without_crashing(code):
    pre = ("import numpy as np, tapead\n"
           "t = tapead.record(lambda x: np.sum(x ** 2), np.ones(3))\n"
           "g = t.native('gradient'); x = np.array([1.0, 2.0, 3.0])\n"
           "try:\n    " + code + "\nexcept tapead.InputError:\n    print('refused')\n")
    r = subprocess.run([sys.executable, "-c", pre], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "refused", r.stderr


def test_native_fallback_fills_the_given_outputs():
    t = tapead.record(lambda x, y: np.sum(x * x) + np.sum(y), np.ones(2), np.ones(2))
    g = t.native("gradient")
    g0 = np.zeros(2)
    g([1.0, 2.0], np.ones(2), None, None, g0, None)  # a list input takes the fallback
    assert np.array_equal(g0, [2.0, 4.0])


# ---- branches and batches ----------------------------------------------------------------------------------
def _branchy(x, p):
    if x[0] > p[0]:
        return x[0] ** 3 + x[1]
    return x[0] ** 2 * 5 + 2 * x[1]


def test_retape_batches_with_batched_params_and_any_thread_count():
    t = tapead.record(_branchy, np.array([1.0, 1.0]), params=np.array([0.0]))
    X = np.array([[1.0, 1.0], [-1.0, 1.0], [0.5, 2.0], [2.0, 0.0]] * 3)
    P = np.array([[0.0], [0.0], [1.0], [3.0]] * 3)
    ref = np.array([_branchy(x, p) for x, p in zip(X, P)])
    assert np.allclose(t.value(X, params=P), ref)
    assert np.allclose(t.evaluate(X, params=P), ref)
    G1 = t.gradient(X, params=P, threads=1)
    assert np.array_equal(G1, t.gradient(X, params=P, threads=2))
    assert np.array_equal(G1[1], [-10.0, 2.0]) and np.array_equal(G1[2], [5.0, 2.0])


def test_hessian_follows_the_branch_like_gradient():
    t = tapead.record(_branchy, np.array([1.0, 1.0]), params=np.array([0.0]))
    x, p = np.array([-1.0, 1.0]), np.array([0.0])
    assert np.array_equal(t.gradient(x, params=p), [-10.0, 2.0])
    assert np.array_equal(t.hessian(x, params=p), [[10.0, 0.0], [0.0, 0.0]])
