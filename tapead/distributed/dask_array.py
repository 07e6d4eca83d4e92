"""Tape methods on Dask arrays: lazy graphs of one task per chunk that ship the tape, never the Python function.

``tape.gradient(X)`` with ``X`` a ``dask.array.Array`` of points (leading axis chunked) builds a graph and
returns a dask array; nothing runs until it is computed. The work of a call is split as follows:

- on the client, once: the derived tape the method needs (gradient, Jacobian, Hessian, ... tapes) is made and
  written in the tape file format; it goes into the graph as one literal key (a ``worker.Shipment``) that every
  task depends on, so the scheduler moves it to each worker once;
- on a worker, per task: ``tapead.worker`` loads the shipment once per process (a memo keyed by content hash,
  kernels compiled once, or read from the disk cache) and runs the same ``Tape`` method a local call runs on its
  chunk. Results are therefore bit for bit those of one process; tasks are pure, so Dask's retries are safe.

Batched arguments must share the leading chunks (numpy arguments join the chunks of the dask ones; recorded axes
split into several chunks are rechunked whole). Extra arrays (``params``, ``v``, ``w``, ``weights``) are per point
(same leading chunks) or shared (one chunk, sent once). Assemblies reduce per-chunk partials in a fixed tree.
Imported only when a Dask array reaches a tape method; the rest of tapead never needs Dask.
"""
from __future__ import annotations

import hashlib
import math
from importlib import metadata

import dask
import dask.array as da
import numpy as np
from dask.layers import ArrayBlockIdDep, ArraySliceDep

from ..transforms import ad, higher
from ..ir import store
from . import worker
from ..runtime.branches import program
from ..runtime.derivatives import derived
from ..runtime.calls import require_scalar_output
from ..backend.custom import REGISTERED
from ..errors import InputError
from ..table.ops import BY_CODE
from ..ir.structure import op_codes

INSTALL_PAIR = "pip install -U 'dask[array,distributed]>=2024.8.0'"


def dask_pair_error() -> str | None:
    """Why the installed dask and distributed cannot work together, or None when they match.

    distributed pins dask to its own release; a resolver given the two names separately can still pair a new dask
    with a years-old distributed, which then fails deep inside an import. Checked from the package metadata, so
    asking costs no import of distributed.
    """
    try:
        dist = metadata.version("distributed")
    except metadata.PackageNotFoundError:
        return None                      # local schedulers work without distributed
    core = metadata.version("dask")
    if dist.split("+")[0] != core.split("+")[0]:
        return (f"dask {core} is installed with distributed {dist}: distributed must be the same release as dask; "
                f"install the matching pair with: {INSTALL_PAIR}")
    return None


_PAIR = dask_pair_error()
if _PAIR is not None:
    raise ImportError(_PAIR)

SPLIT_EVERY = 8  # partials summed per node of an assembly's reduction tree
_THREADED = ("value", "gradient", "value_and_gradient", "assemble_gradient", "assemble_value")


def is_lazy(value) -> bool:
    """Whether ``value`` (or an element of a tuple/list of them) is a Dask collection."""
    if isinstance(value, (tuple, list)):
        return any(is_lazy(v) for v in value)
    return dask.is_dask_collection(value)


# ---- what a method needs: its derived tape and the shapes of its outputs -------------------------------------
def _derived(tape, method: str, kw: dict) -> tuple:
    """(cache key, builder) of the derived tape ``method`` reads from ``tape.derived``, or for the gradient the
    kernel kind whose tape it compiles (``("derived", kind)``, no builder: ``branches.program``), or (None, None)."""
    if method in ("gradient", "value_and_gradient", "assemble_gradient"):
        require_scalar_output(tape, method)
        return ("derived", "value_and_gradient"), None
    if method == "jacobian":
        mode = kw.get("mode", "auto")
        higher.resolve_outputs(tape.tape, mode)
        return ("jacobian_blocks_tape", mode), lambda: higher.jacobian_blocks_tape(tape.tape, mode)
    if method in ("hessian", "assemble_hessian"):
        w = kw.get("weights") is not None
        return ("hessian_tape", w), lambda: higher.hessian_tape(tape.tape, w)
    if method == "hvp":
        return ("hvp_tape",), lambda: higher.hvp_tape(tape.tape)
    if method == "jvp":
        return ("jvp_tape",), lambda: ad.jvp(tape.tape)
    if method == "vjp":
        return ("vjp_tape",), lambda: ad.vjp(tape.tape)
    if method == "assemble_value" and tape.n_outputs != 1:
        raise InputError("assemble_value needs a scalar tape")
    return None, None


