"""Vectorised numpy programs: cost against size (``tapead bench --scale``).

tapead records a numpy program as a tape of scalar ops; vectorised code over a leading axis becomes a map (one
small scalar body run n times) where it can, and is unrolled into scalar ops where it cannot. A function of n atoms
has n^2 / 2 pairs, so how record, compile, replay and memory grow with n shows whether that structure holds through
each derivative. Next to it: a hand-written numba gradient (the limit) and JAX, which keeps the vector structure.
The table gives the tape rows (a map is one row per slot it writes), the maps, and the scalar ops they stand for.
- ``gradient``: the Lennard-Jones energy ``tests/functions.py::lj`` at 10, 30, 100, 300 atoms: tape size, record
  seconds, the first gradient (derive + compile + call), replay per call into a preallocated output, the
  hand-written numba gradient, JAX ``jit(grad)`` (first call and replay), and the peak RSS of tapead's work.
- ``hessian``: the dense Lennard-Jones Hessian at 30 and 100 atoms, against numba's ``lj_hessian`` and JAX
  ``jit(hessian)``.
- ``hvp``: Lennard-Jones Hessian-vector products at 30, 100 and 300 atoms (forward over the reverse loop), against
  JAX ``jit(jvp(grad))``; checked against the numba Hessian times ``v`` (or central differences of ``lj_grad``).
- many outputs: the Jacobian and the weighted Hessian of ``np.dot(A, B)`` (A 10x11, B 11x10) and the weighted
  Hessian of ``np.sum(x, axis=(1, 2))`` on a 10x11x7 input: first-result seconds.

Every case runs in a fresh Python process with the kernel cache off, so no size shares compiled kernels or memory
with another, and under a timeout: a case that runs out of time or dies on a signal is reported as such in the
table and the run goes on. Replay times come from alternating rounds (tapead, hand-written, JAX, tapead, ...;
medians). Every tapead result is checked against an independent reference (``ok`` in the JSON): the closed-form
gradient ``tests/functions.py::lj_grad``, the numba Hessian (or central differences of ``lj_grad`` without
numba), and closed forms for the many-output cases.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANY = ("jacobian_dot", "hessian_dot", "hessian_sum")


def lj_start_grid(atoms: int) -> np.ndarray:
    """A start point for ``lj`` with any number of atoms: up to 32 atoms the corpus start ``lj_start`` (a 4x4x2
    grid); beyond, the first ``atoms`` sites of a cubic grid (x fastest, then y, then z, spacing 1.1, near the
    pair-potential minimum 2^(1/6)), jittered by U(-0.05, 0.05) with seed 0, as ``lj_start`` is."""
    if atoms <= 32:
        return _functions().lj_start(atoms=atoms)
    side = math.ceil(round(atoms ** (1 / 3), 9))
    sites = [(i, j, k) for k in range(side) for j in range(side) for i in range(side)][:atoms]
    grid = 1.1 * np.array(sites, dtype=np.float64).ravel()
    return grid + np.random.default_rng(0).uniform(-0.05, 0.05, grid.size)


def _functions():
    """The module ``tests/functions.py`` (the shared corpus), loaded as the other benchmarks load it."""
    from .cases import _registry
    _registry()
    return sys.modules["tapead_bench_functions"]


def check(result: np.ndarray, reference: np.ndarray, rtol: float) -> dict:
    """``ok`` when ``result`` matches ``reference`` within ``rtol`` of the reference's largest magnitude (entries
    near zero are held to the same absolute bound), and the error so measured."""
    result, reference = np.asarray(result, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    if result.shape != reference.shape or not np.all(np.isfinite(result)):
        return dict(ok=False, error=math.inf)
    err = float(np.max(np.abs(result - reference))) / (scale or 1.0) if reference.size else 0.0
    return dict(ok=bool(err <= rtol), error=err)


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except Exception:  # noqa: BLE001 - a broken install is as good as a missing one here
        return False
    return True


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux


def structure(tape) -> dict:
    """Tape size: rows (``len``; a map is one row per slot it writes), the scalar ops it stands for (map bodies
    times their iterations), and each map as ``[body ops, iterations]``."""
    maps = getattr(tape, "maps", ())
    return dict(ops=len(tape), ops_unrolled=sum(tape.op_counts().values()),
                maps=[[len(m.body), int(m.n)] for m in maps])


def steady(tape, kind: str) -> float:
    """Seconds to bring the kernel of ``kind`` to O2 when its first compile was O0 (background builds are off in
    these processes, so replay would otherwise time the O0 kernel a user has for a second or two only)."""
    from tapead.runtime.calls import _upgrade, kernel
    if kernel(tape, kind)[1].opt != 0:
        return 0.0
    return _timed(lambda: _upgrade(tape, kind))[1]


def _timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


# ---- one case, in the child process -----------------------------------------------------------------------------


def _peers(x: np.ndarray, numba_name: str, jax_transform: str, reference, rtol: float, r: dict, shape):
    """Candidates for the hand-written numba code and JAX (when installed), each checked once; fills ``r``."""
    from . import peers
    from .harness import Candidate
    found = []
    if _importable("numba"):
        from . import limits
        hand, out = getattr(limits, numba_name), np.empty(shape)
        hand(x, out)
        r["handwritten_ok"] = check(out, reference, rtol)["ok"]
        found.append(Candidate("handwritten", lambda: hand(x, out)))
    else:
        r["handwritten"] = "numba not installed"
    missing = peers.available("jax")
    if missing:
        r["jax"] = missing
        return found
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    jax.jit(lambda v: v * 2.0)(np.ones(2)).block_until_ready()  # backend start-up is not the function's
    f = peers.rebind(_functions().lj, jnp)
    fn = jax.jit(getattr(jax, jax_transform)(f))
    xj = jax.device_put(x)
    first, r["jax_first_s"] = _timed(lambda: fn(xj).block_until_ready())
    r["jax_ok"] = check(np.asarray(first), reference, rtol)["ok"]
    found.append(Candidate("jax", lambda: fn(xj).block_until_ready()))
    return found


def _time(candidates: list, r: dict, repeats: int, target: float, unit: float, suffix: str) -> None:
    """Alternating rounds over the candidates; medians (in ``unit``) and ratios tapead / peer into ``r``."""
    from .harness import measure
    measure(candidates, repeats, target)
    t = {c.name: c.median for c in candidates}
    for name, v in t.items():
        r[f"{'replay' if name == 'tapead' else name}_{suffix}"] = v / unit
    for name in ("handwritten", "jax"):
        if name in t:
            r[f"ratio_{name}"] = t["tapead"] / t[name]


def gradient_case(atoms: int, repeats: int, target: float) -> dict:
    """The Lennard-Jones gradient at ``atoms`` atoms (see the module docstring)."""
    import tapead
    from .harness import Candidate
    fn = _functions()
    x = lj_start_grid(atoms)
    tape, record_s = _timed(lambda: tapead.record(fn.lj, x))
    g, first_s = _timed(lambda: tape.gradient(x))
    ref = fn.lj_grad(x)
    r = dict(case="gradient", atoms=atoms, **structure(tape), record_s=record_s, first_gradient_s=first_s,
             o2_s=steady(tape, "value_and_gradient"),
             peak_rss_gb=_rss_gb(), gradient_l1=float(np.sum(np.abs(g))), **check(g, ref, 1e-9))
    out = np.empty_like(x)
    tape.gradient(x, out=out)
    r["replay_ok"] = check(out, ref, 1e-9)["ok"]
    found = [Candidate("tapead", lambda: tape.gradient(x, out=out))]
    found += _peers(x, "lj_grad", "grad", ref, 1e-9, r, x.shape)
    _time(found, r, repeats, target, 1e-6, "us")
    r["peak_rss_all_gb"] = _rss_gb()
    return r


def _fd_hessian(grad, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of a closed-form gradient, column by column (the reference without numba)."""
    H = np.empty((x.size, x.size))
    for k in range(x.size):
        e = np.zeros_like(x)
        e[k] = h
        H[:, k] = (grad(x + e) - grad(x - e)) / (2 * h)
    return H


