"""Validation of a tape before anything runs it: structure, and resource limits for tapes from outside.

``check`` (behind ``Tape.check``) runs at every compile and interpreter boundary: every op code, argument, output
and guard index, every shape, and absolute caps on the sizes LLVM would be asked to compile. It never raises
anything but TapeFormatError, whatever the fields hold (a tape made by a crafted pickle or by hand).

``check_loaded`` adds what a tape file or pickle must satisfy on top: its declared inputs and params are bounded
by what its body can use. The body (instructions, constants, outputs, guards) is physically present in the file,
so its size is bounded by the file's; the input and param shapes are a few bytes of JSON that could otherwise
announce 10^7 doubles and make the compiler emit 10^7 loads. A body of C instructions and O outputs reads at
most 3C + O distinct slots, so a tape declaring far more inputs than that is refused.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import TapeFormatError
from ..table.ops import BY_CODE, COMPARISONS

MAX_OPS = 10_000_000  # instructions; at ~50 us per op at O0, more would take minutes and tens of GB to compile
MAX_CONSTS = 10_000_000
MAX_OUTPUTS = 10_000_000
MAX_SLOTS = 2**31 - 1  # slot indices are int32
UNUSED_INPUTS = 4096  # loaded tapes: inputs + params <= UNUSED_INPUTS + INPUTS_PER_USE * (ops + outputs)
INPUTS_PER_USE = 64


def _shape(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(d) is int and d >= 0 for d in value):
        raise TapeFormatError(f"{what} must be a tuple of non-negative integers, got {value!r}")
    return value


def _array(value, what: str, dtype, ndim: int) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != ndim or \
            (ndim == 2 and value.shape[1] != (4 if what == "code" else 2)):
        raise TapeFormatError(f"{what} is not a {dtype} array of the tape's layout")
    return value


def check(tape) -> None:
    """Validate every field, index, op code, arity and size (see the module docstring); raise TapeFormatError."""
    try:
        _check(tape)
    except TapeFormatError:
        raise
    except Exception as e:  # fields of the wrong kind altogether (a hand-made or unpickled object)
        raise TapeFormatError(f"malformed tape: {type(e).__name__}: {e}") from None


def _check(tape) -> None:
    code = _array(tape.code, "code", np.int32, 2)
    consts = _array(tape.consts, "consts", np.float64, 1)
    outputs = _array(tape.outputs, "outputs", np.int32, 1)
    guards = _array(tape.guards, "guards", np.int32, 2)
    if not isinstance(tape.input_shapes, tuple):
        raise TapeFormatError(f"input_shapes must be a tuple of shapes, got {tape.input_shapes!r}")
    inputs = sum(math.prod(_shape(s, f"input shape {i}")) for i, s in enumerate(tape.input_shapes))
    params = 0 if tape.param_shape is None else math.prod(_shape(tape.param_shape, "params shape"))
    output_shape = _shape(tape.output_shape, "output shape")
    n_code = len(code)
    for n, cap, what in ((n_code, MAX_OPS, "instructions"), (len(consts), MAX_CONSTS, "constants"),
                         (len(outputs), MAX_OUTPUTS, "outputs")):
        if n > cap:
            raise TapeFormatError(f"tape has {n:,} {what}; tapead handles at most {cap:,}")
    first = inputs + params + len(consts)
    n_slots = first + n_code
    if n_slots > MAX_SLOTS:
        raise TapeFormatError(f"tape has {n_slots:,} slots; slot indices are 32-bit (at most {MAX_SLOTS:,})")
    if math.prod(output_shape) != len(outputs):
        raise TapeFormatError(f"output shape {output_shape} does not hold {len(outputs)} outputs")
    if len(guards) > n_code:
        raise TapeFormatError(f"tape has {len(guards)} guards but only {n_code} instructions")
    is_map = code[:, 0] == -1 if n_code else np.zeros(0, bool)
    if n_code:
        _check_code(code, first, is_map)
    _check_maps(tape, code, first, is_map)
    if len(outputs) and not (0 <= int(outputs.min()) and int(outputs.max()) < n_slots):
        raise TapeFormatError(f"an output names a slot outside 0..{n_slots - 1}")
    if len(guards):
        slot, expected = guards[:, 0].astype(np.int64), guards[:, 1]
        inside = (slot >= first) & (slot < n_slots)
        comparison = np.array([row.name in COMPARISONS for row in BY_CODE] + [False], bool)  # [-1]: a map row
        ok = inside & (expected >= 0) & (expected <= 1)
        ok[inside] &= comparison[code[slot[inside] - first, 0]]
        if not ok.all():
            i = int(np.argmin(ok))
            raise TapeFormatError(f"guard ({int(slot[i])}, {int(expected[i])}) does not name a comparison and "
                                  "an outcome")


def _check_maps(tape, code: np.ndarray, first: int, is_map: np.ndarray) -> None:
    """Map records: each a valid body, tables reading only slots defined before its run, and its run of rows
    exactly where ``code`` says (see tapead.structure)."""
    from .structure import KINDS, Map, Out
    maps = tape.maps
    if not isinstance(maps, tuple) or not all(isinstance(m, Map) for m in maps):
        raise TapeFormatError("maps must be a tuple of Map records")
    rows = np.flatnonzero(is_map)
    at = 0
    for index, m in enumerate(maps):
        body = m.body
        if type(body) is not type(tape) or body.maps or len(body.guards) or body.param_shape is not None:
            raise TapeFormatError(f"map {index}: its body must be a tape without maps, guards or params")
        body.check()
        n_in = body.n_inputs
        factors = getattr(m, "factors", None)
        if factors is not None:  # a product, checked through its factors: its tables are built only on demand
            wrong = m.consistent()
            if wrong is not None:
                raise TapeFormatError(f"map {index}: a product: {wrong}")
            tables = np.concatenate([f.ravel() for f in factors])
        elif not isinstance(tables := m.tables, np.ndarray) or tables.dtype != np.int32 or tables.ndim != 2 or tables.shape[1] != n_in or body.input_shapes != ((n_in,),):
            raise TapeFormatError(f"map {index}: tables of shape {tables.shape} do not fit a body of {n_in} inputs")
        if len(m.kinds) != body.n_outputs or not all(k in KINDS for k in m.kinds):
            raise TapeFormatError(f"map {index}: output kinds {m.kinds!r} do not fit {body.n_outputs} outputs")
        n_scatter = m.kinds.count(Out.SCATTER)
        if not isinstance(m.dst, np.ndarray) or m.dst.dtype != np.int32 or m.dst.shape != (m.n, n_scatter) or m.scatter_size < 0 or \
                (m.dst.size and not (0 <= int(m.dst.min()) and int(m.dst.max()) < m.scatter_size)):
            raise TapeFormatError(f"map {index}: scatter targets do not fit its range of {m.scatter_size}")
        run = rows[at:at + m.rows]
        start = int(run[0]) if len(run) else -1
        if len(run) != m.rows or m.rows == 0 or not np.array_equal(run, start + np.arange(m.rows)) or \
                not (code[run, 1] == index).all() or not np.array_equal(code[run, 2], np.arange(m.rows)) or \
                not (code[run, 3] == 0).all():
            raise TapeFormatError(f"map {index}: its rows in the code table are not one run numbered 0..{m.rows - 1}")
        if tables.size and not (0 <= int(tables.min()) and int(tables.max()) < first + start):
            raise TapeFormatError(f"map {index}: a table names a slot not defined before the map")
        at += m.rows
    if at != len(rows):
        raise TapeFormatError("the code table has map rows that no map record describes")


def _check_code(code: np.ndarray, first: int, is_map: np.ndarray) -> None:
    code = code[~is_map]
    first = first + np.flatnonzero(~is_map) - np.arange(len(code))  # each kept row's own first slot offset
    if not len(code):
        return
    op = code[:, 0]
    if op.min() < 0 or op.max() >= len(BY_CODE):
        i = int(np.argmax((op < 0) | (op >= len(BY_CODE))))
        raise TapeFormatError(f"instruction {i}: unknown op code {int(op[i])}")
    arity = np.array([row.arity for row in BY_CODE], np.int64)[op]
    limit = first + np.arange(len(code), dtype=np.int64)  # instruction i reads slots defined before it
    for j in range(3):
        a = code[:, 1 + j].astype(np.int64)
        used = j < arity
        bad = np.where(used, (a < 0) | (a >= limit), a != -1)
        if bad.any():
            i = int(np.argmax(bad))
            name = BY_CODE[int(op[i])].name
            if used[i]:
                raise TapeFormatError(f"instruction {i} ({name}): argument {j} is slot {int(a[i])}, not one of "
                                      f"the {int(limit[i])} slots defined before it")
            raise TapeFormatError(f"instruction {i} ({name}): unused argument {j} is {int(a[i])}, expected -1")


def check_loaded(declared: int, n_code: int, n_outputs: int) -> None:
    """The limit on a tape from a file or a pickle: ``declared`` inputs and params bounded by what a body of
    ``n_code`` instructions and ``n_outputs`` outputs can use. A tape recorded in this process is not held to it."""
    allowed = UNUSED_INPUTS + INPUTS_PER_USE * (n_code + n_outputs)
    if declared > allowed:
        raise TapeFormatError(
            f"tape declares {declared:,} inputs and params, but its {n_code:,} instructions and {n_outputs:,} "
            f"outputs can read at most {3 * n_code + n_outputs:,} of them; a loaded tape may declare at most "
            f"{UNUSED_INPUTS:,} + {INPUTS_PER_USE} x (instructions + outputs) = {allowed:,} (record the function "
            "again to work with it)")
