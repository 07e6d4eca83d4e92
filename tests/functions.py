"""The shared corpus of test and benchmark functions, with start points and hand-written gradients (numpy only).

Each function is plain numpy-style Python that runs on numpy arrays and on tapead's traced values alike; the
definitions are the benchmark functions of the README. ``FUNCTIONS`` maps a name to a ``Case``: the function, a start
point ``args0`` (where a tape is recorded), a different evaluation point ``args1``, params (or None), and the
closed-form gradient (and Jacobian for vector-valued functions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# ---- seed functions -----------------------------------------------------------------------------------
FOO_A, FOO_B, FOO_C, FOO_D = 3e3, np.array([10.0, 0.0]), -1e4, np.array([0, 1])
FOO4_PARAMS = np.array([FOO_A, FOO_B[0], FOO_B[1], FOO_C])  # the struct's floats: a, b0, b1, c


def seed_foo(x):
    """x = [dX0, dX1, dX2, A0, A1]: dot(dX[d], b) * (a + A[0]) + dX[2] * -(c + A[1])."""
    dX, A = x[0:3], x[3:5]
    return np.dot(dX[FOO_D], FOO_B) * (FOO_A + A[0]) + dX[2] * -(FOO_C + A[1])


def seed_foo_grad(x):
    """Closed-form gradient of seed_foo."""
    dX, A = x[0:3], x[3:5]
    return np.array([FOO_B[0] * (FOO_A + A[0]), FOO_B[1] * (FOO_A + A[0]), -(FOO_C + A[1]),
                     dX[0] * FOO_B[0] + dX[1] * FOO_B[1], -dX[2]])


def seed_foo4(dX, X, U, A, params):
    """seed_foo in its four-argument form; params = [a, b0, b1, c], d = [0, 1] fixed; X and U are unused."""
    a, b, c = params[0], params[1:3], params[3]
    return np.dot(dX[FOO_D], b) * (a + A[0]) + dX[2] * -(c + A[1])


def seed_foo4_grad(dX, X, U, A, params):
    """Closed-form gradient of seed_foo4: one array per argument (zeros for X, empty for U)."""
    a, b, c = params[0], params[1:3], params[3]
    g_dX = np.array([b[0] * (a + A[0]), b[1] * (a + A[0]), -(c + A[1])])
    g_A = np.array([dX[0] * b[0] + dX[1] * b[1], -dX[2]])
    return g_dX, np.zeros(3), np.zeros(0), g_A


def seed_bar(x):
    """x0 x1 + x1 x2 written as dot(x[[0, 1]], x[[1, 2]])."""
    return np.dot(x[[0, 1]], x[[1, 2]])


def seed_bar_grad(x):
    """Closed-form gradient of seed_bar."""
    return np.array([x[1], x[0] + x[2], x[1]])


BAZ_PI = np.array([[1.0, 0, 0], [0, 1, 0]])
BAZ_PJ = np.array([[0.0, 1, 0], [0, 0, 1]])


def seed_baz(x):
    """x = [A (3), B (3)]: dot(Pi @ A, Pj @ B)."""
    return np.dot(BAZ_PI @ x[0:3], BAZ_PJ @ x[3:6])


def seed_baz_grad(x):
    """Closed-form gradient of seed_baz: A0 B1 + A1 B2."""
    return np.array([x[4], x[5], 0.0, 0.0, x[0], x[1]])


# ---- Rosenbrock -----------------------------------------------------------------------------------------
def rosenbrock(x):
    """The paired (More-Garbow-Hillstrom) form."""
    return np.sum(100.0 * (x[1::2] - x[0::2] ** 2) ** 2 + (1.0 - x[0::2]) ** 2)


def rosenbrock_grad(x):
    """Closed-form gradient of the paired form."""
    g = np.empty_like(x)
    u, v = x[0::2], x[1::2]
    g[0::2] = -400.0 * u * (v - u * u) - 2.0 * (1.0 - u)
    g[1::2] = 200.0 * (v - u * u)
    return g


def rosenbrock_chained(x):
    """The chained form: sum(100 (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)."""
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_chained_grad(x):
    """Closed-form gradient of the chained form."""
    g = np.zeros_like(x)
    u, v = x[:-1], x[1:]
    g[:-1] += -400.0 * u * (v - u * u) - 2.0 * (1.0 - u)
    g[1:] += 200.0 * (v - u * u)
    return g


def rosenbrock_start(n: int = 100) -> np.ndarray:
    """The classical start point (-1.2, 1, -1.2, 1, ...)."""
    x = np.ones(n)
    x[0::2] = -1.2
    return x


# ---- Lennard-Jones ------------------------------------------------------------------------------------
LJ_ATOMS = 30


def lj(x):
    """Lennard-Jones energy of len(x) // 3 atoms (atom i at x[3i:3i+3]; 30 in the corpus) over the pairs i < j."""
    n = x.shape[0] // 3
    p = x.reshape(n, 3)
    i, j = np.triu_indices(n, 1)
    d = p[i] - p[j]
    r2 = np.sum(d * d, axis=1)
    r6inv = 1.0 / r2 ** 3
    return np.sum(4.0 * (r6inv ** 2 - r6inv))


def lj_grad(x):
    """Closed-form gradient of lj."""
    n = x.shape[0] // 3
    p = x.reshape(n, 3)
    i, j = np.triu_indices(n, 1)
    d = p[i] - p[j]
    r2 = np.sum(d * d, axis=1)
    r6inv = 1.0 / r2 ** 3
    de_dr2 = 4.0 * (2.0 * r6inv - 1.0) * (-3.0 * r6inv / r2)
    f = (2.0 * de_dr2)[:, None] * d
    g = np.zeros_like(p)
    np.add.at(g, i, f)
    np.add.at(g, j, -f)
    return g.ravel()


def lj_start(seed: int = 0, atoms: int = LJ_ATOMS) -> np.ndarray:
    """The first ``atoms`` sites of a 4x4x2 grid (x fastest, then y, then z), spacing 1.1, jittered by
    U(-0.05, 0.05)."""
    sites = [(i, j, k) for k in range(2) for j in range(4) for i in range(4)][:atoms]
    grid = 1.1 * np.array(sites, dtype=np.float64).ravel()
    return grid + np.random.default_rng(seed).uniform(-0.05, 0.05, grid.size)


# ---- cumulative products (vector outputs) -------------------------------------------------------------------
def cumprod(x):
    """y[k] = prod(x[0..k]), built with a Python loop and np.stack."""
    out = []
    acc = 1.0
    for e in x:
        acc = acc * e
        out.append(acc)
    return np.stack(out)


class Accu:
    """Holds a running product and mutates it on every call."""

    def __init__(self, a):
        self.a = a

    def __call__(self, v):
        self.a = self.a * v
        return self.a


def ac_cumprod(x):
    """cumprod through a mutating closure."""
    acc = Accu(1.0)
    return np.stack([acc(e) for e in x])


def cumprod_jacobian(x):
    """J[k, j] = prod(x[i] for i <= k, i != j) for j <= k, else 0 (lower-triangular); no division."""
    n = len(x)
    jac = np.zeros((n, n))
    prefix = 1.0
    for j in range(n):
        run = prefix
        jac[j, j] = run
        for k in range(j + 1, n):
            run = run * x[k]
            jac[k, j] = run
        prefix = prefix * x[j]
    return jac


def cumprod_grad(x):
    """Closed-form gradient of sum(cumprod(x))."""
    return cumprod_jacobian(x).sum(axis=0)


# ---- the registry ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One corpus entry. ``f``, ``grad`` and ``jacobian`` take ``(*args)`` or ``(*args, params)`` like the function."""

    name: str
    f: Callable
    args0: tuple  # where the tape is recorded
    args1: tuple  # a different point where it is checked
    params: np.ndarray | None
    grad: Callable  # gradient of f (of sum(f) for vector functions): an array, or a tuple for several arguments
    jacobian: Callable | None = None  # for vector-valued functions

    def call(self, fn: Callable, args: tuple):
        """``fn(*args)`` with this case's params appended when it has them."""
        return fn(*args) if self.params is None else fn(*args, self.params)

    @property
    def vector(self) -> bool:
        return self.jacobian is not None


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _cases() -> dict[str, Case]:
    foo4_args = lambda r: (r.normal(size=3), r.normal(size=3), np.zeros(0), r.normal(size=2))  # noqa: E731
    cases = [
        Case("seed_foo", seed_foo, (_rng(1).normal(size=5),), (_rng(2).normal(size=5),), None, seed_foo_grad),
        Case("seed_foo4", seed_foo4, foo4_args(_rng(3)), foo4_args(_rng(4)), FOO4_PARAMS, seed_foo4_grad),
        Case("seed_bar", seed_bar, (_rng(5).normal(size=3),), (_rng(6).normal(size=3),), None, seed_bar_grad),
        Case("seed_baz", seed_baz, (_rng(7).normal(size=6),), (_rng(8).normal(size=6),), None, seed_baz_grad),
        Case("rosenbrock", rosenbrock, (rosenbrock_start(),), (_rng(9).uniform(-2, 2, 100),), None,
             rosenbrock_grad),
        Case("rosenbrock_chained", rosenbrock_chained, (rosenbrock_start(),), (_rng(10).uniform(-2, 2, 100),),
             None, rosenbrock_chained_grad),
        Case("lj", lj, (lj_start(0),), (lj_start(1),), None, lj_grad),
        Case("cumprod", cumprod, (_rng(11).uniform(0.9, 1.1, 100),), (_rng(12).uniform(0.9, 1.1, 100),), None,
             cumprod_grad, cumprod_jacobian),
        Case("ac_cumprod", ac_cumprod, (_rng(13).uniform(0.5, 1.5, 20),), (_rng(14).uniform(0.5, 1.5, 20),),
             None, cumprod_grad, cumprod_jacobian),
    ]
    return {c.name: c for c in cases}


FUNCTIONS: dict[str, Case] = _cases()
