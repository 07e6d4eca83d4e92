"""What a Function computes to evaluate its tape, in one owner: kernels and the derived tapes they compile, the
Functions of derived tapes, native callables, other branch paths, background-build bookkeeping, assembly
patterns and Dask shipments. Each is a cache of something the tape and the calls determine, filled on first use
by the runtime module that needs it; none changes what the Function computes. (The native single-point entries
stay on the Function itself: the hot path reads them with one attribute lookup.)"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

from ..ir.notes import noting_unrolls


_NOTING = threading.Lock()


class EvaluationState:
    __slots__ = ("kernels", "programs", "derived", "natives", "paths", "mixed", "retired", "upgraded", "patterns",
                 "shipments", "fast_derived", "aliases", "bound", "unrolled")

    def __init__(self):
        self.kernels: dict[str, tuple] = {}  # kind -> (the tape compiled, or None for this one; Kernel)
        self.programs: dict[str, Any] = {}  # kind -> the derived Tape a kernel of that kind compiles
        self.derived: dict[tuple, Any] = {}  # what -> the Function of a derived tape (Jacobian, Hessian...)
        self.natives: dict[str, tuple] = {}  # kind -> (callable, what keeps it alive, Kernel): ``native()``
        self.paths = None  # runtime.branches.Paths: the other paths through the function, once one is needed
        self.mixed: set[str] = set()  # kinds whose last batch had points on other paths
        self.retired: list = []  # kernels replaced by background O2 builds (a caller may still run one)
        self.upgraded = 0  # background O2 builds swapped in
        self.patterns: dict[Any, Any] = {}  # what -> sparsity patterns of assembly
        self.shipments: dict[Any, Any] = {}  # what -> the tapes as Dask ships them to workers
        # what -> (the derived Function, the out shape its fast path takes, its tape's output shape): read by
        # every single-point Hessian or Jacobian call, so those shapes are looked up once
        self.fast_derived: dict[tuple, tuple] = {}
        # (owner Function, weakly; method name, kind): where this Function's native method of that kind is also
        # bound (a Function's ``hessian`` is its Hessian Function's ``value``): ``runtime.methods.alias``
        self.aliases: list = []
        self.bound: dict[str, tuple] = {}  # kind -> (KernelSpec, Kernel) of the native method bound last
        self.unrolled: list[dict] = []  # every unrolling of a tape with loops done for this Function, and why

    @contextmanager
    def noting_unrolls(self, what: str) -> Iterator[None]:
        """Note in ``unrolled`` (``stats["unrolled"]``) each tape with loops unrolled while building ``what``
        (a derived tape, a kernel) in this process: which step needed the scalar form and why."""
        with noting_unrolls() as notes:
            yield
        with _NOTING:  # (a background build notes from its own thread)
            for note in notes:
                entry = {"for": what, **note}
                if entry not in self.unrolled:
                    self.unrolled.append(entry)