def _structure(tape, method: str):
    """Per-point shapes of the method's outputs: a tuple is one array's shape, a list a tuple of results."""
    s, out = list(tape.input_shapes), tape.output_shape

    def per_arg(shapes):
        return shapes[0] if len(shapes) == 1 else list(shapes)
    return {"value": out, "jvp": out, "gradient": per_arg(s), "hvp": per_arg(s), "vjp": per_arg(s),
            "value_and_gradient": [out, per_arg(s)], "jacobian": per_arg([out + a for a in s]),
            "hessian": s[0] + s[0] if len(s) == 1 else [[a + b for b in s] for a in s]}[method]


def _used_custom_ops(*tapes) -> tuple:
    names = sorted({BY_CODE[c].name for t in tapes for c in op_codes(t)})
    return tuple((n, REGISTERED[n].fn.__module__) for n in names if n in REGISTERED)


def shipment(tape, method: str, kw: dict):
    """The graph key holding everything a worker needs for ``method``: made once per tape and method."""
    key, build = _derived(tape, method, kw)
    hit = tape.state.shipments.get(key)
    if hit is None:
        if key is None:
            d = None
        elif key[0] == "derived":  # the gradient kernel's tape
            d = program(tape, key[1])
        else:
            d = derived(tape, key, build).tape
        data = store.to_bytes(tape.tape)
        extra = None if d is None else store.to_bytes(d)
        s = worker.Shipment(data, key, extra, _used_custom_ops(tape.tape, *([d] if d is not None else [])),
                            type(tape))
        digest = hashlib.sha256(data + repr(key).encode() + (extra or b"")).hexdigest()[:32]
        hit = tape.state.shipments[key] = dask.delayed(s, pure=True, traverse=False, name="tapead-tape-" + digest)
    return hit


# ---- arguments -----------------------------------------------------------------------------------------------
def _dtype_ok(a, what: str, kinds: str = "fiu") -> None:
    dtype = a.dtype if dask.is_dask_collection(a) else np.asarray(a).dtype
    if dtype.kind not in kinds:
        raise InputError(f"{what}: dtype {dtype} is not accepted (expected "
                         + ("integers" if kinds == "iu" else "floats or integers") + ")")


def _whole_trailing(x):
    """The recorded axes of a batched dask array in one chunk each (rechunked if they were split)."""
    if any(len(c) > 1 for c in x.chunks[1:]):
        x = x.rechunk({d: -1 for d in range(1, x.ndim)})
    return x


class _Batch:
    """The leading chunks every batched argument must share, and the arguments converted to them."""

    def __init__(self, values: list):
        first = next((v for v in values if dask.is_dask_collection(v)), None)
        self.chunks = None if first is None else first.chunks[0]

    def batched(self, a, shape: tuple, what: str):
        """``a`` as a dask array ``(N,) + shape`` with the batch's leading chunks, else an InputError."""
        if not (np.ndim(a) == len(shape) + 1 and tuple(np.shape(a)[1:]) == tuple(shape)):
            raise InputError(f"{what}: shape {np.shape(a)}; expected (N,) + {shape} for a batch of N points (a "
                             "dask array chunked along its leading axis)")
        if dask.is_dask_collection(a):
            if a.chunks[0] != self.chunks:
                raise InputError(f"{what}: its leading chunks {a.chunks[0]} differ from the first argument's "
                                 f"{self.chunks}: rechunk it with .rechunk({{0: {self.chunks}}})")
            return _whole_trailing(a)
        a = np.asarray(a)
        if self.chunks is None:
            self.chunks = (a.shape[0],)
        if any(math.isnan(c) for c in self.chunks) or sum(self.chunks) != a.shape[0]:
            raise InputError(f"{what}: a numpy array of {a.shape[0]} points cannot join dask chunks "
                             f"{self.chunks}: pass it as a dask array")
        return da.from_array(a, chunks=(self.chunks,) + tuple(a.shape[1:]))

    def extra(self, a, shape: tuple, what: str):
        """A per-point extra (same chunks as the batch) or a shared one (one chunk), with its kind."""
        if tuple(np.shape(a)) == tuple(shape):
            x = a if dask.is_dask_collection(a) else da.from_array(np.asarray(a), chunks=-1)
            return (x.rechunk(-1) if any(len(c) > 1 for c in x.chunks) else x), False
        if not (np.ndim(a) == len(shape) + 1 and tuple(np.shape(a)[1:]) == tuple(shape)):
            raise InputError(f"{what}: shape {np.shape(a)}; expected {shape} (shared by every point) or "
                             f"(N,) + {shape} (one per point, chunked like the batch)")
        return self.batched(a, shape, what), True


