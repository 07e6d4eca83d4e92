"""The layers of the package, lowest first: a module imports only from its own layer and the layers before it
(function-local imports included). The folders are the layers; ``tests/test_architecture.py`` checks every
import against this table and that the README's Architecture table lists the same layers in the same order.
"""
from __future__ import annotations

# (layer, its top-level modules or its subpackage, what it is for)
LAYERS = (
    ("leaves", ("errors", "version", "arrays", "sources"),
     "shared vocabulary: exceptions, the release number, argument checks, digests of tapead's source"),
    ("table", "table", "the op table: each op's numpy meaning, LLVM text, derivative rules and facts"),
    ("ir", "ir", "the frozen Tape and its loops, validation, listing, file format, the reference interpreter"),
    ("tracing", "tracing", "recording: tracers, the numpy surface, loop arrays, trace(f, x) -> Tape"),
    ("transforms", "transforms", "pure Tape -> Tape: reverse/forward mode, Hessians, sparsity, kernel kinds"),
    ("backend", "backend",
     "LLVM IR from tapes, MCJIT, the kernel cache, the native entry, custom ops (lowered bodies)"),
    ("runtime", "runtime", "calls on numbers: binding, kernels, threads, branch paths, derivatives, export"),
    ("distributed", "distributed", "the lazy path: Function methods on Dask arrays, the worker side"),
    ("facade", ("__init__", "api", "function", "cli", "legacy", "layers"),
     "record, load, save, Function, the public transforms, the CLI, old module paths"),
)


def layer_of(module: str) -> int:
    """The layer index of a module given as a dotted path inside the package (``"ir.tape"``, ``"api"``)."""
    head = module.split(".")[0]
    for index, (_, where, _) in enumerate(LAYERS):
        if (isinstance(where, str) and head == where and "." in module) or \
                (not isinstance(where, str) and module in where):
            return index
    raise KeyError(f"module {module!r} is in no layer of tapead.layers.LAYERS")
