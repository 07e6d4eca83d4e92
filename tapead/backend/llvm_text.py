"""The emission core the code generators (codegen, loops, chunking) share: how a double is written exactly, what
a slot's SSA value is called, and how one op of the table becomes instructions. Only here do the generators
agree on names: ``%s<slot>`` for a kernel's slots, ``%<prefix>b<slot>`` for a loop body's."""
from __future__ import annotations

import struct

BLOCK = 512  # straight-line instructions per basic block: at O0, LLVM's fast instruction selector hands a block
# it cannot finish (a NaN-masking select on `fcmp une`) to the DAG selector whole, which is quadratic in the block
# (an 11,000-op gradient of np.max over rows: 21 s of instruction selection in one block); loop bodies too


def literal(v: float) -> str:
    """The exact bits of ``v`` as an LLVM hexadecimal double constant (decimal text could round)."""
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", v))[0]


def value_name(slot: int, prefix: str | None = None) -> str:
    """The SSA name of a slot's value: ``%s<slot>`` in a kernel, ``%<prefix>b<slot>`` in the body of loop
    ``prefix``."""
    return f"%s{slot}" if prefix is None else f"%{prefix}b{slot}"


def emit_op(row, args: list, slot: int, lines: list, prefix: str | None = None) -> str:
    """Append the instructions of op table row ``row`` on the IR values ``args``, writing ``slot``; returns the
    SSA name of the result."""
    out = value_name(slot, prefix)
    lines.extend("  " + line for line in row.llvm.format(*args, out=out).split("\n"))
    return out
