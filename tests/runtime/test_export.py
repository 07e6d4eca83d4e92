"""Exported kernels: a C program linked against NAME.o returns exactly what the JIT kernels return."""
import ctypes
import importlib
import subprocess

import numpy as np
import pytest

import tapead
from functions import lj, lj_start, rosenbrock, rosenbrock_start, seed_bar, seed_baz, seed_foo
from tapead.errors import InputError

ex = importlib.import_module("tapead.runtime.export")  # the module, even where tapead.runtime.export names the function

CC = ex.find_compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")


def _c_array(name: str, values) -> str:
    values = [float(v).hex() for v in np.ravel(values)] or ["0.0"]
    return f"static const double {name}[] = {{{', '.join(values)}}};\n"


def _program(name: str, tape, X, P, hessian=False) -> str:
    """C source that calls every exported function on the points X (params P or NULL) and prints with %a."""
    npts, n, m, q = len(X), tape.n_inputs, tape.n_outputs, tape.n_params
    p_row = "P + i * %d" % q if P is not None else "NULL"
    p_all = "P" if P is not None else "NULL"
    src = [f'#include <stdio.h>\n#include "{name}.h"\n', _c_array("X", X), _c_array("P", P if P is not None else [])]
    src.append(f"static double V[{npts * m + 1}], G[{npts * n + 1}], H[{n * n + 1}], HB[{npts * n * n + 1}];\n")
    src.append("static void put(const double *a, long k) { for (long j = 0; j < k; j++) printf(\"%a \", a[j]); "
               "printf(\"\\n\"); }\nint main(void) {\n  int st;\n")
    src.append(f"  for (long i = 0; i < {npts}; i++) {{ st = {name}_value(X + i * {n}, {p_row}, V); "
               f"printf(\"%d \", st); put(V, {m}); }}\n")
    src.append(f"  st = {name}_value_batch({npts}, X, {p_all}, V); printf(\"%d \", st); put(V, {npts * m});\n")
    if m == 1:
        src.append(f"  for (long i = 0; i < {npts}; i++) {{ st = {name}_gradient(X + i * {n}, {p_row}, V, G); "
                   f"printf(\"%d \", st); put(V, 1); put(G, {n}); }}\n")
        src.append(f"  st = {name}_gradient_batch({npts}, X, {p_all}, V, G); printf(\"%d \", st); "
                   f"put(V, {npts}); put(G, {npts * n});\n")
        src.append(f"  st = {name}_gradient_batch({npts}, X, {p_all}, NULL, G); printf(\"%d \", st); "
                   f"put(G, {npts * n});\n")
    if hessian:
        src.append(f"  for (long i = 0; i < {npts}; i++) {{ st = {name}_hessian(X + i * {n}, {p_row}, H); "
                   f"printf(\"%d \", st); put(H, {n * n}); }}\n")
        src.append(f"  st = {name}_hessian_batch({npts}, X, {p_all}, HB); printf(\"%d \", st); "
                   f"put(HB, {npts * n * n});\n")
    src.append("  return 0;\n}\n")
    return "".join(src)


