"""Hessians of partially separable tapes: the body's small Hessian, scattered into place.

A tape whose value is a linear combination of the ``sum`` outputs of one map reading only inputs (plus terms
linear in the inputs) is ``f(x) = sum_k f_B(x[T[k]]) + linear``, with ``f_B`` that combination of the body's
outputs (Griewank & Toint's partial separability: a pair potential with several terms, a finite-element
energy). Its Hessian is ``sum_k P_k^T H_B(x[T[k]]) P_k``: the dense Hessian of the small body (``n_in x n_in``,
built once by the scalar algorithm) at every iteration, added into the ``(T[k, a], T[k, b])`` entries. As a tape:
one map whose body is the body's Hessian tape and whose outputs scatter into the touched entries, so building it
costs the body, not the length, and the kernel is one loop (a hand-written pair loop adding 6x6 blocks).

Exactly symmetric (the body Hessian is, and both triangles receive the same contributions in the same order);
``value_gradient_hessian_tape`` is the value-and-gradient tape and this Hessian in one tape, so its Hessian is
bit for bit ``hessian_tape``'s and its value and gradient those of ``tape.value_and_gradient``. Entries no
iteration touches are +0.0, as in the scalar algorithm.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import ad
from ..table.ops import BY_CODE
from ..ir.structure import Map, Out, map_runs, placeholder_rows
from ..ir.tape import Tape



def separable(tape: Tape) -> tuple[Map, dict[int, float]] | None:
    """``(map, {sum output: weight})`` when ``tape`` is partially separable in the sense above, else None."""
    if tape.n_outputs != 1 or len(tape.guards) or len(tape.maps) != 1:
        return None
    (start, _, m), = map_runs(tape)
    if m.tables.size and int(m.tables.max()) >= tape.n_inputs:
        return None
    first = tape.first_result
    sums = {first + start + off: j for j, kind, off in m.outputs() if kind is Out.SUM}
    weights: dict[int, float] = {}
    stack = [(int(tape.outputs[0]), 1.0)]
    while stack:  # the output as a linear combination of the sums (terms linear in inputs or constant: no Hessian)
        s, w = stack.pop()
        if s in sums:
            weights[sums[s]] = weights.get(sums[s], 0.0) + w
            continue
        if s < first:
            continue  # an input, a param or a constant
        code, *args = tape.code[s - first].tolist()
        row = BY_CODE[code] if code >= 0 else None  # (a map's row is no linear op)
        if row is None or row.weights is None:
            return None
        found = linear_weights(tape, row, args[:row.arity], w)
        if found is None:
            return None
        stack += [(a, wa) for a, wa in zip(args, found) if wa is not None]
    return (m, weights) if weights else None


def linear_weights(tape: Tape, row, args: list, w: float):
    """Each argument's weight when instruction ``row`` of ``tape`` on slots ``args`` has weight ``w``, or None
    when the instruction is not linear with constant coefficients there (``Op.weights``, given which arguments
    are constants of the tape and their values)."""
    if row.weights is None:
        return None
    first = tape.first_result
    return row.weights(w, *(float(tape.consts[a - tape.first_const]) if tape.first_const <= a < first else None
                            for a in args))


def _body(tape: Tape):
    """(map, the scalar body whose output is the combination) of a partially separable tape, or None."""
    found = separable(tape)
    if found is None:
        return None
    m, weights = found
    if list(weights.items()) == [(next(iter(weights)), 1.0)]:
        j = next(iter(weights))
        return m, m.body.replace(outputs=m.body.outputs[j:j + 1], output_shape=())
    rec, xs, _ = ad.fresh(m.body)
    vals = ad.replay(m.body, xs, [])
    total = 0.0
    for j, w in sorted(weights.items()):
        v = vals[int(m.body.outputs[j])]
        total = total + (v if w == 1.0 else w * v)
    return m, rec.finish(ad.node_ids(rec, [total]), (), m.body.input_shapes, None)


def pattern(tape: Tape, body_pattern: Callable) -> tuple[np.ndarray, np.ndarray] | None:
    """``hessian_sparsity`` of a partially separable tape from its body's: the body's pairs ``(a, b)`` at every
    ``(T[k, a], T[k, b])``, sorted row-major (what the analysis of the unrolled tape finds), or None."""
    found = _body(tape)
    if found is None:
        return None
    m, body = found
    flat = np.unique(_keys(m, tape.n_inputs, *body_pattern(body)))
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
    hb = hb.replace(outputs=hb.outputs[rows * body.n_inputs + cols], output_shape=(len(rows),))
    return _scatter_tape(tape, Map(hb, m.tables, (Out.SCATTER,) * len(rows), inverse.reshape(keys.shape), len(flat)),
                         np.arange(len(flat)), len(flat), (len(flat),))


def hessian(tape: Tape, body_hessian: Callable[[Tape], Tape], with_value_gradient: bool) -> Tape | None:
    """The Hessian tape (``(n, n)``), or ``[value, gradient, Hessian]`` (``(1 + n + n * n,)``) with
    ``with_value_gradient``, of a partially separable tape; None when the tape is not one. ``body_hessian`` is
    the scalar algorithm (``higher.hessian_tape``) the body's Hessian is built with."""
    found = _body(tape)
    if found is None:
        return None
    m, body = found
    n, n_in, k = tape.n_inputs, body.n_inputs, m.n
    T = m.tables.astype(np.int64)
    dst = (T[:, :, None] * n + T[:, None, :]).reshape(k, n_in * n_in)
    touched, inverse = np.unique(dst, return_inverse=True)
    scatter = Map(body_hessian(body), m.tables, (Out.SCATTER,) * (n_in * n_in), inverse.reshape(dst.shape),
                  len(touched))
    H = _scatter_tape(tape, scatter, touched, n * n, (n, n))
    if not with_value_gradient:
        return H
    vg = ad.value_and_grad(tape)  # the tape of tape.value_and_gradient, and this Hessian, in one recording
    rec, xs, ps = ad.fresh(tape)
    a, b = ad.replay(vg, xs, ps), ad.replay(H, xs, ps)
    outs = [a[s] for s in vg.outputs.tolist()] + [b[s] for s in H.outputs.tolist()]
    return rec.finish(ad.node_ids(rec, outs), (1 + n + n * n,), tape.input_shapes, tape.param_shape)


def _scatter_tape(tape: Tape, fused: Map, touched: np.ndarray, size: int, shape: tuple) -> Tape:
    """The tape of one map whose scatter range holds the ``touched`` entries of ``size`` outputs (the others are
    +0.0)."""
    first = tape.first_const + 1  # one constant: the +0.0 of untouched entries
    cell = np.full(size, tape.first_const, np.int64)
    cell[touched] = first + fused.rows - fused.scatter_size + np.arange(len(touched))
    return Tape(code=placeholder_rows(0, fused.rows), consts=np.array([0.0]), input_shapes=tape.input_shapes, param_shape=tape.param_shape,
                outputs=cell, output_shape=shape, maps=(fused,), assume_finite=tape.assume_finite)
