"""Reverse mode of maps: the derivative of a loop is a loop.

A map runs its body on gathered slots; its reverse is a map over the same iterations whose body is the body's
own reverse sweep (``ad.backward`` on the body, recomputing the body's values: nothing is stored per iteration),
seeded with the cotangents of the map's outputs (per iteration for ``each``, the same for ``sum``, gathered
through the scatter index for ``scatter``), and whose outputs are the cotangents of the body inputs, *scattered*
back into the slots the tables read (the adjoint of a gather is a scatter-add). So the reverse of a map costs
one small body transform, whatever its length.

NaN-safe selects across a map's boundary: a cotangent that entered through a select carries its mask (the
condition and the branch); the reverse body receives the condition as one more column and re-applies the
select to its seed, so the body's own reverse sweep masks every contribution as ``ad.backward`` does. Going
out, a masked contribution scatters its condition too, so a slot fed only by masked contributions (a gather
with repeated indices under a select) gets the union of their conditions, as the unrolled sweep gives it.
"""
from __future__ import annotations

from itertools import repeat

import numpy as np

from ..errors import TapeadError
from ..table.ops import OPS, gt, select
from ..tracing.columns import Columns
from ..tracing.recorder import Recorder, pick
from ..ir.contraction import Product, product_rows
from ..ir.structure import Map, Out, distinct
from ..tracing.tracer import Scalar
from .slotvalues import present, recorder_of, slot_ids, slot_numbers, traced, value_ids


def factor_ids(m, vals: list):
    """``(recorder, new)`` for a map read through its distinct slots: ``new(slots)`` gives the node ids of the
    slots' values in the recorder of the first traced one (numbers become constants); recorder None when no
    value is traced."""
    slots = m.read_slots()
    rec, ids = slot_ids(vals, slots)
    if rec is None:
        return None, None
    return rec, lambda t: ids[np.searchsorted(slots, t)]


def replay_map(m: Map, vals: list) -> list:
    """The values of map ``m``'s rows given every earlier slot's value: tracers -> the map emitted whole into
    their recorder; numbers -> numbers."""
    if isinstance(m, Product):
        rec, new = factor_ids(m, vals)
        if rec is not None:
            first = rec.emit_map(m.remap(new))
            return [Scalar(rec, first + r) for r in range(m.rows)]
        read = m.read_slots()
        known = slot_numbers(vals, read)
        return product_rows(m, lambda f: known[np.searchsorted(read, f)][None])[0].tolist()
    slots, where = distinct(m.tables)
    rec, ids = slot_ids(vals, slots)
    if rec is None:  # every input is a number (or the map reads nothing): evaluate it
        from ..ir.interpret import map_rows
        x = slot_numbers(vals, slots)[where].reshape(1, m.n, m.body.n_inputs)
        return map_rows(m, x)[0].tolist()
    tables = ids[where].reshape(m.tables.shape)
    first = rec.emit_map(Map(m.body, tables, m.kinds, m.dst, m.scatter_size))
    return [Scalar(rec, first + r) for r in range(m.rows)]


def _new_body(m: Map, vals: list, extra: list):
    """``(outer recorder, body recorder, its Columns, the body's values of m's inputs)`` for a loop body built
    from map ``m``'s inputs (and the outer values in ``extra``), or None when no value is traced."""
    slots, where = distinct(m.tables)
    rec, ids = slot_ids(vals, slots, extra)
    if rec is None:
        return None
    tables = ids[where].reshape(m.tables.shape)
    body = Recorder(assume_finite=rec.assume_finite)
    cols = Columns(rec, body)
    return rec, body, cols, [cols.value(np.ascontiguousarray(tables[:, i])) for i in range(m.body.n_inputs)]


