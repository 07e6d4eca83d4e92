"""The numpy surface on traced values: which ufuncs and numpy functions record, and how.

Structural and linear functions (reshape, stack, dot, einsum, cumsum, ...) run numpy itself on object arrays
of traced scalars; value-dependent ones (where, maximum, clip, norm, det, ...) are written here with ops.
Anything not listed raises a TracingError that names the function.
"""
from __future__ import annotations

import inspect

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from . import elementwise as ew
from . import linalg as _linalg, linalg_jacobi as _jacobi, maparray, numpy_more as _more  # noqa: F401
from . import numpy_stats as _stats
from . import axisloops, mapstack  # noqa: F401  (install loops over later axes, stacking in loop bodies)
from . import contract as _contract, einsum as _einsum
from . import special as _special
from ..table import ops, ops_extra  # noqa: F401  (every row registered before the tables below read them)
from . import tracer
from .elementwise import where  # noqa: F401  (tapead.where)
from ..errors import TracingError
from .elementwise import reduce_along as _reduce
from .tracer import Scalar, TracedArray, elementwise, shape_of, to_cells, wrap


def _square(x): return x * x
def _reciprocal(x): return 1.0 / x
from .tracer import logical_and as _logical_and, logical_not as _logical_not, logical_or as _logical_or  # noqa


# the ufuncs that are rows of the op table, by the names the table gives (numpy dispatch finds a ufunc by name,
# scipy.special's too), then the ufuncs written with rows
UFUNCS = {name: row.surface or row for row in ops.BY_CODE for name in (row.spelling, *row.aliases) if name}
UFUNCS.update({
    "positive": lambda x: x, "square": _square, "reciprocal": _reciprocal, "conjugate": lambda x: x,
    "logical_and": _logical_and, "logical_or": _logical_or, "logical_not": _logical_not,
    "bitwise_and": _logical_and, "bitwise_or": _logical_or, "invert": _logical_not, **ew.UFUNCS, **_special.UFUNCS,
})
_REDUCIBLE = {row.spelling for row in ops.OPS.values() if row.associative}  # the ufuncs whose reduce records
_UFUNC_KEYWORDS = {"__call__": {"out", "dtype", "casting"}, "reduce": {"out", "dtype", "axis", "keepdims"},
                   "accumulate": {"out", "dtype", "axis"}, "outer": {"out", "dtype", "casting"}}


def array_ufunc(ufunc, method, inputs, kwargs):
    """numpy (and scipy.special) ufuncs on traced values, found by the ufunc's name."""
    name = ufunc.__name__
    if kwargs.get("out") is not None:
        raise TracingError(f"np.{name}(..., out=...) on traced values: assign the result instead "
                           f"(y[...] = np.{name}(...))")
    if kwargs.get("dtype") not in ew._FLOAT64:
        raise TracingError(f"np.{name}(..., dtype={kwargs['dtype']!r}) on traced values: tapes compute in float64; "
                           "cast the result with .astype(...) instead")
    extra = set(kwargs) - _UFUNC_KEYWORDS.get(method, set())
    if extra:
        raise TracingError(f"np.{name}.{method}: keyword arguments {sorted(extra)} are not supported on traced "
                           "values")
    if name == "matmul" and method == "__call__":
        done = _einsum.product(*inputs) if len(inputs) == 2 else None
        return done if done is not None else wrap(np.matmul(*(to_cells(a) for a in inputs)))
    if name == "add" and method == "at":
        return _stats.add_at(*inputs)
    if name == "divmod" and method == "__call__":
        return ew.divmod_(*inputs)
    fn = UFUNCS.get(name)
    if fn is None:
        raise TracingError(f"np.{name} is not supported on traced values. Supported ufuncs: "
                           + ", ".join(sorted(UFUNCS)))
    if method == "__call__":
        return elementwise(fn, *inputs)
    if method == "reduce" and name in _REDUCIBLE:
        return _reduce(fn, inputs[0], kwargs.get("axis", 0), kwargs.get("keepdims", False))
    if method == "accumulate" and name in ("add", "multiply"):
        return wrap(getattr(np, name).accumulate(np.asarray(to_cells(inputs[0]), dtype=object),
                                                 axis=kwargs.get("axis", 0)))
    if method == "outer":
        a, b = (np.asarray(to_cells(x), dtype=object) for x in inputs)
        return elementwise(fn, a.reshape(a.shape + (1,) * b.ndim), b)
    raise TracingError(f"np.{name}.{method} is not supported on traced values")


