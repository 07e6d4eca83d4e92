"""A product of traced inputs and data, read by one loop, fused into that loop: the form Hessians read.

``np.sum(phi(x @ A))`` records as a product loop (``x`` as a one-row matrix times the data ``A``: the form whose
gradient runs in register tiles) and an elementwise loop over its entries with a sum. Its Hessian is
``A diag(phi'') A^T``, which the partially separable and low-rank forms (``separable``, ``lowrank``) build as one
loop when the tape is *one* map whose body reads the inputs and a data column: ``phi(x . A[:, j])``. Without
that form it was the unrolled tape's dense forward-over-reverse sweeps (n = 100: 47 s to the first Hessian,
5.4 ms per call).

``fused(tape)`` is that one-map tape: each iteration of the reading loop computes its product entry itself (the
canonical dot body, the same terms added in the same order) from the product's input row and data column, then
runs the loop's body. It computes what the tape computes; only Hessian transforms read it (the gradient keeps the
product loop). None when the tape is not of that shape: exactly a product and then a map, the product's one
traced factor a single row (or column) of inputs and the other data, and its entries read by nothing but one
column of the map.
"""
from __future__ import annotations

import numpy as np

from . import ad
from ..ir.contraction import Product
from ..ir.structure import MAP_ROW, Map, map_runs, placeholder_rows
from ..ir.tape import Tape
from ..table.ops import BY_CODE

_ARITY = np.array([row.arity for row in BY_CODE], np.int64)


def fused(tape: Tape) -> Tape | None:
    """The tape with its product loop computed inside the loop reading it (see the module docstring), or None."""
    ir = getattr(tape, "tape", tape)
    return ir.memo("fused_product", lambda: _fused(ir))


def _factors(tape: Tape, p: Product):
    """``(inputs, data, along_rows)``: the product's traced row (or column) of inputs and its data factor; None
    when it is not one."""
    a, b = p.a.astype(np.int64), p.b.astype(np.int64)
    is_input = lambda f: (f < tape.n_inputs).all()  # noqa: E731
    is_data = lambda f: ((f >= tape.first_const) & (f < tape.first_result)).all()  # noqa: E731
    if a.shape[0] == 1 and is_input(a) and is_data(b):
        return a[0], b, True  # x @ A: iteration j reads x and A[:, j]
    if b.shape[1] == 1 and is_input(b) and is_data(a):
        return b[:, 0], a, False  # A @ x: iteration i reads A[i, :] and x
    return None


def _fused(tape: Tape) -> Tape | None:
    runs = map_runs(tape)
    if len(runs) != 2 or not isinstance(runs[0][2], Product) or isinstance(runs[1][2], Product):
        return None
    (p_start, p_end, p), (m_start, m_end, m) = runs
    found = _factors(tape, p)
    if found is None:
        return None
    inputs, data, along_rows = found
    first = tape.first_result
    lo, hi = first + p_start, first + p_end
    reads = (m.tables >= lo) & (m.tables < hi)
    column = np.flatnonzero(reads.any(axis=0))
    if len(column) != 1 or not reads[:, column[0]].all():
        return None
    c = int(column[0])
    code = tape.code.astype(np.int64)
    scalar = code[:, 0] >= 0
    args = code[scalar, 1:][np.arange(3)[None, :] < _ARITY[code[scalar, 0]][:, None]]
    if ((args >= lo) & (args < hi)).any() or ((tape.outputs >= lo) & (tape.outputs < hi)).any() or \
            ((tape.guards[:, 0] >= lo) & (tape.guards[:, 0] < hi)).any():
        return None  # the product's entries are read elsewhere too
    entry = m.tables[:, c].astype(np.int64) - lo  # which product entry each iteration reads
    k = len(inputs)
    columns = data.T[entry] if along_rows else data[entry]  # (iterations, k): the data each entry's dot reads
    others = [i for i in range(m.body.n_inputs) if i != c]
    tables = np.concatenate([np.broadcast_to(inputs, (m.n, k)), columns, m.tables[:, others].astype(np.int64)],
                            axis=1)
    body = _body(p.body, m.body, c, k, len(others))
    # the tape without the product's rows: later slots move down by its row count
    shift = p_end - p_start
    remap = np.arange(tape.n_slots, dtype=np.int64)
    remap[hi:] -= shift
    new_map = Map(body, remap[tables], m.kinds, m.dst, m.scatter_size)
    rows = np.concatenate([code[:p_start], code[p_end:]])
    keep = rows[:, 0] >= 0
    live = np.arange(3)[None, :] < _ARITY[np.maximum(rows[:, 0], 0)][:, None]
    live &= keep[:, None]
    rows[:, 1:][live] = remap[rows[:, 1:][live]]
    rows[m_start - shift:m_end - shift] = placeholder_rows(0, m.rows)
    assert (rows[~keep, 0] == MAP_ROW).all()
    return tape.replace(code=rows, outputs=remap[tape.outputs], maps=(new_map,),
                        guards=np.stack([remap[tape.guards[:, 0]], tape.guards[:, 1]], axis=1) if len(tape.guards)
                        else tape.guards)


def _body(dot: Tape, body: Tape, c: int, k: int, n_others: int) -> Tape:
    """The loop body reading ``u`` (k inputs), ``v`` (k data) and the body's other columns: the dot product of
    ``u`` and ``v`` in place of column ``c``."""
    n_in = 2 * k + n_others
    rec, xs, _ = ad.fresh(body.replace(input_shapes=((n_in,),), param_shape=None))
    z = ad.replay(dot, xs[:2 * k], [])[int(dot.outputs[0])]
    rest = iter(xs[2 * k:])
    vals = ad.replay(body, [z if i == c else next(rest) for i in range(body.n_inputs)], [])
    return rec.finish(ad.node_ids(rec, [vals[s] for s in body.outputs.tolist()]), (body.n_outputs,),
                      ((n_in,),), None)
