"""tapead: record a numpy-style function once, compile its derivatives to native kernels, replay them fast.

``record`` returns a ``Function``: the recorded ``Tape`` (the IR, ``.tape``) with the methods that evaluate it.
"""
from .api import (evaluate, grad, hessian_tape, hvp_tape, jacobian_tape, jvp, load, record, save, simplify,
                  sparse_hessian_tape, sparse_jacobian_tape, value_and_grad, value_gradient_hessian_tape, vjp)
from .errors import BranchError, CompileError, InputError, TapeadError, TapeFormatError, TracingError
from .custom import custom_op
from .function import Function
from .numpy_api import where
from .ops import OPS
from .tape import Tape
from .sparsity import color_columns, to_scipy

__version__ = "0.1.0"


def __getattr__(name: str):
    """The backend (llvmlite) loads on first use, so the IR, the transforms and the interpreter import without
    it: ``tapead.cache`` is resolved here."""
    if name == "cache":
        import importlib
        return importlib.import_module(".cache", __name__)
    raise AttributeError(f"module 'tapead' has no attribute {name!r}")

__all__ = ["record", "Function", "Tape", "custom_op", "load", "save", "cache", "jacobian_tape", "hessian_tape",
           "hvp_tape", "value_gradient_hessian_tape", "sparse_jacobian_tape", "sparse_hessian_tape", "color_columns",
           "to_scipy", "grad", "value_and_grad", "jvp", "vjp", "simplify", "where", "evaluate", "OPS",
           "TapeadError", "TracingError", "InputError", "BranchError", "TapeFormatError", "CompileError"]
