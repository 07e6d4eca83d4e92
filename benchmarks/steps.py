"""Repeated steps: RK4 for Lotka-Volterra in a Python loop, gradient with respect to the state and parameters.

One fresh process per case (kernel cache off): tapead's record and first gradient (the kernel compiled with the
steps re-rolled into loops, ``tapead/backend/reroll.py``), JAX's first ``jit(grad)`` of the same integrator
written with ``lax.fori_loop`` (trace + compile, its backend warm), and replays (median of alternating rounds)
of tapead, JAX and the hand-written limit: the discrete forward sensitivities of RK4 in numba (each stage's
tangent in six directions, the derivative of exactly the steps taken).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from .arrays import _median_rounds  # (alternating rounds, medians: as the arrays family)

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H = 0.01
Z0 = np.array([1.0, 0.5, 1.1, 0.4, 0.4, 0.1])


def lotka_volterra(steps: int):
    """The integrator as people write it: RK4 over a Python loop; returns ``x^2 + y^2`` at the end."""
    def f(z):
        x, y, a, b, c, d = z[0], z[1], z[2], z[3], z[4], z[5]

        def rhs(x, y):
            return a * x - b * x * y, d * x * y - c * y
        for _ in range(steps):
            k1 = rhs(x, y)
            k2 = rhs(x + 0.5 * H * k1[0], y + 0.5 * H * k1[1])
            k3 = rhs(x + 0.5 * H * k2[0], y + 0.5 * H * k2[1])
            k4 = rhs(x + H * k3[0], y + H * k3[1])
            x = x + H / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            y = y + H / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        return x * x + y * y
    return f


def _jax_gradient(steps: int):
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)

    def f(z):
        a, b, c, d = z[2], z[3], z[4], z[5]

        def rhs(x, y):
            return a * x - b * x * y, d * x * y - c * y

        def step(_, s):
            x, y = s
            k1 = rhs(x, y)
            k2 = rhs(x + 0.5 * H * k1[0], y + 0.5 * H * k1[1])
            k3 = rhs(x + 0.5 * H * k2[0], y + 0.5 * H * k2[1])
            k4 = rhs(x + H * k3[0], y + H * k3[1])
            return (x + H / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]),
                    y + H / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1]))
        x, y = jax.lax.fori_loop(0, steps, step, (z[0], z[1]))
        return x * x + y * y
    return jax, jnp, jax.jit(jax.grad(f))


def _hand(steps: int):
    """The discrete forward sensitivities of the RK4 steps in numba: ``(x, y)`` and their tangents in the six
    directions ``z`` spans, stage by stage."""
    from numba import njit

    @njit(cache=False)
    def grad(z, g):
        x, y, a, b, c, d = z[0], z[1], z[2], z[3], z[4], z[5]
        tx = np.zeros(6)
        ty = np.zeros(6)
        tx[0], ty[1] = 1.0, 1.0
        k = np.zeros((4, 2))
        tk = np.zeros((4, 2, 6))
        for _ in range(steps):
            for s in range(4):
                w = 0.0 if s == 0 else (0.5 * H if s < 3 else H)
                px = x + w * k[s - 1, 0] if s else x
                py = y + w * k[s - 1, 1] if s else y
                k[s, 0] = a * px - b * px * py
                k[s, 1] = d * px * py - c * py
                for j in range(6):
                    tpx = tx[j] + w * tk[s - 1, 0, j] if s else tx[j]
                    tpy = ty[j] + w * tk[s - 1, 1, j] if s else ty[j]
                    tk[s, 0, j] = a * tpx - b * (tpx * py + px * tpy) + (px if j == 2 else 0.0) \
                        - (px * py if j == 3 else 0.0)
                    tk[s, 1, j] = d * (tpx * py + px * tpy) - c * tpy + (px * py if j == 5 else 0.0) \
                        - (py if j == 4 else 0.0)
            for j in range(6):
                tx[j] += H / 6 * (tk[0, 0, j] + 2 * tk[1, 0, j] + 2 * tk[2, 0, j] + tk[3, 0, j])
                ty[j] += H / 6 * (tk[0, 1, j] + 2 * tk[1, 1, j] + 2 * tk[2, 1, j] + tk[3, 1, j])
            x += H / 6 * (k[0, 0] + 2 * k[1, 0] + 2 * k[2, 0] + k[3, 0])
            y += H / 6 * (k[0, 1] + 2 * k[1, 1] + 2 * k[2, 1] + k[3, 1])
        for j in range(6):
            g[j] = 2 * x * tx[j] + 2 * y * ty[j]
    return grad


def run_case(steps: int) -> dict:
    """One case in this process (the caller gives it a fresh one)."""
    import resource
    import tapead
    from tapead.runtime.calls import wait_for_upgrades
    warm = np.ones(3)  # modules loaded and LLVM initialised, as JAX's backend is warm below
    tapead.record(lambda v: np.sum(np.sin(v) * v), warm).gradient(warm)
    t0 = time.perf_counter()
    tape = tapead.record(lotka_volterra(steps), Z0)
    t1 = time.perf_counter()
    g = tape.gradient(Z0)
    t2 = time.perf_counter()
    out = {"steps": steps, "ops": len(tape), "record": t1 - t0, "first": t2 - t1,
           "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
    wait_for_upgrades(tape)
    buf = np.empty(6)
    fns = {"tapead": lambda: tape.gradient(Z0, out=buf)}
    try:
        hand = _hand(steps)
        hb = np.empty(6)
        hand(Z0, hb)
        out["err_hand"] = float(np.max(np.abs(g - hb)) / np.max(np.abs(g)))
        fns["hand"] = lambda: hand(Z0, hb)
    except ImportError:
        pass
    try:
        jax, jnp, jg = _jax_gradient(steps)
        zj = jnp.asarray(Z0)
        jax.block_until_ready(jax.jit(lambda v: v * 2)(zj))
        t3 = time.perf_counter()
        ref = np.asarray(jax.block_until_ready(jg(zj)))
        out["jax_first"] = time.perf_counter() - t3
        out["err_jax"] = float(np.max(np.abs(g - ref)) / np.max(np.abs(g)))
        fns["jax"] = lambda: jax.block_until_ready(jg(zj))
    except ImportError:
        pass
    out.update({f"replay_{k}": v for k, v in _median_rounds(fns, budget=0.05).items()})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tapead bench --steps")
    p.add_argument("--sizes", default="1000,10000", help="comma-separated step counts")
    p.add_argument("--json", help="also write the rows as JSON")
    args = p.parse_args(argv)
    rows = []
    env = dict(os.environ, TAPEAD_CACHE_DIR=os.path.join(os.environ.get("TMPDIR", "/tmp"), f"tapead-steps-{os.getpid()}"))
    for steps in [int(s) for s in args.sizes.split(",")]:
        code = f"import json; from benchmarks.steps import run_case; print(json.dumps(run_case({steps})))"
        done = subprocess.run([sys.executable, "-c", code], cwd=_ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            print(f"steps={steps}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0 if rows else 1


def format_table(rows: list[dict]) -> str:
    head = ("| steps | ops | record s | first gradient s | JAX first s | replay tapead ms | hand ms | JAX ms | "
            "tapead/hand | tapead/JAX | peak RSS GB |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        t, h, j = (r.get(f"replay_{k}") for k in ("tapead", "hand", "jax"))
        lines.append(f"| {r['steps']} | {r['ops']} | {r['record']:.2f} | {r['first']:.2f} | "
                     f"{r.get('jax_first', float('nan')):.2f} | {t * 1e3:.3f} | "
                     f"{(h or float('nan')) * 1e3:.3f} | {(j or float('nan')) * 1e3:.3f} | "
                     f"{(t / h) if h else float('nan'):.2f} | {(t / j) if j else float('nan'):.2f} | "
                     f"{r['rss_gb']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
