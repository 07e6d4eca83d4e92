"""Changed paths are never silent: what a call does when a tape's guards fail at some points.

A tape records one path through the user's Python control flow; its guards say where that path is valid.
When a kernel reports a flipped guard, the affected points are answered by another path of the same function:
a known path whose guards hold there (compiled paths run natively on the whole subset of such points, rare ones
in the interpreter), or else a fresh recording of the function at that point. A path is compiled once it has
answered COMPILE_AFTER points. With ``on_branch="raise"``, or for a tape without its Python function, a
BranchError names the comparison and its source line instead.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from ..errors import BranchError
from ..ir.interpret import interpret
from ..table.ops import BY_CODE
from .derived_cache import kind_tape
from ..ir.tape import Tape

COMPILE_AFTER = 3  # points answered by a path before it gets compiled kernels


@dataclass
class Path:
    fun: object  # the Function recorded along this path
    hits: int = 0
    compiled: bool = False


@dataclass
class Paths:
    """The other paths of one recorded function, and counters for ``fun.stats``."""

    paths: list = field(default_factory=list)
    stats: dict = field(default_factory=lambda: {"records": 0, "compiles": 0, "native_points": 0,
                                                 "interpreted_points": 0})
    lock: threading.RLock = field(default_factory=threading.RLock)  # one fun may serve several threads


_new_paths = threading.Lock()


def paths_of(fun) -> Paths:
    if fun.state.paths is None:
        with _new_paths:
            if fun.state.paths is None:
                fun.state.paths = Paths()
    return fun.state.paths


def stats(fun) -> dict:
    """Re-records, compiles of other paths, points answered natively or interpreted by other paths."""
    p = paths_of(fun)
    return dict(p.stats, paths=1 + len(p.paths))


def _row(b, i):
    """Arguments (as recorded shapes) and params of point ``i`` of a bound call (``i`` None: the point)."""
    if i is None:
        return list(b.xs), b.p
    return [x[i] for x in b.xs], (b.p[i] if b.p_stride else b.p)


def _flat(args, p, fun):
    x = np.concatenate([np.ravel(a) for a in args]).reshape(1, -1) if args else np.zeros((1, 0))
    return x, (None if p is None else np.reshape(p, (1, -1)))


def failing_guard(fun, args, p) -> str:
    """Which guard fails at this point, as the comparison's listing and the source line that made it."""
    tape = fun.tape
    probe = tape.replace(outputs=tape.guards[:, 0], output_shape=(len(tape.guards),), guards=np.zeros((0, 2)))
    values, _ = interpret(probe, *_flat(args, p, fun))
    sites = fun.guard_sites or [""] * len(tape.guards)
    for (slot, expected), v, site in zip(fun.guards.tolist(), values[0], sites):
        if (v != 0.0) != bool(expected):
            code, *a = tape.code[slot - tape.first_result].tolist()
            row = BY_CODE[code]
            listing = f"%{slot} = {row.name} " + " ".join(tape.slot_name(s) for s in a[:row.arity])
            return (f"the comparison `{listing}`" + (f" at {site}" if site else "")
                    + f" was {bool(expected)} when recorded and is {not expected} here")
    return "a guard failed"


def _raise(fun, b, i) -> None:
    _raise_at(fun, *_row(b, i))


def program(fun, kind: str) -> Tape:
    """The tape a kernel of ``kind`` (``kernelspec.KINDS``) compiles for a Function: its own tape for 'value',
    else the tape that kind derives from it (once, or read from the disk cache)."""
    if kind == "value":
        return fun.tape
    derived = fun.state.programs.get(kind)
    if derived is None:
        derived = fun.state.programs.setdefault(kind, kind_tape(fun.tape, kind))
    return derived


def _interpret_into(path: Path, kind: str, args, p, outs: list, i) -> bool:
    """Evaluate one point on ``path`` with the interpreter; False if its guards do not hold there."""
    values, ok = interpret(program(path.fun, kind), *_flat(args, p, path.fun))
    if not ok[0]:
        return False
    start = 0
    sizes = [path.fun.n_outputs] if kind == "value" else [1] + list(path.fun.input_sizes)
    for o, size in zip(outs, sizes):
        if o is not None:
            target = o.reshape(-1) if i is None else o.reshape(o.shape[0], -1)[i]
            target[...] = values[0, start:start + size]
        start += size
    return True


