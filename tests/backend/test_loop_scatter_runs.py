"""Loop gradients whose scatter targets repeat: compiled kernels against the interpreter and the unrolled tape.

A reverse-mode loop scatters each gathered input's cotangent back to the slot it read. Where a target stays
the same over runs of iterations the kernel accumulates it in a register (``register_runs.run_groups``), which is only
right when no other column touches a cell while a register holds it. Gather indices here are drawn in every
pattern people write them in: random, sorted, runs of equal indices (``np.repeat``), shuffled runs, offset pairs
(``I`` and ``I + 1``: the second column's run ends where the first's begins), pairs ``i < j`` and permutations.
Every compiled result is checked against the interpreter running the same derived tape and against the unrolled
(``structured=False``) tape; the reference of the first regression is ``np.add.at``.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import tapead
from check import RTOL_KERNEL, assert_close, magnitude


def test_repeated_gather_indices_gradient_is_exact():
    I = np.repeat(np.arange(29), 3)
    J = I + 1
    w = np.linspace(0.5, 1.5, 87)
    f = lambda x: np.sum(w * x[I] * x[J] ** 2)  # noqa: E731
    x = np.linspace(0.5, 1.5, 30)
    t = tapead.record(f, x)
    assert len(t.maps) == 1
    want = np.zeros(30)
    np.add.at(want, I, w * x[J] ** 2)
    np.add.at(want, J, 2 * w * x[I] * x[J])
    assert_close(t.gradient(x), want, 1e-13)
    u = tapead.record(f, x, structured=False)
    v = np.cos(np.arange(30.0))
    assert_close(t.hvp(x, v=v), u.hvp(x, v=v), 1e-13, scale=magnitude(u.hvp(x, v=v)))
    assert_close(t.vjp(x, w=np.array(1.5)), u.vjp(x, w=np.array(1.5)), 1e-13, scale=magnitude(want))


def _pattern(kind: str, n: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two gather index arrays of length ``n`` into ``m`` slots, in one of the patterns people write."""
    if kind == "random":
        return rng.integers(0, m, n), rng.integers(0, m, n)
    if kind == "sorted":
        return np.sort(rng.integers(0, m, n)), np.sort(rng.integers(0, m, n))
    if kind in ("runs", "offset_runs", "shuffled_runs"):
        r = int(rng.integers(2, 6))
        I = np.repeat(np.arange(m - 1), r)[:n]
        I = np.resize(I, n)
        if kind == "shuffled_runs":
            I = rng.permutation(I)
        return I, (I + 1) % m if kind != "runs" else rng.integers(0, m, n)
    if kind == "pairs":
        i, j = np.triu_indices(m, 1)
        return np.resize(i, n), np.resize(j, n)
    if kind == "reversed_pairs":
        i, j = np.triu_indices(m, 1)
        return np.resize(j, n), np.resize(i, n)
    return np.resize(rng.permutation(m), n), np.resize(rng.permutation(m), n)   # permutations


PATTERNS = ("random", "sorted", "runs", "offset_runs", "shuffled_runs", "pairs", "reversed_pairs", "perm")
BODIES = {
    "w*a*b^2": lambda a, b, w: w * a * b ** 2,
    "sin(a-b)": lambda a, b, w: np.sin(w * (a - b)),
    "a*b+w*a^2": lambda a, b, w: a * b + w * a * a,
    "exp(-(a-b)^2)": lambda a, b, w: np.exp(-(a - b) ** 2) * w,
}


