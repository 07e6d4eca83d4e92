"""Hessians along the linear front: sweep the directions a program's nonlinear part sees, not every input.

A pair potential reads its two atoms only through ``d = p_i - p_j``; a finite element reads its nodes through
``Ds = [x_b - x_a, x_c - x_a]``. Every nonlinear instruction of such a program reads the inputs through a few
affine combinations ``z = L x`` with a constant ``L``, so ``f(x) = h(L x)`` and ``H_f = L^T H_h L``.
Forward-over-reverse along the unit inputs sweeps the gradient program once per input (six times for a pair,
where the sweeps along ``p_j`` are those along ``p_i`` negated); sweeping it once per combination instead, each
seeded where it is computed as if it were an input, costs ``len(z)`` sweeps, and a Hessian entry is then
``H[p, q] = sum_a L[a, q] T_a[p]`` with ``T_a`` the gradient's tangent along combination ``a`` (for a pair: one
sweep's entry, or its negation).

The front (``cut``) is found on the gradient program itself, in slot order: a slot is *affine* when it is an
input or an instruction linear with constant, finite coefficients (``Op.weights``) in its affine arguments; an
affine slot read by anything else (or returned) must be seen by the sweeps, and becomes a cut variable unless it
is already an affine function of earlier cut variables (``2 d`` once ``d`` is one). So every path from an input to
a nonlinear instruction passes through the cut, which is what makes the seeded sweeps exact derivatives.

Where the derivatives are finite, the entries are the same numbers as the unit sweeps' up to rounding (an entry
summing several terms of ``L`` adds them in another order; for a pair every entry is one term, so the sweeps'
bits up to the sign of a zero). Where they are not, the two may differ in NaN and infinity: a coefficient 0 of
``L`` adds no term, where a unit sweep multiplied an infinite partial by it. The Hessian is still read from the
upper triangle and mirrored: exactly symmetric.
"""
from __future__ import annotations

import math

import numpy as np

from . import affine
from .ad import forward, fresh, keep_guards, replay
from ..ir.structure import walk
from ..ir.tape import Tape

_NONE, _AFFINE, _NONLINEAR = 0, 1, 2  # how a slot depends on the inputs differentiated


def cut(g: Tape, n: int, outputs: np.ndarray) -> tuple[list[list[int]], np.ndarray] | None:
    """``(groups, L)``: the cut variables of the slots ``outputs`` of ``g`` (a scalar tape without guards) along
    its first ``n`` inputs, grouped by combination (a loop's reverse recomputes its body, so a combination may be
    computed twice), with ``L`` the constant ``(len(groups), n)`` Jacobian of the combinations; None unless the
    sweeps along them and the terms each entry then adds visit fewer instructions than the unit sweeps.
    Only the outputs' cone is looked at (the value a gradient program also returns may add affine terms to
    nonlinear ones without making them cut variables)."""
    if len(g.guards) or g.maps or n < 2:
        return None
    first, lo = g.first_result, g.first_const
    steps = walk(g)
    outs = np.asarray(outputs, np.int64)
    need = np.zeros(g.n_slots, bool)
    need[outs] = True
    for step in reversed(steps):
        if need[first + step.start]:
            need[list(step.args)] = True
    kind = np.zeros(g.n_slots, np.int8)
    kind[:n] = _AFFINE
    visited: list[tuple[int, list[int], bool]] = []  # (slot, arguments depending on the inputs, linear?)
    for step in steps:
        args = step.args
        on = [a for a in args if kind[a]]
        if not on or step.row.no_derivative or not need[first + step.start]:
            continue
        weights = step.row.weights(1.0, *(float(g.consts[a - lo]) if lo <= a < first else None for a in args)) \
            if step.row.weights is not None else None
        linear = weights is not None and all(
            w is not None and math.isfinite(w) for a, w in zip(args, weights) if kind[a])
        out = first + step.start
        kind[out] = _AFFINE if linear and all(kind[a] == _AFFINE for a in on) else _NONLINEAR
        visited.append((out, on, linear))
    # ``seen``: slots whose tangent the outputs need: the outputs, the arguments of nonlinear instructions, and
    # the arguments of a linear one mixing affine and nonlinear terms when its own result is seen (an affine term
    # added to a pair energy is not, one inside a sine is); a seen multiple of one affine slot passes it upwards
    seen = np.zeros(g.n_slots, bool)
    seen[outs] = True
    for out, on, linear in reversed(visited):
        if not linear or (seen[out] and kind[out] == _NONLINEAR):
            seen[on] = True
        elif seen[out] and len(set(on)) == 1:  # -d, 2 d, 0.5 d: seeing d is seeing it (one variable, not two)
            seen[out], seen[on[0]] = False, True
    seen &= kind == _AFFINE
    affine_rows = [(out, on) for out, on, _ in visited if kind[out] == _AFFINE]
    raw = np.zeros(g.n_slots, bool)  # affine slots that reach an input along a path avoiding the cut
    slots = [i for i in range(n) if seen[i]]
    raw[:n] = ~seen[:n]
    for out, on in affine_rows:
        if raw[on].any():
            if seen[out]:
                slots.append(out)
            else:
                raw[out] = True
        if len(slots) > 2 * n:  # (a loop's reverse recomputes its body: each combination may appear twice)
            return None
    L = affine.constant_jacobian(g, slots, n) if slots else None
    if L is None:
        return None
    groups, L = _by_combination(slots, L)
    # what the entries add up: a term with weight 1 is one addition, another a product and an addition
    terms = sum((q + 1) * (2 * int(np.count_nonzero(L[:, q])) - int(np.count_nonzero(L[:, q] == 1.0)))
                for q in range(n))
    nonlinear = kind == _NONLINEAR
    unit = _sweeps_cost(g, [[j] for j in range(n)], set(), nonlinear)
    return (groups, L) if _sweeps_cost(g, groups, set(slots), nonlinear) + terms < unit else None


