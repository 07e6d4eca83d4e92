"""Derivatives as tape transforms: Tape -> Tape. No numpy math and no LLVM here, only replays under a recorder.

``replay`` interprets a tape on tracers, which records a new tape (folding and sharing as it goes); the
reverse and forward transforms replay the forward instructions and then apply each op's reverse rule (once per
instruction, for all its arguments) or forward rule (once per instruction, from all its argument tangents),
themselves written in ops, so the derivative program is recorded too. Higher orders come from composing these.
"""
from __future__ import annotations

import heapq
from itertools import repeat
from collections import defaultdict

from ..errors import TapeadError
from ..table.ops import BY_CODE, OPS, select
from ..tracing.recorder import Recorder
from ..ir.tape import Tape
from ..tracing.tracer import Scalar
from ..ir.structure import read_slots, scalar, walk
from .maps_ad import Unstructured, forward_map, replay_map, reverse_map
from .product_ad import forward_product, reverse_product
from .slotvalues import SlotValues
import numpy as np

# the NaN-masking class (a fact of the op table): a cotangent through such an op is zero on the branch not taken
_CHOOSES = frozenset(row.code for row in OPS.values() if row.chooses)
_UNSET = object()


def fresh(tape: Tape, n_extra_inputs: int = 0):
    """A recorder with the tape's inputs (plus extra inputs) and params as tracers."""
    rec = Recorder(assume_finite=tape.assume_finite)
    return rec, tracers(rec, rec.inputs_of([None] * (tape.n_inputs + n_extra_inputs))), \
        tracers(rec, rec.params_of([None] * tape.n_params))


def tracers(rec: Recorder, ids: range) -> list:
    """A tracer of each node (made in bulk: a network's 10^5 inputs)."""
    return list(map(Scalar, repeat(rec, len(ids)), ids))


def replay(tape: Tape, xs: list, ps: list) -> list:
    """Run ``tape`` on the given values (tracers or floats); returns the value of every slot. A map is emitted
    whole into the tracers' recorder (its tables renamed), never unrolled."""
    vals = SlotValues(xs, ps, tape.consts)
    for step in walk(tape):
        if step.map is not None:
            vals.extend(replay_map(step.map, vals))
        else:
            vals.append(step.row(*(vals[a] for a in step.args)))
    return vals


def keep_guards(rec: Recorder, tape: Tape, vals: list) -> None:
    for slot, expected in tape.guards.tolist():
        v = vals[slot]
        if isinstance(v, Scalar):
            rec.guards.append((v.id, expected))


def node_ids(rec: Recorder, values) -> list[int]:
    const, ids, last, last_id = rec.const, [], _UNSET, -1
    for v in values:
        if isinstance(v, Scalar):
            ids.append(v.id)
        elif v is last:  # runs of the same zero (a sparse result) look up its constant once
            ids.append(last_id)
        else:
            last, last_id = v, const(float(v))
            ids.append(last_id)
    return ids


def _active(tape: Tape) -> bytearray:
    """Slots that depend on an input (only these carry derivatives: activity analysis). A map's rows are active
    when anything its tables read is."""
    act = bytearray(tape.n_slots)
    act[:tape.n_inputs] = b"\x01" * tape.n_inputs
    first = tape.first_result
    for step in walk(tape):
        if step.map is not None:
            if any(act[a] for a in step.map.read_slots().tolist()):
                act[first + step.start:first + step.end] = b"\x01" * (step.end - step.start)
        elif not step.row.no_derivative:
            act[first + step.start] = any(act[a] for a in step.args)
    return act


def _mask_of(g) -> tuple | None:
    """If cotangent ``g`` is ``select(c, h, 0)`` or ``select(c, 0, h)``: ``(c, taken_when_true)``."""
    if not isinstance(g, Scalar):
        return None
    rec = g.rec
    if rec.kinds[g.id] not in _CHOOSES:
        return None
    c, a, b = rec.args[g.id]
    if rec.const_value(b) == 0.0:
        return (c, True)
    if rec.const_value(a) == 0.0:
        return (c, False)
    return None


