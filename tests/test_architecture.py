"""The layering: the IR, the transforms and the interpreter stand without the backend (llvmlite)."""
import ast
import subprocess
import sys
from pathlib import Path

import tapead

PACKAGE = Path(tapead.__file__).parent
BACKEND = {"jit", "native", "codegen", "chunking", "cache", "calls", "export", "assemble", "loops", "stores",
           "batchloops", "llvm_text"}
EVALUATION = {"function", "api", "calls", "branches", "binding", "derivatives", "assemble", "dask_array", "worker",
              "derived_cache"}
# the IR, recording and the transforms: they reach neither the backend nor evaluation, whatever runs
PURE = ["tape", "validate", "listing", "structure", "optable", "ops", "ops_extra", "errors", "recorder", "tracer",
        "numpy_api", "elementwise", "numpy_more", "numpy_stats", "dtypes", "linalg", "linalg_jacobi", "maparray", "mapfuse", "record", "ad",
        "maps_ad", "simplify", "higher", "separable", "sparsity", "interpret", "store", "kernelspec"]
WITHOUT_BACKEND = PURE + ["binding"]


def module_imports(name: str, local: bool = False) -> set[str]:
    """tapead modules imported by ``name`` (``from . import x``, ``from .x import y``): at module level, or
    with ``local`` also inside functions (they run when that function runs)."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = set()
    for node in (ast.walk(tree) if local else tree.body):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
    return {m for m in found if (PACKAGE / f"{m}.py").exists()}


def reachable(start: str, local: bool = False) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(module_imports(m, local))
    return seen


def modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_transforms_and_ir_do_not_import_the_backend():
    for name in WITHOUT_BACKEND:
        assert not reachable(name) & BACKEND, (name, sorted(reachable(name) & BACKEND))


def test_ir_recording_and_transforms_reach_neither_backend_nor_evaluation_even_inside_functions():
    for name in PURE:
        bad = reachable(name, local=True) & (BACKEND | EVALUATION)
        assert not bad, (name, sorted(bad))


def test_no_import_cycles_counting_function_local_imports():
    graph = {m: module_imports(m, local=True) for m in modules()}
    cycles = [(m, sorted(n for n in graph[m] if m in reachable(n, local=True))) for m in graph]
    assert [c for c in cycles if c[1]] == []


def test_every_module_stays_under_about_400_lines():
    sizes = {m: len((PACKAGE / f"{m}.py").read_text().splitlines()) for m in modules()}
    assert {m: n for m, n in sizes.items() if n > 400} == {}


def test_ir_transforms_and_interpreter_work_with_llvmlite_blocked():
    script = (
        "import sys\n"
        "sys.modules['llvmlite'] = None; sys.modules['llvmlite.binding'] = None\n"
        "import numpy as np, tapead\n"
        "import tapead.tape, tapead.ad, tapead.simplify, tapead.interpret\n"
        "t = tapead.record(lambda x: np.sum(np.sin(x) * x), np.array([0.5, 1.0, 2.0]))\n"
        "g = tapead.grad(t).evaluate(np.array([0.5, 1.0, 2.0]))\n"
        "h = tapead.hessian_tape(t).evaluate(np.array([0.5, 1.0, 2.0]))\n"
        "print(repr(g.tolist()), h.shape)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       cwd=str(PACKAGE.parent))
    assert r.returncode == 0, r.stderr[-2000:]
    x = [0.5, 1.0, 2.0]
    import numpy as np
    expected = [float(np.cos(v) * v + np.sin(v)) for v in x]
    got = eval(r.stdout.split(" (")[0])
    assert np.allclose(got, expected, rtol=1e-15, atol=0)
    assert "(3, 3)" in r.stdout
