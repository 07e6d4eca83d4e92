"""Loops over the points of a batch: the C ABI's ``NAME_batch`` and the specialised ``NAME_batch_<mask>`` loops.

Each calls the point function (inlined while it is small) once per row; whether LLVM may vectorise the loop
across points is decided by ``vectorise_points``.
"""
from __future__ import annotations

import zlib

from ..transforms.kernelspec import fast_batch_name
from ..ir.tape import Tape


def vectorise_points(tape: Tape) -> bool:
    """Whether the loop over points should be vectorised across points. Lanes gather every input and scatter
    every output with a stride of one row, which pays only when there are few of them or much arithmetic per
    value moved (measured: lj, 88 ops per input/output, runs 2x faster vectorised; rosenbrock, 2.7, 3x slower)."""
    moved = tape.n_inputs + tape.n_params + tape.n_outputs
    return moved <= 32 or len(tape) >= 20 * moved


def _row_pointers(lines: list, in_groups, out_groups, mask) -> list[str]:
    """Pointers to row ``%i`` of every batch array, as call arguments. ``mask`` None: an output may be NULL at
    run time (and stays NULL); else only the masked outputs are passed, the others are NULL constants."""
    args = []
    for k, size in enumerate(in_groups):
        lines.append(f"  %xo{k} = mul i64 %i, {size}\n  %xp{k} = getelementptr inbounds double, ptr %X{k}, i64 %xo{k}")
        args.append(f"ptr %xp{k}")
    lines.append("  %po = mul i64 %i, %ps\n  %pp = getelementptr inbounds double, ptr %P, i64 %po")
    args.append("ptr %pp")
    for k, size in enumerate(out_groups):
        if mask is not None and not mask[k]:
            args.append("ptr null")
            continue
        lines.append(f"  %oo{k} = mul i64 %i, {size}\n  %og{k} = getelementptr inbounds double, ptr %O{k}, i64 %oo{k}")
        if mask is None:
            lines.append(f"  %on{k} = icmp eq ptr %O{k}, null\n  %op{k} = select i1 %on{k}, ptr null, ptr %og{k}")
            args.append(f"ptr %op{k}")
        else:
            args.append(f"ptr %og{k}")
    return args


def fast_batch(name: str, mask, in_groups, out_groups, vectorise: bool = True, callee: str | None = None,
               inline: bool = True) -> list[str]:
    """``i32 @name_batch_<mask>(i64 n, ptr X.., ptr P, i64 ps, ptr O..)``: only the output groups in ``mask``
    (each nonnull), no per-point statuses; returns the number of points whose guards failed. Nothing in its loop
    is conditional, so LLVM vectorises it across points (the general loop's NULL checks made it predicate every
    load and store). ``inline`` False keeps the point function a call (``call_site``)."""
    bx = [f"ptr noalias %X{k}" for k in range(len(in_groups))]
    bo = [f"ptr noalias nonnull %O{k}" for k, m in enumerate(mask) if m]
    lines = [f"define i32 @{fast_batch_name(name, mask)}({', '.join(['i64 %n'] + bx + ['ptr %P', 'i64 %ps'] + bo)})"
             " nounwind {", "entry:\n  %empty = icmp sle i64 %n, 0\n  br i1 %empty, label %done, label %loop",
             "loop:", "  %i = phi i64 [0, %entry], [%next, %loop]", "  %bad = phi i32 [0, %entry], [%bad2, %loop]"]
    args = _row_pointers(lines, in_groups, out_groups, mask)
    lines.append(f"  %st = call i32 @{callee or name}({', '.join(args)}){call_site(inline)}")
    lines.append("  %failed = icmp ne i32 %st, 0\n  %inc = zext i1 %failed to i32\n  %bad2 = add i32 %bad, %inc")
    lid = _loop_id(name, mask)
    lines.append("  %next = add i64 %i, 1\n  %more = icmp slt i64 %next, %n")
    lines.append("  br i1 %more, label %loop, label %done" + ("" if vectorise else f", !llvm.loop !{lid}"))
    lines.append("done:\n  %r = phi i32 [0, %entry], [%bad2, %loop]\n  ret i32 %r\n}")
    if not vectorise:  # keep the loop scalar (see vectorise_points)
        lines.append(f"!{lid} = distinct !{{!{lid}, !{lid + 1}, !{lid + 2}}}")
        lines.append(f"!{lid + 1} = !{{!\"llvm.loop.vectorize.width\", i32 1}}")
        lines.append(f"!{lid + 2} = !{{!\"llvm.loop.interleave.count\", i32 1}}")
    return lines


