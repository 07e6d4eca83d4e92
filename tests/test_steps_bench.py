"""``tapead bench --steps``: the RK4 case checks tapead's gradient against the hand-written sensitivities and
JAX when they are installed, and against finite differences always."""
from __future__ import annotations

import numpy as np

import tapead
from tapead import cli
from check import assert_gradient

cli._benchmarks()  # puts the source tree (benchmarks/) on sys.path
from benchmarks import steps  # noqa: E402


def test_the_rk4_case_measures_and_checks_itself():
    r = steps.run_case(40)
    assert r["ops"] == len(tapead.record(steps.lotka_volterra(40), steps.Z0))
    assert r.get("err_hand", 0.0) < 1e-12 and r.get("err_jax", 0.0) < 1e-12
    assert r["first"] > 0 and r["replay_tapead"] > 0
    assert "| 40 |" in steps.format_table([r])


def test_the_integrator_differentiates_against_finite_differences():
    assert_gradient(steps.lotka_volterra(30), steps.Z0)


def test_the_command_runs_the_quick_case(tmp_path, capsys):
    path = tmp_path / "steps.json"
    assert cli.main(["bench", "--steps", "--quick", "--json", str(path)]) == 0
    assert "| 200 | 11603 |" in capsys.readouterr().out
    import json
    assert json.loads(path.read_text())[0]["steps"] == 200
