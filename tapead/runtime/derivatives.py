"""Evaluating derivatives beyond the gradient: Jacobians, Hessians, HVPs, JVPs, VJPs, sparse Jacobians and
Hessians of a ``Function``.

Each builds its derived tape once with a pure transform (``higher``, ``sparsity``, ``ad``), keeps the derived
tape's Function in ``Function.derived`` (its kernels compile once) and evaluates it like ``calls.py`` does: the
batch rule, ``out=`` arrays filled in place. Where the function takes another path than the one recorded, the
derivative is taken on that path (``follows_branches``).
"""
from __future__ import annotations

import functools

import numpy as np

from ..transforms import ad
from ..arrays import as_float_array, check_aliasing, check_out
from .binding import bind, named_inputs
from .derived_cache import derived_tape
from .methods import alias
from ..errors import BranchError, InputError
from ..transforms.higher import (gradient_program, jacobian_blocks_tape, output_offsets, resolve_outputs, hessian_tape,
                                   hvp_tape, value_gradient_hessian_tape)
from ..transforms.sparsity import hessian_sparsity, jacobian_sparsity, sparse_hessian_tape, sparse_jacobian_tape


def follows_branches(fn):
    """Derivatives of a guarded fun at a point where the function takes another path are taken on that path
    (found or recorded as for ``fun.gradient``). Batches whose points take other paths raise BranchError."""
    @functools.wraps(fn)
    def wrapper(fun, *args, params=None, **kwargs):
        try:
            return fn(fun, *args, params=params, **kwargs)
        except BranchError as e:
            if fun.on_branch != "retape" or fun.fn is None:
                raise BranchError(f"{e}" if fun.fn is None else "the function takes another path here than "
                                  "the one recorded (on_branch='raise'); record it again at this input") from None
            b = bind(fun, args, params)
            if b.n is not None:
                raise BranchError("some points of this batch take another path through the function than the one "
                                  "recorded: evaluate those points one at a time") from None
        from .branches import path_at
        return fn(path_at(fun, b.xs, b.p), *args, params=params, **kwargs)
    return wrapper


def derived(fun, key: tuple, build):
    """The Function of the tape ``build()`` derives, kept in ``fun.state.derived[key]`` (built once, or read from the
    disk cache; its kernels compile once)."""
    hit = fun.state.derived.get(key)
    if hit is None:
        with fun.state.noting_unrolls("/".join(map(str, key))):
            tape = derived_tape(fun.tape, key, build)
        hit = fun.state.derived.setdefault(key, fun.derive(tape))
    return hit


def dense_hessian(fun, weights: bool = False):
    """The Function of ``hessian_tape(fun.tape, weights)``, built once: the tape that ``hessian``, assembly and
    ``export(hessian=True)`` all evaluate."""
    return derived(fun, ("hessian_tape", weights), lambda: hessian_tape(fun.tape, weights))


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


