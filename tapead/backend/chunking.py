"""Chunked lowering: a large tape's point kernel as a sequence of small ``noinline`` functions.

LLVM's optimisation and instruction selection grow faster than linearly with the size of one function (and at O0
every SSA value of a huge function gets its own stack slot: a 1.6M-op kernel overflowed the stack). Cut into
pieces of a few thousand records, every piece costs the same to compile, so compile time is linear in the tape and
each piece can be optimised at O2; the kernel's own frame holds only the piece being run.

The pieces run in order: first the instructions, then the guards, then the output stores. A value that a later
piece reads is written to a work array of doubles (``%w``) by the piece that computes it and loaded by the pieces
that read it; work-array cells are reused once their last reader has run (a linear scan), so the array holds the
values live across a cut, not the whole tape. Each piece gets every pointer argument of the kernel and returns
its guard status (0 when every guard it checks held). The arithmetic of every instruction is the same text as in
the one-function kernel, so results are bitwise identical.
"""
from __future__ import annotations

import re

from ..table.ops import BY_CODE
from .llvm_text import emit_op, literal as _literal
from ..ir.tape import Tape


PIECE_MARK = "; straight-line piece"  # the line before each piece's definition (``optimise_around_pieces``)
_PIECE = re.compile(r"^; straight-line piece\ndefine internal i32 @([\w.$]+)\(([^)]*)\) noinline nounwind \{\n"
                    r"(?:.*\n)*?\}\n", re.M)


def optimise_around_pieces(ir: str, run) -> str | None:
    """IR text in which ``run`` (an optimisation pipeline on parsed text, returning the optimised text) has
    optimised everything but the pieces, which come back as they were; None when ``ir`` has no pieces.

    A piece is straight-line code already folded and shared by the recorder: the IR pipeline leaves its machine
    code as it was (the object of a 120k-op gradient differed by 0.02%) at half the cost of an O2 build, so only
    the functions around the pieces (batch loops, entry points) are optimised; instruction selection and register
    allocation still run at the target machine's level on everything. The pieces are declared while the rest is
    optimised and put back after: no instruction of a piece changes, so neither do the results."""
    at = ir.find(PIECE_MARK)  # (a plain search first: a kernel of data tables is tens of MB of text)
    pieces = list(_PIECE.finditer(ir, at)) if at >= 0 else []
    if not pieces:
        return None
    called = set(_GLOBAL.findall("".join(m.group(0) for m in pieces)))
    head, at = [], 0
    for m in pieces:
        types = ", ".join(p.split()[0] for p in m.group(2).split(","))
        head += ir[at:m.start()].splitlines(keepends=True) + [f"declare i32 @{m.group(1)}({types}) nounwind\n"]
        at = m.end()
    head += ir[at:].splitlines(keepends=True)
    if any(line.startswith("define ") and _declared(line) in called for line in head):
        return None  # a piece calls a function of the module (a custom op's rule): it needs the inliner
    names = {m.group(1) for m in pieces}
    done = (run("".join(head)) + "\n").splitlines(keepends=True)
    done = [line for line in done if not (line.startswith("declare ") and _declared(line) in names)]
    # what only the pieces read (libm's functions, constant tables) the pipeline dropped as unused: put back
    there = {_named(line) for line in done} - {None}
    wanted = called - names - there
    lost = [line if line.endswith("\n") else line + "\n" for line in head if _named(line) in wanted]
    return "".join(done) + "".join(lost) + "".join(m.group(0) for m in pieces)


_GLOBAL = re.compile(r"@([\w.$]+)")


def _named(line: str) -> str | None:
    """The global a module-level line declares or defines, None for other lines."""
    if line.startswith("declare "):
        return _declared(line)
    if line.startswith("@"):
        return line[1:line.index(" ")]
    return None


def _declared(line: str) -> str:
    return line[line.index("@") + 1:line.index("(")]


def _pieces(n_items: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n_items)) for a in range(0, n_items, size)]


class _Names(dict):
    """Slot -> its LLVM value in one piece; a constant is spelled when first asked for."""

    def __init__(self, consts, lo: int, hi: int):
        super().__init__()
        self.consts, self.lo, self.hi = consts, lo, hi

    def __missing__(self, s: int) -> str:
        if not self.lo <= s < self.hi:
            raise KeyError(s)
        v = self[s] = _literal(float(self.consts[s - self.lo]))
        return v


