"""Chunked kernels against one-function kernels on random tapes (bitwise, every entry point), forward sweeps
against a full sweep, and the derived-tape disk cache keys."""
from __future__ import annotations

import ctypes
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tapead
from tapead.backend import chunking, codegen, jit
from tapead.table.ops import BY_CODE, OPS
from tapead.ir.tape import Tape
from test_random_programs import batch_of, programs

BY_NAME = {r.code: n for n, r in OPS.items()}
BUILTIN = sorted(n for n, r in OPS.items() if not n.startswith("custom."))
VALUES = [0.0, -0.0, 1.0, -1.5, 0.5, 2.0, 3.0, 1e300, np.inf, np.nan]


@st.composite
def raw_tapes(draw):
    """A random valid tape built directly: any op on any earlier slot, guards, outputs that repeat slots and
    name inputs, params and constants (runs of constants included), split into groups (empty ones too)."""
    in_sizes = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    param_shape = draw(st.one_of(st.none(), st.tuples(st.integers(0, 2))))
    n_params = 0 if param_shape is None else param_shape[0]
    consts = draw(st.lists(st.sampled_from(VALUES), max_size=3, unique_by=lambda v: repr(float(v))))
    first = sum(in_sizes) + n_params + len(consts)
    code = []
    for i in range(draw(st.integers(0, 40))):
        if first + i == 0:
            break
        name = draw(st.sampled_from(BUILTIN))
        row = OPS[name]
        args = [draw(st.integers(0, first + i - 1)) for _ in range(row.arity)]
        code.append([row.code] + args + [-1] * (3 - row.arity))
    n_slots = first + len(code)
    slot = st.integers(0, n_slots - 1) if n_slots else st.nothing()
    from tapead.table.ops import COMPARISONS
    compares = [first + i for i, c in enumerate(code) if BY_NAME[c[0]] in COMPARISONS]
    guards = draw(st.lists(st.tuples(st.sampled_from(compares), st.integers(0, 1)), max_size=min(3, len(code)))) if compares else []
    outs = draw(st.lists(slot, max_size=20)) if n_slots else []
    if consts and draw(st.booleans()):  # a run long enough for a constant table
        at = draw(st.integers(0, len(outs)))
        run = [sum(in_sizes) + n_params + draw(st.integers(0, len(consts) - 1)) for _ in range(codegen.CONST_RUN + 1)]
        outs[at:at] = run
    cuts = sorted(draw(st.lists(st.integers(0, len(outs)), max_size=3)))
    bounds = [0] + cuts + [len(outs)]
    out_groups = [b - a for a, b in zip(bounds, bounds[1:])]
    tape = Tape(code=np.array(code, np.int32).reshape(-1, 4), consts=np.array(consts, np.float64),
                input_shapes=tuple((s,) for s in in_sizes), param_shape=param_shape,
                outputs=np.array(outs, np.int32), output_shape=(len(outs),),
                guards=np.array(guards, np.int32).reshape(-1, 2))
    return tape.check(), out_groups


def _ptr(a):
    return None if a is None else a.ctypes.data


def _run_kernel(tape, out_groups, chunk, opt, X, P, null):
    """Point results (status, outs) for every point, the general batch loop and every fast batch loop."""
    in_groups = [x.shape[1] for x in X]
    masks = sorted({tuple(not m for m in null), tuple(True for _ in out_groups)})
    ir = codegen.lower(tape, "k", in_groups, out_groups, fast_masks=masks, chunk=chunk)
    assert ("noinline" in ir) == (len(tape) + tape.n_outputs + len(tape.guards) > chunk)
    k = jit.Kernel(ir, "k", len(in_groups), len(out_groups), opt, fast_masks=masks)
    n = X[0].shape[0]
    res = []
    for i in range(n):
        outs = [None if nl else np.full(g, 7.0) for g, nl in zip(out_groups, null)]
        st_ = k.point(*[_ptr(x[i]) for x in X], _ptr(P[i]), *[_ptr(o) for o in outs])
        res.append((st_, outs))
    outs = [None if nl else np.full((n, g), 7.0) for g, nl in zip(out_groups, null)]
    status = np.full(n, 9, np.int32)
    bad = k.batch(n, *[_ptr(x) for x in X], _ptr(P), P.shape[1], *[_ptr(o) for o in outs], _ptr(status))
    res.append((bad, status, outs))
    for mask in masks:
        outs = [np.full((n, g), 7.0) for g, m in zip(out_groups, mask) if m]
        bad = k.fast[mask](n, *[_ptr(x) for x in X], _ptr(P), P.shape[1], *[_ptr(o) for o in outs])
        res.append((bad, outs))
    return res


