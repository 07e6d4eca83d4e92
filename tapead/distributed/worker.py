"""What a task of a lazy (Dask) graph runs on a worker: tape-file bytes in, the local method's result out.

A task never carries the user's Python function: it carries a ``Shipment`` (tape-file bytes, validated on
load like any file; the derived tape the method needs, made once on the client; the modules defining any custom
ops it uses) and calls the same ``Tape`` method a local call runs, on its chunk. Each process keeps the tapes it
loaded in a memo keyed by their content hash (the SHA-256 trailer of the file), so their compiled kernels live
as long as the process: a graph of many tasks loads and compiles once per worker (the disk cache also serves
later processes). Tasks are pure functions of their inputs, so retries after a lost worker give the same bits.
This module needs numpy and tapead only.
"""
from __future__ import annotations

import importlib
import threading
import time
from typing import NamedTuple

import numpy as np

from ..table import ops
from ..errors import BranchError, TapeFormatError
from ..ir.store import from_bytes

MEMO_LIMIT = 64  # tapes kept per process (oldest dropped first; a dropped tape is loaded again when needed)
_lock = threading.RLock()
_tapes: dict = {}  # SHA-256 trailer of the tape file -> the loaded tape (with its kernels)
_counts = {"loads": 0, "tasks": 0, "load_seconds": 0.0}


class Shipment(NamedTuple):
    """Everything a worker needs to run one tape method: data only, no Python code."""

    tape: bytes  # the tape file of the recorded tape
    key: tuple | None  # where the method looks up its derived tape (None: it needs none)
    derived: bytes | None  # that derived tape's file, made on the client
    modules: tuple  # (custom op name, module defining it) pairs for the custom ops these tapes use
    function: type  # tapead.Function, which evaluates a loaded tape (named here: this module cannot import it)


def _define(modules: tuple) -> None:
    """Make the custom ops the tapes use known in this process, by importing the modules that define them."""
    from ..backend.custom import CustomOp
    for name, module in modules:
        if name in ops.OPS:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise TapeFormatError(f"the tape uses custom op {name!r}, defined in module {module!r}, which this "
                                  f"worker cannot import ({e}): install that module on every worker") from None
        for obj in vars(mod).values():
            if isinstance(obj, CustomOp) and obj.name == name:
                obj.row or obj._register()
        if name not in ops.OPS:
            raise TapeFormatError(f"the tape uses custom op {name!r}, which module {module!r} does not define at "
                                  "its top level in this worker: define custom ops at module level in a module "
                                  "every worker can import")


def _load(data: bytes, function: type):
    tape = _tapes.get(data[-32:])
    if tape is None:
        start = time.perf_counter()
        tape = _tapes[data[-32:]] = function(from_bytes(data))
        while len(_tapes) > MEMO_LIMIT:
            del _tapes[next(iter(_tapes))]
        _counts["loads"] += 1
        _counts["load_seconds"] += time.perf_counter() - start
    return tape


def tape_of(s: Shipment):
    """The tape a shipment describes, loaded once per process, with its derived tape installed where the
    method looks for it (so the worker never derives it again)."""
    with _lock:
        _define(s.modules)
        tape = _load(s.tape, s.function)
        if s.key is None:
            return tape
        if s.key[0] == "derived":  # the tape the gradient kernel compiles
            if s.key[1] not in tape.state.programs:
                tape.state.programs[s.key[1]] = _load(s.derived, s.function).tape
        elif s.key not in tape.state.derived:
            tape.state.derived[s.key] = _load(s.derived, s.function)
        return tape


def stats() -> dict:
    """This process's counters: tapes loaded, tasks run, kernels compiled (or read from the disk cache)."""
    with _lock:
        tapes = list(_tapes.values())
        kernels = sum(len(t.state.kernels) for t in tapes)
        return dict(_counts, kernels=kernels)


def reset() -> None:
    """Forget every loaded tape and zero the counters (tests and benchmarks start from a cold process)."""
    with _lock:
        _tapes.clear()
        _counts.update(loads=0, tasks=0, load_seconds=0.0)


