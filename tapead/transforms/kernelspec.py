"""What a compiled kernel is, decided in one place: its kind, argument and output groups, batch layouts, entry
point and target.

A ``KernelSpec`` is built by ``spec`` (the JIT's kernels) or ``export_spec`` (exported objects) and read by
everything that needs it: code generation (``codegen.lower_kernel``: which functions to define), the JIT (the
symbols a cached object must define and their ctypes signatures), the native entry points (argument shapes),
branch dispatch (``KINDS[kind].derive``: which tape answers a kind on another path) and export (the public
wrappers). Adding a kernel kind is one ``Kind`` row here: how its tape derives from the recorded one, how its
outputs group, and the name export gives it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import ad, higher
from ..ir.structure import records, work
from ..ir.tape import Tape

FALLBACK = object()  # what a native entry returns when the Python path must handle a call (runtime and backend)

# The compile policy, in one place. A first compile must be quick (O0: ~50 us per op, linear once kernels are
# chunked, see codegen.CHUNK); O2 costs 10-50x more but runs up to a few times faster, so only small tapes get it
# at once and larger ones get it from a background process (calls._upgrade), at every size. Export compiles O2.
O2_LIMIT = 300  # records compiled at O2 at once
ONE_LOOP_LIMIT = 2000  # records up to which an O2 build also gets the value-and-gradient batch loop (it inlines
# the whole kernel once more)


def first_level(n_records: int) -> int:
    """The optimisation level of a kernel's first compile."""
    return 2 if n_records <= O2_LIMIT else 0


def fast_batch_name(name: str, mask) -> str:
    """The symbol of the batch loop writing only the output groups ``mask`` selects."""
    return f"{name}_batch_" + "".join("1" if m else "0" for m in mask)


@dataclass(frozen=True)
class Kind:
    """One kind of kernel: the tape it compiles and how its outputs are grouped (one pointer per group)."""

    derive: Callable[[Tape], Tape]  # the recorded tape -> the tape this kind compiles (a pure transform)
    cache_key: tuple  # the derived tape's key in the disk cache (``derived_cache``)
    out_groups: Callable[[Tape], list]  # the recorded tape -> output group sizes
    out_shapes: Callable[[Tape], list]  # ... and their shapes (the native entry point's out arrays)
    public: str  # the name of its exported C functions (``NAME_<public>``, ``NAME_<public>_batch``)
    c_groups: Callable[[Tape], list]  # output group sizes of the exported C functions (one x, flat outputs)
    scalar_only: bool = False  # defined for scalar-output tapes only


KINDS: dict[str, Kind] = {
    "value": Kind(lambda t: t, ("value",), lambda t: [t.n_outputs],
                  lambda t: [] if t.output_shape == () else [t.output_shape], "value",
                  lambda t: [t.n_outputs]),
    "value_and_gradient": Kind(ad.value_and_grad, ("derived", "value_and_gradient"), lambda t: [1] + list(t.input_sizes),
                               lambda t: [()] + list(t.input_shapes), "gradient",
                               lambda t: [1, t.n_inputs], scalar_only=True),
    "hessian": Kind(higher.hessian_tape, ("hessian_tape", False), lambda t: [t.n_inputs * t.n_inputs],
                    lambda t: [t.input_shapes[0] * 2] if len(t.input_shapes) == 1 else [(t.n_inputs,) * 2],
                    "hessian", lambda t: [t.n_inputs * t.n_inputs], scalar_only=True),
}


ENTRY = {kind: i for i, kind in enumerate(KINDS)}  # index of each kind's native entry point in Function._entries


