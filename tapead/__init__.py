"""tapead: record a numpy-style function once, compile its derivatives to native kernels, replay them fast.

``record`` returns a ``Function``: the recorded ``Tape`` (the IR, ``.tape``) with the methods that evaluate it.
"""
from .api import (evaluate, grad, hessian_tape, hvp_tape, jacobian_tape, jvp, load, record, save, simplify,
                  sparse_hessian_tape, sparse_jacobian_tape, value_and_grad, value_gradient_hessian_tape, vjp)
from .errors import BranchError, CompileError, InputError, TapeadError, TapeFormatError, TracingError
from .backend.custom import custom_op
from .function import Function
from .tracing.numpy_api import where
from .table.ops import OPS
from .ir.tape import Tape
from .transforms.sparsity import color_columns, to_scipy

from .version import __version__
from . import legacy


def __getattr__(name: str):
    """The backend (llvmlite) loads on first use, so the IR, the transforms and the interpreter import without
    it: ``tapead.cache`` is resolved here, and so are the module names of releases before the layer packages
    (``tapead.calls`` is ``tapead.runtime.calls``)."""
    moved = legacy.module(name)
    if moved is None:
        raise AttributeError(f"module 'tapead' has no attribute {name!r}")
    return moved


__all__ = ["record", "Function", "Tape", "custom_op", "load", "save", "cache", "jacobian_tape", "hessian_tape",
           "hvp_tape", "value_gradient_hessian_tape", "sparse_jacobian_tape", "sparse_hessian_tape", "color_columns",
           "to_scipy", "grad", "value_and_grad", "jvp", "vjp", "simplify", "where", "evaluate", "OPS",
           "TapeadError", "TracingError", "InputError", "BranchError", "TapeFormatError", "CompileError"]