def _arguments(tape, method: str, args: tuple, kw: dict) -> tuple:
    """(batch, [(dask array, per point?, layout name)]) for the method's array arguments, checked."""
    assembly = method.startswith("assemble_")
    shapes = list(tape.input_shapes)
    if assembly and (len(shapes) != 1 or tape.n_outputs != 1):
        raise InputError("assembly needs a scalar tape with one argument (the element's local inputs)")
    expected = shapes[:1] + ([None] if method != "assemble_value" else []) if assembly else shapes
    if len(args) != len(expected):
        raise InputError(f"expected {len(expected)} argument(s), got {len(args)}")
    extras = [(k, kw[k]) for k in ("params", "weights", "w") if kw.get(k) is not None]
    if "v" in kw:
        vs = (kw["v"],) if len(shapes) == 1 else kw["v"]
        if not isinstance(vs, (tuple, list)) or len(vs) != len(shapes):
            raise InputError(f"v: expected a tuple of {len(shapes)} arrays (one per argument)")
        extras += [(f"v{i}", v) for i, v in enumerate(vs)]
    for v in list(args) + [v for _, v in extras]:
        if dask.is_dask_collection(v) and not isinstance(v, da.Array):
            raise InputError(f"tape methods take dask arrays, not {type(v).__name__}: convert with "
                             "dask.array.from_delayed or .to_dask_array()")
    b = _Batch(list(args) + [v for _, v in extras])  # the first dask array (arguments first) sets the chunks
    out = []
    for i, (a, s) in enumerate(zip(args, expected)):
        what = "X" if assembly and i == 0 else "C" if assembly else f"argument {i}"
        if s is None:  # connectivity: one row of integer global indices per element
            _dtype_ok(a, "connectivity C", "iu")
            s = (tape.n_inputs,) if np.ndim(a) == 2 else shapes[0]
        else:
            _dtype_ok(a, what)
        out.append((b.batched(a, s, what), True, "x"))
    if (tape.param_shape is None) != (kw.get("params") is None):
        raise InputError("this tape was recorded without params; pass params= only to tapes recorded with them"
                         if tape.param_shape is None else f"this tape reads params of shape {tape.param_shape}: "
                         "pass params=")
    per_point = {"params": tape.param_shape, "weights": tape.output_shape, "w": tape.output_shape}
    for name, v in extras:
        _dtype_ok(v, name)
        s = per_point[name] if name in per_point else shapes[int(name[1:])]
        what = name if name[0] != "v" else "v" if len(shapes) == 1 else f"v[{name[1:]}]"
        out.append(b.extra(v, s, what) + (name,))
    return b, out


# ---- graphs --------------------------------------------------------------------------------------------------
def _blockwise(fn, out_ind: tuple, fixed: list, arrays: list, chunks, **kw):
    """``fn(*fixed, *blocks, block_id, point_range)`` once per chunk of the batch (index 'i')."""
    pairs: list = []
    for v in fixed:
        pairs += [v, None]
    for j, (x, batched, _) in enumerate(arrays):
        pairs += [x, (("i",) if batched else ()) + tuple(f"in{j}.{d}" for d in range(x.ndim - batched))]
    pairs += [ArrayBlockIdDep((chunks,)), ("i",)]
    pairs += [None, None] if any(math.isnan(c) for c in chunks) else [ArraySliceDep((chunks,)), ("i",)]
    return da.blockwise(fn, out_ind, *pairs, concatenate=True, align_arrays=False, **kw)


def _array(fn, shape: tuple, fixed: list, arrays: list, chunks, name: str):
    ind = ("i",) + tuple(f"out{d}" for d in range(len(shape)))
    return _blockwise(fn, ind, fixed, arrays, chunks, new_axes=dict(zip(ind[1:], shape)), dtype=np.float64,
                      meta=np.empty((0,) * len(ind)), token=name)


