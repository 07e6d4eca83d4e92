"""The op table's machinery: what a row is, how rows are declared and how a row applies to values.

The rows themselves are declared in ``ops.py`` (and ``ops_extra.py``, which it loads): this module holds no
op, so the modules that declare rows import it and nothing imports them back (no import cycle).

A row is callable: ``row(x, y)`` records an instruction when an argument is a tracer (anything with an
``_emit`` method) and folds to a float on plain numbers. It carries two derivative rules written in tapead's
own ops, so running them on tracers records the derivative program:

- ``rule(g, *args, out)``: reverse mode, the contribution of an output cotangent ``g`` to each argument.
- ``tangent(ts, *args, out)``: forward mode, the output's tangent given each argument's (``ts``, None = zero,
  at least one not None), computing only the terms whose tangent is nonzero. A row declared without one gets
  ``tangent_from_rule(rule)``: the sum of the reverse rule's contributions (a scalar op's 1x1 linear map is its
  own transpose), one rule call per nonzero tangent.
"""
from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Callable

import numpy as np

INF = float("inf")


@dataclass(frozen=True, eq=False)
class Op:
    """One scalar operation: how to evaluate it, lower it, record it and differentiate it."""

    name: str
    code: int
    arity: int
    numpy: Callable[..., np.ndarray]
    llvm: str  # template: {0},{1},{2} are arguments, {out} the result (multi-line templates use {out}.tmp)
    rule: Callable[..., tuple]  # rule(g, *args, out) -> one contribution (or None) per argument
    domain: tuple[float, float] = (-INF, INF)
    libm: tuple[str, ...] = ()  # libm functions the lowering calls
    smooth: bool = True
    note: str = ""  # tie conventions of non-smooth ops
    definition: str = ""  # LLVM IR of a helper function the lowering calls (user-defined ops only)
    uses: tuple[str, ...] = ()  # other user-defined ops that definition calls
    commutative: bool = False  # op(a, b) == op(b, a) bitwise: the recorder shares both orders (hash-consing)
    # how the op couples its arguments in second derivatives (Hessian sparsity): "linear" (none), "piecewise"
    # (none where defined: abs, max, select), "bilinear" (a x b only: mul), "quotient" (a x b and b x b: div),
    # "general" (every pair of its arguments' dependencies)
    curvature: str = "general"
    # identities exact in IEEE arithmetic (up to the sign of a zero result), which the recorder applies while
    # recording: op(x, c) == x for c == right_identity (op(c, x) == x for left_identity); op(x, c) == -x for c ==
    # right_negation (op(c, x) == -x for left_negation); op(x, c) == c for c == absorbing when every value is finite
    # (record(..., assume_finite=True)); op(op(x)) == x (involution); chooses: op(c, a, b) is a or b by a condition
    right_identity: float | None = None
    left_identity: float | None = None
    right_negation: float | None = None
    left_negation: float | None = None
    absorbing: float | None = None
    involution: bool = False
    chooses: bool = False  # (also the NaN-masking class: a cotangent through it is zero on the branch not taken)
    # the name of the ufunc computing this op, the key numpy dispatch finds it by (numpy's, or scipy.special's
    # for erf/erfc); None when no ufunc is this op (select is np.where, f32 is astype(np.float32)).
    # ``tapead.ops`` exposes the row under this name and under its own name (unless that is a Python builtin)
    spelling: str | None = None
    aliases: tuple[str, ...] = ()  # other ufuncs that are this op (np.fabs is abs, np.true_divide is div)
    surface: Callable | None = None  # what user code (the ufunc, an operator) records instead of the bare row
    tangent: Callable | None = None  # tangent(ts, *args, out) (see the module docstring); None: from the rule
    no_derivative: bool = False  # the output carries no derivative at all (comparisons, sign, steps)
    predicate: bool = False  # the result is 1.0 (true) or 0.0 (false): a guard branches on it as it is
    passive: tuple[int, ...] = ()  # arguments no derivative flows into, anywhere (select's condition)
    # linearity, for recognising a linear combination (partially separable Hessians): weights(w, *consts) gives
    # each argument's weight when the output has weight w, ``consts`` holding the constant arguments' values
    # (None for the others); a constant's weight is ignored (may be None); None when not linear given those
    weights: Callable | None = None
    associative: bool = False  # op(op(a, b), c) == op(a, op(b, c)) in exact arithmetic: ufunc.reduce records it
    python: Callable | None = None  # Python float arithmetic that is this IEEE operation and never raises

    def __post_init__(self):
        if self.tangent is None:
            object.__setattr__(self, "tangent", tangent_from_rule(self.rule))

    def __call__(self, *args):
        """Apply the op: on tracers this records an instruction, on plain floats it folds to a float."""
        for a in args:
            if type(a) is not float:  # floats fold; the first tracer records
                emit = getattr(a, "_emit", None)
                if emit is not None:
                    return emit(self, args)
        with np.errstate(all="ignore"):
            return float(self.numpy(*(np.float64(a) for a in args)))

    def __repr__(self) -> str:
        return f"<op {self.name} (code {self.code})>"


