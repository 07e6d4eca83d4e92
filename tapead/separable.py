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


def hessian(tape: Tape, body_hessian: Callable[[Tape], Tape], with_value_gradient: bool) -> Tape | None:
    """The Hessian tape (``(n, n)``), or ``[value, gradient, Hessian]`` (``(1 + n + n * n,)``) with
    ``with_value_gradient``, of a partially separable tape; None when the tape is not one. ``body_hessian`` builds
    the scalar algorithm's tape for the body (``higher.hessian_tape`` or ``higher.value_gradient_hessian_tape``)."""
    found = separable(tape)
    if found is None:
        return None
    m, j = found
    body = m.body.replace(outputs=m.body.outputs[j:j + 1], output_shape=())
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
    first = tape.first_const + 1  # one constant: the +0.0 of untouched entries
    cell = np.full(size, tape.first_const, np.int64)
    cell[touched] = first + fused.rows - fused.scatter_size + np.arange(len(touched))
    outputs = cell if not with_value_gradient else np.concatenate([[first], cell])
    code = np.zeros((fused.rows, 4), np.int64)
    code[:, 0] = MAP_ROW
    code[:, 2] = np.arange(fused.rows)
    shape = (1 + n + n * n,) if with_value_gradient else (n, n)
    return Tape(code=code, consts=np.array([0.0]), input_shapes=tape.input_shapes, param_shape=tape.param_shape,
                outputs=outputs, output_shape=shape, maps=(fused,), assume_finite=tape.assume_finite)