def _per_argument(fun, vs, lead: tuple, what: str) -> list:
    if len(fun.input_shapes) == 1:
        vs = (vs,)
    elif not isinstance(vs, (tuple, list)) or len(vs) != len(fun.input_shapes):
        raise InputError(f"{what}: expected a tuple of {len(fun.input_shapes)} arrays (one per argument, shaped "
                         f"{', '.join(map(str, fun.input_shapes))})")
    return [_extra(v, s, lead, f"{what}[{i}]" if len(fun.input_shapes) > 1 else what)
            for i, (v, s) in enumerate(zip(vs, fun.input_shapes))]


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
def jacobian(fun, *args, params=None, out=None, mode: str = "auto"):
    """The Jacobian at a point (or batch): for one argument an array ``output_shape + input_shape``, for several
    a tuple of per-argument Jacobians (e.g. df/dx, df/du). ``out=`` (array, or tuple per argument) is filled."""
    b = bind(fun, args, params)
    lead = _lead(b)
    resolve_outputs(fun.tape, mode)
    d = derived(fun, ("jacobian_blocks_tape", mode), lambda: jacobian_blocks_tape(fun.tape, mode))
    shapes = [lead + fun.output_shape + s for s in fun.input_shapes]
    if len(shapes) == 1:  # one block, shaped as the derived tape's output: filled in place, ``out`` returned
        J = np.empty(shapes[0]) if out is None else check_out(out, shapes[0], "out")
        if out is not None:
            check_aliasing([("out", J)], named_inputs(b))
        if mode == "auto" and d.output_shape:
            alias(d, fun, "jacobian")  # ``fun.jacobian(x, params=, out=)`` is ``d.value``'s native method
        d.value(*b.xs, params=b.p, out=J)
        return out if out is not None else _scalar_or(J)
    sizes = [fun.n_outputs * k for k in fun.input_sizes]
    flat, copies = _flat_out(out, shapes, lead, sum(sizes))
    if out is not None:
        check_aliasing([("out", flat)] if copies is None else [(f"out[{i}]", o) for i, o in enumerate(copies)],
                       named_inputs(b))
    d.value(*b.xs, params=b.p, out=flat)
    return _deliver(_pieces(flat, lead, [fun.output_shape + s for s in fun.input_shapes], sizes), copies)


def _blocks(fun, H: np.ndarray, lead: tuple):
    """Split a dense ``lead + (n, n)`` Hessian into per-argument blocks (views)."""
    shapes, off = fun.input_shapes, output_offsets(fun.tape)
    if len(shapes) == 1:
        return _scalar_or(H.reshape(lead + shapes[0] + shapes[0]))
    return tuple(tuple(H[..., off[i]:off[i + 1], off[j]:off[j + 1]].reshape(lead + shapes[i] + shapes[j])
                       for j in range(len(shapes))) for i in range(len(shapes)))


@follows_branches
def hessian(fun, *args, params=None, out=None, weights=None):
    """The Hessian of a scalar fun (``input_shape + input_shape``; for several arguments a tuple of tuples of
    blocks ``H[i][j] = d2f / dx_i dx_j``), or of ``weights . f`` for a vector-valued fun. ``out=`` (single
    argument only) is filled in place."""
    b = bind(fun, args, params)
    lead, n = _lead(b), fun.n_inputs
    xs = list(b.xs)
    if weights is not None:
        xs.append(_extra(weights, fun.output_shape, lead, "weights"))
    if out is not None and len(fun.input_shapes) != 1:
        raise InputError("out= is supported for single-argument tapes only; call without out= to get the blocks")
    s = fun.input_shapes[0] if len(fun.input_shapes) == 1 else None
    H = (np.empty(lead + (n, n)) if out is None else
         check_out(out, lead + s + s, "out").reshape(lead + (n, n)))
    if out is not None:
        check_aliasing([("out", H)], named_inputs(b) + [("weights", xs[-1] if weights is not None else None)])
    d = dense_hessian(fun, weights is not None)
    if weights is None and s and d.output_shape == s + s:
        alias(d, fun, "hessian")  # ``fun.hessian(x, params=, out=)`` is ``d.value``'s native method
    d.value(*xs, params=b.p, out=H)
    return out if out is not None else _blocks(fun, H, lead)  # (out= is filled and returned, as elsewhere)


def _directions(fun, b, lead: tuple, vs_raw: list, shapes: list):
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


def _raw(fun, v) -> list:
    return [v] if len(fun.input_shapes) == 1 else list(v) if isinstance(v, (tuple, list)) else [v]


@follows_branches
def hvp(fun, *args, v, params=None):
    """``H(x) v`` for a scalar fun; ``v`` shaped like the argument (a tuple for several arguments; one shared
    ``v`` may serve a whole batch; at a single point, a stack of k directions ``(k,) + shape`` runs as one native
    loop over directions). The result is shaped like the arguments, like the gradient."""
    b = bind(fun, args, params)
    xs, lead = _directions(fun, b, _lead(b), _raw(fun, v), list(fun.input_shapes))
    vs = _per_argument(fun, v, lead, "v")
    d = derived(fun, ("hvp_tape",), lambda: hvp_tape(fun.tape))
    flat = d.value(*xs, *vs, params=b.p)
    return _deliver(_pieces(flat, lead, list(fun.input_shapes), list(fun.input_sizes)), None)


