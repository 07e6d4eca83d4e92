"""Hessians of sums of a function of one linear form: ``sum_k phi_k(c_k . w)`` is ``C^T diag(phi'') C``.

A partially separable tape (``separable``) whose body is a function of one linear form of inputs every
iteration reads whole (logistic regression: ``z = X[k] @ w``, ``logaddexp(0, z) - y[k] z``) has body Hessians
``phi''(z_k) c_k c_k^T``: rank one. Added entry by entry (the separable form) that is a loop whose body has
``d^2`` outputs, 40,000 accumulators for 200 features; as an array program it is one product loop
``W C`` (one loop over the iterations makes ``W``, ``d`` outputs each), which the code
generator runs in register tiles (``W C`` with ``W[j, k] = phi''(z_k) c_kj``).

The form is found on the body: the linear region is built from the inputs by ``mul`` with a data column (a
body parameter: the coefficient is a table slot) and ``add`` of disjoint terms (an added data value or
constant is an offset); exactly one of its nodes may be read by anything else (the linear form ``z``), and the
body's output must depend on the inputs only through it. ``phi''`` is the second derivative of the body with
``z`` made an input. Entries are equal to the separable form's to rounding (the terms are added in iteration
order, but each is ``(phi'' c_kj) c_kj'`` rather than the body Hessian's), read from the upper triangle and
mirrored: exactly symmetric.
"""
from __future__ import annotations

import numpy as np

from . import ad
from ..ir.contraction import Product
from ..ir.structure import Map, Out, walk
from ..ir.tape import Tape
from ..table.ops import BY_CODE, OPS
from ..tracing.recorder import Recorder

_MUL, _ADD = OPS["mul"].code, OPS["add"].code


def linear_form(body: Tape, k: int):
    """``(z, {input j: coefficient parameter slot})`` when ``body`` (``k`` inputs, then parameters) is a function
    of one linear form of its inputs as the module docstring says, else None."""
    first, n_par_end = body.first_result, body.n_inputs + body.n_params
    coef: dict[int, dict] = {j: {j: None} for j in range(k)}  # slot -> {input: coefficient slot, None: 1}
    depends = np.zeros(body.n_slots, bool)
    depends[:k] = True
    frontier: set[int] = set()
    for i, (code, *args) in enumerate(body.code.tolist()):
        slot = first + i
        active = [a for a in args[:BY_CODE[code].arity] if depends[a]]
        if not active:
            continue
        depends[slot] = True
        made = None
        if code == _MUL and len(active) == 1:
            a, other = (args[0], args[1]) if depends[args[0]] else (args[1], args[0])
            if a in coef and k <= other < n_par_end and all(c is None for c in coef[a].values()):
                made = {j: other for j in coef[a]}
        elif code == _ADD:
            a, b = args[0], args[1]
            if len(active) == 2 and a in coef and b in coef and not coef[a].keys() & coef[b].keys():
                made = {**coef[a], **coef[b]}
            elif len(active) == 1 and active[0] in coef and not depends[b if active[0] == a else a]:
                made = coef[active[0]]  # an offset
        if made is not None:
            coef[slot] = made
        else:
            frontier.update(a for a in active if a in coef)
    out = int(body.outputs[0])
    if len(frontier) != 1 or out in coef or body.n_outputs != 1:
        return None
    z = frontier.pop()
    if any(c is None for c in coef[z].values()):
        return None  # (a coefficient of 1: an input added as is; not a data column)
    return z, coef[z]



