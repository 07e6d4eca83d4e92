"""Hessians of partially separable tapes: the body's small Hessian, scattered into place.

A tape whose value is a linear combination of the ``sum`` outputs of one map reading only inputs (plus terms
linear in the inputs) is ``f(x) = sum_k f_B(x[T[k]]) + linear``, with ``f_B`` that combination of the body's
outputs (Griewank & Toint's partial separability: a pair potential with several terms, a finite-element
energy). Its Hessian is ``sum_k P_k^T H_B(x[T[k]]) P_k``: the dense Hessian of the small body (``n_in x n_in``,
built once by the scalar algorithm) at every iteration, added into the ``(T[k, a], T[k, b])`` entries. As a tape:
one map whose body is the body's Hessian tape and whose outputs scatter into the touched entries, so building it
costs the body, not the length, and the kernel is one loop (a hand-written pair loop adding 6x6 blocks).

The loop may also read data: columns of constants or parameters (a data set's row, an element's reference
shape ``Dinv``) are parameters of the body's Hessian, which is taken along the columns reading inputs only (the
*active* columns). An active column reading the same input at every iteration (``w`` in ``X @ w``: broadcast)
puts the entries it pairs with another broadcast column at the same place every time: those are ``sum`` outputs
(one accumulator each), not scatters, so a logistic regression's 200 x 200 Hessian over 10,000 rows needs no
table of 10,000 x 40,000 destinations.

Exactly symmetric (the body Hessian is, and both triangles receive the same contributions in the same order);
``value_gradient_hessian_tape`` is the value-and-gradient tape and this Hessian in one tape, so its Hessian is
bit for bit ``hessian_tape``'s and its value and gradient those of ``tape.value_and_gradient``. Entries no
iteration touches are +0.0, as in the scalar algorithm.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import ad, lowrank
from .fuse import fused
from ..table.ops import BY_CODE
from ..ir.structure import Map, Out, map_runs, placeholder_rows, scalar
from ..ir.tape import Tape



def _columns(tape: Tape, m: Map) -> np.ndarray | None:
    """Which of map ``m``'s table columns read inputs (True) and which read data, constants or parameters
    (False); None when a column reads anything else (a computed slot), mixes the two, or reads a constant that
    is infinite or NaN (parameters are values of the call: their non-finite values are not looked at)."""
    if not m.n:
        return None
    T = m.tables
    active = (T < tape.n_inputs).all(axis=0)
    data = ((T >= tape.n_inputs) & (T < tape.first_result)).all(axis=0)
    if not (active | data).all():
        return None
    read = T[:, data].ravel().astype(np.int64)
    read = read[read >= tape.first_const]
    if not np.isfinite(tape.consts[read - tape.first_const]).all():
        return None  # inf * 0 in the body's Hessian would be NaN where the scalar sweeps have no term
    return active


def separable(tape: Tape) -> tuple[Map, dict[int, float]] | None:
    """``(map, {sum output: weight})`` when ``tape`` is partially separable in the sense above, else None."""
    if tape.n_outputs != 1 or len(tape.guards) or len(tape.maps) != 1:
        return None
    (start, _, m), = map_runs(tape)
    active = _columns(tape, m)
    if active is None or not active.any():
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
    """``(map, k, body)`` of a partially separable tape, or None: the map with its table columns reordered so
    the ``k`` active ones come first, and the scalar body whose output is the combination, taking those ``k``
    columns as inputs and the data columns as parameters (so its Hessian is along the active columns only)."""
    found = separable(tape)
    if found is None:
        return None
    m, weights = found
    active = _columns(tape, m)
    order = np.concatenate([np.flatnonzero(active), np.flatnonzero(~active)])
    k, p = int(active.sum()), len(order) - int(active.sum())
    rec, xs, ps = ad.fresh(m.body.replace(input_shapes=((k,),), param_shape=(p,) if p else None))
    inputs = [None] * len(order)
    for v, c in zip(xs + ps, order.tolist()):
        inputs[c] = v
    vals = ad.replay(m.body, inputs, [])
    total = 0.0
    for j, w in sorted(weights.items()):
        v = vals[int(m.body.outputs[j])]
        total = total + (v if w == 1.0 else w * v)
    body = rec.finish(ad.node_ids(rec, [total]), (), ((k,),), (p,) if p else None)
    return Map(m.body, m.tables[:, order], m.kinds, m.dst, m.scatter_size), k, body


def _places(m: Map, k: int, n: int, rows: np.ndarray, cols: np.ndarray):
    """Where the body Hessian's entries ``(rows[e], cols[e])`` go at every iteration: ``(fixed, keys, inverse)``
    with ``fixed`` the entries that land at the same place every time and nowhere another entry lands (both
    columns broadcast: ``sum`` outputs, at ``keys[:len(fixed)]``), and ``inverse`` (iterations x the other
    entries) the index of each other entry's place among the scatter range's ``keys[len(fixed):]`` (row-major
    flat indices ``i * n + j`` of the n x n Hessian)."""
    T = m.tables[:, :k].astype(np.int64)
    broadcast = (T == T[:1]).all(axis=0)
    fixed = np.flatnonzero(broadcast[rows] & broadcast[cols])
    fixed_keys = T[0, rows[fixed]] * n + T[0, cols[fixed]]
    rest = np.setdiff1d(np.arange(len(rows)), fixed)
    rest_keys = T[:, rows[rest]] * n + T[:, cols[rest]]
    # a fixed entry sharing its place with another entry is added with it in the scatter range instead
    _, first, counts = np.unique(fixed_keys, return_index=True, return_counts=True)
    alone = np.zeros(len(fixed), bool)
    alone[first[counts == 1]] = True
    alone &= ~np.isin(fixed_keys, rest_keys)
    if not alone.all():
        rest = np.sort(np.concatenate([rest, fixed[~alone]]))
        fixed, fixed_keys = fixed[alone], fixed_keys[alone]
        rest_keys = T[:, rows[rest]] * n + T[:, cols[rest]]
    touched, inverse = np.unique(rest_keys, return_inverse=True)
    return fixed, rest, np.concatenate([fixed_keys, touched]), inverse.reshape(rest_keys.shape)


def _placed_map(m: Map, k: int, n: int, hb: Tape, rows: np.ndarray, cols: np.ndarray) -> tuple[Map, np.ndarray]:
    """The map whose body ``hb`` (a Hessian tape of the body: ``k`` inputs, the data as parameters) yields the
    entries ``(rows[e], cols[e])``, adding each into its place, and the place of each of its rows (sums, then
    the scatter range)."""
    if hb.maps:  # a body Hessian built as a loop over directions: a map body is scalar code
        hb = scalar(hb, "partially separable Hessian: the body's Hessian, a loop over directions, becomes a loop body")
    fixed, rest, keys, inverse = _places(m, k, n, rows, cols)
    entries = np.concatenate([fixed, rest])
    n_in = m.tables.shape[1]
    hb = hb.replace(outputs=hb.outputs[rows[entries] * k + cols[entries]], output_shape=(len(entries),),
                    input_shapes=((n_in,),), param_shape=None)  # (inputs then parameters: the same slots)
    kinds = (Out.SUM,) * len(fixed) + (Out.SCATTER,) * len(rest)
    return Map(hb, m.tables, kinds, inverse, len(keys) - len(fixed)), keys


def pattern(tape: Tape, body_pattern: Callable) -> tuple[np.ndarray, np.ndarray] | None:
    """``hessian_sparsity`` of a partially separable tape from its body's: the body's pairs ``(a, b)`` at every
    ``(T[k, a], T[k, b])``, sorted row-major (what the analysis of the unrolled tape finds), or None."""
    found = _body(fused(tape) or tape)
    if found is None:
        return None
    m, k, body = found
    *_, keys, _ = _places(m, k, tape.n_inputs, *body_pattern(body))
    flat = np.unique(keys)
    return flat // tape.n_inputs, flat % tape.n_inputs


def sparse(tape: Tape, body_pattern: Callable, body_hessian: Callable) -> Tape | None:
    """The sparse Hessian tape (outputs in the order of ``pattern``) of a partially separable tape: the body's
    structurally nonzero Hessian entries added into the pattern's positions; None when not separable."""
    shaped = fused(tape) or tape
    found = _body(shaped)
    if found is None:
        return None
    m, k, body = found
    rows, cols = body_pattern(body)
    if not len(rows):  # a body linear in its inputs: no entries (the scalar form gives the empty Hessian)
        return None
    placed, keys = _placed_map(m, k, tape.n_inputs, body_hessian(body), rows, cols)
    order = np.argsort(keys)  # the places are distinct: output e (the pattern, sorted row-major) is row order[e]
    return _scatter_tape(shaped, placed, np.arange(len(keys)), order, len(keys), (len(keys),))


