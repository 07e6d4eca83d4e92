"""tapead: record a numpy-style function once, compile its derivatives to native kernels, replay them fast."""
from .ad import grad, jvp, value_and_grad, vjp
from .errors import BranchError, CompileError, InputError, TapeadError, TapeFormatError, TracingError
from .custom import custom_op
from .numpy_api import where
from .ops import OPS
from .record import record
from .simplify import simplify
from .tape import Tape
from .store import load, save
from .binding import evaluate
from .higher import hessian_tape, hvp_tape, jacobian_tape, value_gradient_hessian_tape
from .sparsity import color_columns, sparse_hessian_tape, sparse_jacobian_tape, to_scipy

__version__ = "0.1.0"


def __getattr__(name: str):
    """The backend (llvmlite) loads on first use, so the IR, the transforms and the interpreter import without
    it: ``tapead.cache`` is resolved here."""
    if name == "cache":
        import importlib
        return importlib.import_module(".cache", __name__)
    raise AttributeError(f"module 'tapead' has no attribute {name!r}")

__all__ = ["record", "Tape", "custom_op", "load", "save", "cache", "jacobian_tape", "hessian_tape", "hvp_tape",
           "value_gradient_hessian_tape", "sparse_jacobian_tape", "sparse_hessian_tape", "color_columns",
           "to_scipy", "grad", "value_and_grad", "jvp", "vjp", "simplify", "where", "evaluate", "OPS",
           "TapeadError", "TracingError", "InputError", "BranchError", "TapeFormatError", "CompileError"]
