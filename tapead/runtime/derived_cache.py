"""Derived tapes (gradient, Jacobian, Hessian, sparse and HVP tapes) kept in the disk cache beside the kernels.

Deriving a tape replays its source in Python, which for a large source costs seconds every process (the
Lagrangian Hessian of a 60-stage multiple-shooting problem: ~2 s). Stored in the tape file format under a key
made from the source's file bytes (op names, not process-local op codes), its ``assume_finite`` choice, what
was derived from it and the definitions of the user-defined ops it can reach (a file names an op, so a derivative
rule corrected under the same name in a later process must not find the tape derived with the old rule), a
second process loads the derived tape (validated like any tape file) and, with its kernels also cached, skips
Python's transforms entirely. A damaged or foreign entry is a miss.
"""
from __future__ import annotations

import hashlib

from .. import sources

from ..ir.structure import op_codes
from typing import Callable

from ..errors import TapeadError, TapeFormatError
from ..table.ops import BY_CODE, OPS, call
from ..transforms.kernelspec import KINDS
from ..ir.tape import Tape

FORMAT = 1
# everything a derivation runs: the op table, the IR, recording (replays record) and the transforms
DERIVATION = ("table", "ir", "tracing", "transforms", "errors", "arrays")


def _transforms_digest() -> str:
    """A digest of the source of every module that derives tapes: changed transform code (an edit, a new
    module, another release) never reads a tape the old code derived."""
    return sources.digest(*DERIVATION)


def _user_ops(tape: Tape) -> str:
    """A digest of every user-defined op a derivation of ``tape`` can call: its body (the lowered definition)
    and its derivative rule as the op table holds it, recorded on traced values (with which partials are None);
    followed through the ops the rules themselves call. Raises TracingError for a rule that branches."""
    from ..ir import store
    from ..tracing.record import trace
    h = hashlib.sha256()
    todo = [BY_CODE[c].name for c in op_codes(tape)]
    seen: set = set()
    while todo:
        name = todo.pop()
        row = OPS[name]
        if name in seen or not row.definition:
            continue
        seen.add(name)
        zero: list = []

        def rule(g, *args, row=row, zero=zero):
            parts = row.rule(g, *args, call(row.name, *args))
            zero[:] = [p is None for p in parts]
            return [0.0 if p is None else p for p in parts]

        t, _ = trace(rule, *([0.5] * (1 + row.arity)), on_branch="forbid")
        h.update(f"{name} {row.arity} {zero} {row.definition}".encode() + store.to_bytes(t))
        todo += [BY_CODE[c].name for c in op_codes(t)]
    return h.hexdigest() if seen else ""


def _key(tape: Tape, what: tuple) -> str:
    from ..backend import cache
    from ..ir import store
    h = hashlib.sha256(store.to_bytes(tape)).hexdigest() + _user_ops(tape)
    return cache.key(f"tapead-derived-tape {FORMAT} {_transforms_digest()} {what!r} "
                     f"assume_finite={tape.assume_finite} {h}", -1)


def derived_tape(tape: Tape, what: tuple, build: Callable[[], Tape]) -> Tape:
    """``build()``, or the tape a process stored for the same source and ``what`` (kernel cache enabled)."""
    from ..backend import cache
    from ..ir import store
    if not cache.enabled():
        return build()
    try:
        k = _key(tape, what)
    except (TapeadError, ValueError):  # e.g. a tape the file format cannot hold: derive, do not store
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


def kind_tape(tape: Tape, kind: str) -> Tape:
    """The tape a kernel of ``kind`` (``kernelspec.KINDS``) compiles: ``tape`` itself for 'value', else the tape
    that kind derives from it (or the one a process stored for it)."""
    if kind == "value":
        return tape
    k = KINDS[kind]
    return derived_tape(tape, k.cache_key, lambda: k.derive(tape))
