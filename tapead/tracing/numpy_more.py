"""More of numpy on traced values: sorting and arg-extremes through guarded comparisons, statistics, interpolation,
padding, spacing and the small selection helpers.

Sorting, argmax/argmin and interp's bracket search compare traced values in Python: every comparison is a guard,
so the recorded order (or bracket) is fixed on the tape's path and a call where it changes re-records. NaN counts
as larger than every number, as in numpy: one ``x != x`` guard per element records which values are NaN, so a
NaN appearing at call time changes the path too. Indices returned by argsort/argmax/argmin are plain integers,
exact on the path.
"""
from __future__ import annotations

import numpy as np

from ..table import ops
from ..errors import TracingError
from .elementwise import where
from .tracer import elementwise, logical_and, logical_or, to_cells, wrap

_NO = np._NoValue


def _cells(a) -> np.ndarray:
    return np.asarray(to_cells(a), dtype=object)


def sort_order(lane: list, nan_last: bool = True) -> list:
    """The stable ascending permutation of ``lane`` by merge sort with guarded ``<`` (NaNs last, in order)."""
    idx = list(range(len(lane)))
    nans = []
    if nan_last:
        nans = [i for i in idx if lane[i] != lane[i]]  # guards: which values are NaN
        idx = [i for i in idx if i not in nans]

    def merge(part):
        if len(part) <= 1:
            return part
        left, right = merge(part[:len(part) // 2]), merge(part[len(part) // 2:])
        out = []
        while left and right:
            out.append(right.pop(0) if lane[right[0]] < lane[left[0]] else left.pop(0))  # guard
        return out + left + right

    return merge(idx) + nans


def _lanes(a, axis):
    """Cells with ``axis`` moved last (flattened for axis=None), and how to move results back."""
    c = _cells(a)
    if axis is None:
        return c.ravel(), lambda r: r
    if c.ndim == 0:
        raise np.exceptions.AxisError(axis, 0)
    return np.moveaxis(c, axis, -1), lambda r: np.moveaxis(r, -1, axis)


def _check_order(name, order_):
    if order_ is not None:
        raise TracingError(f"np.{name}(order=...) sorts structured arrays; traced arrays are plain floats")


def argsort(a, axis=-1, kind=None, order=None, *, stable=None) -> np.ndarray:
    """Integer indices (a plain array) that sort ``a``: stable, NaNs last; the order is a path guard."""
    _check_order("argsort", order)
    c, back = _lanes(a, axis)
    out = np.empty(c.shape, np.intp)
    for idx in np.ndindex(c.shape[:-1]):
        out[idx] = sort_order(list(c[idx]))
    return back(out)


def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    """Sorted values (ascending, NaNs last); the derivative follows each value to its place."""
    _check_order("sort", order)
    c, back = _lanes(a, axis)
    out = np.empty(c.shape, object)
    for idx in np.ndindex(c.shape[:-1]):
        lane = list(c[idx])
        out[idx] = [lane[i] for i in sort_order(lane)]
    return wrap(back(out))


def partition(a, kth, axis=-1, kind="introselect", order=None):
    """A full sort, which is one valid partition (numpy leaves the order within each side unspecified)."""
    _check_order("partition", order)
    return sort(a, axis)


def argpartition(a, kth, axis=-1, kind="introselect", order=None):
    """argsort, which is one valid argpartition."""
    _check_order("argpartition", order)
    return argsort(a, axis)


def _arg_extreme(name, better):
    def arg(a, axis=None, out=None, *, keepdims=_NO):
        """Index of the first largest (smallest) value, or of the first NaN, as numpy: plain integers."""
        if out is not None:
            raise TracingError(f"np.{name}(..., out=...) on traced values: assign the result instead")
        c, _ = _lanes(a, axis)
        if c.shape[-1] == 0:
            raise ValueError(f"attempt to get {name} of an empty sequence")
        res = np.empty(c.shape[:-1], np.intp)
        for idx in np.ndindex(res.shape):
            lane, best = list(c[idx]), 0
            if lane[0] != lane[0]:  # guard
                res[idx] = 0
                continue
            for i in range(1, len(lane)):
                if not better(lane[best], lane[i]):  # guard: lane[i] is better, or NaN
                    best = i
                    if lane[i] != lane[i]:  # guard
                        break
            res[idx] = best
        if keepdims is True:
            res = np.expand_dims(res, tuple(range(_cells(a).ndim)) if axis is None else axis)
        return res if res.ndim else np.intp(res)
    return arg


def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=_NO, *, where=_NO, mean=_NO, correction=_NO):
    """Mean squared deviation, divided by ``N - ddof`` (``correction`` is numpy's other name for ddof)."""
    if out is not None or where is not _NO or mean is not _NO:
        raise TracingError("np.var/np.std on traced values support axis=, ddof=, correction= and keepdims=")
    if correction is not _NO:
        ddof = correction
    c = _cells(a)
    axes = tuple(range(c.ndim)) if axis is None else tuple(int(i) % max(c.ndim, 1) for i in np.atleast_1d(axis))
    n = int(np.prod([c.shape[i] for i in axes]))
    if n == 1 and ddof < 1:  # one value per group: the spread is identically 0 (derivatives 0, never 0 * inf)
        return wrap(np.sum(c * 0.0, axis=axes, keepdims=keepdims is True))
    m = np.sum(c, axis=axes, keepdims=True) / float(n)
    d = c - m
    r = np.sum(d * d, axis=axes, keepdims=keepdims is True) / float(max(n - ddof, 0))
    return wrap(r)


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=_NO, *, where=_NO, mean=_NO, correction=_NO):
    """sqrt of var. Where every value of a group is equal (zero spread) std is not differentiable (two values:
    ``|x1 - x2| / 2``); its derivative there is 0, as ``abs'(0) = 0``, to every order, through a NaN-safe select
    (not ``0 * inf``)."""
    v = var(a, axis, dtype, out, ddof, keepdims, where=where, mean=mean, correction=correction)
    return np.where(v > 0.0, elementwise(ops.sqrt, v), v * 0.0)  # v * 0: a NaN spread stays NaN


