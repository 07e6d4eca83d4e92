"""Every spelling of a contraction of traced arrays records as loops (``tapead/tracing/einsum.py``): einsum with
batch indices, ellipses, implicit results, summed-out indices and three operands; tensordot; stacked ``@``; N-D
``np.dot``/``np.inner``.

Each form is checked for its size (the loops' records, not one scalar per multiply-add), against numpy's value,
against the unrolled tape's gradient (``structured=False``: numpy on the cells, summed in another order, so to
rounding), against autograd and against central differences; random two-operand specs (hypothesis) against
numpy and the unrolled tape."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tapead
from check import assert_close, magnitude
from tapead.ir.structure import records, work

RNG = np.random.default_rng(5)
B = RNG.normal(size=(30, 40))
A = RNG.normal(size=(200, 30))
S = RNG.normal(size=(5, 6))


def _split(x, *shapes):
    out, at = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(x[at:at + n].reshape(s))
        at += n
    return out


FORMS = {  # name: (f(x, xp) -> array, input size)
    "tensordot_int": (lambda x, xp: xp.tensordot(x.reshape(100, 12), B[:12, :20], axes=1), 1200),
    "tensordot_pairs": (lambda x, xp: xp.tensordot(x.reshape(12, 100), A[:100, :12], axes=([1], [0])), 1200),
    "tensordot_two_axes": (lambda x, xp: xp.tensordot(x.reshape(100, 5, 6), S, axes=2), 3000),
    "einsum_batch": (lambda x, xp: xp.einsum("bij,bjk->bik", *_split(x, (150, 3, 3), (150, 3, 3))), 2700),
    "einsum_batch_transposed": (lambda x, xp: xp.einsum("bji,bkj->bki", *_split(x, (150, 3, 2), (150, 4, 3))),
                                2700),
    "einsum_rowdot": (lambda x, xp: xp.einsum("ij,ij->i", *_split(x, (500, 6), (500, 6))), 6000),
    "einsum_ellipsis": (lambda x, xp: xp.einsum("...ij,...jk->...ik", *_split(x, (80, 2, 3), (80, 3, 2))), 960),
    "einsum_implicit": (lambda x, xp: xp.einsum("ij,jk", *_split(x, (40, 7), (7, 30))), 490),
    "einsum_summed_out": (lambda x, xp: xp.einsum("ijk,jk->i", x.reshape(100, 5, 6), S), 3000),
    "einsum_alone_index": (lambda x, xp: xp.einsum("ij,k->i", x[:4000].reshape(100, 40), x[4000:4030]), 4030),
    "einsum_three": (lambda x, xp: xp.einsum("ij,jk,k->i", x[:600].reshape(100, 6), S.T[:, :4] * 1.0, x[600:604]),
                     604),
    "einsum_outer_batch": (lambda x, xp: xp.einsum("ni,nj->nij", *_split(x, (200, 3), (200, 2))), 1000),
    "matmul_stacked": (lambda x, xp: xp.matmul(*_split(x, (150, 3, 3), (150, 3, 3))), 2700),
    "matmul_stacked_large": (lambda x, xp: x[:1200].reshape(3, 20, 20) @ x[1200:].reshape(3, 20, 20), 2400),
    "matmul_stack_by_matrix": (lambda x, xp: x.reshape(100, 6, 5) @ S, 3000),
    "matmul_matrix_by_stack": (lambda x, xp: S.T @ x.reshape(10, 5, 60), 3000),
    "gram": (lambda x, xp: x.reshape(500, 3).T @ xp.sin(x.reshape(500, 3)), 1500),  # 9 entries of 500 terms
    "gram_einsum": (lambda x, xp: xp.einsum("ni,nj->ij", x.reshape(500, 3), x.reshape(500, 3)), 1500),
    "vector_matrix_long": (lambda x, xp: xp.cos(x[:500]) @ x.reshape(500, 3), 1500),
    "matrix_vector_long": (lambda x, xp: x.reshape(3, 500) @ xp.cos(x[:500]), 1500),
    "dot_nd": (lambda x, xp: xp.dot(x[:1200].reshape(20, 10, 6), x[1200:].reshape(6, 30)), 1380),
    "method_dot_nd": (lambda x, xp: (x[:1200].reshape(20, 10, 6).dot if xp is np else  # (autograd: no .dot)
                                     lambda b: xp.dot(x[:1200].reshape(20, 10, 6), b))(x[1200:].reshape(6, 30)), 1380),
    "inner_nd": (lambda x, xp: xp.inner(x[:1200].reshape(20, 10, 6), x[1200:].reshape(30, 6)), 1380),
}


def _loss(form):
    g = FORMS[form][0]

    def f(x, xp=np):
        return xp.sum(xp.sin(xp.reshape(g(x, xp), -1)) * 1.5)  # (flat: a loop whatever the result's shape)
    return f


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_contraction_records_as_loops_and_differentiates_like_the_unrolled_tape(form):
    g, n = FORMS[form]
    x = RNG.normal(size=n) * 0.5
    want = g(x, np)
    t = tapead.record(lambda v: g(v, np), x)
    assert np.shape(t.value(x)) == np.shape(want)
    assert_close(t.value(x), want, 1e-12, scale=magnitude(want))
    f = _loss(form)
    t, u = tapead.record(f, x), tapead.record(f, x, structured=False)
    assert t.maps and not u.maps
    shrink = 1 if form == "einsum_alone_index" else 8  # (its sum over one operand's own axis stays scalar)
    assert records(t.tape) * shrink <= len(u.tape), (records(t.tape), len(u.tape))  # loops, not one per term
    assert work(t.tape) <= 2 * len(u.tape) + 10  # and no more work than the unrolled form
    grad = t.gradient(x)
    assert_close(grad, u.gradient(x), 1e-12, scale=magnitude(grad))
    import autograd
    import autograd.numpy as anp
    ref = autograd.grad(lambda q: f(q, anp))(x)
    assert_close(grad, ref, 1e-12, scale=magnitude(ref))
    v = RNG.normal(size=n)
    assert_close(grad @ v, _directional(f, x, v), 1e-7, scale=magnitude(grad @ v))


def _directional(f, x, v, h=1e-3):
    """The derivative of ``f`` along ``v`` by central differences, extrapolated once (Richardson)."""
    d1 = (f(x + h * v) - f(x - h * v)) / (2 * h)
    d2 = (f(x + h / 2 * v) - f(x - h / 2 * v)) / h
    return d2 + (d2 - d1) / 3


def test_contractions_that_are_no_loop_run_on_the_cells():
    """A diagonal, batch axes that broadcast, tiny operands, inner products of vectors: numpy on the traced
    cells, as before."""
    x = RNG.normal(size=400) * 0.5
    cases = [
        lambda v: np.einsum("ii,i->i", v[:100].reshape(10, 10), v[100:110]),
        lambda v: np.matmul(v[:36].reshape(1, 6, 6), v[36:396].reshape(10, 6, 6)),
        lambda v: np.einsum("ij,jk->ik", v[:4].reshape(2, 2), v[4:8].reshape(2, 2)),
        lambda v: np.tensordot(v[:8].reshape(2, 4), v[8:16].reshape(4, 2), axes=1),
        lambda v: np.einsum("i,i->", v, np.sin(v)),  # inner products of two vectors: one chain of additions
        lambda v: v[:150] @ np.cos(v[150:300]),
        lambda v: np.dot(v[:150], v[150:300] ** 2),
        lambda v: np.inner(v[:150], v[150:300]),
        lambda v: np.vdot(v[:150].reshape(30, 5), np.exp(v[150:300] * 0.1).reshape(30, 5)),
    ]
    for g in cases:
        t = tapead.record(lambda v, g=g: np.sum(np.sin(g(v))), x)
        u = tapead.record(lambda v, g=g: np.sum(np.sin(g(v))), x, structured=False)
        assert_close(t.value(x), np.sum(np.sin(g(x))), 1e-12)
        assert_close(t.gradient(x), u.gradient(x), 1e-12)


def test_a_batched_product_is_one_loop_and_its_jax_gradient_and_hvp_agree():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    x = RNG.normal(size=2700) * 0.5
    f = _loss("matmul_stacked")
    t = tapead.record(f, x)
    assert len(t.maps) <= 3
    assert_close(t.gradient(x), np.asarray(jax.grad(lambda q: f(q, jnp))(x)), 1e-12)
    v = RNG.normal(size=2700)
    want = np.asarray(jax.jvp(jax.grad(lambda q: f(q, jnp)), (x,), (v,))[1])
    assert_close(t.hvp(x, v=v), want, 1e-11, scale=magnitude(want))


_LETTERS = "abcde"


@st.composite
def _specs(draw):
    la = draw(st.lists(st.sampled_from(_LETTERS), min_size=1, max_size=3, unique=True))
    lb = draw(st.lists(st.sampled_from(_LETTERS), min_size=1, max_size=3, unique=True))
    used = list(dict.fromkeys(la + lb))
    out = draw(st.lists(st.sampled_from(used), max_size=3, unique=True))
    sizes = {c: draw(st.sampled_from([1, 2, 3, 70])) for c in used}
    big = [c for c in used if sizes[c] == 70]
    for c in big[1:]:  # one long axis at most: the operands stay small
        sizes[c] = 3
    return "".join(la), "".join(lb), "".join(draw(st.permutations(out))), sizes


@settings(max_examples=25, deadline=None)
@given(_specs(), st.booleans())
def test_random_two_operand_einsums_match_numpy_and_the_unrolled_tape(spec, constant_right):
    la, lb, out, sizes = spec
    sa, sb = tuple(sizes[c] for c in la), tuple(sizes[c] for c in lb)
    na = int(np.prod(sa))
    rng = np.random.default_rng(len(la) * 100 + len(lb) * 10 + len(out))
    right = rng.normal(size=sb)
    text = f"{la},{lb}->{out}"

    def g(v, xp=np):
        b = right if constant_right else v[na:].reshape(sb)
        return xp.einsum(text, v[:na].reshape(sa), b)

    n = na + (0 if constant_right else int(np.prod(sb)))
    x = rng.normal(size=n) * 0.5
    f = lambda v: np.sum(np.sin(g(v)))  # noqa: E731
    t = tapead.record(f, x)
    assert_close(t.value(x), f(x), 1e-12, scale=magnitude(f(x)))
    assert_close(tapead.record(g, x).value(x), g(x), 1e-12, scale=magnitude(g(x)))
    u = tapead.record(f, x, structured=False)
    assert_close(t.gradient(x), u.gradient(x), 1e-12, scale=magnitude(u.gradient(x)))


def test_shape_questions_do_not_materialise_a_loop():
    def f(x):
        a = np.sin(x.reshape(100, 3))
        assert np.ndim(a) == 2 and np.shape(a) == (100, 3) and np.size(a) == 300 and np.size(a, -1) == 3
        assert np.ndim(x[0]) == 0 and np.shape(x[0]) == () and np.size(x[0]) == 1
        return np.sum(a ** 2)

    t = tapead.record(f, np.linspace(0, 1, 300))
    assert len(t) == 1 and len(t.maps) == 1  # one loop and its sum: nothing materialised
