"""Derived tapes (gradient, Jacobian, Hessian, sparse and HVP tapes) kept in the disk cache beside the kernels.

Deriving a tape replays its source in Python, which for a large source costs seconds every process (the
Lagrangian Hessian of a 60-stage multiple-shooting problem: ~2 s). Stored in the tape file format under a key
made from the source's file bytes (op names, not process-local op codes), its ``assume_finite`` choice and what
was derived from it, a second process loads the derived tape (validated like any tape file) and, with its
kernels also cached, skips Python's transforms entirely. A damaged or foreign entry is a miss.
"""
from __future__ import annotations

import hashlib
from typing import Callable

from .errors import TapeFormatError
from .tape import Tape

FORMAT = 1  # bump when a transform changes what it derives


def _key(tape: Tape, what: tuple) -> str:
    from . import cache, store
    h = hashlib.sha256(store.to_bytes(tape)).hexdigest()
    return cache.key(f"tapead-derived-tape {FORMAT} {what!r} assume_finite={tape.assume_finite} {h}", -1)


def derived_tape(tape: Tape, what: tuple, build: Callable[[], Tape]) -> Tape:
    """``build()``, or the tape a process stored for the same source and ``what`` (kernel cache enabled)."""
    from . import cache, store
    if not cache.enabled():
        return build()
    try:
        k = _key(tape, what)
    except (TapeFormatError, ValueError):  # e.g. a tape the file format cannot hold: derive, do not store
        return build()
    data = cache.get(k)
    if data is not None:
        try:
            stored = store.from_bytes(data)
        except TapeFormatError:
            stored = None
        if stored is not None and _fits(tape, stored):
            return stored.replace(assume_finite=tape.assume_finite)  # as a transform's recorder would set it
    result = build()
    if isinstance(result, Tape):
        cache.put(k, store.to_bytes(result))
    return result


def _fits(tape: Tape, stored: Tape) -> bool:
    """A derived tape takes its source's arguments first (then any directions or weights) and its params."""
    n = len(tape.input_shapes)
    return stored.input_shapes[:n] == tape.input_shapes and stored.param_shape == tape.param_shape
