"""The op table: every scalar operation tapead knows is declared here once (and in ``ops_extra.py``, loaded at the
end), and nowhere else defines math or knows a fact about an op.

A row (``optable.Op``) holds the op's name, arity, numpy evaluation (the interpreter and constant folding use
it), its LLVM lowering (a text-IR template), its input domain (for tests), the name of the ufunc that computes
it, its reverse rule (the decorated function: the contribution of an output cotangent ``g`` to each argument,
``sin -> (g * cos(x),)``), its forward rule (``tangent=``: the output's tangent from the arguments' tangents),
and what the recorder, sparsity and the NaN-safe sweeps may assume about it. Rules are written in tapead's own
ops, so running them on tracers records the derivative program.

Rows are callable (``sin(x)`` records on tracers, folds on floats). This module exposes each row under its own
name and under its ufunc's name (``ops.abs`` is not bound, ``abs`` being a builtin: ``ops.absolute`` is that
row); the rules below call rows by those names. Row order is the op codes saved tapes and cached kernels use:
new rows go at the end.
"""
from __future__ import annotations

import operator

import numpy as np

from .optable import BY_CODE, INF, OPS, Op, as_float64, call, choose, expose, fcmp, libm_call, minus, op, plus, times


def _power(x, y):
    """What ``x ** y`` and ``np.power`` record. Constant exponents 2..64 become multiplications (exact to an ulp,
    differentiable at 0 and inf), x ** -1 is 1 / x; other constant exponents, negative integers among them, stay
    ``pow``: 1 / (x * x) would give NaN derivatives at 0 and inf where y * x ** (y - 1) gives the right
    infinities and zeros, and sqrt(x) would differ from pow(x, 0.5) at -0 and -inf. (Derivative rules call the
    bare row: their recorded programs do not depend on this.)"""
    if isinstance(y, (int, float, np.integer, np.floating, np.bool_)) or (
            isinstance(y, np.ndarray) and y.ndim == 0 and y.dtype.kind in "fiub"):
        y = float(y)
        if y.is_integer() and 0 <= y <= 64:
            n, result, base = int(y), None, x
            while n:
                if n & 1:
                    result = base if result is None else result * base
                n >>= 1
                if n:
                    base = base * base
            return 1.0 if result is None else result
        if y == -1.0:
            return 1.0 / x
    return power(x, y)  # noqa: F821  (rows are bound by name at the end of this module)


# ---- the table ------------------------------------------------------------------------------------
# In the tangent rules ts = (t0, t1, ...) are the arguments' tangents (None = zero), and the terms are summed in
# argument order with the reverse rule's expressions, so forward mode computes what summing the reverse rule's
# contributions did, bitwise (a - b is a + (-b) exactly), without recording the terms of zero tangents.
@op("add", 2, np.add, "{out} = fadd double {0}, {1}", commutative=True, curvature="linear", right_identity=0.0,
    left_identity=0.0, spelling="add", python=operator.add, tangent=lambda ts, x, y, out: plus(*ts),
    weights=lambda w, x, y: (w, w), associative=True)
def _(g, x, y, out): return g, g


@op("sub", 2, np.subtract, "{out} = fsub double {0}, {1}", curvature="linear", right_identity=0.0,
    spelling="subtract", python=operator.sub, tangent=lambda ts, x, y, out: minus(*ts),
    weights=lambda w, x, y: (w, -w))
def _(g, x, y, out): return g, -g


@op("mul", 2, np.multiply, "{out} = fmul double {0}, {1}", commutative=True, curvature="bilinear",
    right_identity=1.0, left_identity=1.0, right_negation=-1.0, left_negation=-1.0, absorbing=0.0,
    spelling="multiply", python=operator.mul, tangent=lambda ts, x, y, out: plus(times(ts[0], y), times(ts[1], x)),
    weights=lambda w, x, y: (None, w * x) if x is not None else (w * y, None) if y is not None else None,
    associative=True)
def _(g, x, y, out): return g * y, g * x


