"""Batches that take both sides of an ``if`` against the same function written branch-free with ``tapead.where``.

``tapead bench --branches`` (or ``python -m benchmarks.branches``) times, alternately, a batch where a third of
the points take the other side of the ``if`` and the ``tapead.where`` version of the same function (which
computes both sides at every point), on one thread, and prints the medians and their ratio.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from . import harness

TARGET = 0.2  # seconds per timed loop


def branchy(x):
    if x[0] > 0:
        return x[0] * x[1] + np.sin(x[1])
    return x[0] ** 2 - x[1]


def branch_free(x):
    import tapead
    return tapead.where(x[0] > 0, x[0] * x[1] + np.sin(x[1]), x[0] ** 2 - x[1])


def points(n: int, other: float = 1 / 3, seed: int = 0) -> np.ndarray:
    """``n`` points, a fraction ``other`` of them with x[0] <= 0 (the side not recorded)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.1, 1, (n, 2))
    X[rng.uniform(size=n) < other, 0] *= -1
    return X


def run(n: int = 100_000, repeats: int = 7, quick: bool = False) -> list[dict]:
    """Median seconds per point of the branchy and branch-free tapes, for value and gradient batches."""
    import tapead
    X = points(n)
    x0 = np.array([0.5, 0.5])
    a, b = tapead.record(branchy, x0), tapead.record(branch_free, x0)
    rows = []
    for task, out in (("value", np.empty(n)), ("gradient", np.empty((n, 2)))):
        fa, fb = getattr(a, task), getattr(b, task)
        fa(X, out=out, threads=1), fb(X, out=out, threads=1)  # record the other path, compile everything
        ref = np.array([getattr(a, task)(x) for x in X[:500]])
        assert np.array_equal(fa(X, out=out, threads=1)[:500], ref), "batch differs from points alone"
        c1 = harness.Candidate("if", lambda: fa(X, out=out, threads=1), n)
        c2 = harness.Candidate("where", lambda: fb(X, out=out, threads=1), n)
        harness.measure([c1, c2], repeats, TARGET / (4 if quick else 1))
        rows.append({"task": task, "if": c1.median, "where": c2.median, "ratio": c1.median / c2.median})
    return rows


def format_rows(rows: list[dict], n: int) -> str:
    lines = [f"{n} points, a third on the side of the `if` not recorded, 1 thread (median)",
             f"{'task':10} {'if (2 paths)':>14} {'tapead.where':>14} {'ratio':>8}"]
    for r in rows:
        lines.append(f"{r['task']:10} {r['if'] * n * 1e3:11.3f} ms {r['where'] * n * 1e3:11.3f} ms "
                     f"{r['ratio']:7.2f}x")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--n", type=int, default=100_000)
    a.add_argument("--repeats", type=int, default=7)
    a.add_argument("--quick", action="store_true")
    args = a.parse_args(argv)
    print(format_rows(run(args.n, args.repeats, args.quick), args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
