"""Dense Hessians and Jacobians as one loop over directions, where sweeping every direction unrolled would be
large.

Forward-over-reverse records one forward sweep of the gradient program per input direction. With the seeds
folded in, each sweep records only the instructions its direction reaches, so a chain or a banded program's
sweeps are small and stay unrolled. But when every input reaches most of the program (an eigendecomposition by
Jacobi rotations, a dense quadratic form, a small network), the sweeps total ``n_inputs`` times the program:
a 6x6 ``eigh`` is 36 sweeps over a 20,000-instruction gradient, 720,000 recorded instructions and seconds of
compilation for a Hessian JAX compiles once.

Here that Hessian is one map instead (and likewise a dense Jacobian whose forward sweeps along the inputs, or
reverse sweeps from the outputs, would be large: a map of the JVP or VJP over unit directions): its body is the Hessian-vector product of the gradient program (the
primal, its reverse sweep and a forward sweep along a direction ``v`` read as inputs), run once per unit
direction, the directions being a table of the constants 0 and 1. Building and compiling cost the body, not
``n_inputs`` copies of it; each evaluation recomputes the gradient program per direction (about twice the work of
the unrolled sweeps, which share it), the trade made only where the unrolled sweeps would be large
(``LOOP_OVER``).

The entries are read as the unrolled algorithm reads them, the upper triangle from direction ``max(i, j)`` and
mirrored, so the Hessian is exactly symmetric. Unlike the folded sweeps, a direction's zero components are
numbers here: where a partial derivative is infinite, entries that the folded sweeps give as 0 may be NaN
(``0 * inf``), as in JAX's Hessian, which also sweeps unit vectors.
"""
from __future__ import annotations

import numpy as np

from .ad import backward, forward, fresh, keep_guards, node_ids, replay, tracers, _zero_if_none
from ..ir.structure import Map, Out
from .separable import linear_weights
from ..table.ops import BY_CODE
from ..ir.tape import Tape
from ..tracing.recorder import Recorder
from ..tracing.tracer import Scalar

# Estimated instructions of the unrolled forward sweeps above which a dense Hessian becomes a loop over
# directions, when they also exceed ``DENSE_FACTOR`` times the gradient program (each direction reaching most
# of it). Below, the unrolled sweeps compile in about a second and evaluate faster.
LOOP_OVER = 60_000
DENSE_FACTOR = 8
# The largest body plus gradient program the loop takes. The kernel keeps a loop while the body and the code
# around it stay within the backend's loop budget (``codegen.LOOP_CUT``, 200,000 records); beyond it the loop
# would be unrolled, n_inputs copies of the body (x.T A x with n = 200: 32 million instructions, out of memory).
# Bodies of this size compile at O0 in about a second (a 76,000-instruction weighted eigh HVP: 1.1 s).
BODY_LIMIT = 150_000
# The most code a loop's kernel may have outside the loop: instructions, outputs and guards (the Hessian's n^2
# entries count). The code generator lowers a kernel unrolled when that part alone needs cutting into pieces
# (``codegen.CUT_ABOVE``, the same number, checked by a test): a loop there would become n copies of its body
# (a 150-input Hessian: 3.1 million instructions instead of the sweeps' 541,000).
OUTSIDE_LIMIT = 20_000
# The largest estimate made: bitsets of ``sweeps`` bits for each of ``len(g)`` slots (5e8 bits: 60 MB and about
# a second of Python). A 22,000-output Jacobian of a 100,000-instruction tape would need 270 MB: such sweeps
# stay unrolled, as before.
ESTIMATE_BITS = 500_000_000


def sweep_size(g: Tape, inputs: int) -> int:
    """The instructions forward sweeps along each of the first ``inputs`` unit directions record, estimated per
    instruction and direction with two bitsets per slot: ``reach`` (the slot depends on the direction's input)
    and ``varying`` (its tangent is not a constant). Seeds are the constant 1.0, and the tangent of an
    instruction linear in its arguments with constant coefficients (``Op.weights``: sums, differences, products
    with a constant) is a constant combination of theirs, which recording folds; any other instruction's
    tangent varies wherever it is reached. A direction records the instructions whose tangent varies there."""
    n = g.n_inputs
    reach = [1 << i if i < inputs else 0 for i in range(n)] + [0] * (g.n_slots - n)
    varying = [0] * g.n_slots
    total, first = 0, g.first_result
    for row, (code, *args) in enumerate(g.code.tolist()):
        op = BY_CODE[code]
        args = args[:op.arity]
        r = v = 0
        for a in args:
            r |= reach[a]
            v |= varying[a]
        if op.no_derivative:
            r = v = 0
        elif r and linear_weights(g, op, args, 1.0) is None:
            v = r
        reach[first + row], varying[first + row] = r, v
        total += v.bit_count()
    return total


def reverse_sweep_size(g: Tape) -> int:
    """The instructions reverse sweeps from each output record, estimated as ``sweep_size`` does in the other
    direction: a cotangent varies where a varying cotangent reaches it, or where it passes an instruction that
    is not linear with constant coefficients."""
    reach, varying = [0] * g.n_slots, [0] * g.n_slots
    for k, s in enumerate(g.outputs.tolist()):
        reach[s] |= 1 << k
    total, first = 0, g.first_result
    code = g.code.tolist()
    for row in range(len(code) - 1, -1, -1):
        r = reach[first + row]
        op = BY_CODE[code[row][0]]
        if not r or op.no_derivative:
            continue
        args = code[row][1:1 + op.arity]
        v = varying[first + row] if linear_weights(g, op, args, 1.0) is not None else r
        total += v.bit_count()
        for a in args:
            reach[a] |= r
            varying[a] |= v
    return total


