"""Stacking and small linear algebra of loop arrays, inside the loop body.

Finite-element code builds per-element matrices from loop arrays and works on them: ``Ds = np.stack([xb - xa,
xc - xa], -1)``, ``F = Ds @ Dinv`` (``Dinv`` a stacked constant, one matrix per element), ``np.linalg.det(F)``.
Each of these acts on one iteration's block at a time, so it records once, in the body: ``np.stack`` and
``np.concatenate`` along a block axis stack the blocks (``np.stack`` in front of the loop axis too: the loop is then
over the result's second axis, an ``axisloops.AxisMap``); a stacked ``@`` multiplies the blocks (a per-iteration
constant operand becomes body inputs reading the tape's constants, which the kernel reads as data); ``det`` and
``inv`` of blocks up to 3x3 are their closed forms (they choose nothing, so the body holds no guard); transposes,
``swapaxes``, reshapes that keep the loop axis, ``trace`` and ``diagonal`` over block axes, ``np.cross`` of two
loops' vectors act on the block
(``C = F.transpose(0, 2, 1) @ F``, ``np.trace(C, axis1=1, axis2=2)``). Anything else returns None and the caller
materialises, as before.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from . import axisloops, maparray
from .maparray import MapArray, operand_block
from .tracer import TracedArray, shape_of, to_cells


def _loop(arrays):
    """The open builder the structured loop arrays among ``arrays`` share (continuing emitted ones), or None."""
    loops = [a for a in arrays if type(a) is MapArray and a.structured]
    if not loops:
        return None
    for a in loops:
        a._live()
    b = loops[0].builder
    if any(a.builder is not b for a in loops):
        return None
    return b


def _blocks(arrays, b):
    """One iteration's block of each operand (an operand must run along the loop: first axis ``b.n``)."""
    out = []
    for a in arrays:
        shape = shape_of(a)
        if not shape or shape[0] != b.n:
            return None
        out.append(np.asarray(operand_block(a, b, shape), dtype=object))
    return out


def _result(b, r) -> MapArray:
    cells = r.cells if isinstance(r, TracedArray) else np.asarray(to_cells(r), dtype=object)
    return MapArray(b, np.asarray(cells, dtype=object))


