"""Traced values: what the user's function receives while it is recorded.

``Scalar`` is one traced float (a recorder node). ``TracedArray`` is an array of them, kept as a numpy object
array of Scalars and plain floats, so numpy's own indexing, views, assignment, stacking and linear algebra
work unchanged; ufuncs and value-dependent functions are routed through the op table here. Anything a tape
cannot represent raises a TracingError that says what to write instead.
"""
from __future__ import annotations

import linecache
import os
import sys

import numpy as np

from .dtypes import ScalarDtype
from ..table import ops
from ..errors import TracingError
from .surface import SURFACE, install  # noqa: F401  (implementers register through tracer.install)
from .recorder import _CONST, Recorder


def _where_called() -> str:
    """file:line of the user code that triggered the current operation."""
    frame = sys._getframe(1)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # every tapead module
    while frame is not None and (frame.f_code.co_filename.startswith(here)
                                 or f"{os.sep}numpy{os.sep}" in frame.f_code.co_filename):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "?"


def _where_called_with_source() -> str:
    """file:line of the user's code, with that line's text."""
    where = _where_called()
    path, _, line = where.rpartition(":")
    text = linecache.getline(path, int(line)).strip() if line.isdigit() else ""
    return f"{where} (`{text}`)" if text else where


def as_float(a) -> float:
    """A constant operand as a float, or a TracingError naming what it is."""
    if isinstance(a, (float, int, np.floating, np.integer, np.bool_)):
        return float(a)
    if isinstance(a, np.ndarray) and a.ndim == 0 and a.dtype.kind in "fiub":
        return float(a)
    raise TracingError(f"cannot combine a traced value with {type(a).__name__} {a!r}")


