"""O2 builds of cut kernels optimise the functions around the straight-line pieces and compile the pieces as
written (``chunking.optimise_around_pieces``): the pieces come back verbatim, what only they read (libm's
functions, constant tables) survives the pipeline, and the kernel gives the bits of the whole O0 kernel."""
from __future__ import annotations

import numpy as np
import pytest

import tapead
from tapead.backend import chunking, codegen, jit
from tapead.runtime import calls
from tapead.transforms import kernelspec


def _recurrence(steps):
    """A Python loop of steps reading libm's functions (which only the pieces call)."""
    def f(x):
        u, v, total = x[0], x[1], 0.0
        for k in range(steps):
            u, v = np.tanh(v) + 0.5 * u, np.cos(u) * v - 0.01 * k
            total = total + u * u
        return total
    return f


def test_the_pieces_come_back_verbatim_and_what_only_they_read_is_kept():
    ir = "\n".join([
        "@tbl = private unnamed_addr constant [8 x i8] c\"\\00\\00\\00\\00\\00\\00\\F0\\3F\", align 4",
        "declare double @cos(double)",
        chunking.PIECE_MARK,
        "define internal i32 @k.0(ptr %x0, ptr %o0) noinline nounwind {",
        "entry:",
        "  %s0 = load double, ptr %x0",
        "  %s1 = call double @cos(double %s0)",
        "  %t = load double, ptr @tbl",
        "  %s2 = fadd double %s1, %t",
        "  store double %s2, ptr %o0",
        "  ret i32 0",
        "}",
        "define i32 @k(ptr %x0, ptr %o0) {",
        "entry:",
        "  %r = call i32 @k.0(ptr %x0, ptr %o0)",
        "  ret i32 %r",
        "}",
        ""])
    seen = []

    def run(text):  # a pipeline that drops every global and declaration nothing outside the pieces reads
        seen.append(text)
        return "\n".join(line for line in text.splitlines() if not line.startswith(("@tbl", "declare double")))

    out = chunking.optimise_around_pieces(ir, run)
    assert "declare i32 @k.0(ptr, ptr) nounwind" in seen[0] and "noinline nounwind {" not in seen[0]
    piece = ir[ir.index(chunking.PIECE_MARK):ir.index("define i32 @k(")]
    assert piece in out and out.count("@tbl = ") == 1 and out.count("declare double @cos") == 1
    assert "declare i32 @k.0" not in out
    assert chunking.optimise_around_pieces("define i32 @f() {\nentry:\n  ret i32 0\n}\n", run) is None
    tm = jit.target_machine(2)
    module = jit.optimise(out, tm, 2)  # valid IR: parses, verifies and optimises
    assert "@k.0" in str(module)


@pytest.mark.parametrize("kind", ["value", "value_and_gradient"])
def test_an_o2_cut_kernel_gives_the_bits_of_the_o0_kernel(monkeypatch, kind):
    monkeypatch.setattr(codegen, "CUT_ABOVE", 200)
    monkeypatch.setattr(codegen, "CHUNK", 60)
    monkeypatch.setenv("TAPEAD_BACKGROUND_O2", "0")
    x = np.array([0.3, 0.7])
    tape = tapead.record(_recurrence(60), x)
    call = tape.gradient if kind == "value_and_gradient" else tape.value
    first = np.array(call(x))
    assert tape.state.kernels[kind][1].opt == 0
    derived, k2 = calls._build(tape, kind, opt=2)
    assert k2.opt == 2
    ir = codegen.lower_kernel(derived, kernelspec.spec(tape.tape, kind, derived, 2, False))
    assert ir.count(chunking.PIECE_MARK) >= 3  # a cut kernel: its pieces kept out of the IR pipeline
    tape.state.kernels[kind] = (derived, k2)
    tape._entries[calls.ENTRY[kind]] = k2.entry
    assert np.array_equal(np.array(call(x)), first)


@tapead.custom_op
def _softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


@_softplus.derivative
def _(x):
    return (1 / (1 + np.exp(-x)),)


@pytest.mark.parametrize("kind", ["value", "value_and_gradient"])
def test_pieces_calling_a_custom_rule_are_optimised_with_the_module(monkeypatch, kind):
    """A custom op's rule is a function of the module that only the pieces call: kept out of the pipeline, it
    would be dropped as unused (and never inlined), so such a kernel runs the whole pipeline."""
    monkeypatch.setattr(codegen, "CUT_ABOVE", 200)
    monkeypatch.setattr(codegen, "CHUNK", 60)
    monkeypatch.setenv("TAPEAD_BACKGROUND_O2", "0")

    def f(x):
        u, v = x[0], x[1]
        for k in range(60):
            u, v = _softplus(v) + 0.5 * u, np.cos(u) * v - 0.01 * k
        return u * v

    x = np.array([0.3, 0.7])
    tape = tapead.record(f, x)
    call = tape.gradient if kind == "value_and_gradient" else tape.value
    first = np.array(call(x))
    derived, k2 = calls._build(tape, kind, opt=2)
    ir = codegen.lower_kernel(derived, kernelspec.spec(tape.tape, kind, derived, 2, False))
    assert ir.count(chunking.PIECE_MARK) >= 3 and chunking.optimise_around_pieces(ir, lambda t: t) is None
    tape.state.kernels[kind] = (derived, k2)
    tape._entries[calls.ENTRY[kind]] = k2.entry
    assert np.array_equal(np.array(call(x)), first)