def _bits(r):
    if isinstance(r, (list, tuple)):
        return [_bits(x) for x in r]
    if isinstance(r, np.ndarray):  # every NaN as one: O2 may fold frem(0, 0) to +NaN where libm gives -NaN
        return np.where(np.isnan(r), np.nan, r).view(np.uint64).tolist() if r.dtype == np.float64 else r.tolist()
    return r


SLOW = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


@settings(max_examples=100, deadline=None, suppress_health_check=SLOW)
@given(raw_tapes(), st.integers(1, 4), st.integers(0, 3), st.sampled_from([0, 2]), st.data())
def test_chunked_kernels_equal_whole_kernels_bitwise(monkeypatch, case, chunk, stack_cells, opt, data):
    tape, out_groups = case
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    n = 5
    pool = np.array(VALUES[:-3] + [0.25, -2.0, 1.0], np.float64)
    X = [np.ascontiguousarray(rng.choice(pool, (n, s))) for s in tape.input_sizes]
    P = np.ascontiguousarray(rng.choice(pool, (n, max(tape.n_params, 1))))
    null = [data.draw(st.booleans()) for _ in out_groups]
    if data.draw(st.booleans()):  # every argument in one group, as exported kernels take them
        X = [np.ascontiguousarray(np.concatenate(X, axis=1))]
    whole = _run_kernel(tape, out_groups, 10**9, opt, X, P, null)
    with monkeypatch.context() as m:
        m.setattr(chunking, "STACK_CELLS", stack_cells)
        cut = _run_kernel(tape, out_groups, chunk, opt, X, P, null)
    assert _bits(cut) == _bits(whole)


def _lj(x):
    r = x.reshape(-1, 3)
    e = 0.0
    for i in range(len(r)):
        for j in range(i + 1, len(r)):
            d = r[i] - r[j]
            s = 1.0 / (np.sum(d * d) + 0.5)
            e = e + s ** 6 - np.sin(s ** 3)
    return e


@pytest.mark.parametrize("stack_cells", [0, 10**6])
def test_exported_chunked_kernels_link_and_match_the_jit_bitwise(tmp_path, monkeypatch, stack_cells):
    """Pieces, constant tables, pools and release functions of value, gradient and Hessian kernels survive the
    export's text surgery and link into one shared library that returns the JIT's bits."""
    ex = importlib.import_module("tapead.runtime.export")  # the module, where tapead.runtime.export names the function
    if ex.find_compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setattr(codegen, "CUT_ABOVE", 40)
    monkeypatch.setattr(codegen, "CHUNK", 40)
    monkeypatch.setattr(chunking, "STACK_CELLS", stack_cells)
    x0 = np.random.default_rng(5).normal(size=12)
    t = tapead.record(_lj, x0)
    text = ex.module_ir(t, "chk", hessian=True)
    assert text.count(" noinline ") > 10 and ("_release()" in text) == (stack_cells == 0)
    paths = ex.export(t, tmp_path, "chk", hessian=True)
    header = paths["header"].read_text()
    assert ("No allocation" in header) == (stack_cells > 0) and ("pool of heap buffers" in header) == (stack_cells == 0)
    lib = ctypes.CDLL(str(paths["shared"]))
    n = t.n_inputs
    X = np.ascontiguousarray(x0 + 0.1 * np.random.default_rng(6).normal(size=(3, n)))
    p = ctypes.c_void_p
    for x in X:
        v, g, H = np.zeros(1), np.zeros(n), np.zeros((n, n))
        assert lib.chk_value(p(x.ctypes.data), None, p(v.ctypes.data)) == 0
        assert _bits(v) == _bits(np.array([t.value(x)]))
        assert lib.chk_gradient(p(x.ctypes.data), None, p(v.ctypes.data), p(g.ctypes.data)) == 0
        value, grad = t.value_and_gradient(x)
        assert _bits(v) == _bits(np.array([value])) and _bits(g) == _bits(grad)
        assert lib.chk_hessian(p(x.ctypes.data), None, p(H.ctypes.data)) == 0
        assert _bits(H) == _bits(t.hessian(x))
    G = np.zeros((3, n))
    assert lib.chk_gradient_batch(ctypes.c_long(3), p(X.ctypes.data), None, None, p(G.ctypes.data)) == 0
    assert _bits(G) == _bits(t.gradient(X))