def hessian_case(atoms: int, repeats: int, target: float) -> dict:
    """The dense Lennard-Jones Hessian at ``atoms`` atoms."""
    import tapead
    from .harness import Candidate
    fn = _functions()
    x = lj_start_grid(atoms)
    tape, record_s = _timed(lambda: tapead.record(fn.lj, x))
    H, first_s = _timed(lambda: tape.hessian(x))
    from tapead.runtime.derivatives import dense_hessian
    r = dict(case="hessian", atoms=atoms, n=x.size, **structure(tape), record_s=record_s, first_hessian_s=first_s,
             o2_s=steady(dense_hessian(tape), "value"), peak_rss_gb=_rss_gb(), hessian_trace=float(np.trace(H)))
    if _importable("numba"):
        from .limits import lj_hessian
        ref, rtol, r["reference"] = np.empty((x.size, x.size)), 1e-8, "numba lj_hessian"
        lj_hessian(x, ref)
    else:
        ref, rtol, r["reference"] = _fd_hessian(fn.lj_grad, x), 1e-6, "central differences of lj_grad"
    r.update(check(H, ref, rtol))
    out = np.empty((x.size, x.size))
    tape.hessian(x, out=out)
    r["replay_ok"] = check(out, ref, rtol)["ok"]
    found = [Candidate("tapead", lambda: tape.hessian(x, out=out))]
    found += _peers(x, "lj_hessian", "hessian", ref, rtol, r, out.shape)
    _time(found, r, repeats, target, 1e-3, "ms")
    r["peak_rss_all_gb"] = _rss_gb()
    return r


