"""Matrix products keep array rules: the adjoint of ``A @ B`` is two products (``G Bᵀ``, ``Aᵀ G``), product loops
compile as loop nests, and a reverse loop reads the forward loop's outputs instead of recomputing them.

Each is checked bitwise against the form it replaces (the scatter reverse, the gather loop), and the gradients
against the unrolled tape, autograd and central differences."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
import tapead.transforms.ad as ad
from check import assert_close, fd_gradient, magnitude
from tapead.backend import loops, products
from tapead.backend.codegen import lower
from tapead.ir.contraction import dot_body, dot_length, outer_layout, product_length
from tapead.ir.structure import map_runs, walk
from tapead.table.ops import OPS

RNG = np.random.default_rng(11)
X = RNG.normal(size=(72, 5))


def mlp(p, xp=np):
    W1, c1 = p[:40].reshape(5, 8), p[40:48]
    W2, c2 = p[48:112].reshape(8, 8), p[112:120]
    h = xp.tanh(X @ W1 + c1)
    h = xp.tanh(h @ W2 + c2)
    return xp.mean((h @ p[120:128].reshape(8, 1))[:, 0] ** 2)  # a product with one column: G Bᵀ has one term


def two_traced(x, xp=np):
    A, B = x[:60].reshape(12, 5), x[60:].reshape(5, 9)
    return xp.sum(xp.sin(A @ B) * xp.arange(108.0).reshape(12, 9))


def tiled(x, xp=np):  # wide enough for register tiles, with rows and columns left over
    A, B = x[:234].reshape(13, 18), x[234:].reshape(18, 21)
    C = A @ B
    return xp.sum(C * C * C * xp.arange(273.0).reshape(13, 21))  # arithmetic only: the interpreter's bits too


def shared(x, xp=np):  # the same slots on both sides: the scatter keeps its order, the product rule stands aside
    A = x.reshape(12, 5)
    return xp.sum(xp.cos(A @ A.T))


def masked(x, xp=np):  # cotangents that come through a select
    A, B = x[:60].reshape(12, 5), x[60:].reshape(5, 9)
    C = A @ B
    return xp.sum(xp.where(C > 0, C ** 2, 0.0))


CASES = {"mlp": (mlp, 128), "two_traced": (two_traced, 105), "tiled": (tiled, 612), "shared": (shared, 60), "masked": (masked, 105)}


def _without_product_rule(monkeypatch, f, x):
    monkeypatch.setattr(ad, "reverse_product", lambda *a: False)
    return tapead.record(f, x).gradient(x)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_product_rule_gives_the_bits_of_the_scatter(name, monkeypatch):
    f, n = CASES[name]
    x = RNG.normal(size=n) * 0.5
    t = tapead.record(f, x)
    assert any(product_length(m) for m in t.maps)
    g = t.gradient(x)
    want = _without_product_rule(monkeypatch, f, x)
    assert np.array_equal(g, want)
    u = tapead.record(f, x, structured=False)
    assert_close(g, u.gradient(x), 1e-12, scale=magnitude(g))
    fd = fd_gradient(f, x)
    assert_close(g, fd, 1e-7, scale=magnitude(fd))
    import autograd
    import autograd.numpy as anp
    ref = autograd.grad(lambda q: f(q, anp))(x)
    assert_close(g, ref, 1e-12, scale=magnitude(ref))


def test_the_reverse_of_a_product_is_two_products():
    x = RNG.normal(size=105)
    t = tapead.record(two_traced, x)
    g = tapead.grad(t.tape)
    assert sum(1 for m in g.maps if product_length(m)) == 3  # the forward product, G Bᵀ and Aᵀ G
    assert not any(m.scatter_size for m in g.maps if m.body.n_inputs == 2 * 5 + 1)  # no scattering dot body


def test_a_shared_operand_keeps_the_scatter():
    x = RNG.normal(size=60)
    g = tapead.grad(tapead.record(shared, x).tape)
    assert any(m.scatter_size for m in g.maps)


def _executed(tape, op: str) -> int:
    """How many times one evaluation runs op ``op`` (maps: the body's count times the iterations)."""
    code = OPS[op].code
    count = int(np.sum(tape.code[:, 0] == code))
    return count + sum(m.n * int(np.sum(m.body.code[:, 0] == code)) for m in tape.maps)


def test_the_gradient_runs_each_tanh_once():
    p = RNG.normal(size=128) * 0.3
    t = tapead.record(mlp, p)
    assert _executed(t.tape, "tanh") == 2 * 72 * 8
    assert _executed(tapead.value_and_grad(t.tape), "tanh") == 2 * 72 * 8


def test_dot_bodies_are_recognised_exactly():
    for k in (1, 2, 7):
        assert dot_length(dot_body(k)) == k
    body = dot_body(3)
    code = body.code.copy()
    code[2, 0] = OPS["sub"].code
    assert dot_length(body.replace(code=code)) is None
    code = body.code.copy()
    code[1, 2] = 0  # u1 * u0: not a dot product
    assert dot_length(body.replace(code=code)) is None


def test_outer_layouts():
    u = np.repeat(np.array([3, 7, 11]), 4)
    v = np.tile(np.array([0, 2, 4, 6]), 3)
    assert outer_layout(u, v) == (3, 4)
    assert outer_layout(u, np.arange(12)) is None  # column offsets that differ between rows
    assert outer_layout(u[:-1], v[:-1]) is None


@pytest.mark.parametrize("f, n", [(two_traced, 105), (tiled, 612)])
def test_product_loops_compile_as_nests_with_the_bits_of_the_gather_loop(f, n, monkeypatch):
    x = RNG.normal(size=n)
    t = tapead.record(f, x)
    grad = tapead.value_and_grad(t.tape)
    plan = loops.Plan(grad, map_runs(grad), loops.pointers(grad, [n]))
    assert len(plan.nests) == 3  # every product loop is a nest
    wide = f is tiled
    assert (sum(1 for nest in plan.nests.values() if nest.stage is not None) >= 1) == wide  # G Bᵀ reads B by columns
    assert ("<8 x double>" in lower(grad, "k")) == wide  # register tiles
    fast = tapead.record(f, x).gradient(x)
    monkeypatch.setattr(products, "nest", lambda m, a, b: None)
    slow = tapead.record(f, x).gradient(x)
    assert np.array_equal(fast, slow)
    assert np.array_equal(fast, tapead.evaluate(tapead.grad(t.tape), x))  # the interpreter: numpy, same order


def test_a_product_of_two_terms():
    def f(x):
        A, B = x[:80].reshape(40, 2), x[80:].reshape(2, 30)
        return np.sum(np.exp(A @ B))
    x = RNG.normal(size=140) * 0.3
    t = tapead.record(f, x)
    assert any(product_length(m) == 2 for m in t.maps)
    u = tapead.record(f, x, structured=False)
    assert_close(t.value(x), u.value(x), 1e-13)
    assert_close(t.gradient(x), u.gradient(x), 1e-12, scale=magnitude(u.gradient(x)))
    assert sum(1 for s in walk(t.tape) if s.map is not None) >= 1


A_DATA = RNG.normal(size=(70, 80))


def row_times_data(x, xp=np):  # x @ A with A a closure constant: a one-row product reading the data in place
    v = x @ A_DATA
    return xp.sum(v * v * (1.0 + v))


def matrix_times_vector(p, xp=np):  # W @ h with W traced: a one-column product
    W, h = p[:2100].reshape(70, 30), p[2100:]
    v = W @ h
    return xp.sum(v * v * v)


@pytest.mark.parametrize("f, n", [(row_times_data, 70), (matrix_times_vector, 2130)])
def test_vector_products_are_product_loops_with_the_bits_of_the_gather_loop(f, n, monkeypatch):
    x = RNG.normal(size=n) * 0.5
    t = tapead.record(f, x)
    assert any(product_length(m) for m in t.maps)
    grad = tapead.value_and_grad(t.tape)
    plan = loops.Plan(grad, map_runs(grad), loops.pointers(grad, [n]), data="@k.data")
    assert plan.nests and all(nest.stage is None for nest in plan.nests.values())  # data transposed at recording
    g = t.gradient(x)
    assert np.array_equal(g, tapead.evaluate(tapead.grad(t.tape), x))  # arithmetic only: the interpreter's bits
    monkeypatch.setattr(products, "nest", lambda m, a, b: None)
    assert np.array_equal(g, tapead.record(f, x).gradient(x))
    u = tapead.record(f, x, structured=False)
    assert_close(g, u.gradient(x), 1e-12, scale=magnitude(g))
    fd = fd_gradient(f, x)
    assert_close(g, fd, 1e-7, scale=magnitude(fd))


def test_the_quadratic_form_gradient_and_hessian():
    A = RNG.normal(size=(90, 90))
    x = RNG.normal(size=90)
    t = tapead.record(lambda v: v.T @ A @ v, x)
    assert any(product_length(m) for m in t.maps)
    assert_close(t.gradient(x), (A + A.T) @ x, 1e-12, scale=magnitude((A + A.T) @ x))
    assert np.array_equal(t.hessian(x), A + A.T)  # each entry one addition: exact


def test_constants_in_bulk_keep_the_array_order_and_are_shared():
    from tapead.tracing.recorder import FEW, Recorder
    rec = Recorder(on_branch=None)
    block = np.arange(2.0 * FEW).reshape(2, FEW)
    block[0, 1], block[1, 0], block[1, 1] = -0.0, np.nan, block[0, 0]
    ids = rec.constants(block)
    assert ids.tolist() == np.arange(2 * FEW).reshape(2, FEW).tolist()  # one node per entry, in order
    assert rec.constants(block.copy()) is ids  # the same block again: the same nodes
    values = [rec.values[i] for i in ids.ravel()]
    assert np.signbit(values[1]) and np.isnan(values[FEW]) and values[FEW + 1] == values[0]
    assert rec.constants(block.T).ravel().tolist() == list(range(2 * FEW, 4 * FEW))  # another order: another block
    few = rec.constants(np.array([0.0, 1.0, 0.0, -0.0, 1.0] * 20))  # labels, zeros: shared nodes, as ``const``
    assert len(set(few.tolist())) == 3 and few[0] == rec.const(0.0) and few[3] == rec.const(-0.0)


def test_distinct_of_a_few_large_slots_matches_unique():
    from tapead.ir.structure import distinct
    rng = np.random.default_rng(3)
    for a in (rng.integers(0, 10**7, size=(40, 3)), rng.integers(0, 50, size=(400, 5))):
        values, where = distinct(a)
        want, inverse = np.unique(a, return_inverse=True)
        assert np.array_equal(values, want) and np.array_equal(where, inverse.reshape(a.shape))


EINSUM = {
    "ij,jk->ik": lambda x, xp: xp.einsum("ij,jk->ik", x[:180].reshape(20, 9), x[180:].reshape(9, 20)),
    "ij,kj->ik": lambda x, xp: xp.einsum("ij,kj->ik", x[:180].reshape(20, 9), x[180:].reshape(20, 9)),
    "ji,jk->ik": lambda x, xp: xp.einsum("ji,jk->ik", x[:180].reshape(9, 20), x[180:].reshape(9, 20)),
    "i,ij->j": lambda x, xp: xp.einsum("i,ij->j", x[:4], x[40:].reshape(4, 80)),
    "inner": lambda x, xp: xp.inner(x[:180].reshape(20, 9), x[180:].reshape(20, 9)),
    "outer": lambda x, xp: xp.outer(x[:100], x[100:200]),
}


@pytest.mark.parametrize("name", sorted(EINSUM))
def test_einsum_inner_and_outer_of_traced_operands_stay_loops(name):
    g = EINSUM[name]
    n = 200 if name == "outer" else 360

    def f(x, xp=np):
        return xp.sum(xp.sin(g(x, xp)))

    x = RNG.normal(size=n) * 0.5
    t = tapead.record(f, x)
    assert t.maps and (name == "outer" or any(product_length(m) for m in t.maps))
    assert_close(t.value(x), f(x), 1e-12, scale=magnitude(f(x)))
    u = tapead.record(f, x, structured=False)
    assert_close(t.gradient(x), u.gradient(x), 1e-12, scale=magnitude(u.gradient(x)))
    import autograd
    import autograd.numpy as anp
    ref = autograd.grad(lambda q: f(q, anp))(x)
    assert_close(t.gradient(x), ref, 1e-12, scale=magnitude(ref))


def test_other_einsum_forms_run_on_the_cells():
    x = RNG.normal(size=144)
    for spec in ("ii->i", "ij->ji", "ij,jk"):
        def f(v, spec=spec):
            m = v.reshape(12, 12)
            return np.sum(np.sin(np.einsum(spec, m) if spec.count(",") == 0 else np.einsum(spec, m, m)))
        t = tapead.record(f, x)
        assert_close(t.value(x), f(x), 1e-12, scale=magnitude(f(x)))
        assert_close(t.gradient(x), tapead.record(f, x, structured=False).gradient(x), 1e-12)


A300 = RNG.normal(size=(300, 300))
FORWARD = {  # which factor carries tangents: the data times the traced matrix, the traced matrix times data, both
    "data_times_traced": (lambda w, xp=np: xp.sum(xp.tanh(X @ w.reshape(5, 8)) ** 2), 40),
    "traced_times_data": (lambda a, xp=np: xp.sum(xp.sin(a.reshape(60, 5) @ X[:5].T) * a.reshape(60, 5)[:, :1]),
                          300),
    "quadratic": (lambda x, xp=np: x @ A300 @ x + xp.sum(xp.cos(x) * x), 300),
    "both": (two_traced, 105),
}


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_the_forward_rule_of_a_product_gives_the_bits_of_the_sweep(name, monkeypatch):
    from tapead.ir.contraction import Product
    from tapead.transforms import higher
    f, n = FORWARD[name]
    x, v = RNG.normal(size=n) * 0.5, RNG.normal(size=n)
    t = tapead.record(f, x)

    def structured_hvp(fun):
        return ad.jvp(higher.gradient_program(fun.tape, False))

    hvp = structured_hvp(t)
    got = tapead.evaluate(hvp, x, v)
    monkeypatch.setattr(ad, "forward_product", lambda *a: None)
    slow = structured_hvp(tapead.record(f, x))
    want = tapead.evaluate(slow, x, v)
    assert np.array_equal(got.view(np.int64), want.view(np.int64))  # the sweep's terms in its order (to the bit)
    if name != "both":  # (two factors with tangents keep the body's sweep)
        assert sum(isinstance(m, Product) for m in hvp.maps) > sum(isinstance(m, Product) for m in slow.maps)
    u = tapead.record(f, x, structured=False)
    assert_close(got, u.hvp(x, v=v), 1e-12, scale=magnitude(got))
    fd = (t.gradient(x + 1e-6 * v) - t.gradient(x - 1e-6 * v)) / 2e-6
    assert_close(got, fd, 1e-6, scale=magnitude(fd))


def test_a_one_sided_product_tangent_is_one_product_loop():
    from tapead.ir.contraction import Product
    from tapead.transforms.product_ad import forward_product
    f, n = FORWARD["data_times_traced"]
    t = tapead.record(f, RNG.normal(size=n))
    assert any(isinstance(m, Product) for m in t.tape.maps)
    J = ad.jvp(t.tape)
    assert any(isinstance(m, Product) for m in J.maps) and forward_product is ad.forward_product


def test_assume_finite_keeps_the_sweep_of_a_product_with_a_zero_row(monkeypatch):
    # with assume_finite the sweep folds dA * 0 of a shared zero constant (an integer data block's zero row);
    # a product would multiply it (inf * 0 = NaN at an infinite tangent): the rule stands aside
    from tapead.transforms import higher
    B = np.arange(-2.0, 3.0)[np.arange(25) % 5].reshape(5, 5)
    B[2] = 0.0
    f = lambda x: np.sum(np.tanh(np.sqrt(x).reshape(60, 5) @ B))  # noqa: E731
    x = np.linspace(0.0, 1.0, 300)
    v = np.ones(300)
    t = tapead.record(f, x, assume_finite=True)
    got = tapead.evaluate(ad.jvp(higher.gradient_program(t.tape, False)), x, v)
    monkeypatch.setattr(ad, "forward_product", lambda *a: None)
    want = tapead.evaluate(ad.jvp(higher.gradient_program(tapead.record(f, x, assume_finite=True).tape, False)), x, v)
    assert np.array_equal(got.view(np.int64), want.view(np.int64))
