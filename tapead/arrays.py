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


def check_out(out, shape: tuple, what: str) -> np.ndarray:
    """``out=`` arrays are written in place, so they must be exactly right: never converted, never copied."""
    if not isinstance(out, np.ndarray):
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
