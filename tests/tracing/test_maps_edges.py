"""Maps at their edges: NaN-safe selects around loops, validation of hand-made structured tapes, saving,
pickling, export and zero allocation (the equivalence tests are in test_maps.py)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import tapead
from check import assert_close, magnitude
from functions import lj, lj_start
from tapead.ir import structure
from tapead.errors import TapeFormatError
from test_maps import CASES, RTOL, _close, _moved


# ---- NaN-safe selects inside a loop and across its boundary --------------------------------------------------
def sqrt_inside(x):
    return np.sum(np.where(x > 0, np.sqrt(x), 0.0))


def sqrt_materialised(x):
    y = np.where(x > 0, np.sqrt(x), 0.0)
    return y[0] + np.sum(y)


@pytest.mark.parametrize("f, weight", [(sqrt_inside, lambda n: np.ones(n)),
                                       (sqrt_materialised, lambda n: 1.0 + (np.arange(n) == 0))])
def test_nan_safe_selects(f, weight):
    x0 = np.linspace(-1.0, 2.0, 80)
    x1 = np.where(np.arange(80) % 3 == 1, -1.0, 1.0) * np.linspace(0.5, 1.5, 80)  # x1[0] > 0, x1[1] < 0
    with np.errstate(invalid="ignore"):
        want = np.where(x1 > 0, 0.5 / np.sqrt(np.abs(x1)), 0.0) * weight(80)
    for structured in (None, True):
        t = tapead.record(f, x0, structured=structured)
        assert len(t.maps) >= 1
        G = tapead.grad(t)
        for g in (t.gradient(x1), G.value(x1), G.evaluate(x1), structure.unroll(G).evaluate(x1)):
            assert np.isfinite(g).all()
            assert (g[x1 < 0] == 0.0).all()
            assert_close(g, want, RTOL, scale=magnitude(want))


def sqrt_first(x):
    """Only y[0] reaches the output: the other iterations of the sqrt loop get no cotangent at all."""
    return np.sqrt(x)[0]


def select_in_scalar_code(x):
    """The sqrt is a loop (each outputs), the select runs in scalar code on three of them."""
    y = np.sqrt(x)
    return np.sum(np.where(x[:3] > 0, y[:3], 0.0))


def select_in_a_later_loop(x):
    """y is materialised by y[:10]; the select is a second loop reading y's each outputs."""
    y = np.sqrt(x)
    y[:10]
    return np.sum(np.where(x > 0, y, 0.0))


def test_nan_safe_without_a_cotangent():
    _check_nan_safe(sqrt_first, 5, 0.0)


def test_nan_safe_select_in_scalar_code_after_a_loop():
    _check_nan_safe(select_in_scalar_code, 1, 0.0)


def test_nan_safe_select_in_a_later_loop():
    _check_nan_safe(select_in_a_later_loop, 5, 0.0)


def _check_nan_safe(f, k, want):
    """The gradient at x[k] < 0 is ``want`` (what the scalar tape gives), structured or not."""
    x0 = np.linspace(0.5, 2.0, 64)
    x1 = x0.copy()
    x1[k] = -1.0
    assert tapead.record(f, x0, structured=False).gradient(x1)[k] == want
    t = tapead.record(f, x0)
    assert len(t.maps) >= 1
    assert t.gradient(x1)[k] == want
    assert tapead.grad(t).evaluate(x1)[k] == want


def sum_then_reuse(x):
    y = np.sin(x)
    return np.sum(y) + np.sum(np.cos(y))


def test_loop_vector_reused_after_its_sum():
    x = np.linspace(0.0, 1.0, 64)
    t = tapead.record(sum_then_reuse, x)
    assert len(t.maps) >= 1
    assert_close(t.value(x + 0.1), sum_then_reuse(x + 0.1), RTOL)
    assert_close(t.gradient(x + 0.1), np.cos(x + 0.1) * (1.0 - np.sin(np.sin(x + 0.1))), RTOL)


# ---- validation: hand-made structured tapes --------------------------------------------------------------------
def _with_map(tape, index, **changes):
    m = tape.maps[index]
    fields = dict(body=m.body, tables=m.tables, kinds=m.kinds, dst=m.dst, scatter_size=m.scatter_size)
    fields.update(changes)
    maps = list(tape.maps)
    maps[index] = structure.Map(**fields)
    return tape.replace(maps=tuple(maps))


