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

from .ops import BY_CODE
from .tape import Tape


def _literal(v: float) -> str:
    from .codegen import _literal as lit
    return lit(v)


def _pieces(n_items: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n_items)) for a in range(0, n_items, size)]


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
    consts = [_literal(v) for v in tape.consts.tolist()]
    ptr_params = [f"ptr %x{k}" for k in range(len(in_groups))] + ["ptr %p", "ptr %w"] + \
        [f"ptr %o{k}" for k in range(len(out_groups))]
    module: list[str] = []
    for p, items in enumerate(pieces):
        body: list[str] = []
        name: dict[int, str] = {}

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
                name[s] = consts[s - first_const]
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
                text = row.llvm.format(*args, out=f"%s{slot}")
                body.extend("  " + line for line in text.split("\n"))
                name[slot] = f"%s{slot}"
            elif item[0] == "guard":
                g = item[1]
                s, expected = guards[g]
                body.append(f"  %g{g} = fcmp {'oeq' if expected else 'une'} double {ref(s)}, 0.0")
                body.append(f"  %gs{g} = select i1 %g{g}, i32 1, i32 {status}")
                status = f"%gs{g}"
            else:
                _, k, a, b, off = item
                for s in outs[off + a:off + b]:
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
        module.append(f"define internal i32 @{fname}.{p}({', '.join(ptr_params)}) noinline nounwind {{")
        module.append("entry:")
        module.extend(body)
        module.append(f"  ret i32 {status}")
        module.append("}")
    point = ["entry:"]
    if n_cells:
        point.append(f"  %w = alloca [{n_cells} x double], align 8")
    w = "ptr %w" if n_cells else "ptr null"
    call_args = [f"ptr %x{k}" for k in range(len(in_groups))] + ["ptr %p", w] + \
        [f"ptr %o{k}" for k in range(len(out_groups))]
    status = "0"
    for p in range(len(pieces)):
        point.append(f"  %r{p} = call i32 @{fname}.{p}({', '.join(call_args)})")
        point.append(f"  %t{p} = or i32 {status}, %r{p}")
        status = f"%t{p}"
    point.append(f"  ret i32 {status}")
    return module, point