def _public_results(prog, args, params, cut):
    """Value, gradient, Jacobian and Hessian through the public methods, kernels cut above ``cut`` records."""
    saved = codegen.CUT_ABOVE, codegen.CHUNK
    codegen.CUT_ABOVE, codegen.CHUNK = cut, max(cut, 1)
    try:
        t = tapead.record(prog, *args, params=params)
        X = batch_of(args, np.random.default_rng(2))
        res = [t.value_and_gradient(*args, params=params), t.value_and_gradient(*X, params=params),
               t.gradient(*X, params=params), t.jacobian(*args, params=params)]
        if t.n_inputs:
            res.append(t.hessian(*args, params=params))
            res.append(tapead.hessian_tape(t).value(*X, params=params))
        return res
    finally:
        codegen.CUT_ABOVE, codegen.CHUNK = saved


@settings(max_examples=60, deadline=None, suppress_health_check=SLOW)
@given(st.data(), st.integers(1, 5))
def test_public_methods_give_the_same_bits_with_cut_kernels(data, cut):
    prog, args, params = data.draw(programs())
    whole = _public_results(prog, args, params, 10**9)
    assert _bits(_public_results(prog, args, params, cut)) == _bits(whole)


CUSTOM_SCRIPT = r"""
import sys
import numpy as np
import tapead, tapead.transforms.ad, tapead.transforms.higher
if sys.argv[2] == "forbid":  # this process must find every derived tape on disk
    def refuse(*a, **k):
        raise AssertionError("derived again")
    tapead.transforms.higher.tangent_sweeps = tapead.transforms.ad.value_and_grad = refuse


@tapead.custom_op
def sq(x):
    return x * x


@sq.derivative
def _(x):
    return (float(sys.argv[1]) * x,)  # a rule corrected between runs: 3 x, then 2 x


@tapead.custom_op
def myexp(x):
    return np.exp(x)


@myexp.derivative
def _(x):
    return (myexp(x),)  # a rule that calls its own op


x = np.array([1.0, 2.0])
t = tapead.record(lambda x: np.sum(sq(x)) + myexp(x[0]), x)
print(repr(t.gradient(x).tolist())); print(repr(t.hessian(x).tolist()))
"""


