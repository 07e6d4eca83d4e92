"""Many-output tapes: constant output runs are stored from tables, and kernels stay exact."""
import numpy as np
import pytest

import tapead
from tapead.backend import codegen
from tapead.transforms.higher import hessian_tape


def _quadratic(x):
    return 0.01 * np.sum(x * x)


def test_dense_hessian_of_a_quadratic_is_exact_and_stored_from_a_table():
    n = 300
    x = np.linspace(-1.0, 2.0, n)
    tape = tapead.record(_quadratic, x)
    H = tape.hessian(x)
    assert np.array_equal(H, 0.02 * np.eye(n))
    ir = codegen.lower(hessian_tape(tape), "k")
    assert ir.count("store double") < n + 50  # the diagonal at most, not one store per entry (n^2 = 90,000)
    assert ir.count("call void @llvm.memset") + ir.count("call void @llvm.memcpy") >= 2


def test_constant_runs_keep_every_bit_whole_or_cut(monkeypatch):
    """+0.0 runs become memsets in cut kernels, other constants (-0.0 included) come from tables: same bits."""
    pattern = [1] * 20 + [2] * 20 + [3] * 10 + [1] * 9 + [2] + [1] * 12
    tape = tapead.Function(tapead.Tape(code=np.zeros((0, 4), np.int32), consts=np.array([0.0, -0.0, 1.5]),
                                       input_shapes=((1,),), param_shape=None, outputs=np.array(pattern),
                                       output_shape=(len(pattern),)))
    expected = np.array([[0.0, -0.0, 1.5][p - 1] for p in pattern])
    for cut in (10**9, 10):
        monkeypatch.setattr(codegen, "CUT_ABOVE", cut)
        monkeypatch.setattr(codegen, "CHUNK", 30)
        fresh = tape.replace()
        for got in (fresh.value(np.ones(1)), fresh.value(np.ones((3, 1)))[2]):
            assert np.array_equal(got, expected) and np.array_equal(np.signbit(got), np.signbit(expected))
        ir = codegen.lower(fresh, "k")
        assert ("call void @llvm.memset" in ir) == (cut == 10)


def test_mixed_constant_and_computed_outputs_match_the_interpreter_bitwise():
    def f(x):
        y = np.zeros_like(x)
        y[::7] = np.sin(x[::7]) * x[1::7]
        return np.concatenate([y, 3.0 + 0 * x[:2] ** 0, x[:12] * 0.0 + 1.5])
    x = np.linspace(0.3, 1.7, 70)
    tape = tapead.record(f, x)
    for point in (x, x[::-1].copy()):
        assert np.array_equal(tape.value(point), tape.evaluate(point))
    J = tape.jacobian(x)
    Jr = tapead.jacobian_tape(tape).evaluate(x).reshape(J.shape)
    assert np.array_equal(J, Jr)
    batch = np.stack([x, 2 * x, -x])
    assert np.array_equal(tape.value(batch), tape.evaluate(batch))


def _corpus_results(chunk, monkeypatch):
    from functions import FUNCTIONS
    monkeypatch.setattr(codegen, "CHUNK", chunk)
    monkeypatch.setattr(codegen, "CUT_ABOVE", chunk)
    results = {}
    for name, case in FUNCTIONS.items():
        kw = {} if case.params is None else {"params": case.params}
        tape = tapead.record(case.f, *case.args0, **kw)
        batch = [np.stack([a, 1.1 * a, -a]) for a in case.args1]
        if tape.n_outputs == 1:
            results[name] = (tape.value(*case.args1, **kw), tape.value_and_gradient(*case.args1, **kw),
                             tape.gradient(*batch, **kw))
        else:
            results[name] = (tape.value(*case.args1, **kw), tape.jacobian(*case.args1, **kw),
                             tape.value(*batch, **kw))
    return results


def _flat(r):
    if isinstance(r, (tuple, list)):
        return [y for x in r for y in _flat(x)]
    return [np.asarray(r)]


def test_chunked_kernels_are_bitwise_identical_to_one_function(monkeypatch):
    whole = _corpus_results(10**9, monkeypatch)
    for chunk in (3, 64):
        cut = _corpus_results(chunk, monkeypatch)
        for name in whole:
            for a, b in zip(_flat(whole[name]), _flat(cut[name])):
                assert np.array_equal(a, b, equal_nan=True), (name, chunk)


def test_chunked_kernels_keep_their_guards(monkeypatch):
    monkeypatch.setattr(codegen, "CHUNK", 3)
    monkeypatch.setattr(codegen, "CUT_ABOVE", 3)

    def f(x):
        s = 0.0
        for i in range(len(x)):
            s = s + (np.sin(x[i]) if x[i] > 0 else x[i] * x[i])
        return s
    x = np.array([0.5, -1.0, 2.0, -0.3])
    tape = tapead.record(f, x)
    y = np.array([-0.5, 1.0, 2.0, 0.3])  # every guard but one flips: the tape re-records along the new path
    expected = sum(np.sin(v) if v > 0 else v * v for v in y)
    assert tape.value(y) == expected
    g = tape.gradient(y)
    assert np.array_equal(g, np.where(y > 0, np.cos(y), 2 * y))


def test_chunked_work_array_reuses_cells():
    from tapead.backend.chunking import lower_chunked

    def f(x):
        a = x[0]
        for _ in range(200):
            a = np.sin(a) * 0.5 + x[1]
        return a
    tape = tapead.record(f, np.array([0.1, 0.2]))
    _, point = lower_chunked(tape, "k", [2], [1], 10, codegen.emit_stores)
    alloca = [line for line in point if "alloca" in line]
    # a recurrence keeps one value alive across each cut, not one per instruction
    assert alloca == ["  %w = alloca [1 x double], align 8"]


