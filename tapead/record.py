"""record(): run the user's function once on traced values and return its static tape."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .arrays import as_float_array
from .errors import TracingError
from .recorder import Recorder
from .tape import Tape
from .tracer import Scalar, TracedArray, to_cells
from .maparray import fuse


def _traced(rec: Recorder, values: np.ndarray, make) -> Any:
    cells = np.empty(values.shape, object)
    for idx in np.ndindex(values.shape):
        cells[idx] = Scalar(rec, make(float(values[idx])))
    return TracedArray(cells) if values.ndim else cells[()]


def output_ids(rec: Recorder, result) -> tuple[list[int], tuple[int, ...]]:
    """Node ids and shape of what the function returned (traced values and constants alike)."""
    if isinstance(result, tuple):
        raise TracingError("the function returned a tuple; return one array (combine several outputs with "
                           "np.concatenate or np.stack)")
    cells = np.asarray(to_cells(result), dtype=object)
    ids = []
    for c in cells.flat:
        if isinstance(c, TracedArray) and c.size == 1:
            c = c.cells.flat[0]
        if isinstance(c, Scalar):
            if c.rec is not rec:
                raise TracingError("the function returned a traced value from another recording")
            ids.append(c.id)
        elif isinstance(c, (float, int, np.floating, np.integer, np.bool_)):
            ids.append(rec.const(float(c)))
        else:
            raise TracingError(f"the function returned {type(c).__name__} {c!r}; expected numbers or traced "
                               "values")
    return ids, cells.shape


def record(f: Callable, *args, params=None, on_branch: str = "retape", assume_finite: bool = False,
           structured: bool | None = None) -> Tape:
    """Run ``f(*args)`` (or ``f(*args, params)``) once on traced values and return its tape.

    Positional ``args`` are the differentiable inputs: float arrays or scalars whose shapes are fixed now.
    ``params`` (one float array of any shape) is passed as the last positional argument; its values are read
    by every call at run time and never differentiated, so per-element constants change without re-recording.
    Integers that steer indexing are fixed at record time: keep them out of ``args`` and ``params``.

    Inside ``f`` use numpy functions (``np.sin``, ``np.dot``, indexing, assignment into traced arrays, ...).
    Python control flow on traced values (``if x > 0``, ``while``, ``and``/``or``, builtin ``min``/``max``)
    records guards: the comparisons and their outcomes. A call where a guard flips is never answered from the
    wrong path: with ``on_branch="retape"`` (default) ``f`` is recorded again along the new path (recurring
    paths get compiled kernels); with ``"raise"`` a BranchError names the comparison and its source line;
    with ``"forbid"`` branching on a traced value raises a TracingError while recording.

    ``assume_finite=True`` lets recording and every transform fold ``0 * x`` to 0 (e.g. zero entries of
    constant matrices, zero partials): shorter tapes, but an infinite or NaN ``x`` would no longer propagate.

    ``structured`` decides whether vectorised numpy records as loops (``tapead.structure``): None (default) for
    elementwise results whose leading axis has at least ``tapead.maparray.MAP_MIN`` elements, True for every
    array result (leading axis >= 2), False never (one scalar instruction per element, the tape of older
    versions). Either way the tape computes the same function; loops keep recording, the reverse-mode
    transforms and compilation proportional to the program instead of its unrolled size.

    Raises TracingError for what a tape cannot represent, e.g. ``float(x)``, ``math.sin(x)``, storing a traced
    value into a float numpy array (build it with ``np.zeros_like(x)``), or indexing with a traced value.
    """
    if not callable(f):
        raise TracingError(f"record() needs a callable, got {type(f).__name__}")
    if on_branch is None:
        on_branch = "forbid"
    if on_branch not in ("retape", "raise", "forbid"):
        raise ValueError(f"on_branch must be 'retape', 'raise' or 'forbid', got {on_branch!r}")
    rec = Recorder(on_branch=None if on_branch == "forbid" else on_branch, assume_finite=assume_finite)
    if structured is not False:
        from .maparray import MAP_MIN
        rec.map_min = MAP_MIN if structured is None else 2
    values = [as_float_array(a, f"argument {i}") for i, a in enumerate(args)]
    traced = [_traced(rec, v, rec.input) for v in values]
    param_shape = None
    if params is not None:
        p = as_float_array(params, "params")
        param_shape = p.shape
        traced.append(_traced(rec, p, rec.param))
    result = f(*traced)
    ids, shape = output_ids(rec, result)
    if len(rec.maps) > 1:
        fuse(rec)
    return rec.finish(ids, shape, tuple(v.shape for v in values), param_shape, fn=f, on_branch=on_branch)
