"""Native methods: ``fun.value(x)`` and ``fun.gradient(x, out=g)`` answered by compiled code with no Python frame.

A small call's cost was mostly Python's: the method call, its keyword arguments, the checks before the native
entry (about 0.1 us of a 0.2 us gradient). Once a kernel is compiled, its ``@name_method`` entry
(``native.lower_method``: the method's own arguments, keywords matched by identity) is wrapped as a builtin and
stored on the Function as an instance attribute, which shadows the class's method: ``fun.gradient`` is then the
builtin itself (small batches with ``out=`` included). A call it cannot answer exactly (another dtype, a list,
a large batch, ``threads`` other than None or 1, a failed guard) goes, with its own arguments, to the class's
Python method, so results and errors never depend on which path answered. ``type(fun).gradient`` is always the
Python method.
"""
from __future__ import annotations

import functools
import inspect
import weakref

import numpy as np

from ..backend.native import builtin
from ..transforms import kernelspec


class MethodFallback:
    """What a native method hands every call it cannot answer: the Function's Python method.

    The native method is stored on its Function, so this holds the Function weakly (a strong reference would be
    a cycle: kernels freed only by the cycle collector); a caller that kept only the method (``g =
    fun.gradient``) and dropped the Function gets, on first need, a Function of the same tape with the same
    recording and branch settings. ``keep`` holds what the native code needs alive (its kernel, method record).
    """

    __slots__ = ("ref", "method", "revive", "keep")

    def __init__(self, fun, name: str, cls):
        self.ref = weakref.ref(fun)
        self.method = getattr(cls, name)
        self.revive = (cls, fun.tape, dict(fn=fun.fn, on_branch=fun.on_branch, guard_sites=fun.guard_sites,
                                           structured=fun.structured))
        self.keep = None

    def function(self):
        fun = self.ref()
        if fun is None:
            cls, tape, settings = self.revive
            fun = cls(tape, **settings)
            self.ref = lambda: fun  # (no cycle: that Function does not hold this method)
        return fun

    def __call__(self, *args, **kwargs):
        return self.method(self.function(), *args, **kwargs)


class MethodSelf(tuple):
    """The native method's ``self``: ``(fallback, allocate, batches, takes threads)``, what the entry reads (a
    tuple's items, at the offset ``native.lower_method`` reads them). A builtin pickles as ``getattr(self,
    name)``: this pickles as its Function, so a pickled method is that Function's method (multiprocessing,
    Dask)."""

    __slots__ = ()

    def __reduce__(self):
        return self[0].function().__reduce__()


def bind_method(fun, spec, k) -> None:
    """Make the Function's method of this kernel's kind (``fun.value``, ``fun.gradient``) the kernel's native
    method entry, where the kind has one (``KernelSpec.method``), and bind its aliases (``alias``). The builtin
    keeps the kernel alive: a caller may hold the method longer than the Function, or across a background O2
    swap (which binds the new one)."""
    if spec.method is None:
        return
    fun.state.bound[spec.kind] = (spec, k)
    batches = spec.kind not in fun.state.mixed
    _bind(fun, kernelspec.KINDS[spec.kind].public, spec, k, batches)
    for ref, name, kind in fun.state.aliases:
        owner = ref()
        if owner is not None and kind == spec.kind:
            _bind(owner, name, spec, k, batches)


def rebind(fun, kind: str) -> None:
    """Bind the native methods of ``kind`` again after the Python path changed its mind about batches with
    points on other paths (``fun.state.mixed``): while it expects them, the native method leaves batches to it
    (its loop with statuses), rather than running a loop whose guards fail and then the Python path's too."""
    hit = fun.state.bound.get(kind)
    if hit is not None:
        bind_method(fun, *hit)


def alias(fun, owner, name: str, kind: str = "value") -> None:
    """Answer ``owner.<name>(...)`` with ``fun``'s native method of ``kind`` now and after every rebinding (an
    O2 swap): for a method whose arguments are that method's (``owner.hessian(x, params=, out=)`` is its dense
    Hessian Function's ``value``). The caller checks the out shapes agree."""
    if not any(ref() is owner and n == name for ref, n, _ in fun.state.aliases):
        fun.state.aliases.append((weakref.ref(owner), name, kind))
        hit = fun.state.bound.get(kind)
        if hit is not None:
            _bind(owner, name, *hit, kind not in fun.state.mixed)


def _bind(owner, name: str, spec, k, batches: bool) -> None:
    cls = next(c for c in type(owner).__mro__ if name in c.__dict__)  # the class defining the method
    if cls is not type(owner).__mro__[-2]:  # not Function's own: a subclass overrides it, every call reaches it
        return
    out_slot, allocate = spec.method
    shape = spec.out_shapes[out_slot - len(spec.in_shapes) - 1] if out_slot is not None else None
    fallback = MethodFallback(owner, name, cls)
    doc, takes_threads = _described(fallback.method)
    fn, record = builtin(k.addresses[spec.name + "_method"], name,
                         MethodSelf((fallback, functools.partial(np.empty, shape) if allocate else None, batches,
                                     takes_threads)), keywords=True, doc=doc)
    fallback.keep = (k, record)
    owner.__dict__[name] = fn


@functools.lru_cache(maxsize=None)
def _described(method) -> tuple[str, bool]:
    """``(doc, takes threads)`` of a Python method, worked out once per method (methods are bound again at every
    O2 swap and change of ``mixed``). The doc is the method's docstring headed by its text signature
    (``gradient(x, /, *more, params=None, ...)`` then ``--``), which ``inspect.signature`` reads from a builtin;
    annotations and a sentinel default are left out (the text form takes literals only)."""
    sig = inspect.signature(method)
    params = [p.replace(annotation=inspect.Parameter.empty,
                        default=p.default if p.default in (None, True, False) else inspect.Parameter.empty)
              for p in list(sig.parameters.values())[1:]]
    text = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    return f"{method.__name__}{text}\n--\n\n{method.__doc__ or ''}", "threads" in sig.parameters
