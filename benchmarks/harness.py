"""Timing on a noisy shared machine: candidates timed alternately (round-robin), median of loops sized to a target.

A ``Candidate`` is a zero-argument callable doing one call plus how many points that call covers. ``measure``
sizes a loop per candidate to about ``target`` seconds, then runs ``repeats`` rounds in which every candidate
times its loop once (the order rotating between rounds), and returns the median seconds per point.
"""
from __future__ import annotations

import functools
import inspect
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import cycle
from typing import Any, Callable

import numpy as np

from .cases import BATCH_TASKS


@dataclass
class Candidate:
    """One contender for one (function, task): ``run()`` does one call covering ``points`` points."""

    name: str
    run: Callable[[], Any]
    points: int = 1
    result: Callable[[], np.ndarray] | None = None  # the output of the last call, for the correctness check
    note: str = ""
    loops: int = 0
    samples: list[float] = field(default_factory=list)  # seconds per point, one per round

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def _loop_seconds(run: Callable[[], Any], loops: int) -> float:
    t0 = time.perf_counter()
    for _ in range(loops):
        run()
    return time.perf_counter() - t0


def calibrate(c: Candidate, target: float) -> None:
    """Warm up and choose the loop count so that one timed loop lasts about ``target`` seconds."""
    c.run()
    loops = 1
    while True:
        t = _loop_seconds(c.run, loops)
        if t >= target / 4 or loops >= 1 << 24:
            break
        loops *= 4 if t < target / 40 else 2
    c.loops = max(1, round(loops * target / max(t, 1e-9)))


def measure(candidates: list[Candidate], repeats: int, target: float) -> None:
    """Fill ``samples`` of every candidate: ``repeats`` round-robin rounds, rotating the starting candidate."""
    for c in candidates:
        calibrate(c, target)
    k = len(candidates)
    for r in range(repeats):
        for i in range(k):
            c = candidates[(i + r) % k]
            c.samples.append(_loop_seconds(c.run, c.loops) / (c.loops * c.points))


# ---- tapead and limit candidates ---------------------------------------------------------------------------


def _tapead_call(tape, task: str) -> Callable | None:
    """The tape method for ``task`` (None when this tapead has no such method)."""
    name = {"grad": "gradient", "grad_batch": "gradient", "grad_batch_threads": "gradient", "primal_batch": "value",
            "jacobian": "jacobian", "hessian": "hessian"}[task]
    return getattr(tape, name, None)


def out_shape(case, task: str, n: int) -> tuple[int, ...]:
    """Shape of the result of ``task`` (``n`` rows for the batch tasks)."""
    size = case.x0.size
    return {"grad": (size,), "grad_batch": (n, size), "grad_batch_threads": (n, size),
            "primal_batch": (n,) + tuple(case.value_shape), "jacobian": (size, size),
            "hessian": (size, size)}[task]


def wait_for_background_compiles(tape) -> None:
    """Let tapead finish compiling optimised kernels in the background (they would steal CPU from timing)."""
    try:
        from tapead.runtime.calls import wait_for_upgrades
    except ImportError:
        return
    wait_for_upgrades(tape)


