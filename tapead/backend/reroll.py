"""Re-rolling: the repeated steps of a scalar tape become loops of its kernel.

A Python loop over time steps (an RK4 integrator, a recurrence, a shooting stage per interval) records the same
instructions once per step: 1,000 RK4 steps are 58,000 rows, and their gradient 170,000, which LLVM would compile
one by one (seconds at O0, tens of seconds at O2). Here the code generator finds runs of rows that repeat with a
period ``L`` (the same op at each position of every step, each argument either a result of the same step at the
same position, or something computed earlier: an earlier step's result, an input, a constant, anything) and
lowers each run as one loop over its steps, as CppADCodeGen finds loop patterns in its tapes.

A run becomes a map whose body is one step. Arguments from outside the step are the map's table columns: an
input, a constant (the same one every step: a literal of the body; a different one per step: read from the
constants array), and the previous step's results, which the map reads from its own rows in the work array,
stored by the iteration before (the loop runs its iterations in order). The rows a later step, later code, a
guard or an output reads are the map's ``each`` outputs; the rest live in registers only.

Only the code generator sees a re-rolled tape: its maps read their own earlier rows, which no other part of tapead
allows (``validate`` refuses it; the interpreter and transforms never see such a tape). The loop runs the same
instructions on the same operands in the same order as the straight-line code, so results are the same bits.
Detection is numpy over the rows: a hash of each row's op and nearby argument distances, the most frequent
distances between equal hashes as candidate periods, stretches where rows match the rows one period later, then
an exact check per step.
"""
from __future__ import annotations

import numpy as np

from ..ir.structure import Map, Out, placeholder_rows
from ..ir.tape import Tape
from ..table.ops import BY_CODE

MIN_STEPS = 8  # a run re-rolls when it repeats at least this many times ...
MIN_ROWS = 256  # ... and covers at least this many rows
NEAR = 16  # argument distances up to this shape the hashes that suggest periods
CANDIDATES = 64  # periods tried: the most frequent distances between rows of equal hashes
_ARITY = np.array([row.arity for row in BY_CODE], np.int64)


def rerolled(tape: Tape) -> Tape:
    """``tape`` with its repeated runs of rows as loops (the tape itself when it has maps or nothing repeats).
    Memoised on the tape; see the module docstring for what may read the result."""
    ir = getattr(tape, "tape", tape)  # (a Function reads through to its Tape)
    return ir.memo("rerolled", lambda: _reroll(ir))


def _reroll(tape: Tape) -> Tape:
    if tape.maps or len(tape.code) < MIN_ROWS:
        return tape
    code = tape.code.astype(np.int64)
    runs = _runs(code, tape.first_result)
    if not runs:
        return tape
    return _rewrite(tape, code, runs)


def _distances(code: np.ndarray, first: int) -> np.ndarray:
    """Per row and argument: how many rows back the argument was computed (>= 1), -1 for an unused argument, -2
    for an input, a parameter or a constant."""
    own = first + np.arange(len(code), dtype=np.int64)[:, None]
    args = code[:, 1:]
    used = np.arange(3)[None, :] < _ARITY[code[:, 0]][:, None]
    return np.where(~used, -1, np.where(args < first, -2, own - args))


def _hashes(code: np.ndarray, distances: np.ndarray, near: int) -> np.ndarray:
    """One int64 per row: its op and, per argument, its distance back when it is a result at most ``near`` rows
    back (else a class: input or constant, farther result). With ``near`` below a period ``L``, the rows of two
    steps that match exactly have equal hashes: a distance under ``L`` is the same at every step, and anything
    farther back is an external column however far it is."""
    cls = np.where(distances > near, -3, distances)
    h = code[:, 0] * 1_000_003
    for a in range(3):
        h = h * 131 + cls[:, a]
    return h


