"""Product loops: maps whose body is one dot product, the form matrix products take in the IR.

``A @ B`` records as a map over the output's entries whose body is ``sum_l u[l] * v[l]`` added left to right (row
``i`` of ``A`` in ``u``, column ``j`` of ``B`` in ``v``). That is an ordinary map: every evaluator and transform
reads it as one. This module names the form once, so that

- the code generator can recognise it and emit a loop nest that runs along contiguous rows (vectorised, no
  gathers) instead of one gather per operand and iteration, and
- reverse mode can write the adjoint of a product as two products (``G Bᵀ`` and ``Aᵀ G``) rather than a loop
  scattering every cotangent, while adding in the same order, so the bits do not change.

A product loop made by recording or by reverse mode is a ``Product``: the same map, stored by its factors (the
slots of ``A``, n x k, and of ``B``, k x m) rather than by its ``(n m, 2 k)`` tables, so a 256 x 256 x 256
product holds 130,000 slots, not 33 million; the tables are built only for a consumer that asks for them (the
unrolled tape, forward mode, a file). Code generation, reverse mode, the interpreter, live analysis and
validation read the factors.

The canonical body of length ``k`` (``2 k`` inputs, ``u`` then ``v``; no constants) is
``t = u0 * v0; t = t + u1 * v1; ...``: row ``2 l - 1`` multiplies, row ``2 l`` adds, for ``l >= 1``.
"""
from __future__ import annotations

import numpy as np

from ..errors import TapeFormatError
from .structure import Map, Out, distinct, dot_code, dot_length
from .tape import Tape

def dot_body(k: int, assume_finite: bool = False) -> Tape:
    """The body tape ``sum_l u[l] * v[l]`` of ``2 k`` inputs, added left to right."""
    if k < 1:
        raise ValueError("a dot product needs at least one term")
    code = dot_code(k)
    return Tape(code=code, consts=np.zeros(0), input_shapes=((2 * k,),), param_shape=None,
                outputs=np.array([2 * k + len(code) - 1]), output_shape=(1,), assume_finite=assume_finite)


class Product(Map):
    """A product loop stored by its factors: iteration ``i * m + j`` reads ``a[i, :]`` then ``b[:, j]`` (slots or
    node ids); the body is the canonical dot body. A ``Map`` in every respect; ``tables`` is built on first use."""

    def __init__(self, a, b, assume_finite: bool = False):
        a, b = (np.array(f, dtype=np.int32, copy=True) for f in (a, b))
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or a.shape[1] < 1:
            raise ValueError(f"factors of shapes {a.shape} and {b.shape} do not make a product")
        for f in (a, b):
            f.setflags(write=False)
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "body", dot_body(a.shape[1], assume_finite))
        object.__setattr__(self, "kinds", (Out.EACH,))
        object.__setattr__(self, "dst", np.zeros((a.shape[0] * b.shape[1], 0), np.int32))
        object.__setattr__(self, "scatter_size", 0)
        object.__setattr__(self, "_tables", None)

    @property
    def n(self) -> int:
        return self.a.shape[0] * self.b.shape[1]

    @property
    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        return self.a, self.b

    def __reduce__(self):  # a pickle carries the factors only: the tables are always built from them
        return Product, (self.a, self.b, self.body.assume_finite)

    def __setstate__(self, state) -> None:  # any other route that sets state rebuilds from the factors
        try:
            Product.__init__(self, state.get("a"), state.get("b"),
                             bool(getattr(state.get("body"), "assume_finite", False)))
        except (AttributeError, TypeError, ValueError, OverflowError) as e:
            raise TapeFormatError(f"a product loop's state does not make one: {e}") from None

    def consistent(self) -> str | None:
        """What is wrong with the record (validation reads this: ``__init__`` builds every field), or None."""
        a, b = self.a, self.b
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == np.int32 and
                b.dtype == np.int32 and a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[0] >= 1):
            return "its factors are not two int32 matrices of matching inner size"
        if dot_length(self.body) != a.shape[1] or self.kinds != (Out.EACH,) or self.scatter_size or \
                not (isinstance(self.dst, np.ndarray) and self.dst.shape == (self.n, 0)):
            return "its body, outputs or scatter do not make a product"
        if self._tables is not None:
            built = Product(a, b).tables
            if not (isinstance(self._tables, np.ndarray) and np.array_equal(self._tables, built)):
                return "its tables do not follow from its factors"
        return None

    @property
    def tables(self) -> np.ndarray:  # type: ignore[override]
        if self._tables is None:
            p, k = self.a.shape
            r = self.b.shape[1]
            t = np.empty((p, r, 2 * k), np.int32)
            t[:, :, :k] = self.a[:, None, :]
            t[:, :, k:] = self.b.T[None, :, :]
            t = t.reshape(p * r, 2 * k)
            t.setflags(write=False)
            object.__setattr__(self, "_tables", t)
        return self._tables

    def read_slots(self) -> np.ndarray:
        return distinct(np.concatenate([self.a.ravel(), self.b.ravel()]))[0]

    def remap(self, new) -> "Product":
        return Product(new(self.a), new(self.b), self.body.assume_finite)

    def digest_parts(self) -> list:
        return [b"product", self.body.hash.encode(), self.a.tobytes(), str(self.a.shape).encode(),
                self.b.tobytes(), str(self.b.shape).encode()]


