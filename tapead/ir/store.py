"""Tape files: a documented, versioned, non-executable binary format for saving, loading and pickling tapes.

A tape file holds data only (nothing in it is ever executed or unpickled), so a file from anywhere can be
loaded safely: every field is validated, the counts are capped and the declared input and param sizes are
bounded by what the body can use (``tapead.validate``) before any array is built, then ``Tape.check()`` runs;
anything wrong raises ``TapeFormatError``. Layout, version 1 (all integers little-endian)::

    offset  size  field
    0       7     magic b"TAPEAD\\0"
    7       4     format version, uint32 (1, or 2 for a tape with loops)
    11      4     header length H in bytes, uint32 (at most 1 MiB)
    15      H     header: a UTF-8 JSON object (below)
    15+H    16*C  code: C instruction records of 4 int32s (op, arg0, arg1, arg2); unused arguments -1
    ...     8*K   consts: K float64s (the constant pool)
    ...     4*O   outputs: O int32 slot indices
    ...     8*G   guards: G records of 2 int32s (comparison slot, expected outcome 0 or 1)
    end-32  32    SHA-256 of every byte before it

The JSON header has the keys ``input_shapes`` (a list of shapes), ``param_shape`` (a shape or null),
``output_shape`` (a shape), ``n_code``, ``n_consts``, ``n_outputs``, ``n_guards`` (the record counts C, K,
O, G) and ``ops``: a list of ``[name, arity]`` pairs. The op column of the code refers to this table, not
to tapead's internal op numbering: on load each name is looked up in the current op table (an unknown name
or a different arity is rejected), so files stay readable when ops are added or reordered. Other header
keys are ignored. A shape is a list of non-negative integers. Slots are numbered as in ``tapead.tape``.

Version 2 is written for a tape with loops (maps, ``tapead.structure``), which stay loops. Its code column holds
-1 for a map's rows; its header also has ``maps``: one ``{"n", "n_in", "kinds", "scatter_size", "body_bytes"}``
object per map, in order; after the guards each map appends its tables (n x n_in int32), its scatter targets
(n x number of scatter kinds, int32) and its body: a complete version-1 tape file of ``body_bytes`` bytes.
A product loop (``tapead.ir.contraction``) has ``"product": [r, k, c]`` too (``n = r c``, ``n_in = 2 k``,
one ``each`` output, a dot body) and stores its two factors (r x k, then k x c int32) instead of its tables.
Everything a file declares must add up to its length, so nothing is allocated beyond what the file holds.
"""
from __future__ import annotations

import copyreg
import hashlib
import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import TapeFormatError
from ..table.ops import BY_CODE, OPS
from .contraction import Product
from .structure import KINDS, MAP_ROW, Map, Out, dot_length
from .tape import Tape
from .validate import MAX_CONSTS, MAX_OPS, MAX_OUTPUTS, MAX_SLOTS, check_loaded

MAGIC = b"TAPEAD\0"
VERSION = 1  # of a tape without loops; a tape with loops is written as version 2
VERSION_MAPS = 2
MAX_MAPS = 4096
MAX_FREE_ITERATIONS = 4096  # iterations of a loaded loop whose body reads no column (no table bytes pay for them)
MAX_LOOP_WORK = 1_000_000_000  # body instructions per point over all loops of a loaded tape (LJ 3,000 atoms: 1.5e8)
MAX_HEADER = 1 << 20
MAX_DIMS = 32
_PREFIX = struct.Struct("<7sII")
_DIGEST = 32


