"""Recording vectorised numpy as maps: arrays whose leading axis stays a loop.

While structured recording is on (``record(..., structured=...)``), an elementwise operation whose result has a
leading axis of at least ``map_min`` elements (or a short one over many elements: ``long_enough``) does not
record one instruction per element. It opens (or extends) a *builder*: a small body recorder that sees one
iteration, i.e. one block ``a[k]`` of every operand. A ``MapArray`` is an array of shape ``(n, *block)`` held as
the body's traced block; arithmetic, ufuncs, ``np.where``, reductions over the block axes and ``[:, ...]``
indexing stay inside the body, so a chain of numpy statements over the same ``n`` fuses into one body. Operands
that vary along the leading axis (traced arrays, e.g. the gathered ``p[i]``, and constant arrays) become body
inputs with one table column each; operands that do not vary are read by every iteration.

The builder is emitted as one ``structure.Map`` when the outer program needs numbers from it: a sum over the
leading axis (``np.sum``, ``np.mean``) becomes a ``sum`` output, anything else (indexing along the leading axis,
reshape, matmul, a Python truth value, returning the array) *materialises* the array: ``each`` outputs, one
outer slot per element, and from there on the scalar path handles it exactly as before. Emission closes the
builder; later use of its arrays recomputes them in a fresh copy of the body (cheap, and never wrong).
"""
from __future__ import annotations

import weakref

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from .recorder import _INPUT, Recorder
from ..ir.contraction import Product, product_rows
from ..ir.structure import Map, Out, distinct
from . import tracer
from .tracer import Scalar, TracedArray, operand_id, shape_of, to_cells, wrap
from .columns import Columns, outer_ids
from .gather import GatheredArray, node_ids_of, recorder_of_array

MAP_MIN = 64  # leading-axis length from which recording keeps an elementwise operation a loop (record(structured=None))
SHORT_MIN, WIDE_MIN = 16, 512  # ... or this long over this many elements when no axis is MAP_MIN long (a 32 x 32 grid)


def long_enough(shape: tuple, map_min: int) -> bool:
    """Whether an elementwise result of ``shape`` is a loop over its first axis: rows of a 32 x 32 field are one
    loop (the heat equation: 354,000 scalar rows and 21 s to the first gradient otherwise); a long later axis is
    left to ``axisloops``."""
    return shape[0] >= map_min or (shape[0] >= SHORT_MIN and all(d < map_min for d in shape[1:]) and
                                   int(np.prod(shape)) >= WIDE_MIN)


class Builder:
    """An open map over ``n`` iterations of the outer recorder ``outer``."""

    def __init__(self, outer: Recorder, n: int, inputs: Columns | None = None):
        self.outer = outer
        self.n = n
        self.inputs = inputs or Columns(outer, Recorder(on_branch=None, assume_finite=outer.assume_finite))
        self.body = self.inputs.body
        self.column = self.inputs.value
        self.closed = False
        self.successor: Builder | None = None

    def live(self) -> "Builder":
        """This builder, or (once emitted) the open copy its arrays continue in."""
        b = self
        while b.closed:
            if b.successor is None:
                c = b.inputs
                index = {key: list(known) for key, known in c.index.items()}
                b.successor = Builder(b.outer, b.n, Columns(b.outer, b.body.copy(), list(c.columns), index))
            b = b.successor
        return b

    def emit(self, cells: list, kinds: list) -> list[int]:
        """Emit the map with one output per ``(cell, kind)``; close the builder; the outer node of each output
        (an ``each`` output's first row: iteration k is that plus k)."""
        body_rec, outer, n = self.body, self.outer, self.n
        ids = [operand_id(body_rec, c) for c in cells]
        body = body_rec.finish(ids, (len(ids),), ((len(self.inputs.columns),),), None)
        tables = self.inputs.table(n)
        m = Map(body, tables, tuple(kinds), np.zeros((n, 0), np.int32), 0)
        first = emit_with_values(outer, m)
        self.closed = True
        if outer.open_maps.get(n) is self:
            del outer.open_maps[n]
        return [first + off for off in m.offsets()]


def emit_with_values(rec: Recorder, m: Map) -> int:
    """Emit map ``m`` into ``rec`` with its rows' values at the recorded point when every slot its tables read
    has one (guards branch on them); each distinct slot is read once, however many iterations read it."""
    from ..ir.interpret import map_rows
    if isinstance(m, Product):  # its factors, not its tables
        slots = m.read_slots()
        known = rec.values_at(slots)
        if known is not None:
            return rec.emit_map(m, product_rows(m, lambda s: known[np.searchsorted(slots, s)][None])[0].tolist())
        return rec.emit_map(m)
    slots, where = distinct(m.tables)
    known = rec.values_at(slots)
    values = None
    if known is not None:
        x = known[where] if len(slots) else np.zeros(m.tables.shape)
        values = map_rows(m, x.reshape(1, m.n, -1))[0].tolist()
    return rec.emit_map(m, values)