def hvp_case(atoms: int, repeats: int, target: float) -> dict:
    """Lennard-Jones Hessian-vector products at ``atoms`` atoms."""
    import tapead
    from .harness import Candidate
    fn = _functions()
    x = lj_start_grid(atoms)
    v = np.cos(np.arange(x.size, dtype=float))
    tape, record_s = _timed(lambda: tapead.record(fn.lj, x))
    hv, first_s = _timed(lambda: tape.hvp(x, v=v))
    d = tape.state.derived[("hvp_tape",)]
    r = dict(case="hvp", atoms=atoms, n=x.size, **structure(d), record_s=record_s, first_hvp_s=first_s,
             peak_rss_gb=_rss_gb())
    if _importable("numba"):
        from .limits import lj_hessian
        H = np.empty((x.size, x.size))
        lj_hessian(x, H)
        ref, rtol, r["reference"] = H @ v, 1e-8, "numba lj_hessian @ v"
    else:
        h = 1e-6
        ref, rtol, r["reference"] = (fn.lj_grad(x + h * v) - fn.lj_grad(x - h * v)) / (2 * h), 1e-5, "differences"
    r.update(check(hv, ref, rtol))
    r["replay_ok"] = check(tape.hvp(x, v=v), ref, rtol)["ok"]
    found = [Candidate("tapead", lambda: tape.hvp(x, v=v))]
    from . import peers
    missing = peers.available("jax")
    if missing:
        r["jax"] = missing
    else:
        import jax
        jax.config.update("jax_enable_x64", True)
        jax.jit(lambda w: w * 2.0)(np.ones(2)).block_until_ready()  # backend start-up is not the function's
        f = peers.rebind(fn.lj, jax.numpy)
        hvp = jax.jit(lambda y, w: jax.jvp(jax.grad(f), (y,), (w,))[1])
        xj, vj = jax.device_put(x), jax.device_put(v)
        first, r["jax_first_s"] = _timed(lambda: hvp(xj, vj).block_until_ready())
        r["jax_ok"] = check(np.asarray(first), ref, rtol)["ok"]
        found.append(Candidate("jax", lambda: hvp(xj, vj).block_until_ready()))
    _time(found, r, repeats, target, 1e-6, "us")
    r["peak_rss_all_gb"] = _rss_gb()
    return r


def many_case(name: str) -> dict:
    """Many outputs: the Jacobian / weighted Hessian of ``np.dot(A, B)``, the weighted Hessian of a 2-axis sum.

    Closed forms: d(AB)_ij / dA_kl = [i = k] B_lj, d(AB)_ij / dB_kl = A_ik [j = l]; the Hessian of
    W . (AB) has the blocks d2 / dA_kl dB_mn = W_kn [l = m] and zero diagonal blocks; a sum's is zero."""
    import tapead
    rng = np.random.default_rng(0)
    A, B, W = rng.standard_normal((10, 11)), rng.standard_normal((11, 10)), rng.standard_normal((10, 10))
    if name == "hessian_sum":
        X, w = rng.standard_normal((10, 11, 7)), rng.standard_normal(10)
        tape, record_s = _timed(lambda: tapead.record(lambda x: np.sum(x, axis=(1, 2)), X))
        H, first_s = _timed(lambda: tape.hessian(X, weights=w))
        got, ref = [H], [np.zeros((10, 11, 7, 10, 11, 7))]
    else:
        tape, record_s = _timed(lambda: tapead.record(lambda a, b: np.dot(a, b), A, B))
        if name == "jacobian_dot":
            got, first_s = _timed(lambda: tape.jacobian(A, B))
            ref = [np.einsum("ik,lj->ijkl", np.eye(10), B), np.einsum("ik,jl->ijkl", A, np.eye(10))]
        else:
            H, first_s = _timed(lambda: tape.hessian(A, B, weights=W))
            cross = np.einsum("kn,lm->klmn", W, np.eye(11))
            got = [H[0][0], H[0][1], H[1][0], H[1][1]]
            ref = [np.zeros((10, 11, 10, 11)), cross, cross.transpose(2, 3, 0, 1), np.zeros((11, 10, 11, 10))]
    checks = [check(g, f, 1e-12) for g, f in zip(got, ref)]
    return dict(case=name, inputs=tape.n_inputs, outputs=tape.n_outputs, **structure(tape), record_s=record_s,
                first_s=first_s, peak_rss_gb=_rss_gb(), ok=all(c["ok"] for c in checks),
                error=max(c["error"] for c in checks))


