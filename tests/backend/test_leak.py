"""Compiling a tape and dropping it gives its memory back.

Every record-compile-call-drop cycle used to keep about 200 KB for ever (llvmlite's pass managers were never
freed). The measurement runs in a fresh process so that nothing else in the test session moves its RSS.
"""
import gc
import os
import pickle
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest

import tapead


SCRIPT = textwrap.dedent("""
    import gc, os, sys
    import numpy as np
    import tapead

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def cycle(i):
        c = 1.0 + i * 1e-3  # a new constant: a new kernel every time, never a cache hit
        def f(x):
            return np.sum(np.sin(x) * c) + x[0] * x[1]
        t = tapead.record(f, np.ones(3))
        x = np.array([0.1, 0.2, 0.3])
        g = t.gradient(x)
        expected = c * np.cos(x) + np.array([x[1], x[0], 0.0])
        assert np.allclose(g, expected, rtol=1e-13, atol=0), (g, expected)
        assert t.value(x) == t.evaluate(x)

    warm, n = int(sys.argv[1]), int(sys.argv[2])
    for i in range(warm):
        cycle(i)
    gc.collect()
    before = rss()
    for i in range(warm, warm + n):
        cycle(i)
    gc.collect()
    print((rss() - before) / n)
""")


LIMIT = 16 * 1024  # bytes of RSS per compiled and dropped tape


def assert_freed_without_gc(make) -> None:
    """``make()`` returns a weak reference to a tape it used; with the cycle collector off, it must be dead."""
    gc.collect()
    gc.disable()
    try:
        ref = make()
        assert ref() is None, "the tape is kept alive by a reference cycle"
    finally:
        gc.enable()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
@pytest.mark.parametrize("cache", ["0", "1"])
def test_compiled_and_dropped_tapes_do_not_accumulate(tmp_path, cache):
    env = dict(os.environ, TAPEAD_CACHE=cache, TAPEAD_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                                        os.environ.get("PYTHONPATH")])))
    runs = []
    # a leak grows in every run (the one this guards against: ~200 KB per tape); the allocator's arenas do not: on
    # this 2-core machine a run measures 7 or 11 KB per tape, the same before and after unrelated changes
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", SCRIPT, "50", "300"], capture_output=True, text=True, env=env,
                           timeout=900)
        assert r.returncode == 0, r.stderr
        runs.append(float(r.stdout.split()[-1]))
        if runs[-1] <= LIMIT:
            break
    per_tape = min(runs)
    assert per_tape <= LIMIT, f"RSS grew {per_tape / 1024:.1f} KB per compiled and dropped tape (runs: {runs})"


def _branchy(x):
    return np.sum(x ** 2) if x[0] > 0 else np.sum(x ** 3)


X = np.array([0.1, 0.2, 0.3])
USES = {
    "value": lambda t: t.value(X), "gradient": lambda t: t.gradient(X), "evaluate": lambda t: t.evaluate(X),
    "batch": lambda t: t.gradient(np.ones((5, 3))), "hessian": lambda t: t.hessian(X),
    "jacobian": lambda t: t.jacobian(X), "value_and_gradient": lambda t: t.value_and_gradient(X),
    "compile": lambda t: t.compile(), "pickle": lambda t: pickle.loads(pickle.dumps(t)).gradient(X),
}


@pytest.mark.parametrize("use", sorted(USES))
def test_a_dropped_tape_is_freed_without_the_cycle_collector(use, tmp_path, monkeypatch):
    """Engines (~1 MB each) go with the tape's last reference, not at some later garbage collection."""
    monkeypatch.setenv("TAPEAD_CACHE_DIR", str(tmp_path))

    def make():
        t = tapead.record(lambda x: np.sum(np.sin(x)) + x[0] * x[1], np.ones(3))
        USES[use](t)
        return weakref.ref(t)

    assert_freed_without_gc(make)


def test_a_dropped_tape_with_branches_is_freed_without_the_cycle_collector(tmp_path, monkeypatch):
    monkeypatch.setenv("TAPEAD_CACHE_DIR", str(tmp_path))

    def make():
        t = tapead.record(_branchy, np.ones(3))
        X2 = np.ones((4, 3)) * [[1], [-1], [1], [-1]]
        assert np.allclose(t.gradient(X2), np.where(X2[:, :1] > 0, 2 * X2, 3 * X2 ** 2), rtol=1e-14, atol=0)
        return weakref.ref(t)

    assert_freed_without_gc(make)