def clip(a, a_min, a_max, out=None, **kwargs):
    """``minimum(maximum(a, a_min), a_max)``: ties send the derivative to ``a``."""
    if out is not None:
        raise TracingError("np.clip(..., out=...) on traced values: assign the result instead")
    if a_min is not None:
        a = elementwise(ops.maximum, a, a_min)
    if a_max is not None:
        a = elementwise(ops.minimum, a, a_max)
    return a


def _like(fill):
    def like(a, dtype=None, order="K", subok=True, shape=None, **kwargs):
        s = np.shape(to_cells(a)) if shape is None else shape
        return TracedArray(np.full(s, fill, dtype=object))
    return like


def _full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None):
    s = np.shape(to_cells(a)) if shape is None else shape
    cells = np.empty(s, object)
    cells[...] = to_cells(fill_value)
    return TracedArray(cells)


def _extreme(fn, name):
    """np.max/np.min (NaN propagates; ties send the derivative to the first element); axis may be a tuple."""
    def extreme(a, axis=None, out=None, keepdims=False, **kwargs):
        if out is not None or kwargs:
            raise TracingError(f"np.{name} on traced values supports axis= and keepdims= only, got "
                               f"{sorted(kwargs) + (['out'] if out is not None else [])}")
        return _reduce(fn, a, axis, keepdims)
    return extreme