@dataclass(frozen=True)
class KernelSpec:
    """One kernel: ``@name`` (a point), ``@name_batch`` (a loop over points), ``@name_batch_<mask>`` per fast
    mask (a loop writing only those output groups) and, with ``entry``, ``@name_entry`` (the native Python
    entry point, a METH_FASTCALL function checking its arguments before calling ``@name``)."""

    kind: str
    name: str
    in_groups: tuple[int, ...]
    out_groups: tuple[int, ...]
    in_shapes: tuple
    param_shape: tuple | None
    out_shapes: tuple  # the entry point's out arrays (none for a scalar result, returned as a float)
    scalar_result: bool
    fast_masks: tuple = ()  # batch layouts with a loop of their own (see ``batchloops.fast_batch``)
    flat_batches: bool = False  # the batch loops call an unrolled copy of a tape with loops
    entry: bool = True
    opt: int = 2
    cpu: str | None = None  # None: the host's CPU and features

    @property
    def entries(self) -> list[str]:
        """The native Python entry points the object defines: ``@name_entry`` with an entry, and
        ``@name_method`` where the kind's Function method maps onto the kernel (``method``)."""
        return ([self.name + "_entry"] if self.entry else []) + \
            ([self.name + "_method"] if self.entry and self.method is not None else [])

    @property
    def method(self) -> tuple[int | None, bool] | None:
        """How the Function method of this kind (``value``, ``gradient``) maps onto the entry's arguments
        ``(inputs..., params, outs...)``: ``(the slot out= fills or None, whether a missing out is allocated)``;
        None where the method takes another form (several arguments' gradients: a tuple of outs)."""
        n = len(self.in_shapes)
        if self.kind == "value":
            return (None, False) if self.scalar_result else (n + 1, True)
        if self.kind == "value_and_gradient" and n == 1:
            return n + 2, True
        return None

    @property
    def symbols(self) -> list[str]:
        """The functions a compiled object of this spec must define (checked before cached code runs)."""
        return [self.name, self.name + "_batch"] + self.entries + [fast_batch_name(self.name, m)
                                                                   for m in self.fast_masks]

    def key_text(self) -> str:
        """Everything but the tape and the generator that decides the kernel's IR text."""
        return repr((self.kind, self.name, self.in_groups, self.out_groups, self.in_shapes, self.param_shape,
                     self.out_shapes, self.scalar_result, self.fast_masks, self.flat_batches, self.entry))


def spec(tape: Tape, kind: str, derived: Tape, opt: int, flat: bool = False) -> KernelSpec:
    """The JIT's kernel of ``kind`` for a recorded tape (``derived``: the tape that kind compiles) at level ``opt``.

    Batch layouts: specialised loops for the output patterns the Python calls use (value | gradient without
    value | value and gradient), in O2 compiles only: each inlines the whole kernel, which O0 first compiles of
    big tapes cannot afford; big tapes get the gradient loop alone."""
    k = KINDS[kind]
    scalar_result = kind == "value" and tape.output_shape == ()
    n_args = len(tape.input_sizes)
    if opt == 0:
        masks: tuple = ()
    elif kind == "value":
        masks = ((True,),)
    else:
        size = work(derived) if flat else records(derived)  # (flat batch loops inline the unrolled tape)
        masks = ((False,) + (True,) * n_args,) + (((True,) * (1 + n_args),) if size <= ONE_LOOP_LIMIT else ())
    return KernelSpec(kind, "tapead_" + kind, tuple(tape.input_sizes), tuple(k.out_groups(tape)),
                      tuple(tape.input_shapes), tape.param_shape, tuple(k.out_shapes(tape)), scalar_result, masks,
                      flat, True, opt)


def export_spec(tape: Tape, kind: str, name: str, cpu: str | None, opt: int) -> KernelSpec:
    """An exported kernel: one input group (x), internal symbols under ``__tapead_NAME_<public>``, no entry
    point; the public C functions wrap it (``codegen.export_module``)."""
    k = KINDS[kind]
    return KernelSpec(kind, f"__tapead_{name}_{k.public}", (tape.n_inputs,), tuple(k.c_groups(tape)),
                      tuple(tape.input_shapes), tape.param_shape, tuple(k.out_shapes(tape)), False, (), False,
                      False, opt, cpu)
