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
from ..ir.contraction import Product
from . import tracer
from .columns import outer_ids
from .maparray import emit_with_values
from .tracer import Scalar, TracedArray

MAX_OUTPUTS = 1024  # sums over the loop one ``x @ C`` body may carry
MAX_BODY = 4096  # body inputs (2 k) of one product loop


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
    return tracer.recorder_of(v.cells)


def _matrix(a):
    """A 2-D operand's cells (traced or constant), or None."""
    if isinstance(a, TracedArray) and a.ndim == 2:
        return a.cells
    if isinstance(a, np.ndarray) and a.ndim == 2 and a.dtype.kind in "fiu":
        return a.astype(np.float64)
    return None


def matrix_product(x, y):
    """``x @ y`` of two matrices, at least one traced, as one product loop (``tapead.ir.contraction``) over the
    output's entries: iteration ``i * m + j`` reads row ``i`` of ``x`` and column ``j`` of ``y`` and its body is
    their ``k``-term dot product, added left to right; stored by its two factors, run as a loop nest, reversed as
    two products. None when the output is too small for a loop (the recorder's threshold) or nothing is
    traced."""
    a, b = _matrix(x), _matrix(y)
    if a is None or b is None or a.shape[1] != b.shape[0] or a.shape[1] < 2:
        return None
    rec = tracer.recorder_of(a)
    rec = tracer.recorder_of(b) if rec is None else rec
    n, k = a.shape
    m = b.shape[1]
    if rec is None or rec.map_min is None or n * m < rec.map_min or 2 * k > MAX_BODY:
        return None
    first = emit_with_values(rec, Product(outer_ids(rec, a), outer_ids(rec, b), rec.assume_finite))
    out = np.empty((n, m), dtype=object)
    out.reshape(-1)[:] = [Scalar(rec, first + t) for t in range(n * m)]
    return TracedArray(out)



def _vector_product(x, y):
    """``v @ M`` (a traced vector times a matrix) and ``M @ v`` (a traced matrix times a vector) as the product
    loops of a one-row or one-column matrix, or None."""
    if _traced_vector(x) is not None and _matrix(y) is not None:
        done = matrix_product(x.reshape(1, -1), y)
    elif isinstance(x, TracedArray) and x.ndim == 2 and isinstance(y, (TracedArray, np.ndarray)) and y.ndim == 1:
        done = matrix_product(x, y.reshape(-1, 1))
    else:
        return None
    return None if done is None else TracedArray(done.cells.reshape(-1))


def product(x, y):
    """``x @ y`` (or ``np.dot``) as a loop when both are matrices (``matrix_product``), a traced vector meets a
    matrix (a one-row or one-column product), or a constant matrix meets a traced vector (a loop over its rows)."""
    done = matrix_product(x, y)
    if done is not None:
        return done
    c, v = _constant(x), _traced_vector(y)
    if c is not None and v is not None and c.shape[1] == v.shape[0]:
        rec = _recorder(v)
        if rec is not None and rec.map_min is not None and c.shape[0] >= rec.map_min:
            return np.sum(c * v, axis=1)
        return None
    done = _vector_product(x, y)
    if done is not None:
        return done
    v, c = _traced_vector(x), _constant(y)
    if c is not None and v is not None and c.shape[0] == v.shape[0] and c.shape[1] <= MAX_OUTPUTS:
        rec = _recorder(v)
        if rec is not None and rec.map_min is not None and c.shape[0] >= rec.map_min:
            return np.sum(v[:, None] * c, axis=0)
    return None


def any_traced(*operands) -> bool:
    """Whether any operand is a traced array (what decides if a contraction is recorded at all)."""
    return any(isinstance(a, TracedArray) for a in operands)


def outer(a, b, out=None):
    """``np.outer``: the broadcast product of the flattened operands (a loop when long enough)."""
    if out is not None:
        raise TracingError("np.outer(..., out=...) on traced values: assign the result instead")
    if not any_traced(a, b):
        return np.outer(a, b)
    left = a.reshape(-1) if isinstance(a, TracedArray) else np.ravel(a)
    right = b.reshape(-1) if isinstance(b, TracedArray) else np.ravel(b)
    return left[:, None] * right[None, :]
