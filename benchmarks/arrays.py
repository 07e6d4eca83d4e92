"""Array programs as people write them (``tapead bench --arrays``): first result and replay against JAX and a
hand-written gradient, each case in a fresh process with the kernel cache off.

Families (each but the first also in a second spelling that must cost the same):
- ``mlp`` / ``mlp_wide``: an 8-64-64-1 / 32-256-256-1 tanh network's loss over a batch
  (``h = np.tanh(h @ W + b)``); hand-written: numpy backpropagation.
- ``lj_rows`` / ``lj_cols``: Lennard-Jones with positions ``(n, 3)`` and ``(3, n)`` (``d = X[:, i] - X[:, j]``);
  hand-written: the closed-form gradient in numpy (pairs vectorised, ``np.add.at``).
- ``neo_stack`` / ``neo_components``: a 2-D neo-Hookean energy over triangles with ``np.stack``, ``Ds @ Dinv``
  and ``np.linalg.det``, and the same written component by component; hand-written: none (JAX is the peer).
- ``logreg_matmul`` / ``logreg_sum``: logistic regression with ``X @ w`` and ``np.sum(X * w, axis=1)``, ``X``
  and ``y`` closure constants; hand-written: ``X.T @ (sigmoid(X w) - y) / n``.
- ``logreg_hessian``: the dense Hessian of ``logreg_matmul`` over 10,000 rows, the size its number of features;
  hand-written: ``X.T @ diag(s (1 - s)) @ X / n`` in numpy.
- ``quadratic``: ``x.T @ A @ x``; hand-written: ``(A + A.T) @ x``.
- ``quadratic_hessian``: the dense Hessian of ``quadratic``; hand-written: ``A + A.T``.
- ``stacked_matmul`` / ``stacked_einsum``: ``sum(tanh(A @ B))`` over ``n`` stacked 3x3 traced matrices, spelled
  ``A @ B`` and ``np.einsum("nij,njk->nik", A, B)``; hand-written: numpy backpropagation (two stacked products).
- ``tensordot``: ``sum(tanh(np.tensordot(X, W, axes=([1, 2], [0, 1]))))`` with ``X`` a (n, 4, 5) closure
  constant and ``W`` traced (4, 5, 8); hand-written: numpy (``tensordot`` of ``X`` and the cotangent).
- ``eigh_hessian``: the dense Hessian (not the gradient) of a scalar of a k x k ``eigh``'s eigenvalues and
  eigenvectors (lower triangle read, as numpy); JAX is the peer (``jit(hessian)``, its LAPACK rule).

Columns: record seconds, first result seconds (derive + compile + call; the gradient, the Hessian for
``*_hessian``), replay per call of tapead, the hand-written gradient and JAX ``jit(grad)`` (``jit(hessian)``)
(medians of alternating rounds), JAX's first call (trace + compile),
the tape's op count and the peak RSS. Every tapead gradient is checked against the hand-written one or JAX.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

CASES = {"mlp": (256,), "mlp_wide": (256,), "lj_rows": (100, 300), "lj_cols": (100, 300), "neo_stack": (10000,), "neo_components": (10000,),
         "logreg_matmul": (10000,), "logreg_sum": (10000,), "quadratic": (200, 1000), "eigh_hessian": (4, 6),
         "logreg_hessian": (20, 200), "quadratic_hessian": (200, 1000), "stacked_matmul": (10000,),
         "stacked_einsum": (10000,), "tensordot": (10000,), "heat": (32, 128)}
QUICK = {"mlp": (64,), "lj_rows": (100,), "lj_cols": (100,), "neo_stack": (1000,), "neo_components": (1000,),
         "logreg_matmul": (1000,), "logreg_sum": (1000,), "quadratic": (200,), "eigh_hessian": (6,),
         "logreg_hessian": (20,), "quadratic_hessian": (200,), "stacked_matmul": (1000,), "tensordot": (1000,)}


def _lj(n: int, xp, cols: bool):
    i, j = np.triu_indices(n, 1)

    def f(x):
        if cols:
            X = x.reshape(3, n)
            d = X[:, i] - X[:, j]
            r2 = xp.sum(d * d, axis=0)
        else:
            p = x.reshape(n, 3)
            d = p[i] - p[j]
            r2 = xp.sum(d * d, axis=1)
        r6 = 1 / r2 ** 3
        return xp.sum(4 * (r6 * r6 - r6))

    side = int(np.ceil(n ** (1 / 3)))
    grid = 1.1 * np.array([(a, b, c) for c in range(side) for b in range(side) for a in range(side)][:n], float)
    grid += np.random.default_rng(0).uniform(-0.05, 0.05, grid.shape)
    x = grid.T.ravel() if cols else grid.ravel()

    def hand(x):
        p = (x.reshape(3, n).T if cols else x.reshape(n, 3))
        d = p[i] - p[j]
        r2 = np.sum(d * d, axis=1)
        r6 = 1 / r2 ** 3
        c = (-48 * r6 * r6 + 24 * r6) / r2
        g = np.zeros((n, 3))
        np.add.at(g, i, c[:, None] * d)
        np.add.at(g, j, -c[:, None] * d)
        return g.T.ravel() if cols else g.ravel()

    return f, x, hand


def _neo(ne: int, xp, stack: bool):
    nv = ne + 2
    T = np.stack([np.arange(ne), np.arange(ne) + 1, np.arange(ne) + 2], 1)
    X0 = np.stack([0.5 * np.arange(nv), 0.8 * (np.arange(nv) % 2)], 1)
    Dinv = np.linalg.inv(np.stack([X0[T[:, 1]] - X0[T[:, 0]], X0[T[:, 2]] - X0[T[:, 0]]], -1))

    def f(x):
        P = x.reshape(nv, 2)
        xa, xb, xc = P[T[:, 0]], P[T[:, 1]], P[T[:, 2]]
        if stack:
            F = xp.stack([xb - xa, xc - xa], -1) @ Dinv
            J = xp.linalg.det(F)
            I1 = xp.sum(F * F, axis=(1, 2))
        else:
            d1, d2 = xb - xa, xc - xa
            F00 = d1[:, 0] * Dinv[:, 0, 0] + d2[:, 0] * Dinv[:, 1, 0]
            F01 = d1[:, 0] * Dinv[:, 0, 1] + d2[:, 0] * Dinv[:, 1, 1]
            F10 = d1[:, 1] * Dinv[:, 0, 0] + d2[:, 1] * Dinv[:, 1, 0]
            F11 = d1[:, 1] * Dinv[:, 0, 1] + d2[:, 1] * Dinv[:, 1, 1]
            J = F00 * F11 - F01 * F10
            I1 = F00 ** 2 + F01 ** 2 + F10 ** 2 + F11 ** 2
        return xp.sum(0.5 * (I1 - 2) - xp.log(J) + xp.log(J) ** 2)

    return f, (X0 @ np.array([[1.02, 0.01], [-0.02, 0.99]])).ravel(), None


def _logreg(n: int, xp, matmul: bool, d: int = 20, hessian: bool = False):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(n, d)), (rng.uniform(size=n) < 0.5).astype(float)

    def f(w):
        z = X @ w if matmul else xp.sum(X * w, axis=1)
        return xp.sum(xp.logaddexp(0.0, z) - y * z) / n

    def hand(w):
        s = 1 / (1 + np.exp(-(X @ w)))
        return (X.T * (s * (1 - s))) @ X / n if hessian else X.T @ (s - y) / n

    return f, rng.normal(size=d) * 0.1, hand


def _quadratic(n: int, xp, hessian: bool = False):
    A = np.random.default_rng(1).normal(size=(n, n))

    def f(x):
        return x.T @ A @ x

    return f, np.linspace(-1, 1, n), (lambda x: A + A.T) if hessian else (lambda x: (A + A.T) @ x)


def _eigh(k: int, xp):
    def f(x):
        A = x.reshape(k, k)
        if xp is np:
            w, v = np.linalg.eigh(A, UPLO="L")
        else:  # numpy reads the lower triangle only: so does this
            w, v = xp.linalg.eigh(xp.tril(A) + xp.tril(A, -1).T)
        return xp.sum(w * xp.sin(w)) + xp.sum(v[0] ** 2 * w)

    return f, np.random.default_rng(3).normal(size=k * k), None


def _mlp(batch: int, xp, width: tuple = (8, 64)):
    """A d-w-w-1 tanh network's mean squared error over a batch, parameters flattened; hand-written: numpy
    backpropagation (BLAS products)."""
    rng = np.random.default_rng(2)
    d, w = width
    X, y = rng.normal(size=(batch, d)), rng.normal(size=batch)
    sizes = [(d, w), (w, w), (w, 1)]

    def unpack(p):
        out, at = [], 0
        for a, b in sizes:
            out.append((p[at:at + a * b].reshape(a, b), p[at + a * b:at + a * b + b]))
            at += a * b + b
        return out

    def f(p):
        h = X
        layers = unpack(p)
        for W, c in layers[:-1]:
            h = xp.tanh(h @ W + c)
        W, c = layers[-1]
        return xp.mean(((h @ W + c)[:, 0] - y) ** 2)

    def hand(p):
        layers = unpack(p)
        hs = [X]
        for W, c in layers[:-1]:
            hs.append(np.tanh(hs[-1] @ W + c))
        W3, c3 = layers[-1]
        g = (2.0 / batch) * ((hs[-1] @ W3 + c3)[:, 0] - y)[:, None]
        grads = []
        for (W, c), h_in, h_out in zip(reversed(layers), reversed(hs), [None] + list(reversed(hs[1:]))):
            if h_out is not None:
                g = g * (1 - h_out ** 2)
            grads.append((h_in.T @ g, g.sum(axis=0)))
            g = g @ W.T
        return np.concatenate([np.concatenate([gw.ravel(), gc]) for gw, gc in reversed(grads)])

    n = sum(a * b + b for a, b in sizes)
    return f, rng.normal(size=n) * 0.2, hand


def _stacked(n: int, xp, einsum: bool):
    def f(x):
        A, B = x[:9 * n].reshape(n, 3, 3), x[9 * n:].reshape(n, 3, 3)
        return xp.sum(xp.tanh(xp.einsum("nij,njk->nik", A, B) if einsum else A @ B))

    def hand(x):
        A, B = x[:9 * n].reshape(n, 3, 3), x[9 * n:].reshape(n, 3, 3)
        G = 1 - np.tanh(A @ B) ** 2
        return np.concatenate([(G @ B.transpose(0, 2, 1)).ravel(), (A.transpose(0, 2, 1) @ G).ravel()])

    return f, np.random.default_rng(2).normal(size=18 * n) * 0.5, hand


def _tensordot(n: int, xp):
    X = np.random.default_rng(3).normal(size=(n, 4, 5))

    def f(w):
        return xp.sum(xp.tanh(xp.tensordot(X, w.reshape(4, 5, 8), axes=([1, 2], [0, 1]))))

    def hand(w):
        G = 1 - np.tanh(np.tensordot(X, w.reshape(4, 5, 8), axes=([1, 2], [0, 1]))) ** 2
        return np.tensordot(X, G, axes=([0], [0])).ravel()

    return f, np.random.default_rng(4).normal(size=160) * 0.2, hand


def _heat(n: int, xp, steps: int = 50):
    """Explicit heat equation on an n x n grid with zero boundary values, written with np.pad and shifted slices;
    hand-written: the adjoint stencil (the zero-padded 5-point Laplacian is symmetric, so the adjoint of a step is
    the step), run backwards from 2 u_N."""
    def lap(u, pad):
        p = pad(u, 1)
        return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * u

    def f(x):
        u = x.reshape(n, n)
        for _ in range(steps):
            u = u + 0.1 * lap(u, xp.pad)
        return xp.sum(u * u)

    def hand(x):
        u = x.reshape(n, n)
        for _ in range(steps):
            u = u + 0.1 * lap(u, np.pad)
        g = 2 * u
        for _ in range(steps):
            g = g + 0.1 * lap(g, np.pad)
        return g.ravel()

    return f, np.sin(np.linspace(0, 3, n * n)), hand


def build(name: str, size: int, xp):
    if name == "heat":
        return _heat(size, xp)
    if name.startswith("stacked_"):
        return _stacked(size, xp, name == "stacked_einsum")
    if name == "tensordot":
        return _tensordot(size, xp)
    if name.startswith("mlp"):
        return _mlp(size, xp, (32, 256) if name == "mlp_wide" else (8, 64))
    if name.startswith("lj_"):
        return _lj(size, xp, name == "lj_cols")
    if name.startswith("neo_"):
        return _neo(size, xp, name == "neo_stack")
    if name == "logreg_hessian":  # the size is the number of features, over 10,000 rows
        return _logreg(10_000, xp, True, size, hessian=True)
    if name.startswith("logreg_"):
        return _logreg(size, xp, name == "logreg_matmul")
    if name == "eigh_hessian":
        return _eigh(size, xp)
    return _quadratic(size, xp, name == "quadratic_hessian")


def _median_rounds(fns: dict, rounds: int = 7, budget: float = 0.02) -> dict:
    """Seconds per call of each function: alternating rounds (one after another, repeated), medians; each round
    of a function sized to about ``budget`` seconds."""
    per = {k: [] for k in fns}
    for k, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        fns[k] = (fn, max(1, int(budget / max(time.perf_counter() - t0, 1e-7))))
    for _ in range(rounds):
        for k, (fn, reps) in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            per[k].append((time.perf_counter() - t0) / reps)
    return {k: float(np.median(v)) for k, v in per.items()}


def run_case(name: str, size: int) -> dict:
    """One case in this process (the caller gives it a fresh one): measurements and checks."""
    import tapead
    f, x, hand = build(name, size, np)
    warm = np.ones(3)  # tapead's modules loaded and LLVM initialised, as JAX's backend is warm below
    tapead.record(lambda v: np.sum(np.sin(v) * v), warm).gradient(warm)
    t0 = time.perf_counter()
    t = tapead.record(f, x)
    hessian = name.endswith("_hessian")  # the dense Hessian is what this family measures
    derivative = t.hessian if hessian else t.gradient
    t1 = time.perf_counter()
    g = derivative(x)
    t2 = time.perf_counter()
    out = {"case": name, "size": size, "record": t1 - t0, "first": t2 - t1, "ops": len(t), "loops": len(t.maps),
           "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
    buf = np.empty_like(g)
    from tapead.runtime.calls import wait_for_upgrades
    wait_for_upgrades(t)  # replay is the steady state: the background O2 kernel, when one is being built
    out["o2_wait"] = time.perf_counter() - t2
    fns = {"tapead": lambda: derivative(x, out=buf)}
    if hand is not None:
        fns["hand"] = lambda: hand(x)
        out["err_hand"] = float(np.max(np.abs(g - hand(x))) / max(1.0, np.max(np.abs(g))))
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        jf, _, _ = build(name, size, jax.numpy)
        jg = jax.jit((jax.hessian if hessian else jax.grad)(jf))
        xj = jax.numpy.asarray(x)
        jax.block_until_ready(jax.jit(lambda v: v * 2)(xj))  # the backend is warm before the first call is timed
        t3 = time.perf_counter()
        ref = np.asarray(jax.block_until_ready(jg(xj)))
        out["jax_first"] = time.perf_counter() - t3
        out["err_jax"] = float(np.max(np.abs(g - ref)) / max(1.0, np.max(np.abs(g))))
        fns["jax"] = lambda: jax.block_until_ready(jg(xj))
    except ImportError:
        pass
    out.update({f"replay_{k}": v for k, v in _median_rounds(fns).items()})
    return out


def run(quick: bool = False, timeout: float = 600.0) -> list[dict]:
    """Every case in a fresh process (kernel cache off), in order; a case that fails or times out says so."""
    rows = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TAPEAD_CACHE="0", PYTHONPATH=os.pathsep.join(filter(None, [root,
                                                                                      os.environ.get("PYTHONPATH")])))
    for name, sizes in (QUICK if quick else CASES).items():
        for size in sizes:
            try:
                r = subprocess.run([sys.executable, "-m", "benchmarks.arrays", name, str(size)], capture_output=True,
                                   text=True, timeout=timeout, env=env, cwd=root)
                rows.append(json.loads(r.stdout.splitlines()[-1]) if r.returncode == 0 else
                            {"case": name, "size": size, "error": r.stderr.strip().splitlines()[-1:]})
            except subprocess.TimeoutExpired:
                rows.append({"case": name, "size": size, "error": f"timeout after {timeout:.0f} s"})
    return rows


def _ms(v) -> str:
    return "-" if v is None else f"{v * 1e3:.3g}"


def format_table(rows: list[dict]) -> str:
    head = ("| case | size | ops | record s | first result s | JAX first s | replay tapead ms | hand ms | JAX ms | "
            "tapead/hand | tapead/JAX | peak RSS GB |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['size']} | {r['error']} |" + " |" * 9)
            continue
        t, h, j = r.get("replay_tapead"), r.get("replay_hand"), r.get("replay_jax")
        lines.append(f"| {r['case']} | {r['size']} | {r['ops']} | {r['record']:.2f} | {r['first']:.2f} | "
                     f"{r.get('jax_first', float('nan')):.2f} | {_ms(t)} | {_ms(h)} | {_ms(j)} | "
                     f"{t / h if h else float('nan'):.2f} | {t / j if j else float('nan'):.2f} | {r['rss_gb']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(run_case(sys.argv[1], int(sys.argv[2]))))