def warm(s: Shipment, method: str, *args, settle: bool = False, **kw) -> dict:
    """Load a shipment and call its method once now, e.g. ``client.run(warm, s, "gradient", x[None])`` before a
    large graph: returns the seconds this process spent loading, on the call (compiling or reading the kernel
    from the disk cache) and, with ``settle``, until background O2 kernels were swapped in."""
    t0 = time.perf_counter()
    tape = tape_of(s)
    t1 = time.perf_counter()
    getattr(tape, method)(*args, **kw)
    t2 = time.perf_counter()
    if settle:
        for t in threading.enumerate():
            if t.name == "tapead-O2":
                t.join()
    return {"load_s": t1 - t0, "first_call_s": t2 - t1, "o2_swap_s": time.perf_counter() - t2}


def _where(block_id: tuple, where: tuple) -> str:
    s = where[0] if where else None
    span = f" (points {s.start}..{s.stop - 1})" if isinstance(s, slice) and s.start is not None else ""
    return f"chunk {block_id[0] if block_id else 0}{span}"


def _call(s: Shipment, method: str, blocks: tuple, layout: tuple, options: dict, block_id, where):
    """Run ``tape.<method>`` on one chunk; a changed path names the chunk (no function here to record it)."""
    tape = tape_of(s)
    args, kw = [], dict(options)
    for name, block in zip(layout, blocks):
        if name == "x":
            args.append(block)
        elif name.startswith("v"):  # one direction per argument: v0, v1, ...
            kw.setdefault("v", []).append(block)
        else:
            kw[name] = block
    if "v" in kw:
        kw["v"] = kw["v"][0] if len(kw["v"]) == 1 else tuple(kw["v"])
    with _lock:
        _counts["tasks"] += 1
    try:
        return getattr(tape, method)(*args, **kw)
    except BranchError as e:
        raise BranchError(f"{_where(block_id, where)}: {e}. Workers run the shipped tape, never the Python "
                          "function: evaluate these points locally (tape.gradient(...) on numpy arrays "
                          "follows the function's other paths) or record it branch-free with tapead.where"
                          ) from None


def _leaves(r, n: int) -> list:
    return [a for x in r for a in _leaves(x, n)] if isinstance(r, tuple) else [np.asarray(r).reshape(n, -1)]


def block(s: Shipment, method: str, layout: tuple, options: dict, flat: bool, *rest):
    """One task: the method on one chunk. ``rest`` holds the blocks (in ``layout`` order), the chunk's block id
    and its point range. With ``flat``, every output of the method is concatenated per point (n, total)."""
    *blocks, block_id, where = rest
    r = _call(s, method, tuple(blocks), layout, options, block_id, where)
    if not flat:
        return r
    n = len(blocks[0])
    return np.concatenate(_leaves(r, n), axis=1)


def piece(flat: np.ndarray, offset: int, size: int, shape: tuple) -> np.ndarray:
    """One output of a several-output method, cut from the chunk's concatenated outputs."""
    return np.ascontiguousarray(flat[:, offset:offset + size]).reshape((len(flat),) + tuple(shape))


def assembly_part(s: Shipment, method: str, layout: tuple, options: dict, *rest):
    """One task of an assembly: this chunk's partial (gradient (1, M), value (1,), Hessian COO keys/values)."""
    *blocks, block_id, where = rest
    r = _call(s, method, tuple(blocks), layout, options, block_id, where)
    if method == "assemble_gradient":
        return r.reshape(1, -1)
    if method == "assemble_value":
        return np.array([r])
    rows, cols, vals = r
    return rows * options["M"] + cols, vals


def merge_coo(*parts):
    """Sum several COO partials ``(keys, values)`` (key = row * M + col): sorted keys, duplicates summed in
    the order given, so a fixed tree of merges gives the same bits on any cluster."""
    keys = np.concatenate([p[0] for p in parts])
    vals = np.concatenate([p[1] for p in parts])
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(inverse.ravel(), weights=vals, minlength=len(uniq))


def coo(part, M: int) -> tuple:
    """``(rows, cols, values)`` from merged keys and values (the format of ``Tape.assemble_hessian``)."""
    keys, vals = part
    return keys // M, keys % M, vals
