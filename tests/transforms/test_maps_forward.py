"""Forward mode of loops: jvp and HVP tapes keep a structured tape's loops, and give the unrolled sweep's bits.

A loop carries tangents only when that is exactly the unrolled sweep (every iteration has the same tangent
columns, none masked by a select); otherwise the unrolled tape is swept. Either way the values are compared
bitwise with the sweep of the unrolled tape, and with finite differences and the scalar recording.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import tapead
from tapead.transforms import ad
from tapead.ir import structure
from tapead.transforms.higher import gradient_program
from check import assert_close, fd_gradient, magnitude
from test_maps import CASES, _moved
from test_maps_random import LIMIT, MARGIN, REL_STEP, programs


def _bits(a) -> bytes:
    return np.ascontiguousarray(np.asarray(a, np.float64)).tobytes()


def _direction(args, seed=1):
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(size=np.shape(a)) for a in args)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jvp_keeps_loops_and_the_unrolled_bits(name):
    f, args0, params = CASES[name]
    t = tapead.record(f, *args0, params=params)
    x1, v = _moved(args0), _direction(args0)
    got = ad.jvp(t.tape)
    want = ad.jvp(structure.scalar(t.tape))
    assert structure.records(got) <= structure.records(want)
    for run in (lambda d: tapead.Function(d).evaluate(*x1, *v, params=params),
                lambda d: tapead.Function(d).value(*x1, *v, params=params)):
        assert _bits(run(got)) == _bits(run(want)), name
    scalar = tapead.record(f, *args0, params=params, structured=False)
    assert_close(t.jvp(*x1, v=v if len(v) > 1 else v[0], params=params),
                 scalar.jvp(*x1, v=v if len(v) > 1 else v[0], params=params), 1e-12,
                 scale=magnitude(scalar.value(*x1, params=params)))


@pytest.mark.parametrize("name", ["lj", "morse", "coulomb", "rosenbrock", "softplus", "params"])
def test_hvp_tape_keeps_loops_and_the_unrolled_bits(name):
    f, args0, params = CASES[name]
    t = tapead.record(f, *args0, params=params)
    x1, (v,) = _moved(args0), _direction(args0)
    got = tapead.hvp_tape(t.tape)
    want = ad.jvp(structure.scalar(gradient_program(t.tape, False)))
    assert _bits(tapead.Function(got).evaluate(*x1, v, params=params)) == \
        _bits(tapead.Function(want).evaluate(*x1, v, params=params))
    hv = t.hvp(*x1, v=v, params=params)
    assert _bits(hv) == _bits(tapead.Function(want).value(*x1, v, params=params).reshape(hv.shape))
    H = tapead.record(f, *args0, params=params, structured=False).hessian(*x1, params=params)
    assert_close(hv, H.reshape(v.size, v.size) @ v.ravel(), 1e-10, scale=magnitude(H) * magnitude(v))


def test_lj_hvp_stays_one_loop():
    f, args0, _ = CASES["lj"]
    t = tapead.record(f, *args0)
    h = tapead.hvp_tape(t.tape)
    assert len(h.maps) == 1 and structure.records(h) < len(structure.scalar(h)) // 10


def test_iterations_with_different_tangents_sweep_the_unrolled_tape():
    """A loop over [x, constants]: half its iterations have no tangent, so the loop cannot carry them; the jvp is
    the unrolled sweep's (no loop), and correct."""
    def f(x):
        y = np.concatenate([x, np.linspace(0.5, 1.5, 64)])
        return np.sum(np.sin(y) * y)

    x = np.linspace(-1.0, 1.0, 64)
    t = tapead.record(f, x)
    assert len(t.maps) == 1
    d = ad.jvp(t.tape)
    assert d.maps == ()
    v = np.cos(np.arange(64.0))
    assert _bits(tapead.Function(d).evaluate(x, v)) == \
        _bits(tapead.Function(ad.jvp(structure.scalar(t.tape))).evaluate(x, v))
    assert_close(t.jvp(x, v=v), np.dot(np.sin(x) + x * np.cos(x), v), 1e-13)


def test_a_tangent_through_a_select_at_an_infinite_partial_stays_zero():
    """The NaN-safe select across a loop's boundary: where the branch is not taken the tangent is an exact zero
    even when what multiplies it downstream is infinite (the unrolled sweep's masks)."""
    def f(x):
        y = np.where(x > 0.0, x, 0.0)
        return np.sum(y * np.inf * (x > 0.0) + y)

    x = np.linspace(-2.0, -1.0, 80)
    t = tapead.record(f, x)
    v = np.ones(80)
    got = tapead.Function(ad.jvp(t.tape)).evaluate(x, v)
    want = tapead.Function(ad.jvp(structure.scalar(t.tape))).evaluate(x, v)
    assert _bits(got) == _bits(want)


@settings(deadline=None, max_examples=max(10, settings().max_examples // 5))
@given(programs(vectors=False))
def test_random_structured_programs_jvp_bitwise(case):
    prog, P0, P1 = case
    prog.branch = None
    with np.errstate(all="ignore"):
        t = tapead.record(prog, P0, structured=True)
        v = np.cos(np.arange(P0.size, dtype=float)).reshape(P0.shape)
        got = tapead.Function(ad.jvp(t.tape)).evaluate(P1, v)
        want = tapead.Function(ad.jvp(structure.scalar(t.tape))).evaluate(P1, v)
    assert _bits(got) == _bits(want)
    stats = {"margin": np.inf, "largest": 0.0}
    with np.errstate(all="ignore"):
        value = prog(P1, stats)
    if np.isfinite(value) and stats["margin"] > MARGIN and stats["largest"] < LIMIT:  # away from switches
        g = fd_gradient(t, P1, rel=REL_STEP / 10)
        assert_close(got, np.vdot(g, v), 1e-6, scale=magnitude(g, value) * magnitude(v))