def to_bytes(tape: Tape) -> bytes:
    """The tape in the tape file format (see the module docstring); deterministic for equal tapes. A tape with
    loops keeps them (version 2). A ``tapead.Function`` is stored as its tape."""
    tape = getattr(tape, "tape", tape)
    used = sorted(set(tape.code[:, 0].tolist()) - {MAP_ROW})
    local = {code: i for i, code in enumerate(used)}
    local[MAP_ROW] = MAP_ROW
    code = np.array(tape.code, dtype=np.int32)
    if len(code):
        code[:, 0] = [local[c] for c in code[:, 0].tolist()]
    header = {
        "input_shapes": [list(s) for s in tape.input_shapes],
        "param_shape": None if tape.param_shape is None else list(tape.param_shape),
        "output_shape": list(tape.output_shape),
        "n_code": len(tape.code), "n_consts": len(tape.consts),
        "n_outputs": len(tape.outputs), "n_guards": len(tape.guards),
        "ops": [[BY_CODE[c].name, BY_CODE[c].arity] for c in used],
    }
    loops = []
    for m in tape.maps:
        body_file = to_bytes(m.body)
        entry = {"n": m.n, "n_in": m.body.n_inputs, "kinds": list(m.kinds), "scatter_size": m.scatter_size,
                 "body_bytes": len(body_file)}
        factors = getattr(m, "factors", None)
        if factors is not None:  # a product: its factors, not its n x 2 k tables
            entry["product"] = [m.a.shape[0], m.a.shape[1], m.b.shape[1]]
            tables = b"".join(f.astype("<i4").tobytes() for f in factors)
        else:
            tables = m.tables.astype("<i4").tobytes()
        header.setdefault("maps", []).append(entry)
        loops += [tables, m.dst.astype("<i4").tobytes(), body_file]
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    body = b"".join([
        _PREFIX.pack(MAGIC, VERSION_MAPS if tape.maps else VERSION, len(text)), text,
        code.astype("<i4").tobytes(), np.asarray(tape.consts).astype("<f8").tobytes(),
        np.asarray(tape.outputs).astype("<i4").tobytes(), np.asarray(tape.guards).astype("<i4").tobytes(),
    ] + loops)
    return body + hashlib.sha256(body).digest()