class Scalar:
    """One traced float64. Supports arithmetic, comparisons, numpy ufuncs and numpy functions."""

    __slots__ = ("rec", "id")
    __array_priority__ = 1000
    shape = ()
    ndim = 0
    size = 1
    dtype = ScalarDtype()  # float64, except that dtype.type(v) keeps a traced v traced

    def __init__(self, rec: Recorder, nid: int):
        self.rec = rec
        self.id = nid

    @property
    def value(self) -> float | None:
        """The concrete value at the recording point (None inside transforms)."""
        return self.rec.values[self.id]

    def _emit(self, op, args):
        rec = self.rec
        if len(args) == 2:
            a, b = args
            ids = (a.id if type(a) is Scalar and a.rec is rec else operand_id(rec, a),
                   b.id if type(b) is Scalar and b.rec is rec else operand_id(rec, b))
        else:
            ids = tuple([operand_id(rec, a) for a in args])
        nid = rec.emit(op, ids)
        if rec.kinds[nid] == _CONST:  # an identity answered with a constant
            return rec.values[nid]
        return Scalar(rec, nid)

    def __repr__(self):
        v = self.value
        return f"<traced %{self.id}" + (f" = {v!r}>" if v is not None else ">")

    # ---- errors that explain ---------------------------------------------------------------------
    def __bool__(self):
        return self.rec.guard(self.id, _where_called())

    def __float__(self):
        raise TracingError(f"a traced value was turned into a float at {_where_called_with_source()}: either float() "
                           "or a math-module function (math.sin, ...) was applied to it (use np.sin, ... and keep it "
                           "traced), or it was stored into a float numpy array (np.zeros(n), np.empty(n), "
                           "np.array([...]) of floats), which cannot hold traced values. Build that array from the "
                           "traced input instead: np.zeros_like(x) or np.zeros_like(x, shape=(n,)), or collect the "
                           "values in a list and np.stack(...) them.")

    def __int__(self):
        raise TracingError("int() of a traced value: a tape cannot turn a traced float into a Python integer. "
                           "Integers that steer indexing must be fixed at record time (pass them as closure "
                           "constants, not as inputs or params).")

    __index__ = __int__
    __complex__ = __float__

    def __hash__(self):
        raise TracingError("traced values are not hashable (they cannot be dict keys or set members)")

    def __iter__(self):
        raise TracingError("a traced scalar is not iterable")

    def __len__(self):
        raise TypeError("len() of a traced scalar")

    # ---- arithmetic --------------------------------------------------------------------------------
    # a Scalar or number operand needs no broadcasting: straight to the op (as calling the row would)
    def __add__(self, o): return self._emit(ops.add, (self, o)) if type(o) in _PLAIN else _binary(ops.add, self, o)
    def __radd__(self, o): return self._emit(ops.add, (o, self)) if type(o) in _PLAIN else _binary(ops.add, o, self)
    def __sub__(self, o): return self._emit(ops.sub, (self, o)) if type(o) in _PLAIN else _binary(ops.sub, self, o)
    def __rsub__(self, o): return self._emit(ops.sub, (o, self)) if type(o) in _PLAIN else _binary(ops.sub, o, self)
    def __mul__(self, o): return self._emit(ops.mul, (self, o)) if type(o) in _PLAIN else _binary(ops.mul, self, o)
    def __rmul__(self, o): return self._emit(ops.mul, (o, self)) if type(o) in _PLAIN else _binary(ops.mul, o, self)
    def __truediv__(self, o):
        return self._emit(ops.div, (self, o)) if type(o) in _PLAIN else _binary(ops.div, self, o)

    def __rtruediv__(self, o):
        return self._emit(ops.div, (o, self)) if type(o) in _PLAIN else _binary(ops.div, o, self)

    def __pow__(self, o): return _binary(power, self, o)
    def __rpow__(self, o): return _binary(power, o, self)
    def __lt__(self, o): return _binary(ops.lt, self, o)
    def __le__(self, o): return _binary(ops.le, self, o)
    def __gt__(self, o): return _binary(ops.gt, self, o)
    def __ge__(self, o): return _binary(ops.ge, self, o)
    def __eq__(self, o): return _binary(ops.eq, self, o)
    def __ne__(self, o): return _binary(ops.ne, self, o)
    def __neg__(self): return ops.neg(self)
    def __pos__(self): return self
    def __abs__(self): return ops.absolute(self)
    def __and__(self, o): return _binary(logical_and, self, o)
    def __rand__(self, o): return _binary(logical_and, o, self)
    def __or__(self, o): return _binary(logical_or, self, o)
    def __ror__(self, o): return _binary(logical_or, o, self)
    def __invert__(self): return logical_not(self)

    def __floordiv__(self, o): return _binary(ops.floor_divide, self, o)
    def __rfloordiv__(self, o): return _binary(ops.floor_divide, o, self)
    def __mod__(self, o): return _binary(ops.remainder, self, o)
    def __rmod__(self, o): return _binary(ops.remainder, o, self)
    def __divmod__(self, o): return self // o, self % o
    def __rdivmod__(self, o): return o // self, o % self
    def astype(self, dtype, *args, **kwargs): return SURFACE.cast(self, dtype)

    # numpy applies these by name when a ufunc runs over an object array holding Scalars
    def sin(self): return ops.sin(self)
    def cos(self): return ops.cos(self)
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def tanh(self): return ops.tanh(self)
    def conjugate(self): return self

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return SURFACE.array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return SURFACE.array_function(func, args, kwargs)

    def item(self):
        return self


def operand_id(rec: Recorder, a) -> int:
    """The node id of an operand of an op recorded in ``rec``: a tracer's own, or a constant's."""
    if isinstance(a, Scalar):
        if a.rec is not rec:
            raise TracingError("a traced value from another recording was used here; record one "
                               "function at a time and do not keep traced values between recordings")
        return a.id
    return rec.const(a if type(a) is float else as_float(a))


_PLAIN = frozenset({Scalar, float, int})  # operand types that never broadcast


def logical_and(a, b): return ops.mul(ops.ne(a, 0.0), ops.ne(b, 0.0))
def logical_or(a, b): return ops.ne(ops.add(ops.ne(a, 0.0), ops.ne(b, 0.0)), 0.0)
def logical_not(a): return ops.eq(a, 0.0)


def _binary(fn, a, b):
    if isinstance(a, (TracedArray, np.ndarray, list, tuple)) or isinstance(b, (TracedArray, np.ndarray, list,
                                                                                 tuple)):
        return elementwise(fn, a, b)
    return fn(a, b)


power = ops.power.surface  # x ** y: small integer powers become multiplications (the pow row says how)


# ---- arrays -----------------------------------------------------------------------------------------
def to_cells(a):
    """Any operand as something numpy object arithmetic understands (object array, float array or number)."""
    if isinstance(a, TracedArray):
        return a.cells
    if isinstance(a, Scalar):
        c = np.empty((), object)
        c[()] = a
        return c
    if isinstance(a, (list, tuple)):
        items = [to_cells(x) for x in a]
        if any(isinstance(x, np.ndarray) and x.dtype == object for x in items):
            return np.stack([np.asarray(x, dtype=object) for x in items])
        return np.asarray(items)
    if isinstance(a, np.ndarray) and a.dtype.kind == "b":
        return a.astype(np.float64)
    return a