def _seed(cols: Columns, slots: np.ndarray, adj: list, mask: list):
    """The body's seed for one output from the cotangents ``adj`` of the outer slots it has per iteration
    (``slots``, one per iteration; None: no cotangent anywhere). Each distinct slot is looked at once (a sum
    output is one slot for every iteration).

    Where an iteration has no cotangent, or its cotangent is masked (it came through a select), the seed is
    ``select(c, s, 0)`` with ``c`` the condition under which it is nonzero (0 without a cotangent): the body's
    reverse sweep masks every contribution with it, so a zero cotangent times an infinite partial stays 0, as
    the scalar sweep's symbolic zeros and masks keep it."""
    seen, where = distinct(slots)
    adjs = [adj[s] for s in seen.tolist()]
    if all(a is None for a in adjs):
        return None
    masks = [mask[s] for s in seen.tolist()]
    rec = cols.outer
    s = cols.value(value_ids(rec, adjs)[where])
    if any(a is None for a in adjs) or any(mk is not None for mk in masks):
        one, zero = rec.const(1.0), rec.const(0.0)
        cond = np.empty(len(adjs), np.int64)
        for k, (a, mk) in enumerate(zip(adjs, masks)):
            if a is None:
                cond[k] = zero
            elif mk is None:
                cond[k] = one
            else:
                cond[k] = mk[0] if mk[1] else rec.emit(OPS["eq"], (mk[0], zero))
        s = select(cols.value(cond[where]), s, 0.0)
    return s


def reverse_map(m: Map, start: int, vals: list, adj: list, mask: list, act: bytearray, replay, backward,
                either, kept: bool = False) -> None:
    """Add the cotangents flowing back through map ``m`` (rows from slot ``start``) to ``adj`` of the slots its
    tables read (see the module docstring). ``replay`` and ``backward`` are ``tapead.ad``'s sweeps, which the
    reverse body is recorded with, and ``either`` how ``ad`` unites masks (passed in: ``ad`` calls this
    module).

    ``kept``: later code reads the map's rows, so the forward loop stays in the derived tape. Then the reverse
    body reads the forward loop's ``each`` outputs rather than recomputing them (the same bits: the same body on
    the same inputs), so a ``tanh`` layer is evaluated once per gradient, not twice, and its outputs do not
    ride along."""
    rows = list(range(start, start + m.rows))
    if all(adj[s] is None for s in rows):
        return
    n, n_in = m.n, m.body.n_inputs
    active = np.frombuffer(act, np.uint8)  # (the bytearray itself, no copy)
    active_cols = [i for i in range(n_in) if active[m.tables[:, i]].any()]
    if not active_cols:
        return
    found = _new_body(m, vals, [adj[s] for s in rows])
    if found is None:
        raise TapeadError("the reverse of a map needs traced values")
    rec, body, cols, x = found
    seeds = []
    scatter_at = start + m.rows - m.scatter_size
    c = 0
    for _, kind, off in m.outputs():
        if kind is Out.EACH:
            slots = np.arange(start + off, start + off + n)
        elif kind is Out.SUM:
            slots = np.full(n, start + off)
        else:
            slots = scatter_at + m.dst[:, c].astype(np.int64)
            c += 1
        seeds.append(_seed(cols, slots, adj, mask))
    bvals = replay(m.body, x, [])
    if kept:
        _read_outputs(m, start, vals, rec, cols, bvals)
    cmask: list = []
    cot = backward(m.body, bvals, seeds, cmask)
    outs = [i for i in active_cols if cot[i] is not None]
    if not outs:
        return
    reads = m.tables[:, outs]
    targets, dst = distinct(reads)
    # the forward map's own each/sum outputs ride along (the reverse body recomputes them anyway): a caller
    # that returns them reads these instead, and the forward loop is dropped (Recorder.aliases)
    again = [] if kept else [j for j, kind in enumerate(m.kinds) if kind is not Out.SCATTER]
    # NaN-safe selects across the boundary: a contribution that came through a select is zero where its
    # condition fails, so each masked column also scatters its condition (0 or 1) into a second range of the
    # same targets; a target all of whose contributions were masked is nonzero only where that count is
    # positive: the union of their conditions, as the unrolled sweep's masks make it
    masked = [c for c, i in enumerate(outs) if cmask[i] is not None]
    indicators = [_indicator(body, cmask[outs[c]]) for c in masked]
    values = [bvals[m.body.outputs[j]] for j in again] + [cot[i] for i in outs] + indicators
    out_ids = [v.id if isinstance(v, Scalar) and v.rec is body else body.const(float(v)) for v in values]
    reverse = body.finish(out_ids, (len(out_ids),), ((len(cols.columns),),), None)
    col_table = cols.table(n)
    size = len(targets)
    dst = dst.reshape(n, len(outs))
    all_dst = np.concatenate([dst, dst[:, masked] + size], axis=1) if masked else dst
    fused = Map(reverse, col_table, tuple(m.kinds[j] for j in again) + (Out.SCATTER,) * (len(outs) + len(masked)),
                all_dst, size * (2 if masked else 1))
    first = rec.emit_map(fused)
    offsets = m.offsets()
    for new_off, j in zip(fused.offsets(), again):
        lo = start + offsets[j]
        olds = vals[lo:lo + (n if m.kinds[j] is Out.EACH else 1)]
        rec.aliases.update((old.id, first + new_off + k) for k, old in enumerate(olds)
                           if isinstance(old, Scalar) and old.rec is rec)
    scatter_first = first + fused.rows - fused.scatter_size
    unmasked = [c for c in range(len(outs)) if c not in set(masked)]
    plain = np.zeros(size, bool)  # targets some unmasked contribution reaches: no mask
    plain[dst[:, unmasked].ravel()] = True
    live = np.frombuffer(act, np.uint8)[targets] != 0
    fresh = live & ~present(pick(adj, targets))  # the first contribution to these: set, in one pass
    if not masked:
        ids = (scatter_first + np.flatnonzero(fresh)).tolist()
        for u, g in zip(targets[fresh].tolist(), map(Scalar, repeat(rec), ids)):
            adj[u], mask[u] = g, None
        live &= ~fresh
    for t, u in zip(np.flatnonzero(live).tolist(), targets[live].tolist()):
        g = Scalar(rec, scatter_first + t)
        here = None if plain[t] or not masked else _positive(rec, scatter_first + size + t)
        if adj[u] is None:
            adj[u], mask[u] = g, here
        else:
            mask[u] = either(mask[u], here, rec)
            adj[u] = adj[u] + g


