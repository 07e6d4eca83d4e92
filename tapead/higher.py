"""Jacobians, Hessians and Hessian-vector products as tape transforms, and the calls that evaluate them.

Every transform here is Tape -> Tape, built by composing the sweeps of ``ad.py``: a Jacobian is one forward
sweep per input direction or one reverse sweep per output; a Hessian is forward-over-reverse (the reverse
sweep is recorded as a gradient tape, then swept forward along unit tangents). Derived tapes are ordinary
tapes: printable, compilable, and differentiable again. The evaluation functions follow ``calls.py``: the
batch rule, ``out=`` arrays filled in place, and derived tapes built and compiled once per tape.
"""
from __future__ import annotations

import numpy as np

import functools

from . import ad
from .ad import _ids, _keep_guards, backward, forward, fresh, replay
from .arrays import as_float_array, check_aliasing, check_out
from .binding import bind, named_inputs
from .errors import BranchError, InputError
from . import separable
from .structure import scalar
from .tape import Tape

_MODES = ("auto", "forward", "reverse")


# ---- building blocks ----------------------------------------------------------------------------------
def seed(n: int, hot) -> list:
    """A tangent (or cotangent) list of length ``n``: constant 1.0 at the indices in ``hot``, None elsewhere.

    Constant seeds fold while recording (``1.0 * x`` is ``x``, absent tangents stay absent), so each sweep
    records only the instructions its direction actually reaches.
    """
    s: list = [None] * n
    for i in hot:
        s[i] = 1.0
    return s


def tangent_sweeps(tape: Tape, directions: list) -> tuple:
    """Replay ``tape`` on fresh tracers and sweep forward once per direction (a collection of input indices,
    all seeded with 1.0). Returns ``(recorder, slot values, T)`` with ``T[d][k]`` the tangent of output ``k``
    along direction ``d`` (a tracer, a float or None for zero). Forward mode reads scalar instructions: pass a
    tape without maps (``structure.scalar``), whose slots the returned values are indexed by."""
    if tape.maps:
        raise ValueError("tangent_sweeps needs a tape without maps: pass structure.scalar(tape)")
    rec, xs, ps = fresh(tape)
    vals = replay(tape, xs, ps)
    _keep_guards(rec, tape, vals)
    outs = tape.outputs.tolist()
    columns = []
    for hot in directions:
        tan = forward(tape, vals, seed(tape.n_inputs, hot))
        columns.append([tan[s] for s in outs])
    return rec, vals, columns


def _finish(rec, tape: Tape, values: list, output_shape, input_shapes=None) -> Tape:
    return rec.finish(_ids(rec, ad._zero_if_none(values)), output_shape,
                      tape.input_shapes if input_shapes is None else input_shapes, tape.param_shape)


def _resolve(tape: Tape, mode: str) -> str:
    if mode not in _MODES:
        raise InputError(f"mode={mode!r}: expected one of {', '.join(map(repr, _MODES))}")
    if mode == "auto":
        return "forward" if tape.n_inputs <= tape.n_outputs else "reverse"
    return mode


def _jacobian_matrix(tape: Tape, mode: str) -> tuple:
    """(recorder, J) with J[i][j] = d output i / d input j, as recorded values (tracers, floats or None)."""
    m, n = tape.n_outputs, tape.n_inputs
    if _resolve(tape, mode) == "forward":
        rec, _, cols = tangent_sweeps(scalar(tape), [(j,) for j in range(n)])
        return rec, [[cols[j][i] for j in range(n)] for i in range(m)]
    rec, xs, ps = fresh(tape)
    vals = replay(tape, xs, ps)
    _keep_guards(rec, tape, vals)
    return rec, [backward(tape, vals, seed(m, (i,))) for i in range(m)]


def _offsets(tape: Tape) -> list[int]:
    return [0] + np.cumsum(tape.input_sizes).tolist()


