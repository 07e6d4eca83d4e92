"""Sparsity patterns read from a tape's structure, column colouring, and compressed sparse Jacobians/Hessians.

Patterns are structural: they hold every entry that can be nonzero for some input (a superset of the entries
that are nonzero at any one point), so an entry that happens to vanish at a point is still reported.
Dependency sets are Python ints used as bit sets (bit j = input j).

Compression: columns that never share a row get one colour, and one forward sweep per colour, seeded with the
sum of the unit tangents of its columns, yields every entry directly (entry (i, j) is row i of the compressed
column of j's colour). For symmetric Hessians the same colouring of the Hessian's pattern (a distance-2
colouring of its adjacency graph) is used, with direct recovery: block-diagonal 2x2 patterns need 2 colours,
tridiagonal ones 3.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .higher import finish_tape, gradient_program, hessian_tape, tangent_sweeps
from ..table.ops import BY_CODE
from . import separable
from ..ir.structure import scalar
from ..ir.tape import Tape



def _bits(mask: int):
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def _differentiable_args(row, args: list) -> list:
    if row.no_derivative:
        return []
    return [a for i, a in enumerate(args) if i not in row.passive] if row.passive else args


def _dependencies(tape: Tape) -> list[int]:
    """For every slot, the bit set of inputs it depends on differentiably."""
    deps = [1 << i for i in range(tape.n_inputs)] + [0] * (tape.n_slots - tape.n_inputs)
    first = tape.first_result
    for k, (code, *args) in enumerate(tape.code.tolist()):
        row = BY_CODE[code]
        m = 0
        for a in _differentiable_args(row, args[:row.arity]):
            m |= deps[a]
        deps[first + k] = m
    return deps


def _pattern(masks: list[int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = [], []
    for i, m in enumerate(masks):
        js = list(_bits(m))
        rows += [i] * len(js)
        cols += js
    return np.array(rows, np.int64), np.array(cols, np.int64)


def jacobian_sparsity(tape: Tape) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of the structurally nonzero Jacobian entries (flattened outputs x flattened inputs),
    sorted row-major: the order of ``sparse_jacobian_tape``'s outputs."""
    return tape.memo(("jacobian_sparsity",),
                     lambda: _jacobian_pattern(scalar(tape, "Jacobian sparsity: read on scalar code")))


def _jacobian_pattern(flat: Tape) -> tuple[np.ndarray, np.ndarray]:
    deps = _dependencies(flat)
    return _pattern([deps[s] for s in flat.outputs.tolist()])


def _reaches_outputs(tape: Tape) -> bytearray:
    """Instructions whose result flows into an output along differentiable arguments."""
    need = bytearray(tape.n_slots)
    for s in tape.outputs.tolist():
        need[s] = 1
    first = tape.first_result
    code = tape.code.tolist()
    for k in range(len(code) - 1, -1, -1):
        if need[first + k]:
            row = BY_CODE[code[k][0]]
            for a in _differentiable_args(row, code[k][1:1 + row.arity]):
                need[a] = 1
    return need


