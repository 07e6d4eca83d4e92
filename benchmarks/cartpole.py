"""Cart-pole swing-up by multiple shooting with RK4: what optimal-control users hand to IPOPT each iteration.

Decision vector z = [x_0, ..., x_N, u_0, ..., u_{N-1}] (4 states per node, one force per stage). Constraints: the
initial state, one RK4 step per stage (x_{k+1} - RK4(x_k, u_k) = 0) and the final state (4N + 8 in all). Objective:
h * sum(u^2). The NLP solver needs the constraint Jacobian and the Lagrangian Hessian (objective weight sigma,
multipliers lambda), both sparse, at every iteration.

The functions are written once on scalars with a math module ``m`` (numpy for tapead, casadi for CasADi), so both
tools differentiate exactly the same arithmetic. Measured: the first sparse Jacobian / Lagrangian Hessian (cold:
record, derive, compile; warm: a second process with the kernel and derived-tape caches filled) and the time per
evaluation, tapead's sparse kernels vs CasADi's SX functions, alternately in one run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

M_CART, M_POLE, LENGTH, GRAVITY, HORIZON = 1.0, 0.3, 0.5, 9.81, 2.0


def dynamics(q, u, m):
    """d/dt [x, theta, dx, dtheta] of the cart-pole under force u (m: numpy or casadi)."""
    _, th, dx, dth = q
    s, c = m.sin(th), m.cos(th)
    den = M_CART + M_POLE * s * s
    ddx = (u + M_POLE * s * (LENGTH * dth * dth + GRAVITY * c)) / den
    ddth = (-u * c - M_POLE * LENGTH * dth * dth * c * s - (M_CART + M_POLE) * GRAVITY * s) / (LENGTH * den)
    return [dx, dth, ddx, ddth]


def rk4(q, u, h, m):
    def add(a, b, f):
        return [ai + f * bi for ai, bi in zip(a, b)]
    k1 = dynamics(q, u, m)
    k2 = dynamics(add(q, k1, h / 2), u, m)
    k3 = dynamics(add(q, k2, h / 2), u, m)
    k4 = dynamics(add(q, k3, h), u, m)
    return [qi + h / 6 * (a + 2 * b + 2 * c + d) for qi, a, b, c, d in zip(q, k1, k2, k3, k4)]


def problem(n: int, m):
    """(objective, constraints) as functions of a flat sequence z, returning a scalar and a list of scalars."""
    h = HORIZON / n
    start, goal = [0.0, 0.0, 0.0, 0.0], [1.0, np.pi, 0.0, 0.0]

    def split(z):
        return [[z[4 * k + i] for i in range(4)] for k in range(n + 1)], [z[4 * (n + 1) + k] for k in range(n)]

    def objective(z):
        _, u = split(z)
        total = u[0] * u[0]
        for uk in u[1:]:
            total = total + uk * uk
        return h * total

    def constraints(z):
        x, u = split(z)
        cons = [x[0][i] - start[i] for i in range(4)]
        for k in range(n):
            step = rk4(x[k], u[k], h, m)
            cons += [x[k + 1][i] - step[i] for i in range(4)]
        return cons + [x[n][i] - goal[i] for i in range(4)]

    return objective, constraints, 5 * n + 4


def start_point(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    return rng.normal(size=5 * n + 4) * 0.3


def tapead_functions(n: int):
    """The constraints tape (its sparse Jacobian) and the combined tape [objective, constraints...], whose
    weighted sparse Hessian with weights [sigma, lambda...] is the Lagrangian Hessian."""
    import tapead
    objective, constraints, nz = problem(n, np)

    def combined(z):
        return np.stack([objective(z)] + constraints(z))
    z0 = start_point(n)
    return tapead.record(lambda z: np.stack(constraints(z)), z0), tapead.record(combined, z0)


def _first_calls(n: int) -> dict:
    """Seconds to the first sparse Jacobian and the first Lagrangian Hessian (in this process)."""
    import tapead  # noqa: F401  (import cost is not counted)
    z = start_point(n)
    w = np.random.default_rng(1).normal(size=4 * n + 9)
    t0 = time.perf_counter()
    cons, combined = tapead_functions(n)
    t1 = time.perf_counter()
    cons.sparse_jacobian(z)
    t2 = time.perf_counter()
    combined.sparse_hessian(z, weights=w)
    t3 = time.perf_counter()
    return dict(record=t1 - t0, jacobian=t2 - t1, hessian=t3 - t2)


def _in_subprocess(n: int, env: dict) -> dict:
    code = f"import json, benchmarks.cartpole as c; print(json.dumps(c._first_calls({n})))"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env,
                       timeout=3600, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def casadi_functions(n: int):
    import casadi
    objective, constraints, nz = problem(n, casadi)
    z = casadi.SX.sym("z", nz)
    lam = casadi.SX.sym("lam", 4 * n + 8)
    sigma = casadi.SX.sym("sigma")
    zs = [z[i] for i in range(nz)]
    c = casadi.vertcat(*constraints(zs))
    lag = sigma * objective(zs) + casadi.dot(lam, c)
    jac = casadi.Function("cons_jac", [z], [casadi.jacobian(c, z)])
    hess = casadi.Function("lag_hess", [z, sigma, lam], [casadi.tril(casadi.hessian(lag, z)[0])])
    return jac, hess


def _agree(jac_t, jac_c, hess_t, hess_c) -> None:
    """tapead's COO results equal CasADi's sparse matrices (the Hessian: CasADi's lower triangle)."""
    J = np.zeros(jac_c.shape)
    np.add.at(J, (jac_t[0], jac_t[1]), jac_t[2])
    H = np.zeros(hess_c.shape)
    np.add.at(H, (hess_t[0], hess_t[1]), hess_t[2])
    for mine, theirs in ((J, np.array(jac_c)), (np.tril(H), np.array(hess_c))):
        scale = max(1.0, float(np.max(np.abs(theirs))))
        if not np.allclose(mine, theirs, rtol=1e-9, atol=1e-9 * scale):
            raise AssertionError("tapead and CasADi disagree on the cart-pole derivatives")


def _median_us(fn, repeats: int, number: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number * 1e6)
    return statistics.median(times)


def run(sizes=(60, 200), repeats: int = 7, number: int = 200, cold: bool = True) -> list[dict]:
    """One row per N: first-call seconds (cold and warm processes) and µs per evaluation, tapead vs CasADi."""
    rows = []
    for n in sizes:
        row: dict = dict(N=n, variables=5 * n + 4, constraints=4 * n + 8)
        if cold:
            import tempfile
            cache = tempfile.mkdtemp(prefix="tapead-cartpole-")
            env = dict(os.environ, TAPEAD_CACHE_DIR=cache, TAPEAD_BACKGROUND_O2="0")
            row["cold"] = _in_subprocess(n, env)
            row["warm"] = _in_subprocess(n, env)
        cons, combined = tapead_functions(n)
        z = start_point(n)
        w = np.random.default_rng(1).normal(size=4 * n + 9)
        jac_t = cons.sparse_jacobian(z)
        hess_t = combined.sparse_hessian(z, weights=w)
        candidates = {"tapead jacobian": lambda: cons.sparse_jacobian(z),
                      "tapead hessian": lambda: combined.sparse_hessian(z, weights=w)}
        try:
            jac, hess = casadi_functions(n)
            _agree(jac_t, jac(z), hess_t, hess(z, w[0], w[1:]))
            candidates["casadi jacobian"] = lambda: jac(z)
            candidates["casadi hessian"] = lambda: hess(z, w[0], w[1:])
        except ImportError:
            row["casadi"] = "not installed"
        times: dict = {k: [] for k in candidates}
        for _ in range(repeats):  # alternate the candidates within each round
            for k, fn in candidates.items():
                times[k].append(_median_us(fn, 1, number))
        row["us"] = {k: statistics.median(v) for k, v in times.items()}
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tapead bench --cartpole", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="60,200", help="comma-separated stage counts N (default 60,200)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-cold", action="store_true", help="skip the first-call runs in fresh processes")
    args = ap.parse_args(argv)
    rows = run(tuple(int(s) for s in args.sizes.split(",")), args.repeats, cold=not args.no_cold)
    for r in rows:
        print(f"N = {r['N']} ({r['variables']} variables, {r['constraints']} constraints)")
        for phase in ("cold", "warm"):
            if phase in r:
                print(f"  first calls, {phase} process: " + ", ".join(f"{k} {v:.2f} s" for k, v in r[phase].items()))
        us = r["us"]
        for what in ("jacobian", "hessian"):
            t = us[f"tapead {what}"]
            c = us.get(f"casadi {what}")
            ratio = f"  (CasADi {c:.1f} µs, {c / t:.2f}x)" if c else ""
            print(f"  sparse {what}: tapead {t:.1f} µs{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
