"""Fusing the loops of a recording: maps over the same iterations become one map, after recording ended.

Structured recording (``maparray.py``) emits a map whenever the outer program needs numbers from a loop; several
``np.sum`` terms over the same pairs are then several maps over the same iterations. Joining them runs one loop
with one body (shared columns are one input, common subexpressions are computed once).
"""
from __future__ import annotations

import numpy as np

from ..table.ops import BY_CODE
from .recorder import Recorder
from ..ir.contraction import Product
from ..ir.structure import Map, Out
from .tracer import Scalar


def fuse(rec: Recorder) -> None:
    """Join loops over the same iterations into one loop: a later map (each and sum outputs) whose tables read
    only nodes older than an earlier map's rows joins that map, its body replayed beside the other's in one body
    (shared columns are one input; common subexpressions are shared). Several ``np.sum`` terms over the same pairs
    are then one loop. Row nodes are kept, so everything that reads them is unchanged."""
    groups: list[list[int]] = []
    for index, entry in enumerate(rec.maps):
        if entry is None or entry[1].scatter_size or isinstance(entry[1], Product):  # a product stays one
            continue
        rows, m = entry
        leader = next((g for g in groups if rec.maps[g[0]][1].n == m.n and
                       (not m.tables.size or int(m.tables.max()) < rec.maps[g[0]][0][0])), None)
        if leader is None:
            groups.append([index])
        else:
            leader.append(index)
    for group in groups:
        if len(group) > 1:
            _fuse_group(rec, group)


def _fuse_group(rec: Recorder, group: list[int]) -> None:
    n = rec.maps[group[0]][1].n
    body = Recorder(on_branch=None, assume_finite=rec.assume_finite)
    columns: list[np.ndarray] = []
    index: dict[bytes, int] = {}
    outs, kinds, old_rows = [], [], []  # per output of the joined map: body node, kind, its old row nodes
    for g in group:
        rows, m = rec.maps[g]
        xs = []
        for col in m.tables.T:
            key = col.tobytes()
            if key not in index:
                index[key] = body.input()
                columns.append(col)
            xs.append(Scalar(body, index[key]))
        vals = xs + m.body.consts.tolist()
        for code, *args in m.body.code.tolist():
            row = BY_CODE[code]
            vals.append(row(*[vals[a] for a in args[:row.arity]]))
        for j, kind, off in m.outputs():
            v = vals[int(m.body.outputs[j])]
            outs.append(v.id if isinstance(v, Scalar) else body.const(float(v)))
            kinds.append(kind)
            old_rows.append([rows[off + k] for k in range(n if kind is Out.EACH else 1)])
    joined = Map(body.finish(outs, (len(outs),), ((len(columns),),), None), np.stack(columns, axis=1), tuple(kinds),
                 np.zeros((n, 0), np.int32), 0)
    rows = [0] * joined.rows
    for off, old in zip(joined.offsets(), old_rows):
        rows[off:off + len(old)] = old
    rec.refuse_maps(group[0], group[1:], joined, rows)
