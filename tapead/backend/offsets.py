"""Per-iteration offsets of a loop's table columns: computed where they can be, read from a table where they must.

A column's offsets at iteration ``k`` are one of
- affine, ``a + b k`` (a contiguous gather: LLVM can vectorise it): two instructions;
- *runs*: affine within runs of iterations, ``c[r] + b k`` for ``k`` in run ``r`` (the pairs ``i < j`` of a
  pair potential: ``i`` is constant and ``j`` counts up within each run of equal ``i``). The loop carries the
  current run in registers and reads two small tables (each run's constant, the start of the next run) instead
  of one entry per iteration: 3,000 atoms' 4.5 million pairs become 3,000 runs, so code generation and LLVM
  read kilobytes where they read 18 MB per column, and the loop streams nothing from memory for its offsets;
- a table of 32-bit offsets, one per iteration, written as one byte string (LLVM parses one string far faster
  than n constants). Tables equal up to a constant are one table (the x, y, z columns of a gather, a gather and
  its scatter), and so are runs.
The offsets are the same numbers in every form: a loop computes the same values whichever one it uses.
"""
from __future__ import annotations

import numpy as np

RUNS_FROM = 4096  # iterations from which a column made of runs is computed from them (below: its table)
RUN_LENGTH = 8  # ... when its runs are this long on average, at least


class Header:
    """Where a loop's header phis go (``lines[at]``, after the ones there) and the blocks they come from: a
    column computed from runs carries its run in registers from one iteration to the next."""

    def __init__(self, pre: str, lines: list):
        self.pre, self.lines, self.at = pre, lines, len(lines)

    def phi(self, line: str) -> None:
        self.lines.insert(self.at, line)
        self.at += 1


def offset(p: str, offs: np.ndarray, prefix: str, plan, globals_: list, lines: list,
           header: Header | None = None) -> str:
    """An i64 IR value for the offset at iteration ``%{prefix}k`` (see the module docstring); runs only inside a
    loop whose ``header`` is given (a loop nest of a product reads tables)."""
    n = len(offs)
    a = int(offs[0])
    b = int(offs[1] - offs[0]) if n > 1 else 0
    if n == 1 or np.array_equal(offs, a + b * np.arange(n)):
        lines.append(f"  {p}m = mul i64 %{prefix}k, {b}\n  {p}o = add i64 {p}m, {a}")
        return f"{p}o"
    rel = np.asarray(offs, np.int64) - a  # (no copy before the subtraction's own)
    runs = _runs(rel, b) if header is not None and n >= RUNS_FROM else None
    if runs is not None:
        v = _run_state(runs, b, prefix, plan, globals_, lines, header)
        lines.append(f"  {p}o = add i64 {v}, {a}")
        return f"{p}o"
    key = rel.astype("<i4").tobytes()
    table = plan.tables.get(key)
    if table is None:
        table = plan.tables[key] = f"@{prefix}.t{len(plan.tables)}"
        globals_.append(_constant_array(table, key, 4))
    lines.append(f"  {p}t = getelementptr inbounds i32, ptr {table}, i64 %{prefix}k")
    lines.append(f"  {p}l = load i32, ptr {p}t\n  {p}s = sext i32 {p}l to i64\n  {p}o = add i64 {p}s, {a}")
    return f"{p}o"


def _runs(rel: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(next, c)``: for each run ``r`` the iteration where the next one starts and its constant ``c[r]``
    (``rel[k] == c[r] + b k`` in run ``r``), each with one padding entry (the last iteration looks one run
    ahead); None when the runs are too short to pay."""
    n = len(rel)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(rel) != b) + 1])
    if len(starts) * RUN_LENGTH > n:
        return None
    nxt = np.concatenate([starts[1:], [n, n]]).astype(np.int64)
    c = np.concatenate([rel[starts] - b * starts, [0]]).astype(np.int64)
    return nxt, c


def _run_state(runs: tuple, b: int, prefix: str, plan, globals_: list, lines: list, header: Header) -> str:
    """The IR value ``c[r] + b k`` of the current run ``r``, its registers made once per loop and run tables:
    ``r`` and ``c[r]``, and where the next run starts; at the end of an iteration the run advances when the next
    iteration starts it, and both small tables are read at the (new) run."""
    nxt, c = runs
    key = (prefix, b, nxt.tobytes(), c.tobytes())
    hit = plan.run_states.get(key)
    if hit is not None:
        return hit
    q = f"%{prefix}q{len(plan.run_states)}"
    g = f"@{prefix}.q{len(plan.run_states)}"
    globals_.append(_constant_array(f"{g}n", nxt.astype("<i8").tobytes(), 8))
    globals_.append(_constant_array(f"{g}c", c.astype("<i8").tobytes(), 8))
    pre = header.pre
    header.phi(f"  {q}r = phi i64 [0, %{pre}.pre], [{q}r1, %{pre}.latch]")
    header.phi(f"  {q}c = phi i64 [{int(c[0])}, %{pre}.pre], [{q}c1, %{pre}.latch]")
    header.phi(f"  {q}x = phi i64 [{int(nxt[0])}, %{pre}.pre], [{q}x1, %{pre}.latch]")
    lines.append(f"  {q}bk = mul i64 %{prefix}k, {b}\n  {q}v = add i64 {q}c, {q}bk")
    lines.append(f"  {q}k1 = add i64 %{prefix}k, 1\n  {q}adv = icmp eq i64 {q}k1, {q}x")
    lines.append(f"  {q}ai = zext i1 {q}adv to i64\n  {q}r1 = add i64 {q}r, {q}ai")
    lines.append(f"  {q}xp = getelementptr inbounds i64, ptr {g}n, i64 {q}r1\n  {q}x1 = load i64, ptr {q}xp")
    lines.append(f"  {q}cp = getelementptr inbounds i64, ptr {g}c, i64 {q}r1\n  {q}c1 = load i64, ptr {q}cp")
    plan.run_states[key] = f"{q}v"
    return f"{q}v"


def _constant_array(name: str, raw: bytes, align: int) -> str:
    text = "\\" + raw.hex("\\") if raw else ""
    return f"{name} = private unnamed_addr constant [{len(raw)} x i8] c\"{text}\", align {align}"
