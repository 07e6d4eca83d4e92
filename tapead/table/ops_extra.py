"""More rows of the op table (``tapead.ops`` loads this module at its end, so every row lives in one table; this
module binds its own rows by name too, as ``ops`` does: ``ops_extra.floor_divide`` is the row "floordiv").

Each row is one libm call, one LLVM intrinsic or a few instructions that reproduce numpy's own algorithm
(remainder, floor_divide, logaddexp follow numpy's C code step by step, so kernel and interpreter agree with
numpy at every edge). Piecewise-constant ops (floor, ceil, trunc, rint, floordiv) have derivative 0: they are
marked ``no_derivative``, so no derivative flows through them, also not at their jumps.
"""
from __future__ import annotations

import numpy as np

from .optable import BY_CODE, INF, OPS, choose, expose, libm_call as _libm, minus, op, plus

# the rows of ops.py these rules call (ops.py loads this module after declaring them: loaded first, this fails
# here instead of giving the rows below other codes)
exp, hypot, ne, select, sign, sqrt = (OPS[n] for n in ("exp", "hypot", "ne", "select", "sign", "sqrt"))
_FIRST = len(BY_CODE)

LN2 = float(np.log(2.0))
LN10 = float(np.log(10.0))
LOG2E = float(np.log2(np.e))
TWO_OVER_SQRT_PI = float(2.0 / np.sqrt(np.pi))


def _hex(v: float) -> str:
    return "0x%016X" % np.float64(v).view(np.uint64)


@op("erf", 1, np.vectorize(__import__("math").erf, otypes=[float]), _libm("erf"), libm=("erf",), spelling="erf",
    tangent=lambda ts, x, out: ts[0] * (TWO_OVER_SQRT_PI * exp(-(x * x))))
def _(g, x, out): return (g * (TWO_OVER_SQRT_PI * exp(-(x * x))),)


@op("erfc", 1, np.vectorize(__import__("math").erfc, otypes=[float]), _libm("erfc"), libm=("erfc",), spelling="erfc",
    tangent=lambda ts, x, out: -(ts[0] * (TWO_OVER_SQRT_PI * exp(-(x * x)))))
def _(g, x, out): return (-(g * (TWO_OVER_SQRT_PI * exp(-(x * x)))),)


@op("cbrt", 1, np.cbrt, _libm("cbrt"), libm=("cbrt",), note="derivative +inf at +-0", spelling="cbrt",
    tangent=lambda ts, x, out: ts[0] / (3.0 * (out * out)))
def _(g, x, out): return (g / (3.0 * (out * out)),)


@op("exp2", 1, np.exp2, _libm("exp2"), libm=("exp2",), spelling="exp2", tangent=lambda ts, x, out: ts[0] * (out * LN2))
def _(g, x, out): return (g * (out * LN2),)


@op("log2", 1, np.log2, _libm("log2"), domain=(0.0, INF), libm=("log2",), spelling="log2",
    tangent=lambda ts, x, out: ts[0] / (x * LN2))
def _(g, x, out): return (g / (x * LN2),)


@op("log10", 1, np.log10, _libm("log10"), domain=(0.0, INF), libm=("log10",), spelling="log10",
    tangent=lambda ts, x, out: ts[0] / (x * LN10))
def _(g, x, out): return (g / (x * LN10),)


@op("asinh", 1, np.arcsinh, _libm("asinh"), libm=("asinh",), spelling="arcsinh",
    tangent=lambda ts, x, out: ts[0] / hypot(1.0, x))
def _(g, x, out): return (g / hypot(1.0, x),)  # sqrt(1 + x*x) would overflow for |x| > 1e154


@op("acosh", 1, np.arccosh, _libm("acosh"), domain=(1.0, INF), libm=("acosh",), note="derivative +inf at 1",
    spelling="arccosh", tangent=lambda ts, x, out: ts[0] / (sqrt(x - 1.0) * sqrt(x + 1.0)))
def _(g, x, out): return (g / (sqrt(x - 1.0) * sqrt(x + 1.0)),)


@op("atanh", 1, np.arctanh, _libm("atanh"), domain=(-1.0, 1.0), libm=("atanh",), note="derivative +inf at +-1",
    spelling="arctanh", tangent=lambda ts, x, out: ts[0] / ((1.0 - x) * (1.0 + x)))
def _(g, x, out): return (g / ((1.0 - x) * (1.0 + x)),)


def _quotient_step_tangent(ts, x, y, out):
    """fmod and mod: t0 - t1 * rint((x - out) / y), the integer quotient's term only for a nonzero t1."""
    return minus(ts[0], None if ts[1] is None else ts[1] * rint((x - out) / y))


def _no_tangent(ts, *args_out):
    return None