def _read_outputs(m: Map, start: int, vals: list, rec, cols: Columns, bvals: list) -> None:
    """Replace the body's recomputed ``each`` outputs in ``bvals`` by columns reading the forward loop's rows."""
    first = m.body.first_result
    for j, kind, off in m.outputs():
        s = int(m.body.outputs[j])
        if kind is Out.EACH and s >= first:
            bvals[s] = cols.value(value_ids(rec, vals[start + off:start + off + m.n]))


def _indicator(body, mask):
    """1 where the body's contribution can be nonzero (its mask's condition holds), else 0."""
    c = Scalar(body, mask[0])
    return select(c, 1.0, 0.0) if mask[1] else select(c, 0.0, 1.0)


def _positive(rec, count_slot: int):
    """The mask ``(count > 0, taken)`` of a target whose masked contributions' conditions were counted."""
    c = gt(Scalar(rec, count_slot), 0.0)
    return (c.id, True) if isinstance(c, Scalar) else None


class Unstructured(TapeadError):
    """A loop cannot carry the tangents a forward sweep brings to it exactly: sweep the unrolled tape instead."""


def forward_map(m: Map, vals: list, tan: list, mask: list, replay, forward) -> list:
    """The tangents of map ``m``'s rows: a map whose body is the body's forward sweep
    (recomputing the body, as the reverse map does), or ``Unstructured`` when that would not be the unrolled
    sweep exactly: iterations that differ in which columns carry a tangent (the scalar sweep's symbolic zeros),
    or a tangent crossing the loop's boundary that came through a select (its mask), or an ``each`` tangent
    leaving through one. Returns the rows' tangents and the masks of the rows that have one. ``replay`` and
    ``forward`` are ``tapead.ad``'s sweeps."""
    n, n_in = m.n, m.body.n_inputs
    slots, where = distinct(m.tables)  # each slot looked at once; numpy spreads the answers over the columns
    where = where.reshape(m.tables.shape)
    tangents = [tan[s] for s in slots.tolist()]
    has = np.array([t is not None for t in tangents], bool)[where]
    masked = np.array([mask[s] is not None for s in slots.tolist()], bool)[where]
    active = [i for i in range(n_in) if has[:, i].any()]
    if any(not has[:, i].all() or masked[:, i].any() for i in active):
        raise Unstructured("iterations differ in their tangents")
    if not active:
        return [None] * m.rows, {}
    found = _new_body(m, vals, [t for t in tangents if t is not None])
    if found is None:
        raise Unstructured("a loop's forward sweep needs traced values")
    rec, body, cols, x = found
    live = np.flatnonzero(np.array([t is not None for t in tangents], bool))
    ids = np.zeros(len(slots), np.int64)
    ids[live] = value_ids(rec, [tangents[k] for k in live.tolist()])
    seeds: list = [None] * n_in
    for i in active:
        seeds[i] = cols.value(np.ascontiguousarray(ids[where[:, i]]))
    bvals = replay(m.body, x, [])
    bmask: list = []
    btan = forward(m.body, bvals, seeds, bmask)
    outputs = m.body.outputs.tolist()
    if any(btan[s] is not None and bmask[s] is not None and kind is Out.EACH for s, kind in zip(outputs, m.kinds)):
        raise Unstructured("a tangent leaves the loop through a select")
    kept = [j for j, s in enumerate(outputs) if btan[s] is not None]
    if not kept:
        return [None] * m.rows, {}
    # a sum or scatter adds masked tangents of many iterations: each also counts its condition (a sum output, or
    # a second scatter range), and a row fed only by masked tangents is masked by "count > 0", the union of
    # their conditions, as the unrolled sweep's masks make it
    masked = [j for j in kept if bmask[outputs[j]] is not None]
    values = [btan[outputs[j]] for j in kept] + [_indicator(body, bmask[outputs[j]]) for j in masked]
    out_ids = [v.id if isinstance(v, Scalar) and v.rec is body else body.const(float(v)) for v in values]
    tangent_body = body.finish(out_ids, (len(out_ids),), ((len(cols.columns),),), None)
    scatter_col = {j: c for c, j in enumerate(j for j, kind in enumerate(m.kinds) if kind is Out.SCATTER)}
    dst_cols = [scatter_col[j] for j in kept if j in scatter_col]
    count_cols = [scatter_col[j] for j in masked if j in scatter_col]
    size = m.scatter_size
    dst = m.dst[:, dst_cols] if dst_cols else np.zeros((n, 0), m.dst.dtype)
    all_dst = np.concatenate([dst, m.dst[:, count_cols] + size], axis=1) if count_cols else dst
    tangents = Map(tangent_body, cols.table(n), tuple(m.kinds[j] for j in kept) + tuple(m.kinds[j] for j in masked),
                   all_dst, size * (2 if count_cols else 1))
    first = rec.emit_map(tangents)
    rows: list = [None] * m.rows
    row_masks: dict = {}
    old, new = m.offsets(), tangents.offsets()
    for new_off, j in zip(new, kept):
        if m.kinds[j] is not Out.SCATTER:
            for k in range(n if m.kinds[j] is Out.EACH else 1):
                rows[old[j] + k] = Scalar(rec, first + new_off + k)
    for new_off, j in zip(new[len(kept):], masked):
        if m.kinds[j] is Out.SUM:
            row_masks[old[j]] = _positive(rec, first + new_off)
    # a scatter slot no kept output adds into has no tangent (the unrolled sweep's symbolic zero), not -0.0
    hit = distinct(dst)[0].tolist() if dst.size else []
    at_old, at_new = m.rows - m.scatter_size, tangents.rows - tangents.scatter_size
    plain = np.zeros(size, bool)
    plain[m.dst[:, [c for c in dst_cols if c not in set(count_cols)]].ravel()] = True
    for t in hit:
        rows[at_old + t] = Scalar(rec, first + at_new + t)
        if count_cols and not plain[t]:
            row_masks[at_old + t] = _positive(rec, first + at_new + size + t)
    return rows, row_masks