def _leaves(structure) -> list:
    return [leaf for s in structure for leaf in _leaves(s)] if isinstance(structure, list) else [structure]


def _rebuild(structure, leaves: list):
    if isinstance(structure, list):
        return tuple(_rebuild(s, leaves) for s in structure)
    return leaves.pop(0)


def call(tape, method: str, args: tuple, **kw):
    """``tape.<method>(*args, **kw)`` with Dask arrays: the same results, as dask arrays, computed lazily."""
    if kw.pop("out", None) is not None:
        raise InputError("out= cannot be filled by a lazy computation: call without out= and store the dask "
                         "result (e.g. result.store(target) or result.compute())")
    threads = kw.pop("threads", None)
    if threads is not None and (type(threads) is not int or threads < 1):
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    options = {k: kw[k] for k in ("mode", "M") if k in kw}
    if method in _THREADED:
        options["threads"] = 1 if threads is None else threads  # Dask runs the chunks in parallel already
    if method.startswith("assemble_"):
        return _assemble(tape, method, args, kw, options)
    b, arrays = _arguments(tape, method, args, kw)
    s = shipment(tape, method, kw)
    layout = tuple(name for _, _, name in arrays)
    leaves = _leaves(_structure(tape, method))
    name = "tapead-" + method
    if len(leaves) == 1:
        return _array(worker.block, leaves[0], [s, method, layout, options, False], arrays, b.chunks, name)
    sizes = [math.prod(leaf) for leaf in leaves]
    flat = _array(worker.block, (sum(sizes),), [s, method, layout, options, True], arrays, b.chunks, name)
    pieces, off = [], 0
    for leaf, size in zip(leaves, sizes):
        ind = ("i",) + tuple(f"out{d}" for d in range(len(leaf)))
        pieces.append(da.blockwise(worker.piece, ind, flat, ("i", "flat"), off, None, size, None, leaf, None,
                                   new_axes=dict(zip(ind[1:], leaf)), concatenate=True, dtype=np.float64,
                                   meta=np.empty((0,) * len(ind)), token=f"{name}-part"))
        off += size
    return _rebuild(_structure(tape, method), pieces)


def _assemble(tape, method: str, args: tuple, kw: dict, options: dict):
    """Assemblies over chunked elements: per-chunk partials (one task each), summed in a fixed tree."""
    if method != "assemble_value":
        M = kw.get("M")
        if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 0:
            raise InputError(f"M (the global vector's length) must be a non-negative integer, got {M!r}")
        options["M"] = int(M)
    b, arrays = _arguments(tape, method, args, kw)
    s = shipment(tape, method, kw)
    fixed = [s, method, tuple(name for _, _, name in arrays), options]
    name = "tapead-" + method
    if method == "assemble_gradient":
        parts = _blockwise(worker.assembly_part, ("i", "m"), fixed, arrays, b.chunks, new_axes={"m": options["M"]},
                           adjust_chunks={"i": 1}, dtype=np.float64, meta=np.empty((0, 0)), token=name)
        return parts.sum(axis=0, split_every=SPLIT_EVERY)
    if method == "assemble_value":
        parts = _blockwise(worker.assembly_part, ("i",), fixed, arrays, b.chunks, adjust_chunks={"i": 1},
                           dtype=np.float64, meta=np.empty((0,)), token=name)
        return parts.sum(split_every=SPLIT_EVERY)
    parts = _blockwise(worker.assembly_part, ("i",), fixed, arrays, b.chunks, adjust_chunks={"i": 1},
                       dtype=object, meta=np.empty((0,), object), token=name)
    nodes = parts.to_delayed(optimize_graph=False).ravel().tolist()
    while len(nodes) > 1:
        nodes = [dask.delayed(worker.merge_coo, pure=True)(*nodes[k:k + SPLIT_EVERY])
                 for k in range(0, len(nodes), SPLIT_EVERY)]
    final = dask.delayed(worker.coo, pure=True, nout=3)(nodes[0], options["M"])
    return tuple(da.from_delayed(final[k], shape=(math.nan,), dtype=dt, meta=np.empty((0,), dt))
                 for k, dt in enumerate((np.int64, np.int64, np.float64)))
