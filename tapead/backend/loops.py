"""Lowering maps: each map becomes one loop in the point kernel, so code size follows the program.

Memory: a map's rows (each outputs, sums, the scatter range) live in one work array of doubles on the kernel's
stack (``%mem``), at a fixed offset per map, because a loop cannot index SSA registers. Scalar code that reads a
map's row loads it after the loop. A table column becomes a base pointer and one int32 offset per iteration:
columns of input or params slots read the caller's arrays directly, columns of earlier map rows read ``%mem``,
anything else (scalar results, constants) is copied into ``%mem`` once before the loop. Offsets that are an
affine function of the iteration are computed, not loaded (contiguous loads LLVM can vectorise), also when the first
or last iteration reads elsewhere (a padded stencil's edge, selected); others come from a constant table.

The body's instructions are the same text as in a scalar kernel, so an unrolled tape and its loop compute the
same values; sums and scatters add in iteration order from -0.0, as ``unroll`` and the interpreter do.
"""
from __future__ import annotations

import numpy as np

from ..table.ops import BY_CODE
from . import products
from .llvm_text import BLOCK, emit_op, literal as _literal
from ..ir.contraction import Product
from ..ir.structure import Map, Out, distinct
from .register_runs import run_groups

MAX_CELLS = 1 << 25  # work array doubles (256 MB); beyond, map tapes lower unrolled (and cut into pieces)


class Plan:
    """Where each map's rows and copied sources live in ``%mem``, and where each table column reads."""

    def __init__(self, tape, runs: list, groups: list, data: str | None = None):
        first = tape.first_result
        # data, not code: a column reading only constants (a data set, a connectivity table held in a closure)
        # reads them from one array of the tape's constants, never one store per element
        self.data = data if data is not None and len(tape.consts) else None
        self.data_values = tape.consts
        self.data_read = False
        if self.data is not None:
            groups = list(groups) + [(self.data, tape.first_const, tape.first_const + len(tape.consts))]
        self.base: dict[int, int] = {}  # map index -> mem offset of its rows
        self.cell = Cells(tape.n_slots)  # slot written by a map -> its mem offset
        self.copies: dict[int, list] = {}  # map index -> [(slot, mem offset)] copied before its loop
        self.columns: dict[int, list] = {}  # map index -> [(base pointer, offsets)] per body input
        at = 0
        for index, (start, end, m) in enumerate(runs):
            self.base[index] = at
            self.cell.at[first + start:first + start + m.rows] = at + np.arange(m.rows)
            at += m.rows
        self.nests: dict[int, products.Nest] = {}  # map index -> its loop nest (a product read by its factors)
        for index, (start, end, m) in enumerate(runs):
            if isinstance(m, Product):
                found = self._product(m, groups, at)
                if found is not None:
                    self.nests[index], self.copies[index], at = found
                    continue
            columns: list = [None] * m.body.n_inputs
            in_mem = []
            for i in range(m.body.n_inputs):
                col = m.tables[:, i].astype(np.int64)
                lo, hi = int(col.min()), int(col.max())
                group = next(((ptr, a) for ptr, a, b in groups if a <= lo and hi < b), None)
                if group is not None:  # inputs or params of one argument, or constants: read in place
                    columns[i] = (group[0], col - group[1])
                    self.data_read |= group[0] == self.data
                else:
                    in_mem.append(i)
            copies: list = []
            if in_mem:  # each distinct slot of these columns looked up once; numpy spreads the offsets
                _, offsets, at = self._where(m.tables[:, in_mem], [], at, copies)
                for c, i in enumerate(in_mem):
                    columns[i] = ("%mem", offsets[:, c])
            self.copies[index] = copies
            self.columns[index] = columns
        self.cells = at
        self.tables: dict[bytes, str] = {}  # offsets relative to their first -> the constant table holding them

    def _where(self, slots: np.ndarray, groups: list, at: int, copies: list) -> tuple[str, np.ndarray, int]:
        """``(pointer, offsets, next free cell)`` of an array of slots: in place in one argument group, or in
        ``%mem`` (map rows; other slots, scalar results and constants, copied in once before the loop and
        appended to ``copies``)."""
        lo, hi = int(slots.min()), int(slots.max())
        group = next(((ptr, a) for ptr, a, b in groups if a <= lo and hi < b), None)
        if group is not None:
            self.data_read |= group[0] == self.data
            return group[0], slots.astype(np.int64) - group[1], at
        values, where = distinct(slots)
        offsets = self.cell.at[values]
        fresh = offsets < 0
        offsets[fresh] = at + np.arange(int(fresh.sum()))
        copies += list(zip(values[fresh].tolist(), offsets[fresh].tolist()))
        return "%mem", offsets[where].reshape(slots.shape), at + int(fresh.sum())

    def _product(self, m: Product, groups: list, at: int):
        """``(nest, copies, next free cell)`` of a product read through its factors, or None."""
        copies: list = []
        data_read = self.data_read
        a_ptr, a_off, after = self._where(m.a, groups, at, copies)
        b_ptr, b_off, after = self._where(m.b, groups, after, copies)
        found = products.nest(m, (a_ptr, a_off), (b_ptr, b_off))
        if found is None:
            self.data_read = data_read
            return None
        staged = products.stage_cells(found)  # B copied into rows first (reverse mode's G Bᵀ reads B by columns)
        if staged:
            found, after = found._replace(stage=after), after + staged
        return found, copies, after


