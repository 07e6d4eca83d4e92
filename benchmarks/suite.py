"""The benchmark suite: for each function and task, tapead, the numba limit and the peers timed side by side.

``run(...)`` returns a JSON-ready dict with the rows (median time per call or per point, ratios to the limit and
to tapead, gradient/primal ratios, thread speed-ups, notes), tape statistics (op counts, record and compile times,
first-call latencies of tapead and JAX), a per-function summary of the ratios and the environment;
``format_table(result)`` (from ``report``) renders them as plain text.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Callable

import numpy as np

from . import cases, harness, peers
from .report import HEADER, format_table, table_rows  # noqa: F401 - the table API of the suite

SCALE = {"us/call": 1e6, "ns/point": 1e9}
FIRST_CALLS = 3  # fresh recordings timed for the first-call latency (the median is reported)


def _limits():
    try:
        from . import limits
    except ImportError as e:
        return None, f"no limit: numba is not importable ({e})"
    return limits, ""


def _versions(names) -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ["tapead", "llvmlite", "numba"] + list(names):
        module = peers.MODULES.get(name, name)
        try:
            out[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - absent or broken: the table says so
            pass
    return out


def _tape_stats(tapead, case) -> tuple[object, dict]:
    t0 = time.perf_counter()
    tape = tapead.record(case.f, case.x0)
    t1 = time.perf_counter()
    tape.compile()
    t2 = time.perf_counter()
    harness.wait_for_background_compiles(tape)
    stats = {"ops": len(tape), "record_s": t1 - t0, "compile_s": t2 - t1,
             "background_compile_s": time.perf_counter() - t2}
    if tape.n_outputs == 1:
        stats["grad_ops"] = len(tapead.grad(tape))
    return tape, stats


def _median_first_call(time_one: Callable[[], float], repeats: int) -> float:
    samples = sorted(time_one() for _ in range(repeats))
    return samples[len(samples) // 2]


def _first_call(tapead, case, repeats: int) -> dict:
    """The first gradient call on a freshly recorded tape, kernels built from scratch (no disk cache)."""
    if case.value_shape != ():
        return {}
    saved = os.environ.get("TAPEAD_CACHE")
    os.environ["TAPEAD_CACHE"] = "0"

    def once() -> float:
        fresh = tapead.record(case.f, case.x0)
        t0 = time.perf_counter()
        fresh.gradient(case.x0)
        t = time.perf_counter() - t0
        harness.wait_for_background_compiles(fresh)  # its background O2 compile must not overlap the next one
        return t
    try:
        return {"first_call_s": _median_first_call(once, repeats)}
    finally:
        if saved is None:
            del os.environ["TAPEAD_CACHE"]
        else:
            os.environ["TAPEAD_CACHE"] = saved


def _jax_first_calls(names, tapes: dict, repeats: int, say) -> None:
    for case in cases.load(names):
        if case.value_shape != () or "grad" not in case.tasks:
            continue
        say(f"{case.name}: JAX first call")
        try:
            tapes[case.name]["jax_first_call_s"] = _median_first_call(lambda: peers.jax_first_call(case), repeats)
        except peers.Skip as e:
            tapes[case.name]["jax_first_call_note"] = str(e)


def _tapead_threads(tape, threads: int, n: int) -> int | None:
    """How many threads tapead splits this batch gradient over (None if this tapead does not say)."""
    try:
        from tapead.runtime.calls import _thread_count, kernel
        return _thread_count(threads, n, kernel(tape, "value_and_gradient")[1].n_ops)
    except (ImportError, AttributeError, TypeError):
        return None


def _row(case, task: str, c: harness.Candidate | None, name: str, note: str = "") -> dict:
    unit = cases.UNITS[task]
    return {"function": case.name, "task": task, "candidate": name, "unit": unit,
            "time": None if c is None or not c.samples else c.median * SCALE[unit],
            "min": None if c is None or not c.samples else min(c.samples) * SCALE[unit],
            "loops": None if c is None else c.loops, "points": None if c is None else c.points,
            "note": "; ".join(n for n in (note, c.note if c else "") if n)}


def _ratios(rows: list[dict]) -> None:
    for r in rows:
        same = [o for o in rows if o["function"] == r["function"] and o["task"] == r["task"]]
        for key, who in (("ratio_limit", "limit"), ("ratio_tapead", "tapead")):
            ref = next((o["time"] for o in same if o["candidate"] == who), None)
            r[key] = r["time"] / ref if r["time"] is not None and ref else None
    # gradient / primal of the same candidate, shown on the primal row
    timed = {(r["function"], r["task"], r["candidate"]): r for r in rows if r["time"] is not None}
    for (fn, task, who), r in timed.items():
        grad = timed.get((fn, "grad_batch", who))
        if task == "primal_batch" and grad is not None:
            r["grad_over_primal"] = grad["grad_over_primal"] = grad["time"] / r["time"]
            r["note"] = "; ".join(n for n in (f"gradient/primal {grad['time'] / r['time']:.2f}", r["note"]) if n)


def run_task(case, task: str, X: np.ndarray, tapead_part: tuple, *, peer_names, threads: int, repeats: int,
             target: float, limits_module, limit_note: str, references: dict | None = None) -> list[dict]:
    """Time every candidate of one (function, task) alternately; one row per candidate (skipped ones too).

    ``tapead_part`` is what ``harness.tapead_candidates`` returned for this task on the batch ``X``. For
    ``grad_batch_threads`` (``threads`` threads), ``references`` maps "tapead"/"limit" to their one-thread
    candidates, timed in the same rounds (not shown as rows) for the speed-ups.
    """
    batch = X.shape[0]
    threaded = task == "grad_batch_threads"
    peer_task = "grad_batch" if threaded else task
    cands, skipped = [], []
    limit = None if limits_module is None else limits_module.get(case.name, peer_task, parallel=threaded)
    if limit is not None:
        cands.append(harness.limit_candidate(*limit, case, task, X, threads if threaded else 1))
    else:
        skipped.append(("limit", limit_note or "no hand-written limit for this task"))
    mine, note = tapead_part
    cands += mine
    if note and mine:
        mine[0].note = note
    elif note:
        skipped.append(("tapead", note))
    for p in ([] if task == "primal_batch" else peer_names):
        try:
            run = peers.build(p, case, peer_task, X, threads if threaded else 1)
        except peers.Skip as e:
            skipped.append((p, str(e)))
            continue
        cands.append(harness.peer_candidate(p, run, peers.rows_timed(p, peer_task, batch),
                                            lambda r, p=p: peers.as_array(p, peer_task, r)))
    notes = {}
    if threads > 1 and task == "grad_batch" and "jax" in peer_names:
        notes["jax"] = "XLA threads are set per process: its default here"
    refs = references or {}
    if cands:
        for c in cands:
            c.run()
        ref = cands[0].result()
        for c in cands[1:]:
            notes[c.name] = (notes.get(c.name, "") + " " + harness.mismatch(c.result(), ref)).strip()
        if peer_task == "grad_batch" and peers.rows_timed("autograd", peer_task, batch) < batch:
            notes["autograd"] = (notes.get("autograd", "") + f" timed on {peers.AUTOGRAD_ROWS} rows").strip()
        harness.measure(cands + list(refs.values()), repeats, target)
    rows = [_row(case, task, c, c.name, notes.get(c.name, "")) for c in cands]
    rows += [_row(case, task, None, name, why) for name, why in skipped]
    for r in rows:
        r["threads"] = threads if threaded else 1
        if r["candidate"] in refs and r["time"] is not None:
            one = refs[r["candidate"]].median * SCALE[r["unit"]]
            r["time_1thread"], r["speedup"] = one, one / r["time"]
    if threaded:
        _speedup_notes(rows)
    return rows


def _speedup_notes(rows: list[dict]) -> None:
    by = {r["candidate"]: r for r in rows}
    limit = by.get("limit", {}).get("speedup")
    for r in rows:
        if r.get("speedup") is None:
            continue
        extra = f" (numba prange {limit:.2f})" if r["candidate"] == "tapead" and limit is not None else ""
        what = "over 1 thread" if r["candidate"] == "tapead" else "over the serial limit"
        r["note"] = "; ".join(n for n in (f"speed-up {r['speedup']:.2f} {what}{extra}", r["note"]) if n)


def run(functions=None, peer_names=None, *, batch: int | None = None, threads: int = 1,
        repeats: int | None = None, quick: bool = False, target: float | None = None,
        progress: Callable[[str], None] | None = None) -> dict:
    """Run the suite. ``functions``/``peer_names`` default to all (quick: a small set); unknown names raise
    ValueError. ``threads`` > 1 adds ``grad_batch_threads`` rows (the batch gradient on that many threads; every
    other task runs on one thread). Returns ``{"rows", "tapes", "summary", "settings", "environment"}``."""
    names = list(cases.QUICK if quick else cases.TASKS) if functions is None else list(functions)
    bad = [n for n in names if n not in cases.TASKS]
    if bad:
        raise ValueError(f"unknown function(s) {', '.join(bad)}; choose from {', '.join(cases.TASKS)}")
    peer_names = list(peers.PEERS) if peer_names is None else list(peer_names)
    bad = [p for p in peer_names if p not in peers.PEERS]
    if bad:
        raise ValueError(f"unknown peer(s) {', '.join(bad)}; choose from {', '.join(peers.PEERS)}")
    batch = batch if batch is not None else (1000 if quick else 10_000)
    repeats = repeats if repeats is not None else (3 if quick else 7)
    target = target if target is not None else (0.005 if quick else 0.03)
    if batch < 1 or repeats < 1 or threads < 1:
        raise ValueError("batch, repeats and threads must be positive integers")
    peers.configure(threads)
    say = progress or (lambda msg: None)
    first_calls = 1 if quick else FIRST_CALLS
    saved = os.environ.get("TAPEAD_CACHE")
    os.environ["TAPEAD_CACHE"] = "0"  # compile times are measured cold, not read from the disk cache
    try:
        rows, tapes = _run_cases(names, peer_names, batch, threads, repeats, target, first_calls, say)
    finally:
        if saved is None:
            del os.environ["TAPEAD_CACHE"]
        else:
            os.environ["TAPEAD_CACHE"] = saved
    settings = {"functions": names, "peers": peer_names, "batch": batch, "threads": threads,
                "repeats": repeats, "target_s": target, "quick": quick, "first_calls": first_calls,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    return {"rows": rows, "tapes": tapes, "summary": summarise(rows, tapes), "settings": settings,
            "environment": _versions(peer_names)}


def _tasks(case, threads: int) -> list[str]:
    tasks = list(case.tasks)
    if threads > 1 and "grad_batch" in tasks:
        tasks.insert(tasks.index("grad_batch") + 1, "grad_batch_threads")
    return tasks


def _run_cases(names, peer_names, batch, threads, repeats, target, first_calls, say) -> tuple[list, dict]:
    import tapead
    limits_module, limit_note = _limits()
    rows, tapes, prepared = [], {}, []
    # Every tapead kernel is compiled before any peer runs: compile times are measured in a quiet process, and
    # JIT code is placed before the peers' allocations fragment the address space.
    for case in cases.load(names):
        say(f"{case.name}: recording and compiling")
        tape, tapes[case.name] = _tape_stats(tapead, case)
        for task in _tasks(case, threads):
            X = case.batch(batch)
            k = threads if task == "grad_batch_threads" else 1
            t0 = time.perf_counter()
            part = harness.tapead_candidates(tape, case, task, X, k)
            tapes[case.name][f"{task}_first_call_s"] = time.perf_counter() - t0  # compiles derived kernels
            refs = {}
            if task == "grad_batch_threads":
                refs = _references(tape, case, X, limits_module)
                used = _tapead_threads(tape, threads, batch)
                if part[0] and used is not None and used < threads:
                    part[0][0].note = f"tapead split the batch over {used} thread(s): too little work per thread"
            prepared.append((case, task, X, part, refs))
        say(f"{case.name}: first-call latency")
        tapes[case.name].update(_first_call(tapead, case, first_calls))
    for case, task, X, tapead_part, refs in prepared:
        say(f"{case.name}: {task}")
        rows += run_task(case, task, X, tapead_part, peer_names=peer_names, threads=threads, repeats=repeats,
                         target=target, limits_module=limits_module, limit_note=limit_note, references=refs)
    if "jax" in peer_names:
        _jax_first_calls(names, tapes, first_calls, say)
    _ratios(rows)
    return rows, tapes


def _references(tape, case, X, limits_module) -> dict:
    """One-thread tapead and serial-limit batch gradients, timed alongside the threaded ones."""
    refs = {}
    mine, note = harness.tapead_candidates(tape, case, "grad_batch", X, 1)
    if mine and not note:
        refs["tapead"] = mine[0]
    serial = None if limits_module is None else limits_module.get(case.name, "grad_batch")
    if serial is not None:
        refs["limit"] = harness.limit_candidate(*serial, case, "grad_batch", X)
    return refs


def summarise(rows: list[dict], tapes: dict) -> dict:
    """Per function: the headline ratios (batch and single-call tapead / limit, tapead / best peer, gradient /
    primal, thread speed-ups, first-call latencies)."""
    timed = {(r["function"], r["task"], r["candidate"]): r for r in rows if r["time"] is not None}
    out = {}
    for fn in dict.fromkeys(r["function"] for r in rows):
        def get(task, who, key="time"):
            return timed.get((fn, task, who), {}).get(key)
        s = {"batch_tapead_over_limit": get("grad_batch", "tapead", "ratio_limit"),
             "single_tapead_over_limit": get("grad", "tapead", "ratio_limit"),
             "grad_over_primal_tapead": get("primal_batch", "tapead", "grad_over_primal"),
             "grad_over_primal_limit": get("primal_batch", "limit", "grad_over_primal"),
             "speedup_tapead": get("grad_batch_threads", "tapead", "speedup"),
             "speedup_numba": get("grad_batch_threads", "limit", "speedup")}
        peer_rows = [r for (f, task, who), r in timed.items()
                     if f == fn and task == "grad_batch" and who in peers.PEERS and "WRONG" not in r["note"]]
        if peer_rows and get("grad_batch", "tapead") is not None:
            best = min(peer_rows, key=lambda r: r["time"])
            s["best_peer"] = best["candidate"]
            s["batch_tapead_over_best_peer"] = get("grad_batch", "tapead") / best["time"]
        t = tapes.get(fn, {})
        s["first_call_ms"] = t["first_call_s"] * 1e3 if "first_call_s" in t else None
        s["jax_first_call_ms"] = t["jax_first_call_s"] * 1e3 if "jax_first_call_s" in t else None
        out[fn] = s
    return out
