"""Lowering: a tape becomes LLVM IR text with a point kernel and a batch kernel, both with a plain C ABI.

Text IR is built directly (about 10x faster than llvmlite's IRBuilder on big tapes). Every value lives in an
SSA register; nothing is allocated. The C ABI, for a tape whose inputs are split into argument groups and whose
outputs are split into output groups (e.g. value | gradient of argument 0 | gradient of argument 1):

    int32_t NAME(const double *x0, ..., const double *params, double *out0, ...);
    int32_t NAME_batch(int64_t n, const double *X0, ..., const double *P, int64_t p_stride,
                       double *OUT0, ..., int32_t *status);

Arrays hold one contiguous row per point (row i of Xk starts at Xk + i * size_k); P advances by p_stride
doubles per point (0 shares one params row). A NULL out pointer skips that group; a NULL status skips the
per-point statuses. The return value is 0 when every guard held, else the point kernel returns 1 and the batch
kernel the number of points whose guards failed (their statuses are 1).
"""
from __future__ import annotations

import functools
import re

import numpy as np

from .. import sources
from ..table.ops import BY_CODE, OPS

from .batchloops import fast_batch, general_batch, vectorise_points
from .chunking import STACK_CELLS, work_pool, with_pooled_work_array, lower_chunked
from .stores import CONST_RUN, emit_stores
from .reroll import rerolled
from .loops import MAX_CELLS, MapNames, Plan, data_global, lower_map, pointers, used_outside
from ..ir.structure import MAP_ROW, map_runs, op_codes, records, scalar, walk
from ..transforms.kernelspec import KINDS
from .llvm_text import BLOCK, emit_op, literal as _literal
from ..ir.tape import Tape

# A point kernel of more than CUT_ABOVE records (instructions + guards + outputs) is cut into pieces of CHUNK
# records: compile time becomes linear and O2 affordable, but the loop over points of a batch can no longer be
# vectorised across points (it calls the pieces), so mid-size kernels stay whole (lj with 30 atoms: 16k-op
# gradient, batches 4-7x faster whole at O2).
CUT_ABOVE = 20000
LOOP_CUT = 200_000  # records (loop bodies once) up to which a kernel with loops keeps them, however large
CHUNK = 2000
REROLL_ABOVE = 2000  # records above which a scalar kernel's repeated steps compile as loops (``reroll``)
INLINE_LIMIT = 4000  # records up to which the point function is inlined into the batch loops
CALL_INLINE = 1000  # ... and into a loop over points that is not vectorised, or the native entry (see call_site)
MEMCPY = "declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)\ndeclare void @llvm.memset.p0.i64(ptr, i8, i64, i1)"


def _rows(tape: Tape) -> list:
    """The ops a tape uses, with the user-defined ops their definitions call (dependencies first)."""
    seen: dict = {}
    for c in op_codes(tape):
        _visit(BY_CODE[c], seen)
    return list(seen.values())


def _visit(row, seen: dict) -> None:
    """Add ``row`` after the ops it uses (a module-level function: a recursive closure is a reference cycle)."""
    if row.name not in seen:
        for dep in row.uses:
            _visit(OPS[dep], seen)
        seen[row.name] = row


_CALL = re.compile(r"call double @([\w.]+)\(([^)]*)\)")
_DEFINED = re.compile(r"define\b[^@\n]*@([\w.]+)\(")


def callee_declarations(rows) -> list[str]:
    """``declare`` lines for every function the rows' lowerings call, each with the argument count of its call
    sites (a row's own arity says nothing of the calls its lowering makes: logaddexp calls exp and log1p, an op may
    call ``@llvm.copysign.f64`` with two arguments). libm functions get the attributes that let LLVM treat them as
    pure; functions the rows define themselves (user-defined ops' helpers) are not declared."""
    defined = {m for row in rows for m in _DEFINED.findall(row.definition)}
    libm = {f for row in rows for f in row.libm}
    arity: dict[str, int] = {}
    for row in rows:
        for callee, args in _CALL.findall(row.llvm + "\n" + row.definition):
            n = args.count(",") + 1 if args.strip() else 0
            if arity.setdefault(callee, n) != n:
                raise ValueError(f"@{callee} is called with {arity[callee]} and with {n} arguments")
    unused = libm - set(arity)
    if unused:  # the signature comes from the call sites: a libm function no lowering calls has none
        raise ValueError(f"libm functions {sorted(unused)} are listed by a row whose lowering never calls them")
    lines = []
    for callee in sorted(set(arity) - defined):
        args = ", ".join(["double"] * arity[callee])
        attrs = " nounwind willreturn memory(none)" if callee in libm else ""
        lines.append(f"declare double @{callee}({args}){attrs}")
    return lines


