"""Symmetric eigenproblems and singular values on traced values, by Jacobi rotations.

Cyclic Jacobi (eigh, eigvalsh) and one-sided Jacobi (svd, pinv, the matrix 2-, -2- and nuclear norms) are
straight-line code once the number of sweeps is fixed, and both are accurate (backward stable; one-sided Jacobi
gives singular values to high relative accuracy). The sweep count is fixed at the recording point: the sweeps
needed there to reach convergence, plus one. Convergence is then a guard, so a call point that the fixed sweeps
do not converge re-records with its own count. Each rotation takes the smaller angle and is computed branch-free
(selects), so rotations add no guards; sorting the eigenvalues (ascending, like numpy) and singular values
(descending) adds guarded comparisons. The derivative through the sweeps converges with them to the analytic one
where eigenvalues (singular values) are distinct.
"""
from __future__ import annotations

import numpy as np

from ..table import ops
from ..errors import TracingError
from .linalg import LinAlgError, cells, square_stack, value
from .linalg import norm as _vector_norm
from .numpy_more import sort_order
from .elementwise import reduce_along as _reduce
from .tracer import wrap

EighResult = type(np.linalg.eigh(np.eye(1)))
SVDResult = type(np.linalg.svd(np.eye(1)))
_EPS = np.finfo(np.float64).eps
_MAX_SWEEPS = 60
_MARGIN = 1  # sweeps recorded beyond those the recording point needed


def rotation(app, aqq, apq):
    """``(t, c, s)`` of the rotation zeroing ``apq`` in ``[[app, apq], [apq, aqq]]`` by the smaller angle:
    ``t = 2 apq / (d + sign(d) hypot(d, 2 apq))``, ``d = aqq - app``; no rotation (t = 0) when apq = d = 0."""
    d = aqq - app
    r = ops.hypot(d, 2.0 * apq)
    den = ops.select(ops.ge(d, 0.0), d + r, d - r)
    den = ops.select(ops.eq(den, 0.0), 1.0, den)
    t = 2.0 * apq / den
    c = 1.0 / ops.sqrt(1.0 + t * t)
    return t, c, t * c


def _rotate(rows: list, p: int, q: int, c, s) -> None:
    """Columns p, q of ``rows`` (lists) times the rotation [[c, s], [-s, c]]."""
    for row in rows:
        x, y = row[p], row[q]
        row[p], row[q] = c * x - s * y, s * x + c * y


def _is_zero_constant(x) -> bool:
    return isinstance(x, float) and x == 0.0


def _fixed_sweeps(sweep, converged_value, converged_traced, what: str) -> None:
    """Sweep until converged at the recording point, then ``_MARGIN`` more; then guard on convergence."""
    for k in range(_MAX_SWEEPS):
        if converged_value():
            break
        sweep()
    else:
        raise LinAlgError(f"{what}: Jacobi sweeps did not converge at the recording point (inf or NaN?)")
    for _ in range(_MARGIN):
        sweep()
    for cond in converged_traced():
        if not cond:  # guard: converged at the call point as well
            raise LinAlgError(f"{what}: Jacobi sweeps did not converge")


def _eigh_one(m: list, uplo: str, vectors: bool):
    n = len(m)
    a = [[m[max(i, j)][min(i, j)] if uplo == "L" else m[min(i, j)][max(i, j)] for j in range(n)]
         for i in range(n)]
    v = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)] if vectors else None
    total = sum((x * x for row in a for x in row), 0.0)
    total_v = sum(value(x) ** 2 for row in a for x in row)

    def sweep():
        for p in range(n - 1):
            for q in range(p + 1, n):
                apq = a[p][q]
                if _is_zero_constant(apq):
                    continue  # zero for every input: the rotation is the identity
                t, c, s = rotation(a[p][p], a[q][q], apq)
                a[p][p], a[q][q] = a[p][p] - t * apq, a[q][q] + t * apq
                a[p][q] = a[q][p] = 0.0  # annihilated exactly, for every input on this path
                for r in range(n):
                    if r != p and r != q:
                        x, y = a[r][p], a[r][q]
                        a[r][p] = a[p][r] = c * x - s * y
                        a[r][q] = a[q][r] = s * x + c * y
                if v is not None:
                    _rotate(v, p, q, c, s)

    def off():
        return sum((a[i][j] * a[i][j] for i in range(n) for j in range(i + 1, n)), 0.0)

    _fixed_sweeps(sweep, lambda: value(off()) <= _EPS ** 2 * total_v,
                  lambda: [off() <= _EPS ** 2 * total], "np.linalg.eigh")
    w = [a[i][i] for i in range(n)]
    perm = sort_order(w, nan_last=False)  # guards: ascending eigenvalues
    w = [w[i] for i in perm]
    return w, ([[row[i] for i in perm] for row in v] if vectors else None)


