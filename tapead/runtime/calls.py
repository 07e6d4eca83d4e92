"""Evaluating tapes on numbers: argument binding (the batch rule), compiled-kernel caching, and the results.

The batch rule: a call is batched iff every argument has exactly one more leading axis than recorded, all with
the same N; ``params`` is batched iff it has that extra axis too, else shared by every point. Anything else
raises InputError. Inputs are converted to C-contiguous float64 (a copy only when needed); ``out=`` arrays
must already be exactly right (plain ndarray, float64, shape, C-contiguous, writeable) and are filled in place.
The aliasing rule: no output may share memory with another output or with an input (InputError).
"""
from __future__ import annotations

import functools
import os
import threading
import time

import numpy as np

from ..ir.structure import records, work
from ..transforms import ad
from . import branches
from ..arrays import as_float_array, check_aliasing, check_out
from ..arrays import pointer as _pointer
from ..transforms import kernelspec
from ..backend.codegen import CALL_INLINE, flat_batches_pay, kernel_key, kernel_records, loop_form, lower_kernel
from ..errors import InputError
from ..ir.interpret import interpret
from ..backend.jit import Abandoned, Kernel, Source, compile_kernel, stop_background_builds, stopping
from ..transforms.kernelspec import ENTRY, first_level
from ..backend.native import builtin, lower_entry, prepare
from .binding import Bound, bind, evaluate, lead as _lead, named_inputs, result as _result  # noqa: F401
from ..ir.tape import Tape
from .threads import default_threads, run_batch
from .methods import bind_method, rebind

_compile_lock = threading.Lock()
OPS_PER_THREAD = 200000  # an explicit threads=k splits a batch only when each thread gets this many ops




def kernel(fun, kind: str) -> tuple[Tape, Kernel]:
    """The tape compiled and the compiled kernel for ``kind`` ('value' or 'value_and_gradient') of a Function,
    cached in ``fun.state.kernels``. The same module holds the native single-point entry point, stored in
    ``fun._entries[ENTRY[kind]]``."""
    hit = fun.state.kernels.get(kind)
    if hit is None:
        with _compile_lock:
            hit = fun.state.kernels.get(kind)
            if hit is None:
                hit = fun.state.kernels[kind] = _build(fun, kind)
    return hit


def _build(fun, kind: str, opt: int | None = None, elsewhere: bool = False,
           flat: bool = False) -> tuple[Tape, Kernel]:
    with fun.state.noting_unrolls(f"kernel/{kind}"):
        return _build_noted(fun, kind, opt, elsewhere, flat)


def _build_noted(fun, kind: str, opt: int | None, elsewhere: bool, flat: bool) -> tuple[Tape, Kernel]:
    tape = fun.tape
    if opt is None:
        tape.check()  # the compile boundary: native code only ever sees a validated tape
    derived = branches.program(fun, kind)
    size = kernel_records(loop_form(derived))  # (what lower compiles: repeated steps re-rolled)
    level = opt if opt is not None else first_level(size)
    spec = kernelspec.spec(tape, kind, derived, level, flat)
    ir = Source(lambda: lower_kernel(derived, spec) + lower_entry(spec, size <= CALL_INLINE, work(derived)),
                kernel_key(derived, spec))
    prepare()
    k = compile_kernel(ir, spec, elsewhere=elsewhere)
    k.entry, k.entry_keep = builtin(k.addresses[spec.name + "_entry"], spec.name)
    k.n_ops = records(derived)
    fun._entries[ENTRY[kind]] = k.entry
    bind_method(fun, spec, k)
    # the background O2 build: of an O0 kernel, and of a kernel with loops whose batches run faster unrolled
    if opt is None and (k.opt == 0 or flat_batches_pay(derived)) and \
            os.environ.get("TAPEAD_BACKGROUND_O2", "1") != "0":
        # not a daemon: interpreter shutdown waits for it (LLVM must not be torn down mid-compilation)
        threading.Thread(target=_upgrade, args=(fun, kind), daemon=False, name="tapead-O2").start()
    return derived, k


# when the main thread returns, before the interpreter joins the (non-daemon) build threads
getattr(threading, "_register_atexit", lambda f: None)(stop_background_builds)


def _upgrade(fun, kind: str) -> None:
    """Compile the O2 kernel of a large tape in another process (off this process's LLVM lock, on another core)
    and swap it in when ready."""
    if stopping():
        return
    try:
        with fun.state.noting_unrolls(f"kernel/{kind}"):
            flat = flat_batches_pay(branches.program(fun, kind))
        hit = _build(fun, kind, opt=2, elsewhere=True, flat=flat)
    except Abandoned:  # the interpreter is exiting: the O0 kernel served every call there was
        return
    with _compile_lock:
        fun.state.retired.append(fun.state.kernels.get(kind))  # a caller may still be running the old code
        fun.state.kernels[kind] = hit
        fun._entries[ENTRY[kind]] = hit[1].entry
        fun.state.upgraded += 1


