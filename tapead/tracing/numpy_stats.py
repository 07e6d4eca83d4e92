"""Statistics, binning and scatter-adds on traced values: numpy functions that choose (order statistics, bins)
or gather and add (``np.add.at``, ``np.bincount``), written with the recorded ops.

Where numpy makes a value-dependent choice (which element is the median, which bin a value falls in, where
``searchsorted`` inserts) the choice is a guarded comparison, as ``np.sort`` records one: the tape holds the
choice made at the recorded point and a call elsewhere re-records the path it takes (``on_branch``). Sums follow
numpy's order of additions where numpy's own loop is sequential (``bincount``, ``add.at``).
"""
from __future__ import annotations

import numpy as np

from ..table import ops
from .elementwise import reduce_along
from ..errors import TracingError
from .numpy_more import sort
from .tracer import Scalar, TracedArray, elementwise, to_cells, wrap

_NO = np._NoValue


def _cells(a) -> np.ndarray:
    return np.asarray(to_cells(a), dtype=object)


def _ints(a, name: str) -> np.ndarray:
    """A constant integer index array (indices decide where values go: they cannot be traced)."""
    if isinstance(a, (TracedArray, Scalar)):
        raise TracingError(f"np.{name}: the indices are traced values; indices must be constant integers "
                           "(a traced choice of position is a comparison: use np.where)")
    out = np.asarray(a)
    if out.dtype.kind not in "iub":
        raise TypeError(f"np.{name}: indices must be integers, got dtype {out.dtype}")
    return out.astype(np.int64)


def add_at(a, indices, b) -> None:
    """``np.add.at(a, indices, b)`` into a traced array ``a``: unbuffered, repeated indices add up, in order."""
    if not isinstance(a, TracedArray):
        raise TracingError("np.add.at into a float numpy array cannot hold traced values: build the sums instead, "
                           "e.g. g = np.bincount(i, weights=v, minlength=n) for a 1-d target, or start from a "
                           "traced array (g = 0.0 * x, then np.add.at(g, i, v))")
    cells = a.cells
    if cells.dtype != object:
        raise TracingError("np.add.at: the target must be a traced array")
    target = np.array(cells, dtype=object)
    np.add.at(target, indices, np.asarray(to_cells(b), dtype=object) if b is not None else 1.0)
    a[...] = wrap(target)


def bincount(x, weights=None, minlength=0):
    """Sums of ``weights`` per value of the constant index array ``x`` (counts, constant, without weights)."""
    idx = _ints(x, "bincount")
    if idx.ndim != 1:
        raise ValueError("np.bincount: x must be 1-d")
    if idx.size and idx.min() < 0:
        raise ValueError("np.bincount: x must not hold negative values")
    size = max(int(minlength), int(idx.max()) + 1 if idx.size else 0)
    if weights is None:
        return np.bincount(idx, minlength=size)
    w = _cells(weights).ravel()
    if w.shape != idx.shape:
        raise ValueError("np.bincount: weights must have x's shape")
    out = np.zeros(size, dtype=object)
    for i, k in enumerate(idx.tolist()):  # numpy's sequential order: 0.0 + w[first] + w[next] ...
        out[k] = out[k] + w[i]
    return wrap(out)


def trapezoid(y, x=None, dx=1.0, axis=-1):
    """The trapezoidal rule as numpy writes it: ``sum(d * (y[1:] + y[:-1]) / 2)`` along ``axis``."""
    y = _cells(y)
    n = y.shape[axis]
    hi = [slice(None)] * y.ndim
    lo = [slice(None)] * y.ndim
    hi[axis], lo[axis] = slice(1, None), slice(None, -1)
    if x is None:
        d = dx
    else:
        xc = _cells(x)
        d = np.diff(xc, axis=axis if xc.ndim > 1 else -1)
        if xc.ndim == 1 and y.ndim > 1:
            shape = [1] * y.ndim
            shape[axis] = n - 1
            d = d.reshape(shape)
    return wrap(np.sum(d * (y[tuple(hi)] + y[tuple(lo)]) / 2.0, axis=axis))


