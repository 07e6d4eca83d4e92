"""What a Function computes to evaluate its tape, in one owner: kernels and the derived tapes they compile, the
Functions of derived tapes, native callables, other branch paths, background-build bookkeeping, assembly
patterns and Dask shipments. Each is a cache of something the tape and the calls determine, filled on first use
by the runtime module that needs it; none changes what the Function computes. (The native single-point entries
stay on the Function itself: the hot path reads them with one attribute lookup.)"""
from __future__ import annotations

from typing import Any


class EvaluationState:
    __slots__ = ("kernels", "programs", "derived", "natives", "paths", "mixed", "retired", "upgraded", "patterns",
                 "shipments", "fast_derived", "aliases", "bound")

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
