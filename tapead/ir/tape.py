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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TapeFormatError
from .listing import listing, op_counts

Shape = tuple[int, ...]


def _frozen(a: np.ndarray, dtype) -> np.ndarray:
    src = np.asarray(a)
    a = np.array(src, dtype=dtype, copy=True)
    if dtype is np.int32 and src.dtype != np.int32 and a.size and not np.array_equal(a, src):
        raise ValueError("an index or op code does not fit in a 32-bit integer")  # never wrapped silently
    a.setflags(write=False)
    return a


_MISSING = object()


def _size(shape: Shape) -> int:
    return int(math.prod(shape))


@dataclass(frozen=True, eq=False)
class Tape:
    """The IR of one recorded function: frozen, self-contained, knowing nothing of evaluation.

    Transforms read tapes and build new ones; the evaluators (the interpreter, the compiled kernels behind
    ``tapead.Function``) read them. ``_cache`` memoises facts computed from the fields alone (the hash, the
    unrolled tape, analyses), so it never changes what the tape means.
    """

    code: np.ndarray
    consts: np.ndarray
    input_shapes: tuple[Shape, ...]
    param_shape: Shape | None
    outputs: np.ndarray
    output_shape: Shape
    guards: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    maps: tuple = ()  # structure.Map records, run by the MAP_ROW rows of ``code`` (see tapead.structure)
    assume_finite: bool = field(default=False, repr=False)  # transforms may fold 0 * x to 0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)  # memoised pure facts of the fields

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

    def memo(self, key, compute):
        """A fact computed from the fields alone, once: ``compute()`` on the first call for ``key``, the same
        object after. The one way other modules keep facts on a tape (the unrolled tape, sparsity patterns, the
        forward-sweep plan); it never changes what the tape means."""
        hit = self._cache.get(key, _MISSING)
        if hit is _MISSING:
            hit = self._cache[key] = compute()
        return hit

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
                      guards=self.guards, maps=self.maps, assume_finite=self.assume_finite)
        fields.update(changes)
        return Tape(**fields)

    def __setstate__(self, state):
        """Refused: tapes pickle as tape-file bytes (``tapead.store`` registers that with ``copyreg``), so a
        pickle setting a tape's fields directly is crafted."""
        raise TapeFormatError("a tape unpickles only from the tape file format (tapead.store.from_bytes); this "
                              "pickle sets a tape's fields directly, bypassing validation")