def as_product(m: Map) -> Product | None:
    """Map ``m`` as a Product: itself, or a plain map whose tables hold a product loop in the outer layout (a file
    stores the tables), or None."""
    if isinstance(m, Product):
        return m
    k = product_length(m)
    if k is None:
        return None
    t = m.tables
    layout = outer_layout(t[:, 0], t[:, k])
    if layout is None:
        return None
    n, width = layout
    a, b = t[::width, :k], t[:width, k:].T
    if not (np.array_equal(t[:, :k].reshape(n, width, k), np.broadcast_to(a[:, None, :], (n, width, k)))
            and np.array_equal(t[:, k:].reshape(n, width, k), np.broadcast_to(b.T[None], (n, width, k)))):
        return None
    return Product(a, b, m.body.assume_finite)


def product_rows(m: Product, value_of) -> np.ndarray:
    """The product's entries ``(N, n m)`` for N points, ``value_of(slots)`` giving the values of an array of
    slots with the points first (``(N,) + slots.shape``): each entry adds its terms in order ``l = 0, 1, ...``
    as the body does (numpy's elementwise operations, not a BLAS product, whose order differs)."""
    a, b = value_of(m.a), value_of(m.b)  # (N, n, k), (N, k, m)
    c = a[:, :, 0, None] * b[:, None, 0, :]
    for l in range(1, a.shape[2]):
        c = c + a[:, :, l, None] * b[:, None, l, :]
    return c.reshape(len(c), -1)


def product_length(m: Map) -> int | None:
    """``k`` when map ``m`` is a product loop: the canonical dot body, one ``each`` output, no scatter."""
    if m.kinds != (Out.EACH,) or m.scatter_size:
        return None
    return m.body.memo("dot_length", lambda: dot_length(m.body))


def outer_layout(u: np.ndarray, v: np.ndarray) -> tuple[int, int] | None:
    """``(n, m)`` when iteration ``i * m + j`` of a product loop reads row ``i`` through ``u`` (the same offsets
    for every ``j``) and column ``j`` through ``v`` (the same offsets for every ``i``): ``u`` and ``v`` are the
    loop's first ``u`` and ``v`` columns. ``m`` is taken from the first run of ``u``; any split that holds is a
    correct one."""
    total = len(u)
    if total == 0 or len(v) != total:
        return None
    change = np.flatnonzero(u[1:] != u[:-1])
    m = int(change[0]) + 1 if len(change) else total
    if total % m:
        return None
    n = total // m
    if not (np.all(u.reshape(n, m) == u[::m, None]) and np.all(v.reshape(n, m) == v[None, :m])):
        return None
    return n, m