def _bad_tapes():
    t = tapead.record(lj, lj_start(0))
    G = tapead.grad(t)
    m, gm = t.maps[0], G.maps[0]
    late = m.tables.copy()
    late[3, 2] = t.first_result  # the map's own row
    dst = gm.dst.copy()
    dst[5, 1] = gm.scatter_size
    code = G.code.copy()
    run = np.flatnonzero(code[:, 0] == structure.MAP_ROW)
    code[run[[1, 2]], 2] = code[run[[2, 1]], 2]
    split = G.code.copy()
    split[run[4], 1] = 1
    body = m.body
    return {
        "not defined before the map": _with_map(t, 0, tables=late),
        "do not fit 1 outputs": _with_map(t, 0, kinds=("sum", "sum")),
        "not a kind": _with_map(t, 0, kinds=("gather",)),
        "scatter targets do not fit": _with_map(G, 0, dst=dst),
        "not one run": G.replace(code=code),
        "not one run (map index)": G.replace(code=split),
        "without maps, guards or params (guards)": _with_map(t, 0, body=body.replace(guards=[[body.first_result, 1]])),
        "without maps, guards or params (params)": _with_map(t, 0, body=body.replace(param_shape=(1,))),
        "no map record describes": G.replace(maps=()),
        "tuple of Map records": t.replace(maps=(body,)),
    }


BAD = _bad_tapes()
MESSAGES = {"not a kind": "output kinds", "not one run (map index)": "not one run",
            "without maps, guards or params (guards)": "without maps, guards or params",
            "without maps, guards or params (params)": "without maps, guards or params"}


@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_structured_tapes_are_refused(what):
    with pytest.raises(TapeFormatError, match=MESSAGES.get(what, what)):
        BAD[what].check()


def test_save_load_and_pickle_round_trip(tmp_path):
    for name in ("lj", "params", "vector_out"):
        f, args0, p = CASES[name]
        t = tapead.record(f, *args0, params=p)
        assert len(t.maps) >= 1
        x1 = _moved(args0)
        for u in (tapead.load(tapead.save(t, tmp_path / f"{name}.tape")), pickle.loads(pickle.dumps(t))):
            u.check()
            assert u.input_shapes == t.input_shapes and u.output_shape == t.output_shape
            _close(u.value(*x1, params=p), t.value(*x1, params=p))
            _close(u.evaluate(*x1, params=p), t.evaluate(*x1, params=p))
            if t.output_shape == ():
                _close(u.gradient(*x1, params=p), t.gradient(*x1, params=p))


# ---- export and zero allocation --------------------------------------------------------------------------------
def test_exported_structured_gradient_is_bitwise_equal(tmp_path):
    import ctypes
    import importlib
    ex = importlib.import_module("tapead.runtime.export")
    if ex.find_compiler() is None:
        pytest.skip("no C compiler")
    t = tapead.record(lj, lj_start(0))
    assert len(t.maps) >= 1
    lib = ctypes.CDLL(str(ex.export(t, tmp_path, "ljmap")["shared"]))
    ptr = lambda a: ctypes.c_void_p(a.ctypes.data)  # noqa: E731
    for seed in range(3):
        x = lj_start(seed + 1)
        v, g, w = np.zeros(1), np.zeros(x.size), np.zeros(1)
        assert lib.ljmap_gradient(ptr(x), None, ptr(v), ptr(g)) == 0
        assert lib.ljmap_value(ptr(x), None, ptr(w)) == 0
        value, grad = t.value_and_gradient(x)
        assert np.array_equal(g, t.gradient(x)) and np.array_equal(g, grad)
        assert v[0] == value == w[0] == t.value(x)


def test_structured_gradient_out_does_not_allocate():
    from test_alloc import check_no_growth
    t = tapead.record(lj, lj_start(0)).compile()
    assert len(t.maps) >= 1
    x = lj_start(1)
    g = np.empty_like(x)
    check_no_growth(lambda: t.gradient(x, out=g), 100, 5_000)
    assert np.array_equal(g, tapead.record(lj, lj_start(0)).gradient(x))


