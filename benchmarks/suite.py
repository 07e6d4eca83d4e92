"""The benchmark suite: for each function and task, tapead, the numba limit and the peers timed side by side.

``run(...)`` returns a JSON-ready dict with the rows (median time per call or per point, ratios to the limit and
to tapead, notes), tape statistics (op counts, record and compile times) and the environment;
``format_table(result)`` renders the rows as plain text.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Callable

import numpy as np

from . import cases, harness, peers

SCALE = {"us/call": 1e6, "ns/point": 1e9}


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


def run_task(case, task: str, X: np.ndarray, tapead_part: tuple, *, peer_names, threads: int, repeats: int,
             target: float, limits_module, limit_note: str) -> list[dict]:
    """Time every candidate of one (function, task) alternately; one row per candidate (skipped ones too).

    ``tapead_part`` is what ``harness.tapead_candidates`` returned for this task on the batch ``X``.
    """
    batch = X.shape[0]
    cands, skipped = [], []
    if limits_module is not None and limits_module.get(case.name, task) is not None:
        cands.append(harness.limit_candidate(*limits_module.get(case.name, task), case, task, X))
    else:
        skipped.append(("limit", limit_note or "no hand-written limit for this task"))
    mine, note = tapead_part
    cands += mine
    if note and mine:
        mine[0].note = note
    elif note:
        skipped.append(("tapead", note))
    for p in peer_names:
        try:
            run = peers.build(p, case, task, X)
        except peers.Skip as e:
            skipped.append((p, str(e)))
            continue
        cands.append(harness.peer_candidate(p, run, peers.rows_timed(p, task, batch),
                                            lambda r, p=p: peers.as_array(p, task, r)))
    notes = {}
    if cands:
        for c in cands:
            c.run()
        ref = cands[0].result()
        for c in cands[1:]:
            notes[c.name] = harness.mismatch(c.result(), ref)
        if task == "grad_batch" and peers.rows_timed("autograd", task, batch) < batch:
            notes["autograd"] = (notes.get("autograd", "") + f" timed on {peers.AUTOGRAD_ROWS} rows").strip()
        harness.measure(cands, repeats, target)
    rows = [_row(case, task, c, c.name, notes.get(c.name, "")) for c in cands]
    rows += [_row(case, task, None, name, why) for name, why in skipped]
    return rows


def run(functions=None, peer_names=None, *, batch: int | None = None, threads: int = 1,
        repeats: int | None = None, quick: bool = False, target: float | None = None,
        progress: Callable[[str], None] | None = None) -> dict:
    """Run the suite. ``functions``/``peer_names`` default to all (quick: a small set); unknown names raise
    ValueError. Returns ``{"rows", "tapes", "settings", "environment"}``."""
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
    saved = os.environ.get("TAPEAD_CACHE")
    os.environ["TAPEAD_CACHE"] = "0"  # compile times are measured cold, not read from the disk cache
    try:
        rows, tapes = _run_cases(names, peer_names, batch, threads, repeats, target, say)
    finally:
        if saved is None:
            del os.environ["TAPEAD_CACHE"]
        else:
            os.environ["TAPEAD_CACHE"] = saved
    settings = {"functions": names, "peers": peer_names, "batch": batch, "threads": threads,
                "repeats": repeats, "target_s": target, "quick": quick}
    return {"rows": rows, "tapes": tapes, "settings": settings, "environment": _versions(peer_names)}


def _run_cases(names, peer_names, batch, threads, repeats, target, say) -> tuple[list, dict]:
    import tapead
    limits_module, limit_note = _limits()
    rows, tapes, prepared = [], {}, []
    # Every tapead kernel is compiled before any peer runs: compile times are measured in a quiet process, and
    # JIT code is placed before the peers' allocations fragment the address space.
    for case in cases.load(names):
        say(f"{case.name}: recording and compiling")
        tape, tapes[case.name] = _tape_stats(tapead, case)
        for task in case.tasks:
            X = case.batch(batch)
            t0 = time.perf_counter()
            part = harness.tapead_candidates(tape, case, task, X, threads)
            tapes[case.name][f"{task}_first_call_s"] = time.perf_counter() - t0  # compiles derived kernels
            prepared.append((case, task, X, part))
    for case, task, X, tapead_part in prepared:
        say(f"{case.name}: {task}")
        rows += run_task(case, task, X, tapead_part, peer_names=peer_names, threads=threads, repeats=repeats,
                         target=target, limits_module=limits_module, limit_note=limit_note)
    _ratios(rows)
    return rows, tapes


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"


def table_rows(result: dict) -> list[list[str]]:
    """The table as strings: function, task, candidate, time with unit, x limit, x tapead, note."""
    out = []
    for r in result["rows"]:
        time_s = "skipped" if r["time"] is None else f"{_fmt(r['time'])} {r['unit']}"
        out.append([r["function"], r["task"], r["candidate"], time_s, _fmt(r["ratio_limit"], 2),
                    _fmt(r["ratio_tapead"], 2), r["note"]])
    return out


HEADER = ["function", "task", "candidate", "median", "x limit", "x tapead", "note"]


def format_table(result: dict) -> str:
    """Plain-text table of the rows, then the tape statistics."""
    rows = [HEADER] + table_rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + ("  " + r[-1] if r[-1] else "")
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for name, s in result["tapes"].items():
        lines.append(f"{name}: tape {s['ops']} ops" + (f", gradient tape {s['grad_ops']} ops" if "grad_ops" in s
                                                       else "")
                     + f", record {s['record_s'] * 1e3:.1f} ms, compile {s['compile_s'] * 1e3:.0f} ms"
                     + (f" (+{s['background_compile_s'] * 1e3:.0f} ms optimising in the background)"
                        if s["background_compile_s"] > 0.01 else ""))
    return "\n".join(lines)
