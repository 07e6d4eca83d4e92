"""Fields with a short first axis and no long axis (a 32 x 32 grid) record as loops over their rows when they hold
enough elements (``maparray.long_enough``): a stencil written with ``np.pad`` and shifted slices, stepped in a
Python loop, is one loop per step, and computes what its unrolled tape computes (to rounding: the loop adds its
sums in iteration order), with gradients against central differences and autograd."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from check import assert_close, assert_matches_unrolled, magnitude
from tapead.tracing.maparray import MAP_MIN, SHORT_MIN, WIDE_MIN


def heat(shape, steps: int = 3, xp=np):
    """Explicit heat steps on a zero-padded grid of ``shape`` (the benchmark's form), then a nonlinear readout."""
    def f(x):
        u = x.reshape(shape)
        for _ in range(steps):
            p = xp.pad(u, 1, mode="constant")
            u = u + 0.1 * (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * u)
        return xp.sum(xp.tanh(u) * u) + xp.sum(xp.sin(u[:, 1:] * u[:, :-1]))
    return f


def _start(shape):
    return np.sin(np.linspace(0.0, 3.0, int(np.prod(shape))))


@pytest.mark.parametrize("shape", [(32, 32), (SHORT_MIN, WIDE_MIN // SHORT_MIN), (20, 40)])
def test_wide_fields_are_row_loops_that_match_the_unrolled_tape(shape):
    f, x = heat(shape), _start(shape)
    structured = tapead.record(f, x)
    assert len(structured.tape.maps) >= 3  # (one per step at least: not one scalar row per cell)
    assert len(structured.tape.code) < 12 * int(np.prod(shape)) // 2 + 400  # rows of loop outputs, few scalars
    unrolled = tapead.record(f, x, structured=False)
    assert not unrolled.tape.maps
    x1 = x + 0.05 * np.cos(np.arange(x.size))
    assert_matches_unrolled(f, x1, structured, unrolled)


def test_wide_field_gradient_matches_autograd():
    autograd = pytest.importorskip("autograd")
    shape = (24, 24)
    f, x = heat(shape), _start(shape)
    g = tapead.record(f, x).gradient(x)
    want = autograd.grad(heat(shape, xp=autograd.numpy))(x)
    assert_close(g, want, 1e-12, scale=magnitude(want))


@pytest.mark.parametrize("shape", [(8, 8), (SHORT_MIN - 1, 64 - 1), (SHORT_MIN, WIDE_MIN // SHORT_MIN - 1)])
def test_small_or_narrow_fields_stay_scalar(shape):
    """Below the row or element thresholds, the per-cell scalar tape is smaller than a loop's machinery."""
    tape = tapead.record(heat(shape, steps=1), _start(shape))
    assert not tape.tape.maps


def test_a_long_later_axis_is_still_the_loop_axis():
    """(20, MAP_MIN) has a long last axis: the loop runs along it (``axisloops``), not over the 20 rows."""
    shape = (20, MAP_MIN)
    x = _start(shape)
    f = lambda v: np.sum(np.tanh(v.reshape(shape) * 0.5) ** 2)  # noqa: E731
    tape = tapead.record(f, x)
    assert [m.n for m in tape.tape.maps] == [MAP_MIN]
    assert_matches_unrolled(f, x + 0.01, tape, tapead.record(f, x, structured=False))
