"""The limit: hand-written analytic derivatives (and primals) as straight-line numba code into preallocated outputs.

``get(name, task)`` returns ``(point, batch)``: ``point(x, out)`` fills one gradient (or Jacobian / Hessian),
``batch(X, OUT)`` loops over rows inside one compiled function. For ``primal_batch`` the batch fills function
values, and ``get(name, "grad_batch", parallel=True)`` gives a batch driver spreading rows over numba's threads
(``prange``; the thread count is ``numba.set_num_threads``). Importing this module needs numba.
"""
from __future__ import annotations

import os
from typing import Callable

# OpenMP threads that spin after a parallel region steal the cores of whatever is timed next (tapead's threads,
# other peers): idle threads sleep instead. Read when the OpenMP runtime starts, so set before the first prange.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

# ---- seed_foo: 10 dX0 (3e3 + A0) + dX2 (1e4 - A1), x = [dX0, dX1, dX2, A0, A1] ------------------------


@njit
def seed_foo_grad(x, g):
    g[0] = 10.0 * (3e3 + x[3])
    g[1] = 0.0
    g[2] = -(-1e4 + x[4])
    g[3] = 10.0 * x[0]
    g[4] = -x[2]


# ---- seed_bar: x0 x1 + x1 x2 -----------------------------------------------------------------------------


@njit
def seed_bar_grad(x, g):
    g[0] = x[1]
    g[1] = x[0] + x[2]
    g[2] = x[1]


@njit
def seed_bar_hessian(x, h):
    h[:, :] = 0.0
    h[0, 1] = h[1, 0] = h[1, 2] = h[2, 1] = 1.0


# ---- seed_baz: A0 B1 + A1 B2, x = [A (3), B (3)] -------------------------------------------------------------


@njit
def seed_baz_grad(x, g):
    g[0] = x[4]
    g[1] = x[5]
    g[2] = 0.0
    g[3] = 0.0
    g[4] = x[0]
    g[5] = x[1]


# ---- rosenbrock, paired: sum_i 100 (x[2i+1] - x[2i]^2)^2 + (1 - x[2i])^2 -------------------------------------


@njit
def rosenbrock_grad(x, g):
    for i in range(0, x.shape[0], 2):
        a = x[i]
        t = x[i + 1] - a * a
        g[i] = -400.0 * a * t - 2.0 * (1.0 - a)
        g[i + 1] = 200.0 * t


@njit
def rosenbrock_hessian(x, h):
    h[:, :] = 0.0
    for i in range(0, x.shape[0], 2):
        a = x[i]
        h[i, i] = 1200.0 * a * a - 400.0 * x[i + 1] + 2.0
        h[i, i + 1] = h[i + 1, i] = -400.0 * a
        h[i + 1, i + 1] = 200.0


# ---- lj: sum over pairs i < j of 4 (r^-12 - r^-6) ------------------------------------------------------------


@njit
def lj_grad(x, g):
    n = x.shape[0] // 3
    g[:] = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            dx = x[3 * i] - x[3 * j]
            dy = x[3 * i + 1] - x[3 * j + 1]
            dz = x[3 * i + 2] - x[3 * j + 2]
            r2 = dx * dx + dy * dy + dz * dz
            r6inv = 1.0 / (r2 * r2 * r2)
            # d e / d r2 = 4 (-6 r2^-7 + 3 r2^-4); times d r2 / d dx = 2 dx
            s = 8.0 * (3.0 * r6inv - 6.0 * r6inv * r6inv) / r2
            g[3 * i] += s * dx
            g[3 * i + 1] += s * dy
            g[3 * i + 2] += s * dz
            g[3 * j] -= s * dx
            g[3 * j + 1] -= s * dy
            g[3 * j + 2] -= s * dz


@njit
def lj_hessian(x, h):
    n = x.shape[0] // 3
    h[:, :] = 0.0
    d = np.empty(3)
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(3):
                d[k] = x[3 * i + k] - x[3 * j + k]
            r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
            r6inv = 1.0 / (r2 * r2 * r2)
            e1 = 4.0 * (3.0 * r6inv - 6.0 * r6inv * r6inv) / r2  # e'(r2)
            e2 = 4.0 * (42.0 * r6inv * r6inv - 12.0 * r6inv) / (r2 * r2)  # e''(r2)
            for a in range(3):
                for b in range(3):
                    v = 4.0 * e2 * d[a] * d[b] + (2.0 * e1 if a == b else 0.0)
                    h[3 * i + a, 3 * i + b] += v
                    h[3 * j + a, 3 * j + b] += v
                    h[3 * i + a, 3 * j + b] -= v
                    h[3 * j + a, 3 * i + b] -= v


