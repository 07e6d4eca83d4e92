"""What ``tapead.record`` returns: a recorded function, evaluated through compiled kernels.

A ``Function`` holds the IR (``.tape``, a frozen ``tapead.Tape``) and what evaluating it accumulates: the user's
Python function and the other paths through its control flow (``tapead.branches``), the derived tapes its
methods need (gradient, Jacobian, Hessian tapes: Functions of their own, with kernels of their own) and the
compiled kernels, each in a cache of its own kind. Every method the README documents lives here; the work is
done by the evaluation modules (``calls``, ``derivatives``, ``assemble``, ``dask_array``), imported when first
called so that the IR, the transforms and the interpreter import without the backend (llvmlite).

The IR's fields and sizes read through (``f.input_shapes``, ``len(f)``, ``str(f)``...), so a Function reads as
the tape it evaluates; transforms take the IR: ``tapead.grad(f)`` gives the gradient's Function.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from .transforms import sparsity
from .ir import store
from .runtime.binding import FALLBACK, evaluate
from .runtime.state import EvaluationState
from .transforms.kernelspec import ENTRY
from .tracing.record import trace
from .errors import TapeFormatError
from .ir.tape import Tape

# the IR's fields, copied onto a Function (plain attributes: the single-point paths read shapes on every call,
# and the tape is frozen, so the copies never go stale), and its sizes, read through
IR_FIELDS = ("code", "consts", "input_shapes", "param_shape", "outputs", "output_shape", "guards", "maps",
             "assume_finite")
IR_VIEW = ("input_sizes", "n_inputs", "n_params", "n_outputs", "first_const", "first_result", "n_slots", "hash")


_NO_ARGUMENT = object()  # the first argument of a call that passed none (a tape of no arguments)


def _jacobian_shape(fun) -> tuple:
    return fun.output_shape + fun.input_shapes[0]


_HESSIAN = ("hessian_tape", False)  # the key of the dense Hessian's Function in ``state.derived``


def _hessian_shape(fun) -> tuple:
    return fun.input_shapes[0] * 2


def _fast_ok(threads) -> bool:
    """Whether a single-point native call may be tried: ``threads`` is one the Python path accepts (else that
    path raises the error), so the fast path never accepts what the Python path refuses."""
    return threads is None or (type(threads) is int and threads > 0)


def _no_none(outs: tuple) -> bool:
    for o in outs:  # (not ``None in outs``: that compares arrays with ==)
        if o is None:
            return False
    return True


def _lazy(*values) -> bool:
    """Whether an argument is a Dask collection: then the method builds a lazy graph (``tapead.dask_array``)."""
    return any(type(v) in (tuple, list) and _lazy(*v) or hasattr(v, "__dask_graph__") for v in values)


def _on_dask(fun, method: str, args: tuple, **kw):
    from .distributed.dask_array import call
    return call(fun, method, args, **kw)


class Function:
    """A recorded function: evaluate it with methods, transform its ``tape`` with ``tapead.grad`` & co."""

    def __init__(self, tape: Tape, fn: Callable | None = None, on_branch: str = "retape",
                 guard_sites: list | None = None, structured: bool | None = None):
        if not isinstance(tape, Tape):
            raise TypeError(f"a Function evaluates a tapead.Tape, got {type(tape).__name__}")
        # native single-point entries first: a dropped Function frees them before the kernels (and engines)
        # whose code they point into (attributes are released in the order they were set)
        self._entries: list = [None] * len(ENTRY)  # by kernelspec.ENTRY: value first, value_and_gradient next
        self.tape = tape
        for name in IR_FIELDS:
            setattr(self, name, getattr(tape, name))
        self.fn = fn  # the user's function (None: loaded, unpickled or derived; a new path cannot be recorded)
        self.on_branch = on_branch  # what a call does where a guard fails: "retape", "raise" or "forbid"
        self.guard_sites = guard_sites  # each guard's source line, for branch errors
        self.structured = structured  # record's choice of loops, which the other paths are recorded with too
        self.state = EvaluationState()  # kernels, derived tapes, paths...: everything evaluation caches

    def derive(self, tape: Tape) -> "Function":
        """The Function of a tape derived from this one (Jacobian, Hessian...), for the evaluation modules,
        which do not import this one. It has no Python function of its own: where its guards flip, the
        derivative is taken on the path this Function records there (``derivatives.follows_branches``)."""
        return Function(tape)

    def recorded_at(self, args, params) -> "Function":
        """The Python function recorded again at another point: the Function of the path it takes there."""
        tape, sites = trace(self.fn, *args, params=params, on_branch=self.on_branch,
                            assume_finite=self.tape.assume_finite, structured=self.structured)
        return Function(tape, fn=self.fn, on_branch=self.on_branch, guard_sites=sites, structured=self.structured)

    def __len__(self) -> int:
        """The op count: number of instructions."""
        return len(self.tape)

    def __str__(self) -> str:
        return str(self.tape)

    def __repr__(self) -> str:
        return "<Function of " + repr(self.tape)[1:]

    def check(self) -> "Function":
        """Validate the tape (``Tape.check``); returns the Function."""
        self.tape.check()
        return self

    def op_counts(self) -> dict[str, int]:
        """How many instructions of each op the tape holds (a map's body counts once per iteration)."""
        return self.tape.op_counts()

    def slot_name(self, s: int) -> str:
        return self.tape.slot_name(s)

    def replace(self, **changes: Any) -> "Function":
        """A Function of the tape with some IR fields changed (and ``fn``/``on_branch``), with fresh caches."""
        fn = changes.pop("fn", self.fn)
        on_branch = changes.pop("on_branch", self.on_branch)
        return Function(self.tape.replace(**changes), fn=fn, on_branch=on_branch, structured=self.structured)

    def __reduce__(self):
        """A Function pickles as its tape, which pickles as tape-file bytes (``fn`` and kernels are dropped;
        kernels are rebuilt or come from the kernel cache)."""
        return Function, (self.tape,)

    def __setstate__(self, state):
        """Refused: a Function unpickles only as ``Function(tape)``, which derives every field (shapes, sizes,
        caches) from the validated tape; a pickle that sets fields itself could make the kernels read and write
        past the caller's buffers."""
        raise TapeFormatError("a Function unpickles only from its tape (Function(tape)); this pickle sets a "
                              "Function's fields directly, bypassing validation")

    # ---- evaluation (the evaluation modules are imported at call time: they load the backend, llvmlite) ----
    def value(self, x=_NO_ARGUMENT, /, *more, params=None, out=None, threads: int | None = None):
        """f at one point (a float for scalar outputs, else an array) or at a batch of points: ``value(x)``,
        ``value(x, y, ...)`` for several arguments.

        A batch has one more leading axis on every argument (params: batched with it, or shared without it);
        ``threads`` (None: automatic, never slower than one thread; or a positive int) splits long batches;
        a point's result never depends on it.
        """
        # the first argument is named so that one-argument calls reach the native entry without packing and
        # unpacking ``*args`` (a third of the Python cost of a small call)
        entry = self._entries[0]
        if entry is not None and x is not _NO_ARGUMENT and (threads is None or _fast_ok(threads)):
            if self.output_shape == ():
                if out is None:
                    r = entry(x, *more, params) if more else entry(x, params)
                    if r is not FALLBACK:
                        return r
            elif out is not None:
                if (entry(x, *more, params, out) if more else entry(x, params, out)) is not FALLBACK:
                    return out
        args = more if x is _NO_ARGUMENT else (x, *more)
        if _lazy(args, params):
            return _on_dask(self, "value", args, params=params, out=out, threads=threads)
        from .runtime.calls import value
        return value(self, *args, params=params, out=out, threads=threads)

    __call__ = value  # ``f(x)`` is ``f.value(x)``

    def gradient(self, x=_NO_ARGUMENT, /, *more, params=None, out=None, threads: int | None = None):
        """Gradient of a scalar tape: an array shaped like the argument, or a tuple for several arguments.

        ``out=`` (an array, or a tuple of arrays for several arguments) must be float64, C-contiguous,
        writeable and exactly shaped; it is filled in place. Single points with exactly-right float64 arrays
        take a native path that allocates nothing; anything else is converted (or refused) in Python.
        """
        entry = self._entries[1]  # (the first argument is named: see ``value``)
        if entry is not None and x is not _NO_ARGUMENT and (threads is None or _fast_ok(threads)):
            if type(out) is np.ndarray and not more:
                if entry(x, params, None, out) is not FALLBACK:
                    return out
            elif out is None and not more:
                g = np.empty(self.input_shapes[0])
                if entry(x, params, None, g) is not FALLBACK:
                    return g
            elif type(out) is tuple:  # one array per argument (None is the native callable's "skip" only)
                if more and _no_none(out) and entry(x, *more, params, None, *out) is not FALLBACK:
                    return out
            elif out is not None:
                if entry(x, *more, params, None, out) is not FALLBACK:
                    return out
        args = more if x is _NO_ARGUMENT else (x, *more)
        if _lazy(args, params):
            return _on_dask(self, "gradient", args, params=params, out=out, threads=threads)
        from .runtime.calls import gradient
        return gradient(self, *args, params=params, out=out, threads=threads)

    def native(self, kind: str = "gradient"):
        """A compiled Python callable with the kernel's argument order, for the lowest per-call cost.

        ``f = tape.native("gradient")``; ``f(x, None, None, g)`` fills ``g`` (arguments: inputs..., params,
        value_out, grad_outs...; None skips an output). ``tape.native("value")(x, None)`` returns the value.
        Arguments that are not exactly right take the ordinary Python path (conversions, branches, errors).
        """
        from .runtime.calls import native
        return native(self, kind)

    def value_and_gradient(self, *args, params=None, out=None, threads: int | None = None):
        """``(value, gradient)`` computed by one kernel."""
        if _lazy(args, params):
            return _on_dask(self, "value_and_gradient", args, params=params, out=out, threads=threads)
        from .runtime.calls import value_and_gradient
        return value_and_gradient(self, *args, params=params, out=out, threads=threads)

    # ---- derivatives beyond the gradient (tapead.higher, tapead.sparsity) ----------------------------
    def jacobian(self, x=_NO_ARGUMENT, /, *more, params=None, out=None, mode: str = "auto"):
        """Dense Jacobian, shaped ``output_shape + input_shape`` (a tuple of blocks for several arguments).

        ``mode="auto"`` uses forward sweeps when there are no more inputs than outputs, else reverse sweeps;
        ``"forward"``/``"reverse"`` force one.
        """
        if type(out) is np.ndarray and not more and x is not _NO_ARGUMENT and len(self.input_shapes) == 1 and \
                self._fast_derived(("jacobian_blocks_tape", mode), x, params, out, _jacobian_shape):
            return out
        args = more if x is _NO_ARGUMENT else (x, *more)
        if _lazy(args, params):
            return _on_dask(self, "jacobian", args, params=params, out=out, mode=mode)
        from .runtime.derivatives import jacobian
        return jacobian(self, *args, params=params, out=out, mode=mode)

    def hessian(self, x=_NO_ARGUMENT, /, *more, params=None, out=None, weights=None):
        """Dense symmetric Hessian of a scalar tape (forward-over-reverse); ``weights=w``: Hessian of ``w . f``."""
        if type(out) is np.ndarray and weights is None and not more and x is not _NO_ARGUMENT and \
                self._fast_derived(_HESSIAN, x, params, out, _hessian_shape):
            return out
        args = more if x is _NO_ARGUMENT else (x, *more)
        if _lazy(args, params, weights):
            return _on_dask(self, "hessian", args, params=params, out=out, weights=weights)
        from .runtime.derivatives import hessian
        return hessian(self, *args, params=params, out=out, weights=weights)

    def _fast_derived(self, key, x, params, out: np.ndarray, shape) -> bool:
        """Single point through a derived tape's native entry when ``out`` is exactly right (else False).
        ``shape(self)``: the out shape this call takes."""
        hit = self.state.fast_derived.get(key)
        if hit is None:
            d = self.state.derived.get(key)  # (set once per key, never replaced)
            if d is None or d._entries[0] is None:
                return False
            hit = self.state.fast_derived[key] = (d, shape(self), d.output_shape)
        d, expected, output_shape = hit
        entry = d._entries[0]
        if entry is None or out.shape != expected:  # (entries are dropped in a forked child, for example)
            return False
        if expected != output_shape:  # a reshaped view is the same memory only for C-contiguous arrays
            if not out.flags.c_contiguous:
                return False
            out = out.reshape(output_shape)
        return entry(x, params, out) is not FALLBACK

    def hvp(self, *args, v, params=None):
        """Hessian-vector product ``H(x) v`` (forward-over-reverse), without forming ``H``."""
        if _lazy(args, params, v):
            return _on_dask(self, "hvp", args, v=v, params=params)
        from .runtime.derivatives import hvp
        return hvp(self, *args, v=v, params=params)

    def jvp(self, *args, v, params=None):
        """Jacobian-vector product ``J(x) v`` (forward mode)."""
        if _lazy(args, params, v):
            return _on_dask(self, "jvp", args, v=v, params=params)
        from .runtime.derivatives import jvp
        return jvp(self, *args, v=v, params=params)

    def vjp(self, *args, w, params=None):
        """Vector-Jacobian product ``w^T J(x)`` (reverse mode)."""
        if _lazy(args, params, w):
            return _on_dask(self, "vjp", args, w=w, params=params)
        from .runtime.derivatives import vjp
        return vjp(self, *args, w=w, params=params)

    def value_gradient_hessian(self, *args, params=None):
        """``(value, gradient, hessian)`` from one kernel."""
        from .runtime.derivatives import value_gradient_hessian
        return value_gradient_hessian(self, *args, params=params)

    def sparse_jacobian(self, *args, params=None):
        """COO ``(rows, cols, values)`` of the Jacobian, by graph colouring (one sweep per colour)."""
        from .runtime.derivatives import sparse_jacobian
        return sparse_jacobian(self, *args, params=params)

    def sparse_hessian(self, *args, params=None, weights=None):
        """COO ``(rows, cols, values)`` of the Hessian, by colouring (paired Rosenbrock: 2 sweeps)."""
        from .runtime.derivatives import sparse_hessian
        return sparse_hessian(self, *args, params=params, weights=weights)

    def jacobian_sparsity(self):
        """``(rows, cols)`` of the structurally nonzero Jacobian entries (independent of any point)."""
        with self.state.noting_unrolls("jacobian_sparsity"):
            return sparsity.jacobian_sparsity(self.tape)

    def hessian_sparsity(self):
        """``(rows, cols)`` of the structurally nonzero Hessian entries (independent of any point)."""
        with self.state.noting_unrolls("hessian_sparsity"):
            return sparsity.hessian_sparsity(self.tape)

    def assemble_gradient(self, X, C, M: int, params=None, out=None, threads: int | None = None):
        """Scatter-add every element's gradient into a global vector: ``g[C[e, j]] += grad f(X[e])[j]``.

        ``X`` (N, n) element inputs, ``C`` (N, n) integer global indices (validated), ``M`` the global length,
        ``params`` one row per element or shared. Bit-identical for any thread count.
        """
        if _lazy(X, C, params):
            return _on_dask(self, "assemble_gradient", (X, C), M=M, params=params, out=out, threads=threads)
        from .runtime.assemble import assemble_gradient
        return assemble_gradient(self, X, C, M, params=params, out=out, threads=threads)

    def assemble_hessian(self, X, C, M: int, params=None):
        """Global sparse Hessian (stiffness matrix) as COO ``(rows, cols, values)``, duplicates summed; the
        sparsity pattern is computed once per connectivity."""
        if _lazy(X, C, params):
            return _on_dask(self, "assemble_hessian", (X, C), M=M, params=params)
        from .runtime.assemble import assemble_hessian
        return assemble_hessian(self, X, C, M, params=params)

    def assemble_value(self, X, params=None, threads: int | None = None) -> float:
        """Sum of the element values over all elements."""
        if _lazy(X, params):
            return _on_dask(self, "assemble_value", (X,), params=params, threads=threads)
        from .runtime.assemble import assemble_value
        return assemble_value(self, X, params=params, threads=threads)

    def save(self, path) -> "os.PathLike":
        """Write the tape to ``path`` in tapead's versioned, non-executable format (see ``tapead.load``)."""
        return store.save(self.tape, path)

    def export(self, directory, name: str, *, cpu: str | None = None, hessian: bool = False) -> dict:
        """Write ``name.o``, ``name.h``, ``name.ll`` (and ``name.so`` if a C compiler exists) to ``directory``.

        The header documents the C ABI: ``name_value``, ``name_gradient``, ``name_*_batch`` (one contiguous row
        per point), status 0 or the number of points whose guards failed. ``cpu`` (e.g. 'x86-64') targets
        another CPU than the host's.
        """
        from .runtime.export import export
        return export(self.tape, directory, name, cpu=cpu, hessian=hessian)

    @property
    def stats(self) -> dict:
        """Branch statistics (paths known, re-records, compiles of other paths, points they answered); under
        ``"kernels"``, each compiled kernel's optimisation level (0 until a background O2 build is swapped in),
        its op count and compile seconds; under ``"unrolled"``, every time this process unrolled a tape with
        loops into scalar instructions to build one of them: ``{"for": the derived tape or kernel, "why": the
        step that needed the scalar form, "loops": how many, "rows": the scalar rows they became}``."""
        from .runtime.branches import stats
        from .runtime.calls import kernel_levels, unroll_notes
        return dict(stats(self), kernels=kernel_levels(self), unrolled=unroll_notes(self))

    def evaluate(self, *args, params=None):
        """The numpy reference interpreter (no compilation): the oracle the kernels are tested against."""
        return evaluate(self, *args, params=params)

    def compile(self) -> "Function":
        """Compile the kernels now rather than on first use; returns the tape."""
        from .runtime.calls import compile
        return compile(self)


def _read_through(name: str) -> property:
    return property(lambda self: getattr(self.tape, name), doc=f"The tape's ``{name}``.")


for _name in IR_VIEW:
    setattr(Function, _name, _read_through(_name))