def lower_chunked(tape: Tape, fname: str, in_groups, out_groups, chunk: int, stores) -> tuple[list, list]:
    """(module-level lines, point-function lines) for ``@fname`` cut into pieces of ``chunk`` records.

    ``stores(tape, name, outs, k, prefix, body, globals_)`` writes output group ``k`` (shared with the one-function
    kernel, so constant runs are copied from tables here too).
    """
    first = tape.first_result
    n_in = tape.n_inputs
    first_const = tape.first_const
    code = tape.code.tolist()
    guards = tape.guards.tolist()
    outs = tape.outputs.tolist()
    # items of each piece: ops, then guards, then output stores (per group, in runs of at most `chunk`)
    pieces: list[list] = [[("op", i) for i in range(a, b)] for a, b in _pieces(len(code), chunk)]
    pieces += [[("guard", g) for g in range(a, b)] for a, b in _pieces(len(guards), chunk)]
    start = 0
    for k, size in enumerate(out_groups):
        pieces += [[("out", k, a, b, start)] for a, b in _pieces(size, chunk)]
        start += size
    # the piece that defines each result slot, and the last piece that reads it
    defined = {}
    last: dict[int, int] = {}
    for p, items in enumerate(pieces):
        for item in items:
            if item[0] == "op":
                i = item[1]
                row = BY_CODE[code[i][0]]
                for a in code[i][1:1 + row.arity]:
                    if a >= first:
                        last[a] = p
                defined[first + i] = p
            elif item[0] == "guard":
                s = guards[item[1]][0]
                if s >= first:
                    last[s] = p
            else:
                _, k, a, b, off = item
                for s in outs[off + a:off + b]:
                    if s >= first:
                        last[s] = p
    # work-array cells: allocated when a value must cross a cut, reusable by values stored by its last reader
    # (a piece loads what it reads before it stores what it computes): a linear scan
    cell: dict[int, int] = {}
    free: list[int] = []
    n_cells = 0
    release: dict[int, list] = {}
    crossing_by_piece: dict[int, list] = {}
    for s, p_last in last.items():
        if p_last > defined[s]:
            crossing_by_piece.setdefault(defined[s], []).append(s)
    for p in range(len(pieces)):
        for s in release.pop(p, ()):
            free.append(cell[s])
        for s in sorted(crossing_by_piece.get(p, ())):
            if free:
                cell[s] = free.pop()
            else:
                cell[s], n_cells = n_cells, n_cells + 1
            release.setdefault(last[s], []).append(s)  # its cell is free for values stored at the end of that piece
    # input slot -> (group, index)
    where_in = []
    for k, size in enumerate(in_groups):
        where_in += [(k, j) for j in range(size)]
    consts = tape.consts  # spelled when read (a constant Hessian's million entries are copied out, not named)
    ptr_params = [f"ptr %x{k}" for k in range(len(in_groups))] + ["ptr %p", "ptr %w"] + \
        [f"ptr %o{k}" for k in range(len(out_groups))]
    module: list[str] = []
    for p, items in enumerate(pieces):
        body: list[str] = []
        name = _Names(consts, first_const, first)

        def ref(s: int) -> str:
            v = name.get(s)
            if v is not None:
                return v
            if s < n_in:
                k, j = where_in[s]
                body.append(f"  %a{s} = getelementptr inbounds double, ptr %x{k}, i64 {j}")
            elif s < first_const:
                body.append(f"  %a{s} = getelementptr inbounds double, ptr %p, i64 {s - n_in}")
            elif s < first:
                name[s] = _literal(float(consts[s - first_const]))
                return name[s]
            else:
                body.append(f"  %a{s} = getelementptr inbounds double, ptr %w, i64 {cell[s]}")
            body.append(f"  %s{s} = load double, ptr %a{s}")
            name[s] = f"%s{s}"
            return name[s]

        status = "0"
        for item in items:
            if item[0] == "op":
                i = item[1]
                row = BY_CODE[code[i][0]]
                args = [ref(a) for a in code[i][1:1 + row.arity]]
                slot = first + i
                name[slot] = emit_op(row, args, slot, body)
            elif item[0] == "guard":
                g = item[1]
                s, expected = guards[g]
                body.append(f"  %g{g} = fcmp {'oeq' if expected else 'une'} double {ref(s)}, 0.0")
                body.append(f"  %gs{g} = select i1 %g{g}, i32 1, i32 {status}")
                status = f"%gs{g}"
            else:
                _, k, a, b, off = item
                for s in outs[off + a:off + b]:
                    if not first_const <= s < first:  # (constants are spelled only if stored one by one)
                        ref(s)
                body.append(f"  %null = icmp eq ptr %o{k}, null")
                body.append("  br i1 %null, label %skip, label %store")
                body.append("store:")
                body.append(f"  %ob = getelementptr inbounds double, ptr %o{k}, i64 {a}")
                stores(tape, name, outs[off + a:off + b], "b", f"{fname}.{p}", body, module)
                body.append("  br label %skip")
                body.append("skip:")
        if items and items[0][0] == "op":
            for s in (first + it[1] for it in items):
                if s in cell and defined[s] == p:
                    body.append(f"  %c{s} = getelementptr inbounds double, ptr %w, i64 {cell[s]}")
                    body.append(f"  store double %s{s}, ptr %c{s}")
        module.append(PIECE_MARK)
        module.append(f"define internal i32 @{fname}.{p}({', '.join(ptr_params)}) noinline nounwind {{")
        module.append("entry:")
        module.extend(body)
        module.append(f"  ret i32 {status}")
        module.append("}")
    call_args = [f"ptr %x{k}" for k in range(len(in_groups))] + ["ptr %p", "ptr %w" if n_cells else "ptr null"] + \
        [f"ptr %o{k}" for k in range(len(out_groups))]
    calls, status = [], "0"
    for p in range(len(pieces)):
        calls.append(f"  %r{p} = call i32 @{fname}.{p}({', '.join(call_args)})")
        calls.append(f"  %t{p} = or i32 {status}, %r{p}")
        status = f"%t{p}"
    if n_cells <= STACK_CELLS:
        point = ["entry:"] + ([f"  %w = alloca [{n_cells} x double], align 8"] if n_cells else [])
        return module, point + calls + [f"  ret i32 {status}"]
    module += work_pool(fname, 8 * n_cells)
    return module, with_pooled_work_array(fname, 8 * n_cells, calls, status)