def _masked(q, mask, rec):
    """Contribution ``q`` restricted to where the branch it flows through was taken (exact 0 elsewhere)."""
    c = Scalar(rec, mask[0])
    return select(c, q, 0.0) if mask[1] else select(c, 0.0, q)


def _condition(mask, rec) -> Scalar:
    """A 0/1 value that is 1 exactly where ``mask`` says its value may be nonzero."""
    c = Scalar(rec, mask[0])
    return c if mask[1] else select(c, 0.0, 1.0)


def _as_mask(c, mask):
    """The mask of the condition value ``c`` (a fold to a constant leaves the region unchanged: ``mask``)."""
    return (c.id, True) if isinstance(c, Scalar) else mask


def _rec_of(*values):
    """The recorder of the first traced value, or None (numbers need no mask)."""
    return next((v.rec for v in values if isinstance(v, Scalar)), None)


def either(m1, m2, rec):
    """The mask of a sum of two masked values: nonzero only where one of them may be (None: anywhere).

    Two selects on one value (``where(x > 0, sqrt(x), 0) + where(x > 1, sqrt(x), 0)``) or a value read twice by
    a max chain add masked cotangents with different conditions; the sum is still zero where neither branch
    was taken, so what is computed from it is masked with their union, never left unmasked."""
    if m1 is None or m2 is None or rec is None:
        return None if m1 != m2 else m1
    if m1 == m2:
        return m1
    return _as_mask(select(_condition(m1, rec), 1.0, _condition(m2, rec)), m1)


def both(outer, inner, rec):
    """The mask of a value masked twice (a select's branch under a select, a branch under a max): nonzero only
    where both conditions hold. ``outer`` is known not None; ``inner`` may be."""
    if inner is None or inner == outer:
        return outer
    return _as_mask(select(_condition(outer, rec), _condition(inner, rec), 0.0), outer)


def backward(tape: Tape, vals: list, seeds: list, masks: list | None = None) -> list:
    """Cotangents of the inputs given one cotangent per output (None = zero): the reverse sweep.

    NaN-safe selects: a cotangent that entered a branch through a select is zero where that branch was not
    taken, and every contribution computed from it is masked the same way, so a NaN or infinite partial
    inside the branch not taken (``where(x > 0, sqrt(x), 0)`` at x < 0) cannot turn the zero into NaN. A seed
    written as such a select masks the same way (a loop body's reverse, seeded where a branch was taken).
    ``masks``, when given, receives each input's mask (what a map's reverse passes on to the slots it reads).
    """
    adj: list = [None] * tape.n_slots
    mask: list = [None] * tape.n_slots
    act = _active(tape)
    for s, g in zip(tape.outputs.tolist(), seeds):
        if g is not None and act[s]:
            if adj[s] is None:
                adj[s], mask[s] = g, _mask_of(g)
            else:
                mask[s] = either(mask[s], _mask_of(g), adj[s].rec) if isinstance(adj[s], Scalar) else None
                adj[s] = adj[s] + g
    first = tape.first_result
    read = read_slots(tape) if tape.maps else None
    for step in reversed(walk(tape)):
        if step.map is not None:  # a whole map at once: its reverse is a map scattering into the slots it read
            if not reverse_product(step.map, first + step.start, vals, adj, mask, act, either):
                kept = bool(read[first + step.start:first + step.end].any())  # later code reads the loop's rows
                reverse_map(step.map, first + step.start, vals, adj, mask, act, replay, backward, either, kept)
            continue
        i = step.start
        g = adj[first + i]
        if g is None:
            continue
        row, args = step.row, step.args
        m = mask[first + i]
        contributions = row.rule(g, *(vals[a] for a in args), vals[first + i])
        for a, c in zip(args, contributions):
            if c is None or not act[a]:
                continue
            if m is not None and isinstance(c, Scalar):
                cm = both(m, _mask_of(c), c.rec)
                c = _masked(c, cm, c.rec)
            else:
                cm = _mask_of(c)
            if adj[a] is None:
                adj[a], mask[a] = c, cm
            else:
                rec = c.rec if isinstance(c, Scalar) else getattr(adj[a], "rec", None)
                mask[a] = either(mask[a], cm, rec) if rec is not None else None
                adj[a] = adj[a] + c
    if masks is not None:
        masks[:] = mask[:tape.n_inputs]
    return adj[:tape.n_inputs]


