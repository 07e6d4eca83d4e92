"""Finite-element assembly: per-element gradients scatter-added into one global vector, in native code.

Elements are processed in blocks: the element gradients of a block are computed by the batch kernel (split
across threads), then added into the global vector by one native loop in element order. The order of every
addition is therefore fixed by the element numbering alone, so any thread count gives the same bits.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import threading

import numpy as np

from ..arrays import as_float_array, check_aliasing, check_out
from .calls import bind, gradient, value
from ..errors import InputError
from ..backend.batchloops import scatter_add
from ..backend.jit import build_engine

BLOCK = 4096  # elements per block: bounds the workspace, amortises thread start-up
MAX_BYTES = 1 << 40  # a global vector larger than this (or than the machine's memory) is refused
HESSIAN_M = 1 << 31  # assemble_hessian numbers entries row * M + col in int64
_lock = threading.Lock()
_scatter = None
_local = threading.local()



def _scatter_fn():
    """``out[idx[i]] += vals[i]`` for i in order, compiled once per process."""
    global _scatter
    with _lock:
        if _scatter is None:
            engine = build_engine(scatter_add(), 2)
            fn = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
                engine.get_function_address("tapead_scatter"))
            _scatter = (engine, fn)
    return _scatter[1]


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]  # (arr.ctypes would make a reference cycle per call)


def _connectivity(tape, C, n: int, M) -> np.ndarray:
    if len(tape.input_shapes) != 1 or tape.n_outputs != 1:
        raise InputError("assembly needs a scalar tape with one argument (the element's local inputs)")
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 0:
        raise InputError(f"M (the global vector's length) must be a non-negative integer, got {M!r}")
    if int(M) * 8 > _memory_limit():
        raise InputError(f"M = {int(M)}: a global vector of {int(M) * 8:,} bytes is more than this machine can "
                         f"hold (limit {_memory_limit():,} bytes)")
    c = np.asarray(C)
    if c.dtype.kind not in "iu":
        raise InputError(f"connectivity C must be an integer array, got dtype {c.dtype}")
    width = tape.n_inputs
    if c.shape not in ((n, width), (n,) + tape.input_shapes[0]):
        raise InputError(f"connectivity C has shape {c.shape}; expected {(n, width)} (one row of global "
                         "indices per element, one index per local input)")
    c = np.ascontiguousarray(c.reshape(n, width), dtype=np.int64)
    if c.size and (c.min() < 0 or c.max() >= M):
        raise InputError(f"connectivity C holds indices outside 0..{int(M) - 1}: min {c.min()}, max {c.max()}")
    return c


def _memory_limit() -> int:
    """Bytes a global vector may take: MAX_BYTES, or less when the machine has less physical memory."""
    try:
        return min(MAX_BYTES, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return MAX_BYTES


def _elements(tape, X) -> np.ndarray:
    x = as_float_array(X, "X")
    if x.ndim != len(tape.input_shapes[0]) + 1 or x.shape[1:] != tape.input_shapes[0]:
        raise InputError(f"X has shape {x.shape}; expected (N,) + {tape.input_shapes[0]} (one row per element)")
    return x


def assemble_gradient(tape, X, C, M: int, params=None, out=None, threads: int | None = None) -> np.ndarray:
    """Global gradient ``g[C[e, j]] += grad_e[j]`` over elements e of ``X`` (N, n); returns ``g`` (M,).

    ``params`` is one row per element (N, ...) or shared; ``out`` (float64 (M,), C-contiguous) is overwritten.
    """
    x = _elements(tape, X)
    n = x.shape[0]
    c = _connectivity(tape, C, n, M)
    b = bind(tape, (x,), params, threads)  # params and threads, checked even when there is no element
    p, batched_p = b.p, b.p_stride != 0
    if out is None:
        g = np.zeros(int(M))
    else:  # out is zeroed before X, C and params are read: it must not share memory with them
        g = check_out(out, (int(M),), "out")
        check_aliasing([("out", g)], [("X", x), ("C", c), ("params", p)])
        g[...] = 0.0
    width = tape.n_inputs
    work = getattr(_local, "work", None)
    if work is None or work.shape[1:] != (BLOCK * width,):
        work = _local.work = np.empty((1, BLOCK * width))
    scatter = _scatter_fn()
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        block = work[0, :(hi - lo) * width].reshape((hi - lo,) + tape.input_shapes[0])
        gradient(tape, x[lo:hi], params=p[lo:hi] if batched_p else p, out=block, threads=threads)
        scatter((hi - lo) * width, _address(block), _address(c[lo:hi]), _address(g))
    return g


def assemble_value(tape, X, params=None, threads: int | None = None) -> float:
    """Sum of the element values ``f(X[e], params[e])`` over all elements."""
    x = _elements(tape, X)
    if tape.n_outputs != 1:
        raise InputError("assemble_value needs a scalar tape")
    return float(np.sum(value(tape, x, params=params, threads=threads)))


def assemble_hessian(tape, X, C, M: int, params=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global sparse Hessian ``K[C[e, i], C[e, j]] += H_e[i, j]`` (the finite-element stiffness matrix).

    Returns COO ``(rows, cols, values)`` with duplicates summed, sorted row-major (``tapead.to_scipy`` makes a
    scipy.sparse matrix). The pattern depends only on ``C`` and ``M``: it is computed once and reused while the
    connectivity stays the same. Values are summed in element order, so the bits never depend on threads.
    """
    x = _elements(tape, X)
    n = x.shape[0]
    if not isinstance(M, bool) and isinstance(M, (int, np.integer)) and M > HESSIAN_M:
        raise InputError(f"M = {int(M)}: assemble_hessian supports global sizes up to {HESSIAN_M}")
    c = _connectivity(tape, C, n, M)
    width = tape.n_inputs
    H = np.ascontiguousarray(tape.hessian(x, params=params)).reshape(n, width * width)
    digest = hashlib.sha1(c.tobytes()).hexdigest()
    cached = tape.state.patterns.get("assembly")
    if cached is None or cached[0] != (digest, int(M), c.shape):
        flat = (np.repeat(c, width, axis=1) * int(M) + np.tile(c, (1, width))).ravel()
        keys, inverse = np.unique(flat, return_inverse=True)
        cached = ((digest, int(M), c.shape), keys // int(M), keys % int(M), inverse.ravel())
        tape.state.patterns["assembly"] = cached
    _, rows, cols, inverse = cached
    values = np.bincount(inverse, weights=H.ravel(), minlength=len(rows))
    return rows, cols, values
