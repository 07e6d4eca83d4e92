"""Facts the op table declares for other modules (the recorder's identities, the NaN-masking class) hold for
every row that declares them, numerically and in what recording does with them."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import tapead

from tapead.table.ops import BY_CODE, OPS
from tapead.tracing.recorder import _CONST, Recorder

SAMPLES = [1.5, -2.25, 3.0, 1e300, -1e-300, 5e-324, np.inf, -np.inf]  # (x + 0 turns -0 into +0: documented)


def _value(row, *args) -> float:
    with np.errstate(all="ignore"):
        return float(row.numpy(*map(np.float64, args)))


def test_the_rows_with_identities_are_the_documented_ones():
    with_identities = sorted(name for name, row in OPS.items() if row.chooses or row.involution or any(
        v is not None for v in (row.right_identity, row.left_identity, row.right_negation, row.left_negation,
                                row.absorbing)))
    assert with_identities == ["add", "div", "mul", "neg", "pow", "select", "sub"]
    assert [name for name, row in OPS.items() if row.chooses] == ["select"]


def test_identities_hold_numerically_and_recording_applies_them():
    checked = 0
    for row in OPS.values():
        for c, side in ((row.right_identity, 1), (row.left_identity, 0)):
            if c is None:
                continue
            for x in SAMPLES:
                assert _value(row, *((x, c) if side else (c, x))) == x, (row.name, x)
            rec = Recorder()
            a, k = rec.input(), rec.const(c)
            assert rec.emit(row, (a, k) if side else (k, a)) == a
            checked += 1
        for c, side in ((row.right_negation, 1), (row.left_negation, 0)):
            if c is None:
                continue
            for x in SAMPLES:
                assert _value(row, *((x, c) if side else (c, x))) == -x, (row.name, x)
            rec = Recorder()
            a, k = rec.input(), rec.const(c)
            nid = rec.emit(row, (a, k) if side else (k, a))
            assert rec.kinds[nid] == OPS["neg"].code and rec.args[nid] == (a,)
            checked += 1
        if row.absorbing is not None:
            for x in SAMPLES[:6]:  # finite values only: 0 * inf is NaN, which is why it needs assume_finite
                assert _value(row, x, row.absorbing) == row.absorbing == _value(row, row.absorbing, x)
            for finite in (False, True):
                rec = Recorder(assume_finite=finite)
                a, k = rec.input(), rec.const(row.absorbing)
                nid = rec.emit(row, (a, k))
                assert (rec.kinds[nid] == _CONST) == finite
            checked += 1
        if row.involution:
            for x in SAMPLES:
                assert _value(row, _value(row, x)) == x
            rec = Recorder()
            a = rec.input()
            assert rec.emit(row, (rec.emit(row, (a,)),)) == a
            checked += 1
        if row.chooses:
            rec = Recorder()
            a, b = rec.input(), rec.input()
            assert rec.emit(row, (rec.const(1.0), a, b)) == a and rec.emit(row, (rec.const(0.0), a, b)) == b
            assert rec.emit(row, (rec.input(), a, a)) == a
            checked += 1
    assert checked == 13  # add 2, sub 1, mul 5, div 2, neg 1, pow 1, select 1


# ---- forward (tangent) rules ------------------------------------------------------------------------------------
BUILT_IN = [row for row in OPS.values() if not row.name.startswith("custom.")]
EDGES = [0.0, -0.0, 1.0, -2.5, np.inf, -np.inf, np.nan]


def _summed_contributions(row, ts, args):
    """What forward mode computed before rows had tangent rules: the reverse rule's contribution of each nonzero
    argument tangent, summed in argument order (on floats the rules fold to floats)."""
    out = np.float64(row(*args))
    total = None
    for j, t in enumerate(ts):
        if t is not None:
            c = row.rule(t, *args, out)[j]
            if c is not None:
                total = c if total is None else total + c
    return total


def _tangent_patterns(arity: int, rng):
    """Every pattern of zero (None) and nonzero argument tangents with at least one nonzero."""
    for bits in range(1, 2 ** arity):
        yield tuple(float(rng.normal()) if bits >> j & 1 else None for j in range(arity))


def _inside(row, n, rng):
    lo, hi = max(row.domain[0], -3.0), min(row.domain[1], 3.0)
    pts = rng.uniform(lo, hi, (n, row.arity))
    if row.name == "select":
        pts[:, 0] = rng.choice([0.0, 1.0], n)
    return pts


def _same(a, b) -> bool:
    if a is None or b is None:
        return (a is None or a == 0.0) and (b is None or b == 0.0)
    return a == b or (np.isnan(a) and np.isnan(b))


@pytest.mark.parametrize("row", BUILT_IN, ids=lambda r: r.name)
def test_tangent_equals_the_sum_of_reverse_contributions(row):
    """Each row's forward rule computes what summing its reverse rule's contributions does (bitwise, up to the
    sign of a zero), with some argument tangents zero, inside the domain and at the edge values of the
    piecewise ops (ties, signed zeros, infinities, NaN)."""
    rng = np.random.default_rng(sum(map(ord, row.name)))
    points = [tuple(p) for p in _inside(row, 12, rng)]
    if not row.smooth:
        points += [tuple(p) for p in itertools.product(EDGES, repeat=row.arity)]
    checked = 0
    with np.errstate(all="ignore"):
        for args in points:
            args = tuple(np.float64(a) for a in args)  # (numpy scalars: x / 0 is inf, not an exception)
            out = np.float64(row(*args))
            for ts in _tangent_patterns(row.arity, rng):
                ts = tuple(None if t is None else np.float64(t) for t in ts)
                got = row.tangent(ts, *args, out)
                expected = _summed_contributions(row, ts, args)
                assert _same(got, expected), (row.name, args, ts, got, expected)
                checked += 1
    assert checked >= 12 * (2 ** row.arity - 1)


def test_rows_declared_without_a_tangent_get_one_from_their_reverse_rule():
    """A row declared with only a reverse rule (user-defined ops) differentiates forward through that rule."""
    from tapead.table.optable import Op, tangent_from_rule
    row = Op("scaled_product", 10**6, 2, np.multiply, "", lambda g, x, y, out: (g * (2.0 * y), None))
    assert row.tangent((0.5, 7.0), 3.0, 4.0, 12.0) == 0.5 * 8.0
    assert row.tangent((None, 7.0), 3.0, 4.0, 12.0) is None
    assert tangent_from_rule(OPS["mul"].rule)((0.5, 0.25), 3.0, 4.0, 12.0) == OPS["mul"].tangent(
        (0.5, 0.25), 3.0, 4.0, 12.0) == 0.5 * 4.0 + 0.25 * 3.0


def test_forward_mode_records_only_the_terms_it_keeps():
    """A jvp of a product of sums records no dead node: every instruction of the tangent program is kept."""
    from tapead.transforms import ad
    t = tapead.record(lambda x: (x[0] - x[1]) * np.sin(x[2]) / x[0], np.array([1.5, 0.5, 0.3]))
    seen = []
    finish = Recorder.finish

    def counting(self, *args, **kwargs):
        tape = finish(self, *args, **kwargs)
        seen.append((sum(k >= 0 for k in self.kinds), len(tape.code)))
        return tape

    Recorder.finish = counting
    try:
        jvp = ad.jvp(t.tape)
    finally:
        Recorder.finish = finish
    (recorded, kept), = seen
    assert recorded == kept, str(jvp)
    x, v = np.array([1.5, 0.5, 0.3]), np.array([0.25, -1.0, 2.0])
    h = 1e-6
    fd = (t.evaluate(x + h * v) - t.evaluate(x - h * v)) / (2 * h)
    assert np.isclose(tapead.jvp(t).evaluate(x, v), fd, rtol=1e-8)


def test_ops_module_binds_every_row_by_name_and_spelling():
    import builtins
    from tapead.table import ops, ops_extra
    from tapead.tracing.numpy_api import UFUNCS
    for row in BUILT_IN:
        for name in (row.name, row.spelling):
            if name and not hasattr(builtins, name):
                assert getattr(ops, name) is row, name
        if hasattr(builtins, row.name):  # abs, max, min, pow: not bound over the builtin
            assert row.name not in vars(ops) and row.name not in vars(ops_extra)
        for spelling in filter(None, (row.spelling, *row.aliases)):
            assert UFUNCS[spelling] is (row.surface or row), spelling
    assert ops_extra.floor_divide is OPS["floordiv"] and ops.absolute is OPS["abs"]


@pytest.mark.parametrize("row", [r for r in BUILT_IN if r.no_derivative or r.passive], ids=lambda r: r.name)
def test_no_derivative_and_passive_arguments_match_the_rules(row):
    """What sparsity and activity analysis trust: a row marked ``no_derivative`` gives no contribution and no
    tangent anywhere, and a ``passive`` argument (select's condition) never receives a contribution."""
    rng = np.random.default_rng(3)
    for args in _inside(row, 8, rng):
        args = tuple(np.float64(a) for a in args)
        out = np.float64(row(*args))
        contributions = row.rule(np.float64(1.5), *args, out)
        passive = range(row.arity) if row.no_derivative else row.passive
        assert all(contributions[j] is None for j in passive), (row.name, contributions)
        if row.no_derivative:
            assert row.tangent((np.float64(1.5),) * row.arity, *args, out) is None


def test_linear_weights_are_the_rows_constant_partials():
    """``weights`` (what partially separable Hessians read) gives each non-constant argument the row's own partial
    times the output's weight, the same at every point (so the op is linear there); constants' weights are
    ignored (constants carry no Hessian)."""
    rng = np.random.default_rng(7)
    checked = set()
    for row in BY_CODE:
        if row.weights is None:
            continue
        for const in itertools.product([False, True], repeat=row.arity):
            if all(const):
                continue  # an op on constants alone is folded while recording, never a tape's instruction
            fixed = rng.uniform(0.5, 2.0, row.arity)
            w = float(rng.uniform(-2.0, 2.0))
            got = row.weights(w, *(float(v) if c else None for v, c in zip(fixed, const)))
            if got is None:
                assert row.curvature != "linear", row.name  # a linear row is linear whatever is constant
                continue
            for _ in range(3):  # free arguments anywhere: the partials must not move
                vals = [float(v) if c else float(rng.uniform(-3.0, 3.0)) for v, c in zip(fixed, const)]
                out = float(row.numpy(*(np.float64(v) for v in vals)))
                partials = row.rule(w, *vals, out)
                for c, g, p in zip(const, got, partials):
                    assert c or g == p, (row.name, const, got, partials)
            checked.add(row.name)
    assert checked == {"add", "sub", "neg", "mul", "div"}


def test_associative_rows_reduce_and_others_say_what_to_write():
    """``associative`` (an op fact) decides which ufuncs' ``reduce`` records: each such row groups either way in
    exact arithmetic (checked numerically), its reduce matches numpy's, and a non-associative ufunc's reduce is
    refused with an error, not recorded as a fold numpy would group differently."""
    rng = np.random.default_rng(3)
    rows = [row for row in BY_CODE if row.associative]
    assert {row.spelling for row in rows} == {"add", "multiply", "maximum", "minimum", "fmax", "fmin", "logaddexp",
                                              "logaddexp2"}
    x = rng.uniform(0.5, 2.0, (3, 5))
    for row in rows:
        a, b, c = (rng.uniform(0.5, 2.0, 50) for _ in range(3))
        np.testing.assert_allclose(row.numpy(row.numpy(a, b), c), row.numpy(a, row.numpy(b, c)), rtol=1e-14)
        ufunc = getattr(np, row.spelling)
        t = tapead.record(lambda v: ufunc.reduce(v, axis=1), x)
        np.testing.assert_allclose(t.value(x), ufunc.reduce(x, axis=1), rtol=1e-14)
    with pytest.raises(tapead.TracingError, match="not supported"):
        tapead.record(lambda v: np.subtract.reduce(v, axis=1), x)