_STEP = "piecewise constant: derivative 0 everywhere, also at the jumps"
for _name, _fn, _intrinsic in [("floor", np.floor, "floor"), ("ceil", np.ceil, "ceil"), ("trunc", np.trunc, "trunc"),
                               ("rint", np.rint, "rint")]:
    op(_name, 1, _fn, f"{{out}} = call double @llvm.{_intrinsic}.f64(double {{0}})", smooth=False,
       note=_STEP + ("; rint rounds half to even, as np.round" if _name == "rint" else ""), spelling=_name,
       no_derivative=True, tangent=_no_tangent)(
        lambda g, x, out: (None,))


@op("f32", 1, lambda x: np.asarray(x, np.float64).astype(np.float32).astype(np.float64),
    "{out}.f = fptrunc double {0} to float\n{out} = fpext float {out}.f to double",
    note="x.astype(np.float32): the nearest float32 (ties to even; overflow to inf); derivative 1",
    tangent=lambda ts, x, out: ts[0])
def _(g, x, out): return (g,)


@op("fmod", 2, np.fmod, "{out} = frem double {0}, {1}", smooth=False,
    note="C fmod (sign of x); d/dx = 1, d/dy = -trunc(x / y); NaN for y = 0 or infinite x", spelling="fmod",
    tangent=_quotient_step_tangent)
def _(g, x, y, out): return g, -(g * rint((x - out) / y))


_SIGNED_ZERO_OF_Y = ("{out}.yb = bitcast double {1} to i64\n{out}.yn = icmp slt i64 {out}.yb, 0\n"
                     "{out}.z = select i1 {out}.yn, double -0.0, double 0.0\n")


@op("mod", 2, np.remainder,
    "{out}.m = frem double {0}, {1}\n{out}.bn = fcmp olt double {1}, 0.0\n{out}.mn = fcmp olt double {out}.m, 0.0\n"
    "{out}.df = xor i1 {out}.bn, {out}.mn\n{out}.nz = fcmp one double {out}.m, 0.0\n"
    "{out}.adj = and i1 {out}.df, {out}.nz\n{out}.a = fadd double {out}.m, {1}\n"
    "{out}.r = select i1 {out}.adj, double {out}.a, double {out}.m\n" + _SIGNED_ZERO_OF_Y +
    "{out}.iz = fcmp oeq double {out}.m, 0.0\n{out} = select i1 {out}.iz, double {out}.z, double {out}.r",
    smooth=False, note="np.remainder / %: sign of y, a zero result takes y's sign (numpy); d/dx = 1, "
    "d/dy = -floor(x / y)", spelling="remainder", tangent=_quotient_step_tangent)
def _(g, x, y, out): return g, -(g * rint((x - out) / y))


@op("floordiv", 2, np.floor_divide,
    "{out}.m = frem double {0}, {1}\n{out}.q0 = fsub double {0}, {out}.m\n{out}.q = fdiv double {out}.q0, {1}\n"
    "{out}.bn = fcmp olt double {1}, 0.0\n{out}.mn = fcmp olt double {out}.m, 0.0\n"
    "{out}.df = xor i1 {out}.bn, {out}.mn\n{out}.nz = fcmp une double {out}.m, 0.0\n"
    "{out}.adj = and i1 {out}.df, {out}.nz\n{out}.q1 = fsub double {out}.q, 1.0\n"
    "{out}.d = select i1 {out}.adj, double {out}.q1, double {out}.q\n"
    "{out}.f = call double @llvm.floor.f64(double {out}.d)\n{out}.fr = fsub double {out}.d, {out}.f\n"
    "{out}.up = fcmp ogt double {out}.fr, 0.5\n{out}.f1 = fadd double {out}.f, 1.0\n"
    "{out}.fl = select i1 {out}.up, double {out}.f1, double {out}.f\n"
    "{out}.xy = fdiv double {0}, {1}\n{out}.zb = bitcast double {out}.xy to i64\n"
    "{out}.zn = icmp slt i64 {out}.zb, 0\n{out}.z = select i1 {out}.zn, double -0.0, double 0.0\n"
    "{out}.dz = fcmp oeq double {out}.d, 0.0\n{out}.r = select i1 {out}.dz, double {out}.z, double {out}.fl\n"
    "{out}.b0 = fcmp oeq double {1}, 0.0\n{out} = select i1 {out}.b0, double {out}.xy, double {out}.r",
    smooth=False, note="np.floor_divide / //: numpy's algorithm (x / 0 for y = 0); " + _STEP, spelling="floor_divide",
    no_derivative=True, tangent=_no_tangent)
def _(g, x, y, out): return None, None


