"""The op table: every scalar operation tapead knows is declared here once, and nowhere else defines math.

A row holds the op's name, arity, numpy evaluation (the interpreter and constant folding use it), its LLVM
lowering (a text-IR template), its input domain (for tests) and its derivative rule.

Derivative rules are written in tapead's own ops, as the contribution of an output cotangent ``g`` to each
argument: ``sin -> (g * cos(x),)``. Each contribution is linear in ``g``, and for scalar ops a 1x1 linear map
is its own transpose, so the same rule drives reverse mode (``g`` = adjoint) and forward mode (``g`` = tangent
of that argument). Because rules call ops, running them on tracers records the derivative program.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

INF = float("inf")


@dataclass(frozen=True)
class Op:
    """One scalar operation: how to evaluate it, lower it and differentiate it."""

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


OPS: dict[str, Op] = {}
BY_CODE: list[Op] = []


def op(name: str, arity: int, numpy: Callable, llvm: str, *, domain=(-INF, INF), libm=(), smooth=True,
       note="", definition="", uses=(), commutative=False, curvature="general", **identities):
    """Declare an op; the decorated function is its derivative rule. Declaring a name again replaces its row.
    ``identities``: the Op fields from ``right_identity`` on."""

    def register(rule: Callable) -> Callable:
        code = OPS[name].code if name in OPS else len(BY_CODE)
        row = Op(name, code, arity, numpy, llvm, rule, domain, tuple(libm), smooth, note, definition,
                 tuple(uses), commutative, curvature, **identities)
        OPS[name] = row
        if code == len(BY_CODE):
            BY_CODE.append(row)
        else:
            BY_CODE[code] = row
        return rule

    return register


def call(name: str, *args):
    """Apply op ``name``: on tracers this records an instruction, on plain floats it folds to a float."""
    row = OPS[name]
    for a in args:
        if type(a) is not float:  # floats fold; the first tracer records
            emit = getattr(a, "_emit", None)
            if emit is not None:
                return emit(row, args)
    with np.errstate(all="ignore"):
        return float(row.numpy(*(np.float64(a) for a in args)))


def _f(fn):
    """Wrap a comparison or select so numpy evaluation returns float64 (tapes hold only doubles)."""
    return lambda *a: np.asarray(fn(*a), dtype=np.float64)


def _cmp(pred):
    return "{out}.c = fcmp " + pred + " double {0}, {1}\n{out} = uitofp i1 {out}.c to double"


def _libm(fn, n=1):
    args = ", ".join(f"double {{{i}}}" for i in range(n))
    return f"{{out}} = call double @{fn}({args})"


# ---- the public op functions (used by derivative rules, the tracer and composites) -----------------
def add(a, b): return call("add", a, b)
def sub(a, b): return call("sub", a, b)
def mul(a, b): return call("mul", a, b)
def div(a, b): return call("div", a, b)
def neg(a): return call("neg", a)
def sin(a): return call("sin", a)
def cos(a): return call("cos", a)
def exp(a): return call("exp", a)
def log(a): return call("log", a)
def sqrt(a): return call("sqrt", a)
def tanh(a): return call("tanh", a)
def absolute(a): return call("abs", a)
def sign(a): return call("sign", a)
def power(a, b): return call("pow", a, b)
def lt(a, b): return call("lt", a, b)
def le(a, b): return call("le", a, b)
def gt(a, b): return call("gt", a, b)
def ge(a, b): return call("ge", a, b)
def eq(a, b): return call("eq", a, b)
def ne(a, b): return call("ne", a, b)
def select(c, a, b): return call("select", c, a, b)
def maximum(a, b): return call("max", a, b)
def tan(a): return call("tan", a)
def log1p(a): return call("log1p", a)
def expm1(a): return call("expm1", a)
def sinh(a): return call("sinh", a)
def cosh(a): return call("cosh", a)
def arcsin(a): return call("asin", a)
def arccos(a): return call("acos", a)
def arctan(a): return call("atan", a)
def arctan2(a, b): return call("atan2", a, b)
def hypot(a, b): return call("hypot", a, b)
def minimum(a, b): return call("min", a, b)


# ---- the table ------------------------------------------------------------------------------------
@op("add", 2, np.add, "{out} = fadd double {0}, {1}", commutative=True, curvature="linear", right_identity=0.0,
    left_identity=0.0)
def _(g, x, y, out): return g, g


@op("sub", 2, np.subtract, "{out} = fsub double {0}, {1}", curvature="linear", right_identity=0.0)
def _(g, x, y, out): return g, -g


@op("mul", 2, np.multiply, "{out} = fmul double {0}, {1}", commutative=True, curvature="bilinear",
    right_identity=1.0, left_identity=1.0, right_negation=-1.0, left_negation=-1.0, absorbing=0.0)
def _(g, x, y, out): return g * y, g * x


@op("div", 2, np.divide, "{out} = fdiv double {0}, {1}", curvature="quotient", right_identity=1.0,
    right_negation=-1.0)
def _(g, x, y, out): return g / y, -(g * out) / y


@op("neg", 1, np.negative, "{out} = fneg double {0}", curvature="linear", involution=True)
def _(g, x, out): return (-g,)


@op("sin", 1, np.sin, _libm("sin"), libm=("sin",))
def _(g, x, out): return (g * cos(x),)


@op("cos", 1, np.cos, _libm("cos"), libm=("cos",))
def _(g, x, out): return (-(g * sin(x)),)


@op("exp", 1, np.exp, _libm("exp"), libm=("exp",))
def _(g, x, out): return (g * out,)


@op("log", 1, np.log, _libm("log"), domain=(0.0, INF), libm=("log",))
def _(g, x, out): return (g / x,)


@op("sqrt", 1, np.sqrt, "{out} = call double @llvm.sqrt.f64(double {0})", domain=(0.0, INF))
def _(g, x, out): return (g / (2.0 * out),)


@op("tanh", 1, np.tanh, _libm("tanh"), libm=("tanh",))
def _(g, x, out): return (g * (1.0 - out * out),)


@op("pow", 2, np.power, _libm("pow", 2), domain=(0.0, INF), libm=("pow",),
    note="d/dx = y * x**(y-1) (no log, so finite at x = 0 for y >= 1); d/dy = 0 where x == 0 (0**y is "
         "constant in y on each side of y = 0)", right_identity=1.0)
def _(g, x, y, out):
    # d/dy: x**y * log(x) is 0 * -inf at x = 0; the select masks that branch (also in higher derivatives)
    return g * (y * power(x, y - 1.0)), select(eq(x, 0.0), 0.0, g * (out * log(x)))


@op("abs", 1, np.abs, "{out} = call double @llvm.fabs.f64(double {0})", smooth=False, curvature="piecewise",
    note="d|x|/dx = sign(x), so 0 at x = 0")
def _(g, x, out): return (g * sign(x),)


@op("sign", 1, np.sign,
    "{out}.p = fcmp ogt double {0}, 0.0\n{out}.n = fcmp olt double {0}, 0.0\n"
    "{out}.z = fadd double {0}, 0.0\n{out}.m = select i1 {out}.n, double -1.0, double {out}.z\n"
    "{out} = select i1 {out}.p, double 1.0, double {out}.m", smooth=False,
    note="sign(+-0) = +0 (as numpy), sign(NaN) = NaN; derivative 0 everywhere (also at the jump)")
def _(g, x, out): return (None,)


def _no_derivative(g, *args):
    return (None,) * (len(args) - 1)


for _name, _fn, _pred in [("lt", np.less, "olt"), ("le", np.less_equal, "ole"), ("gt", np.greater, "ogt"),
                          ("ge", np.greater_equal, "oge"), ("eq", np.equal, "oeq"),
                          ("ne", np.not_equal, "une")]:
    op(_name, 2, _f(_fn), _cmp(_pred), smooth=False, note="1.0 if true else 0.0; no derivative",
       commutative=_name in ("eq", "ne"))(
        _no_derivative)


@op("select", 3, _f(lambda c, a, b: np.where(c != 0, a, b)),
    "{out}.c = fcmp une double {0}, 0.0\n{out} = select i1 {out}.c, double {1}, double {2}", smooth=False,
    curvature="piecewise", note="select(c, a, b) = a where c != 0 else b; the branch not taken gets an exact zero derivative",
    chooses=True)
def _(g, c, a, b, out): return None, select(c, g, 0.0), select(c, 0.0, g)


def _first_wins(pick, x, y):
    """Whether the derivative of max/min goes to ``x``: where ``x`` is picked (``pick``: x >= y resp. x <= y, so
    ties go to x) or where ``x`` is NaN (the NaN is what propagates); a NaN ``y`` takes it."""
    return pick(x, y) + ne(x, x)


@op("max", 2, np.maximum,
    "{out}.g = fcmp ogt double {0}, {1}\n{out}.u = fcmp uno double {0}, {0}\n"
    "{out}.k = or i1 {out}.g, {out}.u\n{out} = select i1 {out}.k, double {0}, double {1}",
    smooth=False, curvature="piecewise", note="value as numpy: x if x > y or x is NaN, else y (so a NaN propagates and "
    "max(0.0, -0.0) = -0.0); the derivative goes to the argument whose NaN propagates, and on a tie x == y to x")
def _(g, x, y, out):
    c = _first_wins(ge, x, y)
    return select(c, g, 0.0), select(c, 0.0, g)


@op("min", 2, np.minimum,
    "{out}.g = fcmp olt double {0}, {1}\n{out}.u = fcmp uno double {0}, {0}\n"
    "{out}.k = or i1 {out}.g, {out}.u\n{out} = select i1 {out}.k, double {0}, double {1}",
    smooth=False, curvature="piecewise", note="value as numpy: x if x < y or x is NaN, else y (min(0.0, -0.0) = -0.0); the "
    "derivative goes to the argument whose NaN propagates, and on a tie x == y to x")
def _(g, x, y, out):
    c = _first_wins(le, x, y)
    return select(c, g, 0.0), select(c, 0.0, g)


@op("tan", 1, np.tan, _libm("tan"), domain=(-1.5, 1.5), libm=("tan",))
def _(g, x, out): return (g * (1.0 + out * out),)


@op("log1p", 1, np.log1p, _libm("log1p"), domain=(-1.0, INF), libm=("log1p",))
def _(g, x, out): return (g / (1.0 + x),)


@op("expm1", 1, np.expm1, _libm("expm1"), libm=("expm1",))
def _(g, x, out): return (g * (out + 1.0),)


@op("sinh", 1, np.sinh, _libm("sinh"), libm=("sinh",))
def _(g, x, out): return (g * cosh(x),)


@op("cosh", 1, np.cosh, _libm("cosh"), libm=("cosh",))
def _(g, x, out): return (g * sinh(x),)


@op("asin", 1, np.arcsin, _libm("asin"), domain=(-1.0, 1.0), libm=("asin",))
def _(g, x, out): return (g / sqrt(1.0 - x * x),)


@op("acos", 1, np.arccos, _libm("acos"), domain=(-1.0, 1.0), libm=("acos",))
def _(g, x, out): return (-(g / sqrt(1.0 - x * x)),)


@op("atan", 1, np.arctan, _libm("atan"), libm=("atan",))
def _(g, x, out): return (g / (1.0 + x * x),)


@op("atan2", 2, np.arctan2, _libm("atan2", 2), libm=("atan2",),
    note="atan2(y, x); derivative (x, -y) / (x*x + y*y), NaN at (0, 0) and at infinite arguments")
def _(g, y, x, out):
    # computed on (x, y) / s with s a power of two near their size that carries no derivative (floor), so that
    # higher derivatives do not form 1/r**2 terms that overflow separately before cancelling (inf - inf)
    s = call("exp2", call("floor", call("log2", hypot(x, y))))
    xs, ys = x / s, y / s
    r = hypot(xs, ys)
    return (g / s) * ((xs / r) / r), -((g / s) * ((ys / r) / r))


@op("hypot", 2, np.hypot, _libm("hypot", 2), libm=("hypot",),
    note="derivative (x, y) / hypot; at (+-0, +-0) it is (0, 0), the minimum-norm subgradient (as d|x|/dx "
         "at 0); NaN where an argument is infinite")
def _(g, x, y, out):
    z = eq(out, 0.0)  # both arguments zero: the masked branch would be 0/0
    return select(z, 0.0, g * x / out), select(z, 0.0, g * y / out)


COMPARISONS = frozenset({"lt", "le", "gt", "ge", "eq", "ne"})

from .ops_extra import PIECEWISE_CONSTANT, floor_divide, remainder  # noqa: E402,F401  (registers more rows)

NO_DERIVATIVE = COMPARISONS | {"sign"} | PIECEWISE_CONSTANT  # their outputs carry no derivative at all