STACK_CELLS = 16384  # work arrays up to 128 KB live on the kernel's stack; larger ones in a per-kernel pool
POOL = 16  # pooled work arrays per kernel: one per thread running it at once (more: one malloc'ed per call)


def work_pool(fname: str, nbytes: int) -> list[str]:
    """The pool of work arrays of one kernel, and ``@<fname>_release`` that frees them (called when the kernel is
    dropped). Buffers are allocated on first use, once per pool slot, never per call."""
    return [
        f"@{fname}.pool = internal global [{POOL} x ptr] zeroinitializer",
        f"@{fname}.busy = internal global [{POOL} x i32] zeroinitializer",
        "declare noalias ptr @malloc(i64) nounwind",
        "declare void @free(ptr) nounwind",
        "declare void @abort() noreturn nounwind",
        f"define void @{fname}_release() nounwind {{",
        "entry:\n  br label %loop",
        "loop:\n  %i = phi i64 [0, %entry], [%next, %loop]",
        f"  %pp = getelementptr inbounds [{POOL} x ptr], ptr @{fname}.pool, i64 0, i64 %i",
        "  %b = load ptr, ptr %pp\n  call void @free(ptr %b)\n  store ptr null, ptr %pp",
        f"  %next = add i64 %i, 1\n  %more = icmp ult i64 %next, {POOL}\n  br i1 %more, label %loop, label %done",
        "done:\n  ret void\n}",
    ]


def with_pooled_work_array(fname: str, nbytes: int, calls: list, status: str) -> list[str]:
    """Point-function body: take a free pool slot (compare-and-swap on its busy flag), allocate its buffer on
    first use, run the pieces, give the slot back. With every slot busy the call mallocs a buffer of its own."""
    pool, busy = f"@{fname}.pool", f"@{fname}.busy"
    return [
        "entry:\n  br label %try",
        "try:\n  %i = phi i64 [0, %entry], [%i2, %next]",
        f"  %bp = getelementptr inbounds [{POOL} x i32], ptr {busy}, i64 0, i64 %i",
        "  %cx = cmpxchg ptr %bp, i32 0, i32 1 acquire monotonic\n  %ok = extractvalue { i32, i1 } %cx, 1",
        "  br i1 %ok, label %got, label %next",
        f"next:\n  %i2 = add i64 %i, 1\n  %more = icmp ult i64 %i2, {POOL}\n  br i1 %more, label %try, label %own",
        f"own:\n  %wo = call ptr @malloc(i64 {nbytes})\n  br label %check",
        f"got:\n  %pp = getelementptr inbounds [{POOL} x ptr], ptr {pool}, i64 0, i64 %i",
        "  %w0 = load ptr, ptr %pp\n  %none = icmp eq ptr %w0, null\n  br i1 %none, label %alloc, label %have",
        f"alloc:\n  %wn = call ptr @malloc(i64 {nbytes})\n  store ptr %wn, ptr %pp\n  br label %have",
        "have:\n  %wg = phi ptr [%w0, %got], [%wn, %alloc]\n  br label %check",
        "check:\n  %w = phi ptr [%wg, %have], [%wo, %own]",
        f"  %slot = phi i64 [%i, %have], [{POOL}, %own]",
        "  %oom = icmp eq ptr %w, null\n  br i1 %oom, label %fail, label %run",
        "fail:\n  call void @abort()\n  unreachable",  # out of memory for the work array: nothing sane remains
        "run:", *calls,
        f"  %owned = icmp eq i64 %slot, {POOL}\n  br i1 %owned, label %freeit, label %give",
        "freeit:\n  call void @free(ptr %w)\n  br label %done",
        f"give:\n  %rb = getelementptr inbounds [{POOL} x i32], ptr {busy}, i64 0, i64 %slot",
        "  store atomic i32 0, ptr %rb release, align 4\n  br label %done",
        f"done:\n  ret i32 {status}",
    ]
