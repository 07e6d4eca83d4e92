"""LLVM IR text shared by the code generators (codegen, loops, chunking): a double as LLVM writes it exactly."""
from __future__ import annotations

import struct


def literal(v: float) -> str:
    """The exact bits of ``v`` as an LLVM hexadecimal double constant (decimal text could round)."""
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", v))[0]
