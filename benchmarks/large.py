"""Large and many-output tapes: cost against size.

Every measurement runs in a fresh Python process with the kernel cache off (so nothing is shared between sizes and
the peak RSS is that size's own):
- ``recurrence``: a Python loop of a two-state recurrence recorded into a scalar tape of 1e3 ... 1e6 ops: record
  seconds, the first value (O0 compile), the O2 compile of the same kernel, the gradient tape's first result,
  replay, and peak RSS; seconds per 1,000 ops show whether the cost is linear.
- ``hessian``: the dense Hessian of ``0.01 * sum(x * x)`` (n^2 constant outputs) for n = 100, 400, 1000.
- ``first``: first gradient of small functions (the seeds, Lennard-Jones with 10 atoms) next to JAX's first
  ``jit(grad)`` call when JAX is installed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RECURRENCE = r"""
import json, resource, sys, time
import numpy as np
import tapead
from tapead.runtime.calls import kernel, _build

steps = int(sys.argv[1])


def f(x):
    a, b = x[0], x[1]
    s = 0.0
    for i in range(steps):
        a, b = np.sin(a) * 0.9 + b * 0.1, b * 0.95 + np.cos(a) * 0.05 + 0.001 * i
        s = s + a * b
    return s


x = np.array([0.3, 0.7])
t0 = time.perf_counter(); tape = tapead.record(f, x); t1 = time.perf_counter()
v = tape.value(x); t2 = time.perf_counter()
_, k2 = _build(tape, "value", opt=2); t3 = time.perf_counter()
g = tape.gradient(x); t4 = time.perf_counter()
n = 20
t5 = time.perf_counter()
for _ in range(n):
    tape.gradient(x)
replay = (time.perf_counter() - t5) / n
assert abs(v - tape.evaluate(x)) <= 1e-12 * abs(v)
print(json.dumps(dict(ops=len(tape), gradient_ops=len(kernel(tape, "value_and_gradient")[0]), record=t1 - t0,
                      value_O0=t2 - t1, value_O2=t3 - t2, gradient_first=t4 - t3, replay_ms=replay * 1e3,
                      peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)))
"""

_HESSIAN = r"""
import json, sys, time
import numpy as np
import tapead
n = int(sys.argv[1])
x = np.linspace(-1.0, 1.0, n)
t0 = time.perf_counter()
tape = tapead.record(lambda x: 0.01 * np.sum(x * x), x)
H = tape.hessian(x)
t1 = time.perf_counter()
assert np.array_equal(H, 0.02 * np.eye(n))
print(json.dumps(dict(n=n, first=t1 - t0)))
"""

_FIRST = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, "tests")
name = sys.argv[1]
import tapead
from functions import FUNCTIONS, lj, lj_start
if name == "lj10":
    f, args = lj, (lj_start(atoms=10),)
else:
    case = FUNCTIONS[name]
    f, args = case.f, tuple(case.args0)
kw = {} if name == "lj10" or FUNCTIONS[name].params is None else {"params": FUNCTIONS[name].params}
t0 = time.perf_counter()
tape = tapead.record(f, *args, **kw)
tape.gradient(*args, **kw)
mine = time.perf_counter() - t0
theirs = None
try:
    import jax
except ImportError:
    jax = None
try:
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import functions
    functions.np = jnp
    jf = jax.jit(jax.grad(getattr(functions, f.__name__)))
    t0 = time.perf_counter()
    jax.block_until_ready(jf(*(jnp.asarray(a) for a in args)))
    theirs = time.perf_counter() - t0
except Exception as e:  # JAX absent, or it cannot trace this function (seed_bar indexes with a list)
    theirs = "not installed" if jax is None else f"fails: {type(e).__name__}"
print(json.dumps(dict(function=name, tapead=mine, jax=theirs)))
"""


def _run(script: str, *args: str) -> dict:
    env = dict(os.environ, TAPEAD_CACHE="0", TAPEAD_BACKGROUND_O2="0")
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=_ROOT, env=env,
                       timeout=7200)
    if r.returncode != 0:
        return dict(error=r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tapead bench --large", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="100,1000,10000,100000",
                    help="recurrence steps (about 11 ops each; 100000 is a 1.1M-op tape: about 10 minutes)")
    ap.add_argument("--hessian", default="100,400,1000", help="sizes n of the dense quadratic Hessian")
    ap.add_argument("--first", default="seed_foo,seed_bar,seed_baz,rosenbrock,lj10")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    out: dict = {"recurrence": [], "hessian": [], "first": []}
    print("recurrence tape: ops | record | first value (O0) | O2 build | gradient ops | first gradient | replay "
          "| peak RSS | s per 1k ops (O0, O2)")
    for steps in filter(None, args.steps.split(",")):
        r = _run(_RECURRENCE, steps)
        out["recurrence"].append(r)
        if "error" in r:
            print(f"  {steps} steps: {r['error']}")
            continue
        k = r["ops"] / 1000
        print(f"  {r['ops']:>9,} | {r['record']:.2f} s | {r['value_O0']:.2f} s | {r['value_O2']:.2f} s | "
              f"{r['gradient_ops']:,} | {r['gradient_first']:.2f} s | {r['replay_ms']:.2f} ms | "
              f"{r['peak_rss_gb']:.2f} GB | {r['value_O0'] / k:.4f}, {r['value_O2'] / k:.4f}", flush=True)
    print("dense Hessian of 0.01 * sum(x * x): first result")
    for n in filter(None, args.hessian.split(",")):
        r = _run(_HESSIAN, n)
        out["hessian"].append(r)
        print(f"  n = {n}: " + (r.get("error") or f"{r['first']:.2f} s"), flush=True)
    print("first gradient (record + derive + compile + call) | JAX first jit(grad) call")
    for name in filter(None, args.first.split(",")):
        r = _run(_FIRST, name)
        out["first"].append(r)
        if "error" in r:
            print(f"  {name}: {r['error']}")
            continue
        jax = f"{r['jax']:.3f} s" if isinstance(r.get("jax"), float) else f"JAX {r.get('jax')}"
        print(f"  {name}: {r['tapead']:.3f} s | {jax}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
