"""Products of a constant matrix and a traced vector as loops: ``X @ w`` is ``np.sum(X * w, axis=1)``.

A data matrix times traced parameters (a linear model's ``X @ w``, ``x @ A`` in ``x @ A @ x``) would otherwise
unroll into one multiply-add per entry of the matrix. Rewritten as the elementwise product and a sum over the
matrix's short axis, it records as one loop over the long axis whose body reads one row of the constant (data,
which the kernel reads from memory) and the shared vector: the same products, summed in the same order as a
row's dot product.

- ``C @ x`` with ``C`` of shape (n, d), ``x`` traced (d,): a loop over the n rows, each a d-term dot product;
- ``x @ C`` with ``x`` traced (n,), ``C`` of shape (n, m): a loop over the n rows of ``C`` whose m outputs are
  sums over the loop (m at most ``MAX_OUTPUTS``).

Only where the loop axis is long enough for a loop (the recorder's threshold); otherwise None and the product
runs on the traced cells, as before.
"""
from __future__ import annotations

import numpy as np

from ..errors import TracingError
from . import tracer
from .tracer import Scalar, TracedArray

MAX_OUTPUTS = 1024  # sums over the loop one ``x @ C`` body may carry


def _constant(a) -> np.ndarray | None:
    if isinstance(a, np.ndarray) and a.dtype.kind in "fiu" and a.ndim == 2:
        return a.astype(np.float64)
    return None


def _traced_vector(a):
    if isinstance(a, TracedArray) and a.ndim == 1:
        return a
    return None


def _recorder(v: TracedArray):
    inner = getattr(v, "builder", None)
    if inner is not None:
        return inner.outer
    for c in v.cells.flat:
        if type(c) is Scalar:
            return c.rec
    return None


def product(x, y):
    """``x @ y`` (or ``np.dot``) as a loop when one is a constant matrix and the other a traced vector."""
    c, v = _constant(x), _traced_vector(y)
    if c is not None and v is not None and c.shape[1] == v.shape[0]:
        rec = _recorder(v)
        if rec is not None and rec.map_min is not None and c.shape[0] >= rec.map_min:
            return np.sum(c * v, axis=1)
        return None
    v, c = _traced_vector(x), _constant(y)
    if c is not None and v is not None and c.shape[0] == v.shape[0] and c.shape[1] <= MAX_OUTPUTS:
        rec = _recorder(v)
        if rec is not None and rec.map_min is not None and c.shape[0] >= rec.map_min:
            return np.sum(v[:, None] * c, axis=0)
    return None


def dot(a, b, out=None):
    """``np.dot``: a loop as ``product`` says, else numpy's dot on the traced cells."""
    if out is not None:
        raise TracingError("np.dot(..., out=...) on traced values: assign the result instead")
    done = product(a, b)
    return done if done is not None else tracer.wrap(np.dot(tracer.to_cells(a), tracer.to_cells(b)))


tracer.install(contract=product)