@follows_branches
def jvp(fun, *args, v, params=None):
    """The directional derivative ``J(x) v`` (shaped like the output); ``v`` like the arguments (tuple for
    several; one shared ``v`` may serve a whole batch; at a single point, a stack of k directions runs as one
    native loop over directions)."""
    b = bind(fun, args, params)
    xs, lead = _directions(fun, b, _lead(b), _raw(fun, v), list(fun.input_shapes))
    vs = _per_argument(fun, v, lead, "v")
    d = derived(fun, ("jvp_tape",), lambda: ad.jvp(fun.tape))
    return d.value(*xs, *vs, params=b.p)


@follows_branches
def vjp(fun, *args, w, params=None):
    """``w^T J(x)`` (``w`` shaped like the output, shared or per point in a batch; at a single point a stack of
    k cotangents runs as one native loop), shaped like the arguments (a tuple for several)."""
    b = bind(fun, args, params)
    xs, lead = _directions(fun, b, _lead(b), [w], [fun.output_shape])
    ws = _extra(w, fun.output_shape, lead, "w")
    d = derived(fun, ("vjp_tape",), lambda: ad.vjp(fun.tape))
    flat = d.value(*xs, ws, params=b.p)
    return _deliver(_pieces(flat, lead, list(fun.input_shapes), list(fun.input_sizes)), None)


@follows_branches
def value_gradient_hessian(fun, *args, params=None):
    """``(value, gradient, Hessian)`` of a scalar fun from one kernel, shaped as ``value``, ``gradient`` and
    ``hessian`` return them."""
    b = bind(fun, args, params)
    lead, n = _lead(b), fun.n_inputs
    d = derived(fun, ("value_gradient_hessian_tape",), lambda: value_gradient_hessian_tape(fun.tape))
    flat = np.empty(lead + (1 + n + n * n,))
    d.value(*b.xs, params=b.p, out=flat)
    value = _scalar_or(flat[..., 0])
    grads = _deliver(_pieces(flat[..., 1:1 + n], lead, list(fun.input_shapes), list(fun.input_sizes)), None)
    return value, grads, _blocks(fun, flat[..., 1 + n:].reshape(lead + (n, n)), lead)


@follows_branches
def sparse_jacobian(fun, *args, params=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Jacobian in COO form ``(rows, cols, values)`` over flattened outputs and inputs; ``values`` is
    ``(nnz,)`` at a point and ``(N, nnz)`` for a batch."""
    b = bind(fun, args, params)
    rows, cols = jacobian_sparsity(fun.tape)
    d = derived(fun, ("sparse_jacobian_tape",), lambda: sparse_jacobian_tape(fun.tape))
    values = np.empty(_lead(b) + (len(rows),))
    d.value(*b.xs, params=b.p, out=values)
    return rows, cols, values


@follows_branches
def sparse_hessian(fun, *args, params=None, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Hessian (of ``weights . f`` for a vector-valued fun) in COO form ``(rows, cols, values)``, both
    triangles; ``values`` is ``(nnz,)`` at a point and ``(N, nnz)`` for a batch."""
    b = bind(fun, args, params)
    xs = list(b.xs)
    if weights is not None:
        xs.append(_extra(weights, fun.output_shape, _lead(b), "weights"))
    elif fun.n_outputs != 1:
        gradient_program(fun.tape, False)  # raises the explanation
    rows, cols = hessian_sparsity(fun.tape)
    w = weights is not None
    d = derived(fun, ("sparse_hessian_tape", w), lambda: sparse_hessian_tape(fun.tape, w))
    values = np.empty(_lead(b) + (len(rows),))
    d.value(*xs, params=b.p, out=values)  # an exact out= takes the native single-point path
    return rows, cols, values
