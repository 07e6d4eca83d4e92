"""Hessians of partially separable tapes: the body's small Hessian, scattered into place.

A tape whose value is the ``sum`` output of one map reading only inputs is ``f(x) = sum_k f_B(x[T[k]])``
(Griewank & Toint's partial separability; a pair potential, a finite-element energy). Its Hessian is
``sum_k P_k^T H_B(x[T[k]]) P_k``: the dense Hessian of the small body (``n_in x n_in``, built once by the scalar
algorithm) computed at every iteration and added into the ``(T[k, a], T[k, b])`` entries. As a tape: one map whose
body is the body's Hessian tape and whose outputs scatter into the touched entries, so building it costs the body,
not the length, and the kernel is one loop (what a hand-written pair loop adding 6x6 blocks does).

Exactly symmetric (the body Hessian is, and both triangles receive the same contributions in the same order);
``hessian_tape`` and ``value_gradient_hessian_tape`` add the same body Hessians in the same order, so they agree
bit for bit. Entries no iteration touches are +0.0, as in the scalar algorithm.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .structure import MAP_ROW, Map, map_runs
from .tape import Tape


def separable(tape: Tape) -> tuple[Map, int] | None:
    """``(map, output index)`` when ``tape`` is partially separable in the sense above, else None."""
    if tape.n_outputs != 1 or len(tape.guards) or len(tape.maps) != 1:
        return None
    (start, _, m), = map_runs(tape)
    if m.tables.size and int(m.tables.max()) >= tape.n_inputs:
        return None
    out = int(tape.outputs[0]) - tape.first_result - start
    for j, (kind, off) in enumerate(zip(m.kinds, m.offsets())):
        if kind == "sum" and off == out:
            return m, j
    return None


def _body(tape: Tape):
    """(map, the body restricted to the summed output) of a partially separable tape, or None."""
    found = separable(tape)
    if found is None:
        return None
    m, j = found
    return m, m.body.replace(outputs=m.body.outputs[j:j + 1], output_shape=())


def pattern(tape: Tape, body_pattern: Callable) -> tuple[np.ndarray, np.ndarray] | None:
    """``hessian_sparsity`` of a partially separable tape from its body's: the body's pairs ``(a, b)`` at every
    ``(T[k, a], T[k, b])``, sorted row-major (what the analysis of the unrolled tape finds), or None."""
    found = _body(tape)
    if found is None:
        return None
    m, body = found
    keys = _keys(m, tape.n_inputs, *body_pattern(body))
    flat = np.unique(keys)
    return flat // tape.n_inputs, flat % tape.n_inputs


def _keys(m: Map, n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    T = m.tables.astype(np.int64)
    return T[:, rows] * n + T[:, cols]  # (iterations, body pattern entries): row-major flat index


def sparse(tape: Tape, body_pattern: Callable, body_hessian: Callable) -> Tape | None:
    """The sparse Hessian tape (outputs in the order of ``pattern``) of a partially separable tape: the body's
    structurally nonzero Hessian entries scattered into the pattern's positions; None when not separable."""
    found = _body(tape)
    if found is None:
        return None
    m, body = found
    rows, cols = body_pattern(body)
    keys = _keys(m, tape.n_inputs, rows, cols)
    flat, inverse = np.unique(keys, return_inverse=True)
    hb = body_hessian(body)
    n_in = body.n_inputs
    hb = hb.replace(outputs=hb.outputs[rows * n_in + cols], output_shape=(len(rows),))
    return _scatter_tape(tape, Map(hb, m.tables, ("scatter",) * len(rows), inverse.reshape(keys.shape), len(flat)),
                         np.arange(len(flat)), len(flat), (len(flat),))


def hessian(tape: Tape, body_hessian: Callable[[Tape], Tape], with_value_gradient: bool) -> Tape | None:
    """The Hessian tape (``(n, n)``), or ``[value, gradient, Hessian]`` (``(1 + n + n * n,)``) with
    ``with_value_gradient``, of a partially separable tape; None when the tape is not one. ``body_hessian`` builds
    the scalar algorithm's tape for the body (``higher.hessian_tape`` or ``higher.value_gradient_hessian_tape``)."""
    found = _body(tape)
    if found is None:
        return None
    m, body = found
    hb = body_hessian(body)
    n, n_in, k = tape.n_inputs, body.n_inputs, m.n
    T = m.tables.astype(np.int64)
    hess = (T[:, :, None] * n + T[:, None, :]).reshape(k, n_in * n_in)
    if with_value_gradient:
        kinds = ("sum",) + ("scatter",) * (n_in + n_in * n_in)
        dst = np.concatenate([T, n + hess], axis=1)  # gradient entries, then Hessian entries after them
        size = n + n * n
    else:
        kinds = ("scatter",) * (n_in * n_in)
        dst, size = hess, n * n
    touched, inverse = np.unique(dst, return_inverse=True)
    fused = Map(hb, m.tables, kinds, inverse.reshape(dst.shape), len(touched))
    shape = (1 + n + n * n,) if with_value_gradient else (n, n)
    return _scatter_tape(tape, fused, touched, size, shape, with_value_gradient)


def _scatter_tape(tape: Tape, fused: Map, touched: np.ndarray, size: int, shape: tuple,
                  value_first: bool = False) -> Tape:
    """The tape of one map whose scatter range holds the ``touched`` entries of ``size`` outputs (the others are
    +0.0), after its sum output when ``value_first``."""
    first = tape.first_const + 1  # one constant: the +0.0 of untouched entries
    cell = np.full(size, tape.first_const, np.int64)
    cell[touched] = first + fused.rows - fused.scatter_size + np.arange(len(touched))
    outputs = cell if not value_first else np.concatenate([[first], cell])
    code = np.zeros((fused.rows, 4), np.int64)
    code[:, 0] = MAP_ROW
    code[:, 2] = np.arange(fused.rows)
    return Tape(code=code, consts=np.array([0.0]), input_shapes=tape.input_shapes, param_shape=tape.param_shape,
                outputs=outputs, output_shape=shape, maps=(fused,), assume_finite=tape.assume_finite)
