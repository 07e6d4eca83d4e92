"""Every spelling of a contraction of traced arrays as the loops tapead already records.

``np.einsum``, ``np.tensordot``, stacked ``@`` (3-D and more) and ``np.dot``/``np.inner`` of N-D arrays are one
operation in different spellings: for two operands, each index is a *batch* index (in both operands and the result), *contracted* (in
both, not in the result), or *free* (in one operand and the result). Moved into the order (batch, free, contracted)
and (batch, contracted, free) and reshaped, every two-operand contraction is one of three loops:

- no batch index: a matrix product ``(Fa, K) @ (K, Fb)`` (``contract.product``: one product loop, or a loop over
  a constant matrix's rows); with one free entry on each side (an inner product of two vectors) the chain of
  additions on the cells stays, since its size is its inputs' anyway and ``affine`` reads it;
- a long batch axis (at least the recorder's loop threshold): ``np.sum(a[:, :, :, None] * b[:, None], axis=2)``,
  one loop over the batch whose body holds one small product (a stack of 3x3 matrices times another);
- a short batch (at most ``MAX_STACK``) of large products: one product loop per batch entry, stacked.

Indices of one operand that the result does not keep are summed first (``np.sum``); more than two operands are
contracted left to right. Anything else (a repeated index within one operand: a diagonal; broadcasting batch
axes of different lengths; a contraction too small for a loop) returns None, and the caller runs numpy on the
traced cells as before (one scalar per multiply-add: the same values, summed in numpy's order). A loop adds the
products in index order from -0.0, so results equal the cell-by-cell form to rounding (bitwise where numpy also
adds left to right).
"""
from __future__ import annotations

import string

import numpy as np

from ..errors import TracingError
from . import contract, tracer
from .tracer import TracedArray, shape_of

MAX_STACK = 64  # batch entries up to which a short batch of large products is one product loop each
MAX_BODY = contract.MAX_BODY  # multiply-adds one iteration of a batched loop may hold


def _threshold(*operands) -> int | None:
    """The recorder's loop threshold (None: structured recording is off, so nothing here applies)."""
    for a in operands:
        if isinstance(a, TracedArray):
            rec = contract._recorder(a)
            if rec is not None:
                return rec.map_min
    return None


def _array(a):
    """A traced array as it is; a constant as a float64 array; anything else None."""
    if isinstance(a, TracedArray):
        return a
    if isinstance(a, (np.ndarray, int, float, list, tuple)) and np.asarray(a).dtype.kind in "fiub":
        return np.asarray(a, np.float64)
    return None


def _ndim(a) -> int:
    """The number of axes, read from the shape (``np.ndim`` of a loop array would materialise it)."""
    return len(shape_of(a))


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def pair(a, sa: str, b, sb: str, keep: str):
    """The contraction of ``a`` (indices ``sa``) and ``b`` (``sb``) keeping the indices in ``keep`` (in the order
    of ``batch + free of a + free of b``): ``(result, its indices)``, or None (see the module docstring)."""
    if len(set(sa)) != len(sa) or len(set(sb)) != len(sb) or _ndim(a) != len(sa) or _ndim(b) != len(sb):
        return None
    sizes: dict[str, int] = {}
    for s, shape in ((sa, shape_of(a)), (sb, shape_of(b))):
        for c, d in zip(s, shape):
            if sizes.setdefault(c, d) != d:
                return None  # broadcasting along an index, or a mismatch numpy reports itself
    a, sa = _sum_out(a, sa, sb + keep)
    b, sb = _sum_out(b, sb, sa + keep)
    batch = [c for c in sa if c in sb and c in keep]
    inner = [c for c in sa if c in sb and c not in keep]
    free_a = [c for c in sa if c not in sb]
    free_b = [c for c in sb if c not in sa]
    nb, nk = _size([sizes[c] for c in batch]), _size([sizes[c] for c in inner])
    na, nf = _size([sizes[c] for c in free_a]), _size([sizes[c] for c in free_b])
    a3 = _reshaped(_moved(a, sa, batch + free_a + inner), (nb, na, nk))
    b3 = _reshaped(_moved(b, sb, batch + inner + free_b), (nb, nk, nf))
    if batch:
        r = _batched(a3, b3)
    else:
        r = _matrix(a3[0], b3[0])
        r = None if r is None else _reshaped(r, (1, na, nf))
    if r is None:
        return None
    order = batch + free_a + free_b
    return _reshaped(r, tuple(sizes[c] for c in order)), "".join(order)


def _reshaped(a, shape: tuple):
    """``a.reshape(shape)``, or ``a`` itself when it has that shape (a loop's result stays a loop: reshaping
    it would materialise it)."""
    return a if tuple(shape_of(a)) == shape else a.reshape(shape)


def _sum_out(a, s: str, others: str):
    """Sum the indices of ``a`` no other operand or the result reads (``np.sum`` over those axes)."""
    alone = tuple(i for i, c in enumerate(s) if c not in others)
    if not alone:
        return a, s
    return _array_of(np.sum(a, axis=alone)), "".join(c for c in s if c in others)


