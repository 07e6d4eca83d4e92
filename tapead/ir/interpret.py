"""The reference interpreter: replays a tape in numpy, vectorised over a batch of points. The oracle."""
from __future__ import annotations

import numpy as np

from .contraction import Product, product_rows
from .structure import Out, walk
from .tape import Tape


def interpret(tape: Tape, x: np.ndarray, p: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate ``tape`` at the rows of ``x`` (N, n_inputs) with params ``p`` ((N or 1, n_params) or None).

    Returns ``(outputs (N, n_outputs), guard_ok (N,) bool)``: a row whose guards do not hold took another
    path through the recorded function, and its outputs do not describe that function.
    """
    n = x.shape[0]
    slots: list = [None] * tape.n_slots
    for i in range(tape.n_inputs):
        slots[i] = x[:, i]
    for i in range(tape.n_params):
        slots[tape.n_inputs + i] = np.broadcast_to(p[:, i], (n,))
    for i, c in enumerate(tape.consts.tolist()):  # full arrays, not broadcast views: numpy's power takes a
        slots[tape.first_const + i] = np.full(n, c)  # shortcut for a scalar-like exponent (sqrt(-inf) is NaN)
    first = tape.first_result
    free = tape.memo("interpret_last_reads", lambda: _last_reads(tape))
    with np.errstate(all="ignore"):
        for k, step in enumerate(walk(tape)):
            if step.map is not None:
                _run_map(step.map, slots, first + step.start, n)
            else:
                slots[first + step.start] = np.asarray(step.row.numpy(*(slots[a] for a in step.args)),
                                                       dtype=np.float64)
                for a in free.get(k, ()):
                    slots[a] = None  # read for the last time: a loop body over millions of iterations holds
                    # only the arrays still to be read, not one per instruction
    out = np.empty((n, tape.n_outputs))
    for j, s in enumerate(tape.outputs.tolist()):
        out[:, j] = slots[s]
    ok = np.ones(n, bool)
    for s, expected in tape.guards.tolist():
        ok &= (slots[s] != 0.0) == bool(expected)
    return out, ok


def _last_reads(tape: Tape) -> dict[int, list[int]]:
    """Instruction step -> the slots it reads for the last time (no later step, output or guard reads them).
    Slots a map reads are kept (maps are few; their tables can be long)."""
    steps = walk(tape)
    end = len(steps)
    last = [-1] * tape.n_slots
    for k, step in enumerate(steps):
        if step.map is None:
            for a in step.args:
                last[a] = k
        else:
            for a in step.map.read_slots().tolist():
                last[a] = end
    for s in tape.outputs.tolist() + [g for g, _ in tape.guards.tolist()]:
        last[s] = end
    free: dict[int, list[int]] = {}
    for s, k in enumerate(last):
        if 0 <= k < end:
            free.setdefault(k, []).append(s)
    return free


def _run_map(m, slots: list, start: int, n: int) -> None:
    """Run map ``m`` (rows from slot ``start``) over the batch of ``n`` points."""
    if isinstance(m, Product):  # from its factors, in the body's order of additions
        read = m.read_slots()
        xs = np.empty((n, len(read)))
        for c, s in enumerate(read.tolist()):
            xs[:, c] = slots[s]
        rows = product_rows(m, lambda f: xs[:, np.searchsorted(read, f)])
        for r in range(m.rows):
            slots[start + r] = rows[:, r]
        return
    x = np.empty((n, m.n, m.body.n_inputs))
    for i, column in enumerate(m.tables.T.tolist()):
        for k, s in enumerate(column):
            x[:, k, i] = slots[s]
    rows = map_rows(m, x)
    for r in range(m.rows):
        slots[start + r] = rows[:, r]


def map_rows(m, x: np.ndarray) -> np.ndarray:
    """The values of map ``m``'s rows, (N, rows), given its gathered inputs ``x`` (N, n, n_in): the body runs once,
    vectorised over points and iterations; sums and scatters add in iteration order (then output order) from
    -0.0, as every evaluator does (see tapead.structure)."""
    N, k = x.shape[0], m.n
    out, _ = interpret(m.body, x.reshape(N * k, m.body.n_inputs))
    out = out.reshape(N, k, m.body.n_outputs)
    rows = np.empty((N, m.rows))
    cols = []
    for j, kind, off in m.outputs():
        if kind is Out.EACH:
            rows[:, off:off + k] = out[:, :, j]
        elif kind is Out.SUM:  # accumulate adds left to right, as a loop does
            rows[:, off] = np.add.accumulate(np.concatenate([np.full((N, 1), -0.0), out[:, :, j]], axis=1),
                                             axis=1)[:, -1]
        else:
            cols.append(j)
    if m.scatter_size:
        # add.at is unbuffered: repeated targets receive their contributions in (iteration, output) order
        scatter = np.full((m.scatter_size, N), -0.0)
        np.add.at(scatter, m.dst.reshape(-1), out[:, :, cols].reshape(N, k * len(cols)).T)
        rows[:, m.rows - m.scatter_size:] = scatter.T
    return rows