def stack(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    arrays = list(arrays)
    if out is not None or dtype is not None or not arrays:
        return None
    b = _loop(arrays)
    if b is None or len({shape_of(a) for a in arrays}) != 1:
        return None
    ndim = len(shape_of(arrays[0])) + 1
    axis = _axes(axis, ndim)
    blocks = None if axis is None else _blocks(arrays, b)
    if blocks is None:
        return None
    axis = axis[0]
    if axis == 0:  # in front of the loop axis: the same loop, now over the result's second axis
        return axisloops.AxisMap(MapArray(b, np.stack(blocks, axis=0)), ndim - 2)
    return MapArray(b, np.stack(blocks, axis=axis - 1))


def concatenate(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    arrays = list(arrays)
    if out is not None or dtype is not None or not arrays or axis is None:
        return None
    b = _loop(arrays)
    if b is None:
        return None
    ndim = len(shape_of(arrays[0]))
    axis = _axes(axis, ndim)
    if axis is None or axis[0] == 0 or any(len(shape_of(a)) != ndim for a in arrays):
        return None
    axis = axis[0]
    blocks = _blocks(arrays, b)
    return None if blocks is None else MapArray(b, np.concatenate(blocks, axis=axis - 1))


def matmul(x, y):
    """``x @ y`` with a loop among the operands: times one shared constant matrix or vector (each row times it),
    or a stacked product where both operands run along the loop (``(n, k, m) @ (n, m, p)``, a loop times a
    per-iteration constant)."""
    done = times_constant(x, y)
    if done is not None:
        return done
    if len(shape_of(x)) < 3 or len(shape_of(x)) != len(shape_of(y)):  # the loop axis must be a batch axis of both
        return None
    b = _loop((x, y))
    if b is None:
        return None
    blocks = _blocks((x, y), b)
    if blocks is None:
        return None
    return _result(b, np.matmul(TracedArray(blocks[0]), TracedArray(blocks[1])))


def times_constant(a, w):
    """``a @ w`` / ``np.dot(a, w)`` of a loop array (2-D or more) and a constant matrix or vector: each row times
    ``w``, inside the loop body; else None."""
    if type(a) is not MapArray or a._flat is not None or a.ndim < 2 or isinstance(w, TracedArray) or \
            not isinstance(w, np.ndarray) or w.dtype.kind not in "fiu" or w.ndim not in (1, 2):
        return None
    b, block = a._live()
    r = np.dot(TracedArray(block), np.asarray(w, dtype=np.float64))
    return MapArray(b, r.cells if isinstance(r, TracedArray) else np.asarray(to_cells(r), dtype=object))


def _small_square(a) -> bool:
    s = shape_of(a)
    return len(s) == 3 and s[1] == s[2] and 1 <= s[1] <= 3


def _small_linalg(func):
    """``func`` (``np.linalg.det``/``inv``) of (n, k, k) loops with k <= 3, on each block: their closed forms
    choose nothing, so the body holds no guard."""
    def in_body(a):
        b = _loop((a,)) if _small_square(a) else None
        blocks = None if b is None else _blocks((a,), b)
        return None if blocks is None else _result(b, func(TracedArray(blocks[0])))
    in_body.__name__ = func.__name__
    return in_body


det, inv = _small_linalg(np.linalg.det), _small_linalg(np.linalg.inv)


def dot(a, b, out=None):
    """``np.dot`` of a loop and one shared constant matrix or vector (np.dot of stacks is not a stacked product)."""
    return times_constant(a, b) if out is None else None


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """``np.cross`` of two loops along their last (block) axis (triangle normals, dihedral angles): on each
    iteration's vectors; any other axis choice materialises."""
    if (axisa, axisb, axisc, axis) != (-1, -1, -1, None):
        return None
    loop = _loop((a, b))
    sa, sb = shape_of(a), shape_of(b)
    if loop is None or len(sa) < 2 or len(sa) != len(sb) or sa[-1] != 3 or sb[-1] != 3:
        return None  # (3-vectors of equal ranks only: numpy's broadcasting and its 2-vector forms on the cells)
    blocks = _blocks((a, b), loop)
    return None if blocks is None else _result(loop, np.cross(TracedArray(blocks[0]), TracedArray(blocks[1])))


def _structured(a) -> bool:
    return type(a) is MapArray and a.structured


def _axes(axes, nd: int) -> list | None:
    """Axes as numpy reads them (negative from the end), or None for any numpy would refuse (then the cells'
    numpy call raises its own error)."""
    try:
        return list(normalize_axis_tuple(tuple(int(x) for x in np.atleast_1d(axes)), nd, allow_duplicate=True))
    except (TypeError, ValueError):
        return None


def transpose(a, axes=None):
    """Axes moved: the block's own axes in the body; the loop axis moved elsewhere is a loop over that axis
    (``axisloops.AxisMap``: ``F.T`` of a (n, 3) loop is a (3, n) one). A view of ``a``, as numpy's."""
    if not _structured(a):
        return None
    nd = a.ndim
    axes = list(range(nd))[::-1] if axes is None else _axes(axes, nd)
    if axes is None or sorted(axes) != list(range(nd)):
        return None
    b, block = a._live()
    at = axes.index(0)
    inner = MapArray(b, np.asarray(block, dtype=object).transpose([x - 1 for x in axes if x != 0]),
                     (a, lambda c: np.moveaxis(c.transpose(axes), at, 0)))
    return inner if at == 0 else axisloops.AxisMap(inner, nd - 1 - at)


def swapaxes(a, axis1, axis2):
    if not _structured(a):
        return None
    ij = _axes((axis1, axis2), a.ndim)
    if ij is None:
        return None
    perm = list(range(a.ndim))
    perm[ij[0]], perm[ij[1]] = perm[ij[1]], perm[ij[0]]
    return transpose(a, perm)


def reshape(a, shape=None, order="C", *, newshape=None, copy=None):
    """A reshape that keeps the loop axis (``(n, 9) -> (n, 3, 3)``): the block reshaped in the body (a view of
    ``a`` unless ``copy=True``)."""
    shape = newshape if shape is None else shape
    if not _structured(a) or order != "C" or shape is None:
        return None
    shape = tuple(int(d) for d in np.atleast_1d(shape))
    n, size = a.shape[0], a.block.size
    if not shape or shape[0] not in (n, -1) or (shape[0] == -1 and (any(d < 0 for d in shape[1:]) or
                                                                     int(np.prod(shape[1:])) != size)):
        return None
    rest = shape[1:]
    if rest.count(-1) > 1 or (-1 not in rest and int(np.prod(rest)) != size):
        return None
    b, block = a._live()
    whole = (n,) + tuple(block.reshape(rest).shape)
    return MapArray(b, np.asarray(block, dtype=object).reshape(rest),
                    None if copy else (a, lambda c: c.reshape(whole)))


def _block_axes(func):
    """``func`` (``np.trace``/``np.diagonal``) over two block axes, on each block; else None."""
    def in_body(a, offset=0, axis1=0, axis2=1, *rest, **kwargs):
        if not _structured(a) or rest or any(v is not None for v in kwargs.values()):
            return None
        ij = _axes((axis1, axis2), a.ndim)
        if ij is None or 0 in ij or ij[0] == ij[1]:
            return None
        i, j = ij
        b, block = a._live()
        r = func(TracedArray(np.asarray(block, dtype=object)), offset, i - 1, j - 1)
        view = (a, lambda c: np.diagonal(c, offset, i, j)) if func is np.diagonal else None  # (numpy's: a view)
        return MapArray(b, r.cells if isinstance(r, TracedArray) else np.asarray(to_cells(r)), view)
    in_body.__name__ = func.__name__
    return in_body


maparray.IN_BODY.update({np.stack: stack, np.concatenate: concatenate, np.matmul: matmul, np.dot: dot,
                         np.linalg.det: det, np.linalg.inv: inv, np.transpose: transpose, np.swapaxes: swapaxes,
                         np.reshape: reshape, np.trace: _block_axes(np.trace),
                         np.diagonal: _block_axes(np.diagonal), np.cross: cross})
