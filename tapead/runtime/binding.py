"""Argument binding: the batch rule, shared by every evaluation path and by the tape builders' callers.

A call is batched iff every argument has exactly one more leading axis than recorded, all with the same N;
``params`` is batched iff it has that extra axis too, else shared by every point. Anything else raises
InputError. Inputs are converted to C-contiguous float64 (a copy only when needed). Also the reference
interpreter on user arguments (``evaluate``). Kept apart from the backend so that binding, the interpreter and
the transforms' callers import without llvmlite.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..arrays import as_float_array
from . import branches
from ..errors import InputError
from ..ir.interpret import interpret
from ..ir.tape import Tape
from .threads import check_threads


from ..transforms.kernelspec import FALLBACK  # noqa: F401  (what a native entry returns to hand a call to Python)


class Bound(NamedTuple):
    xs: list  # one C-contiguous float64 array per argument
    p: np.ndarray | None
    n: int | None  # batch size, or None for a single point
    p_stride: int  # 0 when params are shared by every point of a batch


def describe(tape: Tape) -> str:
    return ", ".join(str(s) for s in tape.input_shapes) or "no arguments"


def bind(tape: Tape, args: tuple, params, threads=None) -> Bound:
    """Convert and check arguments (and ``threads``) against the recorded shapes; decide point vs batch."""
    check_threads(threads)
    if len(args) != len(tape.input_shapes):
        raise InputError(f"expected {len(tape.input_shapes)} argument(s) shaped {describe(tape)}, got "
                         f"{len(args)}")
    xs = [as_float_array(a, f"argument {i}") for i, a in enumerate(args)]
    shapes = tape.input_shapes
    if all(x.shape == s for x, s in zip(xs, shapes)):
        n = None
    elif all(x.ndim == len(s) + 1 and x.shape[1:] == s for x, s in zip(xs, shapes)) and \
            len({x.shape[0] for x in xs}) == 1:
        n = xs[0].shape[0]
    else:
        raise InputError(f"arguments have shapes {', '.join(str(x.shape) for x in xs)}; this tape was recorded "
                         f"with {describe(tape)}: pass exactly those, or for a batch of N points add one "
                         "leading axis of the same N to every argument")
    if tape.param_shape is None:
        if params is not None:
            raise InputError("this tape was recorded without params; pass params= only to tapes recorded with "
                             "them")
        return Bound(xs, None, n, 0)
    if params is None:
        raise InputError(f"this tape reads params of shape {tape.param_shape}: pass params=")
    p = as_float_array(params, "params")
    if p.shape == tape.param_shape:
        return Bound(xs, p, n, 0)
    if n is not None and p.shape == (n,) + tape.param_shape:
        if not tape.n_params:  # zero params per point: nothing to stride over, read them as shared
            return Bound(xs, p.reshape(tape.param_shape), n, 0)
        return Bound(xs, p, n, tape.n_params)
    raise InputError(f"params have shape {p.shape}; expected {tape.param_shape}"
                     + (f" (shared) or {(n,) + tape.param_shape} (one row per point)" if n is not None else ""))


def named_inputs(b: Bound) -> list:
    """The converted inputs with the names errors use (a converted copy cannot alias anything)."""
    return [(f"argument {i}", x) for i, x in enumerate(b.xs)] + [("params", b.p)]


def lead(b: Bound) -> tuple:
    return () if b.n is None else (b.n,)


def result(tape: Tape, b: Bound, value: np.ndarray):
    return float(value) if b.n is None and tape.output_shape == () else value


def evaluate(fun, *args, params=None) -> np.ndarray | float:
    """The reference interpreter (numpy, no compilation) on a Function's tape: same arguments and results as
    ``Function.value``, other paths included."""
    tape = fun.tape
    b = bind(tape, args, params)
    tape.memo("checked", lambda: tape.check() is tape)  # a flag, not the tape: no reference cycle
    n = 1 if b.n is None else b.n
    x = _rows(b.xs, n)
    out, ok = interpret(tape, x, _param_rows(tape, b))
    v = out.reshape(lead(b) + tape.output_shape)
    if not ok.all():
        branches.redo(fun, "value", b, [v if b.n is not None else v.reshape(-1)],
                      0 if b.n is None else (~ok).astype(np.int32), _interpreted)
    return result(tape, b, v)


def _rows(xs: list, n: int) -> np.ndarray:
    """The arguments as one (n, n_inputs) array (shapes, not -1: an empty batch has no size to infer from)."""
    return np.concatenate([xi.reshape(n, xi.size // n if n else int(np.prod(xi.shape[1:]))) for xi in xs],
                          axis=1) if xs else np.zeros((n, 0))


def _param_rows(tape: Tape, b: Bound):
    """Params as the interpreter reads them: one row per point, or one shared row (also for zero params)."""
    if b.p is None:
        return None
    return b.p.reshape((b.n if b.p_stride else 1), tape.n_params)


def _interpreted(fun, kind: str, b: Bound, outs: list):
    """The interpreter with ``_run``'s contract (used by ``evaluate`` for the other paths it needs)."""
    tape = fun.tape
    n = 1 if b.n is None else b.n
    x = _rows(b.xs, n)
    out, ok = interpret(tape, x, _param_rows(tape, b))
    outs[0].reshape(n, tape.n_outputs)[...] = out
    return 0 if ok.all() else (1 if b.n is None else (~ok).astype(np.int32))
