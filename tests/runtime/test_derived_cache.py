"""Derived tapes are stored in the disk cache: a second process skips the transforms; damage is a miss."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import sys
import numpy as np
import tapead, tapead.transforms.higher, tapead.transforms.sparsity, tapead.transforms.ad
if sys.argv[1] == "forbid":  # the second process must not derive anything
    def refuse(*a, **k):
        raise AssertionError("derived again")
    tapead.transforms.higher.tangent_sweeps = tapead.transforms.sparsity.tangent_sweeps = refuse
    tapead.transforms.ad.value_and_grad = refuse


def f(z):
    return np.stack([np.sum(z[1:] * np.sin(z[:-1])), z[0] * z[1] - np.exp(z[2])])


z = np.array([0.3, -0.7, 0.2, 1.1])
t = tapead.record(f, z)
s = tapead.record(lambda z: np.sum(np.cos(z) * z[::-1]), z)
w = np.array([0.5, -2.0])
r, c, v = t.sparse_hessian(z, weights=w)
rj, cj, vj = t.sparse_jacobian(z)
np.save(sys.argv[2], np.concatenate([v, vj, s.gradient(z), s.hessian(z).ravel()]))
"""


def _run(mode: str, cache: Path, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TAPEAD_CACHE_DIR=str(cache), TAPEAD_CACHE="1", TAPEAD_BACKGROUND_O2="0")
    return subprocess.run([sys.executable, "-c", SCRIPT, mode, str(out)], capture_output=True, text=True,
                          env=env, cwd=str(ROOT), timeout=600)


def test_second_process_loads_derived_tapes_and_damage_is_a_miss(tmp_path):
    cache = tmp_path / "cache"
    first = _run("derive", cache, tmp_path / "a.npy")
    assert first.returncode == 0, first.stderr[-2000:]
    second = _run("forbid", cache, tmp_path / "b.npy")
    assert second.returncode == 0, second.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    for entry in cache.iterdir():  # damage every entry: each becomes a miss, and the answers stay exact
        if entry.is_file():
            data = bytearray(entry.read_bytes())
            data[len(data) // 2] ^= 0xFF
            entry.write_bytes(bytes(data))
    again = _run("forbid", cache, tmp_path / "c.npy")
    assert again.returncode != 0 and "derived again" in again.stderr
    third = _run("derive", cache, tmp_path / "d.npy")
    assert third.returncode == 0, third.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "d.npy"))
