"""Loops over any axis but the first: the (3, n) layout and a long middle axis stay loops.

A ``MapArray`` is a loop over its first axis. Code written with the long axis last (positions as ``X`` of shape
``(3, n)``, ``d = X[:, i] - X[:, j]``, ``r2 = np.sum(d * d, axis=0)``) or in the middle (``(5, n, 3)``) has a short
first axis, and would unroll to scalars. An ``AxisMap`` is the same loop seen with its axes moved: an array whose
loop axis sits ``back`` axes from the end (0: the last), held as a ``MapArray`` of shape ``(n, *other axes)``.
Elementwise operations move every operand's axis at that position to the front (numpy's broadcasting aligns
trailing axes, so an operand with fewer axes, a unit axis or a scalar broadcast the same way) and run in the loop
body; reductions over other axes and indexing with ints and slices that keeps the loop axis stay in the body;
``.T`` of a 2-D one is its loop. Everything else reads ``cells``, which materialises the loop into ordinary
traced scalars, exactly as ``MapArray`` does. The loop axis of a new array is its last long axis (at least the
recorder's loop threshold), counted from the end.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from . import tracer
from .maparray import MapArray
from .gather import GatheredArray, recorder_of_array
from .tracer import Scalar, TracedArray, shape_of, to_cells


class AxisMap(TracedArray):
    """A traced array recorded as a loop over the axis ``back`` axes from its end (see the module doc)."""

    __slots__ = ("inner", "back")
    __array_priority__ = 1002

    def __init__(self, inner: MapArray, back: int = 0):
        self.inner, self.back = inner, back

    @property
    def axis(self) -> int:
        """The loop axis, counted from the front."""
        return self.inner.ndim - 1 - self.back

    @property
    def shape(self):
        s = self.inner.shape
        return s[1:1 + self.axis] + s[:1] + s[1 + self.axis:]

    ndim = property(lambda self: self.inner.ndim)
    size = property(lambda self: self.inner.size)

    @property
    def cells(self) -> np.ndarray:
        inner = self.inner
        if inner._flat is None and inner.origin is None:
            flat = inner.materialise().cells
            if not inner.views:  # no view holds them yet: laid out as numpy's array is (C order, outer shape)
                outer = np.ascontiguousarray(np.moveaxis(flat, 0, self.axis))
                inner._flat = TracedArray(np.moveaxis(outer, self.axis, 0))
                return outer
        return np.moveaxis(inner.cells, 0, self.axis)

    @property
    def T(self):
        return self.inner if self.ndim == 2 else TracedArray(self.cells.T)

    def __repr__(self):
        return f"<traced array shape={self.shape} (a loop over axis {self.axis})>"

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        parts = idx if isinstance(idx, tuple) else (idx,)
        p = self.axis
        if self.inner.structured and len(parts) <= self.ndim and \
                all(isinstance(q, (int, np.integer, slice)) for q in parts) and \
                (len(parts) <= p or parts[p] == slice(None)):
            parts = tuple(int(q) if isinstance(q, np.integer) else q for q in parts)
            before, after = parts[:p], parts[p + 1:]
            r = self.inner[(slice(None),) + before + after]
            if type(r) is MapArray and r.structured:
                return _lift(r, self.back - sum(isinstance(q, int) for q in after))
        return TracedArray.__getitem__(self, idx)

    def __setitem__(self, idx, value):
        self.inner.settle()  # (its source and views first: the write reaches them all)
        TracedArray.__setitem__(self, idx, value)

    def __array_function__(self, func, types, args, kwargs):
        if (func is np.sum or func is np.mean) and args and args[0] is self and self.inner.structured:
            done = _reduce(func, self, *args[1:], **kwargs)
            if done is not None:
                return done
        return TracedArray.__array_function__(self, func, types, args, kwargs)

    def sum(self, *args, **kwargs): return np.sum(self, *args, **kwargs)
    def mean(self, *args, **kwargs): return np.mean(self, *args, **kwargs)


def _lift(r, back: int = 0):
    """A loop result in this module's terms: a loop whose axis is first is a MapArray as it is, else an
    AxisMap."""
    if isinstance(r, MapArray) and r.ndim >= 2 and r.ndim - 1 - back > 0:
        return AxisMap(r, back)
    return r


def _reduce(func, a: AxisMap, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
    """``np.sum``/``np.mean`` over any axes, as the loop's reduction (other axes in the body, the loop axis as
    ``sum`` outputs); None for what the loop does not take (``out=``, another dtype)."""
    if out is not None or kwargs or (dtype is not None and np.dtype(dtype) != np.float64):
        return None
    ndim, p = a.ndim, a.axis
    axes = set(range(ndim)) if axis is None else set(normalize_axis_tuple(axis, ndim))  # (numpy's errors)
    inner_axes = tuple(sorted(0 if x == p else x + 1 if x < p else x for x in axes))
    r = func(a.inner, axis=inner_axes, keepdims=bool(keepdims))
    if p not in axes:
        return _lift(r, a.back if keepdims else a.back - sum(x > p for x in axes))
    # reduced over the loop: the rest is in the outer order; keepdims puts the loop's unit axis first, where the
    # outer array has it at the loop axis
    return np.moveaxis(r, 0, p) if keepdims and np.ndim(r) > 1 else r


def _moved(a, ndim: int, back: int):
    """Operand ``a`` of a result with ``ndim`` axes whose loop axis is ``back`` from the end, with that axis moved
    first."""
    if isinstance(a, AxisMap) and a.inner.structured and a.back == back:
        return _widened(a.inner, ndim)
    if type(a) is MapArray and a.structured and a.ndim == back + 1:
        return _widened(a, ndim)  # its first axis is the loop's position: aligned with the loop already
    if isinstance(a, (Scalar, int, float, np.integer, np.floating)):
        return a
    cells = np.asarray(to_cells(a))
    if cells.ndim == 0:
        return a
    cells = cells.reshape((1,) * (ndim - cells.ndim) + cells.shape)
    moved = np.moveaxis(cells, ndim - 1 - back, 0)
    return TracedArray(moved) if moved.dtype == object else moved


def _widened(a: MapArray, ndim: int) -> MapArray:
    """A loop whose block has fewer axes than the result's: unit axes in front of its block (numpy's
    broadcasting of the outer shapes, aligned at the trailing axes, seen from the loop)."""
    if a.ndim == ndim:
        return a
    b, block = a._live()
    block = np.asarray(block, dtype=object)
    return MapArray(b, block.reshape((1,) * (ndim - a.ndim) + block.shape))


def axis_loop(fn, args: tuple):
    """``fn`` elementwise over ``args`` as a loop over an axis after the first, or None when the first-axis rule
    applies (or no loop is wanted): an operand is an AxisMap (its loop axis is the result's), or structured
    recording is on and the result has two or more axes, a short first axis and a long later axis."""
    loops = [a for a in args if isinstance(a, AxisMap) and a.inner.structured]
    shape = np.broadcast_shapes(*(shape_of(a) for a in args))
    if loops:
        back = loops[0].back
        if any(a.back != back for a in loops) or len(shape) - 1 - back <= 0:
            return None
        rec = loops[0].inner.builder.outer
    else:
        if any(isinstance(a, AxisMap) for a in args) or any(type(a) is MapArray for a in args) or len(shape) < 2:
            return None
        rec = _recorder(args)
        if rec is None or rec.map_min is None or shape[0] >= rec.map_min:
            return None
        long = [k for k in range(len(shape) - 1, 0, -1) if shape[k] >= rec.map_min]
        if not long:
            return None
        back = len(shape) - 1 - long[0]
    p = len(shape) - 1 - back
    if shape[p] < 2:
        return None
    moved = [_moved(a, len(shape), back) for a in args]
    return _lift(tracer.SURFACE.apply_map(fn, tuple(moved), rec, (shape[p],) + shape[:p] + shape[p + 1:]), back)


def _recorder(args: tuple):
    """The recorder of the first traced value among the operands, or None."""
    for a in args:
        rec = a.rec if isinstance(a, Scalar) else recorder_of_array(a) if type(a) in (TracedArray, GatheredArray) \
            else None
        if rec is not None:
            return rec
    return None


tracer.install(axis_loop=axis_loop)