def tapead_candidates(tape, case, task: str, X: np.ndarray, threads: int = 1,
                      fresh_pool: int = 64) -> tuple[list[Candidate], str]:
    """``tapead`` (same input array every call) and, for one point, ``tapead (fresh x)`` (a new array each call).

    Returns the candidates and a note (non-empty when the task is not available in this tapead).
    """
    method = _tapead_call(tape, task)
    if method is None:
        return [], f"this tapead has no Tape.{'jacobian' if task == 'jacobian' else 'hessian'} method"
    batch = task in BATCH_TASKS
    if batch and "threads" in inspect.signature(method).parameters:
        method = functools.partial(method, threads=threads)
    elif batch and threads > 1:
        method = _threaded(method, threads)
    shape = out_shape(case, task, X.shape[0])
    out = np.empty(shape)
    x = case.x0.copy()
    try:
        method(X if batch else x, out=out)
    except TypeError:  # a method without out=: time it returning fresh arrays
        out = None
    wait_for_background_compiles(tape)
    # once compiled, the method may be the kernel's native method (an attribute of the tape), as users call it
    method = _tapead_call(tape, task)
    if batch and "threads" in inspect.signature(method).parameters:
        method = functools.partial(method, threads=threads)
    elif batch and threads > 1:
        method = _threaded(method, threads)
    if out is None:
        arg, last = (X if batch else x), {}
        warm = Candidate("tapead", lambda: last.__setitem__("r", method(arg)), len(X) if batch else 1,
                         lambda: np.asarray(last["r"]))
        return [warm], "called without out= (no out parameter)"
    if batch:
        return [Candidate("tapead", lambda: method(X, out=out), X.shape[0], lambda: out,
                          note=f"{threads} threads" if threads > 1 else "")], ""
    warm = Candidate("tapead", lambda: method(x, out=out), 1, lambda: out)
    pool = cycle([case.x0.copy() for _ in range(fresh_pool)])
    fresh = Candidate("tapead (fresh x)", lambda: method(next(pool), out=out), 1, lambda: out,
                      note=f"a different input array each call ({fresh_pool} rotating copies)")
    found = [warm, fresh]
    if task == "grad" and hasattr(tape, "native"):
        native = tape.native("gradient")  # the compiled entry point itself: (x, params, value_out, grad_out)
        found.append(Candidate("tapead native", lambda: native(x, None, None, out), 1, lambda: out,
                               note="tape.native('gradient')(x, None, None, g)"))
    return found, ""


def _threaded(method: Callable, threads: int) -> Callable:
    """``method(X, out=G)`` split into ``threads`` row blocks run on a thread pool."""
    pool = ThreadPoolExecutor(threads)

    def run(X, out):
        bounds = np.linspace(0, X.shape[0], threads + 1).astype(int)
        jobs = [pool.submit(method, X[a:b], out=out[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        for j in jobs:
            j.result()
        return out
    return run


def limit_candidate(point: Callable, batch: Callable, case, task: str, X: np.ndarray,
                    threads: int = 1) -> Candidate:
    """The hand-written numba derivative (or primal), writing into a preallocated output.

    ``threads`` > 1 is for a ``prange`` batch driver: numba's thread count is set to it before every call.
    """
    out = np.empty(out_shape(case, task, X.shape[0]))
    if threads > 1:
        import numba
        t = min(threads, numba.config.NUMBA_NUM_THREADS)

        def run():
            numba.set_num_threads(t)
            batch(X, out)
        note = f"numba prange, {t} threads" + (f" (NUMBA_NUM_THREADS={t})" if t < threads else "")
        note += f", OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
        return Candidate("limit", run, X.shape[0], lambda: out, note=note)
    if task in BATCH_TASKS:
        return Candidate("limit", lambda: batch(X, out), X.shape[0], lambda: out)
    x = case.x0.copy()
    return Candidate("limit", lambda: point(x, out), 1, lambda: out)


def peer_candidate(name: str, run: Callable, rows: int, to_array: Callable = np.asarray) -> Candidate:
    """A peer's call; its last result is kept (and converted by ``to_array``) for the correctness check."""
    last = {}

    def timed():
        last["r"] = run()
    timed()
    return Candidate(name, timed, rows, lambda: to_array(last["r"]))


def mismatch(result: np.ndarray, reference: np.ndarray, rtol: float = 1e-8) -> str:
    """Empty if ``result`` holds the numbers of ``reference`` (or of its first rows), else a note."""
    result = np.asarray(result, dtype=np.float64)
    if result.ndim == 2 and result.shape[0] < reference.shape[0] and result.shape[1:] == reference.shape[1:]:
        reference = reference[:result.shape[0]]
    if result.size != reference.size:
        return f"WRONG SHAPE {result.shape}, expected {reference.shape}"
    if not reference.size:
        return ""
    err = float(np.max(np.abs(result.reshape(reference.shape) - reference)))
    err /= max(1.0, float(np.max(np.abs(reference))))
    return "" if err <= rtol else f"WRONG: max relative error {err:.1e}"
