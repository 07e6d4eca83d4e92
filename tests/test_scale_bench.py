"""`tapead bench --scale`: a small run in a subprocess (JSON lines, tables, checked derivatives), its start points,
its correctness check, and how a timeout or a crash of a case is reported."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

import tapead
from functions import lj, lj_grad, lj_start
from tapead import cli

ROOT = Path(__file__).resolve().parent.parent
cli._benchmarks()  # puts the source tree (benchmarks/) on sys.path
from benchmarks import scale  # noqa: E402


def _fd_hessian(x, h=1e-6):
    return np.stack([(lj_grad(x + h * e) - lj_grad(x - h * e)) / (2 * h) for e in np.eye(x.size)], axis=1)


def test_small_run_reports_checked_derivatives_and_tables(tmp_path):
    path = tmp_path / "scale.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--atoms", "4,40", "--hessian-atoms", "4",
                           "--hvp-atoms", "40",
                           "--repeats", "1", "--target", "0.001", "--timeout", "300", "--json", str(path)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(path.read_text())
    lines = [json.loads(s) for s in done.stdout.splitlines() if s.startswith("{")]
    assert lines == result["gradient"] + result["hessian"] + result["hvp"] + result["many"]

    assert [r["atoms"] for r in result["gradient"]] == [4, 40]
    for r in result["gradient"]:
        assert "failed" not in r, r
        x = scale.lj_start_grid(r["atoms"])
        tape = tapead.record(lj, x)
        assert r["ops"] == len(tape) and r["ops_unrolled"] == sum(tape.op_counts().values())
        assert r["maps"] == [[len(m.body), m.n] for m in getattr(tape, "maps", ())]
        assert r["ok"] is True and r["replay_ok"] is True and r["error"] <= 1e-9
        ref = lj_grad(x)
        assert abs(r["gradient_l1"] - np.sum(np.abs(ref))) <= 1e-9 * np.sum(np.abs(ref))
        for key in ("record_s", "first_gradient_s", "replay_us", "peak_rss_gb"):
            assert isinstance(r[key], float) and np.isfinite(r[key]), key
        for peer in ("handwritten", "jax"):  # each peer is timed and checked, or says why it is absent
            if f"{peer}_ok" in r:
                assert r[f"{peer}_ok"] is True
                assert abs(r[f"ratio_{peer}"] - r["replay_us"] / r[f"{peer}_us"]) <= 1e-12 * r[f"ratio_{peer}"]
            else:
                assert isinstance(r[peer], str) and f"ratio_{peer}" not in r

    (h,) = result["hessian"]
    x = scale.lj_start_grid(4)
    assert (h["atoms"], h["n"], h["ok"], h["replay_ok"]) == (4, 12, True, True)
    ref = _fd_hessian(x)
    assert abs(h["hessian_trace"] - np.trace(ref)) <= 1e-6 * np.max(np.abs(ref)) * x.size

    (v,) = result["hvp"]
    assert (v["atoms"], v["n"], v["ok"], v["replay_ok"]) == (40, 120, True, True) and v["error"] <= 1e-5
    assert v["maps"] and v["ops"] < v["ops_unrolled"]  # the HVP tape keeps its loop
    for peer in ("jax",):
        if f"{peer}_ok" in v:
            assert v[f"{peer}_ok"] is True
        else:
            assert isinstance(v[peer], str)

    many = {r["case"]: r for r in result["many"]}
    assert set(many) == set(scale.MANY)
    assert (many["jacobian_dot"]["inputs"], many["jacobian_dot"]["outputs"]) == (220, 100)
    assert (many["hessian_sum"]["inputs"], many["hessian_sum"]["outputs"]) == (770, 10)
    assert all(r["ok"] is True and r["error"] <= 1e-12 for r in many.values()), many

    out = done.stdout
    for kind, rows in (("gradient", ["4", "40"]), ("hessian", ["4"]), ("hvp", ["40"]), ("many", list(scale.MANY))):
        head = out.index(scale.TITLES[kind])
        table = out[head:].split("\n\n")[1].splitlines()
        width = len(scale.COLUMNS[kind]) + 2
        assert table[0].count("|") == width + 1 and table[1] == "|" + "|".join(["---"] * width) + "|"
        assert [t.split("|")[1].strip() for t in table[2:]] == rows
        assert all(t.split("|")[-2].strip() == "ok" for t in table[2:]), table


def test_start_points():
    for atoms in (1, 10, 32):
        np.testing.assert_array_equal(scale.lj_start_grid(atoms), lj_start(atoms=atoms))
    for atoms in (33, 100, 300):
        p = scale.lj_start_grid(atoms).reshape(atoms, 3)
        side = {33: 4, 100: 5, 300: 7}[atoms]
        site = np.array([(i, j, k) for k in range(side) for j in range(side) for i in range(side)][:atoms])
        assert np.max(np.abs(p - 1.1 * site)) <= 0.05
        i, j = np.triu_indices(atoms, 1)
        assert np.min(np.linalg.norm(p[i] - p[j], axis=1)) >= 1.0  # no overlapping atoms
    np.testing.assert_array_equal(scale.lj_start_grid(100), scale.lj_start_grid(100))


def test_check_fails_on_wrong_results():
    ref = np.array([1.0, -2.0, 0.0])
    assert scale.check(ref + [0.0, 0.0, 1e-12], ref, 1e-9)["ok"] is True  # a zero entry: bounded by max |ref|
    assert scale.check(ref + [0.0, 0.0, 1e-6], ref, 1e-9)["ok"] is False
    assert scale.check(ref * (1 + 1e-8), ref, 1e-9)["ok"] is False
    assert scale.check([np.nan, -2.0, 0.0], ref, 1e-9)["ok"] is False
    assert scale.check(ref[:2], ref, 1e-9)["ok"] is False
    assert scale.check(np.ones((2, 2)), np.zeros((2, 2)), 1e-12) == dict(ok=False, error=1.0)


def test_timeout_and_crash_are_results():
    r = scale.run_case("gradient", 10, timeout=0.01)
    assert r == dict(case="gradient", atoms=10, failed="timeout (0.01 s)")
    assert scale.outcome({"atoms": 300}, -signal.SIGSEGV, "", "") == dict(atoms=300, failed="crashed (SIGSEGV)")
    assert scale.outcome({}, 1, "", "Traceback\nMemoryError") == dict(failed="failed: MemoryError")
    assert scale.outcome({}, 0, '{"ok": true}\n', "") == {"ok": True}
    table = scale.table("gradient", [dict(case="gradient", atoms=300, failed="crashed (SIGSEGV)")])
    assert table.splitlines()[2].startswith("| 300 | crashed (SIGSEGV) | - |")


def test_cli_scale_passes_quick_sizes(monkeypatch):
    seen = []
    monkeypatch.setattr(scale, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["bench", "--scale", "--quick", "--timeout", "120", "--json", "out.json"]) == 0
    assert cli.main(["bench", "--scale"]) == 0
    assert seen == [["--atoms", "10,30", "--hessian-atoms", "10", "--repeats", "3", "--timeout", "120",
                     "--json", "out.json"], []]
