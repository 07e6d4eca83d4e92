"""Which functions the benchmarks run, with which tasks: definitions come from tests/functions.py.

Every case is a numpy-style function of one flat float64 vector (defined in tests/functions.py), a start
point, and the tasks benchmarked on it: ``grad`` (one point), ``grad_batch`` (N points), ``primal_batch`` (the
function values at N points), ``jacobian`` and ``hessian`` (one point). With several threads the suite adds
``grad_batch_threads`` (the batch gradient on that many threads) to every function with ``grad_batch``.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# Tasks per function, in the order the table shows them.
TASKS: dict[str, tuple[str, ...]] = {
    "seed_foo": ("grad", "grad_batch", "primal_batch"),
    "seed_bar": ("grad", "grad_batch", "primal_batch", "hessian"),
    "seed_baz": ("grad", "grad_batch", "primal_batch"),
    "rosenbrock": ("grad", "grad_batch", "primal_batch", "hessian"),
    "lj": ("grad", "grad_batch", "primal_batch", "hessian"),
    "cumprod": ("jacobian", "primal_batch"),
}
QUICK = ("seed_foo", "rosenbrock")
UNITS = {"grad": "us/call", "grad_batch": "ns/point", "primal_batch": "ns/point", "grad_batch_threads": "ns/point",
         "jacobian": "us/call", "hessian": "us/call"}
BATCH_TASKS = ("grad_batch", "primal_batch", "grad_batch_threads")  # timed per point on N points


@dataclass(frozen=True)
class Case:
    """One benchmark function: its numpy definition, start point and tasks."""

    name: str
    f: Callable
    x0: np.ndarray
    tasks: tuple[str, ...]
    value_shape: tuple[int, ...] = ()  # shape of f(x0): () for the scalar functions

    def batch(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` points near the start point (relative jitter 1e-2), C-contiguous, one row per point."""
        rng = np.random.default_rng(seed)
        scale = 1e-2 * np.maximum(np.abs(self.x0), 1.0)
        return np.ascontiguousarray(self.x0 + scale * rng.uniform(-1, 1, size=(n, self.x0.size)))


def _registry() -> dict:
    """The shared corpus ``tests/functions.py`` (``FUNCTIONS``), imported from the source tree."""
    path = ROOT / "tests" / "functions.py"
    module = sys.modules.get("tapead_bench_functions")
    if module is None:
        spec = importlib.util.spec_from_file_location("tapead_bench_functions", path)
        if spec is None or not path.exists():
            raise ImportError(f"the benchmark functions live in {path}, which is missing: run the benchmarks "
                              "from a source checkout of tapead")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[spec.name]
            raise
    return module.FUNCTIONS


def load(names=None) -> list[Case]:
    """The cases named (default: all of TASKS), in TASKS order; unknown names raise KeyError."""
    names = list(TASKS) if names is None else list(names)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise KeyError(f"unknown benchmark function(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    reg = _registry()
    cases = []
    for name in TASKS:
        if name in names:
            entry = reg[name]  # a tests/functions.py Case: one argument, no params, for these functions
            x0 = np.ascontiguousarray(entry.args0[0], dtype=np.float64)
            cases.append(Case(name, entry.f, x0, TASKS[name], np.shape(entry.f(x0))))
    return cases