def _declarations(tape: Tape) -> list[str]:
    used = _rows(tape)
    return callee_declarations(used) + [row.definition for row in used if row.definition]




def _instructions(tape: Tape, name: dict, body: list, maps: tuple | None = None) -> None:
    """Name the constants (as literals) and append every instruction; ``name`` maps slots to IR values.
    ``maps``: ``(plan, globals, prefix)`` to lower a tape's maps as loops (``tapead.loops``)."""
    slot = tape.first_const
    if isinstance(name, MapNames):  # constants are spelled where they are used
        slot += len(tape.consts)
    else:
        for v in tape.consts.tolist():
            name[slot] = _literal(v)
            slot += 1
    index = 0  # maps lowered so far (the Plan numbers them in tape order)
    for step in walk(tape):
        if step.map is not None:
            plan, globals_, prefix = maps
            lower_map(step.map, index, slot, name, plan, globals_, prefix, body)
            index += 1
            slot += step.end - step.start
            continue
        name[slot] = emit_op(step.row, [name[a] for a in step.args], slot, body)
        slot += 1
        if step.start % BLOCK == BLOCK - 1:  # a new basic block (O2 merges them back; see BLOCK)
            body.append(f"  br label %blk{slot}\nblk{slot}:")


def lower_function(tape: Tape, fname: str) -> str:
    """A scalar tape (scalar inputs, one output, no params) as ``define internal double @fname(double...)``."""
    name = {i: f"%a{i}" for i in range(tape.n_inputs)}
    body: list[str] = []
    _instructions(tape, name, body)
    params = ", ".join(f"double %a{i}" for i in range(tape.n_inputs))
    return "\n".join([f"define internal double @{fname}({params}) alwaysinline nounwind {{", "entry:"] + body
                     + [f"  ret double {name[int(tape.outputs[0])]}", "}"])


def kernel_records(tape: Tape) -> int:
    """Records a kernel emits: instructions (maps: their bodies), guards, and the outputs stored one by one
    (runs of map rows are one copy)."""
    if not tape.maps:
        return len(tape) + tape.n_outputs + len(tape.guards)
    in_rows = tape.code[np.clip(tape.outputs - tape.first_result, 0, None), 0] == MAP_ROW if len(tape.code) else 0
    stored = int(np.sum(~((tape.outputs >= tape.first_result) & in_rows)))
    return records(tape) + stored + len(tape.guards)


def _point_body(tape: Tape, in_groups, out_groups, prefix: str, globals_: list, pooled: bool = False,
                plan: Plan | None = None) -> list[str]:
    """Instructions of the point kernel after its entry label; the pointer arguments are %x<k>, %p, %o<k>.
    Constant tables the stores read are appended to ``globals_`` (module-level definitions)."""
    body = []
    name = {}
    slot = 0
    needed = None  # with maps, only the inputs scalar code or a copied source reads are loaded
    if tape.maps:
        plan = plan or Plan(tape, map_runs(tape), pointers(tape, in_groups))
        needed = used_outside(tape) | {s for copies in plan.copies.values() for s, _ in copies}
    for k, size in enumerate(in_groups):
        for j in range(size):
            if needed is not None and slot not in needed:
                slot += 1
                continue
            body.append(f"  %a{slot} = getelementptr inbounds double, ptr %x{k}, i64 {j}")
            body.append(f"  %s{slot} = load double, ptr %a{slot}")
            name[slot] = f"%s{slot}"
            slot += 1
    for j in range(tape.n_params):
        if needed is not None and slot not in needed:
            slot += 1
            continue
        body.append(f"  %a{slot} = getelementptr inbounds double, ptr %p, i64 {j}")
        body.append(f"  %s{slot} = load double, ptr %a{slot}")
        name[slot] = f"%s{slot}"
        slot += 1
    maps = None
    if tape.maps:
        name = MapNames(body, plan.cell, tape)
        for s in range(slot):
            if s in needed:
                name[s] = f"%s{s}"
        if not pooled:
            body.append(f"  %mem = alloca [{max(plan.cells, 1)} x double], align 64")
        maps = (plan, globals_, prefix)
    _instructions(tape, name, body, maps)
    status = "0"
    for i, (s, expected) in enumerate(tape.guards.tolist()):
        body.append(f"  %g{i} = fcmp {'oeq' if expected else 'une'} double {name[s]}, 0.0")
        body.append(f"  %gs{i} = select i1 %g{i}, i32 1, i32 {status}")
        status = f"%gs{i}"
    outs = tape.outputs.tolist()
    start = 0
    for k, size in enumerate(out_groups):
        body.append(f"  %null{k} = icmp eq ptr %o{k}, null")
        body.append(f"  br i1 %null{k}, label %skip{k}, label %store{k}")
        body.append(f"store{k}:")
        emit_stores(tape, name, outs[start:start + size], k, prefix, body, globals_)
        body.append(f"  br label %skip{k}")
        body.append(f"skip{k}:")
        start += size
    body.append(f"  ret i32 {status}")
    return body