class MapArray(TracedArray):
    """A traced array of shape ``(n, *block)`` recorded as a loop over its leading axis (see the module doc).

    A TracedArray whose ``cells`` (what every structural numpy function and method reads) materialise it;
    elementwise operations, ``np.sum``/``np.mean`` and ``[:, ...]`` indexing stay in the loop body. Assignment
    into it materialises it for good: from then on it is an ordinary TracedArray (numpy's in-place semantics)."""

    __slots__ = ("builder", "block", "_flat", "origin", "views", "__weakref__")
    __array_priority__ = 1001

    def __init__(self, builder: Builder, block: np.ndarray, origin: tuple | None = None):
        self.builder = builder
        self.block = block  # object array of body Scalars and floats
        self._flat = None
        # a view numpy would make (a transpose, a reshape, ``a[:, k]``): ``(source, fn)`` with this array's cells
        # ``fn(source's cells)``, so that once either is written to, both are the same cells (``_settle``)
        self.origin = origin
        self.views = None  # weak references to the views made of this array
        if origin is not None:
            origin[0].views = origin[0].views or []
            origin[0].views.append(weakref.ref(self))

    @property
    def cells(self) -> np.ndarray:
        return self.materialise().cells

    @property
    def structured(self) -> bool:
        """Still a loop (not materialised by an assignment or a scalar-path operation)."""
        return self._flat is None

    shape = property(lambda self: (self.builder.n,) + self.block.shape)
    ndim = property(lambda self: 1 + self.block.ndim)
    size = property(lambda self: self.builder.n * self.block.size)

    def __repr__(self):
        return f"<traced array shape={self.shape} (a loop over its first axis)>"

    def __len__(self):
        return self.builder.n

    def _live(self) -> tuple[Builder, np.ndarray]:
        """The builder holding this array's body values: its own while open, else a copy that recomputes it."""
        b = self.builder
        if not b.closed:
            return b, self.block
        live = b.live()
        block = np.empty(self.block.shape, object)
        for e in np.ndindex(block.shape):  # the same body nodes, in the copy's recorder
            c = self.block[e]
            block[e] = Scalar(live.body, c.id) if isinstance(c, Scalar) else c
        self.builder, self.block = live, block
        return live, block

    def materialise(self) -> TracedArray:
        """The array as outer traced scalars (``each`` outputs): what the scalar path works with (a view's:
        its source's, as numpy's view of them)."""
        if self._flat is None and self.origin is not None:
            source, fn = self.origin
            self._flat = TracedArray(fn(source.materialise().cells))
            self.settle()  # (its cells are out: a plain view of them may be written, so the family must be cells)
        if self._flat is None:
            b, block = self._live()
            outer = b.outer
            cells = np.empty(self.shape, object)
            todo, where = [], []
            for e in np.ndindex(block.shape):
                c = block[e]
                if not isinstance(c, Scalar):
                    cells[(slice(None),) + e] = c
                elif c.rec.kinds[c.id] == _INPUT:  # a body input: its table column, no output needed
                    col = b.inputs.columns[c.rec.inputs.index(c.id)]
                    cells[(slice(None),) + e] = _scalars(outer, col)
                else:
                    todo.append(c)
                    where.append(e)
            if todo:
                for e, f in zip(where, b.emit(todo, [Out.EACH] * len(todo))):
                    cells[(slice(None),) + e] = _scalars(outer, np.arange(f, f + b.n))
            self._flat = TracedArray(cells)
            if self.views:
                self.settle()
        return self._flat

    def sum_leading(self):
        """The sum over the leading axis, per block element: ``sum`` outputs."""
        b, block = self._live()
        out = np.empty(block.shape, object)
        where = list(np.ndindex(block.shape))
        for e, f in zip(where, b.emit([block[e] for e in where], [Out.SUM] * len(where))):
            out[e] = Scalar(b.outer, f)
        return wrap(out)

    def __getitem__(self, idx):
        parts = idx if isinstance(idx, tuple) else (idx,)
        if self._flat is None and parts and isinstance(parts[0], slice) and parts[0] == slice(None) and \
                all(p is None or isinstance(p, (int, np.integer, slice)) for p in parts[1:]):
            parts = tuple(int(p) if isinstance(p, np.integer) else p for p in parts)
            b, block = self._live()
            return MapArray(b, np.asarray(block[parts[1:]], dtype=object), (self, lambda c: c[parts]))
        return self.materialise()[idx]

    def __setitem__(self, idx, value):
        self.settle()
        self.materialise()[idx] = value

    def settle(self) -> None:
        """Before a write: this array, its source and every view of them become cells (the views numpy's views
        of the source's cells), so the write reaches all of them."""
        root = self
        while root.origin is not None:
            root = root.origin[0]
        todo = [root]
        while todo:
            a = todo.pop()
            a.materialise()
            todo += [v for v in (r() for r in a.views or ()) if v is not None]

    def __array_function__(self, func, types, args, kwargs):
        if args and args[0] is self and self._flat is None:
            if func is np.sum or func is np.mean:
                return reduce(func, *args, **kwargs)
            if func in ROWWISE:
                done = rowwise(func, self, args[1:], kwargs)
                if done is not None:
                    return done
        done = IN_BODY[func](*args, **kwargs) if func in IN_BODY else None
        return done if done is not None else TracedArray.__array_function__(self, func, types, args, kwargs)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        done = _product(*inputs) if ufunc is np.matmul and method == "__call__" and len(inputs) == 2 else None
        return done if done is not None else TracedArray.__array_ufunc__(self, ufunc, method, *inputs, **kwargs)

    def __matmul__(self, o):
        done = _product(self, o)
        return done if done is not None else TracedArray.__matmul__(self, o)

    def __rmatmul__(self, o):
        done = _product(o, self)
        return done if done is not None else TracedArray.__rmatmul__(self, o)

    def dot(self, o, out=None):
        done = _product(self, o) if out is None and np.ndim(o) <= 2 else None
        return done if done is not None else TracedArray.dot(self, o, out)

    def sum(self, *args, **kwargs): return np.sum(self, *args, **kwargs)
    def mean(self, *args, **kwargs): return np.mean(self, *args, **kwargs)

    # structural methods as their numpy functions: what moves only block axes (or the loop axis elsewhere) stays a
    # loop (``mapstack``), the rest runs on the cells
    def reshape(self, *shape, order="C", copy=None):
        return np.reshape(self, shape[0] if len(shape) == 1 else shape, order=order, copy=copy)

    def transpose(self, *axes): return np.transpose(self, axes[0] if len(axes) == 1 else (axes or None))
    def swapaxes(self, a, b): return np.swapaxes(self, a, b)
    T = property(lambda self: np.transpose(self))