def _array_of(a):
    """A traced scalar (a sum over every axis) as a 0-d traced array, which reshapes; arrays as they are."""
    if isinstance(a, (TracedArray, np.ndarray)):
        return a
    if isinstance(a, float):
        return np.asarray(a)
    cells = np.empty((), dtype=object)
    cells[()] = a
    return TracedArray(cells)


def _moved(a, s: str, order: list):
    perm = [s.index(c) for c in order]
    return a if perm == sorted(perm) else a.transpose(perm)


def _matrix(a2, b2):
    """``a2 @ b2`` for (m, k) and (k, n) operands as one loop, or None."""
    (m, k), n = a2.shape, b2.shape[1]
    if k == 1:
        return a2 * b2  # an outer product: one multiply per entry, elementwise (a loop when long enough)
    if m == 1 and n == 1:  # the inner product of two vectors: one chain of additions on the cells (its Hessian
        return None  # keeps the array rules of ``affine``, which read scalar code; its size is the inputs' anyway)
    done = contract.product(a2, b2)
    return done if done is not None else _long_terms(a2, b2)


def _long_terms(a2, b2):
    """A product with few entries and many terms (``X.T @ X`` of a traced (n, 3) ``X``: 9 entries of n terms)
    as one loop over the terms, each entry a ``sum`` output (added in term order, as the dot product), or None
    when the terms are fewer than the loop threshold or the entries more than a body carries."""
    (m, k), n = shape_of(a2), shape_of(b2)[1]
    t = _threshold(a2, b2)
    if t is None or k < t or m * n > contract.MAX_OUTPUTS or not contract.any_traced(a2, b2):
        return None
    rows = a2.T if isinstance(a2, TracedArray) else np.transpose(a2)  # (k, m): the terms first
    return np.sum(rows[:, :, None] * b2[:, None, :], axis=0)


def _batched(a3, b3):
    nb, m, k = shape_of(a3)
    n = shape_of(b3)[2]
    t = _threshold(a3, b3)
    if t is None:
        return None
    if nb >= t and m * k * n <= MAX_BODY:
        if k == 1:
            return a3 * b3  # (nb, m, 1) * (nb, 1, n): one multiply per entry
        return np.sum(a3[:, :, :, None] * b3[:, None, :, :], axis=2)
    if nb <= MAX_STACK:
        parts = [_matrix(a3[i], b3[i]) for i in range(nb)]
        if any(p is None for p in parts):
            return None
        return np.stack(parts)
    return None


def einsum_loops(*operands):
    """``np.einsum(spec, *arrays)`` as loops (two or more operands, at least one traced), or None."""
    if len(operands) < 3 or not isinstance(operands[0], str) or not contract.any_traced(*operands[1:]):
        return None
    arrays = [_array(a) for a in operands[1:]]
    if any(a is None for a in arrays):
        return None
    parsed = _parse(operands[0], [_ndim(a) for a in arrays])
    if parsed is None:
        return None
    specs, output = parsed
    acc, s = arrays[0], specs[0]
    for i in range(1, len(arrays)):
        later = "".join(specs[i + 1:]) + output
        keep = "".join(dict.fromkeys(c for c in s + specs[i] if c in later))
        done = pair(acc, s, arrays[i], specs[i], keep)
        if done is None:
            return None
        acc, s = done
    if set(s) != set(output):  # an index kept for the result only (summed by numpy's rules): nothing to sum here
        return None
    return _moved(acc, s, list(output))


def _parse(spec: str, ndims: list[int]):
    """Each operand's indices and the result's, with ``...`` spelled out as letters the spec does not use;
    None for what this module leaves to numpy (a malformed spec, an operand count that does not match)."""
    spec = spec.replace(" ", "")
    inputs, arrow, output = spec.partition("->")
    parts = inputs.split(",")
    if len(parts) != len(ndims):
        return None
    spare = iter(c for c in string.ascii_letters if c not in spec)
    width = max((nd - len(p.replace("...", "")) for p, nd in zip(parts, ndims) if "..." in p), default=0)
    ell = "".join(next(spare) for _ in range(max(width, 0)))
    specs = []
    for p, nd in zip(parts, ndims):
        if "..." in p:
            w = nd - len(p.replace("...", ""))
            if w < 0 or p.count("...") != 1:
                return None
            p = p.replace("...", ell[len(ell) - w:] if w else "")
        if len(p) != nd or not p.isalpha():
            return None
        specs.append(p)
    if arrow:
        if output.count("...") > 1:
            return None
        output = output.replace("...", ell)
        if not output.isalpha() and output or len(set(output)) != len(output):
            return None
    else:
        counts = "".join(specs)
        output = ell + "".join(sorted(c for c in set(counts) if counts.count(c) == 1 and c not in ell))
    if any(c not in "".join(specs) for c in output):
        return None
    return specs, output


