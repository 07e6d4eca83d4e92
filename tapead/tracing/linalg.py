"""np.linalg on traced values: det, slogdet, inv, solve and cholesky at any fixed size, stacked over leading axes.

A tape is straight-line code, so a factorisation that has to choose (which row pivots, whether a Cholesky pivot is
positive) chooses with comparisons on traced values: each records a guard, the tape is exact on the path it
recorded, and a call where a choice flips is answered by a new recording (branches.py). det and inv of 1x1, 2x2
and 3x3 matrices keep their closed forms, which choose nothing and so never re-record.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..table import ops
from ..errors import TracingError
from .elementwise import reduce_along as _reduce
from .tracer import Scalar, elementwise, to_cells, wrap

LinAlgError = np.linalg.LinAlgError
SlogdetResult = type(np.linalg.slogdet(np.eye(1)))
_EXPANSION_MAX = 8  # det by cofactor expansion (2^n terms) on an exactly singular pivot path


def cells(a) -> np.ndarray:
    """Any operand (traced or not) as an object array of cells."""
    return np.asarray(to_cells(a), dtype=object)


def value(c) -> float:
    """The value of a cell at the recording point (NaN where unknown)."""
    v = c.value if isinstance(c, Scalar) else c
    return float("nan") if v is None else float(v)


def square_stack(a, name: str) -> np.ndarray:
    """A stack of square matrices, or numpy's LinAlgError."""
    m = cells(a)
    if m.ndim < 2:
        raise LinAlgError(f"np.linalg.{name}: {m.ndim}-dimensional array given. Array must be at least "
                          "two-dimensional")
    if m.shape[-1] != m.shape[-2]:
        raise LinAlgError(f"np.linalg.{name}: last 2 dimensions of the array must be square")
    return m


def each(m: np.ndarray, fn, out_shape: tuple) -> np.ndarray:
    """``fn`` (a matrix as a list of row lists -> cells of ``out_shape``) over every matrix of a stack."""
    batch = m.shape[:-2]
    out = np.empty(batch + out_shape, object)
    for idx in np.ndindex(batch):
        r = fn([list(row) for row in m[idx]])
        if out_shape:
            out[idx] = np.asarray(r, dtype=object).reshape(out_shape)
        else:
            out[idx] = r
    return out


class LU:
    """``P A = L U`` of one matrix (row lists) with partial pivoting, as LAPACK's getrf chooses.

    The pivot of column k is the first row of largest magnitude: ``abs(a[i][k]) > abs(a[p][k])`` is a guard, and
    ``a[k][k] == 0`` (the column is zero from row k down) is one more; ``singular`` is then that column.
    """

    def __init__(self, m: list):
        a = [list(r) for r in m]
        n = len(a)
        self.perm, self.sign, self.singular = list(range(n)), 1.0, None
        for k in range(n):
            p = k
            for i in range(k + 1, n):
                if abs(a[i][k]) > abs(a[p][k]):  # guard: the pivot row
                    p = i
            if p != k:
                a[k], a[p] = a[p], a[k]
                self.perm[k], self.perm[p] = self.perm[p], self.perm[k]
                self.sign = -self.sign
            if a[k][k] == 0:  # guard: no pivot in this column
                self.singular = k
                break
            for i in range(k + 1, n):
                f = a[i][k] / a[k][k]
                a[i][k] = f
                for j in range(k + 1, n):
                    a[i][j] = a[i][j] - f * a[k][j]
        self.a, self.n = a, n

    def pivots(self) -> list:
        return [self.a[k][k] for k in range(self.n)]

    def solve(self, b: list) -> list:
        """``x`` with ``A x = b`` for one right-hand side (a list of n cells)."""
        if self.singular is not None:
            raise LinAlgError("Singular matrix (an exactly zero pivot at the recording point)")
        a, n = self.a, self.n
        y = [b[p] for p in self.perm]
        for i in range(n):
            for j in range(i):
                y[i] = y[i] - a[i][j] * y[j]
        for i in reversed(range(n)):
            for j in range(i + 1, n):
                y[i] = y[i] - a[i][j] * y[j]
            y[i] = y[i] / a[i][i]
        return y


def _product(xs):
    r = xs[0]
    for x in xs[1:]:
        r = r * x
    return r