# ---- transforms: Tape -> Tape -------------------------------------------------------------------------
def jacobian_tape(tape: Tape, mode: str = "auto") -> Tape:
    """The dense Jacobian tape: same inputs and params, output shape ``output_shape + (n_inputs,)`` (inputs of
    all arguments flattened, in order).

    ``mode="forward"`` records one forward sweep per input, ``"reverse"`` one reverse sweep per output;
    ``"auto"`` picks forward when ``n_inputs <= n_outputs`` (fewer sweeps), else reverse.
    """
    rec, J = _jacobian_matrix(tape, mode)
    flat = [v for row in J for v in row]
    return _finish(rec, tape, flat, tape.output_shape + (tape.n_inputs,))


def _jacobian_blocks_tape(tape: Tape, mode: str) -> Tape:
    """The Jacobian with one contiguous block per argument (``output_shape + shape_k``), flattened and concatenated."""
    rec, J = _jacobian_matrix(tape, mode)
    off = _offsets(tape)
    flat = [J[i][j] for k in range(len(tape.input_shapes)) for i in range(tape.n_outputs)
            for j in range(off[k], off[k + 1])]
    return _finish(rec, tape, flat, (len(flat),))


def _scalar(tape: Tape) -> None:
    if tape.n_outputs != 1:
        raise InputError(f"the Hessian needs a scalar-valued tape; this one has output shape "
                         f"{tape.output_shape}: use weights=True (hessian_tape) or weights=w (hessian) for the "
                         "Hessian of w . f")


def _gradient_program(tape: Tape, weights: bool) -> Tape:
    """The tape a Hessian sweeps forward: ``w^T J`` with weights, else the gradient of a scalar tape."""
    if weights:
        return ad.vjp(tape)
    _scalar(tape)
    return ad.grad(tape)


def _symmetric(T: list, n: int, row0: int = 0) -> list:
    """Dense n x n entries from forward sweeps T[j][row0 + i] = H[i, j], reading the upper triangle only
    (entry (i, j) comes from sweep max(i, j)), so dead-code elimination drops the half never read."""
    return [T[max(i, j)][row0 + min(i, j)] for i in range(n) for j in range(n)]


def _hessian_sweeps(tape: Tape, weights: bool) -> tuple:
    """The one Hessian algorithm: ``(recorder, g, first, H)`` with ``H`` the n x n entries (row-major) of the forward
    sweeps along each unit vector of the gradient program ``g``, upper triangle read and mirrored (so exactly
    symmetric), and ``first`` the outputs of ``g`` (``[value, gradient]`` for a scalar tape).

    ``hessian_tape`` and ``value_gradient_hessian_tape`` finish the same recording with different outputs, so
    every entry is the same sequence of operations in both: the Hessian of ``tape.hessian``,
    ``value_gradient_hessian``, ``assemble_hessian`` and the exported C function agree bit for bit."""
    if not weights:
        _scalar(tape)
    g, row0 = (ad.vjp(tape), 0) if weights else (ad.value_and_grad(tape), 1)
    g = scalar(g)  # forward sweeps read scalar instructions, and the slots read below are the sweeps' slots
    n = tape.n_inputs
    rec, vals, T = tangent_sweeps(g, [(j,) for j in range(n)])
    return rec, g, [vals[s] for s in g.outputs.tolist()], _symmetric(T, n, row0)


def hessian_tape(tape: Tape, weights: bool = False) -> Tape:
    """The dense, symmetric Hessian tape ``(n_inputs, n_inputs)`` of a scalar tape, by forward-over-reverse.

    With ``weights=True`` (for vector-valued tapes) the tape takes an extra last input ``w`` shaped like the
    output and returns the Hessian of ``w . f`` (the Lagrangian Hessian).

    A partially separable tape (a sum over a loop reading inputs, ``tapead.separable``) gets the loop's small
    Hessian scattered into place instead.
    """
    if not weights:
        sep = separable.hessian(tape, hessian_tape, False)
        if sep is not None:
            return sep
    rec, g, _, H = _hessian_sweeps(tape, weights)
    return _finish(rec, g, H, (tape.n_inputs, tape.n_inputs))


