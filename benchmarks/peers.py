"""Other AD libraries running the same numpy-style definitions: JAX, PyTorch, CasADi (SX and generated C), autograd.

Each peer is imported only when used. ``build(peer, case, task, X, threads)`` returns a zero-argument callable doing
one call (its result converts with ``np.asarray``) or raises ``Skip`` saying why the peer cannot run that task;
``threads`` applies to the batch task. ``jax_first_call(case)`` times JAX's first (tracing + compiling) call.
The numpy definitions are reused as they are: JAX and autograd run them with ``np`` rebound to their numpy
namespace, PyTorch with a thin torch namespace (and module constants as tensors), CasADi on arrays of SX scalars.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import types
import warnings
from typing import Callable

import numpy as np

PEERS = ("jax", "torch", "casadi", "casadi-c", "autograd")
MODULES = {"jax": "jax", "torch": "torch", "casadi": "casadi", "casadi-c": "casadi", "autograd": "autograd"}
AUTOGRAD_ROWS = 256  # autograd has no vectorising map: its batch is a Python loop timed on this many rows
CASADI_C_MAX = 50_000  # SX instructions; gcc -O3 on the generated C of larger graphs takes minutes
GCC_TIMEOUT = 90  # seconds
_threads = 1


class Skip(Exception):
    """The peer cannot run this task (not installed, unsupported, failed to build); the message says why."""


def configure(threads: int = 1) -> None:
    """Process-wide thread settings; call before the first ``build`` (XLA reads its flags at import, so JAX keeps
    one setting per process: single-threaded when ``threads`` is 1, else XLA's default)."""
    global _threads
    _threads = threads
    if threads == 1 and "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()


def available(peer: str) -> str | None:
    """None if the peer can be imported, else a note saying what is missing."""
    try:
        __import__(MODULES[peer])
    except Exception as e:  # noqa: BLE001 - a broken install is as good as a missing one here
        return f"{MODULES[peer]} not importable ({type(e).__name__}: {e})"
    return None


def rebind(f: Callable, namespace, convert: Callable = lambda v: v) -> Callable:
    """``f`` with the name ``np`` (and helper functions of its module) bound to ``namespace``."""
    g = {k: convert(v) for k, v in f.__globals__.items()}
    g["np"] = g["numpy"] = namespace
    for k, v in list(g.items()):
        if isinstance(v, types.FunctionType) and v.__module__ == f.__module__:
            g[k] = types.FunctionType(v.__code__, g, v.__name__, v.__defaults__, v.__closure__)
    return types.FunctionType(f.__code__, g, f.__name__, f.__defaults__, f.__closure__)


# ---- JAX ------------------------------------------------------------------------------------------------------


class _ListIndexing:
    """Wraps a JAX array so that ``x[[0, 1]]`` (numpy's list indexing, refused by JAX) indexes with an array."""

    def __init__(self, x):
        self._x = x

    def __getitem__(self, key):
        return self._x[np.asarray(key) if isinstance(key, list) else key]

    def __getattr__(self, name):
        return getattr(self._x, name)

    def __jax_array__(self):
        return self._x

    def __len__(self):
        return len(self._x)

    def __iter__(self):
        return iter(self._x)


for _name in ("add sub mul truediv pow matmul radd rsub rmul rtruediv rpow rmatmul neg pos abs lt le gt ge "
              "eq ne").split():
    setattr(_ListIndexing, f"__{_name}__",
            (lambda n: lambda self, *a: getattr(self._x, n)(*a))(f"__{_name}__"))


def _jax_f(case) -> Callable:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    rebound = rebind(case.f, jnp)

    def f(x):
        return rebound(_ListIndexing(x))
    return f


def jax_first_call(case) -> float:
    """Seconds of the first call of ``jax.jit(jax.grad(f))`` on a freshly rebound ``f`` (trace and compile
    included), with JAX already initialised; raises Skip when JAX cannot do it."""
    import time
    missing = available("jax")
    if missing:
        raise Skip(missing)
    import jax
    try:
        jax.config.update("jax_enable_x64", True)
        jax.jit(lambda v: v * 2.0)(np.ones(2)).block_until_ready()  # backend start-up is not the function's
        fn = jax.jit(jax.grad(_jax_f(case)))
        x = jax.device_put(case.x0)
        t0 = time.perf_counter()
        fn(x).block_until_ready()
        return time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - reported as a note
        raise Skip(f"jax could not run {case.name}: {type(e).__name__}: {str(e)[:160]}") from None


def _jax(case, task: str, X: np.ndarray, threads: int = 1) -> Callable:
    import jax
    f = _jax_f(case)
    make = {"grad": jax.grad, "grad_batch": lambda h: jax.vmap(jax.grad(h)), "jacobian": jax.jacrev,
            "hessian": jax.hessian}[task]
    fn = jax.jit(make(f))
    x = jax.device_put(X if task == "grad_batch" else case.x0)
    return lambda: fn(x).block_until_ready()


# ---- PyTorch ----------------------------------------------------------------------------------------------------


def _torch_namespace(torch):
    ns = types.SimpleNamespace()
    for name in dir(torch):
        if not name.startswith("_"):
            setattr(ns, name, getattr(torch, name))
    ns.triu_indices = lambda n, k=0, m=None: tuple(torch.as_tensor(a) for a in np.triu_indices(n, k, m))
    ns.array = ns.asarray = lambda a, dtype=None: torch.as_tensor(np.asarray(a, dtype=dtype))
    return ns


def _torch(case, task: str, X: np.ndarray, threads: int = 1) -> Callable:
    import torch
    from torch import func
    torch.set_num_threads(1)  # one-point tasks run on one thread; batch calls set their count per call

    def tensor(v):
        if isinstance(v, np.ndarray):
            return torch.as_tensor(v if v.dtype.kind in "iub" else v.astype(np.float64))
        return v
    f = rebind(case.f, _torch_namespace(torch), tensor)
    if task == "grad":  # plain autograd is 2-3x faster than torch.func.grad on one point
        x = torch.as_tensor(case.x0)

        def backward():
            xr = x.detach().requires_grad_(True)
            return torch.autograd.grad(f(xr), xr)[0]
        return backward
    make = {"grad_batch": lambda h: func.vmap(func.grad(h)), "jacobian": func.jacrev, "hessian": func.hessian}
    fn = make[task](f)
    x = torch.as_tensor(X if task == "grad_batch" else case.x0)

    def run():
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                return fn(x)
        finally:
            torch.set_num_threads(1)
    return run


# ---- CasADi -----------------------------------------------------------------------------------------------------


def _casadi_function(case, task: str):
    import casadi as ca
    try:
        ca.GlobalOptions.setNumpyMode(-1)
    except AttributeError:
        pass
    n = case.x0.size
    x = ca.SX.sym("x", n)
    cells = np.empty(n, object)
    for i in range(n):
        cells[i] = x[i]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = case.f(cells)
    if not isinstance(y, ca.SX):
        y = ca.vertcat(*np.asarray(y, dtype=object).ravel())
    if task in ("grad", "grad_batch"):
        out = ca.gradient(y, x)
    elif task == "jacobian":
        out = ca.jacobian(y, x)
    else:
        out = ca.hessian(y, x)[0]
    return ca.Function("d_" + case.name, [x], [out])


def _casadi(case, task: str, X: np.ndarray, threads: int = 1, compiled: bool = False) -> Callable:
    import casadi as ca
    fn = _casadi_function(case, task)
    if compiled and fn.n_instructions() > CASADI_C_MAX:
        raise Skip(f"{fn.n_instructions()} SX instructions: too big to compile with gcc -O3 in reasonable time "
                   f"(limit {CASADI_C_MAX})")
    if task == "grad_batch":
        fn = fn.map(X.shape[0], "serial" if threads == 1 else "thread", *([] if threads == 1 else [threads]))
    if compiled:
        fn = _compile(fn)
    arg = ca.DM(X.T) if task == "grad_batch" else ca.DM(case.x0)
    return lambda: fn(arg)


_build_dir = None


def _compile(fn):
    """``fn`` generated as C, built with gcc -O3 into a shared library, loaded back with casadi.external."""
    import casadi as ca
    global _build_dir
    if _build_dir is None:
        _build_dir = tempfile.TemporaryDirectory(prefix="tapead-bench-casadi-")
    name = f"{fn.name()}_{len(os.listdir(_build_dir.name))}"
    c = os.path.join(_build_dir.name, name + ".c")
    so = os.path.join(_build_dir.name, name + ".so")
    cwd = os.getcwd()
    try:
        os.chdir(_build_dir.name)  # Function.generate writes into the working directory
        fn.generate(name + ".c")
    finally:
        os.chdir(cwd)
    cmd = ["gcc", "-O3", "-march=native", "-shared", "-fPIC", "-fno-semantic-interposition", c, "-o", so, "-lm"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=GCC_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Skip(f"gcc -O3 took over {GCC_TIMEOUT} s on the generated C") from None
    except (OSError, subprocess.SubprocessError) as e:
        raise Skip(f"gcc could not build the generated C ({type(e).__name__})") from None
    return ca.external(fn.name(), so)


# ---- autograd ---------------------------------------------------------------------------------------------------


def _autograd(case, task: str, X: np.ndarray, threads: int = 1) -> Callable:
    if threads > 1:
        raise Skip("autograd has no threaded batch (a Python loop): see the one-thread row")
    import autograd
    import autograd.numpy as anp
    f = rebind(case.f, anp)
    if task == "grad_batch":
        g = autograd.grad(f)
        rows = X[:AUTOGRAD_ROWS]
        return lambda: [g(r) for r in rows]
    fn = {"grad": autograd.grad, "jacobian": autograd.jacobian, "hessian": autograd.hessian}[task](f)
    x = case.x0.copy()
    return lambda: fn(x)


def build(peer: str, case, task: str, X: np.ndarray, threads: int = 1) -> Callable:
    """A callable doing one ``task`` call of ``case`` on ``peer`` (the batch task on ``X`` with ``threads``
    threads where the peer lets a call choose); raises Skip."""
    if task not in ("grad", "grad_batch", "jacobian", "hessian"):
        raise Skip(f"peers are not timed on {task}")
    missing = available(peer)
    if missing:
        raise Skip(missing)
    builders = {"jax": _jax, "torch": _torch, "casadi": _casadi, "autograd": _autograd,
                "casadi-c": lambda c, t, x, k: _casadi(c, t, x, k, compiled=True)}
    try:
        run = builders[peer](case, task, X, threads)
        run()  # the first call compiles (JAX traces lazily) and shows any failure now
        return run
    except Skip:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to build a peer becomes a note in the table
        raise Skip(f"{peer} could not run {case.name} {task}: {type(e).__name__}: {str(e)[:160]}") from None


def as_array(peer: str, task: str, result) -> np.ndarray:
    """A peer's result as a numpy array laid out like tapead's (one row per point for batches)."""
    if task == "grad_batch" and peer == "autograd":
        return np.array(result)
    a = np.asarray(result, dtype=np.float64)
    return a.T if task == "grad_batch" and peer.startswith("casadi") else a


def rows_timed(peer: str, task: str, n: int) -> int:
    """How many points one batch call of ``peer`` covers (autograd loops over a subset)."""
    if task != "grad_batch":
        return 1
    return min(n, AUTOGRAD_ROWS) if peer == "autograd" else n