def mean(a, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
    """np.mean: the sum over ``axis`` divided by the number of elements summed (numpy's own mean would turn a
    traced scalar result into a float)."""
    if out is not None or kwargs or dtype not in ew._FLOAT64:
        raise TracingError("np.mean on traced values supports axis=, keepdims= and a float64 dtype only")
    cells = np.asarray(to_cells(a), dtype=object)
    counts = np.sum(np.ones(cells.shape), axis=axis, keepdims=keepdims)
    return wrap(np.sum(cells, axis=axis, keepdims=keepdims) / counts)


def _truth_reduce(nonzero: bool):
    def reduce(a, axis=None, out=None, keepdims=False, **kwargs):
        """np.any / np.all as 1.0 / 0.0 traced values (for np.where masks or guarded `if`)."""
        if out is not None or kwargs:
            raise TracingError("np.any / np.all on traced values support axis= and keepdims= only")
        test = ops.ne if nonzero else ops.eq
        hits = wrap(np.sum(to_cells(elementwise(lambda v: test(v, 0.0), a)), axis=axis, keepdims=keepdims))
        return elementwise(lambda h: (ops.ne if nonzero else ops.eq)(h, 0.0), hits)
    return reduce


CUSTOM = {
    np.where: where, np.clip: clip, np.linalg.norm: _linalg.norm, np.zeros_like: _like(0.0), np.ones_like: _like(1.0), np.empty_like: _like(0.0),
    np.full_like: _full_like,
    np.max: _extreme(ops.maximum, "max"), np.min: _extreme(ops.minimum, "min"),
    np.amax: _extreme(ops.maximum, "amax"), np.amin: _extreme(ops.minimum, "amin"),
    np.mean: mean, np.round: ew.around, np.around: ew.around, np.fix: ew.fix, np.sinc: ew.sinc,
    np.any: _truth_reduce(True), np.all: _truth_reduce(False),
}
# numpy reads a bare array argument of these as a sequence of its rows; each row is passed as its own array so
# that numpy does not meet the traced scalars inside and dispatch back here forever
_SEQUENCE_FIRST = {getattr(np, n) for n in "stack hstack vstack column_stack dstack concatenate".split()
                   if hasattr(np, n)}

STRUCTURAL = {getattr(np, n) for n in (
    "reshape ravel transpose swapaxes moveaxis squeeze expand_dims stack hstack vstack column_stack "
    "concatenate atleast_1d atleast_2d atleast_3d take diag diagonal flip fliplr flipud roll repeat tile "
    "dstack broadcast_to copy append split array_split triu tril shape ndim size sum prod cumsum cumprod dot vdot "
    "inner outer matmul trace einsum tensordot kron cross diff rot90 rollaxis vsplit hsplit dsplit polyval "
    "take_along_axis").split()}


def _unwrap(a, depth: int = 0):
    """Traced values -> object arrays, inside (nested) argument lists. A list nested inside a sequence argument
    (``np.concatenate([x[1:], [s]])``) that holds traced scalars becomes one array; the sequence itself stays
    a list so functions like np.stack see its items one by one."""
    if isinstance(a, (TracedArray, Scalar)):
        return np.asarray(to_cells(a), dtype=object)
    if isinstance(a, (list, tuple)):
        if depth >= 2 and any(isinstance(x, Scalar) for x in a):
            return np.asarray(to_cells(a), dtype=object)
        return (list if isinstance(a, list) else tuple)(_unwrap(x, depth + 1) for x in a)  # (namedtuples too)
    return a


def _float64_dtype_dropped(func, args, kwargs):
    """The call without its ``dtype`` argument (positional or keyword) when that is float64; numpy would cast the
    traced cells with float(). Other dtypes are refused."""
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return args, kwargs
    dtype = bound.arguments.pop("dtype", None)
    if dtype not in ew._FLOAT64:
        raise TracingError(f"np.{func.__name__}(..., dtype={dtype!r}) on traced values: tapes compute in float64; "
                           "cast the result with .astype(...) instead")
    return bound.args, bound.kwargs


CUSTOM.update(_linalg.CUSTOM)
CUSTOM.update(_jacobi.CUSTOM)
CUSTOM.update(_more.CUSTOM)
CUSTOM.update(_stats.CUSTOM)
CUSTOM[np.dot] = _einsum.dot
CUSTOM[np.inner] = _einsum.inner
CUSTOM[np.tensordot] = _einsum.tensordot
CUSTOM[np.outer] = _contract.outer
CUSTOM[np.einsum] = _einsum.einsum
CUSTOM[np.i0] = _special.i0


def _size(a, axis=None):
    shape = shape_of(a)
    axes = range(len(shape)) if axis is None else normalize_axis_tuple(axis, len(shape))
    return int(np.prod([shape[i] for i in axes], dtype=np.int64))


# questions about the shape read the shape (through the cells they would materialise a loop array)
CUSTOM.update({np.ndim: lambda a: len(shape_of(a)), np.shape: lambda a: tuple(shape_of(a)), np.size: _size})


def array_function(func, args, kwargs):
    custom = CUSTOM.get(func)
    if custom is not None:
        return custom(*args, **kwargs)
    if func in STRUCTURAL:
        args, kwargs = _float64_dtype_dropped(func, args, kwargs)
        if func in _SEQUENCE_FIRST and args and isinstance(args[0], TracedArray):
            args = ([TracedArray(np.asarray(r, dtype=object)) if np.ndim(r) else wrap(r) for r in args[0].cells],
                    ) + tuple(args[1:])
        return wrap(func(*_unwrap(args), **{k: _unwrap(v, 1) for k, v in kwargs.items()}))
    name = getattr(func, "__module__", "numpy").replace("numpy.", "np.").replace("np._core.", "np.") + "." + \
        func.__name__
    raise TracingError(f"{name.replace('numpy.', 'np.')} is not supported on traced values. Supported: "
                       "elementwise ufuncs, " + ", ".join(sorted({f.__name__ for f in STRUCTURAL} |
                                                                 {f.__name__ for f in CUSTOM})))


tracer.install(array_ufunc=array_ufunc, array_function=array_function)
