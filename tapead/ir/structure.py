"""Maps: the structured part of a tape, and its meaning as scalar instructions (``unroll``).

A user's numpy is vectorised: ``d = p[i] - p[j]`` over 4,950 pairs, ``r2 = np.sum(d * d, axis=1)``,
``np.sum(4 * (r6 ** 2 - r6))`` is one small scalar *body* run for every pair. A ``Map`` record says exactly that:
a body (a scalar Tape of one input vector), the number of iterations ``n``, and a table ``tables[k, i]`` naming
the outer slot that body input ``i`` reads at iteration ``k`` (a gather: inputs, constants, earlier results). Each
body output is one of
- ``each``: one outer slot per iteration (an array the rest of the tape reads element by element),
- ``sum``: one outer slot holding the sum over the iterations (a reduction, the Griewank-Toint form),
- ``scatter``: added into a range of ``scatter_size`` outer slots at index ``dst[k, j]`` (a gather's adjoint: a
  reverse-mode map scatters its input cotangents back to the slots it read).

In ``Tape.code`` a map occupies a run of placeholder rows ``(MAP_ROW, map index, row offset, 0)``, one per outer
slot it writes, in the order: each outputs (``n`` rows each), sum outputs (one row each), the scatter range. So
every slot is still written by exactly one row, SSA order holds, and a tape's slots, outputs and guards mean what
they meant. Sums and scatters accumulate in iteration order (then output order) starting from -0.0, the
identity of IEEE addition, so every evaluator (interpreter, loop kernel, ``unroll``) adds in the same order.

``unroll`` turns maps into today's scalar instructions. Everything that does not yet read maps (forward mode,
Hessians, sparsity, saving) works on ``scalar(tape)``, so structure is an optimisation that is never wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import numpy as np

from ..table.ops import BY_CODE, OPS
from .notes import listening

MAP_ROW = -1  # the op code of a map's placeholder rows (never an op table index: validate refuses it elsewhere)


class Out(str, Enum):
    """What a body output becomes outside the loop (a str, so files and listings spell it as before)."""

    EACH = "each"  # one outer slot per iteration
    SUM = "sum"  # one outer slot: the sum over the iterations
    SCATTER = "scatter"  # added into the scatter range at ``dst[k, j]``

    def __repr__(self) -> str:  # as the plain string: tape hashes and listings read repr(kinds)
        return repr(self.value)


KINDS = tuple(k.value for k in Out)


def placeholder_rows(index: int, rows: int) -> np.ndarray:
    """The code rows of map ``index`` writing ``rows`` outer slots: ``(MAP_ROW, index, row offset, 0)``."""
    code = np.zeros((rows, 4), np.int64)
    code[:, 0], code[:, 1], code[:, 2] = MAP_ROW, index, np.arange(rows)
    return code
_ADD, _MUL = OPS["add"].code, OPS["mul"].code


def _frozen(a) -> bool:
    """An int32 array a map made: read-only, owning its data (no writeable base can change it), contiguous."""
    return isinstance(a, np.ndarray) and a.dtype == np.int32 and not a.flags.writeable and a.flags.owndata \
        and a.flags.c_contiguous


@dataclass(frozen=True, eq=False)
class Map:
    """One map record: ``body`` run ``n`` times on gathered slots (see the module docstring)."""

    body: object  # a Tape: input_shapes ((n_in,),), no params, no guards
    tables: np.ndarray  # (n, n_in) int32 outer slots
    kinds: tuple  # one of KINDS per body output
    dst: np.ndarray  # (n, number of scatter outputs) int32 indices into the scatter range
    scatter_size: int = 0

    def __post_init__(self):
        for name in ("tables", "dst"):
            a = getattr(self, name)
            if not _frozen(a):  # (another map's table is shared, not copied: a reverse loop reads its forward's)
                a = np.array(a, dtype=np.int32, copy=True)
                a.setflags(write=False)
            object.__setattr__(self, name, a)
        # named kinds; anything else is kept as given, for validation to refuse (a hand-made or damaged map)
        object.__setattr__(self, "kinds", tuple(Out(k) if k in KINDS else k for k in self.kinds))
        object.__setattr__(self, "scatter_size", int(self.scatter_size))

    @property
    def n(self) -> int:
        return len(self.tables)

    @property
    def rows(self) -> int:
        """Outer slots written: each outputs n apiece, sums one apiece, the scatter range."""
        return self.n * self.kinds.count(Out.EACH) + self.kinds.count(Out.SUM) + self.scatter_size

    def offsets(self) -> list[int]:
        """Row offset (within the map's run) of each body output: each -> first of its n rows; sum -> its row;
        scatter -> the start of the shared scatter range."""
        out, at = [], 0
        for k in self.kinds:
            if k is Out.EACH:
                out.append(at)
                at += self.n
        sums = at
        for k in self.kinds:
            if k is Out.SUM:
                out.append(sums)
                sums += 1
        result, e, s = [], iter(out[:self.kinds.count(Out.EACH)]), iter(out[self.kinds.count(Out.EACH):])
        for k in self.kinds:
            result.append(next(e) if k is Out.EACH else next(s) if k is Out.SUM else sums)
        return result

    def outputs(self) -> list[tuple[int, Out, int]]:
        """``(body output, its kind, its row offset)`` for every body output, in body order."""
        return list(zip(range(len(self.kinds)), self.kinds, self.offsets()))

    def read_slots(self) -> np.ndarray:
        """The distinct slots the tables read, ascending (worked out once: the tables never change)."""
        if "_read" not in self.__dict__:
            object.__setattr__(self, "_read", distinct(self.tables, inverse=False)[0])
        return self.__dict__["_read"]

    def remap(self, new) -> "Map":
        """The same map with table entries ``new(tables)`` (slots renumbered, or node ids in a recorder)."""
        return Map(self.body, new(self.tables), self.kinds, self.dst, self.scatter_size)

    def digest_parts(self) -> list:
        """What identifies the map (for ``Tape.hash``)."""
        return [self.body.hash.encode(), self.tables.tobytes(), repr(self.kinds).encode(), self.dst.tobytes(),
                str(self.scatter_size).encode()]


def dot_code(k: int) -> np.ndarray:
    """The code rows of the canonical dot body of length ``k`` (``2 k`` inputs ``u`` then ``v``, no constants):
    ``t = u0 * v0; t = t + u1 * v1; ...``, the body of a product loop (``tapead.ir.contraction``)."""
    first = 2 * k  # body slots: 2 k inputs, no constants, then the rows
    code = np.full((2 * k - 1, 4), -1, np.int64)
    code[0] = (_MUL, 0, k, -1)
    for l in range(1, k):
        prev = first if l == 1 else first + 2 * l - 2
        code[2 * l - 1] = (_MUL, l, k + l, -1)
        code[2 * l] = (_ADD, prev, first + 2 * l - 1, -1)
    return code


def dot_length(body) -> int | None:
    """``k`` when ``body`` is the canonical dot body of length ``k`` (however it was made), else None."""
    n_in = body.n_inputs
    if n_in < 2 or n_in % 2 or len(body.consts) or body.n_params or len(body.guards) or body.maps:
        return None
    k = n_in // 2
    if len(body.code) != 2 * k - 1 or body.outputs.tolist() != [2 * k + len(body.code) - 1]:
        return None
    return k if np.array_equal(body.code, dot_code(k)) else None


class Step(NamedTuple):
    """One step of a tape: instruction ``start`` (``row`` the op table row, ``args`` its argument slots, ``map``
    None), or the run of rows ``start:end`` one map writes (``map`` the Map, ``row`` None)."""

    start: int
    end: int
    row: object
    args: tuple
    map: Map | None


def walk(tape) -> list[Step]:
    """The tape's steps in order: every evaluator, transform and emitter walks a tape through this, so what a
    step is (an instruction, or a map's run of placeholder rows) is said once. Memoised on the tape."""
    ir = getattr(tape, "tape", tape)  # a Function reads through to its Tape
    return ir.memo("steps", lambda: _steps(ir))


def _steps(tape) -> list[Step]:
    """Python reads only the instructions' rows: a map's placeholder rows (one per slot it writes, a product's
    65,536) become one step without being converted."""
    out = []
    at = 0
    for start, end, m in map_runs(tape) + [(len(tape.code), len(tape.code), None)]:
        for i, (op, *args) in enumerate(tape.code[at:start].tolist(), at):
            row = BY_CODE[op]
            out.append(Step(i, i + 1, row, tuple(args[:row.arity]), None))
        if m is not None:
            out.append(Step(start, end, None, (), m))
        at = end
    return out


def map_runs(tape) -> list[tuple[int, int, Map]]:
    """``(first row, end row, map)`` of every map, in tape order."""
    if not tape.maps:
        return []
    code = tape.code
    rows = np.flatnonzero(code[:, 0] == MAP_ROW)
    runs, i = [], 0
    while i < len(rows):
        m = int(code[rows[i], 1])
        size = tape.maps[m].rows
        runs.append((int(rows[i]), int(rows[i]) + size, tape.maps[m]))
        i += size
    return runs


def op_codes(tape) -> list[int]:
    """The op codes a tape uses, its maps' bodies included (what code generation must declare)."""
    used = set(tape.code[:, 0].tolist()) - {MAP_ROW}
    for m in tape.maps:
        used |= set(op_codes(m.body))
    return sorted(used)


def read_slots(tape) -> np.ndarray:
    """A boolean per slot: read by an instruction, a map's table or a guard (outputs not counted). Memoised."""
    def compute():
        read = np.zeros(tape.n_slots, bool)
        args = tape.code[tape.code[:, 0] >= 0, 1:].ravel()
        read[args[args >= 0]] = True
        for m in tape.maps:
            read[m.read_slots()] = True
        read[tape.guards[:, 0]] = True
        return read
    return tape.memo("read_slots", compute)


def distinct(indices: np.ndarray, inverse: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``np.unique(indices, return_inverse=True)`` for the non-negative slot indices of tables, without sorting:
    a table of 1.5 million entries over a few thousand slots costs one pass (a sort cost 30 ms per table). A
    short array of large slots (a few hundred among a million) is sorted instead: the pass is over the slots.
    The inverse (int32 where it fits: tables of tens of millions of entries) is left out with ``inverse=False``."""
    a = np.asarray(indices)
    if a.dtype.kind not in "iu":
        a = a.astype(np.int64)
    if a.size == 0:
        return np.zeros(0, np.int64), (a.astype(np.int64) if inverse else None)
    top = int(a.max()) + 1
    if a.size * 64 < top:
        if not inverse:
            return np.unique(a).astype(np.int64), None
        values, where = np.unique(a, return_inverse=True)
        return values.astype(np.int64), where.reshape(a.shape)
    present = np.zeros(top, bool)
    present[a.ravel()] = True
    values = np.flatnonzero(present)
    if not inverse:
        return values, None
    rank = np.cumsum(present, dtype=np.int32 if len(values) < 2 ** 31 else np.int64) - 1
    return values, rank[a]


def _instructions(tape) -> int:
    """The tape's own scalar instructions (not its maps' placeholder rows)."""
    return int((tape.code[:, 0] >= 0).sum())


def records(tape) -> int:
    """What code generation emits for a tape: its scalar instructions plus each map's body once."""
    return _instructions(tape) + sum(len(m.body) for m in tape.maps)


def work(tape) -> int:
    """What one evaluation of a tape executes: its scalar instructions plus each map's body once per iteration
    (the size of ``scalar(tape)``, computed without unrolling)."""
    return _instructions(tape) + sum(m.n * len(m.body) for m in tape.maps)


def scalar(tape, why: str = "asked for"):
    """The tape with every map unrolled into scalar instructions (the tape itself when it has no maps). ``why``
    says which step needs the scalar form and why; it is noted where someone listens (``noting_unrolls``: a
    Function's ``stats["unrolled"]``), each time it is asked for (a copy kept from an earlier call included), so
    a structured tape is never read as scalar code without saying so."""
    if not tape.maps:
        return tape
    notes = listening()
    if notes is not None:
        notes.append(dict(why=why, loops=len(tape.maps), rows=work(tape)))
    return tape.memo("scalar", lambda: unroll(tape))




def unroll(tape):
    """Scalar instructions computing exactly what the maps compute, in the same order of additions.

    Vectorised: each map's body rows are repeated n times with slots renumbered in numpy, so unrolling costs
    numpy time, not Python time, per iteration."""
    first = tape.first_result
    consts = [tape.consts]
    n_consts = len(tape.consts)
    # new slot numbering: inputs/params as before, then all constants (the tape's, then bodies'), then rows
    runs = map_runs(tape)
    body_const_base = []
    for _, _, m in runs:
        body_const_base.append(n_consts)
        consts.append(m.body.consts)
        n_consts += len(m.body.consts)
    consts.append(np.array([-0.0]))  # what an empty sum is
    neg0 = tape.first_const + n_consts
    n_consts += 1
    new_first = tape.first_const + n_consts
    remap = np.empty(tape.n_slots, np.int64)  # old slot -> new slot
    remap[:first] = np.arange(first)
    out_rows: list[np.ndarray] = []
    at = new_first  # next new slot
    prev = 0
    for (start, end, m), cbase in zip(runs, body_const_base):
        # the scalar rows before this map
        rows = tape.code[prev:start].astype(np.int64)
        if len(rows):
            remap[first + prev:first + start] = at + np.arange(start - prev)
            out_rows.append(_renumber(rows, remap))
            at += start - prev
        at = _unroll_map(m, remap, tape.first_const + cbase, neg0, first + start, at, out_rows)
        prev = end
    rows = tape.code[prev:].astype(np.int64)
    if len(rows):
        remap[first + prev:] = at + np.arange(len(rows))
        out_rows.append(_renumber(rows, remap))
    code = np.concatenate(out_rows) if out_rows else np.zeros((0, 4), np.int64)
    guards = tape.guards.astype(np.int64).copy()
    if len(guards):
        guards[:, 0] = remap[guards[:, 0]]
    return tape.replace(code=code, consts=np.concatenate(consts), outputs=remap[tape.outputs.astype(np.int64)],
                        guards=guards, maps=())


def _renumber(rows: np.ndarray, remap: np.ndarray) -> np.ndarray:
    rows = rows.copy()
    for j in (1, 2, 3):
        a = rows[:, j]
        rows[:, j] = np.where(a >= 0, remap[np.maximum(a, 0)], -1)
    return rows


def _unroll_map(m: Map, remap: np.ndarray, const_base: int, neg0: int, old_start: int, at: int,
                out: list) -> int:
    """Append the unrolled rows of map ``m`` (whose run starts at old slot ``old_start``) to ``out``; set ``remap``
    for its rows; return the next free new slot. ``neg0`` is the new slot of the constant -0.0 (an empty sum)."""
    body, n = m.body, m.n
    n_in, b_first, b_rows = body.n_inputs, body.first_result, len(body.code)
    # body slot -> new slot, per iteration: (n, body slots)
    bslot = np.empty((n, body.n_slots), np.int64)
    bslot[:, :n_in] = remap[m.tables.astype(np.int64)]
    bslot[:, n_in:b_first] = const_base + np.arange(b_first - n_in)
    bslot[:, b_first:] = at + np.arange(n)[:, None] * b_rows + np.arange(b_rows)
    if b_rows and n:
        rows = np.broadcast_to(body.code.astype(np.int64), (n, b_rows, 4)).copy()
        for j in (1, 2, 3):
            a = rows[:, :, j]
            rows[:, :, j] = np.where(a >= 0, np.take_along_axis(bslot, np.maximum(a, 0), axis=1), -1)
        out.append(rows.reshape(-1, 4))
    at += n * b_rows
    outs = body.outputs.astype(np.int64)
    offsets = m.offsets()
    for j, (kind, off) in enumerate(zip(m.kinds, offsets)):
        if kind is Out.EACH:
            remap[old_start + off:old_start + off + n] = bslot[:, outs[j]]
        elif kind is Out.SUM:
            remap[old_start + off], at = _add_chain(bslot[:, outs[j]], neg0, at, out)
    if m.scatter_size:
        cols = [j for j, k in enumerate(m.kinds) if k is Out.SCATTER]
        base = old_start + m.rows - m.scatter_size
        # contributions in (iteration, output) order; per target, a chain of additions in that order
        src = np.stack([bslot[:, outs[j]] for j in cols], axis=1).reshape(-1) if cols else np.zeros(0, np.int64)
        tgt = m.dst.astype(np.int64).reshape(-1)
        order = np.argsort(tgt, kind="stable")
        ends = np.cumsum(np.bincount(tgt, minlength=m.scatter_size))
        starts = ends - np.bincount(tgt, minlength=m.scatter_size)
        for t in range(m.scatter_size):
            remap[base + t], at = _add_chain(src[order[starts[t]:ends[t]]], neg0, at, out)
    return at


def _add_chain(slots: np.ndarray, neg0: int, at: int, out: list) -> tuple[int, int]:
    """Rows adding ``slots`` left to right from the first (-0.0 + a == a for every a, so this is the sum from
    -0.0); returns (slot of the total, next free slot). No terms: the constant -0.0; one term: the term."""
    if len(slots) == 0:
        return neg0, at
    if len(slots) == 1:
        return int(slots[0]), at
    rows = np.empty((len(slots) - 1, 4), np.int64)
    rows[:, 0] = _ADD
    rows[0, 1] = slots[0]
    rows[1:, 1] = at + np.arange(len(slots) - 2)
    rows[:, 2] = slots[1:]
    rows[:, 3] = -1
    out.append(rows)
    return at + len(slots) - 2, at + len(slots) - 1