def _run_c(tmp_path, tape, name, X, P, hessian=False, cpu=None):
    paths = ex.export(tape, tmp_path, name, cpu=cpu, hessian=hessian)
    assert {"object", "ir", "header"} <= set(paths) and all(p.exists() for p in paths.values())
    (tmp_path / "main.c").write_text(_program(name, tape, X, P, hessian))
    exe = tmp_path / "main"
    subprocess.run(CC + ["-O0", "-I", str(tmp_path), str(tmp_path / "main.c"), str(paths["object"]), "-lm",
                         "-o", str(exe)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return [[int(t) if t.lstrip("-").isdigit() else float.fromhex(t) for t in line.split()]
             for line in out.splitlines()], paths


def _split(tape, row):
    parts, k = [], 0
    for s, size in zip(tape.input_shapes, tape.input_sizes):
        parts.append(np.asarray(row[k:k + size]).reshape(s))
        k += size
    return parts


def _bits(a):
    return np.asarray(a, dtype=np.float64).ravel().view(np.uint64).tolist()


def _expected(tape, X, P, hessian=False):
    """The same sequence of lines as the C program, from the JIT kernels."""
    lines, npts, n = [], len(X), tape.n_inputs
    prow = (lambda i: None) if P is None else (lambda i: P[i].reshape(tape.param_shape))
    values = [np.ravel(tape.value(*_split(tape, X[i]), params=prow(i))) for i in range(npts)]
    lines += [[0] + list(v) for v in values]
    lines.append([0] + [float(x) for v in values for x in v])
    if tape.n_outputs == 1:
        vg = [tape.value_and_gradient(*_split(tape, X[i]), params=prow(i)) for i in range(npts)]
        grads = [np.concatenate([np.ravel(g) for g in (gs if isinstance(gs, tuple) else (gs,))]) for _, gs in vg]
        for (v, _), g in zip(vg, grads):
            lines += [[0, v], list(g)]
        lines += [[0] + [v for v, _ in vg], [float(x) for g in grads for x in g]]
        lines.append([0] + [float(x) for g in grads for x in g])
    if hessian:  # tape.hessian itself, block by block
        hs = [_dense_hessian(tape, tape.hessian(*_split(tape, X[i]), params=prow(i))) for i in range(npts)]
        lines += [[0] + h.ravel().tolist() for h in hs]
        lines.append([0] + [float(x) for h in hs for x in h.ravel()])
    return lines


def _dense_hessian(tape, H):
    """The n x n Hessian from tape.hessian's result (one array, or blocks per pair of arguments)."""
    sizes = tape.input_sizes
    if len(sizes) == 1:
        return np.reshape(H, (sizes[0], sizes[0]))
    return np.block([[np.reshape(H[i][j], (sizes[i], sizes[j])) for j in range(len(sizes))]
                     for i in range(len(sizes))])


def _same(got, want):
    """Statuses (ints) equal, numbers equal bit for bit."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert len(g) == len(w), (g, w)
        for a, b in zip(g, w):
            assert type(a) is type(b) if isinstance(b, int) else _bits([a]) == _bits([b]), (g, w)
            assert a == b or a != a


def two_args(x, y, p):
    return np.sum(np.sin(x) * y ** 2) * p[0] + p[1] * np.exp(x[0] * y[1]) + np.tanh(x[2] / (1 + y[0] ** 2))


def rosen(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


@needs_cc
def test_params_and_two_arguments_bitwise(tmp_path):
    rng = np.random.default_rng(1)
    t = tapead.record(two_args, np.ones(3), np.ones(3), params=np.ones(2))
    X, P = rng.normal(size=(7, 6)), rng.normal(size=(7, 2))
    got, paths = _run_c(tmp_path, t, "twoargs", X, P, hessian=True)
    _same(got, _expected(t, X, P, hessian=True))
    assert "shared" in paths and "twoargs_gradient_batch" in paths["header"].read_text()


@needs_cc
def test_no_params_generic_cpu_bitwise(tmp_path):
    X = np.random.default_rng(2).normal(size=(5, 4))
    t = tapead.record(rosen, np.ones(4))
    got, _ = _run_c(tmp_path, t, "rosen", X, None, cpu="x86-64")
    _same(got, _expected(t, X, None))


@needs_cc
def test_vector_output_has_value_functions_only(tmp_path):
    t = tapead.record(lambda x: np.stack([np.sin(x[0]) * x[1], np.hypot(x[0], x[1]), x[0] / x[1]]), np.ones(2))
    X = np.random.default_rng(3).normal(size=(4, 2))
    got, paths = _run_c(tmp_path, t, "vec", X, None)
    _same(got, _expected(t, X, None))
    assert "vec_gradient" not in paths["header"].read_text()


@needs_cc
def test_guard_status(tmp_path):
    def f(x):
        if x[0] > 0:
            return x[0] * x[1]
        return x[1] * x[1]

    t = tapead.record(f, np.array([1.0, 2.0]), on_branch="raise")
    X = np.array([[0.5, 3.0], [-1.0, 2.0], [-2.0, 1.0]])
    got, _ = _run_c(tmp_path, t, "guarded", X, None)
    assert [line[0] for line in got[:3]] == [0, 1, 1]
    assert got[3][0] == 2  # the batch returns how many points failed their guards
    assert got[0][1] == 1.5


@needs_cc
def test_shared_library_through_ctypes(tmp_path):
    t = tapead.record(rosen, np.ones(3))
    paths = ex.export(t, tmp_path, "rosen3")
    lib = ctypes.CDLL(str(paths["shared"]))
    x, v, g = np.array([0.3, -1.2, 2.0]), np.zeros(1), np.zeros(3)
    st = lib.rosen3_gradient(ctypes.c_void_p(x.ctypes.data), None, ctypes.c_void_p(v.ctypes.data),
                             ctypes.c_void_p(g.ctypes.data))
    value, grad = t.value_and_gradient(x)
    assert st == 0 and _bits(v) == _bits([value]) and _bits(g) == _bits(grad)


def _ptr(a: np.ndarray):
    return ctypes.c_void_p(a.ctypes.data)


HESSIAN_CASES = {"rosenbrock": (rosenbrock, rosenbrock_start(10)), "lj4": (lj, lj_start(0, atoms=4)),
                 "seed_foo": (seed_foo, np.linspace(-1.0, 2.0, 5)), "seed_bar": (seed_bar, np.array([0.5, -1.5, 2.0])),
                 "seed_baz": (seed_baz, np.linspace(0.3, 1.8, 6))}


@needs_cc
@pytest.mark.parametrize("name", sorted(HESSIAN_CASES))
def test_exported_hessian_is_tape_hessian_bitwise(tmp_path, name):
    """NAME_hessian and NAME_hessian_batch run the tape that tape.hessian, value_gradient_hessian and
    assemble_hessian evaluate: the same bits, exactly symmetric."""
    f, x0 = HESSIAN_CASES[name]
    t = tapead.record(f, x0)
    lib = ctypes.CDLL(str(ex.export(t, tmp_path, name, hessian=True)["shared"]))
    n = t.n_inputs
    X = x0 + 0.05 * np.random.default_rng(4).normal(size=(4, n))
    for x in X:
        H, got = t.hessian(x), np.full((n, n), np.nan)
        assert lib[f"{name}_hessian"](_ptr(x), None, _ptr(got)) == 0
        assert _bits(got) == _bits(H)
        assert _bits(H) == _bits(H.T)
        assert _bits(t.value_gradient_hessian(x)[2]) == _bits(H)
    HB = np.full((len(X), n, n), np.nan)
    assert lib[f"{name}_hessian_batch"](ctypes.c_long(len(X)), _ptr(X), None, _ptr(HB)) == 0
    assert _bits(HB) == _bits(t.hessian(X))
    rows, cols, vals = t.assemble_hessian(X[:1], np.arange(n)[None], n)  # one element: K is its Hessian
    K = np.zeros((n, n))
    K[rows, cols] = vals
    assert np.array_equal(K, HB[0])  # (assembly sums onto 0.0, so -0.0 entries come back as +0.0)


def test_bad_name_and_vector_hessian_rejected(tmp_path):
    t = tapead.record(rosen, np.ones(3))
    with pytest.raises(InputError, match="C identifier"):
        ex.export(t, tmp_path, "not-a-name")
    v = tapead.record(lambda x: x * 2, np.ones(2))
    with pytest.raises(InputError, match="scalar"):
        ex.export(v, tmp_path, "vec", hessian=True)


def test_without_compiler_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "find_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        paths = ex.export(tapead.record(rosen, np.ones(3)), tmp_path, "nocc")
    assert "shared" not in paths and not (tmp_path / "nocc.so").exists()
    assert paths["object"].read_bytes()[:4] == b"\x7fELF"  # the object is still written