def _by_combination(slots: list[int], L: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Cut variables with the same combination (row of ``L``) as one direction, seeded together (forward mode
    is linear), in the order of their first slot; and the combinations' rows."""
    _, rep, which = np.unique(L, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(rep)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    groups: list[list[int]] = [[] for _ in order]
    for s, w in zip(slots, np.ravel(which).tolist()):
        groups[rank[w]].append(s)
    return groups, L[rep[order]]


def _sweeps_cost(g: Tape, seeds: list[list[int]], fixed: set, counted: np.ndarray) -> int:
    """The nonlinear instructions (``counted``) forward sweeps seeded at each of ``seeds`` (a group of slots
    each) reach, all together: one pass with a bit per sweep (a slot in ``fixed`` carries its own seeds only, as
    ``forward`` treats it). Affine instructions are not counted: constant seeds fold through them."""
    first = g.first_result
    reach = [0] * g.n_slots
    for bit, group in enumerate(seeds):
        for s in group:
            reach[s] |= 1 << bit
    total = 0
    for step in walk(g):
        out = first + step.start
        if out not in fixed:
            bits = 0
            if not step.row.no_derivative:
                for a in step.args:
                    bits |= reach[a]
            reach[out] = bits
        if counted[out]:
            total += reach[out].bit_count()
    return total


def hessian_entries(g: Tape, n: int, row0: int, groups: list[list[int]], L: np.ndarray) -> tuple:
    """``(recorder, slot values, H)``: ``g`` replayed, and the ``n x n`` Hessian entries (row-major; tracers,
    floats or None for zero) of the gradient outputs ``g.outputs[row0:row0 + n]``, by one forward sweep per
    combination (its cut variables seeded together), upper triangle read and mirrored."""
    rec, xs, ps = fresh(g)
    vals = replay(g, xs, ps)
    keep_guards(rec, g, vals)
    grads = g.outputs[row0:row0 + n].tolist()  # (the outputs ``cut`` was asked about)
    at = [s for group in groups for s in group if s >= g.n_inputs]
    T = []
    for group in groups:
        tangents = [1.0 if i in group else None for i in range(g.n_inputs)]
        tan = forward(g, vals, tangents, fixed={a: (1.0 if a in group else None) for a in at})
        T.append([tan[p] for p in grads])
    terms = [[(a, float(L[a, q])) for a in np.flatnonzero(L[:, q]).tolist()] for q in range(n)]
    upper = {}
    for p in range(n):
        for q in range(p, n):
            total = None
            for a, w in terms[q]:
                t = T[a][p]
                if t is None:
                    continue
                term = t if w == 1.0 else -t if w == -1.0 else w * t
                total = term if total is None else total + term
            upper[p, q] = total
    return rec, vals, [upper[min(p, q), max(p, q)] for p in range(n) for q in range(n)]