def dense_hessian(tape: Tape, weights: bool = False) -> Tape:
    """``hessian_tape(tape, weights)`` built once per tape (cached): the tape that ``tape.hessian``, assembly and
    ``export(hessian=True)`` all evaluate."""
    return derived(tape, ("hessian_tape", weights), lambda: hessian_tape(tape, weights))


def hvp_tape(tape: Tape) -> Tape:
    """Hessian-vector products of a scalar tape: inputs ``(x..., v...)`` (``v`` shaped like the arguments),
    output ``H(x) v`` flattened ``(n_inputs,)``; forward-over-reverse, i.e. ``jvp(grad(tape))``."""
    return ad.jvp(_gradient_program(tape, False))


def value_gradient_hessian_tape(tape: Tape) -> Tape:
    """One tape with outputs ``[value, gradient (n), Hessian (n * n, row-major)]`` of a scalar tape."""
    sep = separable.hessian(tape, hessian_tape, True)
    if sep is not None:
        return sep
    rec, g, first, H = _hessian_sweeps(tape, False)
    n = tape.n_inputs
    return _finish(rec, g, first + H, (1 + n + n * n,))


# ---- evaluation ----------------------------------------------------------------------------------------
def follows_branches(fn):
    """Derivatives of a guarded tape at a point where the function takes another path are taken on that path
    (found or recorded as for ``tape.gradient``). Batches whose points take other paths raise BranchError."""
    @functools.wraps(fn)
    def wrapper(tape: Tape, *args, params=None, **kwargs):
        try:
            return fn(tape, *args, params=params, **kwargs)
        except BranchError as e:
            if tape.on_branch != "retape" or tape.fn is None:
                raise BranchError(f"{e}" if tape.fn is None else "the function takes another path here than "
                                  "the one recorded (on_branch='raise'); record it again at this input") from None
            b = bind(tape, args, params)
            if b.n is not None:
                raise BranchError("some points of this batch take another path through the function than the one "
                                  "recorded: evaluate those points one at a time") from None
        from .branches import path_at
        return fn(path_at(tape, b.xs, b.p), *args, params=params, **kwargs)
    return wrapper


def derived(tape: Tape, key: tuple, build):
    """The derived object cached under ``key`` in ``tape._cache`` (built once; its kernels compile once)."""
    hit = tape._cache.get(key)
    if hit is None:
        from .derived_cache import derived_tape
        hit = tape._cache.setdefault(key, derived_tape(tape, key, build))
    return hit


def _lead(b) -> tuple:
    return () if b.n is None else (b.n,)


def _scalar_or(a: np.ndarray):
    return float(a) if a.shape == () else a


def _extra(a, shape: tuple, lead: tuple, what: str) -> np.ndarray:
    """An extra argument (v, w) shaped ``lead + shape``; one shared value is broadcast over a batch."""
    a = as_float_array(a, what)
    if a.shape == lead + shape:
        return a
    if lead and a.shape == shape:
        return np.ascontiguousarray(np.broadcast_to(a, lead + shape))
    raise InputError(f"{what}: shape {a.shape}, expected {lead + shape}"
                     + (f" (or {shape}, shared by every point)" if lead else ""))


def _per_argument(tape: Tape, vs, lead: tuple, what: str) -> list:
    if len(tape.input_shapes) == 1:
        vs = (vs,)
    elif not isinstance(vs, (tuple, list)) or len(vs) != len(tape.input_shapes):
        raise InputError(f"{what}: expected a tuple of {len(tape.input_shapes)} arrays (one per argument, shaped "
                         f"{', '.join(map(str, tape.input_shapes))})")
    return [_extra(v, s, lead, f"{what}[{i}]" if len(tape.input_shapes) > 1 else what)
            for i, (v, s) in enumerate(zip(vs, tape.input_shapes))]


