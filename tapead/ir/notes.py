"""Notes of unrollings: who read a tape with loops as scalar code, and why (``structure.scalar``'s ``why``).

A structured tape is never unrolled without saying so: ``scalar`` appends a note to the list of whoever listens
in this context (a Function building a derived tape or a kernel: ``stats["unrolled"]``), and to nobody
otherwise.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

_NOTES: ContextVar[list | None] = ContextVar("tapead_unroll_notes", default=None)


def listening() -> list | None:
    """The list notes go to in this context, or None."""
    return _NOTES.get()


@contextmanager
def noting_unrolls() -> Iterator[list]:
    """Collect, in the list this yields, a note for every tape with loops ``scalar`` unrolls within the block
    (``why``, its number of loops, and the scalar rows it becomes), in this thread and context."""
    notes: list = []
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)