def average(a, axis=None, weights=None, returned=False, *, keepdims=_NO):
    """Weighted mean; 1-d weights along ``axis`` broadcast as numpy does. ``returned``: also the weight sum."""
    c = _cells(a)
    if weights is None:
        w = np.ones(c.shape)
    else:
        w = _cells(weights)
        if w.shape != c.shape:
            if axis is None or w.ndim != 1 or w.shape[0] != c.shape[axis]:
                raise TypeError("np.average: weights must have a's shape, or be 1-d along the given axis")
            w = np.moveaxis(w.reshape(w.shape + (1,) * (c.ndim - 1)), 0, axis)
    kd = keepdims is True
    total = np.sum(np.broadcast_to(w, c.shape), axis=axis, keepdims=kd)
    avg = np.sum(c * w, axis=axis, keepdims=kd) / total
    return (wrap(avg), wrap(np.broadcast_to(total, np.shape(avg)))) if returned else wrap(avg)


def interp(x, xp, fp, left=None, right=None, period=None):
    """Piecewise-linear interpolation. The bracket of each x is found by binary search with guarded comparisons;
    at a knot the slope of the interval to its right is used (as JAX); outside [xp[0], xp[-1]] the value is
    ``left``/``right`` (default fp[0]/fp[-1])."""
    if period is not None:
        raise TracingError("np.interp(period=...) on traced values is not supported; wrap x into one period "
                           "yourself (x - period * np.floor(x / period)) and pass the extended xp/fp")
    xc, xpc, fpc = _cells(x), _cells(xp).ravel(), _cells(fp).ravel()
    if len(xpc) == 0 or len(xpc) != len(fpc):
        raise ValueError("np.interp: xp and fp must be non-empty and of the same length")
    lo_val = fpc[0] if left is None else left
    hi_val = fpc[-1] if right is None else right
    out = np.empty(xc.shape, object)
    for idx in np.ndindex(xc.shape):
        v = xc[idx]
        if v < xpc[0]:  # guard
            out[idx] = lo_val
        elif v > xpc[-1]:  # guard
            out[idx] = hi_val
        elif len(xpc) == 1:
            out[idx] = fpc[0]
        else:
            lo, hi = 0, len(xpc) - 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if v < xpc[mid]:  # guard
                    hi = mid
                else:
                    lo = mid
            slope = (fpc[hi] - fpc[lo]) / (xpc[hi] - xpc[lo])
            out[idx] = slope * (v - xpc[lo]) + fpc[lo]
    return wrap(out)


def _gradient_matrix(n: int, spacing, edge_order: int) -> np.ndarray:
    """numpy's own gradient of each unit vector: the (constant) matrix of the linear map along one axis."""
    return np.gradient(np.eye(n), *([] if spacing is None else [spacing]), axis=0, edge_order=edge_order)


def gradient(f, *varargs, axis=None, edge_order=1):
    """Central differences (one-sided at the edges) with constant spacings: a linear map per axis whose
    coefficients numpy itself computes; each output cell sums only its nonzero terms."""
    c = _cells(f)
    axes = list(range(c.ndim)) if axis is None else [a % c.ndim for a in np.atleast_1d(axis)]
    if any(np.asarray(to_cells(v)).dtype == object for v in varargs):
        raise TracingError("np.gradient on traced values needs constant spacings or coordinates")
    if len(varargs) == 0:
        spacings = [None] * len(axes)
    elif len(varargs) == 1:
        spacings = list(varargs) * len(axes)
    elif len(varargs) == len(axes):
        spacings = list(varargs)
    else:
        raise TypeError("np.gradient: give one spacing, or one per axis")
    results = []
    for ax, h in zip(axes, spacings):
        n = c.shape[ax]
        if n < edge_order + 1:
            raise ValueError("Shape of array too small to calculate a numerical gradient, at least "
                             "(edge_order + 1) elements are required.")
        g = _gradient_matrix(n, h, edge_order)
        lanes = np.moveaxis(c, ax, -1)
        out = np.empty(lanes.shape, object)
        for i in range(n):
            js = np.flatnonzero(g[i])
            acc = lanes[..., js[0]] * g[i, js[0]]
            for j in js[1:]:
                acc = acc + lanes[..., j] * g[i, j]
            out[..., i] = acc
        results.append(wrap(np.moveaxis(out, -1, ax)))
    return results[0] if len(results) == 1 else tuple(results)


