"""Loop arrays keep numpy's semantics where their structure moves into the body: a transpose, a reshape, a
``swapaxes``, a ``diagonal`` or a ``[:, k]`` of a loop array is a view (writes through it reach the source and
writes into the source reach it), numpy integers index like ints, out-of-range axes raise numpy's errors.

Each program is compared with numpy on floats and its gradient with the unrolled tape."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, magnitude

N = 100
X = np.random.default_rng(12).normal(size=9 * N)


def write_through_T(v):
    F = np.sin(v.reshape(N, 9))
    G = F.T
    G[0, 0] = 11.0 * v[3]
    return F * v[5]


def write_through_reshape(v):
    F = np.sin(v.reshape(N, 9))
    G = F.reshape(N, 3, 3)
    G[1, 1, 1] = 11.0
    return F * 1.0 + G.reshape(N, 9)


def write_through_swapaxes(v):
    F = np.sin(v.reshape(N, 3, 3))
    G = F.swapaxes(1, 2)
    G[0, 0, 1] = v[0] ** 2
    return F * 1.0


def source_written_after_T(v):
    F = np.sin(v[:3 * N].reshape(N, 3))
    G = F.T
    H = np.transpose(G)  # a view of a view
    F[0, 0] = 11.0 * v[1]
    return G * 1.0 + H.T


def source_written_after_diagonal(v):
    F = np.sin(v.reshape(N, 3, 3))
    d = np.diagonal(F, axis1=1, axis2=2)
    F[0, 0, 0] = 3.0
    return d * 1.0


def column_views(v):
    F = np.sin(v.reshape(N, 9))
    c = F[:, 1]
    c[0] = 5.0  # into the source
    F[1, 1] = 7.0 * v[2]  # into the column
    e = F[:, 2]
    return c * e + F[:, 1] * 1.0


def a_copy_is_not_a_view(v):
    F = np.sin(v.reshape(N, 9))
    G = np.reshape(F, (N, 3, 3), copy=True)
    G[0, 0, 0] = 11.0
    return F * 1.0 + G.reshape(N, 9) * 2.0


def numpy_integer_indices(v):
    f = np.sin(v[:2 * N * 3].reshape(2, N, 3))  # a loop over the middle axis
    g = np.cos(v[:6 * N].reshape(3, 2, N))  # a loop over the last axis
    return f[np.int64(1)][:, :2] * 1.0 + f[:, :, np.int64(0)].T + sum(g[i] for i in np.arange(3)).T  # (N, 2)


CASES = [write_through_T, write_through_reshape, write_through_swapaxes, source_written_after_T,
         source_written_after_diagonal, column_views, a_copy_is_not_a_view, numpy_integer_indices]


@pytest.mark.parametrize("f", CASES, ids=lambda f: f.__name__)
def test_views_of_loop_arrays_behave_as_numpy_views(f):
    want = f(X)
    t = tapead.record(f, X)
    assert_close(t.value(X), want, 1e-13, scale=magnitude(want))
    loss = lambda v: np.sum(np.tanh(f(v)))  # noqa: E731
    s, u = tapead.record(loss, X), tapead.record(loss, X, structured=False)
    assert_close(s.value(X * 1.1), loss(X * 1.1), 1e-12, scale=magnitude(loss(X * 1.1)))
    assert_close(s.gradient(X * 1.1), u.gradient(X * 1.1), 1e-12, scale=magnitude(u.gradient(X * 1.1)))


def test_the_diagonal_of_a_loop_array_is_read_only_as_numpy_s():
    def f(v):
        d = np.diagonal(np.sin(v.reshape(N, 3, 3)), axis1=1, axis2=2)
        d[0, 0] = 1.0
        return d

    with pytest.raises(ValueError):
        f(X)  # numpy
    with pytest.raises(ValueError):
        tapead.record(f, X)


@pytest.mark.parametrize("g", [
    lambda v: np.tensordot(v.reshape(N, 9), np.ones((9, 4)), axes=([1], [2])),
    lambda v: np.swapaxes(np.sin(v.reshape(N, 3, 3)), 0, 3),
    lambda v: np.sin(v.reshape(N, 3, 3)).transpose(3, 1, 2),
    lambda v: np.trace(np.sin(v.reshape(N, 3, 3)), 0, 1, 5),
    lambda v: np.sum(np.sin(v[:3 * N * 3].reshape(3, N, 3)), axis=3),
    lambda v: np.sum(np.sin(v[:3 * N * 3].reshape(3, N, 3)), axis=(0, -3)),
])
def test_out_of_range_axes_raise_numpy_s_error(g):
    with pytest.raises(Exception) as numpy_error:
        g(X)
    with pytest.raises(type(numpy_error.value)):
        tapead.record(g, X)


def test_einsum_with_a_traced_scalar_and_inner_with_a_list():
    x = X[:200]
    f = lambda v: np.sum(np.einsum("i,->i", v, np.sum(v))) + np.sum(np.inner(v.reshape(100, 2), [[1.0, 2.0], [3.0, 4.0]]))  # noqa
    t = tapead.record(f, x)
    assert_close(t.value(x), f(x), 1e-12, scale=magnitude(f(x)))


def _write_through_a_row(x):
    A = np.sin(x.reshape(64, 3))
    V = A[:, 0]  # a view of A (a loop)
    A[0][0] = 7.0  # a write through a plain view of A's cells: V[0] is 7 in numpy
    return V * 1.0


def _rows_iterated(x):
    A = np.sin(x.reshape(64, 3))
    T = A.T
    for row in A:  # rows are views of A
        row[1] = 0.0
    return T[1] * 1.0


def _later_axis_written_through_T(x):
    d = np.sin(x.reshape(2, 64, 3))  # a loop over the middle axis
    v = d[:, :, 1]
    d.T[1, 4, 0] = 7.0
    return v * 1.0


def _ravel_of_a_later_axis_loop(x):
    d = x.reshape(3, 64) * 2.0  # numpy's result is C-contiguous: ravel is a view
    r = d.ravel()
    r[1] = 100.0
    return d


def _reshape_of_a_stack(x):
    S = np.stack([np.sin(x.reshape(64, 3)), np.cos(x.reshape(64, 3))])  # (2, 64, 3), C-contiguous in numpy
    r = S.reshape(2, -1)
    r[0, 0] = 100.0
    return S * 1.0


def _method_reshape_copy(x):
    F = np.sin(x.reshape(64, 3))
    G = F.reshape(64, 3, 1, copy=True)
    G[0, 0, 0] = 5.0
    return F + G[:, :, 0]


def _cross_forms(x):
    a, b = np.sin(x.reshape(64, 3)), np.cos(x.reshape(64, 3))
    two = np.cross(a[:, :2], b[:, :2])  # 2-vectors: a scalar per row (numpy on the cells)
    wide = np.cross(a, b[:, None, :])  # broadcast (64, 64, 3)
    return np.concatenate([two, np.cross(a, b).ravel(), wide.ravel()[:50]])


@pytest.mark.parametrize("f", [_write_through_a_row, _rows_iterated, _later_axis_written_through_T,
                               _ravel_of_a_later_axis_loop, _reshape_of_a_stack, _method_reshape_copy, _cross_forms],
                         ids=lambda f: f.__name__)
def test_writes_through_plain_views_and_layouts_are_numpy_s(f):
    x = np.random.default_rng(13).normal(size=384 if f is _later_axis_written_through_T else 192)
    t = tapead.record(f, x)
    assert_close(t.value(x), f(x.copy()), 1e-13, scale=magnitude(f(x.copy())))


@pytest.mark.parametrize("g", [
    lambda v: np.stack([np.sin(v[:64]), np.cos(v[:64])], axis=2),
    lambda v: np.stack([np.sin(v.reshape(64, 3)), np.cos(v.reshape(64, 3))], axis=-4),
    lambda v: np.concatenate([np.sin(v.reshape(64, 3)), np.cos(v.reshape(64, 3))], axis=-3),
    lambda v: np.max(np.sin(v.reshape(64, 3)), axis=2),
    lambda v: np.sum(np.sin(v.reshape(64, 3)), axis=2),
    lambda v: np.size(np.sin(v.reshape(64, 3)), axis=5) * v,
])
def test_out_of_range_axes_of_loop_arrays_raise_numpy_s_error(g):
    v = np.linspace(0, 1, 192)
    with pytest.raises(Exception) as numpy_error:
        g(v)
    with pytest.raises(type(numpy_error.value)):
        tapead.record(g, v)
    assert tapead.record(lambda v: np.size(np.sin(v.reshape(64, 3)), axis=(0, 1)) * v[0], v).value(v) == 192 * v[0]


def test_jacobian_with_out_of_a_two_argument_tape_raises_the_same_error_every_time():
    from tapead.errors import InputError
    g = tapead.record(lambda a, b: a * b, np.ones(2), 0.5)
    for i in range(2):
        with pytest.raises(InputError):
            g.jacobian(np.ones(2), out=np.empty((2, 2)))
        g.jacobian(np.ones(2), 0.5)  # (builds the derived tape the fast path would read)