def loop_form(tape: Tape, cut: int = CUT_ABOVE) -> Tape:
    """The tape ``lower`` compiles: a large scalar tape whose steps repeat re-rolled into loops (``reroll``)
    when that leaves a kernel of loops that stays whole, else the tape itself."""
    if tape.maps or kernel_records(tape) <= REROLL_ABOVE:
        return tape
    again = rerolled(tape)
    if again is getattr(tape, "tape", tape) or _lower_unrolled(again, kernel_records(again), cut):
        return tape
    return again


def flat_batches_pay(tape: Tape) -> bool:
    """Whether a tape with loops should also get an unrolled point function for its batch loops: when unrolled it
    stays whole (below CUT_ABOVE) and a loop over points vectorises across points (``vectorise_points``). lj with
    30 atoms: a batch of gradients runs ~2.5x faster through the unrolled function, 8 points per AVX-512 lane
    set, while single points run faster through the loops, which also compile in a fraction of the time."""
    if not tape.maps:  # a re-rolled scalar tape: its straight-line code is the unrolled copy
        return loop_form(tape) is not tape and kernel_records(tape) <= CUT_ABOVE and vectorise_points(tape)
    if sum(m.n * len(m.body) for m in tape.maps) > CUT_ABOVE:  # a lower bound of the unrolled size: never unroll
        return False  # a 500,000-iteration loop to find out (that took seconds and gigabytes)
    flat = scalar(tape, "batch kernel: is an unrolled copy small enough to vectorise across points?")
    return kernel_records(flat) <= CUT_ABOVE and vectorise_points(flat)


def _lower_unrolled(tape: Tape, size: int, cut: int) -> bool:
    """Whether a tape with loops is lowered unrolled (and cut into pieces): when its loops' work array is too
    big for one kernel, when its code outside the loops alone needs cutting, or beyond ``LOOP_CUT`` records.
    Otherwise large loop bodies stay loops: ten steps of a 128 x 128 stencil and their reverse are 40,000 records
    as loops and 1.5 million unrolled (54 s of compilation, against seconds)."""
    if sum(m.rows for m in tape.maps) > MAX_CELLS or size > LOOP_CUT:
        return True
    outside = int((tape.code[:, 0] >= 0).sum()) + _store_runs(tape.outputs) + len(tape.guards)
    return size > cut and outside > cut


def _store_runs(outputs: np.ndarray) -> int:
    """Stores the outputs cost at most: one per run of consecutive slots (a loop's rows are copied out by one
    memcpy per run; a 200 x 200 Hessian of sum rows is one run, not 40,000 stores)."""
    return int(np.count_nonzero(np.diff(outputs.astype(np.int64)) != 1)) + 1 if len(outputs) else 0