IN_BODY: dict = {}  # numpy functions on one iteration's block, filled by mapstack (None: materialise instead)
# reductions that act on each row separately when their axes exclude the first: applied to one iteration's block
ROWWISE = {np.prod, np.max, np.min, np.amax, np.amin, np.linalg.norm, np.var, np.std}


def rowwise(func, a: MapArray, rest: tuple, kwargs: dict):
    """``func(a, axis=...)`` over block axes only (the first axis untouched): inside the loop body; else None."""
    if rest or set(kwargs) - {"axis", "keepdims"} or kwargs.get("axis") is None:
        return None
    axes = normalize_axis_tuple(kwargs["axis"], a.ndim)  # (numpy's errors for axes out of range)
    if 0 in axes:
        return None
    b, block = a._live()
    shifted = tuple(x - 1 for x in axes)
    r = func(TracedArray(block), axis=shifted if len(shifted) > 1 else shifted[0],
             **({"keepdims": True} if kwargs.get("keepdims") else {}))
    return MapArray(b, r.cells if isinstance(r, TracedArray) else _cell(r))


def _product(x, y):
    """``x @ y`` inside the loop body (``mapstack.matmul``), or None."""
    return IN_BODY[np.matmul](x, y) if np.matmul in IN_BODY else None


def _scalars(rec: Recorder, ids: np.ndarray) -> list:
    return [Scalar(rec, i) for i in ids.tolist()]


def _cell(c) -> np.ndarray:
    a = np.empty((), object)
    a[()] = c
    return a