def _eig_stack(a, uplo, vectors: bool, name: str):
    if uplo not in ("L", "U"):
        raise ValueError("UPLO argument must be 'L' or 'U'")
    m = square_stack(a, name)
    n = m.shape[-1]
    w, vs = np.empty(m.shape[:-1], object), np.empty(m.shape, object)
    for idx in np.ndindex(m.shape[:-2]):
        wi, vi = _eigh_one([list(r) for r in m[idx]], uplo, vectors)
        w[idx] = np.asarray(wi, dtype=object).reshape(n)
        if vectors:
            vs[idx] = np.asarray(vi, dtype=object).reshape(n, n)
    return w, vs


def eigh(a, UPLO="L"):
    """Eigenvalues (ascending) and eigenvectors (columns) of symmetric matrices, reading the UPLO triangle.
    Each eigenvector's sign is whatever the rotations give (numpy's is arbitrary too)."""
    w, v = _eig_stack(a, UPLO, True, "eigh")
    return EighResult(wrap(w), wrap(v))


def eigvalsh(a, UPLO="L"):
    """Eigenvalues (ascending) of symmetric matrices, reading the UPLO triangle."""
    return wrap(_eig_stack(a, UPLO, False, "eigvalsh")[0])


def _one_sided(m: list):
    """One-sided Jacobi on an M x N matrix, M >= N: ``A V = W`` with orthogonal columns. Returns W's columns
    (lists), V (row lists) and the squared column norms."""
    rows_m, n = len(m), len(m[0])
    w = [[m[i][j] for i in range(rows_m)] for j in range(n)]
    v = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]

    def dot(x, y):
        return sum((p * q for p, q in zip(x[1:], y[1:])), x[0] * y[0])

    def sweep():
        for p in range(n - 1):
            for q in range(p + 1, n):
                g = dot(w[p], w[q])
                if _is_zero_constant(g):
                    continue
                t, c, s = rotation(dot(w[p], w[p]), dot(w[q], w[q]), g)
                w[p], w[q] = [c * x - s * y for x, y in zip(w[p], w[q])], [s * x + c * y for x, y in zip(w[p], w[q])]
                _rotate(v, p, q, c, s)

    tol2 = rows_m * _EPS ** 2  # |w_p . w_q| <= sqrt(M) eps |w_p| |w_q|, as LAPACK's gesvj

    def pairs():
        return [(dot(w[p], w[q]), dot(w[p], w[p]), dot(w[q], w[q])) for p in range(n - 1) for q in range(p + 1, n)]

    _fixed_sweeps(sweep, lambda: all(value(g) ** 2 <= tol2 * value(x) * value(y) for g, x, y in pairs()),
                  lambda: [g * g <= tol2 * x * y for g, x, y in pairs()], "np.linalg.svd")
    return w, v, [dot(col, col) for col in w]


def _svd_one(m: list, uv: bool):
    transposed = len(m) < len(m[0])
    if transposed:
        m = [list(col) for col in zip(*m)]
    w, v, norms2 = _one_sided(m)
    sigma = [ops.sqrt(x) for x in norms2]
    perm = sort_order(sigma, nan_last=False)[::-1]  # guards: descending singular values
    s = [sigma[j] for j in perm]
    if not uv:
        return s, None, None
    for j in perm:
        if not sigma[j] > 0:  # guard
            raise TracingError("np.linalg.svd with compute_uv=True of a rank-deficient matrix (a zero singular "
                               "value at the recording point): its singular vectors are not determined. Use "
                               "compute_uv=False, np.linalg.pinv, or record at a full-rank matrix.")
    u = [[w[j][i] / sigma[j] for j in perm] for i in range(len(m))]
    vh = [[v[i][j] for i in range(len(v))] for j in perm]
    if transposed:
        u, vh = [list(r) for r in zip(*vh)], [list(r) for r in zip(*u)]
    return s, u, vh