def _cofactors(m: list) -> list:
    """Cofactor matrix of a 2x2 or 3x3 matrix (row lists)."""
    if len(m) == 2:
        return [[m[1][1], -m[1][0]], [-m[0][1], m[0][0]]]
    c = [[None] * 3 for _ in range(3)]
    for i in range(3):
        for j in range(3):
            r, s = [k for k in range(3) if k != i], [k for k in range(3) if k != j]
            minor = m[r[0]][s[0]] * m[r[1]][s[1]] - m[r[0]][s[1]] * m[r[1]][s[0]]
            c[i][j] = minor if (i + j) % 2 == 0 else -minor
    return c


def _closed_det(m: list):
    if len(m) == 1:
        return m[0][0]
    c = _cofactors(m)
    return sum((m[0][j] * c[0][j] for j in range(1, len(m))), m[0][0] * c[0][0])


def _expansion_det(m: list):
    """Cofactor expansion, row by row over column subsets: a polynomial, so exact in value and derivative where
    LU would divide by a zero pivot."""
    n = len(m)
    if n > _EXPANSION_MAX:
        raise TracingError(f"np.linalg.det of a {n}x{n} matrix that is exactly singular at the recording point: "
                           f"its derivative needs a cofactor expansion, done up to {_EXPANSION_MAX}x"
                           f"{_EXPANSION_MAX}. Record at a nonsingular matrix.")
    minors = {(): 1.0}
    for k in range(n):
        nxt = {}
        for cols in itertools.combinations(range(n), k + 1):
            acc = None
            for pos, j in enumerate(cols):
                term = m[k][j] * minors[cols[:pos] + cols[pos + 1:]]
                term = term if (k + pos) % 2 == 0 else -term
                acc = term if acc is None else acc + term
            nxt[cols] = acc
        minors = nxt
    return minors[tuple(range(n))]


def _det_one(m: list):
    n = len(m)
    if n == 0:
        return 1.0
    if n <= 3:
        return _closed_det(m)
    lu = LU(m)
    if lu.singular is not None:
        return _expansion_det(m)
    return lu.sign * _product(lu.pivots())


def det(a):
    """Determinant: closed forms up to 3x3, LU with guarded partial pivoting beyond (numpy's algorithm)."""
    return wrap(each(square_stack(a, "det"), _det_one, ()))


def _slogdet_one(m: list) -> list:
    n = len(m)
    if n == 0:
        return [1.0, 0.0]
    if n <= 3:
        d = _closed_det(m)
    else:
        lu = LU(m)
        if lu.singular is None:
            piv = lu.pivots()
            sign = lu.sign * _product([ops.sign(p) for p in piv])
            return [sign, sum((ops.log(abs(p)) for p in piv[1:]), ops.log(abs(piv[0])))]
        d = _expansion_det(m)
    return [ops.sign(d), ops.log(abs(d))]


def slogdet(a):
    """``(sign, logabsdet)``; the sign carries no derivative. An exactly singular matrix gives (0, -inf)."""
    r = each(square_stack(a, "slogdet"), _slogdet_one, (2,))
    return SlogdetResult(wrap(r[..., 0]), wrap(r[..., 1]))


def _inv_one(m: list) -> list:
    n = len(m)
    if n <= 3:
        d = _closed_det(m)
        if value(d) == 0.0:
            raise LinAlgError("Singular matrix (at the recording point)")
        if n == 1:
            return [[1.0 / m[0][0]]]
        c = _cofactors(m)
        return [[c[j][i] / d for j in range(n)] for i in range(n)]
    lu = LU(m)
    cols = [lu.solve([1.0 if i == j else 0.0 for i in range(n)]) for j in range(n)]
    return [[cols[j][i] for j in range(n)] for i in range(n)]


def inv(a):
    """Inverse: adjugate / determinant up to 3x3, LU with guarded partial pivoting beyond."""
    m = square_stack(a, "inv")
    return wrap(each(m, _inv_one, m.shape[-2:]))