def recorder_of(cells):
    """The recorder of the first traced scalar in an object array of cells, or None."""
    if isinstance(cells, np.ndarray) and cells.dtype == object:
        for c in cells.flat:
            if type(c) is Scalar:
                return c.rec
    return None


def shape_of(a) -> tuple:
    """The shape an operand broadcasts with: arrays' own, nested lists' numpy shape, scalars ()."""
    if isinstance(a, (TracedArray, np.ndarray)):
        return a.shape
    return np.shape(to_cells(a)) if isinstance(a, (list, tuple)) else ()


def wrap(r):
    """Back from numpy: 0-d -> Scalar or float, object arrays -> TracedArray, tuples elementwise."""
    if isinstance(r, tuple):
        return tuple(wrap(x) for x in r)
    if isinstance(r, list):
        return [wrap(x) for x in r]
    if isinstance(r, np.ndarray):
        if r.ndim == 0:
            return wrap(r[()])
        return TracedArray(r) if r.dtype == object else r
    if isinstance(r, (np.floating, np.integer)):
        return float(r)
    return r


def elementwise(fn, *args):
    done = SURFACE.axis_loop(fn, args)  # a loop over a later axis (the (3, n) layout), else None
    if done is not None:
        return done
    loop = SURFACE.map_recorder(args)
    if loop is not None:
        return SURFACE.apply_map(fn, args, *loop)
    cells = [to_cells(a) for a in args]
    if all(not isinstance(c, np.ndarray) or c.ndim == 0 for c in cells):
        return wrap(fn(*(c[()] if isinstance(c, np.ndarray) else c for c in cells)))
    return wrap(np.frompyfunc(fn, len(cells), 1)(*cells))


