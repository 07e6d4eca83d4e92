"""The values of a tape's slots while a transform replays it, and the node ids a loop's tables read from them.

A replay keeps one value per slot (a tracer, a number, or None for a zero cotangent) in a list. A loop reading a
data table (a closure constant of a million entries, a product's constant matrix) reads a million constant slots:
looked at value by value, that is a dozen Python passes over a million objects per transform. ``SlotValues`` is
that list knowing where the tape's constant pool lies, so the constants a loop reads become node ids of bulk
blocks of the recorder (``Recorder.constants``), each pool constant once per replay, by numpy; the other slots (the few a loop
reads from traced values) are looked at one by one as before.
"""
from __future__ import annotations

from itertools import repeat
from operator import is_, is_not

import numpy as np

from ..tracing.recorder import BULK, Recorder, pick
from ..tracing.tracer import Scalar


class SlotValues(list):
    """The value of every slot of a tape being replayed: its inputs, params and constant pool, then its results
    as they are appended, and the node ids its pool constants have in a recorder (``pool_ids``)."""

    __slots__ = ("first_const", "consts", "_pool")

    def __init__(self, xs: list, ps: list, consts: np.ndarray):
        super().__init__(xs)
        self.extend(ps)
        self.first_const = len(self)
        self.consts = consts
        self.extend(consts.tolist())
        self._pool = None

    def pool_ids(self, rec: Recorder, at: np.ndarray) -> np.ndarray:
        """Node ids in ``rec`` of pool constants ``at`` (sorted, distinct indices into the pool): those not yet
        made become one bulk block, so each pool constant has one node however many loops read it, and a
        pool read only in part (a transposed copy beside the matrix) is not made whole."""
        if self._pool is None or self._pool[0] is not rec:
            self._pool = (rec, np.full(len(self.consts), -1, np.int64))
        ids = self._pool[1]
        missing = at[ids[at] < 0]
        if len(missing):
            ids[missing] = rec.constants(self.consts[missing]).ravel()
        return ids[at]


def _in_pool(vals, slots: np.ndarray) -> np.ndarray | None:
    """Which of ``slots`` are constant-pool slots worth reading in bulk (at least ``BULK`` of them), or None."""
    if not isinstance(vals, SlotValues) or len(vals.consts) < BULK or len(slots) < BULK:
        return None
    inside = (slots >= vals.first_const) & (slots < vals.first_const + len(vals.consts))
    return inside if np.count_nonzero(inside) >= BULK else None


def recorder_of(values) -> Recorder | None:
    """The recorder of the first tracer among ``values``, None when there is none."""
    for v in values:
        if isinstance(v, Scalar):
            return v.rec
    return None


def traced(values: list) -> np.ndarray:
    """Which values are tracers (one C-level pass: a million-entry data block is looked at without a Python
    loop)."""
    return np.fromiter(map(isinstance, values, repeat(Scalar)), bool, len(values))


def present(values: list) -> np.ndarray:
    """Which values are not None (tangents, masks), in one C-level pass."""
    return np.fromiter(map(is_not, values, repeat(None)), bool, len(values))


def value_ids(rec: Recorder, values: list) -> np.ndarray:
    """Node ids of tracer values and constants (None is a zero); many numbers (a data table a loop reads)
    become constants in bulk."""
    on = traced(values)
    ids = np.full(len(values), -1, np.int64)
    at = np.flatnonzero(on)
    if len(at):
        ids[at] = [values[k].id for k in at.tolist()]
    rest = np.flatnonzero(~on)
    if len(rest):
        picked = pick(values, rest)
        zeros = np.fromiter(map(is_, picked, repeat(None)), bool, len(picked))  # None is a zero
        if zeros.any():
            picked = [0.0 if z else v for z, v in zip(zeros.tolist(), picked)]
        numbers = np.array(picked, np.float64)
        ids[rest] = rec.constants(numbers) if len(rest) >= BULK else [rec.const(v) for v in numbers.tolist()]
    return ids


def slot_ids(vals: list, slots: np.ndarray, extra: list = ()) -> tuple[Recorder | None, np.ndarray | None]:
    """``(recorder, node id of each slot's value in it)`` for the (distinct) ``slots``: the recorder is that of
    the first tracer among the slots' values (then ``extra``'s); ``(None, None)`` when nothing is traced."""
    pool = _in_pool(vals, slots)
    if pool is None:
        values = pick(vals, slots)
        rec = recorder_of(values) or recorder_of(extra)
        return (rec, value_ids(rec, values)) if rec is not None else (None, None)
    others = slots[~pool]
    values = pick(vals, others)
    rec = recorder_of(values) or recorder_of(extra)
    if rec is None:
        return None, None
    ids = np.empty(len(slots), np.int64)
    ids[~pool] = value_ids(rec, values)
    ids[pool] = vals.pool_ids(rec, slots[pool] - vals.first_const)
    return rec, ids


def slot_numbers(vals: list, slots: np.ndarray) -> np.ndarray:
    """The values of ``slots`` when none is traced, as an array (None is a zero)."""
    pool = _in_pool(vals, slots)
    out = np.empty(len(slots), np.float64)
    rest = np.ones(len(slots), bool) if pool is None else ~pool
    if pool is not None:
        out[pool] = vals.consts[slots[pool] - vals.first_const]
    out[rest] = [0.0 if v is None else float(v) for v in pick(vals, slots[rest])]
    return out


def constant_block(vals: list, slots: np.ndarray) -> np.ndarray | None:
    """The values of ``slots`` (any shape) when all are numbers and there are at least ``BULK`` of them: a data
    matrix a transform copies as a block; None otherwise."""
    flat = slots.ravel()
    if len(flat) < BULK:
        return None
    pool = _in_pool(vals, flat)
    if pool is not None and pool.all():
        return vals.consts[flat - vals.first_const].reshape(slots.shape)
    values = pick(vals, flat)
    if traced(values).any() or not present(values).all():
        return None
    return np.array(values, np.float64).reshape(slots.shape)
