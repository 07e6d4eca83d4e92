"""Numerical oracles shared by the tests: finite differences and tolerances, written once.

Derivatives are checked against central differences extrapolated once (Richardson): with steps ``h`` and ``h/2``,
``D = D(h/2) + (D(h/2) - D(h)) / 3`` cancels the ``h**2`` term of the central difference, leaving ``O(h**4)``.
The step is chosen per coordinate as ``rel * max(1, |x|)``; ``rel = 1e-4`` balances truncation (``h**4`` times
the fifth derivative) against rounding (``eps * |f| / h``), so smooth functions agree to about 1e-10 relative.
Steps are rounded to what the floating-point sum ``x + h`` actually moves, so the divisor is exact.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

REL_STEP = 1e-4  # default relative finite-difference step (with one Richardson extrapolation)
RTOL_FD = 1e-7  # derivative vs finite differences, relative to the magnitude (see ``magnitude``)
RTOL_KERNEL = 1e-13  # compiled kernel vs interpreter: the same operations, libm may differ in the last bits


def magnitude(*arrays) -> float:
    """``max(1, |a|)`` over all entries: the scale that absolute errors of finite differences follow."""
    finite = [np.abs(a[np.isfinite(a)]).max() for a in map(np.asarray, arrays) if np.isfinite(a).any()]
    return float(max([1.0] + finite))


def _steps(x: np.ndarray, rel: float) -> np.ndarray:
    h = rel * np.maximum(1.0, np.abs(x))
    return (x + h) - x  # what the addition really moves by


def fd_rows(F: Callable, x, rel: float = REL_STEP) -> np.ndarray:
    """Rows ``d F(x) / d x_j`` (shape ``(x.size,) + output shape``) of a function ``F`` that evaluates a batch of
    flat points ``(N, x.size)`` at once (returning ``(N, ...)``): all ``4 * x.size`` points go in one call."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    h = _steps(x, rel)
    E = np.diag(h)
    y = np.asarray(F(np.concatenate([x + E, x - E, x + E / 2, x - E / 2])), dtype=np.float64)
    y = y.reshape((4, n) + y.shape[1:])
    hh = h.reshape((n,) + (1,) * (y.ndim - 2))
    coarse = (y[0] - y[1]) / (2 * hh)
    fine = (y[2] - y[3]) / hh
    return fine + (fine - coarse) / 3


def _each(f: Callable) -> Callable:
    """A batch function over flat points from a function of one point."""
    return lambda X: np.stack([np.asarray(f(row), dtype=np.float64) for row in X])


def fd_jacobian(f: Callable, x, rel: float = REL_STEP) -> np.ndarray:
    """Jacobian ``f(x).shape + x.shape`` of a function of one array, by Richardson-extrapolated central differences."""
    x = np.asarray(x, dtype=np.float64)
    rows = fd_rows(_each(lambda flat: f(flat.reshape(x.shape))), x, rel)
    return np.moveaxis(rows, 0, -1).reshape(np.shape(f(x)) + x.shape)


def _split(flat: np.ndarray, shapes: list) -> list:
    out, k = [], 0
    for s in shapes:
        size = int(np.prod(s, dtype=np.int64))
        out.append(flat[..., k:k + size].reshape(flat.shape[:-1] + tuple(s)))
        k += size
    return out


def _one_or_tuple(parts: list):
    return parts[0] if len(parts) == 1 else tuple(parts)


def _is_tape(f) -> bool:
    return hasattr(f, "evaluate") and hasattr(f, "input_shapes")


def fd_gradient(f: Callable, *args, params=None, rel: float = REL_STEP):
    """Gradient of a scalar function at ``args`` (an array for one argument, a tuple for several, like
    ``tape.gradient``). ``f`` is a plain function (called as ``f(*args)`` or ``f(*args, params)``) or a Tape,
    whose interpreter ``evaluate`` then runs every point as one batch."""
    args = [np.asarray(a, dtype=np.float64) for a in args]
    shapes = [a.shape for a in args]
    flat = np.concatenate([a.ravel() for a in args]) if args else np.zeros(0)
    if _is_tape(f):
        F = lambda X: np.asarray(f.evaluate(*_split(X, shapes), params=params)).reshape(len(X))  # noqa: E731
    else:
        call = (lambda *a: f(*a)) if params is None else (lambda *a: f(*a, params))
        F = _each(lambda row: call(*_split(row, shapes)))
    return _one_or_tuple(_split(fd_rows(F, flat, rel).reshape(flat.size), shapes))