def lower(tape: Tape, name: str, in_groups=None, out_groups=None, fast_masks=(), chunk: int | None = None,
          flat_batches: bool = False) -> str:
    """LLVM IR text defining ``@name`` (one point), ``@name_batch`` (a native loop over points) and, for each
    mask in ``fast_masks``, ``@name_batch_<mask>`` (see ``fast_batch``). ``flat_batches``: the batch loops call
    an unrolled copy of a tape with loops (``flat_batches_pay``); results are the same bits (the same operations
    in the same order)."""
    cut, chunk = (CUT_ABOVE, CHUNK) if chunk is None else (chunk, chunk)
    original, tape = tape, loop_form(tape, cut)  # (a tape unrolled here is not re-rolled: its bodies are whole)
    size = kernel_records(tape)
    if tape.maps and _lower_unrolled(tape, size, cut):
        tape, original = scalar(tape, "kernel: too big for one function, lowered unrolled and cut into pieces"), None
        size = kernel_records(tape)
    in_groups = list(tape.input_sizes if in_groups is None else in_groups)
    out_groups = list([tape.n_outputs] if out_groups is None else out_groups)
    assert sum(in_groups) == tape.n_inputs and sum(out_groups) == tape.n_outputs
    xs = [f"ptr %x{k}" for k in range(len(in_groups))]
    os_ = [f"ptr %o{k}" for k in range(len(out_groups))]
    lines = _declarations(tape)
    # inlined into the batch loops while small; a large point function is compiled once and called by them (each
    # inlined copy costs LLVM the whole function again: a 22,000-output Jacobian took 3x as long)
    inline = "alwaysinline" if size <= INLINE_LIMIT else "noinline"
    lines.append(f"define i32 @{name}({', '.join(xs + ['ptr %p'] + os_)}) {inline} nounwind {{")
    tables: list[str] = []
    plan = Plan(tape, map_runs(tape), pointers(tape, in_groups), data=f"@{name}.data") if tape.maps else None
    cells = plan.cells if plan else 0
    if size > cut and not tape.maps:
        pieces, point = lower_chunked(tape, name, in_groups, out_groups, chunk,
                                      functools.partial(emit_stores, zero_runs=True))
        lines.extend(point)
        tables.extend(pieces)
    elif cells > STACK_CELLS:  # the loops' work array is large: taken from a per-kernel pool (chunking)
        inner = [f"define internal i32 @{name}.body({', '.join(xs + ['ptr %p', 'ptr %mem'] + os_)}) noinline "
                 "nounwind {", "entry:"] + _point_body(tape, in_groups, out_groups, name, tables, pooled=True, plan=plan) + ["}"]
        tables.extend(inner + work_pool(name, 8 * cells))
        args = ", ".join([f"ptr %x{k}" for k in range(len(in_groups))] + ["ptr %p", "ptr %w"] +
                         [f"ptr %o{k}" for k in range(len(out_groups))])
        lines.extend(with_pooled_work_array(name, 8 * cells, [f"  %st = call i32 @{name}.body({args})"], "%st"))
    else:
        lines.append("entry:")
        lines.extend(_point_body(tape, in_groups, out_groups, name, tables, plan=plan))
    lines.append("}")
    callee, batch_tape = name, tape
    if flat_batches and original is not None and flat_batches_pay(original):
        batch_tape = original if original is not tape else \
            scalar(tape, "batch kernel: an unrolled copy vectorises across points")
        callee = f"{name}.flat"
        tables.extend([f"define internal i32 @{callee}({', '.join(xs + ['ptr %p'] + os_)}) alwaysinline nounwind {{",
                       "entry:"] + _point_body(batch_tape, in_groups, out_groups, callee, tables) + ["}"])
    if plan is not None:
        tables.extend(data_global(plan))
    lines[:0] = tables + [MEMCPY]  # constant tables, pieces, and the memcpy/memset the stores may call
    vectorise = vectorise_points(batch_tape)
    inline = vectorise or kernel_records(batch_tape) <= CALL_INLINE
    if callee != name:  # the general loop (other output patterns, statuses) calls the loops' point function:
        # the same bits, without a third inlined copy of the unrolled body (lj, 30 atoms: 15,000 ops each)
        lines.extend(general_batch(name, name, in_groups, out_groups, size <= CALL_INLINE))
    else:
        lines.extend(general_batch(name, callee, in_groups, out_groups, inline))
    for mask in fast_masks:
        lines.extend(fast_batch(name, mask, in_groups, out_groups, vectorise, callee, inline))
    return "\n".join(lines) + "\n"


