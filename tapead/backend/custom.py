"""User-defined ops with their own derivative rules, for numerically better derivatives of composites.

``@tapead.custom_op`` turns a scalar function of one to three scalars (written with numpy functions) into a new
row of the op table: elementwise on traced arrays, evaluated by numpy in the interpreter, lowered to an internal
LLVM function built from its own recorded body, and differentiated by the partials the user gives, themselves
written with numpy functions on traced values (so higher derivatives work too). The function's own body is
never differentiated. Tapes using it save and load in processes that define the op under the same name.
"""
from __future__ import annotations

import inspect
import re
from typing import Callable

import numpy as np

from ..table import ops
from ..errors import TracingError
from ..ir.structure import op_codes

REGISTERED: dict = {}  # op name -> the CustomOp that owns it (a name means one function per process)


class CustomOp:
    """A function with a derivative rule; call it like a numpy ufunc, on numbers, arrays or traced values."""

    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.name = "custom." + (name or fn.__name__)
        if not re.fullmatch(r"custom\.[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"custom op names must be identifiers, got {self.name!r}")
        self.arity = len(inspect.signature(fn).parameters)
        if not 1 <= self.arity <= 3:
            raise ValueError(f"a custom op takes 1 to 3 scalar arguments; {fn.__name__} takes {self.arity}")
        self.partials: Callable | None = None
        self.row: ops.Op | None = None
        self.__doc__, self.__name__ = fn.__doc__, fn.__name__

    def derivative(self, partials: Callable) -> Callable:
        """Decorate ``partials(*args) -> (d out/d arg for each arg)`` (None for a zero partial)."""
        self.partials = partials
        self.row = None
        return partials

    def _register(self) -> ops.Op:
        from .codegen import lower_function
        from ..tracing.record import trace
        if self.partials is None:
            raise TracingError(f"{self.name}: give its derivative with @{self.fn.__name__}.derivative first")
        owner = REGISTERED.get(self.name)
        if owner is not None and owner is not self:
            raise TracingError(f"another custom op is already named {self.name!r}; tapes refer to ops by name, so "
                             "give this one its own: @tapead.custom_op(name='...')")
        REGISTERED[self.name] = self
        body, _ = trace(lambda *a: self.fn(*a), *([0.5] * self.arity), on_branch="forbid", structured=False)
        used = [ops.BY_CODE[c] for c in op_codes(body)]
        fname = "tapead_" + self.name.replace(".", "_")
        partials, arity = self.partials, self.arity

        def rule(g, *args_out):
            ps = partials(*args_out[:arity])
            ps = ps if isinstance(ps, tuple) else (ps,)
            if len(ps) != arity:
                raise TracingError(f"{self.name}: its derivative returned {len(ps)} partials for {arity} arguments")
            return tuple(None if p is None else g * p for p in ps)

        def numpy_eval(*arrays):
            return np.asarray(self.fn(*arrays), dtype=np.float64)

        args = ", ".join(f"double {{{i}}}" for i in range(arity))
        ops.op(self.name, arity, numpy_eval, f"{{out}} = call double @{fname}({args})",
               libm=sorted({f for row in used for f in row.libm}),
               definition=lower_function(body, fname),
               uses=tuple(row.name for row in used if row.definition), note="user-defined")(rule)
        self.row = ops.OPS[self.name]
        return self.row

    def __call__(self, *args):
        if len(args) != self.arity:
            raise TypeError(f"{self.fn.__name__} takes {self.arity} arguments, got {len(args)}")
        from ..tracing.tracer import Scalar, TracedArray, elementwise
        if not any(isinstance(a, (Scalar, TracedArray)) for a in args):
            out = self.fn(*(np.asarray(a, dtype=np.float64) for a in args))  # plain numbers: plain numpy
            return float(out) if np.ndim(out) == 0 else np.asarray(out, dtype=np.float64)
        row = self.row or self._register()
        return elementwise(row, *args)


def custom_op(fn: Callable | None = None, *, name: str | None = None):
    """Make ``fn`` (1-3 scalar arguments, numpy functions, no branches) an op with its own derivative::

        @tapead.custom_op
        def softplus(x):
            return np.log1p(np.exp(x))          # the value (overflows for large x: a better body may branch-free
                                                # use np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))))
        @softplus.derivative
        def _(x):
            return (1 / (1 + np.exp(-x)),)       # exact and finite everywhere
    """
    if fn is None:
        return lambda f: CustomOp(f, name)
    return CustomOp(fn, name)
