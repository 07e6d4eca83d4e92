"""The reference interpreter: replays a tape in numpy, vectorised over a batch of points. The oracle."""
from __future__ import annotations

import numpy as np

from .ops import BY_CODE
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
    for i, c in enumerate(tape.consts.tolist()):
        slots[tape.first_const + i] = np.full(n, c)
    first = tape.first_result
    with np.errstate(all="ignore"):
        for i, (code, a, b, c) in enumerate(tape.code.tolist()):
            row = BY_CODE[code]
            args = (slots[a], slots[b], slots[c])[:row.arity]
            slots[first + i] = np.asarray(row.numpy(*args), dtype=np.float64)
    out = np.empty((n, tape.n_outputs))
    for j, s in enumerate(tape.outputs.tolist()):
        out[:, j] = slots[s]
    ok = np.ones(n, bool)
    for s, expected in tape.guards.tolist():
        ok &= (slots[s] != 0.0) == bool(expected)
    return out, ok
