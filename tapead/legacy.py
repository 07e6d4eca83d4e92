"""Module paths of releases before the layer packages (``tapead.store``, ``tapead.calls``, ...).

Pickles and Dask shipments name the functions that rebuild them by module path (``tapead.store.from_bytes``),
and user code may import a module by its old name; both keep working: an old path resolves to the module's
place in its package. Nothing is imported until an old path is asked for.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "table": ("optable", "ops", "ops_extra"),
    "ir": ("tape", "listing", "structure", "validate", "store", "interpret"),
    "tracing": ("recorder", "dtypes", "tracer", "elementwise", "numpy_api", "numpy_more", "numpy_stats", "linalg",
                "linalg_jacobi", "maparray", "mapfuse", "record"),
    "transforms": ("ad", "maps_ad", "simplify", "higher", "separable", "sparsity", "kernelspec"),
    "backend": ("llvm_text", "stores", "loops", "chunking", "batchloops", "codegen", "cache", "jit", "native",
                "custom"),
    "runtime": ("threads", "binding", "branches", "derived_cache", "calls", "derivatives", "assemble", "export"),
    "distributed": ("dask_array", "worker"),
}
NEW_PATH = {f"tapead.{m}": f"tapead.{pkg}.{m}" for pkg, mods in MOVED.items() for m in mods}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        sys.modules[module.__spec__.name] = module


class OldPaths(importlib.abc.MetaPathFinder):
    """``import tapead.store`` gives ``tapead.ir.store`` (the same module object)."""

    def find_spec(self, fullname, path, target=None):
        new = NEW_PATH.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def module(name: str):
    """``tapead.<name>`` for an old module name (attribute access on the package), or None."""
    new = NEW_PATH.get(f"tapead.{name}")
    return importlib.import_module(new) if new else None


if not any(isinstance(f, OldPaths) for f in sys.meta_path):
    sys.meta_path.append(OldPaths())