def tensordot_loops(a, b, axes=2):
    """``np.tensordot`` as ``einsum`` spells it (the contracted axes paired in order), or None."""
    if not contract.any_traced(a, b):
        return None
    na, nb = _ndim(a), _ndim(b)
    try:
        if isinstance(axes, (int, np.integer)):
            xa, xb = list(range(na - int(axes), na)), list(range(int(axes)))
        else:
            xa, xb = ([int(v)] if _ndim(v) == 0 else [int(u) for u in v] for v in axes)
    except (TypeError, ValueError):
        return None
    if any(not -na <= v < na for v in xa) or any(not -nb <= v < nb for v in xb):
        return None  # (numpy on the cells raises its own error)
    xa, xb = [v % na for v in xa], [v % nb for v in xb]
    if len(xa) != len(xb) or len(set(xa)) != len(xa) or len(set(xb)) != len(xb) or na + nb > 40:
        return None
    letters = string.ascii_letters
    sa = letters[:na]
    sb = list(letters[na:na + nb])
    for i, j in zip(xa, xb):
        sb[j] = sa[i]
    sb = "".join(sb)
    out = "".join(c for i, c in enumerate(sa) if i not in xa) + "".join(c for j, c in enumerate(sb) if j not in xb)
    return einsum_loops(f"{sa},{sb}->{out}", a, b)


def stacked(x, y):
    """``x @ y`` where an operand has three or more axes (equal batch axes, or a matrix against a stack), or a
    vector times a vector (the dot product); None otherwise."""
    nx, ny = _ndim(x), _ndim(y)
    if nx < 2 or ny < 2 or max(nx, ny) < 3:
        return None
    bx, by = shape_of(x)[:-2], shape_of(y)[:-2]
    letters = string.ascii_letters[:max(nx, ny) - 2]
    if bx == by:
        return einsum_loops(f"{letters}ij,{letters}jk->{letters}ik", x, y)
    if ny == 2:
        return einsum_loops(f"{letters}ij,jk->{letters}ik", x, y)
    if nx == 2:
        return einsum_loops(f"ij,{letters}jk->{letters}ik", x, y)
    return None


def dot_nd(a, b):
    """``np.dot`` of N-D operands (the last axis of ``a`` against the second-to-last of ``b``) or of two vectors;
    None otherwise."""
    na, nb = _ndim(a), _ndim(b)
    if na >= 1 and nb >= 1 and max(na, nb) >= 3:
        return tensordot_loops(a, b, ([-1], [-2 if nb >= 2 else 0]))
    return None


def inner_nd(a, b):
    """``np.inner`` of N-D operands (the last axes against each other), or None."""
    if _ndim(a) >= 1 and _ndim(b) >= 1 and max(_ndim(a), _ndim(b)) >= 3:
        return tensordot_loops(a, b, ([-1], [-1]))
    return None


# ---- the numpy entry points: a loop where one applies, else numpy on the traced cells, as before -------------

def _or_cells(done, numpy_function, *operands):
    return done if done is not None else tracer.wrap(numpy_function(*(tracer.to_cells(a) for a in operands)))


def product(x, y, numpy_product=np.matmul):
    """``x @ y`` (``numpy_product`` np.matmul) or ``x.dot(y)`` (np.dot): a loop as ``contract.product`` says
    for matrices and vectors, else as a stacked product or N-D dot here; None when neither applies."""
    done = contract.product(x, y)
    if done is None and {_ndim(x), _ndim(y)} <= {1, 2} and _ndim(x) + _ndim(y) >= 3 and \
            shape_of(x)[-1] == shape_of(y)[0]:  # (a vector against a matrix: a one-row or one-column product)
        r = _long_terms(x if _ndim(x) == 2 else x.reshape(1, -1), y if _ndim(y) == 2 else y.reshape(-1, 1))
        done = r if r is None or (_ndim(x) == 2 and _ndim(y) == 2) else r.reshape(-1)
    if done is None:
        done = stacked(x, y) if numpy_product is np.matmul else dot_nd(x, y)
    return done


def dot(a, b, out=None):
    """``np.dot``."""
    if out is not None:
        raise TracingError("np.dot(..., out=...) on traced values: assign the result instead")
    return _or_cells(product(a, b, np.dot), np.dot, a, b)


def inner(a, b):
    """``np.inner``: for matrices ``a @ b.T``, for vectors and N-D arrays the last axes contracted."""
    done = None
    if contract.any_traced(a, b) and _ndim(a) == 2 and _ndim(b) == 2:
        done = contract.product(a, b.T if isinstance(b, TracedArray) else np.transpose(b))
    if done is None and contract.any_traced(a, b):
        done = inner_nd(a, b)
    return _or_cells(done, np.inner, a, b)


def tensordot(a, b, axes=2):
    """``np.tensordot``."""
    done = tensordot_loops(a, b, axes)
    return done if done is not None else tracer.wrap(np.tensordot(tracer.to_cells(a), tracer.to_cells(b), axes))


def einsum(*operands, **kwargs):
    """``np.einsum`` (two or more operands, no keywords) as loops, else numpy on the cells."""
    done = einsum_loops(*operands) if not kwargs else None
    if done is not None:
        return done
    cells = [tracer.to_cells(o) if isinstance(o, (TracedArray, tracer.Scalar)) else o for o in operands]
    return tracer.wrap(np.einsum(*cells, **kwargs))


tracer.install(contract=product)
