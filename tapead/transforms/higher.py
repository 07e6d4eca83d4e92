"""Jacobians, Hessians and Hessian-vector products as tape transforms (``tapead.derivatives`` evaluates them).

Every transform here is Tape -> Tape, built by composing the sweeps of ``ad.py``: a Jacobian is one forward
sweep per input direction or one reverse sweep per output; a Hessian is forward-over-reverse (the reverse
sweep is recorded as a gradient tape, then swept forward along unit tangents). Derived tapes are ordinary
tapes: printable, compilable, and differentiable again.
"""
from __future__ import annotations

import numpy as np

from . import ad
from .ad import node_ids, keep_guards, backward, forward, fresh, replay
from ..errors import InputError
from . import affine, directions, front, separable
from ..ir.structure import scalar, work
from ..ir.tape import Tape

_MODES = ("auto", "forward", "reverse")
# A tape with loops that executes at most this many instructions unrolled has its Hessian and HVP tapes built
# both ways (structured, and from the unrolled tape), keeping the one that executes less: for small loops the
# structured derivative (scatters, masks, loop bookkeeping) can be several times the unrolled one, and at
# this size building both costs milliseconds and compiling either is cheap.
BOTH_WAYS = 4_000


# ---- building blocks ----------------------------------------------------------------------------------
def seed(n: int, hot) -> list:
    """A tangent (or cotangent) list of length ``n``: constant 1.0 at the indices in ``hot``, None elsewhere.

    Constant seeds fold while recording (``1.0 * x`` is ``x``, absent tangents stay absent), so each sweep
    records only the instructions its direction actually reaches.
    """
    s: list = [None] * n
    for i in hot:
        s[i] = 1.0
    return s


def tangent_sweeps(tape: Tape, directions: list) -> tuple:
    """Replay ``tape`` on fresh tracers and sweep forward once per direction (a collection of input indices,
    all seeded with 1.0). Returns ``(recorder, slot values, T)`` with ``T[d][k]`` the tangent of output ``k``
    along direction ``d`` (a tracer, a float or None for zero). Forward mode reads scalar instructions: pass a
    tape without maps (``structure.scalar``), whose slots the returned values are indexed by."""
    if tape.maps:
        raise ValueError("tangent_sweeps needs a tape without maps: pass structure.scalar(tape)")
    rec, xs, ps = fresh(tape)
    vals = replay(tape, xs, ps)
    keep_guards(rec, tape, vals)
    outs = tape.outputs.tolist()
    columns = []
    for hot in directions:
        tan = forward(tape, vals, seed(tape.n_inputs, hot))
        columns.append([tan[s] for s in outs])
    return rec, vals, columns


def finish_tape(rec, tape: Tape, values: list, output_shape, input_shapes=None, block=None) -> Tape:
    """The tape of ``values`` (tracers, floats, None for zero), then the entries of ``block`` (a constant array,
    entered as one block of constants), recorded in ``rec`` with ``tape``'s inputs and params."""
    ids = node_ids(rec, ad._zero_if_none(values))
    if block is not None:
        ids += rec.constants(block).ravel().tolist()
    return rec.finish(ids, output_shape, tape.input_shapes if input_shapes is None else input_shapes,
                      tape.param_shape)


def _finish_hessian(rec, g: Tape, first: list, H, output_shape) -> Tape:
    """``finish_tape`` of ``first`` then the Hessian entries ``H`` (a list, or a constant array)."""
    if isinstance(H, np.ndarray):
        return finish_tape(rec, g, first, output_shape, block=H)
    return finish_tape(rec, g, first + H, output_shape)


def resolve_outputs(tape: Tape, mode: str) -> str:
    if mode not in _MODES:
        raise InputError(f"mode={mode!r}: expected one of {', '.join(map(repr, _MODES))}")
    if mode == "auto":
        return "forward" if tape.n_inputs <= tape.n_outputs else "reverse"
    return mode


def _jacobian_matrix(tape: Tape, mode: str) -> tuple:
    """(recorder, J) with J[i][j] = d output i / d input j, as recorded values (tracers, floats or None)."""
    m, n = tape.n_outputs, tape.n_inputs
    forward_mode = resolve_outputs(tape, mode) == "forward"
    flat = scalar(tape, "forward-mode Jacobian: the sweeps along each input read scalar instructions") \
        if forward_mode or not tape.maps else None  # (reverse sweeps keep a tape's loops)
    # outside the loop: the m x n entries and at most the replayed tape (what its guards need)
    outside = m * n + (0 if flat is None else len(flat.code) + len(flat.guards))
    if flat is not None and (directions.as_loop(flat, n, outside) if forward_mode
                             else directions.as_reverse_loop(flat, outside)):
        loop = directions.jacobian_loop(flat, not forward_mode)
        if loop is not None:
            return loop
    if forward_mode:
        rec, _, cols = tangent_sweeps(flat, [(j,) for j in range(n)])
        return rec, [[cols[j][i] for j in range(n)] for i in range(m)]
    rec, xs, ps = fresh(tape)
    vals = replay(tape, xs, ps)
    keep_guards(rec, tape, vals)
    return rec, [backward(tape, vals, seed(m, (i,))) for i in range(m)]