def wait_for_upgrades(fun, timeout: float = 60.0) -> None:
    """Block until background O2 compilations of this tape have finished (for benchmarks and tests)."""
    for t in threading.enumerate():
        if t.name == "tapead-O2":
            t.join(timeout)


def _thread_count(threads: int | None, n: int, n_ops: int, seconds_per_point: float | None = None) -> int:
    """``threads=None``: the default policy (tapead.threads); ``threads=k``: at most k (a validated int)."""
    if threads is None:
        return default_threads(n, seconds_per_point)
    return max(1, min(threads, n * max(n_ops, 1) // OPS_PER_THREAD, n))


def _run(fun, kind: str, b: Bound, outs: list, threads: int | None = None):
    """Call the kernel: one native call for a point, at most ``threads`` native calls for a batch.

    Returns 0 when every guard held, else the point's status or, for a batch, the per-point statuses. The loop
    without statuses vectorises best, so it runs first; after a batch with failed guards (points on other
    paths), the next batches of this fun run the loop with statuses directly, until one has no failure.
    """
    derived, k = kernel(fun, kind)
    ptrs = [_pointer(x) for x in b.xs]
    p = _pointer(b.p)
    if b.n is None:
        return k.point(*ptrs, p, *[_pointer(o) for o in outs])
    n = b.n
    if n == 0:
        return 0
    t = _thread_count(threads, n, k.n_ops, k.point_seconds)
    if kind not in fun.state.mixed:
        started = time.perf_counter()
        failed = run_batch(k, b, ptrs, p, outs, t, None)
        if t == 1:  # one-thread timings drive the default thread count
            spent, best = (time.perf_counter() - started) / n, k.point_seconds
            if best is None or spent < best:
                k.point_seconds = spent
        if not failed:
            return 0
        fun.state.mixed.add(kind)
        rebind(fun, kind)  # (the native method leaves such batches to this path from now on)
    status = np.zeros(n, np.int32)
    if run_batch(k, b, ptrs, p, outs, t, status) == 0:
        fun.state.mixed.discard(kind)
        rebind(fun, kind)
        return 0
    return status


def _evaluate(fun, kind: str, b: Bound, outs: list, threads: int | None = None) -> None:
    """Run the kernel, then answer any point whose guards failed from the path it really takes."""
    status = _run(fun, kind, b, outs, threads)
    if isinstance(status, np.ndarray) or status != 0:
        branches.redo(fun, kind, b, outs, status, functools.partial(_run, threads=threads))


def _value_out(fun, b: Bound, out, what="out"):
    shape = _lead(b) + fun.output_shape
    return np.empty(shape) if out is None else check_out(out, shape, what)


def value(fun, *args, params=None, out=None, threads: int | None = None):
    """f at one point (a float for scalar outputs, else an array) or at a batch of points (an array)."""
    b = bind(fun, args, params, threads)
    v = _value_out(fun, b, out)
    if out is not None:
        check_aliasing([("out", v)], named_inputs(b))
    _evaluate(fun, "value", b, [v], threads)
    return _result(fun, b, v)


def _named_grads(gs: list, what: str) -> list:
    return [(what if len(gs) == 1 else f"{what}[{i}]", g) for i, g in enumerate(gs)]


def require_scalar_output(fun, what: str) -> None:
    if fun.n_outputs != 1:
        raise InputError(f"{what} needs a scalar-valued fun; this one has output shape {fun.output_shape} "
                         "(use fun.jacobian or fun.vjp)")


def _grad_outs(fun, b: Bound, out) -> list:
    shapes = [_lead(b) + s for s in fun.input_shapes]
    if out is None:
        return [np.empty(s) for s in shapes]
    if len(shapes) == 1:
        return [check_out(out, shapes[0], "out")]
    if not isinstance(out, (tuple, list)) or len(out) != len(shapes):
        raise InputError(f"out: expected a tuple of {len(shapes)} arrays shaped {shapes} (one per argument)")
    return [check_out(o, s, f"out[{i}]") for i, (o, s) in enumerate(zip(out, shapes))]


def gradient(fun, *args, params=None, out=None, threads: int | None = None):
    """The gradient: for one argument an array shaped like it, for several a tuple of arrays."""
    require_scalar_output(fun, "gradient")
    b = bind(fun, args, params, threads)
    gs = _grad_outs(fun, b, out)
    if out is not None:
        check_aliasing(_named_grads(gs, "out"), named_inputs(b))
    _evaluate(fun, "value_and_gradient", b, [None] + gs, threads)
    return gs[0] if len(gs) == 1 else tuple(gs)


def value_and_gradient(fun, *args, params=None, out=None, threads: int | None = None):
    """``(value, gradient)`` from one kernel; ``out`` (optional) is ``(value_out, gradient_out)``."""
    require_scalar_output(fun, "value_and_gradient")
    b = bind(fun, args, params, threads)
    if out is not None and (not isinstance(out, (tuple, list)) or len(out) != 2):
        raise InputError("out: expected a pair (value_out, gradient_out) for value_and_gradient")
    v_out, g_out = (None, None) if out is None else out
    v = _value_out(fun, b, v_out, "out[0]")
    gs = _grad_outs(fun, b, g_out)
    if out is not None:
        check_aliasing([("out[0]", v)] + _named_grads(gs, "out[1]"), named_inputs(b))
    _evaluate(fun, "value_and_gradient", b, [v] + gs, threads)
    return _result(fun, b, v), (gs[0] if len(gs) == 1 else tuple(gs))


def native(fun, kind: str = "gradient"):
    """The compiled entry point as a Python callable with the kernel's own argument order (lowest call cost).

    ``kind="gradient"``: ``f(*inputs, params, value_out, *grad_outs)`` fills the outs (None skips one) and
    returns the last out. ``kind="value"``: ``f(*inputs, params)`` returns a float for scalar tapes, else
    ``f(*inputs, params, out)`` fills and returns ``out``. Positional arguments only; ``params`` is None for a
    fun without params. Anything not exactly right (dtype, shape, layout, a batch, a flipped guard) is handled
    by the ordinary Python path, with its conversions, branch dispatch and errors.
    """
    if kind not in ("gradient", "value"):
        raise InputError(f"kind must be 'gradient' or 'value', got {kind!r}")
    if kind not in fun.state.natives:
        internal = "value" if kind == "value" else "value_and_gradient"
        if kind == "gradient":
            require_scalar_output(fun, "native('gradient')")
        kernel(fun, internal)
        wait_for_upgrades(fun)  # bind the final (O2) kernel
        _, k = kernel(fun, internal)
        name = "tapead_" + internal
        fn, keep = builtin(k.addresses[name + "_entry"], name, _python_path(fun, kind))
        # the kernel's engine lives as long as the callable is cached; where two threads built one, every caller
        # gets the first cached (the other's method record is dropped with its callable, never handed out)
        fun.state.natives.setdefault(kind, (fn, keep, k))
    return fun.state.natives[kind][0]


def _python_path(fun, kind: str):
    n = len(fun.input_shapes)

    def path(*a):
        if kind == "value" and len(a) in (n + 1, n + 2):
            out = a[n + 1] if len(a) == n + 2 else None
            return value(fun, *a[:n], params=a[n], out=out)
        if kind == "gradient" and len(a) == n + 2 + n:
            return _native_gradient(fun, a[:n], a[n], a[n + 1], a[n + 2:])
        expected = n + (2 + n if kind == "gradient" else 1)
        raise InputError(f"native {kind} function: expected {expected} positional arguments (inputs..., params"
                         + (", value_out, grad_outs...)" if kind == "gradient" else "[, out])") + f", got {len(a)}")

    return path


def _native_gradient(fun, args: tuple, params, value_out, grad_outs: tuple):
    """The Python path of ``fun.native("gradient")``: the same checks as ``value_and_gradient`` (None skips an
    output), the results computed into fresh arrays and copied into the outputs given."""
    b = bind(fun, args, params)
    outs = [("value_out", None if value_out is None else check_out(value_out, _lead(b), "value_out"))]
    outs += [(f"grad_out[{i}]", None if o is None else check_out(o, _lead(b) + s, f"grad_out[{i}]"))
             for i, (o, s) in enumerate(zip(grad_outs, fun.input_shapes))]
    check_aliasing(outs, named_inputs(b))
    v = np.empty(_lead(b))
    gs = [np.empty(_lead(b) + s) for s in fun.input_shapes]
    _evaluate(fun, "value_and_gradient", b, [v] + gs, None)
    for (_, o), r in zip(outs, [v] + gs):
        if o is not None:
            o[...] = r
    return grad_outs[-1] if grad_outs else None


def compile(fun) -> "Function":
    """Compile the value kernel (and the gradient kernel for scalar tapes) now instead of on first use."""
    kernel(fun, "value")
    if fun.n_outputs == 1:
        kernel(fun, "value_and_gradient")
    return fun


def kernel_levels(fun, prefix: str = "") -> dict:
    """Every compiled kernel of a Function and of its derived Functions: optimisation level, op count, compile
    seconds."""
    kernels = {}
    for kind, (_, k) in list(fun.state.kernels.items()):
        kernels[f"{prefix}kernel/{kind}"] = dict(opt=k.opt, ops=getattr(k, "n_ops", None),
                                                  seconds=round(k.compile_seconds, 4))
    for key, d in list(fun.state.derived.items()):  # derived tapes (Hessian, ...) with kernels of their own
        kernels.update(kernel_levels(d, prefix + "/".join(str(p) for p in key) + ":"))
    return kernels


def unroll_notes(fun, prefix: str = "") -> list[dict]:
    """``stats["unrolled"]``: the unrollings noted for a Function and for its derived Functions (their kernels),
    each derived one's ``for`` prefixed by what it is, as ``kernel_levels`` names their kernels."""
    notes = [dict(note, **{"for": prefix + note["for"]}) for note in fun.state.unrolled]
    for key, d in list(fun.state.derived.items()):
        notes += unroll_notes(d, prefix + "/".join(str(p) for p in key) + ":")
    return notes
