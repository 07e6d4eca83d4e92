"""Background O2 builds never hold up the interpreter's exit: once the main thread returns, pending builds are
abandoned (their compiling subprocesses killed) and the O0 kernels they would have replaced were enough."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import textwrap

import numpy as np

import tapead
from tapead.runtime import calls
from tapead.backend import jit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _lj(n: int):
    i, j = np.triu_indices(n, 1)

    def f(x):
        p = x.reshape(n, 3)
        d = p[i] - p[j]
        r6 = 1 / np.sum(d * d, axis=1) ** 3
        return np.sum(4 * (r6 * r6 - r6))

    return f


def test_stopping_abandons_a_pending_build(monkeypatch):
    monkeypatch.setenv("TAPEAD_CACHE", "0")
    monkeypatch.setenv("TAPEAD_BACKGROUND_O2", "1")
    jit.stop_background_builds()
    try:
        x = np.random.default_rng(1).uniform(0, 3, 3 * 12)
        t = tapead.record(_lj(12), x, structured=False)
        g = t.gradient(x)
        for th in threading.enumerate():
            if th.name == "tapead-O2":
                th.join(60)
        assert t.state.upgraded == 0 and t.state.kernels["value_and_gradient"][1].opt == 0
        assert np.array_equal(t.gradient(x), g)
    finally:
        jit._stopping.clear()


def test_exit_does_not_wait_for_a_queue_of_builds():
    script = textwrap.dedent("""
        import threading, numpy as np, tapead
        from test_background_exit import _lj
        for n in (20, 21, 22, 23, 24, 25):
            x = np.random.default_rng(n).uniform(0, 3, 3 * n)
            tapead.record(_lj(n), x, structured=False).gradient(x)
        pending = sum(t.name == "tapead-O2" for t in threading.enumerate())
        print(pending, flush=True)
        # daemon threads still recording and calling fresh tapes when the main thread returns
        def busy(k):
            for n in range(8, 14):
                x = np.ones(3 * n) + np.arange(3 * n) * 0.1 * k
                tapead.record(_lj(n), x, structured=False).gradient(x)
        for k in range(3):
            threading.Thread(target=busy, args=(k,), daemon=True).start()
    """)
    env = dict(os.environ, TAPEAD_CACHE="0", TAPEAD_BACKGROUND_O2="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.path.dirname(os.path.abspath(__file__)),
                               os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[0]) >= 1  # builds were pending when the main thread returned


def test_calls_registers_the_stop_hook():
    assert calls.stopping is jit.stopping and not jit.stopping()