def hessian(tape: Tape, m: Map, k: int, body: Tape, body_hessian) -> Tape | None:
    """The dense Hessian tape of a partially separable ``tape`` (its map ``m`` with the ``k`` active columns
    first, ``body`` taking them as inputs and the data as parameters) as ``W C``, or None when the body is not a
    function of one linear form of broadcast inputs."""
    found = linear_form(body, k)
    if found is None:
        return None
    z, coef = found
    inputs = sorted(coef)
    T = m.tables.astype(np.int64)
    active = T[:, inputs]
    if not (active == active[:1]).all() or len(set(active[0].tolist())) != len(inputs):
        return None  # the inputs must be read whole by every iteration, each by one column
    phi2 = _second_derivative(body, z, body_hessian)
    weighted = _weighted_rows(m, body, z, [coef[j] for j in inputs], phi2)
    n, d, iterations = tape.n_inputs, len(inputs), m.n
    rec, xs, ps = ad.fresh(tape)
    slot_ids = np.concatenate([[v.id for v in xs + ps], rec.constants(tape.consts).ravel()]).astype(np.int64) \
        if len(tape.consts) else np.array([v.id for v in xs + ps], np.int64)
    rows = rec.emit_map(weighted.remap(lambda t: slot_ids[t.astype(np.int64)]))
    # H = W C with W[j, k] = phi''(z_k) c_kj (output j's row k: contiguous along k) and C the coefficient columns
    # (the data's slots, in its row-major order: a row of C is contiguous), so the product runs in register tiles
    W = rows + np.arange(d * iterations).reshape(d, iterations)
    C = slot_ids[T[:, [coef[j] for j in inputs]]]
    first = rec.emit_map(Product(W, C, rec.assume_finite))
    entry = first + np.arange(d * d).reshape(d, d)
    upper = np.triu(entry) + np.triu(entry, 1).T  # (i, j) reads (min, max): exactly symmetric
    # copied into row-major order by a loop, so the outputs are one run of rows (one memcpy), not d^2 / 2 stores
    start = rec.emit_map(Map(_COPY, upper.reshape(-1, 1), (Out.EACH,), np.zeros((d * d, 0), np.int32), 0))
    upper = start + np.arange(d * d).reshape(d, d)
    zero = rec.const(0.0)
    cells = np.full((n, n), zero, np.int64)
    where = active[0]
    cells[np.ix_(where, where)] = upper
    return rec.finish(cells.ravel().tolist(), (n, n), tape.input_shapes, tape.param_shape)


def _copy_body() -> Tape:
    rec = Recorder()
    return rec.finish([rec.input()], (1,), ((1,),), None)


_COPY = _copy_body()  # a loop body that returns its input


def _second_derivative(body: Tape, z: int, body_hessian) -> Tape:
    """A tape of ``phi''``: input ``z``, parameters the body's inputs then its parameters (its columns); the
    body's output as a function of ``z`` (the inputs reach it only through ``z``), differentiated twice."""
    columns = body.n_inputs + body.n_params
    rec, xs, ps = ad.fresh(body.replace(input_shapes=((1,),), param_shape=(columns,)))
    vals = list(ps) + body.consts.tolist()
    for step in walk(body):
        value = step.row(*(vals[a] for a in step.args))
        vals.append(xs[0] if body.first_result + step.start == z else value)
    phi = rec.finish(ad.node_ids(rec, [vals[int(body.outputs[0])]]), (), ((1,),), (columns,))
    return body_hessian(phi)


def _weighted_rows(m: Map, body: Tape, z: int, coefficients: list, phi2: Tape) -> Map:
    """The loop over ``m``'s iterations whose outputs are ``phi''(z_k) c_kj`` for each coefficient (``each``)."""
    n_in = m.tables.shape[1]
    rec, xs, _ = ad.fresh(body.replace(input_shapes=((n_in,),), param_shape=None))
    vals = ad.replay(body.replace(input_shapes=((n_in,),), param_shape=None), xs, [])
    h = ad.replay(phi2, [vals[z]], xs)
    s = h[int(phi2.outputs[0])]
    outs = [s * vals[c] for c in coefficients]
    w = rec.finish(ad.node_ids(rec, outs), (len(outs),), ((n_in,),), None)
    return Map(w, m.tables, (Out.EACH,) * len(outs), np.zeros((m.n, 0), np.int32), 0)
