"""The public entry points that make Functions: ``record``, ``load`` and the transforms on Functions.

The transforms themselves are pure Tape -> Tape functions (``ad``, ``higher``, ``sparsity``, ``simplify``);
here each takes a ``Function`` or a ``Tape``: a Tape gives a Tape, a Function gives the Function of the derived
tape, ready to evaluate (``tapead.grad(f).value(x)``).
"""
from __future__ import annotations

import functools
import os
from typing import Callable, TypeVar

from .transforms import ad, higher, simplify as _simplify, sparsity
from .ir import store
from .function import Function
from .tracing.record import trace
from .ir.tape import Tape

T = TypeVar("T", Tape, Function)


def record(f: Callable, *args, params=None, on_branch: str = "retape", assume_finite: bool = False,
           structured: bool | None = None) -> Function:
    """Run ``f(*args)`` (or ``f(*args, params)``) once on traced values and return it as a ``Function``: its
    tape (``.tape``, the IR) with the methods that evaluate it through compiled kernels.

    Positional ``args`` are the differentiable inputs: float arrays or scalars whose shapes are fixed now.
    ``params`` (one float array of any shape) is passed as the last positional argument; its values are read
    by every call at run time and never differentiated, so per-element constants change without re-recording.
    Integers that steer indexing are fixed at record time: keep them out of ``args`` and ``params``.

    Inside ``f`` use numpy functions (``np.sin``, ``np.dot``, indexing, assignment into traced arrays, ...).
    Python control flow on traced values (``if x > 0``, ``while``, ``and``/``or``, builtin ``min``/``max``)
    records guards: the comparisons and their outcomes. A call where a guard flips is never answered from the
    wrong path: with ``on_branch="retape"`` (default) ``f`` is recorded again along the new path (recurring
    paths get compiled kernels); with ``"raise"`` a BranchError names the comparison and its source line;
    with ``"forbid"`` branching on a traced value raises a TracingError while recording.

    ``assume_finite=True`` lets recording and every transform fold ``0 * x`` to 0 (e.g. zero entries of
    constant matrices, zero partials): shorter tapes, but an infinite or NaN ``x`` would no longer propagate.

    ``structured`` decides whether vectorised numpy records as loops (``tapead.structure``): None (default) for
    elementwise results whose leading axis has at least ``tapead.maparray.MAP_MIN`` elements (or at least
    ``SHORT_MIN`` over ``WIDE_MIN`` elements when no axis is that long: ``maparray.long_enough``), True for every
    array result (leading axis >= 2), False never (one scalar instruction per element, the tape of older
    versions). Either way the tape computes the same function; loops keep recording, the reverse-mode
    transforms and compilation proportional to the program instead of its unrolled size.

    Raises TracingError for what a tape cannot represent, e.g. ``float(x)``, ``math.sin(x)``, storing a traced
    value into a float numpy array (build it with ``np.zeros_like(x)``), or indexing with a traced value.
    """

    tape, sites = trace(f, *args, params=params, on_branch=on_branch, assume_finite=assume_finite,
                        structured=structured)
    return Function(tape, fn=f, on_branch="forbid" if on_branch is None else on_branch, guard_sites=sites,
                    structured=structured)


def load(path: str | os.PathLike) -> Function:
    """Read a tape file written by ``save`` as a Function (without a Python function: a call where a guard
    flips raises BranchError); raises TapeFormatError if it is not a valid tape file."""
    return Function(store.load(path))


def save(tape: Tape | Function, path: str | os.PathLike) -> "os.PathLike":
    """Write a tape (or a Function's tape) to ``path`` in tapead's versioned, non-executable format."""
    return store.save(tape.tape if isinstance(tape, Function) else tape, path)


def on_functions(transform: Callable[..., Tape], keep_function: bool = False) -> Callable:
    """The public form of a pure transform: Tape in, Tape out; Function in, the derived tape's Function out
    (``keep_function``: with the same Python function, for transforms that keep the function the same)."""

    @functools.wraps(transform)
    def public(tape, *args, **kwargs):
        if not isinstance(tape, Function):
            return transform(tape, *args, **kwargs)
        derived = transform(tape.tape, *args, **kwargs)
        if keep_function:
            return Function(derived, fn=tape.fn, on_branch=tape.on_branch, structured=tape.structured)
        return Function(derived)

    return public


grad = on_functions(ad.grad)
value_and_grad = on_functions(ad.value_and_grad)
jvp = on_functions(ad.jvp)
vjp = on_functions(ad.vjp)
simplify = on_functions(_simplify.simplify, keep_function=True)
jacobian_tape = on_functions(higher.jacobian_tape)
hessian_tape = on_functions(higher.hessian_tape)
hvp_tape = on_functions(higher.hvp_tape)
value_gradient_hessian_tape = on_functions(higher.value_gradient_hessian_tape)
sparse_jacobian_tape = on_functions(sparsity.sparse_jacobian_tape)
sparse_hessian_tape = on_functions(sparsity.sparse_hessian_tape)


def evaluate(tape: Tape | Function, *args, params=None):
    """The reference interpreter (numpy, no compilation) on a tape or Function: same arguments and results as
    ``Function.value``."""
    fun = tape if isinstance(tape, Function) else Function(tape)
    return fun.evaluate(*args, params=params)
