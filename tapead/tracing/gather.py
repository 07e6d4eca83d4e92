"""Rows picked by an index array, held as node ids: ``p[i]`` with ``i, j = np.triu_indices(n, 1)``.

Gathering a traced array with numpy copies one reference per element into a new object array, and a loop that
reads the result then looks up every element's node id again: for 3,000 Lennard-Jones atoms that is two arrays of
13.5 million tracers, most of recording's time and memory. While loops are recorded (``record(structured=...)``)
a traced array whose cells are all tracers of one recording is gathered as its node ids instead
(``GatheredArray``): one numpy gather of integers. A loop reads those ids as its table columns directly
(``maparray.operand_block``); anything else reads ``cells``, which are then made once, tracers of the same nodes,
so every other numpy operation behaves exactly as on the object array.
"""
from __future__ import annotations

import operator

import numpy as np

from . import tracer
from .tracer import Scalar, TracedArray, recorder_of

_REC, _ID = operator.attrgetter("rec"), operator.attrgetter("id")


class GatheredArray(TracedArray):
    """A traced array of node ids (see the module doc); ``cells`` are made on first use, by numpy's gather of the
    source's tracers as they were when gathered (``source``: a shallow copy, as small as the source)."""

    __slots__ = ("rec", "ids", "source", "index", "_cells")

    def __init__(self, rec, ids: np.ndarray, source: np.ndarray, index: np.ndarray):
        self.rec, self.ids, self.source, self.index, self._cells = rec, ids, source, index, None

    @property
    def cells(self) -> np.ndarray:
        if self._cells is None:
            self._cells = self.source[self.index]
            self.source = self.index = None
        return self._cells

    def node_ids(self) -> np.ndarray | None:
        """The ids, while the cells are not made (made cells may be assigned to: they are the truth then)."""
        return self.ids if self._cells is None else None

    shape = property(lambda self: self.ids.shape)
    ndim = property(lambda self: self.ids.ndim)
    size = property(lambda self: self.ids.size)

    def __len__(self):
        return len(self.ids)

    def __repr__(self):
        return f"<traced array shape={self.shape}>"


def node_ids_of(a) -> np.ndarray | None:
    """Every element's node id when ``a`` holds only tracers of one recording (else None), without a Python step
    per element."""
    if type(a) is GatheredArray:
        return a.node_ids()
    cells = a.cells.reshape(-1)
    if set(map(type, cells)) != {Scalar} or len(set(map(_REC, cells))) != 1:  # (a float, two recordings)
        return None
    return np.fromiter(map(_ID, cells), np.int64, cells.size).reshape(a.shape)


def recorder_of_array(a):
    """The recording a traced array's tracers belong to (None: it holds none)."""
    return a.rec if type(a) is GatheredArray else recorder_of(a.cells)


def gather(a: TracedArray, idx: np.ndarray):
    """``a[idx]`` as node ids when loops are being recorded and ``a`` holds only tracers; else None (numpy's
    indexing of the cells answers)."""
    if type(a) not in (TracedArray, GatheredArray) or idx.dtype.kind not in "iu" or 4 * idx.size < a.size:
        return None  # (a few rows of a big array: reading every id would cost more than the gather saves)
    rec = recorder_of_array(a)
    if rec is None or rec.map_min is None:
        return None
    ids = node_ids_of(a)
    if ids is None:
        return None
    if type(a) is GatheredArray:  # (its cells not made: ``node_ids``) rows of rows: one index into its source
        return GatheredArray(rec, ids[idx], a.source, a.index[idx])
    # int32, as loops' tables are: half the memory (fresh memory costs page faults: ~3 ms per MB)
    return GatheredArray(rec, ids.astype(np.int32)[idx], a.cells.copy(), idx.copy())


tracer.install(gather=gather)