def output_offsets(tape: Tape) -> list[int]:
    return [0] + np.cumsum(tape.input_sizes).tolist()


# ---- transforms: Tape -> Tape -------------------------------------------------------------------------
def jacobian_tape(tape: Tape, mode: str = "auto") -> Tape:
    """The dense Jacobian tape: same inputs and params, output shape ``output_shape + (n_inputs,)`` (inputs of
    all arguments flattened, in order).

    ``mode="forward"`` records one forward sweep per input, ``"reverse"`` one reverse sweep per output;
    ``"auto"`` picks forward when ``n_inputs <= n_outputs`` (fewer sweeps), else reverse.
    """
    rec, J = _jacobian_matrix(tape, mode)
    flat = [v for row in J for v in row]
    return finish_tape(rec, tape, flat, tape.output_shape + (tape.n_inputs,))


def jacobian_blocks_tape(tape: Tape, mode: str) -> Tape:
    """The Jacobian with one contiguous block per argument (``output_shape + shape_k``), flattened and concatenated;
    for one argument shaped ``output_shape + input_shape`` (what ``jacobian(x, out=J)`` fills, so its native
    method answers that call)."""
    rec, J = _jacobian_matrix(tape, mode)
    off = output_offsets(tape)
    flat = [J[i][j] for k in range(len(tape.input_shapes)) for i in range(tape.n_outputs)
            for j in range(off[k], off[k + 1])]
    one = len(tape.input_shapes) == 1
    return finish_tape(rec, tape, flat, tape.output_shape + tape.input_shapes[0] if one else (len(flat),))


def _scalar(tape: Tape) -> None:
    if tape.n_outputs != 1:
        raise InputError(f"the Hessian needs a scalar-valued tape; this one has output shape "
                         f"{tape.output_shape}: use weights=True (hessian_tape) or weights=w (hessian) for the "
                         "Hessian of w . f")


def gradient_program(tape: Tape, weights: bool) -> Tape:
    """The tape a Hessian sweeps forward: ``w^T J`` with weights, else the gradient of a scalar tape."""
    if weights:
        return ad.vjp(tape)
    _scalar(tape)
    return ad.grad(tape)


def _symmetric(T: list, n: int, row0: int = 0) -> list:
    """Dense n x n entries from forward sweeps T[j][row0 + i] = H[i, j], reading the upper triangle only
    (entry (i, j) comes from sweep max(i, j)), so dead-code elimination drops the half never read."""
    return [T[max(i, j)][row0 + min(i, j)] for i in range(n) for j in range(n)]


def _hessian_sweeps(tape: Tape, weights: bool, gradient_outputs: bool = False) -> tuple:
    """The one Hessian algorithm: ``(recorder, g, first, H)`` with ``H`` the n x n entries (row-major) of the forward
    sweeps along each unit vector of the gradient program ``g``, upper triangle read and mirrored (so exactly
    symmetric), and ``first`` the outputs of ``g`` (``[value, gradient]`` for a scalar tape). Where the gradient
    is affine in the inputs with constant coefficients (a quadratic form), ``H`` is instead that constant
    matrix (an array), computed by array rules (``affine``) without sweeping.

    ``hessian_tape`` and ``value_gradient_hessian_tape`` finish the same recording with different outputs, so
    every entry is the same sequence of operations in both: the Hessian of ``tape.hessian``,
    ``value_gradient_hessian``, ``assemble_hessian`` and the exported C function agree bit for bit. (Except
    near ``directions.OUTSIDE_LIMIT``: ``gradient_outputs`` keeps the gradient program outside a loop over
    directions, so there the one may sweep unrolled and the other loop; their entries are then equal as
    numbers, and may differ in the sign of a zero or, next to an infinite partial, be NaN in the loop.)"""
    if not weights:
        _scalar(tape)
    g, row0 = (ad.vjp(tape), 0) if weights else (ad.value_and_grad(tape), 1)
    n = tape.n_inputs
    J = affine.constant_jacobian(g, g.outputs[row0:row0 + n], n)
    if J is not None:  # the gradient is affine: its Jacobian, by array rules, is the (constant) Hessian
        rec, xs, ps = fresh(g)
        first = []
        if gradient_outputs:
            vals = replay(g, xs, ps)
            first = [vals[s] for s in g.outputs.tolist()]
        return rec, g, first, np.triu(J) + np.triu(J, 1).T  # the upper triangle, mirrored, as below
    g = scalar(g, "dense Hessian: the forward sweeps of the gradient read scalar instructions")  # (and the slots
    # read below are the sweeps' slots)
    reduced = front.cut(g, n, g.outputs[row0:row0 + n]) if len(g.code) <= directions.LOOP_OVER else None
    if reduced is not None and len(g.code) * len(reduced[0]) <= directions.LOOP_OVER:
        # the nonlinear part reads fewer affine combinations than inputs: sweep along those (small sweeps for sure,
        # a choice that does not depend on the outputs kept: hessian_tape and value_gradient_hessian_tape agree)
        rec, vals, H = front.hessian_entries(g, n, row0, *reduced)
        return rec, g, [vals[s] for s in g.outputs.tolist()], H
    # outside a loop over directions: the entries, and the gradient program when the tape returns its outputs
    # (value_gradient_hessian), else at most the replayed tape (what its guards need)
    size = n + 1 + len(g.code) if gradient_outputs else \
        len(scalar(tape, "dense Hessian: the unrolled size decides how the directions are swept").code)
    outside = n * n + len(g.guards) + size
    loop = directions.hessian_loop(g, n, row0) if directions.as_loop(g, n, outside) else None
    if loop is not None:  # every direction reaches most of g: one loop over directions
        rec, first, H = loop
        return rec, g, first, H
    rec, vals, T = tangent_sweeps(g, [(j,) for j in range(n)])
    return rec, g, [vals[s] for s in g.outputs.tolist()], _symmetric(T, n, row0)