def data_global(plan: Plan) -> list[str]:
    """The definition of the constants array the loops read (empty when no column reads constants).

    Its bytes are one string (LLVM parses a string far faster than n constants), and it is an ordinary external
    global, not a constant: LLVM must not fold its values into a fully unrolled loop (a 100 x 20 data set compiled
    into 2,000 literals took 7 s of optimisation), so compile time does not depend on the data's size."""
    if not plan.data_read:
        return []
    raw = np.ascontiguousarray(plan.data_values, dtype="<f8").tobytes()
    text = "\\" + raw.hex("\\") if raw else ""
    return [f"{plan.data} = global [{len(raw)} x i8] c\"{text}\", align 16"]


def pointers(tape, in_groups) -> list[tuple[str, int, int]]:
    """``(pointer, first slot, end slot)`` of every argument group and of the params."""
    out, at = [], 0
    for k, size in enumerate(in_groups):
        out.append((f"%x{k}", at, at + size))
        at += size
    out.append(("%p", at, at + tape.n_params))
    return out


def _offset(p: str, offs: np.ndarray, prefix: str, plan: Plan, globals_: list, lines: list) -> str:
    """An i64 IR value for the offset at iteration ``%{prefix}k``: affine arithmetic (a first or last iteration that
    reads elsewhere selected), or a load from a constant table plus a constant. Tables equal up to a constant are
    one table (the x, y, z columns of a gather, a gather and its scatter), written as a byte string (LLVM parses
    one string far faster than n constants)."""
    n = len(offs)
    # the affine fit, from the middle when there are iterations around it (a padded stencil's edges may differ)
    b = int(offs[2] - offs[1]) if n > 3 else int(offs[1] - offs[0]) if n > 1 else 0
    a = int(offs[1]) - b if n > 3 else int(offs[0])
    edges = np.flatnonzero(offs != a + b * np.arange(n)).tolist()
    if set(edges) <= {0, n - 1} and (n > 3 or not edges):  # computed; an edge that reads elsewhere is selected
        lines.append(f"  {p}m = mul i64 %{prefix}k, {b}\n  {p}o = add i64 {p}m, {a}")
        at = f"{p}o"
        for e in edges:
            lines.append(f"  {p}ex{e} = icmp eq i64 %{prefix}k, {e}")
            lines.append(f"  {p}es{e} = select i1 {p}ex{e}, i64 {int(offs[e])}, i64 {at}")
            at = f"{p}es{e}"
        return at
    a = int(offs[0])
    rel = (offs - a).astype("<i4")
    key = rel.tobytes()
    table = plan.tables.get(key)
    if table is None:
        table = plan.tables[key] = f"@{prefix}.t{len(plan.tables)}"
        text = "\\" + key.hex("\\") if key else ""
        globals_.append(f"{table} = private unnamed_addr constant [{len(key)} x i8] c\"{text}\", align 4")
    lines.append(f"  {p}t = getelementptr inbounds i32, ptr {table}, i64 %{prefix}k")
    lines.append(f"  {p}l = load i32, ptr {p}t\n  {p}s = sext i32 {p}l to i64\n  {p}o = add i64 {p}s, {a}")
    return f"{p}o"


