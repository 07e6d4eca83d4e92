"""Argument conversion shared by recording and calling: what counts as a float array, and the errors if not."""
from __future__ import annotations

import numpy as np

from .errors import InputError

_CONVERTIBLE = "fiu"  # float (any width), signed and unsigned integers


def as_float_array(a, what: str) -> np.ndarray:
    """``a`` as a C-contiguous float64 array (a copy only when needed), or an InputError saying why not.

    Accepted: floats of any width, integers, numpy scalars, nested lists of numbers, any memory layout.
    Refused: strings, booleans, complex numbers, objects, None.
    """
    if isinstance(a, np.ndarray):
        if a.dtype == np.float64 and a.flags.c_contiguous:
            return a
        arr = a
    else:
        if a is None or isinstance(a, (str, bytes, dict, set)):
            raise InputError(f"{what}: expected a float array or number, got {type(a).__name__}")
        try:
            arr = np.asarray(a)
        except (ValueError, TypeError) as e:
            raise InputError(f"{what}: cannot read {type(a).__name__} as a float array ({e})") from None
    if arr.dtype.kind not in _CONVERTIBLE:
        raise InputError(f"{what}: expected float64 values (float32 and integers are converted), got dtype "
                         f"{arr.dtype}" + (" (booleans are refused: convert them explicitly)"
                                           if arr.dtype.kind == "b" else ""))
    return np.asarray(arr, dtype=np.float64, order="C")  # (np.ascontiguousarray would make 0-d arrays 1-d)


def pointer(a: np.ndarray | None) -> int | None:
    """The address of an array's data (None for None), for native calls."""
    return None if a is None else a.__array_interface__["data"][0]  # (arr.ctypes makes a reference cycle)


def check_out(out, shape: tuple, what: str) -> np.ndarray:
    """``out=`` arrays are written in place, so they must be exactly right: never converted, never copied.

    Only a plain ``numpy.ndarray`` is accepted: a subclass (a masked array, a matrix, a memmap) would be filled
    through its data buffer while its own semantics (the mask, the shape rules) say something else, and a
    method returning it (or a float read from it) could then disagree with what was written.
    """
    if type(out) is not np.ndarray:
        if isinstance(out, np.ndarray):
            raise InputError(f"{what}: expected a plain numpy array, got the subclass {type(out).__name__}; pass "
                             "np.asarray(out) (a plain view of the same memory) to fill it")
        raise InputError(f"{what}: expected a numpy array, got {type(out).__name__}")
    problems = []
    if out.dtype != np.float64:
        problems.append(f"dtype {out.dtype} (expected float64)")
    if out.shape != tuple(shape):
        problems.append(f"shape {out.shape} (expected {tuple(shape)})")
    if not out.flags.c_contiguous:
        problems.append("not C-contiguous")
    if not out.flags.writeable:
        problems.append("read-only")
    if problems:
        raise InputError(f"{what}: " + ", ".join(problems) + "; pass e.g. np.empty(" + str(tuple(shape)) + ")")
    return out


def check_aliasing(outs: list, ins: list) -> None:
    """Refuse an output that shares memory with another output or with an input (``(name, array)`` pairs).

    Kernels read every input while writing outputs, and guard failures recompute points from the inputs, so an
    overlap would silently give wrong numbers. Arrays here are C-contiguous, so comparing their byte ranges
    (``np.may_share_memory``) is exact; None entries are skipped.
    """
    for i, (name, o) in enumerate(outs):
        if o is None:
            continue
        for other, a in outs[i + 1:] + ins:
            if a is not None and np.may_share_memory(o, a):
                raise InputError(f"{name} and {other} share memory: outputs must not overlap each other or the "
                                 "inputs (pass separate arrays, e.g. a copy of the input)")
