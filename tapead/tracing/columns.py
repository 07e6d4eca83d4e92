"""The columns of loops' tables while loops are recorded: for each body input, the outer node it reads in every
iteration (``Columns``), and the node ids of a block of cells (``outer_ids``)."""
from __future__ import annotations

import operator

import numpy as np

from .recorder import _CONST, BULK, Recorder
from .tracer import Scalar, operand_id

_REC, _ID = operator.attrgetter("rec"), operator.attrgetter("id")


class Columns:
    """The inputs of a loop body being built (a map's, or a map's reverse): one body input per distinct table
    column of outer nodes, in order."""

    def __init__(self, outer: Recorder, body: Recorder, columns: list | None = None, index: dict | None = None):
        self.outer, self.body = outer, body
        self.columns: list[np.ndarray] = columns or []  # per body input: outer node id per iteration
        # a column's hash -> [(its position in columns, its body input node)]: hashes, not the columns' bytes (a
        # 4.5-million-iteration loop would keep 36 MB of key per column)
        self.index: dict[int, list] = index or {}

    def value(self, ids: np.ndarray):
        """The body value reading outer nodes ``ids`` (one per iteration): a body input, or a constant when every
        iteration reads the same constant."""
        first = int(ids[0])
        if self.outer.kinds[first] == _CONST and (ids == first).all():
            return self.outer.values[first]
        ids = ids.astype(np.int32, copy=False)  # (equal columns hash alike whatever their integer type)
        known = self.index.setdefault(hash(ids.tobytes()), [])
        nid = next((nid for pos, nid in known if np.array_equal(self.columns[pos], ids)), None)
        if nid is None:
            nid = self.body.input()
            known.append((len(self.columns), nid))
            self.columns.append(ids)
        return Scalar(self.body, nid)

    def table(self, n: int) -> np.ndarray:
        """The columns as a map's tables, ``(n, inputs)``."""
        table = np.empty((n, len(self.columns)), np.int32)
        for i, column in enumerate(self.columns):
            table[:, i] = column
        return table




def outer_ids(rec: Recorder, cells: np.ndarray) -> np.ndarray:
    """The outer node id of every element (constants enter the constant pool)."""
    if cells.dtype != object:  # a constant array (a data set): its constants in bulk
        if cells.size >= BULK:
            return rec.constants(cells)
        return np.array([rec.const(v) for v in cells.ravel().tolist()], np.int64).reshape(cells.shape)
    out = np.empty(cells.shape, np.int64)
    flat = out.reshape(-1)
    cells = cells.ravel()
    try:  # the common case, every cell a tracer of this recorder: two C-level passes, no Python per cell
        if set(map(_REC, cells)) == {rec}:
            flat[:] = np.fromiter(map(_ID, cells), np.int64, cells.size)
            return out
    except AttributeError:  # a float or a foreign value among the cells
        pass
    for i, c in enumerate(cells):
        flat[i] = c.id if type(c) is Scalar and c.rec is rec else operand_id(rec, c)
    return out
