"""The aliasing rule and the one validation path: outputs never share memory with each other or with the inputs,
out= is a plain ndarray, and a call has the same outcome before its kernel is compiled (Python path) and after
(native entry point)."""
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import tapead


def guarded(x):
    if x[0] > 0:
        return np.sum(x ** 2) + x[0] * x[1]
    return np.sum(x ** 3)


def two(x, y):
    return np.sum(x * y) + np.sum(np.sin(x))


def scalar(s):
    return s * s + np.sin(s)


def vec(x):
    return x * x[0]


def fresh(f, *args, **kw):
    return tapead.record(f, *args, **kw)


def outcome(call):
    """What a call did: its error (type and message), or 'ok'."""
    try:
        call()
    except tapead.TapeadError as e:
        return type(e).__name__, str(e)
    return "ok"


def both(make, call):
    """The outcome of ``call(tape)`` on a fresh tape (Python path, compiles) and again (native path)."""
    t = make()
    first = outcome(lambda: call(t))
    t.compile()
    return first, outcome(lambda: call(t))


# ---- 1. the same array as two outputs ------------------------------------------------------------------------
def test_same_array_as_two_gradient_outputs_is_refused():
    x, y = np.array([0.3, 0.4]), np.array([1.0, 2.0])
    g = np.empty(2)
    first, second = both(lambda: fresh(two, x, y), lambda t: t.gradient(x, y, out=(g, g)))
    assert first == second and first[0] == "InputError" and "out[0] and out[1]" in first[1]


def test_value_and_gradient_same_array_is_refused_for_a_batch():
    S = np.linspace(-1, 1, 7)
    A = np.empty(7)
    t = fresh(scalar, 0.5).compile()
    with pytest.raises(tapead.InputError, match=r"out\[0\] and out\[1\]"):
        t.value_and_gradient(S, out=(A, A))
    v, g = t.value_and_gradient(S, out=(np.empty(7), A))
    assert np.array_equal(g, 2 * S + np.cos(S)) or np.allclose(g, 2 * S + np.cos(S), rtol=1e-15)


def test_native_callable_refuses_aliased_outputs():
    x = np.array([0.3, 0.4, 0.5])
    t = fresh(guarded, x)
    f = t.native("gradient")
    g = np.zeros(3)
    with pytest.raises(tapead.InputError, match="value_out and grad_out"):
        f(x, None, g[0, ...], g)  # a 0-d view into the gradient output
    with pytest.raises(tapead.InputError, match="grad_out.* and argument 0"):
        f(x, None, None, x)
    assert np.array_equal(x, [0.3, 0.4, 0.5])
    v = np.empty(())
    assert f(x, None, v, g) is g
    assert np.array_equal(g, t.gradient(x)) and float(v) == t.value(x)
    val = fresh(vec, x).native("value")
    y = x.copy()
    with pytest.raises(tapead.InputError, match="out and argument 0 share memory"):
        val(y, None, y)
    assert np.array_equal(y, x) and np.array_equal(val(x, None, np.empty(3)), x * x[0])


# ---- 2. out= aliasing the input on a guarded tape -------------------------------------------------------------
@pytest.mark.parametrize("method", ["gradient", "value_and_gradient", "jacobian", "hessian", "value"])
def test_out_aliasing_the_input_is_refused_and_the_input_kept(method):
    x0 = np.array([0.5, 1.0])
    t = fresh(guarded, x0)
    X = np.array([[0.5, 1.0], [-0.5, 2.0], [0.25, -1.0]])
    for compiled in (False, True):
        for data in (X[1].copy(), X.copy()):
            keep = data.copy()
            if method == "value_and_gradient":
                call = lambda: t.value_and_gradient(data, out=(np.empty(data.shape[:-1]), data))
            elif method == "hessian":
                buf = np.zeros(data.shape[:-1] + (2, 2))
                flat = buf.reshape(-1)
                flat[:data.size] = data.ravel()
                data = flat[:data.size].reshape(data.shape)  # the input lives inside the output
                keep = data.copy()
                call = lambda: t.hessian(data, out=buf)
            elif method == "value":
                out = data.reshape(-1)[:data.shape[0] if data.ndim == 2 else 1].reshape(data.shape[:-1])
                call = lambda: t.value(data, out=out)
            else:
                call = lambda: getattr(t, method)(data, out=data)
            with pytest.raises(tapead.InputError, match="share memory"):
                call()
            assert np.array_equal(data, keep)
        if not compiled:
            t.compile()
            t.jacobian(X[0]), t.hessian(X[0])


def test_reference_results_still_right_without_aliasing():
    t = fresh(guarded, np.array([0.5, 1.0]))
    X = np.array([[0.5, 1.0], [-0.5, 2.0]])
    G = t.gradient(X, out=np.empty_like(X))
    assert np.allclose(G[0], [2 * 0.5 + 1.0, 2 * 1.0 + 0.5]) and np.allclose(G[1], 3 * X[1] ** 2)


