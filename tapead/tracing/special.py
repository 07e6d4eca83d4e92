"""``scipy.special.erfinv``, ``erfcinv``, ``i0``, ``i0e``, ``i1``, ``i1e`` (and ``np.i0``) on traced values,
written as branch-free composites of the op table's ops.

No C library computes the inverse error function, so it records as a short, branch-free composite: Giles'
polynomial approximation (central and tail branches, chosen by NaN-safe selects) as a first guess, then three
Newton steps on ``erf(y) = x`` (central, ``|x| <= 1/2``) or on ``log erfc(|y|) = log(1 - |x|)`` (tails, where
``1 - |x|`` is exact and ``erf`` would have saturated; the logarithm makes far guesses converge as fast as near
ones). Newton converges quadratically, so the value is ``erf``'s inverse to
a few ulps, and so is its derivative: differentiating the converged iteration gives ``sqrt(pi)/2 exp(y^2)`` up to
the last residual (checked against scipy and the closed form). ``erfcinv(q)`` takes ``q`` itself in the tails
(``erfcinv(1e-20)`` is 6.6, not ``erfinv(1.0) = inf``).
"""
from __future__ import annotations

import math

from ..table import ops
from .tracer import elementwise

_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
            -0.00417768164, 0.246640727, 1.50140941)
_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
         0.00943887047, 1.00167406, 2.83297682)
_HALF_SQRT_PI = math.sqrt(math.pi) / 2
_STEPS = 3
_LARGE = 26.0  # exp(y^2) overflows beyond: there the guess is already the double nearest the inverse


def _poly(coefficients, w):
    p = coefficients[0]
    for c in coefficients[1:]:
        p = c + p * w
    return p


def _guess(a, q):
    """A first guess of ``erfinv(a)`` for ``a = 1 - q >= 0``, from ``w = -log(q (2 - q))``: Giles' central and
    tail polynomials for w < 16 (where they were fitted), beyond the asymptote ``u^2 = L - log(pi L) / 2`` with
    ``L = -log(q)`` (from ``erfc(u) ~ exp(-u^2) / (u sqrt(pi))``); +inf at ``q = 0``."""
    w = -ops.log(q * (2.0 - q))
    central = _poly(_CENTRAL, w - 2.5) * a
    tail = _poly(_TAIL, ops.sqrt(w) - 3.0) * a
    big = -ops.log(q)
    far = ops.sqrt(big - 0.5 * ops.log(math.pi * big))
    guess = ops.select(ops.lt(w, 5.0), central, ops.select(ops.lt(w, 16.0), tail, far))
    return ops.select(ops.gt(q, 0.0), guess, ops.select(ops.eq(q, 0.0), math.inf, math.nan))  # |x| > 1: NaN


def _step(y, residual):
    """One Newton step ``y - residual / erf'(y)`` (``erf' = 2/sqrt(pi) exp(-y^2)``), left alone where exp(y^2)
    would overflow (the select keeps that branch's inf * 0 out of values and derivatives)."""
    return ops.select(ops.lt(ops.absolute(y), _LARGE), y - residual * (_HALF_SQRT_PI * ops.exp(y * y)), y)


def _tail_step(u, q):
    """One Newton step on ``log erfc(u) = log q``: ``u + (log erfc(u) - log q) erfc(u) exp(u^2) sqrt(pi) / 2``,
    with ``erfc(u) exp(u^2)`` taken as ``exp(u^2 + log erfc(u))`` so nothing overflows (u up to 27, where erfc
    underflows and u is left alone)."""
    e = ops.erfc(u)
    log_e = ops.log(e)
    stepped = u + (log_e - ops.log(q)) * (_HALF_SQRT_PI * ops.exp(u * u + log_e))
    return ops.select(ops.gt(e, 0.0), stepped, u)


def _inverse(x, q):
    """``erfinv(x)``, where ``q = 1 - |x|`` is exact in the tails (the caller knows it better than ``1 - |x|``)."""
    central = _poly(_CENTRAL, -ops.log((1.0 - x) * (1.0 + x)) - 2.5) * x  # |x| <= 1/2: w < 5
    u = _guess(ops.absolute(x), q)
    for _ in range(_STEPS):
        central = _step(central, ops.erf(central) - x)
        u = _tail_step(u, q)
    tail = ops.select(ops.lt(x, 0.0), -u, u)
    return ops.select(ops.le(ops.absolute(x), 0.5), central, tail)


def erfinv(x, out=None):
    """The inverse of erf on [-1, 1] (NaN outside, +-inf at +-1)."""
    return elementwise(lambda v: _inverse(v, 1.0 - ops.absolute(v)), x)


def erfcinv(q, out=None):
    """The inverse of erfc on [0, 2]: ``erfcinv(q) = erfinv(1 - q)``, with ``q`` (or ``2 - q``) used as given in
    the tails."""
    def one(v):
        return _inverse(1.0 - v, ops.select(ops.lt(v, 1.0), v, 2.0 - v))  # 1 - |x|, exact
    return elementwise(one, q)


# ---- modified Bessel functions of the first kind, orders 0 and 1 -----------------------------------------------
# |x| <= 20: the power series (positive terms, no cancellation) times exp(-|x|); beyond, the asymptotic series
# e^x / sqrt(2 pi x) (1 - (mu - 1) / (8x) + ...) with mu = 4 nu^2, whose terms shrink until far past 25 of them.
# Within 10 ulps of scipy (cephes) everywhere, derivatives by differentiating the series.
_SWITCH = 20.0
_SERIES0 = tuple(1.0 / math.factorial(k) ** 2 for k in range(60))
_SERIES1 = tuple(1.0 / (math.factorial(k) * math.factorial(k + 1)) for k in range(60))


def _asymptotic(a, mu: float):
    term, total = 1.0, 1.0
    for k in range(1, 25):
        term = term * (-(mu - (2 * k - 1) ** 2) / (8.0 * k)) / a
        total = total + term
    return total / ops.sqrt(2.0 * math.pi * a)


def _scaled(x, order: int):
    """``exp(-|x|) I_order(|x|)`` (``i0e``, and ``i1e`` of ``|x|``)."""
    a = ops.absolute(x)
    t = (a * 0.5) * (a * 0.5)
    series = _poly(_SERIES0[::-1] if order == 0 else _SERIES1[::-1], t) * ops.exp(-a)
    if order == 1:
        series = series * (a * 0.5)
    return ops.select(ops.le(a, _SWITCH), series, _asymptotic(a, 4.0 * order * order))


def _odd(x, v):
    return ops.select(ops.lt(x, 0.0), -v, v)


def i0e(x, out=None):
    return elementwise(lambda v: _scaled(v, 0), x)


def i1e(x, out=None):
    return elementwise(lambda v: _odd(v, _scaled(v, 1)), x)


def i0(x, out=None):
    return elementwise(lambda v: _scaled(v, 0) * ops.exp(ops.absolute(v)), x)


def i1(x, out=None):
    return elementwise(lambda v: _odd(v, _scaled(v, 1) * ops.exp(ops.absolute(v))), x)


UFUNCS = {"erfinv": erfinv, "erfcinv": erfcinv, "i0e": i0e, "i1e": i1e, "i0": i0, "i1": i1}