def hessian_sparsity(tape: Tape) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of the structurally nonzero entries of the Hessian (for vector outputs: of ``w . f``,
    the union over outputs), both triangles, sorted row-major.

    Input dependency sets are propagated forward; every nonlinear instruction that reaches an output records
    the pairs it can couple: ``mul(a, b)``: deps(a) x deps(b); ``div(a, b)``: that plus deps(b) x deps(b);
    add/sub/neg and piecewise-linear ops (abs, max, min, select): none; any other op: all pairs of its
    arguments' dependencies.
    """
    hit = separable.pattern(tape, hessian_sparsity)
    if hit is not None:
        return hit
    tape = scalar(tape, "Hessian sparsity: read on scalar instructions")
    return tape.memo(("hessian_sparsity",), lambda: _hessian_pattern(tape))


def _hessian_pattern(tape: Tape) -> tuple[np.ndarray, np.ndarray]:
    deps = _dependencies(tape)
    need = _reaches_outputs(tape)
    nb = [0] * tape.n_inputs

    def couple(a: int, b: int) -> None:
        for i in _bits(a):
            nb[i] |= b
        for j in _bits(b):
            nb[j] |= a

    first = tape.first_result
    for k, (code, *args) in enumerate(tape.code.tolist()):
        row = BY_CODE[code]
        # the op table says how each op couples its arguments (second derivatives of linear and piecewise-linear
        # ops vanish where defined)
        if not need[first + k] or row.curvature in ("linear", "piecewise") or row.no_derivative:
            continue
        d = [deps[a] for a in args[:row.arity]]
        if row.curvature == "bilinear":
            couple(d[0], d[1])
        elif row.curvature == "quotient":
            couple(d[0], d[1])
            couple(d[1], d[1])
        else:
            u = 0
            for m in d:
                u |= m
            couple(u, u)
    return _pattern(nb)


def color_columns(rows, cols, n: int) -> np.ndarray:
    """Greedy colouring (natural order) of ``n`` columns such that columns sharing a row differ in colour.

    Returns one colour (0, 1, ...) per column; the number of colours is the number of compressed sweeps.
    Applied to a symmetric Hessian pattern it is a distance-2 colouring, which allows direct recovery.
    """
    by_row: dict[int, list[int]] = {}
    by_col: list[list[int]] = [[] for _ in range(n)]
    for r, c in zip(np.asarray(rows).tolist(), np.asarray(cols).tolist()):
        by_row.setdefault(r, []).append(c)
        by_col[c].append(r)
    colors = np.full(n, -1, np.int64)
    for j in range(n):
        taken = {colors[k] for r in by_col[j] for k in by_row[r]}
        c = 0
        while c in taken:
            c += 1
        colors[j] = c
    return colors


def _groups(colors: np.ndarray) -> list[list[int]]:
    k = int(colors.max()) + 1 if len(colors) else 0
    return [np.flatnonzero(colors == c).tolist() for c in range(k)]


def sparse_jacobian_tape(tape: Tape) -> Tape:
    """A tape with the same inputs whose outputs are the Jacobian's structurally nonzero entries, in the order of
    ``jacobian_sparsity(tape)``: one forward sweep per colour of ``color_columns``."""
    rows, cols = jacobian_sparsity(tape)
    colors = color_columns(rows, cols, tape.n_inputs)
    rec, _, T = tangent_sweeps(scalar(tape, "sparse Jacobian: colour sweeps read scalar instructions"), _groups(colors))
    values = [T[colors[j]][i] for i, j in zip(rows.tolist(), cols.tolist())]
    return finish_tape(rec, tape, values, (len(values),))


def sparse_hessian_tape(tape: Tape, weights: bool = False) -> Tape:
    """A tape with the same inputs (plus ``w`` when ``weights=True``) whose outputs are the Hessian's
    structurally nonzero entries in the order of ``hessian_sparsity(tape)``: forward-over-reverse, one forward
    sweep per colour. A partially separable tape gets its loop body's entries scattered into place."""
    if not weights:
        sep = separable.sparse(tape, hessian_sparsity, hessian_tape)
        if sep is not None:
            return sep
    rows, cols = hessian_sparsity(tape)
    colors = color_columns(rows, cols, tape.n_inputs)
    g = gradient_program(tape, weights)
    rec, _, T = tangent_sweeps(scalar(g, "sparse Hessian: colour sweeps read scalar instructions"), _groups(colors))
    # every entry is recoverable from either triangle; reading only (min, max) lets the other half go dead
    values = [T[colors[max(i, j)]][min(i, j)] for i, j in zip(rows.tolist(), cols.tolist())]
    return finish_tape(rec, g, values, (len(values),))


def to_scipy(rows, cols, values, shape: tuple[int, int], format: str = "csr"):
    """A ``scipy.sparse`` matrix (``format`` 'coo', 'csr' or 'csc') from a point's COO triple (needs scipy)."""
    try:
        import scipy.sparse as sp
    except ImportError:
        raise ImportError("to_scipy needs scipy (pip install scipy); the COO triple (rows, cols, values) works "
                          "without it") from None
    values = np.asarray(values)
    if values.ndim != 1:
        raise InputError(f"values has shape {values.shape}: pass one point's values (nnz,), e.g. values[k] of a "
                         "batch")
    return sp.coo_matrix((values, (rows, cols)), shape=shape).asformat(format)


__all__ = ["jacobian_sparsity", "hessian_sparsity", "color_columns", "sparse_jacobian_tape", "sparse_hessian_tape",
           "to_scipy"]