def lower_map(m: Map, index: int, start: int, name: dict, plan: Plan, globals_: list, prefix: str,
              lines: list) -> None:
    """Append the loop of map ``index`` (its rows start at slot ``start``); its sums get SSA names, its other rows
    are loaded where they are used (``MapNames``)."""
    pre = f"{prefix}m{index}"
    base = plan.base[index]
    for s, off in plan.copies[index]:  # sources the loop reads from %mem
        lines.append(f"  %{pre}c{off} = getelementptr inbounds double, ptr %mem, i64 {off}")
        lines.append(f"  store double {name[s]}, ptr %{pre}c{off}")
    found = plan.nests.get(index)
    if found is not None:  # a matrix product: a loop nest along rows
        products.lower(m, found, base, pre, lambda p, offs, at: _offset(p, offs, at, plan, globals_, lines), lines)
        return
    scatter_at = base + m.rows - m.scatter_size
    if m.scatter_size:  # the scatter range starts at -0.0: a loop of stores
        lines.append(f"  br label %{pre}.z0\n{pre}.z0:\n  br label %{pre}.z\n{pre}.z:")
        lines.append(f"  %{pre}zk = phi i64 [{scatter_at}, %{pre}.z0], [%{pre}zk1, %{pre}.z]")
        lines.append(f"  %{pre}zp = getelementptr inbounds double, ptr %mem, i64 %{pre}zk")
        lines.append(f"  store double -0.0, ptr %{pre}zp\n  %{pre}zk1 = add i64 %{pre}zk, 1")
        lines.append(f"  %{pre}zm = icmp slt i64 %{pre}zk1, {scatter_at + m.scatter_size}")
        lines.append(f"  br i1 %{pre}zm, label %{pre}.z, label %{pre}.pre")
    sums = [j for j, k in enumerate(m.kinds) if k is Out.SUM]
    if not m.scatter_size:
        lines.append(f"  br label %{pre}.pre")
    dst = m.dst.astype(np.int64) + scatter_at
    runs = run_groups(dst)
    in_run = {c for group in runs for c in group}
    lines.append(f"{pre}.pre:")
    for g, group in enumerate(runs):  # each run group's registers start with the first target's cells
        for c in group:
            lines.append(f"  %{pre}r{c}p0 = getelementptr inbounds double, ptr %mem, i64 {int(dst[0, c])}")
            lines.append(f"  %{pre}r{c}a0 = load double, ptr %{pre}r{c}p0")
    lines.append(f"  br label %{pre}.loop\n{pre}.loop:")
    lines.append(f"  %{pre}k = phi i64 [0, %{pre}.pre], [%{pre}k1, %{pre}.latch]")
    for j in sums:
        lines.append(f"  %{pre}s{j} = phi double [-0.0, %{pre}.pre], [%{pre}s{j}n, %{pre}.latch]")
    for g, group in enumerate(runs):
        c0 = group[0]
        lines.append(f"  %{pre}g{g}cur = phi i64 [{int(dst[0, c0])}, %{pre}.pre], [%{pre}d{c0}o, %{pre}.latch]")
        for c in group:
            lines.append(f"  %{pre}r{c}a = phi double [%{pre}r{c}a0, %{pre}.pre], [%{pre}r{c}n, %{pre}.latch]")
    body = m.body
    bname: dict[int, str] = {}
    for i in range(body.n_inputs):
        ptr, offs = plan.columns[index][i]
        o = _offset(f"%{pre}i{i}", offs, pre, plan, globals_, lines)
        lines.append(f"  %{pre}i{i}p = getelementptr inbounds double, ptr {ptr}, i64 {o}")
        lines.append(f"  %{pre}i{i}v = load double, ptr %{pre}i{i}p")
        bname[i] = f"%{pre}i{i}v"
    slot = body.first_const
    for v in body.consts.tolist():
        bname[slot] = _literal(v)
        slot += 1
    for r, (code, *args) in enumerate(body.code.tolist()):
        row = BY_CODE[code]
        bname[slot] = emit_op(row, [bname[a] for a in args[:row.arity]], slot, lines, pre)
        slot += 1
        if r % BLOCK == BLOCK - 1:  # a long body in basic blocks of BLOCK instructions, as straight-line code
            lines.append(f"  br label %{pre}.b{r}\n{pre}.b{r}:")
    outs = body.outputs.tolist()
    scatter_values = [bname[outs[j]] for j, kind in enumerate(m.kinds) if kind is Out.SCATTER]
    for g, group in enumerate(runs):
        _run_accumulate(pre, g, group, dst, scatter_values, plan, globals_, lines)
    c = 0
    for j, kind, off in m.outputs():
        v = bname[outs[j]]
        if kind is Out.EACH:
            lines.append(f"  %{pre}e{j}o = add i64 %{pre}k, {base + off}")
            lines.append(f"  %{pre}e{j}p = getelementptr inbounds double, ptr %mem, i64 %{pre}e{j}o")
            lines.append(f"  store double {v}, ptr %{pre}e{j}p")
        elif kind is Out.SUM:
            lines.append(f"  %{pre}s{j}n = fadd double %{pre}s{j}, {v}")
        elif c in in_run:
            c += 1
        else:
            o = _offset(f"%{pre}d{c}", dst[:, c], pre, plan, globals_, lines)
            lines.append(f"  %{pre}d{c}p = getelementptr inbounds double, ptr %mem, i64 {o}")
            lines.append(f"  %{pre}d{c}v = load double, ptr %{pre}d{c}p")
            lines.append(f"  %{pre}d{c}a = fadd double %{pre}d{c}v, {v}")
            lines.append(f"  store double %{pre}d{c}a, ptr %{pre}d{c}p")
            c += 1
    lines.append(f"  br label %{pre}.latch\n{pre}.latch:")
    lines.append(f"  %{pre}k1 = add i64 %{pre}k, 1\n  %{pre}more = icmp slt i64 %{pre}k1, {m.n}")
    lines.append(f"  br i1 %{pre}more, label %{pre}.loop, label %{pre}.done\n{pre}.done:")
    for g, group in enumerate(runs):  # the last run's registers go back to their cells
        c0 = group[0]
        for c in group:
            lines.append(f"  %{pre}r{c}o = add i64 %{pre}d{c0}o, {int(dst[0, c] - dst[0, c0])}")
            lines.append(f"  %{pre}r{c}q = getelementptr inbounds double, ptr %mem, i64 %{pre}r{c}o")
            lines.append(f"  store double %{pre}r{c}n, ptr %{pre}r{c}q")
    offsets = m.offsets()
    for j in sums:  # a sum is an SSA value, and a cell later maps may read
        slot_j = start + offsets[j]
        lines.append(f"  %{pre}sp{j} = getelementptr inbounds double, ptr %mem, i64 {base + offsets[j]}")
        lines.append(f"  store double %{pre}s{j}n, ptr %{pre}sp{j}")
        name[slot_j] = f"%{pre}s{j}n"