def fd_hessian(gradient: Callable, x, rel: float = REL_STEP) -> np.ndarray:
    """Hessian ``(n, n)`` of a function of one flat array, as the finite-difference Jacobian of its ``gradient``
    (a callable returning the gradient at a point, e.g. ``tape.gradient`` or a closed form)."""
    return fd_jacobian(lambda y: np.ravel(gradient(y)), np.ravel(x), rel)


def assert_close(got, expected, rtol: float = RTOL_FD, *, atol: float = 0.0, scale: float | None = 1.0,
                 nan: str = "equal") -> None:
    """``|got - expected| <= rtol * max(|expected|, scale) + atol`` entrywise, with a message naming the worst entry.

    ``scale=1.0`` (default) makes small entries absolute; pass ``scale=magnitude(expected)`` to measure every entry
    against the largest (finite differences and summed round-off follow it). ``nan="equal"``: NaNs must match;
    ``"skip"``: entries where ``expected`` is NaN (no reference there) are not checked. Infinities must match."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"shape {got.shape} != expected {expected.shape}"
    with np.errstate(invalid="ignore", over="ignore"):
        tol = rtol * np.maximum(np.abs(expected), 0.0 if scale is None else scale) + atol
        ok = (got == expected) | (np.isfinite(expected) & (np.abs(got - expected) <= tol))
    both_nan = np.isnan(got) & np.isnan(expected)
    ok |= (np.isnan(expected) if nan == "skip" else both_nan)
    if not ok.all():
        with np.errstate(invalid="ignore"):
            excess = np.where(ok, -np.inf, np.nan_to_num(np.abs(got - expected) - tol, nan=np.inf))
        i = tuple(int(k) for k in np.unravel_index(int(np.argmax(excess)), ok.shape))
        tol = np.broadcast_to(tol, ok.shape)
        raise AssertionError(f"{int((~ok).sum())} of {ok.size} entries differ; worst at {i}: got {float(got[i])!r}, "
                             f"expected {float(expected[i])!r}, tolerance {float(tol[i]):.3g}")


def assert_gradient(f, *args, params=None, gradient=None, rtol: float = RTOL_FD, rel: float = REL_STEP):
    """Check a gradient against finite differences of the function's values and return the differences.

    ``f`` is a Tape (its values come from the interpreter, the gradient by default from ``tape.gradient``) or a
    plain function (recorded at ``args`` to get the gradient unless ``gradient`` is given). ``gradient`` is the
    gradient to check (an array, or a tuple per argument). Errors are measured against the largest of the
    function's magnitude and the gradient's."""
    if gradient is None:
        tape = f
        if not _is_tape(f):
            import tapead
            tape = tapead.record(f, *args, params=params)
        gradient = tape.gradient(*args, params=params)
    fd = fd_gradient(f, *args, params=params, rel=rel)
    got, want = (gradient, fd) if len(args) > 1 else ((gradient,), (fd,))
    value = f.evaluate(*args, params=params) if _is_tape(f) else (f(*args) if params is None else f(*args, params))
    scale = magnitude(value, *want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_close(g, w, rtol, scale=scale)
    return fd


__all__ = ["REL_STEP", "RTOL_FD", "RTOL_KERNEL", "magnitude", "fd_rows", "fd_jacobian", "fd_gradient",
           "fd_hessian", "assert_close", "assert_gradient"]


class Counting:
    """Wraps a callable (a kernel's native function) and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


def assert_matches_unrolled(f, x1, structured, unrolled, rtol: float = 1e-12) -> None:
    """A structured tape against its unrolled twin and the oracles at ``x1``: the value against ``f`` itself,
    the gradient against the unrolled tape and against central differences."""
    want = f(x1)
    assert_close(structured.value(x1), want, rtol, scale=magnitude(want))
    g = structured.gradient(x1)
    assert_close(g, unrolled.gradient(x1), rtol, scale=magnitude(g))
    fd = fd_gradient(f, x1)
    assert_close(g, fd, 1e-7, scale=magnitude(fd, want))