def _forward_plan(tape: Tape) -> tuple[list, list]:
    """Each instruction's (row, argument slots) and each slot's reading instructions, computed once per tape (a
    Hessian runs one forward sweep per input over the same gradient tape)."""
    return tape.memo("forward_plan", lambda: _plan_forward(tape))


def _plan_forward(tape: Tape) -> tuple[list, list]:
    """The plan ``_forward_plan`` memoises."""
    steps: list = []
    users: dict = defaultdict(list)  # (only slots something reads: a million-entry data block has no readers)
    for step in walk(tape):
        i = step.start
        if step.map is not None:  # one step at its first row (its other rows: None), read by what its tables read
            steps.append((step.map, None))
            steps.extend([None] * (step.end - step.start - 1))
            read = step.map.read_slots()
            for a in read[(read < tape.first_const) | (read >= tape.first_result)].tolist():  # (constants carry
                users[a].append(i)  # no tangents: a data block the loop reads is not listed)
            continue
        steps.append((step.row, list(step.args)))
        for a in set(step.args):
            users[a].append(i)
    return steps, dict(users)


def forward(tape: Tape, vals: list, tangents: list, masks: list | None = None, fixed: dict | None = None) -> list:
    """Tangent of every slot given tangents of the inputs (None = zero): the forward sweep. ``fixed`` gives the
    tangents of computed slots taken as independent variables (``front``: a sweep along an affine combination
    of the inputs seeded where it is computed): their own rules are not applied.

    Only instructions reached from a nonzero tangent are visited (in tape order, from a heap), so a sweep along
    one unit vector costs what depends on that input, not the whole tape: n sweeps of a Hessian cost the
    Hessian's nonzeros, not n times the gradient tape.

    NaN-safe selects, as in ``backward``: a tangent that left a select is zero where its branch was not taken,
    and whatever is computed only from such tangents is masked the same way (0 * inf stays 0); ``masks``, if
    given, receives every slot's mask.

    A map's rows get their tangents from one loop (``maps_ad.forward_map``), or ``Unstructured`` is raised when a
    loop cannot carry them exactly (the caller sweeps the unrolled tape).
    """
    steps, users = _forward_plan(tape)
    tan: list = list(tangents) + [None] * (tape.n_slots - tape.n_inputs)
    mask: list = [None] * tape.n_slots
    first = tape.first_result
    fixed = fixed or {}
    for s, t in fixed.items():
        tan[s] = t
    todo = sorted({i for s, t in [*enumerate(tangents), *fixed.items()] if t is not None for i in users.get(s, ())})
    queued = set(todo)
    heappop, heappush, unset = heapq.heappop, heapq.heappush, _UNSET
    while todo:
        i = heappop(todo)
        row, args = steps[i]
        out = first + i
        if out in fixed:
            continue
        if args is None:  # a map
            found = forward_product(row, vals, tan, mask)  # dA B: one product, not the body's sweep per entry
            rows, row_masks = found if found is not None else forward_map(row, vals, tan, mask, replay, forward)
            for r, t in enumerate(rows):
                if t is not None:
                    tan[out + r] = t
                    mask[out + r] = row_masks.get(r)
                    for u in users.get(out + r, ()):
                        if u not in queued:
                            queued.add(u)
                            heappush(todo, u)
            continue
        # the tangent of the result (the row's forward rule, given the nonzero argument tangents) and the
        # arguments' shared mask: the mask of every nonzero argument tangent when all agree, else None; at least
        # one argument tangent is nonzero
        if len(args) == 2:
            a0, a1 = args
            t0, t1 = tan[a0], tan[a1]
            if t0 is None:
                shared = mask[a1]
            elif t1 is None:
                shared = mask[a0]
            else:
                shared = either(mask[a0], mask[a1], _rec_of(t0, t1))
            total = row.tangent((t0, t1), vals[a0], vals[a1], vals[out])
        elif len(args) == 1:
            a0 = args[0]
            shared = mask[a0]
            total = row.tangent((tan[a0],), vals[a0], vals[out])
        else:
            ts = [tan[a] for a in args]
            shared = unset
            for a, t in zip(args, ts):
                if t is not None:
                    if shared is unset:
                        shared = mask[a]
                    else:
                        shared = either(shared, mask[a], _rec_of(*ts))
            if shared is unset:
                shared = None
            total = row.tangent(ts, *[vals[a] for a in args], vals[out])
        if total is None:
            continue
        if shared is not None and isinstance(total, Scalar):
            shared = both(shared, _mask_of(total), total.rec)
            total = _masked(total, shared, total.rec)
            mask[out] = shared
        else:
            mask[out] = _mask_of(total)
        tan[out] = total
        for u in users.get(out, ()):
            if u not in queued:
                queued.add(u)
                heappush(todo, u)
    if masks is not None:
        masks[:] = mask
    return tan


