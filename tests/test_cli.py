"""The `tapead` command: info, a quick benchmark run (no peers), JSON output, export, and bad arguments."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tapead
from functions import FUNCTIONS
from tapead import cli

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["bench", "--quick", "--peers", "none", "--repeats", "1", "--batch", "50"]


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("tapead", "numpy", "llvmlite", "LLVM", "python", "cpu", "kernel cache"):
        assert word in out


def test_bench_quick_prints_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert cli.main(QUICK + ["--functions", "seed_foo", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "candidate" in out and "seed_foo" in out and "tapead" in out
    result = json.loads(path.read_text())
    rows = [r for r in result["rows"] if r["candidate"] == "tapead"]
    assert {r["task"] for r in rows} == {"grad", "grad_batch", "primal_batch"}
    assert all(isinstance(r["time"], float) and math.isfinite(r["time"]) and r["ratio_tapead"] == 1.0
               for r in rows)
    assert not any("WRONG" in r["note"] for r in result["rows"])
    case = FUNCTIONS["seed_foo"]
    tape = tapead.record(case.f, *case.args0)
    assert result["tapes"]["seed_foo"]["ops"] == len(tape)
    assert result["tapes"]["seed_foo"]["grad_ops"] == len(tapead.grad(tape))
    assert result["settings"]["peers"] == []
    primal = next(r for r in rows if r["task"] == "primal_batch")
    grad = next(r for r in rows if r["task"] == "grad_batch")
    assert primal["grad_over_primal"] == grad["time"] / primal["time"]
    assert f"gradient/primal {primal['grad_over_primal']:.2f}" in primal["note"]
    assert math.isfinite(result["tapes"]["seed_foo"]["first_call_s"])
    assert result["summary"]["seed_foo"]["grad_over_primal_tapead"] == primal["grad_over_primal"]
    assert "first grad call ms" in out and "summary" in out and "grad_batch (" not in out


def test_bench_threads_rows_report_speedups():
    cli._benchmarks()
    from benchmarks import suite
    result = suite.run(["seed_foo"], [], batch=50, threads=2, repeats=1, target=1e-4)
    threaded = [r for r in result["rows"] if r["task"] == "grad_batch_threads"]
    assert {r["candidate"] for r in threaded} >= {"tapead"}
    for r in threaded:
        assert r["threads"] == 2, r
        if r["candidate"] == "tapead" or "speedup" in r:  # the limit is skipped without numba (as in CI)
            assert r["speedup"] == r["time_1thread"] / r["time"] and f"speed-up {r['speedup']:.2f}" in r["note"], r
    assert all(r["threads"] == 1 for r in result["rows"] if r["task"] != "grad_batch_threads")
    mine = next(r for r in threaded if r["candidate"] == "tapead")
    assert result["summary"]["seed_foo"]["speedup_tapead"] == mine["speedup"]
    assert "grad_batch (2 threads)" in suite.format_table(result)


def test_bench_branches_compares_with_where(capsys):
    assert cli.main(["bench", "--branches", "--quick", "--repeats", "1", "--batch", "300"]) == 0
    out = capsys.readouterr().out
    assert "300 points" in out and "tapead.where" in out
    assert [line.split()[0] for line in out.splitlines()[2:4]] == ["value", "gradient"]


def test_tape_table_alone_has_no_empty_row_table():
    cli._benchmarks()
    from benchmarks import suite
    tapes = {"f": {"ops": 3, "grad_ops": 5, "record_s": 1e-3, "compile_s": 0.05, "background_compile_s": 0.0,
                   "first_call_s": 0.04, "jax_first_call_s": 0.1}}
    text = suite.format_table({"rows": [], "tapes": tapes})
    assert "candidate" not in text and "first grad call ms" in text and "100" in text


def test_peers_are_not_timed_on_the_primal():
    cli._benchmarks()
    from benchmarks import cases, peers
    with pytest.raises(peers.Skip, match="primal_batch"):
        peers.build("jax", cases.load(["seed_bar"])[0], "primal_batch", np.zeros((2, 3)))


def test_limit_primals_match_the_functions():
    pytest.importorskip("numba")
    cli._benchmarks()
    from benchmarks import cases, limits
    for case in cases.load():
        X = case.batch(3)
        out = np.empty((3,) + case.value_shape)
        limits.get(case.name, "primal_batch")[1](X, out)
        np.testing.assert_allclose(out, [case.f(x) for x in X], rtol=1e-12)


def test_bench_subprocess_smoke():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "tapead.cli"] + QUICK + ["--functions", "seed_bar"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "seed_bar" in done.stdout and "grad_batch" in done.stdout


@pytest.mark.parametrize("argv, message", [
    (["bench", "--functions", "nope", "--peers", "none"], "unknown function"),
    (["bench", "--peers", "tensorflow"], "unknown peer"),
    (["bench", "--batch", "0"], "positive integer"),
    (["bench", "--batch", "many"], "positive integer"),
    (["bench", "--repeats", "-3"], "positive integer"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
    (["export", "no_such_module_xyz:f", "--x0", "1,2", "--out", "unused"], "cannot import module"),
    (["export", "math", "--x0", "1", "--out", "unused"], "MODULE:FUNCTION"),
    (["export", "os:sep", "--x0", "1", "--out", "unused"], "not callable"),
    (["export", "os:getcwd", "--x0", "1,a", "--out", "unused"], "comma-separated numbers"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_plot_without_matplotlib_fails_clearly(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    assert cli.main(QUICK + ["--functions", "seed_bar", "--plot", str(tmp_path / "p.png")]) == 1
    assert "matplotlib" in capsys.readouterr().err


def test_missing_peer_and_missing_limit_are_skipped(monkeypatch):
    cli._benchmarks()  # puts the source tree on sys.path
    from benchmarks import peers, suite
    monkeypatch.setitem(peers.MODULES, "jax", "no_such_module_xyz")
    monkeypatch.setattr(suite, "_limits", lambda: (None, "no limit: numba is not importable"))
    result = suite.run(["seed_bar"], ["jax"], batch=20, repeats=1, target=1e-4)
    by = {(r["task"], r["candidate"]): r for r in result["rows"]}
    assert by[("grad", "jax")]["time"] is None and "not importable" in by[("grad", "jax")]["note"]
    assert by[("grad", "limit")]["time"] is None and by[("grad", "tapead")]["ratio_limit"] is None
    mine = by[("grad", "tapead")]
    assert math.isfinite(mine["time"]) and mine["ratio_tapead"] == 1.0 and "WRONG" not in mine["note"]


def test_parse_array(tmp_path):
    assert cli.parse_array("1, 2,3", "x").tolist() == [1.0, 2.0, 3.0]
    assert cli.parse_array("2.5", "x").shape == ()
    assert cli.parse_array("2.5,", "x").shape == (1,)
    np.save(tmp_path / "a.npy", np.eye(2))
    assert cli.parse_array(str(tmp_path / "a.npy"), "x").shape == (2, 2)


def test_export(tmp_path, monkeypatch, capsys):
    (tmp_path / "cli_export_model.py").write_text(
        "import numpy as np\n\ndef energy(x, y):\n    return np.sum(np.sin(x) * y)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    np.save(tmp_path / "y.npy", np.array([1.0, 2.0, 3.0]))
    code = cli.main(["export", "cli_export_model:energy", "--x0", "0.1,0.2,0.3", "--x0", "y.npy",
                     "--out", str(tmp_path / "out"), "--name", "energy"])
    assert code == 0, capsys.readouterr().err
    header = (tmp_path / "out" / "energy.h").read_text()
    assert "int energy_gradient(const double *x, const double *params, double *value, double *grad);" in header
    assert "#define ENERGY_N_INPUTS 6" in header
    assert (tmp_path / "out" / "energy.o").read_bytes()[:4] == b"\x7fELF"