def _candidate_periods(h: np.ndarray) -> list[int]:
    """The most frequent distances from a row to the next row with the same hash (a step's rows recur one period
    later; a row repeated inside a step gives shorter, rarer gaps)."""
    order = np.argsort(h, kind="stable")
    same = h[order[1:]] == h[order[:-1]]
    gaps = (order[1:] - order[:-1])[same]
    gaps = gaps[gaps <= len(h) // MIN_STEPS]
    if not len(gaps):
        return []
    counts = np.bincount(gaps)
    top = np.argsort(counts)[::-1][:CANDIDATES]
    return [int(L) for L in top if counts[L] * MIN_STEPS >= MIN_ROWS and L > 0]


def _runs(code: np.ndarray, first: int) -> list[tuple[int, int, int]]:
    """``(start row, period, steps)`` of disjoint runs that re-roll exactly, in row order. Candidate periods are
    tried on the rows not yet taken, the one covering most rows first (the smaller on a tie: a multiple of a
    period covers as much), until none covers any: the most frequent first, the rarer ones (a sparse Jacobian's
    sweeps, each its own period) only while enough rows are left."""
    free = np.ones(len(code), bool)
    distances = _distances(code, first)
    hashes: dict = {"distances": distances}
    ranked = _candidate_periods(_hashes(code, distances, NEAR))
    found: list = []
    for group in (ranked[:CANDIDATES // 4], ranked[CANDIDATES // 4:]):
        if free.sum() >= MIN_ROWS:
            _claim(code, first, sorted(group), free, hashes, found)
    return sorted(found)


def _claim(code: np.ndarray, first: int, candidates: list, free: np.ndarray, hashes: dict, found: list) -> None:
    """Take the runs of the best-covering candidate period, again and again (``_runs``)."""
    while candidates:
        best, covering = (0, None, []), []
        for L in candidates:
            runs = _stretches(code, first, L, free, hashes)
            cover = L * sum(steps for _, steps in runs)
            if cover:
                covering.append(L)  # (a period covering nothing now covers nothing once rows are taken)
            if cover > best[0]:
                best = (cover, L, runs)
        cover, L, runs = best
        if not cover:
            return
        for s, steps in runs:
            found.append((s, L, steps))
            free[s:s + L * steps] = False
        candidates = [c for c in covering if c != L]


def _stretches(code: np.ndarray, first: int, L: int, free: np.ndarray, hashes: dict) -> list[tuple[int, int]]:
    """``(start, steps)`` of the exact runs of period ``L`` among the free rows."""
    n = len(code)
    h = hashes.get(L)
    if h is None:
        h = hashes[L] = _hashes(code, hashes["distances"], L - 1)
    eq = np.zeros(n, bool)
    eq[:n - L] = (h[:-L] == h[L:]) & free[:-L] & free[L:]
    # maximal stretches of eq: rows [i, j) with eq true make rows [i, j + L) L-periodic
    edges = np.flatnonzero(np.diff(np.concatenate([[0], eq.view(np.int8), [0]])))
    starts, ends = edges[0::2], edges[1::2]
    long = (ends - starts + L) // L
    keep = (long >= MIN_STEPS) & (long * L >= MIN_ROWS)  # (most stretches are a few rows that happen to match)
    out = []
    free = free.copy()  # (rows this call's runs take: a stretch ends up to L rows past its last match)
    for i, j in zip(starts[keep].tolist(), ends[keep].tolist()):
        steps = (j - i + L) // L
        taken = np.flatnonzero(~free[i:i + L * steps])
        steps = int(taken[0]) // L if len(taken) else steps
        for s, k in _exact(code, first, i, L, steps):
            out.append((s, k))
            free[s:s + L * k] = False
    return out


def _exact(code: np.ndarray, first: int, s: int, L: int, steps: int) -> list[tuple[int, int]]:
    """The sub-runs ``(start, steps)`` of ``steps`` periods from row ``s`` in which every step matches its run's
    first step: the same op at each position, and each argument internal at the same position or external."""
    out = []
    while steps >= MIN_STEPS and L * steps >= MIN_ROWS:
        block = code[s:s + L * steps].reshape(steps, L, 4)
        ops = block[:, :, 0]
        rel = block[:, :, 1:] - (first + s + L * np.arange(steps, dtype=np.int64))[:, None, None]
        used = np.arange(3)[None, None, :] < _ARITY[ops][:, :, None]
        internal = used & (rel >= 0)
        key = np.where(internal, rel, -1)  # the position an internal argument reads; -1: external or unused
        bad = (ops != ops[0]).any(axis=1) | (key != key[0]).any(axis=(1, 2))
        cut = int(np.argmax(bad)) if bad.any() else steps
        if cut >= MIN_STEPS and L * cut >= MIN_ROWS:
            out.append((s, cut))
        cut = max(cut, 1)
        s, steps = s + L * cut, steps - cut
    return out


def _rewrite(tape: Tape, code: np.ndarray, runs: list) -> Tape:
    """The tape with each run replaced by a map's placeholder rows; slots renumbered."""
    first, n = tape.first_result, len(code)
    in_run = np.zeros(n, bool)
    for s, L, steps in runs:
        in_run[s:s + L * steps] = True
    used = np.arange(3)[None, :] < _ARITY[code[:, 0]][:, None]
    needed = np.zeros(tape.n_slots, bool)  # slots read other than by a row of the same step
    outside = code[~in_run][:, 1:][used[~in_run]]
    needed[outside] = True
    needed[tape.outputs] = True
    needed[tape.guards[:, 0]] = True
    parts = []
    for s, L, steps in runs:
        block = code[s:s + L * steps].reshape(steps, L, 4)
        rel = block[:, :, 1:] - (first + s + L * np.arange(steps, dtype=np.int64))[:, None, None]
        external = used[s:s + L] & (rel[0] < 0)
        cols = block[:, :, 1:][:, external]  # (steps, external arguments)
        needed[cols.ravel()] = True
        parts.append((s, L, steps, external, cols))
    remap = np.full(tape.n_slots, -1, np.int64)
    remap[:first] = np.arange(first)
    new_code, maps, at, prev = [], [], first, 0
    for s, L, steps, external, cols in parts:
        keep = np.flatnonzero(~in_run[prev:s]) + prev
        remap[first + keep] = at + np.arange(len(keep))
        at += len(keep)
        new_code.append(code[keep])
        stored = np.flatnonzero(needed[first + s:first + s + L * steps].reshape(steps, L).any(axis=0))
        if not len(stored):  # steps nothing reads (dead code a hand-built tape may hold): dropped
            prev = s + L * steps
            continue
        rows = first + s + L * np.arange(steps)[:, None] + stored[None, :]  # (steps, stored)
        remap[rows] = at + np.arange(len(stored))[None, :] * steps + np.arange(steps)[:, None]
        at += len(stored) * steps
        maps.append((len(new_code), code[s:s + L], first + s, external, cols, stored))
        new_code.append(None)  # the map's placeholder rows, once remapped tables are known
        prev = s + L * steps
    keep = np.flatnonzero(~in_run[prev:]) + prev
    remap[first + keep] = at + np.arange(len(keep))
    new_code.append(code[keep])
    made = []
    for index, (where, step, base, external, cols, stored) in enumerate(maps):
        m = _step_map(tape, step, base, external, remap[cols], stored)
        made.append(m)
        new_code[where] = placeholder_rows(index, m.rows)
    rows = np.concatenate(new_code)
    scalar = rows[:, 0] >= 0
    args = rows[scalar, 1:]
    live = np.arange(3)[None, :] < _ARITY[rows[scalar, 0]][:, None]
    args[live] = remap[args[live]]
    rows[scalar, 1:] = args
    assert (remap[tape.outputs] >= 0).all() and (remap[tape.guards[:, 0]] >= 0).all()
    return tape.replace(code=rows, outputs=remap[tape.outputs], guards=np.stack(
        [remap[tape.guards[:, 0]], tape.guards[:, 1]], axis=1) if len(tape.guards) else tape.guards,
        maps=tuple(made))


def _step_map(tape: Tape, step: np.ndarray, base: int, external: np.ndarray, cols: np.ndarray,
              stored: np.ndarray) -> Map:
    """The map of one run: its body is one step (``step``: the first step's rows, the first writing slot
    ``base``); ``cols`` the external arguments' slots per step (renumbered); the body's outputs are the ``stored``
    positions. An argument reading the same constant at every step is a literal of the body."""
    L, steps = len(step), len(cols)
    if cols.shape[1]:
        uniq, which = np.unique(cols, axis=1, return_inverse=True)
        which = np.ravel(which)
    else:
        uniq, which = cols, np.zeros(0, np.int64)
    fixed = (uniq == uniq[0]).all(axis=0)
    const = fixed & (uniq[0] >= tape.first_const) & (uniq[0] < tape.first_result)
    inputs, literals = np.flatnonzero(~const), np.flatnonzero(const)
    n_in = len(inputs)
    body_slot = np.empty(uniq.shape[1], np.int64)
    body_slot[inputs] = np.arange(n_in)
    body_slot[literals] = n_in + np.arange(len(literals))
    first_result = n_in + len(literals)
    args = step[:, 1:].copy()
    used = np.arange(3)[None, :] < _ARITY[step[:, 0]][:, None]
    internal = used & ~external
    args[external] = body_slot[which]
    args[internal] = first_result + (args[internal] - base)
    body = np.concatenate([step[:, :1], args], axis=1)
    consts = tape.consts[uniq[0, literals] - tape.first_const]
    body_tape = Tape(code=body, consts=consts, input_shapes=((n_in,),), param_shape=None,
                     outputs=first_result + stored, output_shape=(len(stored),), assume_finite=tape.assume_finite)
    return Map(body_tape, uniq[:, inputs], (Out.EACH,) * len(stored), np.zeros((steps, 0), np.int32))