def _large(g: Tape, sweeps: int, size) -> bool:
    if len(g.code) * sweeps <= LOOP_OVER:  # an upper bound on the sweeps: small for sure
        return False
    if len(g.code) > BODY_LIMIT or len(g.code) * sweeps > ESTIMATE_BITS:
        return False  # no body would fit, or the estimate itself would cost more than it can save
    n = size()
    return n > LOOP_OVER and n > DENSE_FACTOR * len(g.code)


def as_loop(g: Tape, inputs: int, outside: int) -> bool:
    """Whether forward sweeps of scalar ``g`` along its first ``inputs`` unit directions should be one loop;
    ``outside``: a bound on what the finished tape keeps outside the loop (instructions, outputs, guards)."""
    return outside <= OUTSIDE_LIMIT and _large(g, inputs, lambda: sweep_size(g, inputs))


def as_reverse_loop(g: Tape, outside: int) -> bool:
    """Whether reverse sweeps of scalar ``g`` from each output should be one loop (``outside`` as in
    ``as_loop``)."""
    return outside <= OUTSIDE_LIMIT and _large(g, g.n_outputs, lambda: reverse_sweep_size(g))


def _body(g: Tape, directions: int, reverse: bool, row0: int = 0) -> Tape | None:
    """A map body of one input vector ``[g's inputs, g's params, d]`` (no params, no guards): forward, the
    tangents of ``g``'s outputs from ``row0`` along ``d`` (``directions`` components, g's first inputs);
    reverse, the cotangents of g's inputs for the output weights ``d``. None when the body and ``g`` together
    would exceed ``BODY_LIMIT`` (a ``g`` over the limit alone is not tried)."""
    if len(g.code) > BODY_LIMIT:
        return None
    rec = Recorder(assume_finite=g.assume_finite)  # (no params: g's are inputs of the body)
    xs = tracers(rec, rec.inputs_of([None] * (g.n_inputs + g.n_params + directions)))
    x, p, d = xs[:g.n_inputs], xs[g.n_inputs:g.n_inputs + g.n_params], xs[g.n_inputs + g.n_params:]
    vals = replay(g, x, p)
    if reverse:
        outs = _zero_if_none(backward(g, vals, d))
    else:
        tan = forward(g, vals, list(d) + [None] * (g.n_inputs - directions))
        outs = _zero_if_none(tan[s] for s in g.outputs.tolist()[row0:])
    body = rec.finish(node_ids(rec, outs), (len(outs),), ((len(xs),),), None)
    return body if len(body.code) + len(g.code) <= BODY_LIMIT else None


def _over_unit_directions(g: Tape, body: Tape, count: int) -> tuple:
    """``(recorder, g's slot values, first row)``: g replayed with its guards, then ``body`` mapped over the
    ``count`` unit directions; body output ``i`` along direction ``j`` is node ``first + i * count + j``."""
    rec, xs, ps = fresh(g)
    vals = replay(g, xs, ps)
    keep_guards(rec, g, vals)
    zero, one = rec.const(0.0), rec.const(1.0)
    shared = np.array([x.id for x in xs] + [p.id for p in ps], np.int64)
    seeds = np.full((count, count), zero, np.int64)
    np.fill_diagonal(seeds, one)
    tables = np.hstack([np.broadcast_to(shared, (count, len(shared))), seeds])
    first = rec.emit_map(Map(body, tables, (Out.EACH,) * body.n_outputs, np.zeros((count, 0), np.int32)))
    return rec, vals, first


def hessian_loop(g: Tape, inputs: int, row0: int) -> tuple:
    """``(recorder, outputs of g, H)`` like ``higher._hessian_sweeps``, the ``inputs x inputs`` entries ``H``
    (row-major) read from one map over the unit directions (see the module docstring), or None when the body
    would exceed ``BODY_LIMIT``. ``g`` is a scalar gradient program whose outputs from ``row0`` are the
    gradient."""
    body = _body(g, inputs, False, row0)
    if body is None:
        return None
    rec, vals, first = _over_unit_directions(g, body, inputs)
    # H[i, j] = output min(i, j) along direction max(i, j), as the unrolled sweeps read it
    H = [Scalar(rec, first + min(i, j) * inputs + max(i, j)) for i in range(inputs) for j in range(inputs)]
    return rec, [vals[s] for s in g.outputs.tolist()], H


def jacobian_loop(tape: Tape, reverse: bool) -> tuple:
    """``(recorder, J)`` like ``higher._jacobian_matrix`` (``J[i][j]`` = d output i / d input j) from one map:
    forward sweeps along the unit input directions, or reverse sweeps from the unit output weights, of the
    scalar ``tape``; None when the body would exceed ``BODY_LIMIT``."""
    m, n = tape.n_outputs, tape.n_inputs
    count = m if reverse else n
    body = _body(tape, count, reverse)
    if body is None:
        return None
    rec, _, first = _over_unit_directions(tape, body, count)
    if reverse:  # body output j (input j) for output weight i
        return rec, [[Scalar(rec, first + j * m + i) for j in range(n)] for i in range(m)]
    return rec, [[Scalar(rec, first + i * n + j) for j in range(n)] for i in range(m)]
