"""Value-preserving tape clean-up: Tape -> Tape.

Replaying a tape under a fresh recorder re-applies everything the recorder does while recording: constant
folding, the IEEE-safe identities (x*1, x/1, x+0, x-0, --x, select on a constant condition), sharing of
repeated subexpressions (CSE by hash-consing) and dead-code elimination (only what outputs and guards need).
"""
from __future__ import annotations

from .ad import node_ids, keep_guards, fresh, replay
from ..ir.tape import Tape


def simplify(tape: Tape) -> Tape:
    """The same function with folded constants, shared subexpressions and no dead code."""
    rec, xs, ps = fresh(tape)
    vals = replay(tape, xs, ps)
    keep_guards(rec, tape, vals)
    outs = [vals[s] for s in tape.outputs.tolist()]
    return rec.finish(node_ids(rec, outs), tape.output_shape, tape.input_shapes, tape.param_shape)