def _loop_id(name: str, mask) -> int:
    """A metadata number unique to this loop (deterministic, so the IR text and its cache key are too)."""
    return (zlib.crc32((name + "".join("1" if m else "0" for m in mask)).encode()) % 10_000_000) * 4


def call_site(inline: bool) -> str:
    """The attribute of a call of a point function: none (inlined where its definition says so), or
    ``noinline``. A large body inlined into a loop that is not vectorised saves one call per point and costs
    LLVM the whole body once more per loop (a 2,000-record gradient: four copies, 3.8 s of O2)."""
    return "" if inline else " noinline"


def general_batch(name: str, callee: str, in_groups, out_groups, inline: bool = True) -> list[str]:
    """``i32 @name_batch(i64 n, ptr X.., ptr P, i64 ps, ptr O.., ptr status)``: the loop over points calling
    ``@callee`` for each row; pointers advance one row per point, NULL outputs stay NULL, a NULL status skips the
    per-point statuses; returns the number of points whose guards failed."""
    lines: list[str] = []
    bx = [f"ptr %X{k}" for k in range(len(in_groups))]
    bo = [f"ptr %O{k}" for k in range(len(out_groups))]
    lines.append(f"define i32 @{name}_batch({', '.join(['i64 %n'] + bx + ['ptr %P', 'i64 %ps'] + bo)}, "
                 "ptr %status) nounwind {")
    lines.append("entry:\n  %empty = icmp sle i64 %n, 0\n  br i1 %empty, label %done, label %loop")
    lines.append("loop:")
    lines.append("  %i = phi i64 [0, %entry], [%next, %cont]")
    lines.append("  %bad = phi i32 [0, %entry], [%bad2, %cont]")
    args = _row_pointers(lines, in_groups, out_groups, None)
    lines.append(f"  %st = call i32 @{callee}({', '.join(args)}){call_site(inline)}")
    lines.append("  %sn = icmp eq ptr %status, null\n  br i1 %sn, label %cont, label %keep")
    lines.append("keep:\n  %sp = getelementptr inbounds i32, ptr %status, i64 %i\n  store i32 %st, ptr %sp"
                 "\n  br label %cont")
    lines.append("cont:")
    lines.append("  %failed = icmp ne i32 %st, 0\n  %inc = zext i1 %failed to i32\n  %bad2 = add i32 %bad, %inc")
    lines.append("  %next = add i64 %i, 1\n  %more = icmp slt i64 %next, %n\n  br i1 %more, label %loop, label %done")
    lines.append("done:\n  %r = phi i32 [0, %entry], [%bad2, %cont]\n  ret i32 %r\n}")
    return lines


def scatter_add() -> str:
    """``tapead_scatter(n, vals, idx, out)``: ``out[idx[i]] += vals[i]`` for i in order (assembly's scatter of
    element gradients into the global vector, in element order so the bits never depend on threads)."""
    return """
define void @tapead_scatter(i64 %n, ptr %vals, ptr %idx, ptr %out) nounwind {
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %done, label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %loop]
  %vp = getelementptr inbounds double, ptr %vals, i64 %i
  %v = load double, ptr %vp
  %ip = getelementptr inbounds i64, ptr %idx, i64 %i
  %j = load i64, ptr %ip
  %op = getelementptr inbounds double, ptr %out, i64 %j
  %o = load double, ptr %op
  %s = fadd double %o, %v
  store double %s, ptr %op
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}
"""