def test_pooled_work_arrays_are_exact_under_threads(monkeypatch):
    """A work array too big for the stack comes from the kernel's pool: same bits, threads included."""
    from tapead.backend import chunking
    from tests_support_lj import lj_any

    monkeypatch.setattr(codegen, "CHUNK", 50)
    monkeypatch.setattr(codegen, "CUT_ABOVE", 50)
    monkeypatch.setattr(chunking, "STACK_CELLS", 4)
    x = np.random.default_rng(3).normal(size=24) * 2.0
    tape = tapead.record(lj_any, x)
    ir = codegen.lower(tape, "k")
    assert "_release()" in ir and "alloca" not in ir
    X = np.random.default_rng(4).normal(size=(3000, 24)) * 2.0
    G = tape.gradient(X, threads=2)
    monkeypatch.setattr(codegen, "CUT_ABOVE", 10**9)
    whole = tapead.record(lj_any, x)
    assert np.array_equal(G, whole.gradient(X, threads=1))
    assert np.array_equal(tape.value(X[5]), whole.value(X[5]))
    del tape  # frees the pool (the kernel's release function); a crash here would fail the test run


def test_large_benchmark_runs_and_reports_each_size(capsys):
    from benchmarks import large
    assert large.main(["--steps", "30", "--hessian", "40", "--first", "seed_bar,lj10"]) == 0
    out = capsys.readouterr().out
    assert "\n        328 | " in out  # 30 steps of 11 ops, minus the constants folded in the first step
    assert "n = 40: 0." in out
    assert "seed_bar: " in out and "lj10: " in out


def test_cartpole_benchmark_agrees_with_its_derivatives(capsys):
    from benchmarks import cartpole
    cons, combined = cartpole.tapead_functions(4)
    z = cartpole.start_point(4)
    rows, cols, vals = cons.sparse_jacobian(z)
    J = np.zeros((4 * 4 + 8, 5 * 4 + 4))
    np.add.at(J, (rows, cols), vals)
    from check import assert_close, fd_jacobian
    assert_close(J, fd_jacobian(lambda v: np.array(cartpole.problem(4, np)[1](v)), z), 1e-7)
    assert cartpole.main(["--sizes", "4", "--repeats", "1", "--no-cold"]) == 0
    assert "sparse jacobian: tapead" in capsys.readouterr().out


def test_a_million_op_kernel_compiles_and_runs_in_a_subprocess():
    """A 10^6-op tape (built directly as IR: recording it would take the test's whole budget) compiles in pieces
    and its kernel answers exactly what the interpreter answers, point and batch; run in a subprocess so that a
    crash (the stack frame of a huge kernel) fails the test instead of killing the run."""
    import subprocess
    import sys
    script = r"""
import numpy as np, tapead
from tapead.table.ops import OPS
n = 1_000_000
mul, add, sin = OPS["mul"].code, OPS["add"].code, OPS["sin"].code
first = 2 + 2  # two inputs, two constants
code = np.full((n, 4), -1, np.int32)
i = np.arange(n)
prev = np.where(i == 0, 0, first + i - 1)
kind = i % 3
code[:, 0] = np.where(kind == 0, mul, np.where(kind == 1, add, sin))
code[:, 1] = prev
code[:, 2] = np.where(kind == 0, 2, np.where(kind == 1, 1, -1))
tape = tapead.Function(tapead.Tape(code=code, consts=np.array([0.999, 0.25]), input_shapes=((2,),),
                                   param_shape=None, outputs=np.array([first + n - 1]), output_shape=()))
x = np.array([0.3, 0.01])
v = tape.value(x)
assert v == tape.evaluate(x), (v, tape.evaluate(x))
X = np.array([[0.3, 0.01], [0.1, -0.02], [1.0, 0.0]])
assert np.array_equal(tape.value(X), tape.evaluate(X))
assert tape.stats["kernels"]["kernel/value"]["ops"] == n
print("ok", v)
"""
    env = dict(__import__("os").environ, TAPEAD_CACHE="0", TAPEAD_BACKGROUND_O2="0")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0 and r.stdout.startswith("ok"), (r.returncode, r.stderr[-2000:])


def test_callees_are_declared_with_the_arguments_of_their_call_sites():
    """An op lowered to a two-argument intrinsic compiles (every llvm.* callee used to be declared unary)."""
    from tapead.backend import jit
    from tapead.table.ops import Op
    row = Op("two_argument_intrinsic", 10**6, 2, np.copysign,
             "{out} = call double @llvm.copysign.f64(double {0}, double {1})", lambda g, x, y, out: (None, None))
    decl = codegen.callee_declarations([row])
    assert decl == ["declare double @llvm.copysign.f64(double, double)"]
    ir = "\n".join(decl + ["define double @f(double %a, double %b) {", "entry:",
                           "  " + row.llvm.format("%a", "%b", out="%r"), "  ret double %r", "}"])
    jit.optimise(ir, jit.target_machine(2), 2)  # parses, verifies and optimises
    libm_row = Op("uses_pow", 10**6 + 1, 1, np.sqrt, "{out} = call double @pow(double {0}, double 0.5)",
                  lambda g, x, out: (None,), libm=("pow",))
    assert codegen.callee_declarations([libm_row]) == [
        "declare double @pow(double, double) nounwind willreturn memory(none)"]


def test_a_row_listing_a_libm_function_it_never_calls_is_refused():
    from tapead.table.ops import Op
    row = Op("lists_unused_libm", 10**6 + 2, 1, np.sqrt, "{out} = call double @llvm.sqrt.f64(double {0})",
             lambda g, x, out: (None,), libm=("atan2",))
    with pytest.raises(ValueError, match="never calls"):
        codegen.callee_declarations([row])