def _flat_out(out, shapes: list, lead: tuple, total: int) -> tuple:
    """A flat result buffer ``lead + (total,)`` and the user's out arrays to copy into afterwards (if any).

    With one piece the user's ``out`` becomes the buffer itself (a reshaped view, filled in place)."""
    if out is None:
        return np.empty(lead + (total,)), None
    if len(shapes) == 1:
        return check_out(out, shapes[0], "out").reshape(lead + (total,)), None
    if not isinstance(out, (tuple, list)) or len(out) != len(shapes):
        raise InputError(f"out: expected a tuple of {len(shapes)} arrays shaped {shapes} (one per argument)")
    return np.empty(lead + (total,)), [check_out(o, s, f"out[{i}]") for i, (o, s) in enumerate(zip(out, shapes))]


def _pieces(flat: np.ndarray, lead: tuple, shapes: list, sizes: list) -> list:
    """Views of consecutive pieces of the last axis of ``flat``, reshaped to ``lead + shape`` each."""
    res, off = [], 0
    for s, k in zip(shapes, sizes):
        res.append(flat[..., off:off + k].reshape(lead + s))
        off += k
    return res


def _deliver(pieces: list, copies):
    if copies is not None:
        for o, p in zip(copies, pieces):
            np.copyto(o, p)
        pieces = copies
    return _scalar_or(pieces[0]) if len(pieces) == 1 else tuple(pieces)


@follows_branches
def jacobian(tape: Tape, *args, params=None, out=None, mode: str = "auto"):
    """The Jacobian at a point (or batch): for one argument an array ``output_shape + input_shape``, for several
    a tuple of per-argument Jacobians (e.g. df/dx, df/du). ``out=`` (array, or tuple per argument) is filled."""
    b = bind(tape, args, params)
    lead = _lead(b)
    _resolve(tape, mode)
    d = derived(tape, ("jacobian_blocks_tape", mode), lambda: _jacobian_blocks_tape(tape, mode))
    shapes = [lead + tape.output_shape + s for s in tape.input_shapes]
    sizes = [tape.n_outputs * k for k in tape.input_sizes]
    flat, copies = _flat_out(out, shapes, lead, sum(sizes))
    if out is not None:
        check_aliasing([("out", flat)] if copies is None else [(f"out[{i}]", o) for i, o in enumerate(copies)],
                       named_inputs(b))
    d.value(*b.xs, params=b.p, out=flat)
    return _deliver(_pieces(flat, lead, [tape.output_shape + s for s in tape.input_shapes], sizes), copies)


def _blocks(tape: Tape, H: np.ndarray, lead: tuple):
    """Split a dense ``lead + (n, n)`` Hessian into per-argument blocks (views)."""
    shapes, off = tape.input_shapes, _offsets(tape)
    if len(shapes) == 1:
        return _scalar_or(H.reshape(lead + shapes[0] + shapes[0]))
    return tuple(tuple(H[..., off[i]:off[i + 1], off[j]:off[j + 1]].reshape(lead + shapes[i] + shapes[j])
                       for j in range(len(shapes))) for i in range(len(shapes)))


@follows_branches
def hessian(tape: Tape, *args, params=None, out=None, weights=None):
    """The Hessian of a scalar tape (``input_shape + input_shape``; for several arguments a tuple of tuples of
    blocks ``H[i][j] = d2f / dx_i dx_j``), or of ``weights . f`` for a vector-valued tape. ``out=`` (single
    argument only) is filled in place."""
    b = bind(tape, args, params)
    lead, n = _lead(b), tape.n_inputs
    xs = list(b.xs)
    if weights is not None:
        xs.append(_extra(weights, tape.output_shape, lead, "weights"))
    if out is not None and len(tape.input_shapes) != 1:
        raise InputError("out= is supported for single-argument tapes only; call without out= to get the blocks")
    s = tape.input_shapes[0] if len(tape.input_shapes) == 1 else None
    H = (np.empty(lead + (n, n)) if out is None else
         check_out(out, lead + s + s, "out").reshape(lead + (n, n)))
    if out is not None:
        check_aliasing([("out", H)], named_inputs(b) + [("weights", xs[-1] if weights is not None else None)])
    dense_hessian(tape, weights is not None).value(*xs, params=b.p, out=H)
    return _blocks(tape, H, lead)