OPS: dict[str, Op] = {}
BY_CODE: list[Op] = []


def tangent_from_rule(rule: Callable) -> Callable:
    """The forward rule of a row declared with only a reverse rule: the reverse rule's contribution for each
    nonzero argument tangent, summed in argument order."""

    def tangent(ts, *args_out):
        total = None
        for j, t in enumerate(ts):
            if t is not None:
                c = rule(t, *args_out)[j]
                if c is not None:
                    total = c if total is None else total + c
        return total

    return tangent


def op(name: str, arity: int, numpy: Callable, llvm: str, *, domain=(-INF, INF), libm=(), smooth=True,
       note="", definition="", uses=(), commutative=False, curvature="general", tangent=None, **facts):
    """Declare an op; the decorated function is its reverse rule, and the decorator returns the row. Declaring a
    name again replaces its row (keeping its code). ``facts``: the Op fields from ``right_identity`` on."""

    def register(rule: Callable) -> Op:
        code = OPS[name].code if name in OPS else len(BY_CODE)
        row = Op(name, code, arity, numpy, llvm, rule, domain, tuple(libm), smooth, note, definition,
                 tuple(uses), commutative, curvature, tangent=tangent, **facts)
        OPS[name] = row
        if code == len(BY_CODE):
            BY_CODE.append(row)
        else:
            BY_CODE[code] = row
        return row

    return register


def call(name: str, *args):
    """Apply op ``name`` (by name: replays of stored code, user-defined ops); see ``Op.__call__``."""
    return OPS[name](*args)


def plus(a, b):
    """a + b where None is an exact zero (tangent rules sum only the nonzero terms)."""
    return b if a is None else a if b is None else a + b


def minus(a, b):
    """a - b where None is an exact zero; a - b is a + (-b) bitwise, so this equals that sum."""
    return a if b is None else -b if a is None else a - b


def times(t, v):
    """t * v for a tangent ``t`` that may be None (zero)."""
    return None if t is None else t * v


def choose(c, t_a, t_b):
    """select(c, t_a, t_b) where None is an exact zero: the tangent of a choice between two values (None when
    only the condition has a tangent: a choice carries none of it)."""
    if t_a is None and t_b is None:
        return None
    select = OPS["select"]
    if t_b is None:
        return select(c, t_a, 0.0)
    return select(c, 0.0, t_b) if t_a is None else select(c, t_a, t_b)


def as_float64(fn: Callable) -> Callable:
    """Wrap a comparison or select so numpy evaluation returns float64 (tapes hold only doubles)."""
    return lambda *a: np.asarray(fn(*a), dtype=np.float64)


def fcmp(pred: str) -> str:
    """The lowering of a comparison: 1.0 if ``pred`` holds, else 0.0."""
    return "{out}.c = fcmp " + pred + " double {0}, {1}\n{out} = uitofp i1 {out}.c to double"


def libm_call(fn: str, n: int = 1) -> str:
    """The lowering of a call of libm's ``fn`` on the op's ``n`` arguments."""
    args = ", ".join(f"double {{{i}}}" for i in range(n))
    return f"{{out}} = call double @{fn}({args})"


def expose(namespace: dict, rows) -> None:
    """Bind each row under its name (unless a Python builtin has it) and its ufunc's name in ``namespace``."""
    for row in rows:
        for name in (row.name, row.spelling):
            if name and not hasattr(builtins, name):
                namespace[name] = row
