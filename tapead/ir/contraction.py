"""Product loops: maps whose body is one dot product, the form matrix products take in the IR.

``A @ B`` records as a map over the output's entries whose body is ``sum_l u[l] * v[l]`` added left to right (row
``i`` of ``A`` in ``u``, column ``j`` of ``B`` in ``v``). That is an ordinary map: every evaluator and transform
reads it as one. This module names the form once, so that

- the code generator can recognise it and emit a loop nest that runs along contiguous rows (vectorised, no
  gathers) instead of one gather per operand and iteration, and
- reverse mode can write the adjoint of a product as two products (``G Bᵀ`` and ``Aᵀ G``) rather than a loop
  scattering every cotangent, while adding in the same order, so the bits do not change.

The canonical body of length ``k`` (``2 k`` inputs, ``u`` then ``v``; no constants) is
``t = u0 * v0; t = t + u1 * v1; ...``: row ``2 l - 1`` multiplies, row ``2 l`` adds, for ``l >= 1``.
"""
from __future__ import annotations

import numpy as np

from ..table.ops import OPS
from .structure import Map, Out
from .tape import Tape

_MUL, _ADD = OPS["mul"].code, OPS["add"].code


def dot_code(k: int) -> np.ndarray:
    """The code rows of the canonical dot body of length ``k``."""
    first = 2 * k  # body slots: 2 k inputs, no constants, then the rows
    code = np.full((2 * k - 1, 4), -1, np.int64)
    code[0] = (_MUL, 0, k, -1)
    for l in range(1, k):
        prev = first if l == 1 else first + 2 * l - 2
        code[2 * l - 1] = (_MUL, l, k + l, -1)
        code[2 * l] = (_ADD, prev, first + 2 * l - 1, -1)
    return code


def dot_body(k: int, assume_finite: bool = False) -> Tape:
    """The body tape ``sum_l u[l] * v[l]`` of ``2 k`` inputs, added left to right."""
    if k < 1:
        raise ValueError("a dot product needs at least one term")
    code = dot_code(k)
    return Tape(code=code, consts=np.zeros(0), input_shapes=((2 * k,),), param_shape=None,
                outputs=np.array([2 * k + len(code) - 1]), output_shape=(1,), assume_finite=assume_finite)


def dot_length(body) -> int | None:
    """``k`` when ``body`` is the canonical dot body of length ``k`` (however it was made), else None."""
    n_in = body.n_inputs
    if n_in < 2 or n_in % 2 or len(body.consts) or body.n_params or len(body.guards) or body.maps:
        return None
    k = n_in // 2
    if len(body.code) != 2 * k - 1 or body.outputs.tolist() != [2 * k + len(body.code) - 1]:
        return None
    return k if np.array_equal(body.code, dot_code(k)) else None


def product_length(m: Map) -> int | None:
    """``k`` when map ``m`` is a product loop: the canonical dot body, one ``each`` output, no scatter."""
    if m.kinds != (Out.EACH,) or m.scatter_size:
        return None
    return m.body.memo("dot_length", lambda: dot_length(m.body))


def outer_layout(u: np.ndarray, v: np.ndarray) -> tuple[int, int] | None:
    """``(n, m)`` when iteration ``i * m + j`` of a product loop reads row ``i`` through ``u`` (the same offsets
    for every ``j``) and column ``j`` through ``v`` (the same offsets for every ``i``): ``u`` and ``v`` are the
    loop's first ``u`` and ``v`` columns. ``m`` is taken from the first run of ``u``; any split that holds is a
    correct one."""
    total = len(u)
    if total == 0 or len(v) != total:
        return None
    change = np.flatnonzero(u[1:] != u[:-1])
    m = int(change[0]) + 1 if len(change) else total
    if total % m:
        return None
    n = total // m
    if not (np.all(u.reshape(n, m) == u[::m, None]) and np.all(v.reshape(n, m) == v[None, :m])):
        return None
    return n, m