def _directions(tape: Tape, b, lead: tuple, vs_raw: list, shapes: list):
    """At a single point, a stack of k directions (one extra leading axis) runs as one batch over directions:
    the point is repeated k times and the batch kernel loops over directions natively."""
    if lead or not vs_raw:
        return b.xs, lead
    arrays = [np.asarray(v) for v in vs_raw]
    if all(a.ndim == len(s) + 1 and a.shape[1:] == s for a, s in zip(arrays, shapes)) and \
            len({a.shape[0] for a in arrays}) == 1:
        k = arrays[0].shape[0]
        return [np.ascontiguousarray(np.broadcast_to(x, (k,) + x.shape)) for x in b.xs], (k,)
    return b.xs, lead


def _raw(tape: Tape, v) -> list:
    return [v] if len(tape.input_shapes) == 1 else list(v) if isinstance(v, (tuple, list)) else [v]


@follows_branches
def hvp(tape: Tape, *args, v, params=None):
    """``H(x) v`` for a scalar tape; ``v`` shaped like the argument (a tuple for several arguments; one shared
    ``v`` may serve a whole batch; at a single point, a stack of k directions ``(k,) + shape`` runs as one native
    loop over directions). The result is shaped like the arguments, like the gradient."""
    b = bind(tape, args, params)
    xs, lead = _directions(tape, b, _lead(b), _raw(tape, v), list(tape.input_shapes))
    vs = _per_argument(tape, v, lead, "v")
    d = derived(tape, ("hvp_tape",), lambda: hvp_tape(tape))
    flat = d.value(*xs, *vs, params=b.p)
    return _deliver(_pieces(flat, lead, list(tape.input_shapes), list(tape.input_sizes)), None)


@follows_branches
def jvp(tape: Tape, *args, v, params=None):
    """The directional derivative ``J(x) v`` (shaped like the output); ``v`` like the arguments (tuple for
    several; one shared ``v`` may serve a whole batch; at a single point, a stack of k directions runs as one
    native loop over directions)."""
    b = bind(tape, args, params)
    xs, lead = _directions(tape, b, _lead(b), _raw(tape, v), list(tape.input_shapes))
    vs = _per_argument(tape, v, lead, "v")
    d = derived(tape, ("jvp_tape",), lambda: ad.jvp(tape))
    return d.value(*xs, *vs, params=b.p)


@follows_branches
def vjp(tape: Tape, *args, w, params=None):
    """``w^T J(x)`` (``w`` shaped like the output, shared or per point in a batch; at a single point a stack of
    k cotangents runs as one native loop), shaped like the arguments (a tuple for several)."""
    b = bind(tape, args, params)
    xs, lead = _directions(tape, b, _lead(b), [w], [tape.output_shape])
    ws = _extra(w, tape.output_shape, lead, "w")
    d = derived(tape, ("vjp_tape",), lambda: ad.vjp(tape))
    flat = d.value(*xs, ws, params=b.p)
    return _deliver(_pieces(flat, lead, list(tape.input_shapes), list(tape.input_sizes)), None)


@follows_branches
def value_gradient_hessian(tape: Tape, *args, params=None):
    """``(value, gradient, Hessian)`` of a scalar tape from one kernel, shaped as ``value``, ``gradient`` and
    ``hessian`` return them."""
    b = bind(tape, args, params)
    lead, n = _lead(b), tape.n_inputs
    d = derived(tape, ("value_gradient_hessian_tape",), lambda: value_gradient_hessian_tape(tape))
    flat = np.empty(lead + (1 + n + n * n,))
    d.value(*b.xs, params=b.p, out=flat)
    value = _scalar_or(flat[..., 0])
    grads = _deliver(_pieces(flat[..., 1:1 + n], lead, list(tape.input_shapes), list(tape.input_sizes)), None)
    return value, grads, _blocks(tape, flat[..., 1 + n:].reshape(lead + (n, n)), lead)


__all__ = ["jacobian_tape", "hessian_tape", "hvp_tape", "value_gradient_hessian_tape", "dense_hessian", "jacobian",
           "hessian", "hvp", "jvp", "vjp", "value_gradient_hessian", "tangent_sweeps", "seed", "derived"]
