"""The tape: a small, static, immutable IR of fixed-size scalar instruction records.

Slots are numbered in one space: first the inputs (every argument flattened, in order), then the params,
then the constant pool, then one fresh slot per instruction (SSA). An instruction record is four int32s,
``(op code, arg0, arg1, arg2)``, unused arguments -1; instruction ``i`` writes slot ``first_result + i``.
Outputs name slots (any kind). Guards are ``(slot, expected)`` pairs: comparison results that steered Python
control flow while recording and must take the same value for the tape to describe the function.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import TapeFormatError
from .listing import listing, op_counts

Shape = tuple[int, ...]
FALLBACK = object()  # what a native entry point returns when the Python path must handle a call
ENTRY = {"value": 0, "value_and_gradient": 1}  # index of each kind's native entry point in Tape._entries


def _frozen(a: np.ndarray, dtype) -> np.ndarray:
    src = np.asarray(a)
    a = np.array(src, dtype=dtype, copy=True)
    if dtype is np.int32 and src.dtype != np.int32 and a.size and not np.array_equal(a, src):
        raise ValueError("an index or op code does not fit in a 32-bit integer")  # never wrapped silently
    a.setflags(write=False)
    return a


def _size(shape: Shape) -> int:
    return int(math.prod(shape))


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


def _on_dask(tape, method: str, args: tuple, **kw):
    from .dask_array import call
    return call(tape, method, args, **kw)


@dataclass(frozen=True, eq=False)
class Tape:
    """A recorded function: evaluate it with methods, transform it with ``tapead.grad`` & co.

    The IR fields are read-only; ``fn`` (the recorded Python function, if any) and the private cache of
    compiled kernels and derived tapes ride along without changing what the tape computes.
    """

    code: np.ndarray
    consts: np.ndarray
    input_shapes: tuple[Shape, ...]
    param_shape: Shape | None
    outputs: np.ndarray
    output_shape: Shape
    guards: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    maps: tuple = ()  # structure.Map records, run by the MAP_ROW rows of ``code`` (see tapead.structure)
    fn: Callable | None = field(default=None, repr=False)
    on_branch: str = field(default="retape", repr=False)  # what a call does when a guard fails
    assume_finite: bool = field(default=False, repr=False)  # transforms may fold 0 * x to 0
    # native single-point entries: declared before the cache so that a dropped tape frees them before the
    # kernels (and engines) whose code they point into
    _entries: list = field(default_factory=lambda: [None, None], repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        try:
            self._normalise()
        except (TypeError, ValueError, OverflowError) as e:
            raise TapeFormatError(f"malformed tape fields: {e}") from None

    def _normalise(self) -> None:
        object.__setattr__(self, "code", _frozen(np.reshape(self.code, (-1, 4)), np.int32))
        object.__setattr__(self, "consts", _frozen(self.consts, np.float64))
        object.__setattr__(self, "outputs", _frozen(np.ravel(self.outputs), np.int32))
        object.__setattr__(self, "guards", _frozen(np.reshape(self.guards, (-1, 2)), np.int32))
        object.__setattr__(self, "input_shapes", tuple(tuple(int(d) for d in s) for s in self.input_shapes))
        if self.param_shape is not None:
            object.__setattr__(self, "param_shape", tuple(int(d) for d in self.param_shape))
        object.__setattr__(self, "output_shape", tuple(int(d) for d in self.output_shape))
        object.__setattr__(self, "maps", tuple(self.maps))

    # ---- sizes and slot ranges ----------------------------------------------------------------
    @property
    def input_sizes(self) -> tuple[int, ...]:
        return tuple(_size(s) for s in self.input_shapes)

    @property
    def n_inputs(self) -> int:
        return sum(self.input_sizes)

    @property
    def n_params(self) -> int:
        return 0 if self.param_shape is None else _size(self.param_shape)

    @property
    def n_outputs(self) -> int:
        return len(self.outputs)

    @property
    def first_const(self) -> int:
        return self.n_inputs + self.n_params

    @property
    def first_result(self) -> int:
        return self.first_const + len(self.consts)

    @property
    def n_slots(self) -> int:
        return self.first_result + len(self.code)

    def __len__(self) -> int:
        """The op count: number of instructions."""
        return len(self.code)

    # ---- validation, identity, listing ----------------------------------------------------------
    def check(self) -> "Tape":
        """Validate every field, index, op code, arity and size; raise TapeFormatError (and nothing else, whatever
        the fields hold). Runs before native code or the interpreter touch a tape (see ``tapead.validate``)."""
        from .validate import check
        check(self)
        return self

    @property
    def hash(self) -> str:
        """Content hash of the IR (kernel caches key on it)."""
        h = self._cache.get("hash")
        if h is None:
            m = hashlib.sha256()
            m.update(repr((self.input_shapes, self.param_shape, self.output_shape)).encode())
            for a in (self.code, self.consts, self.outputs, self.guards):
                m.update(np.ascontiguousarray(a).tobytes())
                m.update(b"|")
            for mp in self.maps:
                for part in mp.digest_parts():
                    m.update(part)
                    m.update(b"|")
            h = self._cache["hash"] = m.hexdigest()
        return h

    def slot_name(self, s: int) -> str:
        """How the listing shows slot ``s``: a constant's value, or ``%s``."""
        if self.first_const <= s < self.first_result:
            return repr(float(self.consts[s - self.first_const]))
        return f"%{s}"

    def __str__(self) -> str:
        return listing(self)

    def __repr__(self) -> str:
        return (f"<Tape {len(self)} ops, inputs {list(self.input_shapes)}, params {self.param_shape}, "
                f"output {self.output_shape}>")

    def op_counts(self) -> dict[str, int]:
        """How many instructions of each op the tape holds (a map's body counts once per iteration)."""
        return op_counts(self)

    def replace(self, **changes: Any) -> "Tape":
        """A new tape with some fields changed (and a fresh cache)."""
        fields = dict(code=self.code, consts=self.consts, input_shapes=self.input_shapes,
                      param_shape=self.param_shape, outputs=self.outputs, output_shape=self.output_shape,
                      guards=self.guards, maps=self.maps, fn=self.fn, on_branch=self.on_branch,
                      assume_finite=self.assume_finite)
        fields.update(changes)
        return Tape(**fields)

    # ---- evaluation (implemented in tapead.calls; imported here at call time to keep modules layered) ----
    def __call__(self, *args, params=None, out=None, threads: int | None = None):
        """Same as ``value``."""
        return self.value(*args, params=params, out=out, threads=threads)

    def value(self, *args, params=None, out=None, threads: int | None = None):
        """f at one point (a float for scalar outputs, else an array) or at a batch of points.

        A batch has one more leading axis on every argument (params: batched with it, or shared without it);
        ``threads`` (None: automatic, never slower than one thread; or a positive int) splits long batches;
        a point's result never depends on it.
        """
        entry = self._entries[0]
        if entry is not None and (threads is None or _fast_ok(threads)):
            if self.output_shape == ():
                if out is None:
                    r = entry(*args, params)
                    if r is not FALLBACK:
                        return r
            elif out is not None:
                if entry(*args, params, out) is not FALLBACK:
                    return out
        if _lazy(args, params):
            return _on_dask(self, "value", args, params=params, out=out, threads=threads)
        from .calls import value
        return value(self, *args, params=params, out=out, threads=threads)

    def gradient(self, *args, params=None, out=None, threads: int | None = None):
        """Gradient of a scalar tape: an array shaped like the argument, or a tuple for several arguments.

        ``out=`` (an array, or a tuple of arrays for several arguments) must be float64, C-contiguous,
        writeable and exactly shaped; it is filled in place. Single points with exactly-right float64 arrays
        take a native path that allocates nothing; anything else is converted (or refused) in Python.
        """
        entry = self._entries[1]
        if entry is not None and (threads is None or _fast_ok(threads)):
            if out is None and len(args) == 1:
                g = np.empty(self.input_shapes[0])
                if entry(args[0], params, None, g) is not FALLBACK:
                    return g
            elif type(out) is tuple:  # one array per argument (None is the native callable's "skip" only)
                if len(args) > 1 and _no_none(out) and entry(*args, params, None, *out) is not FALLBACK:
                    return out
            elif out is not None:
                if entry(*args, params, None, out) is not FALLBACK:
                    return out
        if _lazy(args, params):
            return _on_dask(self, "gradient", args, params=params, out=out, threads=threads)
        from .calls import gradient
        return gradient(self, *args, params=params, out=out, threads=threads)

    def native(self, kind: str = "gradient"):
        """A compiled Python callable with the kernel's argument order, for the lowest per-call cost.

        ``f = tape.native("gradient")``; ``f(x, None, None, g)`` fills ``g`` (arguments: inputs..., params,
        value_out, grad_outs...; None skips an output). ``tape.native("value")(x, None)`` returns the value.
        Arguments that are not exactly right take the ordinary Python path (conversions, branches, errors).
        """
        from .calls import native
        return native(self, kind)

    def value_and_gradient(self, *args, params=None, out=None, threads: int | None = None):
        """``(value, gradient)`` computed by one kernel."""
        if _lazy(args, params):
            return _on_dask(self, "value_and_gradient", args, params=params, out=out, threads=threads)
        from .calls import value_and_gradient
        return value_and_gradient(self, *args, params=params, out=out, threads=threads)

    # ---- derivatives beyond the gradient (tapead.higher, tapead.sparsity) ----------------------------
    def jacobian(self, *args, params=None, out=None, mode: str = "auto"):
        """Dense Jacobian, shaped ``output_shape + input_shape`` (a tuple of blocks for several arguments).

        ``mode="auto"`` uses forward sweeps when there are no more inputs than outputs, else reverse sweeps;
        ``"forward"``/``"reverse"`` force one.
        """
        if out is not None and len(args) == 1 and type(out) is np.ndarray and \
                self._fast_derived(("jacobian_blocks_tape", mode), args[0], params, out,
                                   self.output_shape + self.input_shapes[0]):
            return out
        if _lazy(args, params):
            return _on_dask(self, "jacobian", args, params=params, out=out, mode=mode)
        from .higher import jacobian
        return jacobian(self, *args, params=params, out=out, mode=mode)

    def hessian(self, *args, params=None, out=None, weights=None):
        """Dense symmetric Hessian of a scalar tape (forward-over-reverse); ``weights=w``: Hessian of ``w . f``."""
        if out is not None and weights is None and len(args) == 1 and type(out) is np.ndarray and \
                self._fast_derived(("hessian_tape", False), args[0], params, out, self.input_shapes[0] * 2):
            return out
        if _lazy(args, params, weights):
            return _on_dask(self, "hessian", args, params=params, out=out, weights=weights)
        from .higher import hessian
        return hessian(self, *args, params=params, out=out, weights=weights)

    def _fast_derived(self, key, x, params, out: np.ndarray, shape) -> bool:
        """Single point through a derived tape's native entry when ``out`` is exactly right (else False)."""
        d = self._cache.get(key)
        entry = None if d is None else d._entries[0]
        if entry is None or out.shape != shape:
            return False
        if out.shape != d.output_shape:  # a reshaped view is the same memory only for C-contiguous arrays
            if not out.flags.c_contiguous:
                return False
            out = out.reshape(d.output_shape)
        return entry(x, params, out) is not FALLBACK

    def hvp(self, *args, v, params=None):
        """Hessian-vector product ``H(x) v`` (forward-over-reverse), without forming ``H``."""
        if _lazy(args, params, v):
            return _on_dask(self, "hvp", args, v=v, params=params)
        from .higher import hvp
        return hvp(self, *args, v=v, params=params)

    def jvp(self, *args, v, params=None):
        """Jacobian-vector product ``J(x) v`` (forward mode)."""
        if _lazy(args, params, v):
            return _on_dask(self, "jvp", args, v=v, params=params)
        from .higher import jvp
        return jvp(self, *args, v=v, params=params)

    def vjp(self, *args, w, params=None):
        """Vector-Jacobian product ``w^T J(x)`` (reverse mode)."""
        if _lazy(args, params, w):
            return _on_dask(self, "vjp", args, w=w, params=params)
        from .higher import vjp
        return vjp(self, *args, w=w, params=params)

    def value_gradient_hessian(self, *args, params=None):
        """``(value, gradient, hessian)`` from one kernel."""
        from .higher import value_gradient_hessian
        return value_gradient_hessian(self, *args, params=params)

    def sparse_jacobian(self, *args, params=None):
        """COO ``(rows, cols, values)`` of the Jacobian, by graph colouring (one sweep per colour)."""
        from .sparsity import sparse_jacobian
        return sparse_jacobian(self, *args, params=params)

    def sparse_hessian(self, *args, params=None, weights=None):
        """COO ``(rows, cols, values)`` of the Hessian, by colouring (paired Rosenbrock: 2 sweeps)."""
        from .sparsity import sparse_hessian
        return sparse_hessian(self, *args, params=params, weights=weights)

    def jacobian_sparsity(self):
        """``(rows, cols)`` of the structurally nonzero Jacobian entries (independent of any point)."""
        from .sparsity import jacobian_sparsity
        return jacobian_sparsity(self)

    def hessian_sparsity(self):
        """``(rows, cols)`` of the structurally nonzero Hessian entries (independent of any point)."""
        from .sparsity import hessian_sparsity
        return hessian_sparsity(self)

    def assemble_gradient(self, X, C, M: int, params=None, out=None, threads: int | None = None):
        """Scatter-add every element's gradient into a global vector: ``g[C[e, j]] += grad f(X[e])[j]``.

        ``X`` (N, n) element inputs, ``C`` (N, n) integer global indices (validated), ``M`` the global length,
        ``params`` one row per element or shared. Bit-identical for any thread count.
        """
        if _lazy(X, C, params):
            return _on_dask(self, "assemble_gradient", (X, C), M=M, params=params, out=out, threads=threads)
        from .assemble import assemble_gradient
        return assemble_gradient(self, X, C, M, params=params, out=out, threads=threads)

    def assemble_hessian(self, X, C, M: int, params=None):
        """Global sparse Hessian (stiffness matrix) as COO ``(rows, cols, values)``, duplicates summed; the
        sparsity pattern is computed once per connectivity."""
        if _lazy(X, C, params):
            return _on_dask(self, "assemble_hessian", (X, C), M=M, params=params)
        from .assemble import assemble_hessian
        return assemble_hessian(self, X, C, M, params=params)

    def assemble_value(self, X, params=None, threads: int | None = None) -> float:
        """Sum of the element values over all elements."""
        if _lazy(X, params):
            return _on_dask(self, "assemble_value", (X,), params=params, threads=threads)
        from .assemble import assemble_value
        return assemble_value(self, X, params=params, threads=threads)

    def save(self, path) -> "os.PathLike":
        """Write the tape to ``path`` in tapead's versioned, non-executable format (see ``tapead.load``)."""
        from .store import save
        return save(self, path)

    def export(self, directory, name: str, *, cpu: str | None = None, hessian: bool = False) -> dict:
        """Write ``name.o``, ``name.h``, ``name.ll`` (and ``name.so`` if a C compiler exists) to ``directory``.

        The header documents the C ABI: ``name_value``, ``name_gradient``, ``name_*_batch`` (one contiguous row
        per point), status 0 or the number of points whose guards failed. ``cpu`` (e.g. 'x86-64') targets
        another CPU than the host's.
        """
        from .export import export
        return export(self, directory, name, cpu=cpu, hessian=hessian)

    def __reduce__(self):
        """Tapes pickle through the safe file format (kernels are rebuilt or come from the kernel cache)."""
        from .store import tape_reduce
        return tape_reduce(self)

    def __setstate__(self, state):
        """Refused: tapead pickles a tape as tape-file bytes only, so a pickle setting fields directly is crafted."""
        raise TapeFormatError("a tape unpickles only from the tape file format (tapead.store.from_bytes); this "
                              "pickle sets a tape's fields directly, bypassing validation")

    @property
    def stats(self) -> dict:
        """Branch statistics (paths known, re-records, compiles of other paths, points they answered) and, under
        ``"kernels"``, each compiled kernel's optimisation level (0 until a background O2 build is swapped in),
        its op count and compile seconds."""
        from .branches import stats
        from .calls import kernel_levels
        return dict(stats(self), kernels=kernel_levels(self))

    def evaluate(self, *args, params=None):
        """The numpy reference interpreter (no compilation): the oracle the kernels are tested against."""
        from .binding import evaluate
        return evaluate(self, *args, params=params)

    def compile(self) -> "Tape":
        """Compile the kernels now rather than on first use; returns the tape."""
        from .calls import compile
        return compile(self)
