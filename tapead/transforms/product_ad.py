"""Reverse and forward mode of matrix products: the adjoint of ``C = A B`` is ``G Bᵀ`` and ``Aᵀ G``, two
products; the tangent of ``C`` with one factor carrying tangents is ``dA B`` (or ``A dB``), one product.

A product loop (``tapead.ir.contraction``) is a map, and ``maps_ad.reverse_map`` would reverse it as one: a loop
over the entries of ``C`` whose body sends ``g * B[l, j]`` to ``A[i, l]`` and ``g * A[i, l]`` to ``B[l, j]``,
scattering ``2 k`` cotangents per entry. Written as products instead, the adjoints are product loops, stored by
their factors and run by the code generator as loop nests along rows (``backend.products``), so the reverse of a
matrix product costs about what the product does, in time and in memory.

The bits are those of the scatter: the scatter adds the contributions to ``A[i, l]`` in iteration order, i.e.
``j = 0, 1, ...``, each ``g[i, j] * B[l, j]``, starting from -0.0 (the identity), and ``(G Bᵀ)[i, l]`` adds
the same products in the same order. That holds only when each active slot receives the contributions of one
operand entry: the rule applies when the active slots of ``A`` and ``B`` are all distinct (``X @ X``, a
broadcast row, would add two entries' sums where the scatter interleaves them: those keep the scatter), every
entry of ``C`` has a cotangent and none came through a select (a masked seed needs ``maps_ad``'s masks).

Forward: the body's forward sweep with tangents on the ``a`` columns only is ``t_l = da_l * b_l`` added in the
order ``l = 0, 1, ...``: the body of the product ``dA B``, so that product has the sweep's bits (the same for
``A dB``). With both factors carrying tangents the sweep adds ``da b + a db`` per term, which two products would
add in another order: that case, a masked tangent, or a factor with tangents on some entries only (the sweep's
symbolic zeros) keep ``maps_ad.forward_map``, as does a recording with ``assume_finite`` (its sweep folds
``dA * 0`` for a zero that is one shared constant node, which a product would multiply).
"""
from __future__ import annotations

import numpy as np

from ..ir.contraction import Product, as_product
from ..ir.structure import Map
from ..tracing.recorder import pick
from ..tracing.tracer import Scalar
from .maps_ad import factor_ids
from .slotvalues import constant_block, present, value_ids

MAX_TERMS = 2048  # terms of one adjoint entry (the other side of the product): beyond, the body would be huge


def _product(rec, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Emit the product loop of the node ids ``u`` (p x q) and ``v`` (q x r); the ids of its p x r entries."""
    first = rec.emit_map(Product(u, v, rec.assume_finite))
    return first + np.arange(u.shape[0] * v.shape[1]).reshape(u.shape[0], v.shape[1])


def _transposed(rec, new, slots: np.ndarray, vals: list) -> np.ndarray:
    """Node ids of the transpose of a factor: a factor of constants (a data matrix) becomes a transposed block of
    constants, which the kernel reads by rows, instead of a copy into rows at every call."""
    block = constant_block(vals, slots)
    return rec.constants(block.T) if block is not None else new(slots).T


def reverse_product(m: Map, start: int, vals: list, adj: list, mask: list, act: bytearray, either) -> bool:
    """Add the cotangents flowing back through product loop ``m`` (rows from slot ``start``) as two products and
    return True; False (nothing done) when ``m`` is not a product loop this rule covers (module docstring)."""
    p = as_product(m)
    if p is None:
        return False
    seeds = [adj[s] for s in range(start, start + m.n)]
    if any(g is None for g in seeds) or any(mask[s] is not None for s in range(start, start + m.n)):
        return False
    a_slots, b_slots = p.a, p.b
    n, width = a_slots.shape[0], b_slots.shape[1]
    live = np.frombuffer(act, np.uint8)  # a view: only the factors' slots are read
    a_act, b_act = live[a_slots].astype(bool), live[b_slots].astype(bool)
    active = np.concatenate([a_slots[a_act], b_slots[b_act]])
    if not len(active) or len(np.unique(active)) != len(active) or max(n, width) > MAX_TERMS:
        return False
    rec, new = factor_ids(p, vals)
    if rec is None:
        return False
    g = value_ids(rec, seeds).reshape(n, width)
    updates = []
    if a_act.any():  # dA[i, l] = sum_j G[i, j] B[l, j]
        updates.append((a_slots, a_act, _product(rec, g, _transposed(rec, new, b_slots, vals))))
    if b_act.any():  # dB[l, j] = sum_i A[i, l] G[i, j]
        updates.append((b_slots, b_act, _product(rec, new(a_slots).T, g)))
    for slots, here, entries in updates:
        for u, e in zip(slots[here].tolist(), entries[here].tolist()):
            contribution = Scalar(rec, e)
            if adj[u] is None:
                adj[u], mask[u] = contribution, None
            else:
                mask[u] = either(mask[u], None, rec)
                adj[u] = adj[u] + contribution
    return True


def forward_product(m: Map, vals: list, tan: list, mask: list):
    """``(row tangents, {})`` of product loop ``m`` as the product ``dA B`` or ``A dB`` (module docstring), or None
    when ``m`` is not a product this rule covers."""
    p = as_product(m)
    if p is None:
        return None
    sides = []
    for f in (p.a, p.b):  # (a data factor's million slots: looked at in C-level passes)
        has = present(pick(tan, f.ravel()))
        if has.any() and (not has.all() or present(pick(mask, f.ravel())).any()):
            return None
        sides.append(bool(has.any()))
    if sides[0] == sides[1]:  # (both: another order of additions; neither: nothing to carry)
        return None if sides[0] else ([None] * m.rows, {})
    rec, new = factor_ids(p, vals)
    if rec.assume_finite:  # the sweep folds dA * 0 of a shared zero constant away there; a product multiplies
        return None
    moving = p.a if sides[0] else p.b
    d = value_ids(rec, pick(tan, moving.ravel())).reshape(moving.shape)
    entries = _product(rec, d, new(p.b)) if sides[0] else _product(rec, new(p.a), d)
    return [Scalar(rec, e) for e in entries.ravel().tolist()], {}