_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap", "empty")


def pad(array, pad_width, mode="constant", **kwargs):
    """numpy's own padding on the cells: constant values (traced or not), edge, reflect, symmetric, wrap."""
    if not isinstance(mode, str) or mode not in _PAD_MODES:
        raise TracingError(f"np.pad(mode={mode!r}) on traced values is not supported; modes: "
                           + ", ".join(_PAD_MODES))
    if mode == "empty":
        mode, kwargs = "constant", {}
    kwargs = {k: (_cells(v) if k == "constant_values" else v) for k, v in kwargs.items()}
    return wrap(np.pad(_cells(array), pad_width, mode=mode, **kwargs))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *, device=None):
    """numpy's arithmetic with traced endpoints: ``i * step + start``, the last value ``stop`` when included."""
    if dtype not in (None, float, np.float64):
        raise TracingError(f"np.linspace(dtype={dtype!r}) on traced endpoints: only float64")
    if num < 0:
        raise ValueError(f"Number of samples, {num}, must be non-negative.")
    s, e = _cells(start), _cells(stop)
    div = (num - 1) if endpoint else num
    step = (e - s) / float(div) if div > 0 else (e - s) * np.nan
    i = np.arange(num, dtype=float).reshape((-1,) + (1,) * np.broadcast(s, e).ndim)
    y = np.asarray(i * step + s, dtype=object) if div > 0 else np.asarray(i * (e - s) + s, dtype=object)
    if endpoint and num > 1:
        y[-1, ...] = e
    y = np.moveaxis(y, 0, axis)
    return (wrap(y), wrap(step)) if retstep else wrap(y)


def select(condlist, choicelist, default=0.0):
    """The first choice whose condition holds, elementwise: nested branch-free selects."""
    if len(condlist) != len(choicelist):
        raise ValueError("list of cases must be same length as list of conditions")
    r = default
    for cond, choice in reversed(list(zip(condlist, choicelist))):
        r = where(cond, choice, r)
    return r


def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    """NaN and infinities replaced by selects (the replaced values carry no derivative)."""
    big = np.finfo(np.float64).max
    r = where(x != x, nan, x)  # (x != x works elementwise on traced arrays and scalars)
    r = where(elementwise(ops.eq, x, np.inf), big if posinf is None else posinf, r)
    return where(elementwise(ops.eq, x, -np.inf), -big if neginf is None else neginf, r)


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """numpy's test as traced comparisons (1.0/0.0): |a - b| <= atol + rtol |b| with b finite, or a == b."""
    def one(x, y):
        finite = ops.eq(ops.sub(y, y), 0.0)
        near = logical_and(ops.le(ops.absolute(ops.sub(x, y)), ops.add(atol, ops.mul(rtol, ops.absolute(y)))),
                           finite)
        r = logical_or(near, ops.eq(x, y))
        return logical_or(r, logical_and(ops.ne(x, x), ops.ne(y, y))) if equal_nan else r
    return elementwise(one, a, b)


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    """isclose everywhere, as a Python bool: one guard on the conjunction."""
    c = _cells(isclose(a, b, rtol, atol, equal_nan)).ravel()
    allc = c[0]
    for v in c[1:]:
        allc = logical_and(allc, v)
    return bool(allc)


def real(val):
    return val


def imag(val):
    return wrap(np.zeros(np.shape(to_cells(val))))


def real_if_close(a, tol=100):
    return a


def angle(z, deg=False):
    """0 for x >= +0, pi for x <= -0 (numpy's arctan2(0, x)); derivative 0 everywhere."""
    def one(x):
        a = ops.arctan2(0.0, x)  # signed zeros as numpy; the value is piecewise constant
        return ops.select(ops.gt(a, 1.0), np.pi, ops.select(ops.ne(x, x), np.nan, 0.0))
    r = elementwise(one, z)
    return r * (180.0 / np.pi) if deg else r


CUSTOM = {np.sort: sort, np.argsort: argsort, np.partition: partition, np.argpartition: argpartition,
          np.argmax: _arg_extreme("argmax", lambda best, x: x <= best),
          np.argmin: _arg_extreme("argmin", lambda best, x: x >= best),
          np.var: var, np.std: std, np.average: average, np.interp: interp, np.gradient: gradient, np.pad: pad,
          np.linspace: linspace, np.select: select, np.nan_to_num: nan_to_num, np.isclose: isclose,
          np.allclose: allclose, np.real: real, np.imag: imag, np.real_if_close: real_if_close, np.angle: angle}
