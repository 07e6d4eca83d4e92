"""The layering: the IR, the transforms and the interpreter stand without the backend (llvmlite)."""
import ast
import subprocess
import sys
from pathlib import Path

import tapead

PACKAGE = Path(tapead.__file__).parent
BACKEND = {"jit", "native", "codegen", "chunking", "cache", "calls", "export", "assemble"}
WITHOUT_BACKEND = ["tape", "ops", "recorder", "tracer", "record", "ad", "simplify", "interpret", "higher",
                   "sparsity", "store", "binding"]


def module_imports(name: str) -> set[str]:
    """tapead modules imported at module level by ``name`` (``from . import x``, ``from .x import y``)."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = set()
    for node in tree.body:  # module level only: function-local imports run when that function runs
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
    return {m for m in found if (PACKAGE / f"{m}.py").exists()}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(module_imports(m))
    return seen


def test_transforms_and_ir_do_not_import_the_backend():
    for name in WITHOUT_BACKEND:
        assert not reachable(name) & BACKEND, (name, sorted(reachable(name) & BACKEND))


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