def _run_accumulate(pre: str, g: int, group: list, dst: np.ndarray, values: list, plan: Plan, globals_: list,
                    lines: list) -> None:
    """One iteration of a run group (see ``run_groups``): when the target changed, store the registers to the old
    cells and load the new cells; add this iteration's values."""
    c0 = group[0]
    o = _offset(f"%{pre}d{c0}", dst[:, c0], pre, plan, globals_, lines)
    lines.append(f"  %{pre}g{g}same = icmp eq i64 {o}, %{pre}g{g}cur")
    lines.append(f"  br i1 %{pre}g{g}same, label %{pre}g{g}.keep, label %{pre}g{g}.flush\n{pre}g{g}.flush:")
    for c in group:
        shift = int(dst[0, c] - dst[0, c0])
        lines.append(f"  %{pre}r{c}fo = add i64 %{pre}g{g}cur, {shift}")
        lines.append(f"  %{pre}r{c}fp = getelementptr inbounds double, ptr %mem, i64 %{pre}r{c}fo")
        lines.append(f"  store double %{pre}r{c}a, ptr %{pre}r{c}fp")
        lines.append(f"  %{pre}r{c}no = add i64 {o}, {shift}")
        lines.append(f"  %{pre}r{c}np = getelementptr inbounds double, ptr %mem, i64 %{pre}r{c}no")
        lines.append(f"  %{pre}r{c}nv = load double, ptr %{pre}r{c}np")
    lines.append(f"  br label %{pre}g{g}.join\n{pre}g{g}.keep:\n  br label %{pre}g{g}.join\n{pre}g{g}.join:")
    for c in group:
        lines.append(f"  %{pre}r{c}b = phi double [%{pre}r{c}a, %{pre}g{g}.keep], [%{pre}r{c}nv, %{pre}g{g}.flush]")
    for c in group:
        lines.append(f"  %{pre}r{c}n = fadd double %{pre}r{c}b, {values[c]}")


