"""Reverse mode of matrix products: the adjoint of ``C = A B`` is ``G Bᵀ`` and ``Aᵀ G``, two products.

A product loop (``tapead.ir.contraction``) is a map, and ``maps_ad.reverse_map`` would reverse it as one: a loop
over the entries of ``C`` whose body sends ``g * B[l, j]`` to ``A[i, l]`` and ``g * A[i, l]`` to ``B[l, j]``,
scattering ``2 k`` cotangents per entry. Written as products instead, the adjoints are product loops, which the
code generator runs as loop nests along rows (``backend.products``), and the reverse of a matrix product costs
about what the product does.

The bits are those of the scatter: the scatter adds the contributions to ``A[i, l]`` in iteration order, i.e.
``j = 0, 1, ...``, each ``g[i, j] * B[l, j]``, starting from -0.0 (the identity), and ``(G Bᵀ)[i, l]`` adds
the same products in the same order. That holds only when each active slot receives the contributions of one
operand entry: the rule applies when the active slots of ``A`` and ``B`` are all distinct (``X @ X``, a
broadcast row, would add two entries' sums where the scatter interleaves them: those keep the scatter), every
entry of ``C`` has a cotangent and none came through a select (a masked seed needs ``maps_ad``'s masks).
"""
from __future__ import annotations

import numpy as np

from ..ir.contraction import dot_body, outer_layout, product_length
from ..ir.structure import Map, Out
from ..tracing.tracer import Scalar
from .maps_ad import _ids, _recorder, _table_ids, _table_values

MAX_TERMS = 2048  # terms of one adjoint entry (the other side of the product): beyond, the body would be huge


def _operands(m: Map, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The slots of ``A`` (n x k) and ``B`` (k x m) a product loop reads, or None when its tables are not the
    outer layout in every column."""
    t = m.tables
    layout = outer_layout(t[:, 0], t[:, k])
    if layout is None:
        return None
    n, width = layout
    a, b = t[::width, :k], t[:width, k:].T
    if not (np.array_equal(t[:, :k].reshape(n, width, k), np.broadcast_to(a[:, None, :], (n, width, k)))
            and np.array_equal(t[:, k:].reshape(n, width, k), np.broadcast_to(b.T[None], (n, width, k)))):
        return None
    return a, b


def _product(rec, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Emit the product loop of the node ids ``u`` (p x q) and ``v`` (q x r); the ids of its p x r entries."""
    p, q = u.shape
    r = v.shape[1]
    tables = np.empty((p, r, 2 * q), np.int32)  # iteration i * r + j: row i of u, column j of v
    tables[:, :, :q] = u[:, None, :]
    tables[:, :, q:] = v.T[None, :, :]
    tables = tables.reshape(p * r, 2 * q)
    first = rec.emit_map(Map(dot_body(q, rec.assume_finite), tables, (Out.EACH,), np.zeros((p * r, 0), np.int32)))
    return first + np.arange(p * r).reshape(p, r)


def reverse_product(m: Map, start: int, vals: list, adj: list, mask: list, act: bytearray, either) -> bool:
    """Add the cotangents flowing back through product loop ``m`` (rows from slot ``start``) as two products and
    return True; False (nothing done) when ``m`` is not a product loop this rule covers (module docstring)."""
    k = product_length(m)
    if k is None:
        return False
    seeds = [adj[s] for s in range(start, start + m.n)]
    if any(g is None for g in seeds) or any(mask[s] is not None for s in range(start, start + m.n)):
        return False
    found = _operands(m, k)
    if found is None:
        return False
    a_slots, b_slots = found
    n, width = a_slots.shape[0], b_slots.shape[1]
    a_act = np.frombuffer(bytes(act), np.uint8)[a_slots].astype(bool)
    b_act = np.frombuffer(bytes(act), np.uint8)[b_slots].astype(bool)
    active = np.concatenate([a_slots[a_act], b_slots[b_act]])
    if not len(active) or len(np.unique(active)) != len(active) or max(n, width) > MAX_TERMS:
        return False
    values, where = _table_values(m, vals)
    rec = _recorder(values + seeds)
    if rec is None:
        return False
    ids = _table_ids(rec, values, where)
    g = _ids(rec, seeds).reshape(n, width)
    updates = []
    if a_act.any():  # dA[i, l] = sum_j G[i, j] B[l, j]
        updates.append((a_slots, a_act, _product(rec, g, ids[:width, k:])))
    if b_act.any():  # dB[l, j] = sum_i A[i, l] G[i, j]
        updates.append((b_slots, b_act, _product(rec, ids[::width, :k].T, g)))
    for slots, live, entries in updates:
        for u, e in zip(slots[live].tolist(), entries[live].tolist()):
            contribution = Scalar(rec, e)
            if adj[u] is None:
                adj[u], mask[u] = contribution, None
            else:
                mask[u] = either(mask[u], None, rec)
                adj[u] = adj[u] + contribution
    return True