def _zero_if_none(values):
    return [0.0 if v is None else v for v in values]


def _scalar_output(tape: Tape, what: str) -> None:
    if tape.n_outputs != 1:
        raise TapeadError(f"{what} needs a scalar output, this tape has output shape {tape.output_shape}; "
                          "use tapead.vjp or tapead.jacobian for vector outputs")


def _reverse(tape: Tape, what: str):
    """Replay a scalar tape under a fresh recorder and sweep back: (recorder, slot values, input gradients)."""
    _scalar_output(tape, what)
    rec, xs, ps = fresh(tape)
    vals = replay(tape, xs, ps)
    keep_guards(rec, tape, vals)
    return rec, vals, _zero_if_none(backward(tape, vals, [1.0]))


def value_and_grad(tape: Tape) -> Tape:
    """Tape with outputs ``[value, d value / d inputs (all arguments, flattened, in order)]``."""
    rec, vals, grads = _reverse(tape, "value_and_grad")
    outs = [vals[tape.outputs[0]]] + grads
    return rec.finish(node_ids(rec, outs), (1 + tape.n_inputs,), tape.input_shapes, tape.param_shape)


def grad(tape: Tape) -> Tape:
    """The gradient tape of a scalar tape: same inputs and params, outputs the gradient (flattened)."""
    rec, _, grads = _reverse(tape, "grad")
    return rec.finish(node_ids(rec, grads), (tape.n_inputs,), tape.input_shapes, tape.param_shape)


def jvp(tape: Tape) -> Tape:
    """Forward mode: a tape of inputs ``(x..., v...)`` whose output is ``J(x) v`` (shaped like the output). Loops
    stay loops where they carry the tangents exactly (``maps_ad.forward_map``), else the unrolled tape is swept."""
    try:
        return _jvp(tape)
    except Unstructured:
        return _jvp(scalar(tape, "forward mode: a loop cannot carry its tangents exactly (see maps_ad.forward_map)"))


def _jvp(tape: Tape) -> Tape:
    rec, xs, ps = fresh(tape, tape.n_inputs)
    x, v = xs[:tape.n_inputs], xs[tape.n_inputs:]
    vals = replay(tape, x, ps)
    keep_guards(rec, tape, vals)
    tan = forward(tape, vals, v)
    outs = _zero_if_none(tan[s] for s in tape.outputs.tolist())
    return rec.finish(node_ids(rec, outs), tape.output_shape, tape.input_shapes * 2, tape.param_shape)


def vjp(tape: Tape) -> Tape:
    """Reverse mode: a tape of inputs ``(x..., w)`` (``w`` shaped like the output) whose output is ``w^T J(x)``."""
    rec, xs, ps = fresh(tape, tape.n_outputs)
    x, w = xs[:tape.n_inputs], xs[tape.n_inputs:]
    vals = replay(tape, x, ps)
    keep_guards(rec, tape, vals)
    grads = _zero_if_none(backward(tape, vals, w))
    return rec.finish(node_ids(rec, grads), (tape.n_inputs,), tape.input_shapes + (tape.output_shape,),
                      tape.param_shape)
