"""The recorder: appends instructions while a function runs, folding constants, applying IEEE-safe identities,
sharing repeated subexpressions (hash-consing = CSE), and finishing into a dead-code-free Tape.

It deals in integer node ids; the tracer types of ``tracer.py`` wrap those ids for user code.
"""
from __future__ import annotations

import struct
from itertools import repeat
from operator import itemgetter

import numpy as np

from ..errors import TracingError
from ..table.ops import BY_CODE, COMPARISONS, OPS, Op
from ..ir.structure import placeholder_rows
from ..ir.tape import Tape

_INPUT, _PARAM, _CONST, _MAPOUT = -1, -2, -3, -4  # node kinds that are not ops (_MAPOUT: a row of a map)
_COMPARISON_CODES = frozenset(OPS[n].code for n in COMPARISONS)
# op codes are fixed once declared (declaring a name again keeps its code), so the hot path compares codes
_COMMUTATIVE_CODES = frozenset(row.code for row in OPS.values() if row.commutative)  # a fact of the op table
_NEG_ROW = OPS["neg"]  # what the negation identities record
# the ops with identities in the op table (fixed once declared, as codes are)
_IDENTITY_CODES = frozenset(row.code for row in OPS.values() if row.chooses or row.involution or any(
    v is not None for v in (row.right_identity, row.left_identity, row.right_negation, row.left_negation,
                            row.absorbing)))
_pack = struct.Struct("<d").pack
# ops whose Python float arithmetic is the same IEEE operation as numpy's and never raises (a fact of the op
# table): the concrete values of a recording fold without a numpy call
_PYTHON_FOLD = {row.code: row.python for row in OPS.values() if row.python is not None}


def _set(values: list, rows, new) -> None:
    """``values[r] = new`` for every node ``r`` of a map's rows (a range: one slice assignment; ``new`` a value
    or a sequence as long as ``rows``)."""
    if isinstance(rows, range) and rows.step == 1:
        values[rows.start:rows.stop] = new if not isinstance(new, int) else [new] * len(rows)
        return
    if isinstance(values, np.ndarray):
        values[np.asarray(rows, np.int64)] = new
        return
    for r, v in zip(rows, new if not isinstance(new, int) else [new] * len(rows)):
        values[r] = v

def pick(values: list, at: np.ndarray) -> list:
    """``[values[i] for i in at]``, by ``operator.itemgetter`` (a million constants' values without a Python loop)."""
    if len(at) < 2:
        return [values[i] for i in at.tolist()]
    return list(itemgetter(*at.tolist())(values))


BULK = 64  # numbers from which constants are made in bulk (``Recorder.constants``: a data table), not one by one
FEW = 16  # distinct values up to which a block's constants are shared nodes (``const``), not one per entry

