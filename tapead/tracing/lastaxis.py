"""Loops over the last axis: the (3, n) layout stays a loop.

A ``MapArray`` is a loop over its first axis. Code written with the long axis last (positions as ``X`` of shape
``(3, n)``, ``d = X[:, i] - X[:, j]``, ``r2 = np.sum(d * d, axis=0)``) has a short first axis, and would unroll
to scalars. A ``LastAxisMap`` is the same loop seen with its axes moved: an array of shape ``(*block, n)`` held
as a ``MapArray`` of shape ``(n, *block)``. Elementwise operations move every operand's last axis to the front
(numpy's broadcasting aligns trailing axes, so a ``(n,)`` vector, a ``(3, 1)`` column or a scalar broadcast the
same way) and run in the loop body; reductions over block axes and indexing that keeps the last axis stay in
the body; ``.T`` of a 2-D one is its loop. Everything else reads ``cells``, which materialises the loop into
ordinary traced scalars, exactly as ``MapArray`` does.
"""
from __future__ import annotations

import numpy as np

from . import tracer
from .maparray import MapArray
from .gather import GatheredArray, recorder_of_array
from .tracer import Scalar, TracedArray, shape_of, to_cells


class LastAxisMap(TracedArray):
    """A traced array of shape ``(*block, n)`` recorded as a loop over its last axis (see the module doc)."""

    __slots__ = ("inner",)
    __array_priority__ = 1002

    def __init__(self, inner: MapArray):
        self.inner = inner

    shape = property(lambda self: self.inner.shape[1:] + self.inner.shape[:1])
    ndim = property(lambda self: self.inner.ndim)
    size = property(lambda self: self.inner.size)

    @property
    def cells(self) -> np.ndarray:
        return np.moveaxis(self.inner.cells, 0, -1)

    @property
    def T(self):
        return self.inner if self.ndim == 2 else TracedArray(self.cells.T)

    def __repr__(self):
        return f"<traced array shape={self.shape} (a loop over its last axis)>"

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        parts = idx if isinstance(idx, tuple) else (idx,)
        if self.inner.structured and len(parts) < self.ndim and \
                all(isinstance(p, (int, np.integer, slice)) for p in parts):
            r = self.inner[(slice(None),) + parts]
            return _lift(r)
        return TracedArray.__getitem__(self, idx)

    def __array_function__(self, func, types, args, kwargs):
        if (func is np.sum or func is np.mean) and args and args[0] is self and self.inner.structured:
            done = _reduce(func, self, *args[1:], **kwargs)
            if done is not None:
                return done
        return TracedArray.__array_function__(self, func, types, args, kwargs)

    def sum(self, *args, **kwargs): return np.sum(self, *args, **kwargs)
    def mean(self, *args, **kwargs): return np.mean(self, *args, **kwargs)


def _lift(r):
    """A loop result in this module's terms: a 1-D loop is the same either way; more axes: a LastAxisMap."""
    return LastAxisMap(r) if isinstance(r, MapArray) and r.ndim >= 2 else r


def _reduce(func, a: LastAxisMap, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
    """``np.sum``/``np.mean`` over any axes, as the loop's reduction (block axes in the body, the loop axis as
    ``sum`` outputs); None for what the loop does not take (``out=``, another dtype)."""
    if out is not None or kwargs or (dtype is not None and np.dtype(dtype) != np.float64):
        return None
    ndim = a.ndim
    axes = set(range(ndim)) if axis is None else {int(x) % ndim for x in np.atleast_1d(axis)}
    inner_axes = tuple(sorted(0 if x == ndim - 1 else x + 1 for x in axes))
    r = func(a.inner, axis=inner_axes, keepdims=bool(keepdims))
    if ndim - 1 not in axes:
        return _lift(r)
    # reduced over the loop: the rest is in block order, which is the outer order; keepdims puts the loop's unit
    # axis first, where the outer array has it last
    return np.moveaxis(r, 0, -1) if keepdims and np.ndim(r) > 1 else r


def _moved(a, ndim: int):
    """Operand ``a`` of a result with ``ndim`` axes whose last axis is the loop, with that axis moved first."""
    if isinstance(a, LastAxisMap) and a.inner.structured:
        return _widened(a.inner, ndim)
    if type(a) is MapArray and a.structured and a.ndim == 1:
        return _widened(a, ndim)  # its only axis is the last one: aligned with the loop already
    if isinstance(a, (Scalar, int, float, np.integer, np.floating)):
        return a
    cells = np.asarray(to_cells(a))
    if cells.ndim == 0:
        return a
    cells = cells.reshape((1,) * (ndim - cells.ndim) + cells.shape)
    moved = np.moveaxis(cells, -1, 0)
    return TracedArray(moved) if moved.dtype == object else moved


def _widened(a: MapArray, ndim: int) -> MapArray:
    """A loop whose block has fewer axes than the result's: unit axes in front of its block (numpy's
    broadcasting of the outer shapes, aligned at the trailing axes, seen from the loop)."""
    if a.ndim == ndim:
        return a
    b, block = a._live()
    block = np.asarray(block, dtype=object)
    return MapArray(b, block.reshape((1,) * (ndim - a.ndim) + block.shape))


def last_axis_loop(fn, args: tuple):
    """``fn`` elementwise over ``args`` as a loop over the result's last axis, or None when the first-axis rule
    applies (or no loop is wanted): an operand is a LastAxisMap, or structured recording is on and the result
    has two or more axes, a short first axis and a last axis long enough for a loop."""
    if not any(isinstance(a, LastAxisMap) and a.inner.structured for a in args):
        if any(isinstance(a, LastAxisMap) for a in args) or any(type(a) is MapArray for a in args):
            return None
        shape = np.broadcast_shapes(*(shape_of(a) for a in args))
        if len(shape) < 2:
            return None
        rec = _recorder(args)
        if rec is None or rec.map_min is None or shape[0] >= rec.map_min or shape[-1] < rec.map_min:
            return None
    else:
        shape = np.broadcast_shapes(*(shape_of(a) for a in args))
        rec = next(a.inner.builder.outer for a in args if isinstance(a, LastAxisMap) and a.inner.structured)
    if not shape or shape[-1] < 2:
        return None
    moved = [_moved(a, len(shape)) for a in args]
    return _lift(tracer.SURFACE.apply_map(fn, tuple(moved), rec, (shape[-1],) + tuple(shape[:-1])))


def _recorder(args: tuple):
    """The recorder of the first traced value among the operands, or None."""
    for a in args:
        rec = a.rec if isinstance(a, Scalar) else recorder_of_array(a) if type(a) in (TracedArray, GatheredArray) \
            else None
        if rec is not None:
            return rec
    return None


tracer.install(last_axis_loop=last_axis_loop)