def reduce(func, a: MapArray, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
    """np.sum / np.mean of a MapArray: block axes inside the body, the leading axis as ``sum`` outputs."""
    if out is not None or kwargs or (dtype is not None and np.dtype(dtype) != np.float64):
        return func(a.materialise(), axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kwargs)
    ndim = a.ndim
    axes = tuple(range(ndim)) if axis is None else tuple(sorted(normalize_axis_tuple(axis, ndim)))
    count = float(np.prod([a.shape[i] for i in axes]))
    b, block = a._live()
    inner = tuple(i - 1 for i in axes if i > 0)
    if inner:
        summed = np.sum(TracedArray(block), axis=inner)
        block = summed.cells if isinstance(summed, TracedArray) else _cell(summed)
    result = MapArray(b, np.asarray(block, dtype=object))
    if 0 in axes:
        result = result.sum_leading()
    if func is np.mean:
        result = result / count
    if keepdims:
        shape = tuple(1 if i in axes else n for i, n in enumerate(a.shape))
        if 0 not in axes:  # still a loop over the leading axis: only the block gains its unit axes
            return MapArray(result.builder, np.asarray(result.block, dtype=object).reshape(shape[1:]))
        # reduced over the loop: whatever the sum is now (a number, scalars, or a loop of another length)
        return np.reshape(result, shape) if isinstance(result, TracedArray) else wrap(
            np.reshape(to_cells(result), shape))
    return result


def operand_block(a, b: Builder, shape: tuple) -> np.ndarray:
    """Operand ``a`` of an elementwise operation with result ``shape`` (leading axis b.n), as one iteration's
    block of body values, broadcast to ``shape[1:]``."""
    block_shape = shape[1:]
    if isinstance(a, MapArray) and a._flat is None and a.builder is b and a.ndim == len(shape):
        return np.broadcast_to(a.block, block_shape)
    if isinstance(a, Scalar):
        return np.broadcast_to(_cell(b.column(np.full(b.n, operand_id(b.outer, a)))), block_shape)
    if isinstance(a, (int, float, np.integer, np.floating)):
        return np.broadcast_to(_cell(float(a)), block_shape)
    ids = node_ids_of(a) if type(a) is GatheredArray and a.rec is b.outer and a.ndim == len(shape) and \
        a.shape[0] == b.n else None
    if ids is not None:  # rows gathered as node ids: the table columns as they are
        return _columns(b, ids, block_shape)
    cells = np.asarray(to_cells(a))
    if cells.dtype != object:
        cells = cells.astype(np.float64)
    if cells.ndim < len(shape) or cells.shape[0] == 1:  # the same for every iteration
        row = cells if cells.ndim < len(shape) else cells.reshape(cells.shape[1:])
        out = np.empty(row.shape, object)
        for e in np.ndindex(row.shape):
            c = row[e]
            out[e] = b.column(np.full(b.n, operand_id(b.outer, c))) if isinstance(c, Scalar) else float(c)
        return np.broadcast_to(out, block_shape)
    return _columns(b, outer_ids(b.outer, cells), block_shape)


def _columns(b: Builder, ids: np.ndarray, block_shape: tuple) -> np.ndarray:
    """One body value per column of outer node ids ``(n, *block)``, broadcast to ``block_shape``."""
    out = np.empty(ids.shape[1:], object)
    for e in np.ndindex(out.shape):
        out[e] = b.column(ids[(slice(None),) + e])  # (a view: the column is copied once, into the table)
    return np.broadcast_to(out, block_shape)


def apply(fn, args: tuple, rec: Recorder, shape: tuple) -> MapArray:
    """``fn`` elementwise over ``args`` (result ``shape``, leading axis a loop) inside the open builder."""
    # the builder of an operand that is a loop over the same axis (a continued copy is not in open_maps), else the
    # open one for this length, else a new one; a loop whose builder was emitted (a sum over it closed it)
    # continues in the copy that recomputes it, rather than materialising
    for a in args:
        if type(a) is MapArray and a._flat is None and a.builder.closed and a.ndim == len(shape):
            a._live()
    b = next((a.builder for a in args if type(a) is MapArray and a._flat is None and not a.builder.closed and
              a.ndim == len(shape)), None) or rec.open_maps.get(shape[0])
    if b is None:
        b = Builder(rec, shape[0])
    rec.open_maps[shape[0]] = b
    blocks = [operand_block(a, b, shape) for a in args]
    if len(shape) == 1:
        return MapArray(b, _cell(fn(*(blk[()] for blk in blocks))))
    return MapArray(b, np.asarray(np.frompyfunc(fn, len(blocks), 1)(*blocks), dtype=object).reshape(shape[1:]))


def map_recorder(args: tuple):
    """``(recorder, result shape)`` when an elementwise operation over ``args`` records as a loop, else None: an
    operand is a loop already, or structured recording is on and the result's leading axis is long enough."""
    rec = None
    for a in args:
        if type(a) is MapArray and a._flat is None:
            rec = a.builder.outer
            break
    if rec is None:
        for a in args:  # (a MapArray materialised by an assignment is an ordinary traced array now)
            if isinstance(a, TracedArray) and (type(a) is not MapArray or a._flat is not None):
                rec = recorder_of_array(a)
                if rec is not None:
                    break
        if rec is None or rec.map_min is None:
            return None
    shape = np.broadcast_shapes(*(shape_of(a) for a in args))
    if not shape or (rec.map_min is not None and not long_enough(shape, rec.map_min) and
                     not any(type(a) is MapArray and a._flat is None for a in args)):
        return None
    return rec, shape


from .mapfuse import fuse  # noqa: E402,F401  (recording's last step; kept here for its callers)

tracer.install(apply_map=apply, map_recorder=map_recorder)
