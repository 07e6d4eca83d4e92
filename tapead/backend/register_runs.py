"""Register runs of scatter columns: which of a loop's scatter columns may accumulate in a register.

A pair loop ``i < j`` adds its ``i`` contributions to the same cell for long runs of iterations. Such a column
accumulates in a register and touches memory only when its target changes (``loops._run_accumulate``): a chain of
additions through one memory cell is bound by store-to-load latency, a register chain by the addition's. This
module decides, with numpy over the scatter table ``dst`` (iterations x columns), which columns may: the cold path
of a 4.5-million-pair loop must not look at its 27 million targets more than a few times.

Columns are grouped by *pattern*: ``dst[:, c] = rel[P(c)] + shift[c]`` with ``rel`` starting at 0 (the x, y, z
columns of an atom share one pattern and differ by a shift). Comparing two columns at every iteration is then one
comparison of their patterns' difference with the difference of their shifts, and one difference of two patterns
serves every pair of columns drawn from them.
"""
from __future__ import annotations

import numpy as np

PAIRWISE = 32  # scatter columns up to which ``held_alone`` compares columns by patterns (beyond: one sort)


def _patterns(dst: np.ndarray) -> tuple[list[np.ndarray], list[int], np.ndarray]:
    """``(patterns, pattern of each column, shift of each column)``: ``dst[:, c] == patterns[of[c]] + shift[c]``,
    every pattern starting at 0 (int32 where it fits: a pattern is as long as the loop). Columns are matched to
    patterns through a sample of their entries, then compared whole, so many columns cost one pass each."""
    n, cols = dst.shape
    shift = dst[0].astype(np.int64) if n else np.zeros(cols, np.int64)
    patterns: list[np.ndarray] = []
    of: list[int] = []
    by_sample: dict[bytes, list[int]] = {}
    stride = max(1, n // 256)
    for c in range(cols):
        rel = dst[:, c].astype(np.int64) - shift[c]
        if n and -2 ** 31 <= int(rel.min()) and int(rel.max()) < 2 ** 31:
            rel = rel.astype(np.int32)
        key = rel[::stride].astype(np.int64).tobytes()
        known = next((i for i in by_sample.get(key, ()) if np.array_equal(patterns[i], rel)), None)
        if known is None:
            known = len(patterns)
            patterns.append(rel)
            by_sample.setdefault(key, []).append(known)
        of.append(known)
    return patterns, of, shift


def run_groups(dst: np.ndarray) -> list[list[int]]:
    """Scatter columns whose target stays the same over runs of iterations (the ``i`` of pairs ``i < j``), grouped
    by pattern. The register holds the cell's value (loaded when a run starts), so additions happen in the same
    order as one at a time.

    Only when safe: during iteration ``k`` column ``c``'s register stands for cell ``dst[k-1, c]`` (until its
    flush) and then ``dst[k, c]``, so no other column, in the group or not, may target either cell at iteration
    ``k`` (it would add to memory the register later overwrites, or load a cell whose register is not yet
    stored). With that, each cell a register holds sees only that column's additions while held, in iteration
    order, exactly as one addition at a time gives."""
    n, cols = dst.shape
    if n < 4:
        return []
    found = _patterns(dst)
    patterns, of, _ = found
    runs = [np.count_nonzero(p[1:] == p[:-1]) * 2 >= n for p in patterns]
    groups = [[c for c in range(cols) if of[c] == i] for i in range(len(patterns)) if runs[i]]
    if not groups:
        return []
    alone = _alone_by_patterns(dst, found) if cols <= PAIRWISE else held_alone(dst)
    return [group for group in groups if alone[group].all()]


def held_alone(dst: np.ndarray, pairwise: int = PAIRWISE) -> np.ndarray:
    """Per column ``c``: no other column targets, at any iteration ``k``, a cell ``c``'s register holds during
    ``k`` (``dst[k, c]`` or ``dst[k - 1, c]``). Up to ``pairwise`` columns are compared by patterns (a pair loop's
    six columns: two patterns, a few vector passes); more are counted at once: each row's targets sorted, and
    each held cell's occurrences in its row looked up (a binary search per entry)."""
    n, cols = dst.shape
    if cols <= pairwise:
        return _alone_by_patterns(dst)
    d = dst.astype(np.int64)
    before = np.concatenate([d[:1], d[:-1]])
    lo = int(d.min())
    width = int(d.max()) - lo + 1
    keys = (d - lo) + np.arange(n, dtype=np.int64)[:, None] * width  # (row, target) as one sorted-able number
    flat = np.sort(keys, axis=None)

    def count(values: np.ndarray) -> np.ndarray:  # occurrences of each (row k, values[k, c]) in row k
        q = (values - lo) + np.arange(n, dtype=np.int64)[:, None] * width
        return np.searchsorted(flat, q, side="right") - np.searchsorted(flat, q, side="left")

    now_elsewhere = count(d) > 1
    before_elsewhere = count(before) - (before == d) > 0
    return ~(now_elsewhere | before_elsewhere).any(axis=0)


def _alone_by_patterns(dst: np.ndarray, found: tuple | None = None) -> np.ndarray:
    """``held_alone`` through patterns: column ``o`` meets column ``c``'s cell at iteration ``k`` when
    ``rel[P(o)][k] - rel[P(c)][k - lag] == shift[c] - shift[o]`` (lag 0: ``dst[k, c]``; lag 1: ``dst[k - 1, c]``,
    for ``k >= 1``; at ``k = 0`` the held cell is ``dst[0, c]`` itself). Each difference of two patterns is made
    once, answers every shift its columns need, and is dropped."""
    n, cols = dst.shape
    patterns, of, shift = _patterns(dst) if found is None else found
    needs: dict[tuple[int, int], set[int]] = {}  # (pattern of c, pattern of o) -> the shift differences asked
    for c in range(cols):
        for o in range(cols):
            if o != c:
                needs.setdefault((of[c], of[o]), set()).add(int(shift[c] - shift[o]))
    met: set[tuple[int, int, int]] = set()
    for (p, q), wanted in needs.items():
        for lag in (0, 1):
            if p == q and lag == 0:  # one pattern at the same iteration: equal exactly when the shifts are
                met.update((p, q, v) for v in wanted if v == 0)
                continue
            d = np.subtract(patterns[q][lag:], patterns[p][:n - lag], dtype=np.int64)
            met.update((p, q, v) for v in wanted if (p, q, v) not in met and (d == v).any())
    return np.array([not any((of[c], of[o], int(shift[c] - shift[o])) in met for o in range(cols) if o != c)
                     for c in range(cols)], bool).reshape(cols)