def _logaddexp_ir(exp_fn: str, tie: str, scale: str | None) -> str:
    """numpy's npy_logaddexp(2): x + tie on a tie, else max + log1p(exp(-|x - y|)) (times log2(e) for base 2)."""
    scaled = (f"{{out}}.l = fmul double {{out}}.l0, {scale}\n" if scale else "")
    return ("{out}.e = fcmp oeq double {0}, {1}\n{out}.t = fadd double {0}, " + tie + "\n"
            "{out}.d = fsub double {0}, {1}\n{out}.p = fcmp ogt double {out}.d, 0.0\n{out}.nd = fneg double {out}.d\n"
            "{out}.a = select i1 {out}.p, double {out}.nd, double {out}.d\n"
            "{out}.m = select i1 {out}.p, double {0}, double {1}\n"
            f"{{out}}.x = call double @{exp_fn}(double {{out}}.a)\n"
            "{out}." + ("l0" if scale else "l") + " = call double @log1p(double {out}.x)\n" + scaled +
            "{out}.s = fadd double {out}.m, {out}.l\n{out} = select i1 {out}.e, double {out}.t, double {out}.s")


def _difference(x, y):
    """y - x for the weights of logaddexp: NaN only on a tie of two equal infinities, where it is taken as 0 (the
    weights are 1/2 each)."""
    d = y - x
    return select(ne(d, d), 0.0, d)


def _weights(x, y, expf):
    """d/dx, d/dy of logaddexp: 1 / (1 + exp(y - x)) and 1 / (1 + exp(x - y))."""
    d = _difference(x, y)
    return 1.0 / (1.0 + expf(d)), 1.0 / (1.0 + expf(-d))


def _weighted_tangent(expf):
    def tangent(ts, x, y, out):  # only the weights of the nonzero tangents
        d = _difference(x, y)
        return plus(None if ts[0] is None else ts[0] * (1.0 / (1.0 + expf(d))),
                    None if ts[1] is None else ts[1] * (1.0 / (1.0 + expf(-d))))
    return tangent


@op("logaddexp", 2, np.logaddexp, _logaddexp_ir("exp", _hex(LN2), None), libm=("exp", "log1p"),
    note="log(exp(x) + exp(y)) without overflow; derivatives 1/(1 + exp(y - x)) (1/2 each on a tie, also "
         "of two infinities)", spelling="logaddexp", tangent=_weighted_tangent(exp), associative=True)
def _(g, x, y, out):
    wx, wy = _weights(x, y, exp)
    return g * wx, g * wy


@op("logaddexp2", 2, np.logaddexp2, _logaddexp_ir("exp2", "1.0", _hex(LOG2E)), libm=("exp2", "log1p"),
    note="log2(2**x + 2**y); derivatives 1/(1 + 2**(y - x)) (1/2 each on a tie)", spelling="logaddexp2",
    tangent=_weighted_tangent(lambda v: exp2(v)), associative=True)
def _(g, x, y, out):
    wx, wy = _weights(x, y, exp2)
    return g * wx, g * wy


def _fminmax_ir(pred: str) -> str:
    return ("{out}.g = fcmp " + pred + " double {0}, {1}\n{out}.u = fcmp uno double {1}, {1}\n"
            "{out}.k = or i1 {out}.g, {out}.u\n{out} = select i1 {out}.k, double {0}, double {1}")


def _wins(cmp, x, y):
    return cmp(x, y) + ne(y, y)  # as the value: x where it wins, ties, or y is NaN


def _fminmax(cmp):
    """(reverse rule, tangent) of fmax/fmin; ``cmp``: x >= y resp. x <= y."""
    def rule(g, x, y, out):
        c = _wins(cmp, x, y)
        return select(c, g, 0.0), select(c, 0.0, g)

    def tangent(ts, x, y, out):
        return choose(_wins(cmp, x, y), *ts)
    return rule, tangent


_FNOTE = ("NaN ignored (the other argument, and its derivative); on a tie the derivative goes to x; the sign of a "
          "zero result on a (0, -0) tie is unspecified (numpy's own differs between scalars and arrays)")
for _name, _fn, _pred, _cmp in [("fmax", np.fmax, "oge", OPS["ge"]), ("fmin", np.fmin, "ole", OPS["le"])]:
    _rule, _tangent = _fminmax(_cmp)
    op(_name, 2, _fn, _fminmax_ir(_pred), smooth=False, note=_FNOTE, spelling=_name, tangent=_tangent,
       associative=True)(_rule)


@op("copysign", 2, np.copysign,
    "{out}.xb = bitcast double {0} to i64\n{out}.yb = bitcast double {1} to i64\n"
    "{out}.xm = and i64 {out}.xb, 9223372036854775807\n{out}.ys = and i64 {out}.yb, -9223372036854775808\n"
    "{out}.r = or i64 {out}.xm, {out}.ys\n{out} = bitcast i64 {out}.r to double", smooth=False,
    note="|x| with the sign bit of y; d/dx = sign(x) * copysign(1, y) (0 at x = +-0, as |x|), d/dy = 0",
    spelling="copysign", tangent=lambda ts, x, y, out: None if ts[0] is None else ts[0] * (sign(x) * copysign(1.0, y)))
def _(g, x, y, out): return g * (sign(x) * copysign(1.0, y)), None


expose(globals(), BY_CODE[_FIRST:])  # the rules above call rint, exp2 and copysign by these names