# ---- 3. assemble_gradient with out overlapping X / C / params -------------------------------------------------
def spring(x, p):
    d = x[2:] - x[:2]
    return 0.5 * p[0] * (np.sqrt(d[0] ** 2 + d[1] ** 2) - p[1]) ** 2


def test_assemble_out_overlapping_its_inputs_is_refused():
    rng = np.random.default_rng(0)
    M, n = 40, 30
    C = rng.integers(0, M, (n, 4))
    buf = rng.normal(size=n * 4 + M)
    X = buf[:n * 4].reshape(n, 4)
    P = np.tile([1.5, 0.7], (n, 1))
    t = fresh(spring, X[0], params=P[0])
    ref = t.assemble_gradient(X.copy(), C, M, params=P)
    keep = X.copy()
    with pytest.raises(tapead.InputError, match="out and X share memory"):
        t.assemble_gradient(X, C, M, params=P, out=buf[n * 4 - 3:n * 4 - 3 + M])
    assert np.array_equal(X, keep)
    pbuf = np.zeros(2 * n + M)
    pbuf[:2 * n] = P.ravel()
    with pytest.raises(tapead.InputError, match="out and params share memory"):
        t.assemble_gradient(X, C, M, params=pbuf[:2 * n].reshape(n, 2), out=pbuf[2 * n - 1:2 * n - 1 + M])
    g = buf[n * 4:]  # adjacent, not overlapping: fine
    assert t.assemble_gradient(X, C, M, params=P, out=g) is g and np.array_equal(g, ref)


# ---- 4. partial overlap in a batch split across threads ------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(shift=st.integers(-30, 30), threads=st.sampled_from([1, 2, 3]))
def test_partial_overlap_in_threaded_batches(shift, threads, monkeypatch_ops):
    t, n = monkeypatch_ops
    rows = 50
    buf = np.random.default_rng(abs(shift)).normal(size=rows * n * 2 + 64)
    X = buf[64:64 + rows * n].reshape(rows, n)
    start = 64 + shift
    G = buf[start:start + rows * n].reshape(rows, n)
    ref = t.gradient(X.copy(), threads=1)
    keep = X.copy()
    if abs(shift) < rows * n:
        with pytest.raises(tapead.InputError, match="out and argument 0 share memory"):
            t.gradient(X, out=G, threads=threads)
        assert np.array_equal(X, keep)
    else:
        assert np.array_equal(t.gradient(X, out=G, threads=threads), ref)


@pytest.fixture(scope="module")
def monkeypatch_ops():
    mp = pytest.MonkeyPatch()
    mp.setattr("tapead.runtime.calls.OPS_PER_THREAD", 1)  # really split across threads
    yield fresh(guarded, np.array([0.5, 1.0, 1.5])).compile(), 3
    mp.undo()


# ---- 5. masked arrays and other subclasses as out= -----------------------------------------------------------
@pytest.mark.parametrize("method", ["value", "hessian", "jacobian", "value_and_gradient", "gradient"])
def test_masked_and_subclass_outs_are_refused(method):
    t = fresh(scalar, 0.5)
    for compiled in (False, True):
        for out in (np.ma.masked_array(np.zeros(())), np.ma.masked_array(np.zeros(()), mask=True),
                    np.zeros(()).view(np.recarray)):
            o = (np.empty(()), out) if method == "value_and_gradient" else out
            with pytest.raises(tapead.InputError, match="plain numpy array"):
                getattr(t, method)(0.25, out=o)
            if method == "value_and_gradient":
                with pytest.raises(tapead.InputError, match="plain numpy array"):
                    t.value_and_gradient(0.25, out=(out, np.empty(())))
        if not compiled:
            t.compile()
            t.jacobian(0.25), t.hessian(0.25)
    o = np.empty(())
    assert getattr(t, method)(0.25, out=(np.empty(()), o) if method == "value_and_gradient" else o) is not None


def test_subclass_out_refused_by_the_native_entry_too():
    x = np.array([0.3, 0.4, 0.5])
    t = fresh(guarded, x).compile()
    for out in (np.ma.masked_array(np.zeros(3)), np.ma.masked_array(np.zeros(3), mask=[1, 0, 0]),
                memoryview(np.zeros(3))):
        with pytest.raises(tapead.InputError, match="numpy array"):
            t.gradient(x, out=out)
        with pytest.raises(tapead.InputError, match="numpy array"):
            t.native("gradient")(x, None, None, out)