class Recorder:
    """Collects the instructions of one tape. Nodes are ``(kind, args)``: kind an op code, or input/param/const."""

    def __init__(self, on_branch: str | None = None, assume_finite: bool = False):
        self.kinds: list[int] = []
        self.args: list[tuple] = []
        self.values: list[float | None] = []  # concrete values at the recording point, when known
        self.inputs: list[int] = []
        self.params: list[int] = []
        self.guards: list[tuple[int, int]] = []
        self.guard_sites: list[str] = []  # the user's source line of each guard
        self.on_branch = on_branch  # None: branching on a traced value raises; else guards are recorded
        self.assume_finite = assume_finite  # also fold 0 * x = 0 (wrong only if x is inf or NaN)
        self._memo: dict[tuple, int] = {}  # (op code, *argument ids) -> node id: hash-consing
        self._const_ids: dict[bytes, int] = {}  # a constant's bit pattern (-0.0 and NaNs stay apart) -> node id
        self._const_of: dict[int, float] = {}  # node id -> value, for the constant nodes (what identities read)
        self._blocks: dict[bytes, np.ndarray] = {}  # bulk constants: their bits -> node ids (``constants``)
        self._spans: list[tuple[int, np.ndarray]] = []  # (first node, flat values) of each bulk block
        self._span_index = None  # the first node of each of ``_spans`` (an array), made when first asked for
        self.maps: list = []  # (row nodes in row order, Map with *node ids* in its tables) per map; None once fused
        # (a map row's node has args ``(map index,)``; its offset is its place in the map's row nodes)
        self.map_min: int | None = None  # structured recording: results this long become loops (long_enough)
        self.open_maps: dict = {}  # leading-axis length -> the open maparray.Builder
        self.aliases: dict[int, int] = {}  # node -> a later node computing the same value (a fused map's row)

    def copy(self) -> "Recorder":
        """An independent recorder with the same nodes (a map body continued after it was emitted)."""
        other = Recorder(self.on_branch, self.assume_finite)
        for name in ("kinds", "args", "values", "inputs", "params", "guards", "guard_sites"):
            setattr(other, name, list(getattr(self, name)))
        for name in ("_memo", "_const_ids", "_const_of", "_blocks"):
            setattr(other, name, dict(getattr(self, name)))
        other._spans = list(self._spans)
        return other

    def _node(self, kind: int, args: tuple, value) -> int:
        self.kinds.append(kind)
        self.args.append(args)
        self.values.append(value)
        return len(self.kinds) - 1

    def input(self, value: float | None = None) -> int:
        nid = self._node(_INPUT, (), value)
        self.inputs.append(nid)
        return nid

    def param(self, value: float | None = None) -> int:
        nid = self._node(_PARAM, (), value)
        self.params.append(nid)
        return nid

    def inputs_of(self, values: list) -> range:
        """One input node per value, in bulk (what ``input`` does for each, without a call per value)."""
        return self._leaves(_INPUT, values, self.inputs)

    def params_of(self, values: list) -> range:
        """One parameter node per value, in bulk."""
        return self._leaves(_PARAM, values, self.params)

    def _leaves(self, kind: int, values: list, into: list) -> range:
        first = len(self.kinds)
        ids = range(first, first + len(values))
        self.kinds.extend(repeat(kind, len(values)))
        self.args.extend(repeat((), len(values)))
        self.values.extend(values)
        into.extend(ids)
        return ids

    def const(self, value: float) -> int:
        bits = _pack(value)
        nid = self._const_ids.get(bits)
        if nid is None:
            value = float(value)
            nid = self._const_ids[bits] = len(self.kinds)
            self.kinds.append(_CONST)
            self.args.append((value,))
            self.values.append(value)
            self._const_of[nid] = value
        return nid

    def constants(self, values) -> np.ndarray:
        """Node ids of many constants at once (the data a loop's table reads: a matrix of a million entries),
        one node per entry in the array's order, appended in bulk: the tape keeps its constants in recording
        order, so the kernel reads the block in place with the array's strides (a product loop's rows, not a
        gather). The same block again (a loop, then its reverse) is the same nodes. They are not entered in the
        identity tables, which only scalar instructions consult; a block of at most ``FEW`` distinct values
        (zeros, labels) is made of ``const`` nodes instead, as one by one."""
        block = np.ascontiguousarray(values, np.float64)
        key = block.tobytes() + str(block.shape).encode()
        known = self._blocks.get(key)
        if known is not None:
            return known
        bits = block.view(np.int64)
        few = len(np.unique(bits.ravel()[:4 * FEW])) <= FEW  # (a data set shows it is not in its first entries)
        patterns, inverse = np.unique(bits, return_inverse=True) if few else (None, None)
        if few and len(patterns) <= FEW:  # zeros, ones, labels: shared constants the identities know, as ``const`` makes
            ids = np.array([self.const(v) for v in patterns.view(np.float64).tolist()], np.int64)
            self._blocks[key] = ids[inverse.reshape(block.shape)]
            return self._blocks[key]
        first, flat = len(self.kinds), block.ravel()
        self.kinds.extend(repeat(_CONST, flat.size))
        self.args.extend(repeat((), flat.size))  # (a constant's value is ``values[id]``)
        self.values.extend(flat.tolist())
        self._spans.append((first, flat))
        self._span_index = None
        ids = self._blocks[key] = first + np.arange(flat.size).reshape(block.shape)
        return ids

    def values_at(self, ids: np.ndarray) -> np.ndarray | None:
        """The values of nodes ``ids`` at the recording point as an array (None when one is unknown): the
        constants of bulk blocks are read from their arrays by numpy, the rest node by node."""
        ids = np.asarray(ids, np.int64).ravel()
        out = np.empty(len(ids), np.float64)
        rest = np.ones(len(ids), bool)
        if self._spans and len(ids):
            if len(self._spans) <= 8:
                lo, hi = int(ids.min()), int(ids.max())
                spans = [(f, v) for f, v in self._spans if f <= hi and lo < f + len(v)]
                if len(spans) == 1 and spans[0][0] <= lo and hi < spans[0][0] + len(spans[0][1]):
                    return spans[0][1][ids - spans[0][0]]  # all in one block (a data matrix): one gather
            else:  # many blocks: the ones the ids fall in, by bisection
                if self._span_index is None:
                    self._span_index = np.array([f for f, _ in self._spans], np.int64)
                k = np.maximum(np.searchsorted(self._span_index, ids, "right") - 1, 0)
                spans = [self._spans[i] for i in np.unique(k).tolist()]
            for first, flat in spans:
                at = np.flatnonzero((ids >= first) & (ids < first + len(flat)))
                out[at] = flat[ids[at] - first]
                rest[at] = False
        at = np.flatnonzero(rest)
        if len(at):
            picked = pick(self.values, ids[at])
            if None in picked:
                return None
            out[at] = picked
        return out

    def const_value(self, nid: int) -> float | None:
        return self._const_of.get(nid)

    def emit(self, op: Op, args: tuple[int, ...]) -> int:
        """Append ``op(*args)`` (args are node ids) unless an identity or an identical instruction answers it."""
        code = op.code
        if code in _IDENTITY_CODES:
            simpler = self._identity(code, args)
            if simpler is not None:
                return simpler
        # the memo key: (code, *args), arguments of a commutative op in increasing order
        values = self.values
        if len(args) == 2:
            a0, a1 = args
            key = (code, a1, a0) if a0 > a1 and code in _COMMUTATIVE_CODES else (code, a0, a1)
            known = values[a0] is not None and values[a1] is not None
        else:
            key = (code, *args)
            known = all(values[a] is not None for a in args)
        memo = self._memo
        nid = memo.get(key)
        if nid is None:
            value = None
            if known:  # the concrete value at the recording point
                vals = [values[a] for a in args]
                fold = _PYTHON_FOLD.get(code)
                if fold is not None and all(type(v) is float for v in vals):
                    value = fold(*vals)
                else:
                    with np.errstate(all="ignore"):
                        value = float(op.numpy(*map(np.float64, vals)))
            kinds = self.kinds
            nid = memo[key] = len(kinds)
            kinds.append(code)
            self.args.append(args)
            values.append(value)
        return nid

    def _identity(self, code: int, args: tuple[int, ...]) -> int | None:
        """The identities the op table declares for this op (exact in IEEE arithmetic, up to the sign of a zero
        result: x + 0 turns -0 into +0), applied to constant arguments: a simpler node, or None."""
        row = BY_CODE[code]
        cv = self._const_of.get  # the constant value of a node, None when not a constant
        if row.chooses:
            c0 = cv(args[0])
            if c0 is not None:
                return args[1] if c0 != 0.0 else args[2]
            return args[1] if args[1] == args[2] else None
        if row.involution:
            return self.args[args[0]][0] if self.kinds[args[0]] == code else None
        c0 = cv(args[0])
        c1 = cv(args[1]) if len(args) > 1 else None
        if c0 is None and c1 is None:
            return None
        if c1 is not None and c1 == row.right_identity:
            return args[0]
        if c0 is not None and c0 == row.left_identity:
            return args[1]
        if row.absorbing is not None and self.assume_finite and row.absorbing in (c0, c1):
            return self.const(row.absorbing)
        if c1 is not None and c1 == row.right_negation:
            return self.emit(_NEG_ROW, (args[0],))
        if c0 is not None and c0 == row.left_negation:
            return self.emit(_NEG_ROW, (args[1],))
        return None

    def emit_map(self, m, values=None) -> int:
        """Append map ``m`` (a ``structure.Map`` whose tables hold node ids of this recorder); its rows become
        consecutive nodes; returns the first. ``values`` (one per row) are the concrete values when known."""
        first = len(self.kinds)
        index = len(self.maps)
        rows = m.rows
        self.kinds.extend([_MAPOUT] * rows)
        self.args.extend(repeat((index,), rows))  # one shared tuple: a product's 2M rows cost no tuple apiece
        self.values.extend([None] * rows if values is None else values)
        self.maps.append((range(first, first + rows), m))
        return first

    def refuse_maps(self, leader: int, absorbed: list, m, rows: list) -> None:
        """Map ``leader`` becomes ``m`` (whose tables read only nodes older than the leader's rows), computing the
        rows of the ``absorbed`` maps too: ``rows`` lists the row nodes of ``m`` in row order (old nodes, kept, so
        everything that reads them is unchanged)."""
        key = (leader,)
        for nid in rows:
            self.args[nid] = key
        self.maps[leader] = (rows, m)
        for index in absorbed:
            self.maps[index] = None

    def _map_rows(self, nodes: int) -> tuple[np.ndarray, np.ndarray]:
        """``owner[node]``: the index of the map whose row the node is (-1 elsewhere), and each map's first row
        node in recording order (where ``finish`` places the map), by numpy over whole row runs."""
        owner, leads = np.full(nodes if self.maps else 0, -1, np.int64), []
        for index, entry in enumerate(self.maps):
            if entry is not None and len(entry[0]):
                run = isinstance(entry[0], range) and entry[0].step == 1
                rows = entry[0] if run else np.asarray(entry[0], np.int64)
                owner[slice(rows.start, rows.stop) if run else rows] = index
                leads.append(rows.start if run else int(rows.min()))
        return owner, np.array(leads, np.int64)

    def guard(self, nid: int, where: str) -> bool:
        """Branching on node ``nid``: record a guard (when allowed) and return the outcome at this point."""
        value = self.values[nid]
        if self.on_branch is None or value is None:
            raise TracingError(
                f"a traced value was used as a Python truth value ({where}). This tape records one path through "
                "the function, so `if`, `while`, `and`/`or`, builtin min()/max() and sorting cannot depend on "
                "traced values here. Write the choice branch-free with tapead.where(cond, a, b), np.where, "
                "np.maximum/np.minimum or np.clip instead, or record with on_branch='retape' (the default of "
                "tapead.record) so the tape guards the path it took.")
        if self.kinds[nid] not in _COMPARISON_CODES:  # `if x:` means `if x != 0:`
            nid = self.emit(OPS["ne"], (nid, self.const(0.0)))
            value = self.values[nid]
        outcome = int(value != 0.0)
        self.guards.append((nid, outcome))
        self.guard_sites.append(where)
        return bool(outcome)

    def finish(self, outputs: list[int], output_shape, input_shapes, param_shape,
               assume_finite: bool | None = None) -> Tape:
        """Keep only what outputs and guards need, renumber into the tape's slot layout and build the Tape.

        ``finished_sites`` then holds each of the tape's guards' source line (for branch errors)."""
        kinds, nargs = self.kinds, self.args
        outputs = [self.aliases.get(o, o) for o in outputs]  # read fused rows: the loop they came from may drop
        kind, (owner, leads), live = np.array(kinds, np.int64), self._map_rows(len(kinds)), bytearray(len(kinds))
        marks = np.frombuffer(live, np.uint8)  # a view: what a map reads is marked by numpy
        stack = list(outputs) + [g for g, _ in self.guards]
        while stack:
            n = stack.pop()
            if not live[n]:
                live[n] = 1
                if kinds[n] >= 0:
                    stack.extend(nargs[n])
                elif kinds[n] == _MAPOUT:  # a map is kept whole: all its rows and everything its tables read
                    rows, m = self.maps[nargs[n][0]]
                    _set(live, rows, 1)
                    read = m.read_slots()
                    read = read[marks[read] == 0]
                    leaf = kind[read] < 0
                    leaf &= kind[read] != _MAPOUT  # constants, inputs, params: nothing to follow (a data block)
                    marks[read[leaf]] = 1
                    inner = read[~leaf]
                    row = kind[inner] == _MAPOUT  # another map's rows: one of them brings the whole map
                    if row.any():
                        stack.extend(inner[row][np.unique(owner[inner[row]], return_index=True)[1]].tolist())
                    stack.extend(inner[~row].tolist())
        # slots: inputs and params, then the live constants, then the live instructions, each in recording order;
        # constants and map rows (a data block, a product's entries) are numbered by numpy, not node by node
        alive = marks.astype(bool)
        slot = np.full(len(kinds), -1, np.int64)
        slot[self.inputs + self.params] = np.arange(len(self.inputs) + len(self.params))
        s = len(self.inputs) + len(self.params)
        consts = np.flatnonzero(alive & (kind == _CONST))
        slot[consts] = s + np.arange(len(consts))
        s += len(consts)
        # the instructions, and each live map once, where its first row stands in recording order
        walk = alive & (kind != _CONST) & (kind != _INPUT) & (kind != _PARAM) & (kind != _MAPOUT)
        walk[leads[alive[leads]]] = True
        rest = np.flatnonzero(walk).tolist()
        # renumbered one by one: through a list (fast item access) unless the instructions are few among many
        # nodes (a data table's constants), where converting every slot to a list and back would cost more
        few = len(rest) * 8 < len(kinds)
        if not few:
            slot = slot.tolist()
        at = slot.item if few else slot.__getitem__
        flat: list[int] = []  # the code table, row after row (scalar instructions; a map's rows join as arrays)
        pieces: list[np.ndarray] = []
        maps: list = []
        for nid in rest:
            k = kinds[nid]
            if k == _MAPOUT:  # all the map's rows here, in row order
                rows, m = self.maps[nargs[nid][0]]
                maps.append(m)
                _set(slot, rows, np.arange(s, s + len(rows)) if few else range(s, s + len(rows)))
                s += len(rows)
                pieces += [np.array(flat, np.int32).reshape(-1, 4), placeholder_rows(len(maps) - 1, len(rows))]
                flat = []
            else:
                slot[nid] = s
                s += 1
                a = nargs[nid]
                if len(a) == 2:
                    flat += (k, at(a[0]), at(a[1]), -1)
                elif len(a) == 1:
                    flat += (k, at(a[0]), -1, -1)
                else:
                    flat += (k, *[at(x) for x in a], *(-1,) * (3 - len(a)))
        code = np.concatenate(pieces + [np.array(flat, np.int32).reshape(-1, 4)]).astype(np.int32, copy=False)
        # guards on the same comparison and outcome are one guard
        seen, guards, sites = set(), [], []
        for (g, e), site in zip(self.guards, self.guard_sites or [""] * len(self.guards)):
            if (at(g), e) not in seen:
                seen.add((at(g), e))
                guards.append((at(g), e))
                sites.append(site)
        if maps:
            slots = slot if few else np.array(slot, np.int64)
            maps = [m.remap(lambda t: slots[t.astype(np.int64)]) for m in maps]
        tape = Tape(code=code, maps=tuple(maps),
                    consts=self.values_at(consts),
                    input_shapes=input_shapes, param_shape=param_shape,
                    outputs=np.array([at(o) for o in outputs], np.int32), output_shape=output_shape,
                    guards=np.array(guards, np.int32).reshape(-1, 2),
                    assume_finite=self.assume_finite if assume_finite is None else assume_finite)
        self.finished_sites = sites if any(sites) else None
        return tape
