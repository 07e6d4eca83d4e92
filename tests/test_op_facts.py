"""Facts the op table declares for other modules (the recorder's identities, the NaN-masking class) hold for
every row that declares them, numerically and in what recording does with them."""
from __future__ import annotations

import numpy as np

from tapead.ops import OPS
from tapead.recorder import _CONST, Recorder

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
