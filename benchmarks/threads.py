"""The default thread count against one thread: finite-element assembly and Lennard-Jones batches.

``tapead bench --threads-policy`` (or ``python -m benchmarks.threads``) times every case with ``threads=1``, with
the default (``threads=None``) and with ``threads=<all cores>`` alternately and prints the medians and the ratios
to one thread (below 1: faster than one thread), and how many threads the default used. ``--load K`` first
starts K busy-looping processes, to see the default on a loaded machine (they are stopped at the end).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Callable

import numpy as np

from . import cases, harness

TARGET = 0.2  # seconds per timed loop
ALL = os.cpu_count() or 1


def triangle(x, p):
    """Neo-Hookean energy of a linear triangle: x = current corner coordinates (6), p = [inverse reference
    edge matrix (4), area, mu, lambda]."""
    dx = np.stack([x[2:4] - x[0:2], x[4:6] - x[0:2]], axis=1)
    F = dx @ p[0:4].reshape(2, 2)
    J = F[0, 0] * F[1, 1] - F[0, 1] * F[1, 0]
    logJ = np.log(J)
    return p[4] * (0.5 * p[5] * (np.sum(F * F) - 2.0) - p[5] * logJ + 0.5 * p[6] * logJ ** 2)


def triangle_mesh(n: int):
    """An n x n grid of nodes cut into 2 (n-1)^2 triangles, slightly stretched: (X, C, M, P)."""
    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij")
    a, b, c, d = (i * n + j), (i * n + j + 1), ((i + 1) * n + j), ((i + 1) * n + j + 1)
    tris = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    ref = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) / (n - 1.0)
    cur = ref * 1.05 + rng.uniform(-1e-3, 1e-3, ref.shape)
    C = np.stack([2 * tris, 2 * tris + 1], -1).reshape(-1, 6)
    Dm = np.stack([ref[tris[:, 1]] - ref[tris[:, 0]], ref[tris[:, 2]] - ref[tris[:, 0]]], axis=2)
    P = np.concatenate([np.linalg.inv(Dm).reshape(-1, 4), 0.5 * np.abs(np.linalg.det(Dm))[:, None],
                        np.full((len(tris), 1), 1.0), np.full((len(tris), 1), 2.0)], axis=1)
    return cur.ravel()[C], C, cur.size, P


def spring(x, p):
    """Energy of a 2-D spring, x = [ux0, uy0, ux1, uy1], p = [stiffness, rest length]."""
    d = x[2:] - x[:2]
    return 0.5 * p[0] * (np.sqrt(d[0] ** 2 + d[1] ** 2) - p[1]) ** 2


def _cases(quick: bool) -> list[tuple[str, int, Callable[[int | None], object]]]:
    import tapead
    found = []
    X, C, M, P = triangle_mesh(101 if quick else 301)
    tri = tapead.record(triangle, X[0], params=P[0]).compile()
    found.append(("fe triangle assemble_gradient", len(X),
                  lambda t, g=np.zeros(M): tri.assemble_gradient(X, C, M, params=P, out=g, threads=t)))
    S = X[:, :4].copy()
    spr = tapead.record(spring, S[0], params=P[0, :2]).compile()
    found.append(("fe spring assemble_gradient", len(S),
                  lambda t, g=np.zeros(M): spr.assemble_gradient(S, C[:, :4], M, params=P[:, :2], out=g,
                                                                 threads=t)))
    lj = cases.load(["lj"])[0]
    tape = tapead.record(lj.f, lj.x0).compile()
    harness.wait_for_background_compiles(tape)
    for n in ((10, 200) if quick else (10, 100, 2000, 20000)):
        XL = lj.batch(n)
        GL = np.empty_like(XL)
        found.append((f"lj gradient batch N={n}", n,
                      lambda t, XL=XL, GL=GL: tape.gradient(XL, out=GL, threads=t)))
    rb = cases.load(["rosenbrock"])[0]
    rt = tapead.record(rb.f, rb.x0).compile()
    XR = rb.batch(1000 if quick else 20000)
    GR = np.empty_like(XR)
    found.append((f"rosenbrock gradient batch N={len(XR)}", len(XR),
                  lambda t: rt.gradient(XR, out=GR, threads=t)))
    return found


def run(quick: bool = False, repeats: int = 7, load: int = 0) -> list[dict]:
    """Median seconds per point with ``threads=1`` and with the default, for every case."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    try:
        rows = []
        for name, points, call in _cases(quick):
            one = harness.Candidate("1 thread", lambda call=call: call(1), points)
            default = harness.Candidate("default", lambda call=call: call(None), points)
            every = harness.Candidate("all cores", lambda call=call: call(ALL), points)
            harness.measure([one, default, every], repeats, TARGET / (4 if quick else 1))
            rows.append({"case": name, "one": one.median, "default": default.median, "all": every.median,
                         "ratio": default.median / one.median, "all_ratio": every.median / one.median,
                         "threads": _threads_used(call)})
        return rows
    finally:
        for p in busy:
            p.kill()
            p.wait()


def _threads_used(call) -> int | None:
    """The largest number of threads the default split one batch kernel call of ``call(None)`` into."""
    try:
        from tapead.runtime import calls
    except ImportError:
        return None
    seen, count = [], getattr(calls, "_thread_count", None)
    if count is None:
        return None

    def spy(*args):
        seen.append(count(*args))
        return seen[-1]
    calls._thread_count = spy
    try:
        call(None)
    finally:
        calls._thread_count = count
    return max(seen, default=None)


def format_rows(rows: list[dict], load: int) -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [f"threads=None (default) vs threads=1 (per point, median), {cpus} cores, {load} busy processes "
             f"started, load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "",
             f"{'case':36} {'1 thread':>11} {'default':>11} {'default/1':>9} {'threads':>7} "
             f"{f'threads={ALL}':>11} {'ratio':>6}"]
    for r in rows:
        lines.append(f"{r['case']:36} {r['one'] * 1e9:8.1f} ns {r['default'] * 1e9:8.1f} ns {r['ratio']:8.2f}x "
                     f"{r['threads'] if r['threads'] is not None else '?':>7} {r['all'] * 1e9:8.1f} ns "
                     f"{r['all_ratio']:5.2f}x")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--quick", action="store_true")
    a.add_argument("--repeats", type=int, default=7)
    a.add_argument("--load", type=int, default=0, help="busy processes to start first")
    args = a.parse_args(argv)
    print(format_rows(run(args.quick, args.repeats, args.load), args.load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
