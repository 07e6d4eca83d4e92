"""The layering, checked by package: a module imports only from its own layer and the layers below it
(``tapead.layers.LAYERS``, the table the README prints), with no cycles, function-local imports included; the
IR, recording and the transforms stand without the backend (llvmlite)."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import tapead
from tapead.layers import LAYERS, layer_of

PACKAGE = Path(tapead.__file__).parent
README = PACKAGE.parent / "README.md"
BACKEND_FREE = [layer for layer, *_ in LAYERS[:LAYERS.index(next(x for x in LAYERS if x[0] == "backend"))]]


def modules() -> list[str]:
    """Every module as a dotted path inside the package ("ir.tape", "api")."""
    out = []
    for p in sorted(PACKAGE.rglob("*.py")):
        rel = p.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            continue  # a subpackage's docstring
        out.append(".".join(parts))
    return out


def _is_module(dotted: str) -> bool:
    return (PACKAGE / (dotted.replace(".", "/") + ".py")).exists()


def module_imports(name: str, local: bool = False) -> set[str]:
    """tapead modules imported by ``name``: at module level, or with ``local`` also inside functions."""
    path = PACKAGE / (name.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    package = name.split(".")[:-1] if name != "__init__" else []
    found = set()
    for node in (ast.walk(tree) if local else tree.body):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            target = base + (node.module.split(".") if node.module else [])
            dotted = ".".join(target)
            if target and _is_module(dotted):
                found.add(dotted)
            for a in node.names:
                sub = ".".join(target + [a.name])
                if _is_module(sub):
                    found.add(sub)
    return found


def reachable(start: str, local: bool = False) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(module_imports(m, local))
    return seen


def test_every_module_is_in_one_layer():
    for m in modules():
        layer_of(m)  # raises KeyError for a module in no layer


def test_imports_point_down_the_layers_even_inside_functions():
    upward = []
    for m in modules():
        for n in module_imports(m, local=True):
            if layer_of(n) > layer_of(m):
                upward.append(f"{m} ({LAYERS[layer_of(m)][0]}) imports {n} ({LAYERS[layer_of(n)][0]})")
    assert upward == []


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The check can fail: the backend's cache asking the package itself for its version is an upward arrow."""
    assert layer_of("backend.cache") < layer_of("__init__") and layer_of("runtime.threads") > layer_of("arrays")
    text = "from .. import __init__\n"
    tree = ast.parse(text)
    assert isinstance(tree.body[0], ast.ImportFrom) and tree.body[0].level == 2


def test_no_import_cycles_counting_function_local_imports():
    graph = {m: module_imports(m, local=True) for m in modules()}
    cycles = [(m, sorted(n for n in graph[m] if m in reachable(n, local=True))) for m in graph]
    assert [c for c in cycles if c[1]] == []


def test_every_module_stays_under_about_400_lines():
    sizes = {m: len((PACKAGE / (m.replace(".", "/") + ".py")).read_text().splitlines()) for m in modules()}
    assert {m: n for m, n in sizes.items() if n > 400} == {}


def test_the_readme_prints_the_same_layers():
    text = README.read_text()
    table = text[text.index("| layer | modules |"):]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    names = [row.split("|")[1].strip().strip("`") for row in rows[:len(LAYERS)]]
    assert names == [layer for layer, *_ in LAYERS]
    for row, (layer, where, _) in zip(rows, LAYERS):
        listed = set(re.findall(r"`([a-z_]+)`", row.split("|")[2]))
        want = {m.split(".")[-1] for m in modules() if layer_of(m) == [x[0] for x in LAYERS].index(layer)}
        assert listed == want, (layer, sorted(listed ^ want))


def test_recording_and_transforms_never_reach_the_backend():
    limit = [x[0] for x in LAYERS].index("backend")
    for m in modules():
        if layer_of(m) < limit:
            assert all(layer_of(n) < limit for n in reachable(m, local=True)), m
    assert all(layer_of(n) < limit for n in reachable("runtime.binding") if not n.startswith("runtime.")), \
        "binding (points and batches, argument checks) loads without the backend"


def test_ir_transforms_and_interpreter_work_with_llvmlite_blocked():
    script = (
        "import sys\n"
        "sys.modules['llvmlite'] = None; sys.modules['llvmlite.binding'] = None\n"
        "import numpy as np, tapead\n"
        "import tapead.ir.tape, tapead.transforms.ad, tapead.transforms.simplify, tapead.ir.interpret\n"
        "import tapead.runtime.binding\n"
        "t = tapead.record(lambda x: np.sum(np.sin(x) * x), np.array([0.5, 1.0, 2.0]))\n"
        "g = tapead.grad(t).evaluate(np.array([0.5, 1.0, 2.0]))\n"
        "h = tapead.hessian_tape(t).evaluate(np.array([0.5, 1.0, 2.0]))\n"
        "print(repr(g.tolist()), h.shape)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       cwd=str(PACKAGE.parent))
    assert r.returncode == 0, r.stderr[-2000:]
    x = [0.5, 1.0, 2.0]
    expected = [float(np.cos(v) * v + np.sin(v)) for v in x]
    got = eval(r.stdout.split(" (")[0])
    assert np.allclose(got, expected, rtol=1e-15, atol=0)
    assert "(3, 3)" in r.stdout


def test_old_module_paths_still_import():
    import importlib
    import pickle

    from tapead.ir import store
    assert importlib.import_module("tapead.store") is store and tapead.calls is importlib.import_module(
        "tapead.runtime.calls")
    t = tapead.record(lambda x: np.sum(x ** 2), np.ones(3))
    old = pickle.dumps(t.tape, protocol=2).replace(b"tapead.ir.store", b"tapead.store")  # a pickle written before the move
    assert b"tapead.store" in old and pickle.loads(old).hash == t.tape.hash