def hessian(tape: Tape, body_hessian: Callable[[Tape], Tape], with_value_gradient: bool) -> Tape | None:
    """The Hessian tape (``(n, n)``), or ``[value, gradient, Hessian]`` (``(1 + n + n * n,)``) with
    ``with_value_gradient``, of a partially separable tape; None when the tape is not one. ``body_hessian`` is
    the scalar algorithm (``higher.hessian_tape``) the body's Hessian is built with."""
    shaped = fused(tape) or tape  # (x @ A read by one loop: the product inside it; the Hessian's form only)
    found = _body(shaped)
    if found is None:
        return None
    m, k, body = found
    n = tape.n_inputs
    H = lowrank.hessian(shaped, m, k, body, body_hessian)  # a function of one linear form: C^T diag(phi'') C
    if H is None:
        pairs = np.arange(k * k)
        placed, keys = _placed_map(m, k, n, body_hessian(body), pairs // k, pairs % k)
        H = _scatter_tape(shaped, placed, keys, np.arange(len(keys)), n * n, (n, n))
    if not with_value_gradient:
        return H
    vg = ad.value_and_grad(tape)  # the tape of tape.value_and_gradient, and this Hessian, in one recording
    rec, xs, ps = ad.fresh(tape)
    a, b = ad.replay(vg, xs, ps), ad.replay(H, xs, ps)
    outs = [a[s] for s in vg.outputs.tolist()] + [b[s] for s in H.outputs.tolist()]
    return rec.finish(ad.node_ids(rec, outs), (1 + n + n * n,), tape.input_shapes, tape.param_shape)


def _scatter_tape(tape: Tape, placed: Map, outputs: np.ndarray, rows: np.ndarray, size: int, shape: tuple) -> Tape:
    """The tape of one map (sum and scatter rows only) whose row ``rows[e]`` is output ``outputs[e]`` of ``size``
    outputs (the others are +0.0). The tape's constants stay in their slots (the data the tables read), followed
    by the +0.0 of untouched entries."""
    zero = tape.first_result
    cell = np.full(size, zero, np.int64)
    cell[outputs] = zero + 1 + rows
    return Tape(code=placeholder_rows(0, placed.rows), consts=np.append(tape.consts, 0.0),
                input_shapes=tape.input_shapes,
                param_shape=tape.param_shape, outputs=cell, output_shape=shape, maps=(placed,),
                assume_finite=tape.assume_finite)