def nansum(a, axis=None, dtype=None, out=None, keepdims=_NO, **kwargs):
    """Sum with NaNs as zeros (a NaN-safe select: derivative 0 at a NaN entry)."""
    if out is not None or kwargs:
        raise TracingError("np.nansum on traced values supports axis= and keepdims= only")
    c = _cells(a)
    clean = elementwise(lambda v: ops.select(ops.ne(v, v), 0.0, v), c)
    return np.sum(clean, axis=axis, keepdims=keepdims is True)


def nanmean(a, axis=None, dtype=None, out=None, keepdims=_NO, **kwargs):
    """Mean over the entries that are not NaN (which entries are NaN is a guarded choice)."""
    c = _cells(a)
    count = np.sum(np.vectorize(lambda v: 0.0 if bool(v != v) else 1.0, otypes=[float])(c), axis=axis,
                   keepdims=keepdims is True)
    return nansum(c, axis=axis, keepdims=keepdims) / count


def ptp(a, axis=None, out=None, keepdims=_NO):
    """Peak to peak: max - min (each a NaN-propagating select chain)."""
    if out is not None:
        raise TracingError("np.ptp(..., out=...) on traced values: assign the result instead")
    kd = keepdims is True
    return np.max(wrap(_cells(a)), axis=axis, keepdims=kd) - np.min(wrap(_cells(a)), axis=axis, keepdims=kd)


def _lerp(a, b, t: float):
    """numpy's linear interpolation between neighbours (its formula, for the same rounding)."""
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def _sorted_lanes(a, axis):
    """The values sorted along ``axis`` (guarded comparisons), that axis moved last; and the axis's index."""
    c = _cells(a)
    if axis is None:
        c, ax = c.ravel(), 0
    else:
        ax = int(axis) % max(c.ndim, 1)
    return np.moveaxis(_cells(sort(wrap(c), axis=ax)), ax, -1), ax


def quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *,
             weights=None, interpolation=None):
    """Quantiles by the 'linear' method: the sorted values (a guarded sort) interpolated at constant ``q``."""
    if out is not None or weights is not None or interpolation is not None or method != "linear":
        raise TracingError("np.quantile/np.percentile/np.median on traced values support axis=, keepdims= and "
                           "method='linear' only")
    if isinstance(q, (TracedArray, Scalar)):
        raise TracingError("np.quantile: q must be a constant (a traced q would choose elements by value)")
    qs = np.asarray(q, dtype=np.float64)
    if np.any((qs < 0) | (qs > 1)):
        raise ValueError("Quantiles must be in the range [0, 1]")
    s, ax = _sorted_lanes(a, axis)
    n = s.shape[-1]
    results = []
    for qv in qs.ravel().tolist():
        virtual = qv * (n - 1)
        lo = int(np.floor(virtual))
        hi = min(lo + 1, n - 1)
        t = virtual - lo
        results.append(np.frompyfunc(lambda u, v: _lerp(u, v, t), 2, 1)(s[..., lo], s[..., hi]))
    r = np.array(results, dtype=object).reshape(qs.shape + s.shape[:-1])
    if keepdims:
        shape = list(_cells(a).shape) if axis is not None else [1] * _cells(a).ndim
        if axis is not None:
            shape[ax] = 1
        r = r.reshape(qs.shape + tuple(shape))
    return wrap(r)


def percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *,
               weights=None, interpolation=None):
    if isinstance(q, (TracedArray, Scalar)):
        raise TracingError("np.percentile: q must be a constant (a traced q would choose elements by value)")
    return quantile(a, np.true_divide(q, 100), axis, out, overwrite_input, method, keepdims, weights=weights,
                    interpolation=interpolation)


