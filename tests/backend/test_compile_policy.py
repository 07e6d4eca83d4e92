"""Compile policy: small tapes at O2 at once; large ones at O0 first, O2 swapped in from a background thread."""
import numpy as np

import tapead
from tapead.runtime.calls import kernel, wait_for_upgrades


def chain(x):
    y = x
    for k in range(60):
        y = np.sin(y) * 1.01 + np.roll(y, 1) * 0.3
    return np.sum(y * y)


def test_small_tapes_compile_at_o2():
    tape = tapead.record(lambda x: np.sum(np.sin(x) * x), np.ones(5))
    tape.compile()
    assert kernel(tape, "value_and_gradient")[1].opt == 2


def test_large_tapes_start_at_o0_and_swap_in_o2(monkeypatch):
    monkeypatch.setenv("TAPEAD_BACKGROUND_O2", "1")
    tape = tapead.record(chain, np.linspace(0, 1, 20))
    x = np.linspace(-1, 1, 20)
    g0 = tape.gradient(x)
    o0_method = tape.gradient
    derived, k = kernel(tape, "value_and_gradient")
    assert len(derived) > 2000 and k.opt == 0
    assert tape.stats["kernels"]["kernel/value_and_gradient"]["opt"] in (0, 2)  # the swap may already be done
    wait_for_upgrades(tape, timeout=900)  # a loaded machine can take minutes
    assert tape.state.upgraded == 1
    assert kernel(tape, "value_and_gradient")[1].opt == 2
    assert tape.stats["kernels"]["kernel/value_and_gradient"] == dict(
        opt=2, ops=len(derived), seconds=tape.stats["kernels"]["kernel/value_and_gradient"]["seconds"])
    g2 = tape.gradient(x)
    assert np.array_equal(g0, g2)  # no fast-math: O0 and O2 give the same bits
    assert tape.gradient is not o0_method  # the native method of the O2 kernel is bound in its place
    assert np.array_equal(o0_method(x), g2)  # and one held from before still runs the O0 kernel
    X = np.random.default_rng(0).normal(size=(50, 20))
    assert np.array_equal(tape.gradient(X)[7], tape.gradient(X[7]))


def test_background_compilation_can_be_disabled(monkeypatch):
    monkeypatch.setenv("TAPEAD_BACKGROUND_O2", "0")
    tape = tapead.record(chain, np.linspace(0, 1, 20))
    tape.gradient(np.ones(20))
    wait_for_upgrades(tape, timeout=900)  # a loaded machine can take minutes
    assert tape.state.upgraded == 0 and kernel(tape, "value_and_gradient")[1].opt == 0
    assert tape.stats["kernels"]["kernel/value_and_gradient"]["opt"] == 0


def test_kernels_survive_a_fragmented_address_space():
    """JIT sections may land far apart; the code model must not need 32-bit distances (run in a subprocess:
    a relocation overflow aborts the process)."""
    import subprocess
    import sys
    script = (
        "import mmap, numpy as np, tapead\n"
        "maps = [mmap.mmap(-1, 1 << 20) for _ in range(3072)]\n"
        "for m in maps[::2]: m.close()\n"
        "t = tapead.record(lambda x: np.sum(np.sin(x) * np.exp(x) + 1.5 * x * x), np.ones(8))\n"
        "x = np.linspace(0, 1, 8)\n"
        "assert np.allclose(t.gradient(x), np.cos(x) * np.exp(x) + np.sin(x) * np.exp(x) + 3 * x)\n"
        "print('ok')\n")
    env = dict(__import__("os").environ, TAPEAD_CACHE="0")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_stats_after_evaluate_lists_kernels():
    tape = tapead.record(lambda x: np.sum(x * x), np.ones(3))
    tape.evaluate(np.ones(3))  # caches the checked tape itself
    tape.gradient(np.ones(3))
    assert set(tape.stats["kernels"]) == {"kernel/value_and_gradient"}