class TracedArray:
    """An array of traced floats with numpy semantics (views, assignment, broadcasting)."""

    __slots__ = ("cells",)
    __array_priority__ = 1000
    dtype = np.dtype(np.float64)

    def __init__(self, cells: np.ndarray):
        self.cells = cells

    shape = property(lambda self: self.cells.shape)
    ndim = property(lambda self: self.cells.ndim)
    size = property(lambda self: self.cells.size)
    T = property(lambda self: TracedArray(self.cells.T))

    def __repr__(self): return f"<traced array shape={self.shape}>"
    def __len__(self): return len(self.cells)

    def __iter__(self):
        return (wrap(c) for c in self.cells)

    def __getitem__(self, idx):
        idx = _index(idx)  # many rows picked by an index array while recording loops: node ids (``gather``)
        done = SURFACE.gather(self, idx) if type(idx) is np.ndarray and idx.size >= 64 else None
        return wrap(self.cells[idx]) if done is None else done

    def __setitem__(self, idx, value):
        cells = to_cells(value)
        if isinstance(cells, np.ndarray) and cells.ndim == 0:
            cells = cells[()]  # one element: numpy would store a 0-d array as the object itself
        self.cells[_index(idx)] = cells

    def __bool__(self):
        if self.size != 1:
            raise TracingError("the truth value of a traced array with more than one element is ambiguous")
        return bool(self.cells.flat[0])

    def __float__(self):
        raise TracingError("float() of a traced array; keep values traced and use numpy functions instead")

    __int__ = __index__ = __complex__ = __float__

    def __hash__(self):
        raise TracingError("traced arrays are not hashable")

    for _name, _fn in [("add", ops.add), ("sub", ops.sub), ("mul", ops.mul), ("truediv", ops.div),
                       ("pow", power)]:
        locals()[f"__{_name}__"] = (lambda fn: lambda self, o: elementwise(fn, self, o))(_fn)
        locals()[f"__r{_name}__"] = (lambda fn: lambda self, o: elementwise(fn, o, self))(_fn)
        locals()[f"__i{_name}__"] = (lambda fn: lambda self, o: self._inplace(fn, o))(_fn)
    for _name, _fn in [("lt", ops.lt), ("le", ops.le), ("gt", ops.gt), ("ge", ops.ge), ("eq", ops.eq),
                       ("ne", ops.ne)]:
        locals()[f"__{_name}__"] = (lambda fn: lambda self, o: elementwise(fn, self, o))(_fn)
    del _name, _fn

    def _inplace(self, fn, o):
        self[...] = elementwise(fn, self, o)
        return self

    def __neg__(self): return elementwise(ops.neg, self)
    def __pos__(self): return self
    def __abs__(self): return elementwise(ops.absolute, self)
    def __and__(self, o): return elementwise(logical_and, self, o)
    def __rand__(self, o): return elementwise(logical_and, o, self)
    def __or__(self, o): return elementwise(logical_or, self, o)
    def __ror__(self, o): return elementwise(logical_or, o, self)
    def __invert__(self): return elementwise(logical_not, self)
    def __matmul__(self, o): return _product(self, o, np.matmul)
    def __rmatmul__(self, o): return _product(o, self, np.matmul)
    def __floordiv__(self, o): return elementwise(ops.floor_divide, self, o)
    def __rfloordiv__(self, o): return elementwise(ops.floor_divide, o, self)
    def __mod__(self, o): return elementwise(ops.remainder, self, o)
    def __rmod__(self, o): return elementwise(ops.remainder, o, self)
    def __divmod__(self, o): return self // o, self % o
    def __rdivmod__(self, o): return o // self, o % self

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return SURFACE.array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return SURFACE.array_function(func, args, kwargs)

    # ---- the ndarray methods people call, with numpy's signatures (they run the numpy function) ---------
    def reshape(self, *shape, order="C"):
        return TracedArray(self.cells.reshape(*shape, order=order))

    def ravel(self, order="C"): return TracedArray(self.cells.ravel(order))
    def flatten(self, order="C"): return TracedArray(self.cells.flatten(order))
    def transpose(self, *axes): return TracedArray(self.cells.transpose(*axes))
    def swapaxes(self, a, b): return TracedArray(self.cells.swapaxes(a, b))
    def copy(self, order="C"): return TracedArray(self.cells.copy(order))
    def squeeze(self, axis=None): return TracedArray(self.cells.squeeze(axis))
    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True): return SURFACE.cast(self, dtype)
    def sum(self, *args, **kwargs): return np.sum(self, *args, **kwargs)
    def prod(self, *args, **kwargs): return np.prod(self, *args, **kwargs)
    def mean(self, *args, **kwargs): return np.mean(self, *args, **kwargs)
    def var(self, *args, **kwargs): return np.var(self, *args, **kwargs)
    def std(self, *args, **kwargs): return np.std(self, *args, **kwargs)
    def cumsum(self, *args, **kwargs): return np.cumsum(self, *args, **kwargs)
    def cumprod(self, *args, **kwargs): return np.cumprod(self, *args, **kwargs)
    def max(self, *args, **kwargs): return np.max(self, *args, **kwargs)
    def min(self, *args, **kwargs): return np.min(self, *args, **kwargs)
    def any(self, *args, **kwargs): return np.any(self, *args, **kwargs)
    def all(self, *args, **kwargs): return np.all(self, *args, **kwargs)
    def clip(self, *args, **kwargs): return np.clip(self, *args, **kwargs)
    def round(self, *args, **kwargs): return np.round(self, *args, **kwargs)
    def trace(self, *args, **kwargs): return np.trace(self, *args, **kwargs)
    def diagonal(self, *args, **kwargs): return np.diagonal(self, *args, **kwargs)
    def dot(self, o, out=None):
        if out is not None:
            raise TracingError("x.dot(y, out=...) on traced values: assign the result instead")
        return _product(self, o, np.dot)
    def tolist(self): return [wrap(c) for c in self.cells.tolist()]


def _product(x, y, numpy_product):
    """``x @ y`` or ``x.dot(y)``: a loop where one applies (``einsum.product``), else on the cells."""
    done = SURFACE.contract(x, y, numpy_product)
    return done if done is not None else wrap(numpy_product(to_cells(x), to_cells(y)))


def _index(idx):
    """Indices must be fixed at record time."""
    parts = idx if isinstance(idx, tuple) else (idx,)
    for p in parts:
        if isinstance(p, list) or (isinstance(p, np.ndarray) and p.dtype == object):  # (int arrays: constant)
            p = next((q for q in np.asarray(p, dtype=object).flat if isinstance(q, (Scalar, TracedArray))), p)
        if isinstance(p, (Scalar, TracedArray)):
            raise TracingError("indexing with a traced value (or a mask computed from traced values): the "
                               "indices of a tape are fixed when it is recorded. Select values branch-free "
                               "with np.where(mask, a, b) instead.")
    return idx


# ---- the numpy surface, installed by the modules that implement it ---------------------------------------
