"""``tapead bench --arrays``: each case measures and checks itself (JAX is used only when installed)."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from tapead import cli

cli._benchmarks()  # puts the source tree (benchmarks/) on sys.path
from benchmarks import arrays  # noqa: E402


@pytest.mark.parametrize("name, size", [("mlp", 16), ("lj_cols", 20), ("neo_stack", 70), ("logreg_matmul", 100),
                                        ("quadratic", 80)])
def test_a_case_checks_its_gradient(name, size):
    r = arrays.run_case(name, size)
    assert r["loops"] >= 1
    assert r.get("err_hand", 0.0) < 1e-11 and r.get("err_jax", 0.0) < 1e-11
    assert r["replay_tapead"] > 0 and r["first"] > 0
    table = arrays.format_table([r, {"case": "x", "size": 1, "error": "timeout after 1 s"}])
    assert f"| {name} | {size} |" in table and "timeout" in table


def test_the_hessian_family_checks_its_hessian():
    r = arrays.run_case("eigh_hessian", 3)
    assert r.get("err_jax", 0.0) < 1e-10 and r["replay_tapead"] > 0 and r["ops"] == len(
        tapead.record(*arrays.build("eigh_hessian", 3, np)[:2]))
    f, x, _ = arrays.build("eigh_hessian", 3, np)
    H = tapead.record(f, x).hessian(x)
    assert np.array_equal(H, H.T) and H.shape == (9, 9)


def test_the_two_spellings_of_each_family_record_the_same_size():
    for a, b, size in [("lj_rows", "lj_cols", 20), ("neo_stack", "neo_components", 70),
                       ("logreg_matmul", "logreg_sum", 100)]:
        fa, xa, _ = arrays.build(a, size, np)
        fb, xb, _ = arrays.build(b, size, np)
        assert len(tapead.record(fa, xa)) == len(tapead.record(fb, xb))


def test_the_heat_stencil_checks_against_its_adjoint_stencil():
    f, x, hand = arrays.build("heat", 6, np)
    tape = tapead.record(f, x)
    assert np.allclose(tape.gradient(x), hand(x), rtol=1e-12, atol=1e-12)
    assert np.isclose(tape.value(x), f(x), rtol=1e-13)
    h, e = 1e-6, np.eye(len(x))
    fd = np.array([(f(x + h * v) - f(x - h * v)) / (2 * h) for v in e])
    assert np.allclose(hand(x), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name, size", [("logreg_hessian", 5), ("quadratic_hessian", 50)])
def test_the_array_hessians_check_against_their_closed_forms(name, size):
    r = arrays.run_case(name, size)
    assert r["err_hand"] < 1e-12 and r.get("err_jax", 0.0) < 1e-11 and r["replay_tapead"] > 0