def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """The middle value, or the mean of the two middle values (numpy's ``(a + b) / 2``)."""
    if out is not None:
        raise TracingError("np.median(..., out=...) on traced values: assign the result instead")
    s, ax = _sorted_lanes(a, axis)
    n = s.shape[-1]
    r = s[..., n // 2] if n % 2 else (s[..., n // 2 - 1] + s[..., n // 2]) / 2.0
    if keepdims:
        r = np.expand_dims(np.asarray(r, dtype=object), ax if axis is not None else tuple(range(_cells(a).ndim)))
    return wrap(r)


def searchsorted(a, v, side="left", sorter=None):
    """Insertion indices (integers, constant on the tape) by binary search with guarded comparisons."""
    ac = _cells(a)
    if sorter is not None:
        ac = ac[np.asarray(sorter)]
    if ac.ndim != 1:
        raise ValueError("np.searchsorted: a must be 1-d")
    vc = _cells(v)

    def one(x) -> int:
        lo, hi = 0, len(ac)
        while lo < hi:
            mid = (lo + hi) // 2
            go_right = bool(ac[mid] < x) if side == "left" else bool(ac[mid] <= x)  # a guard
            lo, hi = (mid + 1, hi) if go_right else (lo, mid)
        return lo

    out = np.array([one(x) for x in vc.ravel()], dtype=np.intp).reshape(vc.shape)
    return int(out) if out.ndim == 0 else out


def histogram(a, bins=10, range=None, density=None, weights=None):
    """Counts (or sums of ``weights``) in ``bins`` equal bins; the edges are traced when they come from the
    data's min and max. Which bin a value falls in is a guarded choice; the last bin includes its right edge."""
    if not isinstance(bins, (int, np.integer)):
        raise TracingError("np.histogram on traced values supports an integer number of bins")
    c = _cells(a).ravel()
    if range is None:
        lo, hi = reduce_along(ops.minimum, c), reduce_along(ops.maximum, c)
    else:
        lo, hi = float(range[0]), float(range[1])
    step = (hi - lo) / bins
    edges = [lo + step * k for k in np.arange(bins)] + [hi]
    w = None if weights is None else _cells(weights).ravel()
    counts = [0.0] * bins
    for i, x in enumerate(c):
        if bool(x < lo) or bool(x > hi):  # guards: outside the range
            continue
        k = searchsorted(wrap(np.array(edges[1:-1], dtype=object)), x, side="right") if bins > 1 else 0
        counts[k] = counts[k] + (1.0 if w is None else w[i])
    hist = np.array(counts, dtype=object)
    if density:
        hist = hist / (np.sum(hist) * step)
    elif w is None:
        hist = hist.astype(np.int64)
    return (wrap(hist) if hist.dtype == object else hist), wrap(np.array(edges, dtype=object))


def convolve(a, v, mode="full"):
    """Discrete linear convolution, ``out[k] = sum_i a[i] v[k - i]`` (sums to rounding of numpy's)."""
    ac, vc = _cells(a).ravel(), _cells(v).ravel()
    n, m = len(ac), len(vc)
    if n == 0 or m == 0:
        raise ValueError("np.convolve: inputs cannot be empty")
    full = np.empty(n + m - 1, dtype=object)
    for k in np.arange(n + m - 1):
        lo, hi = max(0, k - m + 1), min(k, n - 1)
        full[k] = np.sum(ac[lo:hi + 1] * vc[k - np.arange(lo, hi + 1)])
    if mode == "full":
        return wrap(full)
    if mode == "same":
        size = max(n, m)
        start = (n + m - 1 - size) // 2
        return wrap(full[start:start + size])
    if mode == "valid":
        return wrap(full[min(n, m) - 1:max(n, m)])
    raise ValueError(f"np.convolve: mode must be 'full', 'same' or 'valid', got {mode!r}")


CUSTOM = {np.bincount: bincount, np.nansum: nansum, np.nanmean: nanmean, np.ptp: ptp, np.quantile: quantile,
          np.percentile: percentile, np.median: median, np.searchsorted: searchsorted, np.histogram: histogram,
          np.convolve: convolve}
for _name in ("trapezoid", "trapz"):
    if hasattr(np, _name):
        CUSTOM[getattr(np, _name)] = trapezoid