class Cells:
    """Slot -> offset in ``%mem`` of the slots maps write (a dict's ``in`` and ``[]`` over one numpy array)."""

    def __init__(self, n_slots: int):
        self.at = np.full(n_slots, -1, np.int64)

    def __contains__(self, slot: int) -> bool:
        return 0 <= slot < len(self.at) and self.at[slot] >= 0

    def __getitem__(self, slot: int) -> int:
        if slot not in self:
            raise KeyError(slot)
        return int(self.at[slot])

    def get(self, slot: int, default=None):
        return self[slot] if slot in self else default


class MapNames(dict):
    """Slot -> IR value, where a map's row is loaded from the work array where it is used (a fresh load at each
    use: a use inside one output group's conditional block must not serve another block), and a constant is
    spelled as a literal when first used (a tape whose loops read a data set of a million constants names
    only the few its scalar code reads)."""

    def __init__(self, lines: list, cells: dict, tape=None):
        super().__init__()
        self.lines, self.cells, self.loads = lines, cells, 0
        self.first_const = tape.first_const if tape is not None else 0
        self.consts = tape.consts if tape is not None else np.zeros(0)

    def __missing__(self, slot: int) -> str:
        if 0 <= slot - self.first_const < len(self.consts):
            self[slot] = _literal(float(self.consts[slot - self.first_const]))
            return self[slot]
        if slot not in self.cells:
            raise KeyError(slot)
        self.loads += 1
        v = f"%ld{self.loads}"
        self.lines.append(f"  {v}p = getelementptr inbounds double, ptr %mem, i64 {self.cells[slot]}")
        self.lines.append(f"  {v} = load double, ptr {v}p")
        return v


def used_outside(tape) -> set:
    """Slots read by scalar instructions, guards and outputs (the map rows that need an SSA value)."""
    code = tape.code
    scalar_rows = code[code[:, 0] >= 0]
    used = set(scalar_rows[:, 1:].ravel().tolist())
    used |= set(tape.outputs.tolist()) | set(tape.guards[:, 0].tolist())
    return used
