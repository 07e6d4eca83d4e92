"""Elementwise functions beyond the one-op ufuncs: composites of op-table rows, and the dtype casts.

Each composite is written so that its value matches numpy's (or scipy.special's) and its derivative is right at
the edges: where a naive formula would produce inf / inf or 0 * inf, a select picks a formula that is finite
there (the branch not taken gets an exact zero derivative, see ``ad.backward``). scipy is never imported:
scipy.special's ufuncs reach ``array_ufunc`` by their ``__name__`` like numpy's.
"""
from __future__ import annotations

import numpy as np

from ..table import ops
from ..table import ops_extra as ox
from ..errors import TracingError
from . import tracer
from .tracer import elementwise, to_cells, wrap

PI = float(np.pi)


def heaviside(x, h0):
    """np.heaviside: 0 for x < 0, 1 for x > 0, ``h0`` at x = +-0, NaN for NaN; d/dx = 0, d/dh0 = 1 at 0."""
    return ops.select(ops.lt(x, 0.0), 0.0, ops.select(ops.gt(x, 0.0), 1.0, ops.select(ops.eq(x, 0.0), h0, x)))


def expit(x):
    """scipy.special.expit: 1 / (1 + exp(-x)); for x < 0 written exp(x) / (1 + exp(x)), whose derivative does
    not turn into inf / inf for very negative x."""
    e = ops.exp(x)
    return ops.select(ops.ge(x, 0.0), 1.0 / (1.0 + ops.exp(-x)), e / (1.0 + e))


def logit(p):
    """scipy.special.logit: log(p) - log1p(-p) (derivative 1/p + 1/(1-p): +inf at 0 and 1, not NaN)."""
    return ops.log(p) - ops.log1p(-p)


def isnan(x): return ops.ne(x, x)
def isinf(x): return ops.eq(ops.absolute(x), np.inf)
def isfinite(x): return ops.lt(ops.absolute(x), np.inf)
def deg2rad(x): return x * (PI / 180.0)  # numpy multiplies by the rounded constant too
def rad2deg(x): return x * (180.0 / PI)


def _sinc(x):
    """np.sinc: sin(pi x) / (pi x). Near 0 (|pi x| < 1e-3) the Taylor series 1 - y^2/6 + y^4/120, so the value
    is 1 at 0 and the first and second derivatives there are right (0 and -pi^2/3), where numpy's own trick
    (x = 1e-20 at 0) would make them 0."""
    y = PI * x
    y2 = y * y
    small = ops.lt(ops.absolute(y), 1e-3)
    return ops.select(small, 1.0 - y2 / 6.0 + (y2 * y2) / 120.0, ops.sin(y) / y)


def sinc(x):
    return elementwise(_sinc, x)


def around(a, decimals=0, out=None):
    """np.round / np.around as numpy computes it for floats: rint(x * 10**d) / 10**d (rint(x / 10**-d) * 10**-d
    for d < 0); rint rounds half to even. Derivative 0."""
    if out is not None:
        raise TracingError("np.round(..., out=...) on traced values: assign the result instead")
    d = int(decimals)
    if d == 0:
        return elementwise(ox.rint, a)
    f = 10.0 ** abs(d)
    if d > 0:
        return elementwise(lambda v: ox.rint(v * f) / f, a)
    return elementwise(lambda v: ox.rint(v / f) * f, a)


def fix(x, out=None):
    """np.fix: round toward zero (trunc). Derivative 0."""
    if out is not None:
        raise TracingError("np.fix(..., out=...) on traced values: assign the result instead")
    return elementwise(ox.trunc, x)


UFUNCS = {  # the ufuncs written with rows (those that are rows are found through the op table)
    "deg2rad": deg2rad, "radians": deg2rad,
    "rad2deg": rad2deg, "degrees": rad2deg, "heaviside": heaviside, "isnan": isnan, "isinf": isinf,
    "isfinite": isfinite, "expit": expit, "logit": logit,
}


def where(condition, a=None, b=None):
    """Branch-free choice, elementwise: ``a`` where ``condition`` is true, else ``b``.

    Records a select: the value of the branch not taken is ignored and its derivative is exactly zero.
    """
    if a is None or b is None:
        raise TracingError("np.where(condition) with one argument returns indices, which cannot depend on "
                           "traced values; use np.where(condition, a, b)")
    return elementwise(ops.select, condition, a, b)


def reduce_along(fn, a, axis=None, keepdims=False):
    """Reduce with a binary op over ``axis`` (None, an int or a tuple of ints), as numpy's reductions do."""
    cells = np.asarray(to_cells(a), dtype=object)
    if cells.size == 0:
        raise TracingError("max/min of an empty traced array")
    axes = tuple(range(cells.ndim)) if axis is None else tuple(int(x) % max(cells.ndim, 1)
                                                              for x in np.atleast_1d(axis))
    keep = [n for i, n in enumerate(cells.shape) if i not in axes]
    flat = np.moveaxis(cells, axes, tuple(range(cells.ndim - len(axes), cells.ndim))).reshape(keep + [-1])
    r = np.frompyfunc(fn, 2, 1).reduce(flat, axis=-1)
    if keepdims:
        r = np.reshape(r, [1 if i in axes else n for i, n in enumerate(cells.shape)])
    return wrap(r)


def divmod_(a, b):
    """np.divmod / divmod(): (floor_divide, remainder), numpy's conventions."""
    return elementwise(ox.floor_divide, a, b), elementwise(ox.remainder, a, b)


_FLOAT64 = (None, float, np.float64, "float", "float64", "f8", "d")


def astype(a, dtype):
    """x.astype(dtype) on traced values: float64 copies; float32 rounds to the nearest float32 (derivative 1);
    signed integers truncate toward zero (derivative 0; NaN, inf and values beyond the integer range stay
    as they are instead of numpy's undefined cast); bool is x != 0 (as 1.0 / 0.0)."""
    dt = np.dtype(dtype)
    if dt == np.float64:
        return wrap(np.array(to_cells(a), dtype=object, copy=True))
    if dt == np.float32:
        return elementwise(ox.f32, a)
    if dt.kind == "i":
        return elementwise(ox.trunc, a)
    if dt.kind == "b":
        return elementwise(lambda v: ops.ne(v, 0.0), a)
    raise TracingError(f"astype({dt}) of a traced value: tapes compute in float64, and a {dt} cast cannot be "
                       "recorded. Use astype(float) / astype(np.float32) / astype(int) (truncation), or np.trunc, "
                       "np.floor, np.round, np.abs explicitly.")


tracer.install(cast=astype)