def child(kind: str, size: str, repeats: int, target: float) -> None:
    """Run one case in this (fresh) process and print its JSON line."""
    from . import peers
    peers.configure(1)  # single-threaded XLA, set before JAX is imported
    if kind == "gradient":
        r = gradient_case(int(size), repeats, target)
    elif kind == "hessian":
        r = hessian_case(int(size), repeats, target)
    elif kind == "hvp":
        r = hvp_case(int(size), repeats, target)
    else:
        r = many_case(kind)
    print(json.dumps(r), flush=True)


# ---- the parent: one subprocess per case, tables --------------------------------------------------------------


def run_case(kind: str, size, timeout: float, repeats: int = 7, target: float = 0.1) -> dict:
    """Run one case in a fresh process with an empty kernel cache; a timeout or a crash is a result too."""
    code = ("import sys; from benchmarks.scale import child; "
            "child(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))")
    head = dict(case=kind, **({"atoms": int(size)} if kind in ("gradient", "hessian", "hvp") else {}))
    with tempfile.TemporaryDirectory(prefix="tapead-scale-") as cache:
        env = dict(os.environ, TAPEAD_CACHE="0", TAPEAD_CACHE_DIR=cache, TAPEAD_BACKGROUND_O2="0")
        try:
            p = subprocess.run([sys.executable, "-c", code, kind, str(size), str(repeats), str(target)],
                               capture_output=True, text=True, cwd=_ROOT, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return dict(head, failed=f"timeout ({timeout:g} s)")
    return outcome(head, p.returncode, p.stdout, p.stderr)


def outcome(head: dict, returncode: int, stdout: str, stderr: str) -> dict:
    """A finished child's result: its JSON line, or ``head`` with ``failed`` saying how it ended (a negative
    return code is the signal that killed it, e.g. ``crashed (SIGSEGV)``)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return dict(head, failed=f"crashed ({name})")
    lines = stdout.strip().splitlines()
    if returncode != 0 or not lines:
        last = stderr.strip().splitlines()
        return dict(head, failed=f"failed: {last[-1] if last else f'exit {returncode}'}"[:200])
    return json.loads(lines[-1])


def _f(r: dict, key: str, fmt: str = ".2f") -> str:
    """One cell; format ``t`` (times) is 4 significant digits without an exponent (12,345 / 1.235 / 0.01235)."""
    v = r.get(key)
    if v is None or isinstance(v, str):  # absent, or a note (a peer not installed)
        return "-" if v is None else v
    if fmt == "maps":
        return " + ".join(f"{b:,} x {n:,}" for b, n in v) or "-"
    if fmt == "t":
        return f"{v:,.0f}" if v >= 1000 else f"{v:.{max(0, 3 - math.floor(math.log10(v)))}f}" if v > 0 else "0"
    return format(v, fmt)


def _check_text(r: dict) -> str:
    bad = [k for k in ("ok", "replay_ok", "handwritten_ok", "jax_ok") if r.get(k) is False]
    return f"WRONG ({', '.join(bad)}; error {r.get('error', math.nan):.1e})" if bad else "ok"


_SIZE = [("tape rows", "ops", ","), ("maps (body ops x n)", "maps", "maps"), ("scalar ops", "ops_unrolled", ",")]
_RSS = ("peak RSS GB", "peak_rss_gb", ".3f")
_PEERS = [("ratio vs hand-written", "ratio_handwritten", ".3g"), ("ratio vs JAX", "ratio_jax", ".3g"), _RSS]
COLUMNS = {  # (header, JSON key, format) after the first column (atoms or case) and before "check"
    "gradient": [*_SIZE, ("record s", "record_s", ".3f"), ("first gradient s", "first_gradient_s", ".3f"), ("then O2 s", "o2_s", ".2f"),
                 ("JAX first s", "jax_first_s", ".3f"), ("replay µs", "replay_us", "t"),
                 ("hand-written µs", "handwritten_us", "t"), ("JAX µs", "jax_us", "t"), *_PEERS],
    "hessian": [("n", "n", "d"), *_SIZE, ("record s", "record_s", ".3f"),
                ("first Hessian s", "first_hessian_s", ".3f"), ("then O2 s", "o2_s", ".2f"), ("JAX first s", "jax_first_s", ".3f"),
                ("replay ms", "replay_ms", "t"), ("hand-written ms", "handwritten_ms", "t"), ("JAX ms", "jax_ms", "t"),
                *_PEERS],
    "hvp": [("n", "n", "d"), *_SIZE, ("record s", "record_s", ".3f"), ("first HVP s", "first_hvp_s", ".3f"),
            ("JAX first s", "jax_first_s", ".3f"), ("replay µs", "replay_us", "t"), ("JAX µs", "jax_us", "t"),
            ("ratio vs JAX", "ratio_jax", ".3g"), _RSS],
    "many": [("inputs", "inputs", "d"), ("outputs", "outputs", "d"), *_SIZE, ("record s", "record_s", ".3f"),
             ("first result s", "first_s", ".3f"), _RSS],
}
TITLES = {"gradient": "Lennard-Jones gradient (tests/functions.py::lj)", "hessian": "Lennard-Jones dense Hessian",
          "hvp": "Lennard-Jones Hessian-vector products (the HVP tape's size)",
          "many": "Many outputs (first result)"}


def table(kind: str, rows: list) -> str:
    """One markdown table; a failed case (timeout, crash) shows its reason in the second column."""
    columns = COLUMNS[kind]
    header = ["case" if kind == "many" else "atoms"] + [c[0] for c in columns] + ["check"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        first = str(r.get("atoms", r["case"]))
        if "failed" in r:
            body = [first, r["failed"]] + ["-"] * (len(header) - 2)
        else:
            body = [first] + [_f(r, key, fmt) for _, key, fmt in columns] + [_check_text(r)]
        lines.append("| " + " | ".join(body) + " |")
    return "\n".join(lines)


def format_tables(result: dict) -> str:
    """The markdown tables (gradient, Hessian, many outputs) of the kinds that ran."""
    return "\n".join(f"{TITLES[k]}\n\n{table(k, result[k])}\n" for k in COLUMNS if result.get(k))


def _sizes(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run every case (one subprocess each), print a JSON line per case as it ends, then the tables."""
    ap = argparse.ArgumentParser(prog="tapead bench --scale", description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", default="10,30,100,300", help="gradient sizes (300 atoms: a tape of about 670k "
                    "ops, minutes, and it may hit the timeout)")
    ap.add_argument("--hessian-atoms", default="30,100", help="dense Hessian sizes")
    ap.add_argument("--hvp-atoms", default="30,100,300", help="Hessian-vector product sizes")
    ap.add_argument("--many", default=",".join(MANY), help=f"many-output cases (of {', '.join(MANY)}; '' none)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per case (default 600)")
    ap.add_argument("--repeats", type=int, default=7, help="alternating timing rounds; medians (default 7)")
    ap.add_argument("--target", type=float, default=0.1, help="seconds per timed loop (default 0.1)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    many = [m for m in args.many.split(",") if m.strip()]
    bad = [m for m in many if m not in MANY]
    if bad:
        ap.error(f"unknown --many case(s) {', '.join(bad)}; choose from {', '.join(MANY)}")
    jobs = ([("gradient", a) for a in _sizes(args.atoms)] + [("hessian", a) for a in _sizes(args.hessian_atoms)]
            + [("hvp", a) for a in _sizes(args.hvp_atoms)] + [(m, 0) for m in many])
    result: dict = {"gradient": [], "hessian": [], "hvp": [], "many": []}
    for kind, size in jobs:
        r = run_case(kind, size, args.timeout, args.repeats, args.target)
        result[kind if kind in ("gradient", "hessian", "hvp") else "many"].append(r)
        print(json.dumps(r), flush=True)
    print()
    print(format_tables(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