# ---- 6. the fast path accepts exactly what the Python path accepts ------------------------------------------
ONES = np.ones(2)
CALLS = {  # name: (make the tape, the call)
    "memoryview out": (lambda: fresh(guarded, ONES), lambda t: t.gradient(ONES, out=memoryview(np.empty(2)))),
    "(None, gy)": (lambda: fresh(two, ONES, ONES), lambda t: t.gradient(ONES, ONES, out=(None, np.empty(2)))),
    "(g,) for one argument": (lambda: fresh(guarded, ONES), lambda t: t.gradient(ONES, out=(np.empty(2),))),
    "list of outs": (lambda: fresh(two, ONES, ONES),
                     lambda t: t.gradient(ONES, ONES, out=[np.empty(2), np.empty(2)])),
    "value memoryview": (lambda: fresh(vec, ONES), lambda t: t.value(ONES, out=memoryview(np.empty(2)))),
    "value float32 out": (lambda: fresh(vec, ONES), lambda t: t.value(ONES, out=np.empty(2, np.float32))),
    "value threads=0": (lambda: fresh(guarded, ONES), lambda t: t.value(ONES, threads=0)),
    "gradient threads=True": (lambda: fresh(guarded, ONES), lambda t: t.gradient(ONES, threads=True)),
    "jacobian memoryview": (lambda: fresh(vec, ONES), lambda t: t.jacobian(ONES, out=memoryview(np.empty((2, 2))))),
    "hessian masked": (lambda: fresh(guarded, ONES),
                       lambda t: t.hessian(ONES, out=np.ma.masked_array(np.empty((2, 2))))),
    "hessian not aliased": (lambda: fresh(guarded, np.ones(4)), lambda t: t.hessian(np.ones(4), out=np.ones((4, 4)))),
}


ACCEPTED = ("list of outs", "hessian not aliased")


@pytest.mark.parametrize("name", list(CALLS))
def test_same_outcome_before_and_after_compiling(name):
    make, call = CALLS[name]
    t = make()
    first = outcome(lambda: call(t))
    t.compile()  # and the derived kernels whose native entries jacobian / hessian use
    if "jacobian" in name:
        t.jacobian(np.ones(2))
    if "hessian" in name:
        t.hessian(np.ones(t.n_inputs))
    second = outcome(lambda: call(t))
    assert first == second
    if name in ACCEPTED:
        assert first == "ok"
    else:
        assert first[0] == "InputError"


# ---- any method, any overlap: refused iff memory is shared, else the reference bits ----------------------------
@pytest.fixture(scope="module")
def guarded_tape():
    t = fresh(guarded, np.array([0.5, 1.0]))
    t.gradient(np.array([[0.5, 1.0], [-0.5, 1.0]] * 3))  # the other path too
    return t


def _views(buf, offsets, shapes):
    views = []
    for off, shape in zip(offsets, shapes):
        size = int(np.prod(shape))
        views.append(buf[off:off + size].reshape(shape))
    return views


SHAPES = {  # per method: (output shapes, result as a tuple) for inputs of shape lead + (2,)
    "value": lambda lead: [lead],
    "gradient": lambda lead: [lead + (2,)],
    "value_and_gradient": lambda lead: [lead, lead + (2,)],
    "jacobian": lambda lead: [lead + (2,)],
    "hessian": lambda lead: [lead + (2, 2)],
}


@settings(max_examples=150, deadline=None)
@given(method=st.sampled_from(sorted(SHAPES)), batch=st.sampled_from([None, 1, 5]),
       offsets=st.lists(st.integers(0, 40), min_size=3, max_size=3), threads=st.sampled_from([None, 1, 2]),
       seed=st.integers(0, 50))
def test_any_overlap_is_refused_and_no_overlap_is_exact(guarded_tape, method, batch, offsets, threads, seed):
    t = guarded_tape
    lead = () if batch is None else (batch,)
    out_shapes = SHAPES[method](lead)
    # (batches of Jacobians and Hessians follow no other path: they stay on the recorded side of the `if`)
    low = 0.1 if method in ("jacobian", "hessian") and batch else -1
    buf = np.random.default_rng(seed).uniform(low, 1, 64)
    x, *outs = _views(buf, offsets, [lead + (2,)] + out_shapes)
    xc = x.copy()
    kw = {} if method in ("jacobian", "hessian") else {"threads": threads}
    ref = getattr(t, method)(xc, **kw)
    out = outs[0] if len(outs) == 1 else tuple(outs)
    shared = any(np.shares_memory(a, b) for i, a in enumerate([x] + outs) for b in outs[i:] if a is not b)
    event("shared" if shared else "apart")
    if shared:
        before = buf.copy()
        with pytest.raises(tapead.InputError, match="share memory"):
            getattr(t, method)(x, out=out, **kw)
        assert np.array_equal(buf, before)  # nothing written
    else:
        got = getattr(t, method)(x, out=out, **kw)
        pairs = zip(got, ref) if isinstance(ref, tuple) else [(got, ref)]
        for g, r in pairs:
            assert np.array_equal(np.asarray(g), np.asarray(r))
        assert np.array_equal(x, xc)