@settings(deadline=None, max_examples=max(20, settings().max_examples // 4))
@given(kind=st.sampled_from(PATTERNS), body=st.sampled_from(sorted(BODIES)), n=st.integers(64, 140),
       m=st.integers(4, 40), three=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_compiled_loop_derivatives_match_interpreter(kind, body, n, m, three, seed):
    rng = np.random.default_rng(seed)
    I, J = _pattern(kind, n, m, rng)
    w = rng.uniform(0.5, 1.5, n)
    op = BODIES[body]
    if three:  # rows of a (m, 3) array: three scatter columns per gather, one run pattern
        def f(x):
            P = x.reshape(m, 3)
            return np.sum(op(P[I], P[J], w[:, None]))
        x = rng.uniform(0.5, 1.5, 3 * m)
    else:
        def f(x):
            return np.sum(op(x[I], x[J], w))
        x = rng.uniform(0.5, 1.5, m)
    note(f"I={I.tolist()} J={J.tolist()}")
    s = tapead.record(f, x, structured=True)
    u = tapead.record(f, x, structured=False)
    assert len(s.maps) == 1
    g_interp = tapead.grad(s).evaluate(x)
    g_unrolled = u.gradient(x)
    scale = magnitude(g_unrolled)
    assert_close(s.gradient(x), g_interp, RTOL_KERNEL * 100, scale=scale)
    assert_close(s.gradient(x), g_unrolled, 1e-12, scale=scale)
    v = rng.normal(size=x.size)
    h_ref = u.hvp(x, v=v)
    assert_close(s.hvp(x, v=v), h_ref, 1e-12, scale=magnitude(h_ref))
    assert_close(s.vjp(x, w=np.array(0.75)), 0.75 * g_unrolled, 1e-12, scale=scale)
    X = np.stack([x, x[::-1].copy()])
    assert_close(s.gradient(X)[1], u.gradient(X[1]), 1e-12, scale=magnitude(u.gradient(X[1])))


def _accumulate_like_the_kernel(dst: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """The scatter of ``lower_map`` step by step: run groups in registers (flushed column by column when their
    target changes, before the other columns add in column order), the last registers stored at the end."""
    from tapead.backend.register_runs import run_groups

    mem = np.full(size, -0.0)
    groups = run_groups(dst)
    in_run = {c for group in groups for c in group}
    reg = {c: mem[dst[0, c]] for group in groups for c in group}
    for k in range(dst.shape[0]):
        for group in groups:
            if k and dst[k, group[0]] != dst[k - 1, group[0]]:
                for c in group:
                    mem[dst[k - 1, c]] = reg[c]
                    reg[c] = mem[dst[k, c]]
            for c in group:
                reg[c] = reg[c] + values[k, c]
        for c in range(dst.shape[1]):
            if c not in in_run:
                mem[dst[k, c]] += values[k, c]
    for c, r in reg.items():
        mem[dst[-1, c]] = r
    return mem


@settings(deadline=None, max_examples=max(50, settings().max_examples))
@given(kinds=st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3), n=st.integers(4, 90),
       m=st.integers(2, 30), seed=st.integers(0, 2 ** 16))
def test_register_runs_add_exactly_as_one_at_a_time(kinds, n, m, seed):
    rng = np.random.default_rng(seed)
    cols = []
    for kind in kinds:
        I, J = _pattern(kind, n, m, rng)
        cols += [I, J]
        if rng.random() < 0.5:  # a third column near the first: its cells meet the first's runs
            cols.append(np.abs(I + int(rng.integers(-2, 3))))
    dst = np.stack(cols, axis=1).astype(np.int64)
    values = rng.normal(size=dst.shape) * 10.0 ** rng.integers(-8, 8, size=dst.shape)
    want = np.full(dst.max() + 1, -0.0)
    for k in range(n):  # iteration order, then column order: what every evaluator promises
        for c in range(dst.shape[1]):
            want[dst[k, c]] += values[k, c]
    got = _accumulate_like_the_kernel(dst, values, want.size)
    assert got.tobytes() == want.tobytes()


def _held_alone_one(dst: np.ndarray, c: int) -> bool:
    """The rule, column by column: no other column targets ``dst[k, c]`` or ``dst[k - 1, c]`` at iteration k."""
    held_now = dst[:, c]
    held_before = np.concatenate([dst[:1, c], dst[:-1, c]])
    others = np.delete(dst, c, axis=1)
    return not (np.any(others == held_now[:, None]) or np.any(others == held_before[:, None]))


def test_held_alone_for_all_columns_at_once_is_the_rule_column_by_column():
    from tapead.backend.register_runs import held_alone
    rng = np.random.default_rng(4)
    for t in range(1500):
        n, cols = int(rng.integers(1, 30)), int(rng.integers(1, 20))
        dst = rng.integers(0, int(rng.integers(1, 40)), size=(n, cols))
        if t % 3 == 0:
            dst = np.sort(dst, axis=0)  # runs of one target, as pairs i < j give
        if t % 5 == 0:
            dst = np.arange(n)[:, None] * cols + np.arange(cols) + rng.integers(0, 2, size=(n, cols)) * (t % 7)
        if t % 4 == 1:  # columns sharing patterns, shifted: an atom's x, y, z columns of pairs i < j
            base = [np.sort(rng.integers(0, 6, n)) * 3, rng.integers(0, 6, n) * 3]
            dst = np.stack([base[int(rng.integers(0, 2))] + int(rng.integers(-3, 4)) for _ in range(cols)], axis=1)
        dst = dst.astype(np.int32) if t % 11 else dst.astype(np.int64) * (1 << 40) - (1 << 41)
        want = [_held_alone_one(dst, c) for c in range(cols)]
        assert held_alone(dst).tolist() == want, dst  # compared by patterns
        assert held_alone(dst, pairwise=0).tolist() == want, dst  # counted in sorted rows
