"""Jacobians of affine programs by array rules: the Hessian of ``x.T @ A @ x`` is ``A + A.T``, computed.

Where the outputs asked for are affine in the inputs with constant coefficients (the gradient of a quadratic
form, of linear least squares with a constant matrix, a linear map), their Jacobian is a constant matrix, and
forward mode along all ``n`` unit directions at once is numpy arithmetic on ``(n,)`` tangent rows: a scalar
instruction combines its arguments' rows with the weights the op table gives it (``Op.weights``: add, sub, neg,
multiplication and division by a constant), and a product loop with one constant factor multiplies the other
factor's stacked tangents by it (``dC = dA B`` or ``A dB``: one ``matmul``). Nothing is unrolled and nothing is
recorded per direction: the unrolled sweeps this replaces visit the whole program once per input (the 200 x 200
Hessian of ``x.T @ A @ x``: 7 s of Python), and fold to the same constants.

The answer is exact in the sense of the sweeps up to rounding: an entry that adds several nonzero terms may add
them in another order (a product's terms go through ``matmul``); an entry with one or two terms (every entry of
``A + A.T``) has the sweeps' bits, up to the sign of a zero. Anything not affine with constant coefficients in
the outputs' cone (a product of two traced values, a parameter as a coefficient, an infinite or NaN
coefficient, a guard, a loop other than a product) gives None, and the caller sweeps.
"""
from __future__ import annotations

import numpy as np

from ..ir.contraction import as_product
from ..ir.structure import walk
from ..ir.tape import Tape

CAP = 20_000_000  # tangent entries held at once (160 MB): beyond, the sweeps (which fold the same way) are used


def constant_jacobian(tape: Tape, outputs=None, inputs: int | None = None) -> np.ndarray | None:
    """The ``(len(outputs), inputs)`` Jacobian of the slots ``outputs`` (default: the tape's outputs) along the
    first ``inputs`` inputs (default: all) when they are affine in those with constant coefficients, else None
    (other inputs are coefficients that are not constant: a product with one is not affine)."""
    n, first = tape.n_inputs if inputs is None else inputs, tape.first_result
    outs = np.asarray(tape.outputs if outputs is None else outputs, np.int64)
    if len(tape.guards) or n == 0 or n * n > CAP:
        return None
    steps = walk(tape)
    need = np.zeros(tape.n_slots, bool)
    need[outs] = True
    for step in reversed(steps):  # the outputs' cone: only what it holds must be affine
        if step.map is not None:
            if need[first + step.start:first + step.end].any():
                need[step.map.read_slots()] = True
        elif need[first + step.start]:
            need[list(step.args)] = True
    eye = np.eye(n)
    tan: dict[int, np.ndarray] = {i: eye[i] for i in range(n) if need[i]}
    carries = np.zeros(tape.n_slots, bool)  # the slots in ``tan`` (a data factor is looked at by numpy)
    carries[list(tan)] = True
    held = n * n
    for step in steps:
        if step.map is not None:
            if not need[first + step.start:first + step.end].any():
                continue
            rows = _product_tangents(tape, step.map, tan, carries, n)
            if rows is _NOT_AFFINE:
                return None
            if rows is not None:
                tan.update(zip(range(first + step.start, first + step.end), rows))
                carries[first + step.start:first + step.end] = True
                held += rows.size
        elif need[first + step.start] and carries[list(step.args)].any():
            t = _instruction_tangent(tape, step.row, step.args, tan, n)
            if t is None:
                return None
            tan[first + step.start] = t
            carries[first + step.start] = True
            held += n
        if held > CAP:
            return None
    zero = np.zeros(n)
    # + 0.0: a zero is +0.0, as a derivative no sweep reaches (a weight of -1 times a zero component is -0.0)
    return np.array([tan.get(s, zero) for s in outs.tolist()]).reshape(len(outs), n) + 0.0


def _constant(tape: Tape, slot: int) -> float | None:
    return float(tape.consts[slot - tape.first_const]) if tape.first_const <= slot < tape.first_result else None


def _instruction_tangent(tape: Tape, row, args: tuple, tan: dict, n: int) -> np.ndarray | None:
    """The tangent row of one scalar instruction with at least one argument carrying one, or None when it is not
    linear with constant coefficients in those arguments."""
    if row.no_derivative:
        return np.zeros(n)
    if row.weights is None:
        return None
    weights = row.weights(1.0, *(_constant(tape, a) for a in args))
    if weights is None or not all(w is None or np.isfinite(w) for w in weights):
        return None  # (an infinite or NaN weight times a zero component is NaN where the sweeps have no term)
    total = None
    for a, w in zip(args, weights):
        if a in tan:
            if w is None:  # (an argument with a tangent has no constant weight)
                return None
            term = tan[a] if w == 1.0 else w * tan[a]
            total = term if total is None else total + term
    return total


_NOT_AFFINE = object()


def _product_tangents(tape: Tape, m, tan: dict, carries: np.ndarray, n: int):
    """The tangent rows of a product loop's entries (row-major), None when neither factor carries tangents,
    ``_NOT_AFFINE`` when both do, one factor is not made of constants, or the loop is no product."""
    p = as_product(m)
    if p is None:
        return _NOT_AFFINE if carries[m.read_slots()].any() else None
    a_on, b_on = bool(carries[p.a].any()), bool(carries[p.b].any())
    if not (a_on or b_on):
        return None
    if a_on and b_on:
        return _NOT_AFFINE
    zero = np.zeros(n)
    fixed, moving = (p.b, p.a) if a_on else (p.a, p.b)
    lo, hi = tape.first_const, tape.first_result
    if not ((fixed >= lo) & (fixed < hi)).all():
        return _NOT_AFFINE
    C = tape.consts[fixed.astype(np.int64) - lo]
    if not np.isfinite(C).all():  # inf * 0 in a matmul is NaN where the sweeps have no term
        return _NOT_AFFINE
    d = np.array([tan.get(s, zero) for s in moving.ravel().tolist()]).reshape(moving.shape + (n,))
    if a_on:  # dC[i, j] = sum_l dA[i, l] B[l, j]
        out = np.matmul(C.T, d)  # (rows, m, n)
    else:  # dC[i, j] = sum_l A[i, l] dB[l, j]
        k, width = p.b.shape
        out = (C @ d.reshape(k, width * n)).reshape(C.shape[0], width, n)
    return out.reshape(-1, n)