def _div_tangent(ts, x, y, out):
    t0, t1 = ts
    return minus(None if t0 is None else t0 / y, None if t1 is None else (t1 * out) / y)


@op("div", 2, np.divide, "{out} = fdiv double {0}, {1}", curvature="quotient", right_identity=1.0,
    right_negation=-1.0, spelling="divide", aliases=("true_divide",), tangent=_div_tangent,
    weights=lambda w, x, y: (w / y, None) if y is not None else None)
def _(g, x, y, out): return g / y, -(g * out) / y


@op("neg", 1, np.negative, "{out} = fneg double {0}", curvature="linear", involution=True, spelling="negative",
    python=operator.neg, tangent=lambda ts, x, out: -ts[0], weights=lambda w, x: (-w,))
def _(g, x, out): return (-g,)


@op("sin", 1, np.sin, libm_call("sin"), libm=("sin",), spelling="sin", tangent=lambda ts, x, out: ts[0] * cos(x))
def _(g, x, out): return (g * cos(x),)


@op("cos", 1, np.cos, libm_call("cos"), libm=("cos",), spelling="cos",
    tangent=lambda ts, x, out: -(ts[0] * sin(x)))
def _(g, x, out): return (-(g * sin(x)),)


@op("exp", 1, np.exp, libm_call("exp"), libm=("exp",), spelling="exp", tangent=lambda ts, x, out: ts[0] * out)
def _(g, x, out): return (g * out,)


@op("log", 1, np.log, libm_call("log"), domain=(0.0, INF), libm=("log",), spelling="log",
    tangent=lambda ts, x, out: ts[0] / x)
def _(g, x, out): return (g / x,)


@op("sqrt", 1, np.sqrt, "{out} = call double @llvm.sqrt.f64(double {0})", domain=(0.0, INF), spelling="sqrt",
    tangent=lambda ts, x, out: ts[0] / (2.0 * out))
def _(g, x, out): return (g / (2.0 * out),)


@op("tanh", 1, np.tanh, libm_call("tanh"), libm=("tanh",), spelling="tanh",
    tangent=lambda ts, x, out: ts[0] * (1.0 - out * out))
def _(g, x, out): return (g * (1.0 - out * out),)


def _pow_dy(g, x, y, out):
    # d/dy: x**y * log(x) is 0 * -inf at x = 0; the select masks that branch (also in higher derivatives)
    return select(eq(x, 0.0), 0.0, g * (out * log(x)))


@op("pow", 2, np.power, libm_call("pow", 2), domain=(0.0, INF), libm=("pow",),
    note="d/dx = y * x**(y-1) (no log, so finite at x = 0 for y >= 1); d/dy = 0 where x == 0 (0**y is "
         "constant in y on each side of y = 0)", right_identity=1.0, spelling="power", aliases=("float_power",),
    surface=_power, tangent=lambda ts, x, y, out: plus(None if ts[0] is None else ts[0] * (y * power(x, y - 1.0)),
                                                       None if ts[1] is None else _pow_dy(ts[1], x, y, out)))
def _(g, x, y, out): return g * (y * power(x, y - 1.0)), _pow_dy(g, x, y, out)


@op("abs", 1, np.abs, "{out} = call double @llvm.fabs.f64(double {0})", smooth=False, curvature="piecewise",
    note="d|x|/dx = sign(x), so 0 at x = 0", spelling="absolute", aliases=("fabs",),
    tangent=lambda ts, x, out: ts[0] * sign(x))
def _(g, x, out): return (g * sign(x),)


def _no_tangent(ts, *args_out):
    return None


@op("sign", 1, np.sign,
    "{out}.p = fcmp ogt double {0}, 0.0\n{out}.n = fcmp olt double {0}, 0.0\n"
    "{out}.z = fadd double {0}, 0.0\n{out}.m = select i1 {out}.n, double -1.0, double {out}.z\n"
    "{out} = select i1 {out}.p, double 1.0, double {out}.m", smooth=False,
    note="sign(+-0) = +0 (as numpy), sign(NaN) = NaN; derivative 0 everywhere (also at the jump)",
    spelling="sign", no_derivative=True, tangent=_no_tangent)