def _separable_hessian(tape: Tape, with_value_gradient: bool) -> Tape | None:
    """The partially separable Hessian (``separable.hessian``) when the tape is one and it is the lighter form:
    for a small tape the scalar algorithm's Hessian is built too, and the separable one kept unless that one
    executes fewer instructions. The choice is the same for ``hessian_tape`` and
    ``value_gradient_hessian_tape`` (both read it from the tape's memo), so their Hessians stay bit for bit
    equal."""
    sep = separable.hessian(tape, hessian_tape, with_value_gradient)
    if sep is None or work(tape) > BOTH_WAYS:
        return sep

    def separable_pays() -> bool:
        alone = sep if not with_value_gradient else separable.hessian(tape, hessian_tape, False)
        rec, g, _, H = _hessian_sweeps(tape, False)
        return work(alone) <= work(_finish_hessian(rec, g, [], H, (tape.n_inputs, tape.n_inputs)))

    ir = getattr(tape, "tape", tape)  # (a Function reads through to its Tape)
    return sep if ir.memo("separable_hessian_pays", separable_pays) else None


def hessian_tape(tape: Tape, weights: bool = False) -> Tape:
    """The dense, symmetric Hessian tape ``(n_inputs, n_inputs)`` of a scalar tape, by forward-over-reverse.

    With ``weights=True`` (for vector-valued tapes) the tape takes an extra last input ``w`` shaped like the
    output and returns the Hessian of ``w . f`` (the Lagrangian Hessian).

    A partially separable tape (a sum over a loop reading inputs, ``tapead.separable``) gets the loop's small
    Hessian scattered into place instead.
    """
    if not weights:
        sep = _separable_hessian(tape, False)
        if sep is not None:
            return sep
    rec, g, _, H = _hessian_sweeps(tape, weights)
    return _finish_hessian(rec, g, [], H, (tape.n_inputs, tape.n_inputs))


def hvp_tape(tape: Tape) -> Tape:
    """Hessian-vector products of a scalar tape: inputs ``(x..., v...)`` (``v`` shaped like the arguments),
    output ``H(x) v`` flattened ``(n_inputs,)``; forward-over-reverse, i.e. ``jvp(grad(tape))``. A small tape
    with loops gets whichever of the structured and the unrolled forward sweep executes less (``BOTH_WAYS``)."""
    g = gradient_program(tape, False)
    hvp = ad.jvp(g)
    if not g.maps or work(tape) > BOTH_WAYS:
        return hvp
    unrolled = ad.jvp(scalar(g, "Hessian-vector product of a small tape: the unrolled sweep is built too, and "
                                "kept when it executes less"))
    return unrolled if work(unrolled) < work(hvp) else hvp  # (ties keep the loops)


def value_gradient_hessian_tape(tape: Tape) -> Tape:
    """One tape with outputs ``[value, gradient (n), Hessian (n * n, row-major)]`` of a scalar tape."""
    sep = _separable_hessian(tape, True)
    if sep is not None:
        return sep
    rec, g, first, H = _hessian_sweeps(tape, False, gradient_outputs=True)
    n = tape.n_inputs
    return _finish_hessian(rec, g, first, H, (1 + n + n * n,))


__all__ = ["jacobian_tape", "hessian_tape", "hvp_tape", "value_gradient_hessian_tape",
           "tangent_sweeps", "seed"]