# ---- cumprod: y[k] = prod(x[0..k]); J[k, j] = prod(x[0..k] without x[j]) for j <= k ---------------------------


@njit
def cumprod_jacobian(x, jac):
    n = x.shape[0]
    jac[:, :] = 0.0
    before = 1.0  # prod(x[0..j-1])
    for j in range(n):
        s = before
        jac[j, j] = s
        for k in range(j + 1, n):
            s *= x[k]
            jac[k, j] = s
        before *= x[j]


# ---- primals: the function values, written the same way ------------------------------------------------------


@njit
def seed_foo_value(x):
    return 10.0 * x[0] * (3e3 + x[3]) - x[2] * (-1e4 + x[4])


@njit
def seed_bar_value(x):
    return x[0] * x[1] + x[1] * x[2]


@njit
def seed_baz_value(x):
    return x[0] * x[4] + x[1] * x[5]


@njit
def rosenbrock_value(x):
    s = 0.0
    for i in range(0, x.shape[0], 2):
        a = x[i]
        t = x[i + 1] - a * a
        s += 100.0 * t * t + (1.0 - a) * (1.0 - a)
    return s


@njit
def lj_value(x):
    n = x.shape[0] // 3
    s = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            dx = x[3 * i] - x[3 * j]
            dy = x[3 * i + 1] - x[3 * j + 1]
            dz = x[3 * i + 2] - x[3 * j + 2]
            r2 = dx * dx + dy * dy + dz * dz
            r6inv = 1.0 / (r2 * r2 * r2)
            s += 4.0 * (r6inv * r6inv - r6inv)
    return s


@njit
def cumprod_value(x, y):
    acc = 1.0
    for k in range(x.shape[0]):
        acc *= x[k]
        y[k] = acc


# ---- batch drivers -----------------------------------------------------------------------------------------------


@njit
def _rows(point, X, OUT):
    for i in range(X.shape[0]):
        point(X[i], OUT[i])


@njit(parallel=True)
def _rows_parallel(point, X, OUT):
    for i in prange(X.shape[0]):
        point(X[i], OUT[i])


@njit
def _values(value, X, V):
    for i in range(X.shape[0]):
        V[i] = value(X[i])


def _batched(point: Callable, driver=_rows) -> Callable:
    def batch(X: np.ndarray, OUT: np.ndarray) -> None:
        driver(point, X, OUT)
    return batch


POINT = {
    ("seed_foo", "grad"): seed_foo_grad,
    ("seed_bar", "grad"): seed_bar_grad,
    ("seed_bar", "hessian"): seed_bar_hessian,
    ("seed_baz", "grad"): seed_baz_grad,
    ("rosenbrock", "grad"): rosenbrock_grad,
    ("rosenbrock", "hessian"): rosenbrock_hessian,
    ("lj", "grad"): lj_grad,
    ("lj", "hessian"): lj_hessian,
    ("cumprod", "jacobian"): cumprod_jacobian,
}


VALUE = {"seed_foo": seed_foo_value, "seed_bar": seed_bar_value, "seed_baz": seed_baz_value,
         "rosenbrock": rosenbrock_value, "lj": lj_value}
VECTOR_VALUE = {"cumprod": cumprod_value}  # vector-valued functions: value(x, y) fills y


def get(name: str, task: str, parallel: bool = False) -> tuple[Callable, Callable] | None:
    """``(point, batch)`` for a function and task (``grad_batch`` shares ``grad``'s point code), or None.

    ``primal_batch`` gives the function values; ``parallel`` (``grad_batch`` only) a ``prange`` batch driver.
    """
    if task == "primal_batch":
        if name in VALUE:
            return VALUE[name], _batched(VALUE[name], _values)
        return None if name not in VECTOR_VALUE else (VECTOR_VALUE[name], _batched(VECTOR_VALUE[name]))
    point = POINT.get((name, "grad" if task == "grad_batch" else task))
    if point is None or (parallel and task != "grad_batch"):
        return None
    return point, _batched(point, _rows_parallel if parallel else _rows)