def solve(a, b):
    """``x`` with ``a @ x = b`` by LU with guarded partial pivoting, with numpy 2's broadcasting: ``b`` is a
    vector if it is 1-d, else a stack of matrices whose leading axes broadcast against ``a``'s."""
    m, rhs = square_stack(a, "solve"), cells(b)
    n = m.shape[-1]
    vector = rhs.ndim == 1
    if vector:
        rhs = rhs[:, None]
    if rhs.ndim < 2 or rhs.shape[-2] != n:
        raise ValueError(f"np.linalg.solve: b of shape {np.shape(to_cells(b))} does not match a of shape "
                         f"{m.shape}")
    batch = np.broadcast_shapes(m.shape[:-2], rhs.shape[:-2])
    factors = np.empty(m.shape[:-2], object)
    for idx in np.ndindex(m.shape[:-2]):
        rows = [list(r) for r in m[idx]]
        factors[idx] = _Adjugate(rows) if n <= 3 and _guards_forbidden(m) else LU(rows)
    factors = np.broadcast_to(factors, batch)
    rhs = np.broadcast_to(rhs, batch + rhs.shape[-2:])
    out = np.empty(batch + rhs.shape[-2:], object)
    for idx in np.ndindex(batch):
        for k in range(rhs.shape[-1]):
            out[idx + (slice(None), k)] = factors[idx].solve(list(rhs[idx + (slice(None), k)]))
    return wrap(out[..., 0] if vector else out)


def _guards_forbidden(m: np.ndarray) -> bool:
    """Recording with on_branch='forbid': solve then uses the branch-free closed-form inverse up to 3x3."""
    return any(isinstance(c, Scalar) and c.rec.on_branch is None for c in m.flat)


class _Adjugate:
    """``solve`` for one matrix up to 3x3 without a single comparison: its closed-form inverse times b."""

    def __init__(self, m: list):
        self.inverse = _inv_one(m)

    def solve(self, b: list) -> list:
        return [sum((r[j] * b[j] for j in range(1, len(b))), r[0] * b[0]) for r in self.inverse]


def _cholesky_one(m: list) -> list:
    n = len(m)
    low = [[0.0] * n for _ in range(n)]
    for j in range(n):
        s = m[j][j]
        for k in range(j):
            s = s - low[j][k] * low[j][k]
        if not s > 0:  # guard: positive pivot
            raise LinAlgError("Matrix is not positive definite (at the recording point)")
        low[j][j] = ops.sqrt(s)
        for i in range(j + 1, n):
            t = m[i][j]
            for k in range(j):
                t = t - low[i][k] * low[j][k]
            low[i][j] = t / low[j][j]
    return low


def cholesky(a, /, *, upper: bool = False):
    """Lower Cholesky factor (upper=True: its transpose). Like numpy, only the lower triangle is read, so the
    derivative with respect to the strict upper triangle is zero. Each pivot's ``> 0`` is a guard: a call where
    the matrix is not positive definite re-records and raises numpy's LinAlgError."""
    m = square_stack(a, "cholesky")
    r = each(m, _cholesky_one, m.shape[-2:])
    return wrap(np.swapaxes(r, -1, -2) if upper else r)


def norm(x, ord=None, axis=None, keepdims=False):
    """2-norm of vectors, Frobenius norm of matrices (``ord=None``); 1- and inf-norms of vectors."""
    cells = np.asarray(to_cells(x), dtype=object)
    matrix = (axis is None and cells.ndim == 2) or (isinstance(axis, tuple) and len(axis) == 2)
    if matrix and ord not in (None, "fro"):
        raise TracingError(f"np.linalg.norm with ord={ord!r} over a matrix is not supported on traced values "
                           "(only the Frobenius norm, ord=None or 'fro')")
    if ord in (None, 2, "fro"):
        return elementwise(ops.sqrt, wrap(np.sum(cells * cells, axis=axis, keepdims=keepdims)))
    if ord == 1:
        return wrap(np.sum(to_cells(elementwise(ops.absolute, cells)), axis=axis, keepdims=keepdims))
    if ord == np.inf and cells.ndim == 1:
        return _reduce(ops.maximum, elementwise(ops.absolute, cells))
    if ord == -np.inf and cells.ndim == 1:
        return _reduce(ops.minimum, elementwise(ops.absolute, cells))
    if isinstance(ord, (int, float, np.integer, np.floating)) and not matrix and np.isfinite(ord):
        if ord == 0:  # the count of nonzeros: piecewise constant
            return wrap(np.sum(to_cells(elementwise(ops.ne, cells, 0.0)), axis=axis, keepdims=keepdims))
        p = float(ord)  # numpy's order of operations: |x| ** p, summed, ** (1 / p)
        total = np.sum(to_cells(elementwise(ops.absolute, cells) ** p), axis=axis, keepdims=keepdims)
        return wrap(total) ** (1.0 / p)
    raise TracingError(f"np.linalg.norm with ord={ord!r} on a {cells.ndim}-d traced array is not supported")


CUSTOM = {np.linalg.det: det, np.linalg.slogdet: slogdet, np.linalg.inv: inv, np.linalg.solve: solve,
          np.linalg.cholesky: cholesky}
