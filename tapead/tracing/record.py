"""trace(): run the user's function once on traced values and return its static tape (the IR).

``tapead.record`` wraps the result in a ``tapead.Function``; this module knows nothing of evaluation."""
from __future__ import annotations

from itertools import repeat
from typing import Any, Callable

import numpy as np

from ..arrays import as_float_array
from ..errors import TracingError
from .recorder import Recorder
from ..ir.tape import Tape
from .tracer import Scalar, TracedArray, to_cells
from .maparray import fuse


def _traced(rec: Recorder, values: np.ndarray, make) -> Any:
    """One tracer per entry of ``values``, made in bulk (``make``: ``rec.inputs``/``rec.params``; no Python step per
    entry beyond the tracer itself: a network's or a mesh's 10^5 inputs)."""
    ids = make(values.ravel().tolist())
    cells = np.empty(values.size, object)
    cells[:] = list(map(Scalar, repeat(rec, len(ids)), ids))
    cells = cells.reshape(values.shape)
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


def trace(f: Callable, *args, params=None, on_branch: str = "retape", assume_finite: bool = False,
          structured: bool | None = None) -> tuple[Tape, list | None]:
    """The tape of ``f`` at ``args`` and the source line of each of its guards (None: no source lines); the
    arguments are those of ``tapead.record``."""
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
    traced = [_traced(rec, v, rec.inputs_of) for v in values]
    param_shape = None
    if params is not None:
        p = as_float_array(params, "params")
        param_shape = p.shape
        traced.append(_traced(rec, p, rec.params_of))
    result = f(*traced)
    ids, shape = output_ids(rec, result)
    if len(rec.maps) > 1:
        fuse(rec)
    tape = rec.finish(ids, shape, tuple(v.shape for v in values), param_shape)
    return tape, rec.finished_sites