def lower_kernel(tape: Tape, spec) -> str:
    """LLVM IR text of the kernel a ``kernelspec.KernelSpec`` describes, for ``tape`` (the tape its kind
    compiles); the native entry point, if the spec has one, is ``native.lower_entry``'s."""
    return lower(tape, spec.name, spec.in_groups, spec.out_groups, fast_masks=spec.fast_masks,
                 flat_batches=spec.flat_batches)


def kernel_key(tape: Tape, spec) -> str:
    """What decides a kernel's object code besides the target: the generator, the tape with its ops' lowerings,
    the spec, and the functions a cached object must define (checked before cached code runs)."""
    return "\n".join([f"tapead kernel {generator_digest()} {tape_digest(tape)}", spec.key_text()] +
                     [f"define i32 @{s}(" for s in spec.symbols])


def export_module(parts: list, name: str, n_params: int) -> str:
    """LLVM IR text of an exported object: for each ``(tape, spec)`` the kernel with internal linkage and its
    public C entry points ``NAME_<kind>`` (the point kernel as is) and ``NAME_<kind>_batch`` (params one row per
    point); the helpers of user-defined ops are defined once."""
    declarations: list = []
    body: list = []
    helpers: dict = {}
    for tape, spec in parts:
        text = lower_kernel(tape, spec)
        for sym in (spec.name, spec.name + "_batch"):
            head = f"define i32 @{sym}("
            if text.count(head) != 1:
                raise AssertionError(f"unexpected kernel text for {sym}")
            text = text.replace(head, f"define internal i32 @{sym}(")
        lines = text.splitlines()
        declarations += [ln for ln in lines if ln.startswith("declare ") and ln not in declarations]
        current = None
        for ln in lines:
            if ln.startswith("declare "):
                continue
            if current is None and ln.startswith("define internal double @tapead_custom_"):
                current = [ln]
            elif current is not None:
                current.append(ln)
                if ln == "}":
                    helpers[current[0]] = "\n".join(current)
                    current = None
            else:
                body.append(ln)
        body += _public_wrappers(spec, name, n_params)
    return "\n".join(declarations + list(helpers.values()) + body) + "\n"


def _public_wrappers(spec, name: str, n_params: int) -> list[str]:
    public = f"{name}_{KINDS[spec.kind].public}"
    outs = [f"ptr %o{i}" for i in range(len(spec.out_groups))]
    args = ", ".join(["ptr %x", "ptr %p"] + outs)
    return [
        f"define i32 @{public}({args}) nounwind {{",
        f"  %r = call i32 @{spec.name}({args})",
        "  ret i32 %r", "}",
        f"define i32 @{public}_batch({', '.join(['i64 %n', 'ptr %X', 'ptr %P'] + outs)}) nounwind {{",
        f"  %r = call i32 @{spec.name}_batch({', '.join(['i64 %n', 'ptr %X', 'ptr %P', f'i64 {n_params}'] + outs)}, "
        "ptr null)",
        "  ret i32 %r", "}",
    ]


def generator_digest() -> str:
    """What, besides the tape, decides the IR text: the source of every backend module and of the kernel
    specification, and the size constants (a kernel cache keyed without generating the text must change when
    they do)."""
    from . import chunking, native, reroll
    return (f"{sources.digest('backend', 'transforms/kernelspec')} {CUT_ABOVE} {LOOP_CUT} {CHUNK} {CONST_RUN} "
            f"{INLINE_LIMIT} {CALL_INLINE} {REROLL_ABOVE} {reroll.MIN_STEPS} {reroll.MIN_ROWS} "
            f"{chunking.STACK_CELLS} {chunking.POOL} {native.LAYOUT}")


def tape_digest(tape: Tape) -> str:
    """The tape's content with the lowering of every op it uses (op codes are numbered per process)."""
    import hashlib
    h = hashlib.sha256()
    h.update(repr((tape.input_shapes, tape.param_shape, tape.output_shape)).encode())
    for a in (tape.code, tape.consts, tape.outputs, tape.guards):
        h.update(a.tobytes())
        h.update(b"|")
    for m in tape.maps:
        for part in [tape_digest(m.body).encode()] + m.digest_parts()[1:]:
            h.update(part)
            h.update(b"|")
    for row in _rows(tape):
        h.update(repr((row.code, row.name, row.arity, row.llvm, row.libm, row.definition, row.uses)).encode())
    return h.hexdigest()

