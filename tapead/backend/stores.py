"""Output stores of a point kernel: one store per output, or one copy per run (constants, a loop's rows)."""
from __future__ import annotations

import math

import numpy as np

from ..ir.tape import Tape

CONST_RUN = 8  # constant outputs in a row stored by one memcpy from a table


def emit_stores(tape: Tape, name: dict, outs: list, k: int, prefix: str, body: list, globals_: list,
            zero_runs: bool = False) -> None:
    """Store output group ``k``. Runs of CONST_RUN or more constant outputs (a quadratic's Hessian, the zero
    blocks of a Jacobian) are written by one memset (runs of +0.0) or one memcpy from a constant table instead of
    one store each: LLVM's cost grows with the number of instructions and IR text, and n^2 constant stores took
    it minutes at n = 400. Memsets only in the pieces of a cut kernel (``zero_runs``): inlined into a whole
    kernel's batch loops at O2, many of them cost LLVM more than the tables do (n = 100: 1.7 s against 0.1 s)."""
    lo, hi = tape.first_const, tape.first_result
    consts = tape.consts
    cells = getattr(name, "cells", None)  # map rows in the loops' work array: runs of them are one memcpy
    slots = np.asarray(outs, np.int64)
    # where each run starting at an output ends (numpy, not a Python step per output: 10^5 gradient entries)
    if cells is not None:
        at = np.full(len(slots), -1, np.int64)
        inside = (slots >= 0) & (slots < len(cells.at))
        at[inside] = cells.at[slots[inside]]
        row_end = _run_ends((at[1:] == at[:-1] + 1) & (at[:-1] >= 0))
    const_end = _run_ends(((slots >= lo) & (slots < hi))[1:] & ((slots >= lo) & (slots < hi))[:-1])
    is_const = (slots >= lo) & (slots < hi)
    j = 0
    while j < len(outs):
        if cells is not None and at[j] >= 0:
            end = int(row_end[j])
            if end - j >= CONST_RUN:
                body.append(f"  %q{k}.{j} = getelementptr inbounds double, ptr %o{k}, i64 {j}")
                body.append(f"  %q{k}.{j}m = getelementptr inbounds double, ptr %mem, i64 {int(at[j])}")
                body.append(f"  call void @llvm.memcpy.p0.p0.i64(ptr %q{k}.{j}, ptr %q{k}.{j}m, i64 {8 * (end - j)}, "
                            "i1 false)")
                j = end
                continue
        end = int(const_end[j]) if is_const[j] else j
        if end - j >= CONST_RUN:
            zero = [zero_runs and consts[s - lo] == 0.0 and not math.copysign(1.0, consts[s - lo]) < 0
                    for s in outs[j:end]]
            for a, b, zeros in _segments(zero):
                a, b = j + a, j + b
                if zeros:
                    body.append(f"  %q{k}.{a} = getelementptr inbounds double, ptr %o{k}, i64 {a}")
                    body.append(f"  call void @llvm.memset.p0.i64(ptr %q{k}.{a}, i8 0, i64 {8 * (b - a)}, i1 false)")
                elif b - a >= CONST_RUN:  # the values as one byte string (LLVM parses it far faster than literals)
                    table = f"@{prefix}.c{k}.{a}"
                    raw = consts[np.asarray(outs[a:b], np.int64) - lo].astype("<f8").tobytes()
                    globals_.append(f"{table} = private unnamed_addr constant [{len(raw)} x i8] "
                                    f"c\"\\{raw.hex(chr(92))}\", align 8")
                    body.append(f"  %q{k}.{a} = getelementptr inbounds double, ptr %o{k}, i64 {a}")
                    body.append(f"  call void @llvm.memcpy.p0.p0.i64(ptr %q{k}.{a}, ptr {table}, i64 {8 * (b - a)}, "
                                "i1 false)")
                else:
                    _each(name, outs, k, a, b, body)
            j = end
            continue
        end = max(end, j + 1)
        _each(name, outs, k, j, end, body)
        j = end


def _run_ends(linked: np.ndarray) -> np.ndarray:
    """For each position ``j`` of ``len(linked) + 1`` outputs, the end of the run from ``j`` on in which each
    output is linked to the next (``linked[i]``: output ``i`` and ``i + 1`` continue one run)."""
    n = len(linked) + 1
    breaks = np.append(np.flatnonzero(~linked) + 1, n)
    return breaks[np.searchsorted(breaks, np.arange(n), side="right")]


def _each(name: dict, outs: list, k: int, a: int, b: int, body: list) -> None:
    for i in range(a, b):
        body.append(f"  %q{k}.{i} = getelementptr inbounds double, ptr %o{k}, i64 {i}")
        body.append(f"  store double {name[outs[i]]}, ptr %q{k}.{i}")


def _segments(zero: list) -> list:
    """``(start, end, all_zero)`` pieces of a run of constants: runs of CONST_RUN or more +0.0 apart (memset), the
    rest between them."""
    pieces, start, i, n = [], 0, 0, len(zero)
    while i < n:
        if zero[i]:
            z = i
            while z < n and zero[z]:
                z += 1
            if z - i >= CONST_RUN:
                if i > start:
                    pieces.append((start, i, False))
                pieces.append((i, z, True))
                start = z
            i = z
        else:
            i += 1
    if start < n:
        pieces.append((start, n, False))
    return pieces