def redo(fun, kind: str, b, outs: list, status, run) -> None:
    """Answer the points whose guards failed (``status``: int for a point, per-point array for a batch)."""
    rows = [None] if b.n is None else np.flatnonzero(status.astype(bool))  # (bools: 8x faster to scan)
    if fun.on_branch != "retape" or fun.fn is None:
        _raise(fun, b, rows[0])
    known = paths_of(fun)
    with known.lock:
        _redo(fun, known, kind, b, outs, rows, run)


def _redo(fun, known: Paths, kind: str, b, outs: list, rows, run) -> None:
    """``rows``: [None] for a point, else an index array of the batch points still to answer."""
    rows = _native(known, kind, b, outs, rows, run)
    while len(rows):
        i, rows = rows[0], rows[1:]
        args, p = _row(b, i)
        for path in known.paths:
            if _interpret_into(path, kind, args, p, outs, i):
                break
        else:
            path = _record_path(fun, known, args, p)
            if not _interpret_into(path, kind, args, p, outs, i):
                raise BranchError("the function took different paths at the same input (is it random or "
                                  "stateful between calls?)")
        known.stats["interpreted_points"] += 1
        path.hits += 1
        if path.hits >= COMPILE_AFTER and not path.compiled:
            path.compiled = True
            known.stats["compiles"] += 1
            rows = _native(known, kind, b, outs, rows, run)
    known.paths.sort(key=lambda q: -q.hits)


def _native(known: Paths, kind: str, b, outs: list, rows, run):
    """Run the failing points through every compiled path, each path's batch kernel on the points no earlier
    path answered (one native pass per path, no per-point Python); returns the rows still unanswered."""
    for path in known.paths:
        if not path.compiled or not len(rows):
            continue
        if b.n is None:
            if run(path.fun, kind, b, outs) == 0:
                path.hits += 1
                known.stats["native_points"] += 1
                return []
            continue
        idx = rows
        sub = b._replace(xs=[np.take(x, idx, axis=0) for x in b.xs], n=len(idx),
                         p=np.take(b.p, idx, axis=0) if b.p_stride else b.p)
        sub_outs = [None if o is None else np.empty((len(idx),) + o.shape[1:]) for o in outs]
        st = run(path.fun, kind, sub, sub_outs)
        if isinstance(st, np.ndarray):
            ok = st == 0
            done, rows, sub_outs = idx[ok], idx[~ok], [None if so is None else so[ok] for so in sub_outs]
        else:
            done, rows = idx, idx[:0]
        for o, so in zip(outs, sub_outs):
            if o is not None:
                o[done] = so
        path.hits += len(done)
        known.stats["native_points"] += len(done)
    return rows


def path_at(fun, args, p) -> "Function":
    """The fun of the path the function takes at one point: this fun, a known path, or a new recording."""
    x, pp = _flat(args, p, fun)
    if interpret(fun.tape, x, pp)[1][0]:
        return fun
    if fun.on_branch != "retape" or fun.fn is None:
        _raise_at(fun, args, p)
    known = paths_of(fun)
    with known.lock:
        return _path_at(fun, known, x, pp, args, p)


def _path_at(fun, known: Paths, x, pp, args, p) -> "Function":
    for path in known.paths:
        if interpret(path.fun.tape, x, pp)[1][0]:
            path.hits += 1
            return path.fun
    path = _record_path(fun, known, args, p)
    path.hits += 1
    return path.fun


def _record_path(fun, known: Paths, args, p) -> Path:
    """Record the function along the path it takes at this point and add it to the known paths."""
    path = Path(fun.recorded_at(args, p))
    known.stats["records"] += 1
    if path.fun.output_shape != fun.output_shape:
        raise BranchError(f"the function returns shape {path.fun.output_shape} on this path and "
                          f"{fun.output_shape} on the recorded one; outputs must keep one shape")
    known.paths.append(path)
    return path


def _raise_at(fun, args, p) -> None:
    why = failing_guard(fun, args, p)
    if fun.fn is None:
        raise BranchError(f"{why}. This fun has no Python function to record the new path (it was loaded, "
                          "unpickled or derived); record the function again at this input")
    raise BranchError(f"{why}: the function takes another path here. Record with on_branch='retape' to follow "
                      "it automatically, or write the choice branch-free with tapead.where")
