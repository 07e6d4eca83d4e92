"""Plain-text rendering of suite results: the timing table, the tape and first-call latency table, the summary."""
from __future__ import annotations


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"


def _task_label(r: dict) -> str:
    return f"grad_batch ({r['threads']} threads)" if r["task"] == "grad_batch_threads" else r["task"]


def table_rows(result: dict) -> list[list[str]]:
    """The table as strings: function, task, candidate, time with unit, x limit, x tapead, note."""
    out = []
    for r in result["rows"]:
        time_s = "skipped" if r["time"] is None else f"{_fmt(r['time'])} {r['unit']}"
        out.append([r["function"], _task_label(r), r["candidate"], time_s, _fmt(r["ratio_limit"], 2),
                    _fmt(r["ratio_tapead"], 2), r["note"]])
    return out


HEADER = ["function", "task", "candidate", "median", "x limit", "x tapead", "note"]
TAPE_HEADER = ["function", "ops", "grad ops", "record ms", "compile ms", "first grad call ms", "JAX first call ms"]


def _text_table(header: list[str], rows: list[list[str]], last_free: bool = False) -> list[str]:
    """Columns padded to their widest cell (the last one left unpadded when ``last_free``)."""
    rows = [header] + rows
    n = len(header) - (1 if last_free else 0)
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:n], widths)).rstrip()
             + (("  " + r[-1]) if last_free and r[-1] else "") for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def tape_rows(tapes: dict) -> list[list[str]]:
    """Per function: recorded ops, gradient-tape ops, record and eager compile times, and the first-call
    latencies (tapead on a fresh tape without the disk cache; JAX jit of grad, tracing included)."""
    out = []
    for name, s in tapes.items():
        compile_ms = f"{s['compile_s'] * 1e3:.0f}"
        if s.get("background_compile_s", 0) > 0.01:
            compile_ms += f" (+{s['background_compile_s'] * 1e3:.0f} O2)"
        jax = _fmt(s["jax_first_call_s"] * 1e3) if "jax_first_call_s" in s else \
            ("failed" if "jax_first_call_note" in s else "-")
        out.append([name, str(s["ops"]), str(s.get("grad_ops", "-")), f"{s['record_s'] * 1e3:.1f}", compile_ms,
                    _fmt(s["first_call_s"] * 1e3) if "first_call_s" in s else "-", jax])
    return out


SUMMARY_HEADER = ["function", "batch x limit", "batch x best peer", "grad/primal tapead", "grad/primal limit",
                  "single x limit", "speed-up tapead", "speed-up numba"]


def summary_rows(summary: dict) -> list[list[str]]:
    """The summary as strings, one line per function."""
    out = []
    for fn, s in summary.items():
        peer = s.get("batch_tapead_over_best_peer")
        out.append([fn, _fmt(s["batch_tapead_over_limit"], 2),
                    "-" if peer is None else f"{_fmt(peer, 2)} ({s['best_peer']})",
                    _fmt(s["grad_over_primal_tapead"], 3), _fmt(s["grad_over_primal_limit"], 3),
                    _fmt(s["single_tapead_over_limit"], 2), _fmt(s["speedup_tapead"], 3),
                    _fmt(s["speedup_numba"], 3)])
    return out


def format_table(result: dict) -> str:
    """Plain-text table of the rows, then the tape statistics and latencies, then the summary when present."""
    lines = []
    if result["rows"]:
        lines += _text_table(HEADER, table_rows(result), last_free=True) + [""]
    if result["tapes"]:
        lines += ["tapes and first-call latency (tapead: first gradient call of a freshly recorded tape, no disk "
                  "cache; JAX: first jit(grad) call)"]
        lines += _text_table(TAPE_HEADER, tape_rows(result["tapes"])) + [""]
    if result.get("summary"):
        lines += ["summary (ratios of medians; speed-up = one-thread time / threaded time)"]
        lines += _text_table(SUMMARY_HEADER, summary_rows(result["summary"]))
    return "\n".join(lines).rstrip()