def test_a_corrected_custom_rule_is_not_served_the_old_derived_tape(tmp_path):
    env = dict(os.environ, TAPEAD_CACHE_DIR=str(tmp_path), TAPEAD_CACHE="1", TAPEAD_BACKGROUND_O2="0")

    def run(coef, mode):
        r = subprocess.run([sys.executable, "-c", CUSTOM_SCRIPT, coef, mode], capture_output=True, text=True,
                           env=env, cwd=str(Path(__file__).resolve().parents[2]), timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return [eval(line) for line in r.stdout.splitlines()]

    e = np.exp(1.0)
    assert run("3", "derive") == [[3.0 + e, 6.0], [[3.0 + e, 0.0], [0.0, 3.0]]]
    assert run("2", "derive") == [[2.0 + e, 4.0], [[2.0 + e, 0.0], [0.0, 2.0]]]
    assert run("2", "forbid") == [[2.0 + e, 4.0], [[2.0 + e, 0.0], [0.0, 2.0]]]  # stored under the new rule


# ---- forward sweeps: the visit of what a nonzero tangent reaches records what a full sweep records ---------------
def _full_sweep(tape, vals, tangents):
    """The forward sweep over every instruction in tape order (the reference)."""
    from tapead.transforms.ad import _mask_of, _masked, _rec_of, both, either
    from tapead.table.ops import BY_CODE as rows
    from tapead.tracing.tracer import Scalar
    tan = list(tangents) + [None] * (tape.n_slots - tape.n_inputs)
    mask = [None] * tape.n_slots
    first = tape.first_result
    unset = object()
    for i, (op, *args) in enumerate(tape.code.tolist()):
        row = rows[op]
        args = args[:row.arity]
        ts = [tan[a] for a in args]
        shared = unset  # the union of the masks of the nonzero argument tangents, in argument order, then the tangent
        for a, t in zip(args, ts):
            if t is not None:
                shared = mask[a] if shared is unset else either(shared, mask[a], _rec_of(*ts))
        shared = None if shared is unset else shared
        total = row.tangent(ts, *(vals[x] for x in args), vals[first + i]) if any(t is not None for t in ts) else None
        if shared is not None and isinstance(total, Scalar):
            shared = both(shared, _mask_of(total), total.rec)
            total = _masked(total, shared, total.rec)
            mask[first + i] = shared
        else:
            mask[first + i] = _mask_of(total)
        tan[first + i] = total
    return tan


def _derived_bytes(t):
    from tapead.transforms import ad, higher, sparsity
    from tapead.ir import store
    res = [ad.jvp(t.tape), tapead.jacobian_tape(t, "forward"), tapead.sparse_jacobian_tape(t)]
    if t.n_outputs == 1:
        res += [tapead.hessian_tape(t), tapead.hvp_tape(t), tapead.sparse_hessian_tape(t),
                tapead.value_gradient_hessian_tape(t)]
    elif t.n_outputs:
        res += [tapead.hessian_tape(t, True), tapead.sparse_hessian_tape(t, True)]
    return [store.to_bytes(d) for d in res]


def _same_as_full_sweep(t, monkeypatch):
    from tapead.transforms import ad, higher
    got = _derived_bytes(t)
    with monkeypatch.context() as m:
        m.setattr(ad, "forward", _full_sweep)
        m.setattr(higher, "forward", _full_sweep)
        assert _derived_bytes(t.replace()) == got


@settings(max_examples=80, deadline=None, suppress_health_check=SLOW)
@given(programs())
def test_forward_sweeps_record_what_a_full_sweep_records(monkeypatch, case):
    prog, args, params = case
    _same_as_full_sweep(tapead.record(prog, *args, params=params), monkeypatch)


def test_forward_sweeps_with_guards_and_masked_selects(monkeypatch):
    def f(x):
        a = np.where(x[0] > 0, np.sqrt(x[0]), np.log(-x[0] + 1.0))
        b = x[1] * x[2] if x[1] > x[2] else np.exp(x[2])
        c = np.where(x[3] < 1.0, 0.0 * np.log(x[3]), x[3] ** 3)
        return np.stack([a * b + c, np.sin(a) * x[3], np.maximum(x[0], x[1]) * c])
    x = np.array([0.5, 2.0, -1.0, -0.5])
    t = tapead.record(f, x)
    assert len(t.guards) and "select" in t.op_counts()
    _same_as_full_sweep(t, monkeypatch)
    _same_as_full_sweep(tapead.record(lambda x: np.sum(f(x) ** 2), x), monkeypatch)