def test_unrolled_batch_loops_give_the_bits_of_single_points(monkeypatch):
    """The background O2 build of a tape with loops adds an unrolled point function for its batch loops (it
    vectorises across points); a batch returns exactly the bits of its points one at a time (the loop kernel)."""
    from tapead.runtime.calls import kernel, wait_for_upgrades
    from tapead.backend.codegen import flat_batches_pay
    x = lj_start(atoms=12)  # 66 pairs: one loop; unrolled, its gradient stays whole and vectorises
    X = x + np.random.default_rng(3).uniform(-0.02, 0.02, (37, x.size))
    want = tapead.record(lj, x, structured=False).gradient(X)  # before background builds are on: none linger
    monkeypatch.setenv("TAPEAD_BACKGROUND_O2", "1")
    tape = tapead.record(lj, x)
    assert len(tape.maps) == 1 and flat_batches_pay(kernel(tape, "value_and_gradient")[0])
    single = np.array([tape.gradient(p) for p in X])  # the loop kernels, before the upgrades land
    single_values = np.array([tape.value(p) for p in X])
    wait_for_upgrades(tape, timeout=900)  # both kinds' builds: none may outlive this test
    assert tape.state.upgraded == 2
    values, grads = tape.value_and_gradient(X)
    assert np.array_equal(tape.gradient(X), single) and np.array_equal(grads, single)
    assert np.array_equal(tape.value(X), single_values) and np.array_equal(values, single_values)
    assert_close(grads, want, RTOL, scale=magnitude(want))


def _rowwise(x):
    p = x.reshape(-1, 3)
    i, j = np.triu_indices(len(p), 1)
    d = p[i] - p[j]
    W = np.array([[0.5, -1.0, 0.25], [1.5, 0.75, -0.5], [0.0, 2.0, 1.0]])
    q = d @ W
    return np.sum(np.exp(-np.linalg.norm(d, axis=1)) * np.max(np.abs(q), axis=1)) + \
        np.sum(np.prod(d, axis=1)) + np.sum(np.dot(d, np.array([1.0, 2.0, 3.0])) * np.std(d, axis=1))


def test_row_reductions_and_constant_matrices_stay_in_the_loop():
    """norm/max/prod/std over the block axes and products with constant matrices are computed per row inside
    the loop body (no materialised (n, 3) array); the results are those of the scalar tape."""
    x = np.random.default_rng(5).uniform(0.0, 3.0, 60)  # 20 atoms, 190 pairs
    tape, scalar_tape = tapead.record(_rowwise, x), tapead.record(_rowwise, x, structured=False)
    assert tape.maps and all(kind == "sum" for m in tape.maps for kind in m.kinds)  # nothing materialised
    x1 = x * 1.01
    assert_close(tape.value(x1), scalar_tape.value(x1), RTOL, scale=magnitude(scalar_tape.value(x1)))
    g = scalar_tape.gradient(x1)
    assert_close(tape.gradient(x1), g, RTOL, scale=magnitude(g))
    H = scalar_tape.hessian(x1)
    assert_close(tape.hessian(x1), H, RTOL, scale=magnitude(H))


def _two_terms(x):
    return 2.0 * lj(x) - np.sum(np.prod(x.reshape(-1, 3)[np.triu_indices(30, 1)[0]], axis=1)) / 4.0 + x[0] + 3.0


def _two_loops(x):
    return 2.0 * lj(x) - np.sum(x * x) / 4.0 + x[0]  # a loop over 435 pairs and one over 90 inputs


@pytest.mark.parametrize("f", [lj, _two_terms, _two_loops])
def test_value_gradient_hessian_of_tapes_with_loops(f):
    """``value_gradient_hessian`` returns the bits of ``value``, ``gradient`` and ``hessian`` whether the Hessian
    is scattered from a loop body (a sum or a combination of sums over one loop) or swept unrolled (two loops)."""
    x = lj_start(atoms=30)
    tape = tapead.record(f, x)
    x1 = x * 1.01
    v, g, H = tape.value_gradient_hessian(x1)
    assert v == tape.value(x1) and np.array_equal(g, tape.gradient(x1)) and np.array_equal(H, tape.hessian(x1))
    want = tapead.record(f, x, structured=False).hessian(x1)
    assert_close(H, want, RTOL, scale=magnitude(want))
    assert np.array_equal(H, H.T)