def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """Singular values (descending) and, with compute_uv, U and Vh, by one-sided Jacobi. ``full_matrices``
    needs square matrices (completing U or Vh to a basis has no derivative)."""
    m = cells(a)
    if m.ndim < 2:
        raise LinAlgError(f"{m.ndim}-dimensional array given. Array must be at least two-dimensional")
    rows, cols = m.shape[-2:]
    k = min(rows, cols)
    if compute_uv and full_matrices and rows != cols:
        raise TracingError(f"np.linalg.svd(full_matrices=True) of a {rows}x{cols} traced matrix: the extra "
                           "columns of U or Vh are an arbitrary basis completion. Pass full_matrices=False.")
    s = np.empty(m.shape[:-2] + (k,), object)
    u, vh = np.empty(m.shape[:-2] + (rows, k), object), np.empty(m.shape[:-2] + (k, cols), object)
    for idx in np.ndindex(m.shape[:-2]):
        si, ui, vi = _svd_one([list(r) for r in m[idx]], compute_uv)
        s[idx] = np.asarray(si, dtype=object)
        if compute_uv:
            u[idx], vh[idx] = np.asarray(ui, dtype=object), np.asarray(vi, dtype=object)
    return SVDResult(wrap(u), wrap(s), wrap(vh)) if compute_uv else wrap(s)


def pinv(a, rcond=None, hermitian=False, *, rtol=np._NoValue):
    """Pseudo-inverse ``sum_j v_j w_j^T / |w_j|^2`` over singular values above ``rcond * max``, by one-sided
    Jacobi (``w_j = sigma_j u_j``, so no division by a zero singular value); the cutoff is a select."""
    m = cells(a)
    if m.ndim < 2:
        raise LinAlgError(f"{m.ndim}-dimensional array given. Array must be at least two-dimensional")
    if rcond is None:
        rcond = 1e-15 if rtol is np._NoValue else (max(m.shape[-2:]) * _EPS if rtol is None else rtol)
    out = np.empty(m.shape[:-2] + m.shape[-2:][::-1], object)
    for idx in np.ndindex(m.shape[:-2]):
        rows = [list(r) for r in m[idx]]
        transposed = len(rows) < len(rows[0])
        w, v, norms2 = _one_sided([list(c) for c in zip(*rows)] if transposed else rows)
        top = _reduce(ops.maximum, np.asarray(norms2, dtype=object))
        keep = [ops.gt(x, float(rcond) ** 2 * top) for x in norms2]
        scale = [ops.select(k, 1.0 / x, 0.0) for k, x in zip(keep, norms2)]
        vm, wm = np.asarray(v, dtype=object), np.asarray(w, dtype=object).T  # (N, N), (M, N)
        p = (vm * np.asarray(scale, dtype=object)) @ wm.T  # (N, M)
        out[idx] = p.T if transposed else p
    return wrap(out)


def norm(x, ord=None, axis=None, keepdims=False):
    """Matrix norms 2, -2, 'nuc' (singular values by one-sided Jacobi) and 1, -1, inf, -inf (branch-free
    maximum/minimum of absolute row or column sums); everything else as before."""
    c = cells(x)
    pair = (axis is None and c.ndim == 2) or (isinstance(axis, tuple) and len(axis) == 2)
    if not pair or ord in (None, "fro"):
        return _vector_norm(x, ord, axis, keepdims)
    axes = (0, 1) if axis is None else tuple(int(i) % c.ndim for i in axis)
    m = np.moveaxis(c, axes, (-2, -1))
    out = np.empty(m.shape[:-2], object)
    for idx in np.ndindex(m.shape[:-2]):
        out[idx] = _matrix_norm(m[idx], ord)
    if keepdims:
        out = np.expand_dims(out, axes)
    return wrap(out)


def _matrix_norm(m: np.ndarray, ord):
    if ord in (1, -1, np.inf, -np.inf):
        sums = np.sum(np.frompyfunc(ops.absolute, 1, 1)(m), axis=0 if ord in (1, -1) else 1)
        return _reduce(ops.maximum if ord > 0 else ops.minimum, sums)
    if ord not in (2, -2, "nuc"):
        raise ValueError(f"Invalid norm order {ord!r} for matrices.")
    rows = [list(r) for r in m]
    if len(rows) < len(rows[0]):
        rows = [list(col) for col in zip(*rows)]
    sigma = np.asarray([ops.sqrt(x) for x in _one_sided(rows)[2]], dtype=object)
    if ord == "nuc":
        return wrap(np.sum(sigma))
    return _reduce(ops.maximum if ord == 2 else ops.minimum, sigma)


CUSTOM = {np.linalg.eigh: eigh, np.linalg.eigvalsh: eigvalsh, np.linalg.svd: svd, np.linalg.pinv: pinv,
          np.linalg.norm: norm, np.linalg.svdvals: lambda x, /: svd(x, compute_uv=False)}
