"""Product loops as loop nests: ``A @ B`` runs along contiguous rows, not one gather per operand and iteration.

A product loop (``tapead.ir.contraction``) is a map over the entries ``(i, j)`` of ``C = A B`` whose body adds
``A[i, l] * B[l, j]`` for ``l = 0, 1, ...``. Lowered as an ordinary map, every iteration gathers ``2 k`` operands
through offset tables and adds them in one dependent chain: about 0.2 GFLOP/s. When the loop's columns show
the outer layout (iteration ``i * m + j`` reads row ``i`` of ``A`` and column ``j`` of ``B``, each operand
``l`` a fixed stride further), the nest ``for i: for l: for j: C[i, j] += A[i, l] * B[l, j]`` computes the
same sums: every entry still adds its terms in the order ``l = 0, 1, ...`` (the first term stored, the others
added), so the bits are the body's, while the inner loop runs along a row of ``C`` and of ``B`` and LLVM
vectorises it. The multiply and the add are the body's own op table rows.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..ir.contraction import outer_layout, product_length
from ..ir.structure import Map
from ..table.ops import BY_CODE
from .llvm_text import emit_op


class Nest(NamedTuple):
    """Where a product loop's operands live: ``A[i, l]`` at ``a_ptr[rows[i] + l * a_step]``, ``B[l, j]`` at
    ``b_ptr[cols[j] + l * b_step]``; ``C`` is ``n`` x ``m``, ``k`` terms per entry."""

    k: int
    n: int
    m: int
    a_ptr: str
    rows: np.ndarray
    a_step: int
    b_ptr: str
    cols: np.ndarray
    b_step: int


def _step(columns: list) -> int | None:
    """The stride ``s`` with ``columns[l] == columns[0] + l * s`` for every ``l``, or None."""
    first = columns[0][1]
    if len(columns) == 1:
        return 0
    step = int(columns[1][1][0] - first[0])
    for l, (_, offs) in enumerate(columns):
        if not np.array_equal(offs - first, np.full(len(first), l * step)):
            return None
    return step


def nest(m: Map, columns: list) -> Nest | None:
    """The nest of map ``m`` given its columns' ``(pointer, offsets)`` (``loops.Plan``), or None when it is not a
    product loop in the outer layout."""
    k = product_length(m)
    if k is None:
        return None
    a, b = columns[:k], columns[k:]
    if len({p for p, _ in a}) != 1 or len({p for p, _ in b}) != 1:
        return None
    layout = outer_layout(a[0][1], b[0][1])
    a_step, b_step = _step(a), _step(b)
    if layout is None or a_step is None or b_step is None:
        return None
    n, width = layout
    return Nest(k, n, width, a[0][0], a[0][1][::width], a_step, b[0][0], b[0][1][:width], b_step)


def lower(m: Map, nest_: Nest, base: int, pre: str, offset, lines: list) -> None:
    """Append the loop nest computing product loop ``m`` into its rows (``%mem`` from ``base``). ``offset(name,
    offsets, prefix)`` is ``loops._offset`` bound to the plan: the i64 offset at iteration ``%<prefix>k``."""
    k, n, width = nest_.k, nest_.n, nest_.m
    mul, add = BY_CODE[int(m.body.code[0, 0])], BY_CODE[int(m.body.code[min(2, len(m.body.code) - 1), 0])]
    lines.append(f"  br label %{pre}.pre\n{pre}.pre:\n  br label %{pre}.i\n{pre}.i:")
    lines.append(f"  %{pre}ik = phi i64 [0, %{pre}.pre], [%{pre}ik1, %{pre}.ie]")
    row = offset(f"%{pre}ia", nest_.rows, f"{pre}i")
    lines.append(f"  %{pre}im = mul i64 %{pre}ik, {width}\n  %{pre}ic = add i64 %{pre}im, {base}")
    after_first = f"{pre}.c" if k > 1 else f"{pre}.ie"
    for term in (0, 1) if k > 1 else (0,):
        jp, src = f"{pre}j{term}", f"{pre}.i" if term == 0 else f"{pre}.c"
        if term == 1:  # the loop over the terms after the first
            lines.append(f"{pre}.c:\n  %{pre}ck = phi i64 [1, %{pre}.j0e], [%{pre}ck1, %{pre}.ce]")
            lines.append(f"  %{pre}cam = mul i64 %{pre}ck, {nest_.a_step}\n  %{pre}cao = add i64 {row}, %{pre}cam")
            lines.append(f"  %{pre}cb = mul i64 %{pre}ck, {nest_.b_step}")
            a_at = f"%{pre}cao"
        else:
            a_at = row
        lines.append(f"  %{pre}a{term}p = getelementptr inbounds double, ptr {nest_.a_ptr}, i64 {a_at}")
        lines.append(f"  %{pre}a{term} = load double, ptr %{pre}a{term}p\n  br label %{jp}.h\n{jp}.h:")
        lines.append(f"  br label %{jp}\n{jp}:\n  %{jp}k = phi i64 [0, %{jp}.h], [%{jp}k1, %{jp}]")
        col = offset(f"%{jp}b", nest_.cols, jp)
        if term == 1:
            lines.append(f"  %{jp}bx = add i64 {col}, %{pre}cb")
            col = f"%{jp}bx"
        lines.append(f"  %{jp}bp = getelementptr inbounds double, ptr {nest_.b_ptr}, i64 {col}")
        lines.append(f"  %{jp}bv = load double, ptr %{jp}bp")
        product = emit_op(mul, [f"%{pre}a{term}", f"%{jp}bv"], 0, lines, jp)
        lines.append(f"  %{jp}co = add i64 %{pre}ic, %{jp}k\n  %{jp}cp = getelementptr inbounds double, ptr %mem, "
                     f"i64 %{jp}co")
        if term == 1:
            lines.append(f"  %{jp}old = load double, ptr %{jp}cp")
            product = emit_op(add, [f"%{jp}old", product], 1, lines, jp)
        lines.append(f"  store double {product}, ptr %{jp}cp\n  %{jp}k1 = add i64 %{jp}k, 1")
        lines.append(f"  %{jp}more = icmp slt i64 %{jp}k1, {width}")
        if term == 0:
            lines.append(f"  br i1 %{jp}more, label %{jp}, label %{pre}.j0e\n{pre}.j0e:\n  br label %{after_first}")
        else:
            lines.append(f"  br i1 %{jp}more, label %{jp}, label %{pre}.ce\n{pre}.ce:")
            lines.append(f"  %{pre}ck1 = add i64 %{pre}ck, 1\n  %{pre}cmore = icmp slt i64 %{pre}ck1, {k}")
            lines.append(f"  br i1 %{pre}cmore, label %{pre}.c, label %{pre}.ie")
    lines.append(f"{pre}.ie:\n  %{pre}ik1 = add i64 %{pre}ik, 1\n  %{pre}imore = icmp slt i64 %{pre}ik1, {n}")
    lines.append(f"  br i1 %{pre}imore, label %{pre}.i, label %{pre}.done\n{pre}.done:")