def _shape(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise TapeFormatError(f"header: {what} must be a list of at most {MAX_DIMS} dimensions, got {value!r}")
    for d in value:
        if type(d) is not int or not 0 <= d <= MAX_SLOTS:
            raise TapeFormatError(f"header: {what} has dimension {d!r}; expected a non-negative integer")
    return tuple(value)


def _count(header: dict, key: str, cap: int) -> int:
    n = header.get(key)
    if type(n) is not int or n < 0:
        raise TapeFormatError(f"header: {key} must be a non-negative integer, got {n!r}")
    if n > cap:
        raise TapeFormatError(f"header: {key} is {n:,}; tapead handles at most {cap:,}")
    return n


def _header(data: bytes) -> tuple[dict, int, int]:
    """Check magic, version, checksum and the JSON header; returns the header, where the arrays start and the
    version."""
    if len(data) < _PREFIX.size + _DIGEST:
        raise TapeFormatError(f"not a tape file: only {len(data)} bytes")
    magic, version, size = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise TapeFormatError("not a tape file: it does not start with b'TAPEAD\\0' (save tapes with "
                              "tapead.store.save)")
    if version not in (VERSION, VERSION_MAPS):
        raise TapeFormatError(f"tape file format version {version} is not supported (this tapead reads "
                              f"versions {VERSION} and {VERSION_MAPS}); save the tape again with this version of "
                              "tapead")
    if hashlib.sha256(data[:-_DIGEST]).digest() != data[-_DIGEST:]:
        raise TapeFormatError("tape file is damaged: its SHA-256 checksum does not match (truncated, "
                              "modified or has bytes appended)")
    if size > MAX_HEADER or _PREFIX.size + size > len(data) - _DIGEST:
        raise TapeFormatError(f"tape file header length {size} does not fit in the file")
    try:
        header = json.loads(data[_PREFIX.size:_PREFIX.size + size].decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise TapeFormatError(f"tape file header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise TapeFormatError("tape file header must be a JSON object")
    return header, _PREFIX.size + size, version


def _loops(value) -> list[tuple]:
    """The header's ``maps``: ``(n, n_in, kinds, scatter_size, body_bytes)`` per map, every count bounded."""
    if not isinstance(value, list) or len(value) > MAX_MAPS:
        raise TapeFormatError(f"header: maps must be a list of at most {MAX_MAPS} map records")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise TapeFormatError(f"header: maps[{i}] is not an object")
        n, n_in, size, nbytes = (_count(entry, k, cap) for k, cap in (
            ("n", MAX_OPS), ("n_in", MAX_OPS), ("scatter_size", MAX_SLOTS), ("body_bytes", MAX_SLOTS)))
        kinds = entry.get("kinds")
        if not isinstance(kinds, list) or len(kinds) > MAX_OPS or not all(k in KINDS for k in kinds):
            raise TapeFormatError(f"header: maps[{i}] kinds must be a list of {', '.join(KINDS)}")
        out.append((n, n_in, tuple(kinds), size, nbytes, _product(entry.get("product", None), i, n, n_in,
                                                                    kinds, size)))
    return out


def _product(value, i: int, n: int, n_in: int, kinds: list, size: int) -> tuple | None:
    """A map's ``product`` entry: ``(rows, k, cols)`` consistent with the map's counts, or None."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3 or not all(type(d) is int and 1 <= d <= MAX_OPS for d in value):
        raise TapeFormatError(f"header: maps[{i}] product must be three positive integers [rows, k, cols]")
    rows, k, cols = value
    if rows * cols != n or 2 * k != n_in or kinds != ["each"] or size != 0:
        raise TapeFormatError(f"header: maps[{i}] product {value} does not fit a loop of {n} iterations reading "
                              f"{n_in} columns with outputs {kinds}")
    return rows, k, cols


def _table_bytes(n: int, n_in: int, product: tuple | None) -> int:
    """Bytes of a map's tables in the file: its factors for a product."""
    if product is None:
        return 4 * n * n_in
    rows, k, cols = product
    return 4 * k * (rows + cols)


def _bounded_loop(index: int, n: int, n_in: int, work: int) -> None:
    """The work a loaded file may demand, not only its bytes: a loop's iterations are paid for by its table
    (a few hundred bytes must not declare 10^7 iterations of a body that reads no column), and all loops
    together run at most ``MAX_LOOP_WORK`` body instructions per point."""
    if n_in == 0 and n > MAX_FREE_ITERATIONS:
        raise TapeFormatError(f"maps[{index}] declares {n:,} iterations of a body that reads no table column; a "
                              f"loaded loop without columns may run at most {MAX_FREE_ITERATIONS:,} (recorded "
                              "loops read at least one column per iteration)")
    if work > MAX_LOOP_WORK:
        raise TapeFormatError(f"the tape's loops run {work:,} body instructions per point; a loaded tape may run at "
                              f"most {MAX_LOOP_WORK:,} (record the function again to work with it)")


def _op_table(value) -> np.ndarray:
    """Map the file's op numbering onto the current op table."""
    if not isinstance(value, list) or len(value) > 4096:
        raise TapeFormatError("header: ops must be a list of [name, arity] pairs")
    codes = []
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and type(entry[1]) is int):
            raise TapeFormatError(f"header: ops entry {entry!r} is not a [name, arity] pair")
        name, arity = entry
        row = OPS.get(name)
        if row is None:
            raise TapeFormatError(f"tape uses op {name!r}, which this version of tapead does not know; "
                                  "load it with the tapead version that saved it")
        if row.arity != arity:
            raise TapeFormatError(f"tape file says op {name!r} takes {arity} arguments; it takes {row.arity}")
        codes.append(row.code)
    return np.array(codes, dtype=np.int32)


def from_bytes(data: bytes) -> Tape:
    """A tape from the tape file format: validated and checked. Raises TapeFormatError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TapeFormatError(f"expected the bytes of a tape file, got {type(data).__name__}")
    data = bytes(data)
    return _from_bytes(data, loops_allowed=True)


def _from_bytes(data: bytes, loops_allowed: bool) -> Tape:
    header, start, version = _header(data)
    if version == VERSION_MAPS and not loops_allowed:
        raise TapeFormatError("a loop's body holds a loop: bodies are version-1 tape files")
    shapes = header.get("input_shapes")
    if not isinstance(shapes, list) or len(shapes) > 4096:
        raise TapeFormatError("header: input_shapes must be a list of shapes")
    input_shapes = tuple(_shape(s, f"input_shapes[{i}]") for i, s in enumerate(shapes))
    param = header.get("param_shape", 0)
    param_shape = None if param is None else _shape(param, "param_shape")
    output_shape = _shape(header.get("output_shape"), "output_shape")
    n_code, n_consts, n_outputs, n_guards = (_count(header, k, cap) for k, cap in (
        ("n_code", MAX_OPS), ("n_consts", MAX_CONSTS), ("n_outputs", MAX_OUTPUTS), ("n_guards", MAX_OPS)))
    ops = _op_table(header.get("ops"))
    loops = _loops(header.get("maps")) if version == VERSION_MAPS else []
    sizes = [16 * n_code, 8 * n_consts, 4 * n_outputs, 8 * n_guards]
    for n, n_in, kinds, _, nbytes, product in loops:
        sizes += [_table_bytes(n, n_in, product), 4 * n * kinds.count(Out.SCATTER), nbytes]
    if start + sum(sizes) != len(data) - _DIGEST:
        raise TapeFormatError(f"tape file holds {len(data) - _DIGEST - start} bytes of arrays; its header "
                              f"announces {sum(sizes)}")
    declared = sum(math.prod(s) for s in input_shapes) + (0 if param_shape is None else math.prod(param_shape))
    if declared + n_consts + n_code > MAX_SLOTS or math.prod(output_shape) != n_outputs:
        raise TapeFormatError("tape file shapes and counts are inconsistent (too many slots, or the output "
                              "shape does not match the number of outputs)")
    # before any array is built or anything compiled; a loop's table cells are reads like instructions' arguments
    # a product's reads are paid for by its factors (what the file holds), not by the table they imply
    check_loaded(declared, n_code + sum(_table_bytes(n, n_in, product) // 4 for n, n_in, *_, product in loops),
                 n_outputs)
    arrays = []
    for dtype, size in zip(("<i4", "<f8", "<i4", "<i4"), sizes):
        arrays.append(np.frombuffer(data, dtype=dtype, count=size // int(dtype[2]), offset=start))
        start += size
    maps = []
    work = 0  # instructions the loops run per point: what the file demands of a kernel or an unrolled tape
    for n, n_in, kinds, scatter_size, nbytes, product in loops:
        if product is None:
            tables = np.frombuffer(data, dtype="<i4", count=n * n_in, offset=start).reshape(n, n_in)
        else:
            rows, k, cols = product
            tables = (np.frombuffer(data, dtype="<i4", count=rows * k, offset=start).reshape(rows, k),
                      np.frombuffer(data, dtype="<i4", count=k * cols, offset=start + 4 * rows * k).reshape(k, cols))
        start += _table_bytes(n, n_in, product)
        n_scatter = kinds.count(Out.SCATTER)
        dst = np.frombuffer(data, dtype="<i4", count=n * n_scatter, offset=start).reshape(n, n_scatter)
        start += 4 * n * n_scatter
        body = _from_bytes(data[start:start + nbytes], loops_allowed=False)
        start += nbytes
        work += n * max(len(body), 1)
        _bounded_loop(len(maps), n, n_in, work)
        if product is not None:
            if dot_length(body) != product[1]:
                raise TapeFormatError(f"maps[{len(maps)}] is a product whose body is not a {product[1]}-term dot product")
            maps.append(Product(*tables, body.assume_finite))
        else:
            maps.append(Map(body, tables, kinds, dst, scatter_size))
    code = arrays[0].astype(np.int32).reshape(-1, 4)
    if len(code):
        op = code[:, 0]
        loop_row = (op == MAP_ROW) if maps else np.zeros(len(op), bool)
        bad = ~loop_row & ((op < 0) | (op >= len(ops)))
        if bad.any():
            raise TapeFormatError(f"an instruction names op {int(op[bad][0])}; the file's op table has {len(ops)} "
                                  "entries")
        code[:, 0] = np.where(loop_row, MAP_ROW, ops[np.where(loop_row, 0, op)] if len(ops) else MAP_ROW)
    tape = Tape(code=code, consts=arrays[1].astype(np.float64), input_shapes=input_shapes,
                param_shape=param_shape, outputs=arrays[2].astype(np.int32), output_shape=output_shape,
                guards=arrays[3].astype(np.int32).reshape(-1, 2), maps=tuple(maps))
    return tape.check()


def save(tape: Tape, path: str | os.PathLike) -> Path:
    """Write the tape to ``path`` (conventionally ``*.tape``) atomically; returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(to_bytes(tape))
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike) -> Tape:
    """Read a tape file written by ``save``; raises TapeFormatError if it is not a valid tape file."""
    return from_bytes(Path(path).read_bytes())


def tape_reduce(tape: Tape) -> tuple:
    """How a tape pickles: as tape-file bytes, which name ops (op codes are local to a process) and are
    validated with resource bounds when loaded (caches are dropped)."""
    return from_bytes, (to_bytes(tape),)


copyreg.pickle(Tape, tape_reduce)