def _(g, x, out): return (None,)


def _no_derivative(g, *args):
    return (None,) * (len(args) - 1)


for _name, _fn, _pred, _spelling in [("lt", np.less, "olt", "less"), ("le", np.less_equal, "ole", "less_equal"),
                                     ("gt", np.greater, "ogt", "greater"),
                                     ("ge", np.greater_equal, "oge", "greater_equal"),
                                     ("eq", np.equal, "oeq", "equal"), ("ne", np.not_equal, "une", "not_equal")]:
    op(_name, 2, as_float64(_fn), fcmp(_pred), smooth=False, note="1.0 if true else 0.0; no derivative",
       commutative=_name in ("eq", "ne"), spelling=_spelling, no_derivative=True, predicate=True,
       tangent=_no_tangent)(
        _no_derivative)


@op("select", 3, as_float64(lambda c, a, b: np.where(c != 0, a, b)),
    "{out}.c = fcmp une double {0}, 0.0\n{out} = select i1 {out}.c, double {1}, double {2}", smooth=False,
    curvature="piecewise", note="select(c, a, b) = a where c != 0 else b; the branch not taken gets an exact zero "
    "derivative", chooses=True, passive=(0,), tangent=lambda ts, c, a, b, out: choose(c, ts[1], ts[2]))
def _(g, c, a, b, out): return None, select(c, g, 0.0), select(c, 0.0, g)


def _first_wins(pick, x, y):
    """Whether the derivative of max/min goes to ``x``: where ``x`` is picked (``pick``: x >= y resp. x <= y, so
    ties go to x) or where ``x`` is NaN (the NaN is what propagates); a NaN ``y`` takes it."""
    return pick(x, y) + ne(x, x)


@op("max", 2, np.maximum,
    "{out}.g = fcmp ogt double {0}, {1}\n{out}.u = fcmp uno double {0}, {0}\n"
    "{out}.k = or i1 {out}.g, {out}.u\n{out} = select i1 {out}.k, double {0}, double {1}",
    smooth=False, associative=True, curvature="piecewise", note="value as numpy: x if x > y or x is NaN, else y (so a NaN propagates and "
    "max(0.0, -0.0) = -0.0); the derivative goes to the argument whose NaN propagates, and on a tie x == y to x",
    spelling="maximum", tangent=lambda ts, x, y, out: choose(_first_wins(ge, x, y), *ts))
def _(g, x, y, out):
    c = _first_wins(ge, x, y)
    return select(c, g, 0.0), select(c, 0.0, g)


@op("min", 2, np.minimum,
    "{out}.g = fcmp olt double {0}, {1}\n{out}.u = fcmp uno double {0}, {0}\n"
    "{out}.k = or i1 {out}.g, {out}.u\n{out} = select i1 {out}.k, double {0}, double {1}",
    smooth=False, associative=True, curvature="piecewise", note="value as numpy: x if x < y or x is NaN, else y (min(0.0, -0.0) = -0.0); the "
    "derivative goes to the argument whose NaN propagates, and on a tie x == y to x",
    spelling="minimum", tangent=lambda ts, x, y, out: choose(_first_wins(le, x, y), *ts))
def _(g, x, y, out):
    c = _first_wins(le, x, y)
    return select(c, g, 0.0), select(c, 0.0, g)


@op("tan", 1, np.tan, libm_call("tan"), domain=(-1.5, 1.5), libm=("tan",), spelling="tan",
    tangent=lambda ts, x, out: ts[0] * (1.0 + out * out))
def _(g, x, out): return (g * (1.0 + out * out),)


@op("log1p", 1, np.log1p, libm_call("log1p"), domain=(-1.0, INF), libm=("log1p",), spelling="log1p",
    tangent=lambda ts, x, out: ts[0] / (1.0 + x))
