"""Random straight-line programs over the op table: compiled == interpreted, gradient == finite differences,
simplify preserves values, the gradient tape agrees with the compiled gradient, and Hessians are symmetric."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import assume, given, note
from hypothesis import strategies as st

import tapead
from check import assert_close, fd_gradient, magnitude
from tapead.table.ops import OPS

TRANSFORMS = {  # safe re-parametrisations that put any value inside an op's domain (all smooth)
    "id": lambda v: v,
    "pos": lambda v: v * v + 0.5,  # >= 0.5: log, sqrt, pow base, log1p, denominators
    "neg": lambda v: -(v * v + 0.5),  # <= -0.5: negative denominators
    "unit": lambda v: np.tanh(v) * 0.9,  # (-0.9, 0.9): asin, acos, tan
    "small": lambda v: np.tanh(v) * 3.0,  # (-3, 3): keeps exp, sinh, cosh, pow exponents finite
    "above1": lambda v: v * v + 1.5,  # >= 1.5: acosh
}
DOMAIN = {"log": ("pos",), "sqrt": ("pos",), "log1p": ("pos",), "pow": ("pos", "small"), "asin": ("unit",),
          "acos": ("unit",), "tan": ("unit",), "log2": ("pos",), "log10": ("pos",), "cbrt": ("pos",),
          "exp2": ("small",), "acosh": ("above1",), "atanh": ("unit",)}
COMPARE = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal, "eq": np.equal,
           "ne": np.not_equal}
UNARY = {"neg": np.negative, "sin": np.sin, "cos": np.cos, "exp": np.exp, "log": np.log, "sqrt": np.sqrt,
         "tanh": np.tanh, "abs": np.abs, "sign": np.sign, "tan": np.tan, "log1p": np.log1p, "expm1": np.expm1,
         "sinh": np.sinh, "cosh": np.cosh, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
         "erf": tapead.table.ops_extra.erf, "erfc": tapead.table.ops_extra.erfc, "cbrt": np.cbrt, "exp2": np.exp2,
         "log2": np.log2, "log10": np.log10, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh}
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
          "max": np.maximum, "min": np.minimum, "atan2": np.arctan2, "hypot": np.hypot, "logaddexp": np.logaddexp,
          "logaddexp2": np.logaddexp2}
# steps, jumps and casts (tested at their edges in test_numpy_edges) would need margins of their own here
STEP_NAMES = sorted(n for n in OPS if n in UNARY or n in BINARY or n in COMPARE or n == "select") + ["dot", "square"]
LIMIT = 1e4  # steps whose value leaves [-LIMIT, LIMIT] at the drawn point are re-parametrised or dropped


@dataclass
class Program:
    """A straight-line program on the scalar elements of its arguments, its params and a few constants."""

    arg_sizes: tuple
    n_params: int | None
    consts: tuple
    steps: list = field(default_factory=list)  # (name, pool indices, transforms)
    terms: list = field(default_factory=list)  # (pool index, coefficient) summed into the output
    assign: list = field(default_factory=list)  # (position in y = zeros_like(arg 0), pool index)

    def pool_size(self) -> int:
        return sum(self.arg_sizes) + (self.n_params or 0) + len(self.consts) + len(self.steps)

    def __call__(self, *inputs):
        """Run on numpy arrays or traced values (params, if any, come last)."""
        return run(self, inputs)


def apply_step(step, pool: list, args: tuple, margins: list | None = None):
    """The value of one step; records the distance to its nearest kink in ``margins`` (numeric runs only)."""
    name, idx, tf = step
    if name == "dot":
        a = args[idx[0]]
        return np.dot(a, a[::-1])
    v = [TRANSFORMS[t](pool[i]) for i, t in zip(idx, tf)]
    if margins is not None:
        if name in ("abs", "sign"):
            margins.append(abs(float(v[0])))
        elif name in ("max", "min") or name in COMPARE:
            margins.append(abs(float(v[0]) - float(v[1])))
        elif name == "select":
            margins.append(abs(float(v[0]) - float(v[1])))
        elif name == "hypot":
            margins.append(float(np.hypot(v[0], v[1])))
        elif name == "atan2":  # atan2(y, x) jumps by 2 pi across y = 0 where x < 0
            margins.append(float(np.hypot(v[0], v[1])) if v[1] >= 0 else abs(float(v[0])))
    if name == "square":
        return v[0] ** 2
    if name in UNARY:
        return UNARY[name](v[0])
    if name in BINARY:
        return BINARY[name](v[0], v[1])
    if name in COMPARE:
        return 1.0 * COMPARE[name](v[0], v[1])
    if name == "select":
        return np.where(v[0] < v[1], v[2], v[3])
    raise AssertionError(name)


def initial_pool(prog: Program, inputs: tuple) -> list:
    args = inputs[:len(prog.arg_sizes)]
    pool = [a[i] for a in args for i in range(a.shape[0])]
    if prog.n_params is not None:
        p = inputs[-1]
        pool += [p[i] for i in range(p.shape[0])]
    return pool + list(prog.consts)


def run(prog: Program, inputs: tuple, margins: list | None = None):
    args = inputs[:len(prog.arg_sizes)]
    pool = initial_pool(prog, inputs)
    for step in prog.steps:
        pool.append(apply_step(step, pool, args, margins))
    out = 0.0
    for i, c in prog.terms:
        out = out + c * pool[i]
    if prog.assign:
        y = np.zeros_like(args[0])
        y[[k for k, _ in prog.assign]] = np.stack([pool[j] for _, j in prog.assign])
        out = out + np.sum(y * np.linspace(0.5, 1.5, y.shape[0]))
    return out


def _ok(v) -> bool:
    return bool(np.isfinite(v)) and abs(float(v)) <= LIMIT


@st.composite
def programs(draw):
    """(program, args, params): values in [-2, 2], 1-12 steps over every op, most examples finite."""
    n_args = draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(0 if k else 1, 3)) for k in range(n_args))
    n_params = draw(st.one_of(st.none(), st.integers(1, 2)))
    value = st.floats(-2.0, 2.0, allow_nan=False, allow_subnormal=False)
    args = tuple(np.array(draw(st.lists(value, min_size=s, max_size=s)), dtype=np.float64) for s in sizes)
    params = None if n_params is None else np.array(draw(st.lists(value, min_size=n_params,
                                                                  max_size=n_params)))
    consts = tuple(draw(st.lists(st.sampled_from([0.5, -1.25, 2.0, 0.0, 3.0]), min_size=1, max_size=2)))
    prog = Program(sizes, n_params, consts)
    pool = initial_pool(prog, args + (() if params is None else (params,)))
    for _ in range(draw(st.integers(1, 12))):
        name = draw(st.sampled_from(STEP_NAMES))
        if name == "dot":
            step = (name, (draw(st.integers(0, n_args - 1)),), ())
        else:
            arity = 4 if name == "select" else 1 if name == "square" else OPS[name].arity
            idx = tuple(draw(st.integers(0, len(pool) - 1)) for _ in range(arity))
            tf = list(DOMAIN.get(name, ("id",) * arity))
            if name == "div":
                tf[1] = draw(st.sampled_from(["pos", "neg"]))
            step = (name, idx, tuple(tf))
        with np.errstate(all="ignore"):
            v = apply_step(step, pool, args)
            if not _ok(v) and step[2]:
                step = (step[0], step[1], tuple("small" if t == "id" else t for t in step[2]))
                v = apply_step(step, pool, args)
        if _ok(v):
            prog.steps.append(step)
            pool.append(v)
    picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=0, max_size=3))
    coef = st.sampled_from([1.0, -0.5, 2.0, 0.75])
    prog.terms = [(len(pool) - 1, 1.0)] + [(i, draw(coef)) for i in picks]
    if draw(st.booleans()):
        positions = draw(st.permutations(range(sizes[0])))[:draw(st.integers(1, sizes[0]))]
        prog.assign = [(k, draw(st.integers(0, len(pool) - 1))) for k in positions]
    return prog, args, params


# ---- helpers ---------------------------------------------------------------------------------------------------
def flat(parts) -> np.ndarray:
    parts = parts if isinstance(parts, tuple) else (parts,)
    return np.concatenate([np.reshape(p, (np.shape(p)[0], -1)) for p in parts], axis=1)


def split(x: np.ndarray, sizes: tuple) -> tuple:
    """(N, total) -> one (N, size) array per argument."""
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=1)) if sizes else ()


def batch_of(args: tuple, rng: np.random.Generator, n: int = 4) -> tuple:
    """The recording point and n - 1 points near it, one extra leading axis per argument."""
    return tuple(np.concatenate([a[None], a + 0.05 * rng.standard_normal((n - 1,) + a.shape)]) for a in args)


def largest_intermediate(prog: Program, inputs: tuple) -> float:
    """Largest intermediate value at the point (errors of the last bits scale with it)."""
    pool = initial_pool(prog, inputs)
    args = inputs[:len(prog.arg_sizes)]
    with np.errstate(all="ignore"):
        for step in prog.steps:
            pool.append(apply_step(step, pool, args))
    finite = [abs(float(v)) for v in pool if np.isfinite(v)]
    return max([1.0] + finite)


def record(prog: Program, args: tuple, params) -> tapead.Tape:
    t = tapead.record(prog, *args, params=params)
    note(str(prog))
    note(str(t))
    return t


# ---- the properties ------------------------------------------------------------------------------------------------
@given(programs())
def test_compiled_matches_interpreter_and_gradient_tape(case):
    prog, args, params = case
    t = record(prog, args, params)
    X = batch_of(args, np.random.default_rng(0))
    value, grads = t.value_and_gradient(*X, params=params)  # one compiled kernel per example
    interp = t.evaluate(*X, params=params)
    scale = largest_intermediate(prog, args + (() if params is None else (params,)))
    tol = 1e-13 * scale * (len(prog.steps) + 1)
    assert_close(value, interp, 0.0, atol=tol)
    G = flat(grads) if args else np.zeros((4, 0))
    gt = tapead.grad(t)
    G_tape = gt.evaluate(*X, params=params)
    gscale = max(scale, float(np.nanmax(np.abs(G), initial=1.0)))
    assert_close(G, G_tape, 0.0, atol=1e-12 * gscale * (len(prog.steps) + 1))


@given(programs())
def test_simplify_preserves_values(case):
    prog, args, params = case
    t = record(prog, args, params)
    s = tapead.simplify(t)
    assert len(s) <= len(t)
    X = batch_of(args, np.random.default_rng(1))
    assert np.array_equal(s.evaluate(*X, params=params), t.evaluate(*X, params=params), equal_nan=True)
    assert np.array_equal(tapead.grad(s).evaluate(*X, params=params),
                          tapead.grad(t).evaluate(*X, params=params), equal_nan=True)


@given(programs())
def test_gradient_matches_finite_differences(case):
    prog, args, params = case
    inputs = args + (() if params is None else (params,))
    margins: list = []
    with np.errstate(all="ignore"):
        value = run(prog, inputs, margins)
    t = record(prog, args, params)
    grads = t.gradient(*args, params=params)
    g = np.concatenate([np.ravel(a) for a in (grads if isinstance(grads, tuple) else (grads,))])
    # a kink (or a pole) within reach of the finite-difference step leaves no reliable oracle
    assume(min(margins, default=np.inf) >= 1e-2 and np.isfinite(value) and g.size > 0)
    fd = fd_gradient(t, *args, params=params, rel=1e-6)
    fd = np.concatenate([np.ravel(a) for a in (fd if isinstance(fd, tuple) else (fd,))])
    note(f"gradient {g}\nfinite differences {fd}")
    assert_close(g, fd, 1e-5, atol=1e-8 * abs(value), scale=magnitude(fd))


@given(programs())
def test_hessian_is_symmetric(case):
    prog, args, params = case
    t = record(prog, args, params)
    n = t.n_inputs
    assume(n > 0)
    H = np.asarray(tapead.hessian_tape(t).evaluate(*args, params=params))
    assert np.array_equal(H, H.T, equal_nan=True)  # the upper triangle mirrored: exactly symmetric
    x = np.concatenate(args)
    hvp = tapead.jvp(tapead.grad(t))  # columns H e_j, from the other side of the diagonal
    X = np.tile(x, (n, 1))
    cols = np.asarray(hvp.evaluate(*split(X, t.input_sizes), *split(np.eye(n), t.input_sizes), params=params))
    assume(np.isfinite(H).all() and np.isfinite(cols).all())
    assert_close(cols, H.T, 0.0, atol=1e-10 * magnitude(H) * (len(prog.steps) + 1))


@given(programs())
def test_hessian_and_jacobian_loops_over_directions_equal_the_unrolled_sweeps(case):
    """``transforms.directions`` (forced on: thresholds 0) against the unrolled sweeps, bitwise, except where a
    zero direction component meets an infinite partial (NaN there: the documented difference)."""
    prog, args, params = case
    t = record(prog, args, params)
    assume(t.n_inputs > 0)
    from tapead.transforms import directions, higher
    built = {}
    for forced in (False, True):
        old = directions.LOOP_OVER, directions.DENSE_FACTOR
        directions.LOOP_OVER, directions.DENSE_FACTOR = (0, 0) if forced else old
        try:
            built[forced] = (higher.hessian_tape(t.tape), higher.jacobian_tape(t.tape, "forward"),
                             higher.jacobian_tape(t.tape, "reverse"))
        finally:
            directions.LOOP_OVER, directions.DENSE_FACTOR = old
    for loop, unrolled in zip(built[True], built[False]):
        a = np.asarray(tapead.evaluate(loop, *args, params=params))
        b = np.asarray(tapead.evaluate(unrolled, *args, params=params))
        finite = np.isfinite(a) & np.isfinite(b)
        assert np.array_equal(a[finite], b[finite])
        assert not (np.isfinite(a) & ~np.isfinite(b)).any()  # the loop never hides a non-finite entry