def _(g, x, out): return (g / (1.0 + x),)


@op("expm1", 1, np.expm1, libm_call("expm1"), libm=("expm1",), spelling="expm1",
    tangent=lambda ts, x, out: ts[0] * (out + 1.0))
def _(g, x, out): return (g * (out + 1.0),)


@op("sinh", 1, np.sinh, libm_call("sinh"), libm=("sinh",), spelling="sinh",
    tangent=lambda ts, x, out: ts[0] * cosh(x))
def _(g, x, out): return (g * cosh(x),)


@op("cosh", 1, np.cosh, libm_call("cosh"), libm=("cosh",), spelling="cosh",
    tangent=lambda ts, x, out: ts[0] * sinh(x))
def _(g, x, out): return (g * sinh(x),)


@op("asin", 1, np.arcsin, libm_call("asin"), domain=(-1.0, 1.0), libm=("asin",), spelling="arcsin",
    tangent=lambda ts, x, out: ts[0] / sqrt(1.0 - x * x))
def _(g, x, out): return (g / sqrt(1.0 - x * x),)


@op("acos", 1, np.arccos, libm_call("acos"), domain=(-1.0, 1.0), libm=("acos",), spelling="arccos",
    tangent=lambda ts, x, out: -(ts[0] / sqrt(1.0 - x * x)))
def _(g, x, out): return (-(g / sqrt(1.0 - x * x)),)


@op("atan", 1, np.arctan, libm_call("atan"), libm=("atan",), spelling="arctan",
    tangent=lambda ts, x, out: ts[0] / (1.0 + x * x))
def _(g, x, out): return (g / (1.0 + x * x),)


def _atan2_scaled(y, x):
    # computed on (x, y) / s with s a power of two near their size that carries no derivative (floor), so that
    # higher derivatives do not form 1/r**2 terms that overflow separately before cancelling (inf - inf)
    s = call("exp2", call("floor", call("log2", hypot(x, y))))
    xs, ys = x / s, y / s
    return s, xs, ys, hypot(xs, ys)


def _atan2_tangent(ts, y, x, out):
    s, xs, ys, r = _atan2_scaled(y, x)
    return minus(None if ts[0] is None else (ts[0] / s) * ((xs / r) / r),
                 None if ts[1] is None else (ts[1] / s) * ((ys / r) / r))


@op("atan2", 2, np.arctan2, libm_call("atan2", 2), libm=("atan2",),
    note="atan2(y, x); derivative (x, -y) / (x*x + y*y), NaN at (0, 0) and at infinite arguments",
    spelling="arctan2", tangent=_atan2_tangent)
def _(g, y, x, out):
    s, xs, ys, r = _atan2_scaled(y, x)
    return (g / s) * ((xs / r) / r), -((g / s) * ((ys / r) / r))


def _hypot_tangent(ts, x, y, out):
    z = eq(out, 0.0)
    return plus(*(None if t is None else select(z, 0.0, t * v / out) for t, v in zip(ts, (x, y))))


@op("hypot", 2, np.hypot, libm_call("hypot", 2), libm=("hypot",),
    note="derivative (x, y) / hypot; at (+-0, +-0) it is (0, 0), the minimum-norm subgradient (as d|x|/dx "
         "at 0); NaN where an argument is infinite", spelling="hypot", tangent=_hypot_tangent)
def _(g, x, y, out):
    z = eq(out, 0.0)  # both arguments zero: the masked branch would be 0/0
    return select(z, 0.0, g * x / out), select(z, 0.0, g * y / out)


from . import ops_extra  # noqa: E402,F401  (declares the rest of the table; it reads the rows above from OPS)

expose(globals(), BY_CODE)  # the built-in rows (user-defined ones are declared later and not bound here)
COMPARISONS = frozenset(row.name for row in BY_CODE if row.predicate)
NO_DERIVATIVE = frozenset(row.name for row in BY_CODE if row.no_derivative)  # their outputs carry no derivative
