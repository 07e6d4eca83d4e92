"""The op-table ladder: every op in tapead.OPS recorded alone from numpy-style code, its derivative rule checked
against finite differences (orders 1 and 2), its kernel against numpy within a few ulps, and its tie conventions."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapead
from check import assert_close, fd_rows
from tapead.table.ops import OPS

# How each op is written in user code (x is the vector of the op's arguments, traced): the ufunc the row names
# (numpy's; scipy.special's erf and erfc dispatch by name, so the row itself stands in for them), and for the
# rows no ufunc is, their own form. Operators are checked below to record the same rows.
NO_UFUNC_FORM = {"select": tapead.where, "f32": lambda x: x.astype(np.float32)}
NUMPY_FORM = {row.name: getattr(np, row.spelling, row) if row.spelling else NO_UFUNC_FORM[row.name]
              for row in OPS.values() if not row.name.startswith("custom.")}
OPERATOR_FORM = {
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y, "div": lambda x, y: x / y,
    "neg": lambda x: -x, "pow": lambda x, y: x ** y, "abs": abs, "mod": lambda x, y: x % y,
    "floordiv": lambda x, y: x // y, "lt": lambda x, y: x < y, "le": lambda x, y: x <= y,
    "gt": lambda x, y: x > y, "ge": lambda x, y: x >= y, "eq": lambda x, y: x == y, "ne": lambda x, y: x != y,
}
NAMES = [n for n in OPS if not n.startswith("custom.")]  # the built-in table (user-defined ops live elsewhere)
_TAPES: dict = {}


def test_every_op_has_a_numpy_form():
    """Each row's spelling is a ufunc of that name (numpy's, else scipy.special's), and the rows without one are
    exactly those given a form by hand."""
    assert {n for n in NAMES if OPS[n].spelling is None} == set(NO_UFUNC_FORM)
    for name in NAMES:
        row = OPS[name]
        for spelling in filter(None, (row.spelling, *row.aliases)):
            ufunc = getattr(np, spelling, None)
            if ufunc is None:
                ufunc = getattr(pytest.importorskip("scipy.special"), spelling)
            assert isinstance(ufunc, np.ufunc) and ufunc.nin == row.arity, (name, spelling)


@pytest.mark.parametrize("name", sorted(OPERATOR_FORM))
def test_operators_record_the_row(name):
    """Python's operators on traced values record the same single row as the ufunc, with the same values."""
    x0 = np.full(OPS[name].arity, 0.5)
    t = tapead.record(lambda x: OPERATOR_FORM[name](*x), x0)
    assert t.op_counts() == {name: 1}, str(t)
    x = sample_points(name, 8, seed=4)
    assert np.array_equal(t.evaluate(x), one_op_tape(name).evaluate(x), equal_nan=True)


@pytest.mark.parametrize("name", [n for n in NAMES if OPS[n].aliases])
def test_aliases_record_the_row(name):
    for alias in OPS[name].aliases:
        t = tapead.record(lambda x: getattr(np, alias)(*x), np.full(OPS[name].arity, 0.5))
        assert t.op_counts() == {name: 1}, (alias, str(t))


def one_op_tape(name: str) -> tapead.Tape:
    """A tape of the single op ``name`` over a vector of its arguments, recorded through numpy-style code."""
    if name not in _TAPES:
        form = NUMPY_FORM[name]
        t = tapead.record(lambda x: form(*x), np.full(OPS[name].arity, 0.5))
        assert t.op_counts() == {name: 1}, str(t)
        _TAPES[name] = t
    return _TAPES[name]


def sample_points(name: str, n: int, seed: int) -> np.ndarray:
    """n points (rows) strictly inside the op's domain, away from kinks, poles and domain edges."""
    rng = np.random.default_rng(seed)
    lo, hi = OPS[name].domain
    lo, hi = max(lo, -3.0), min(hi, 3.0)
    margin = 0.1 * (hi - lo)
    x = rng.uniform(lo + margin, hi - margin, (n, OPS[name].arity))
    if name in ("pow",):
        x[:, 1] = rng.uniform(-3, 3, n)
    if name in ("div", "atan2", "hypot", "fmod", "mod", "floordiv"):
        x[:, 1] = rng.choice([-1.0, 1.0], n) * rng.uniform(0.3, 3, n)
    if name == "select":
        x[:, 0] = rng.choice([-1.0, 0.0, 2.0], n)
    # keep non-smooth points at least 1e-2 from their kink so finite differences do not straddle it
    if name in ("abs", "sign"):
        x[:, 0] = np.where(np.abs(x[:, 0]) < 1e-2, 0.5, x[:, 0])
    if name in ("lt", "le", "gt", "ge", "eq", "ne", "max", "min", "fmax", "fmin"):
        x[:, 1] = np.where(np.abs(x[:, 0] - x[:, 1]) < 1e-2, x[:, 0] + 0.5, x[:, 1])
    return x


def numpy_value(name: str, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return OPS[name].numpy(*x.T)


def fd_partials(fn, x: np.ndarray) -> np.ndarray:
    """Finite-difference partials at each row of x of a function vectorised over rows."""
    return np.stack([fd_rows(fn, row) for row in x])


# ---- (a) first and second derivatives vs finite differences ------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_gradient_vs_finite_differences(name):
    t = one_op_tape(name)
    x = sample_points(name, 16, seed=1)
    fd = fd_partials(lambda p: numpy_value(name, p), x)
    if name == "select":  # the condition at exactly 0 sits on the jump
        fd[x[:, 0] == 0.0, 0] = 0.0
    if name == "f32":  # float32 rounding is a staircase at the scale of h; its convention is derivative 1
        fd[:] = 1.0
    assert_close(t.gradient(x), fd, nan="skip")
    assert_close(tapead.grad(t).evaluate(x), fd, nan="skip")
    assert_close(tapead.grad(t).value(x), fd, nan="skip")


@pytest.mark.parametrize("name", NAMES)
def test_second_derivatives_vs_finite_differences(name):
    t = one_op_tape(name)
    n = OPS[name].arity
    x = sample_points(name, 8, seed=2)
    hvp = tapead.jvp(tapead.grad(t))
    hess = np.stack([hvp.value(x, np.tile(np.eye(n)[j], (len(x), 1))) for j in range(n)], axis=2)
    interp = np.stack([hvp.evaluate(x, np.tile(np.eye(n)[j], (len(x), 1))) for j in range(n)], axis=2)
    assert np.allclose(hess, interp, rtol=1e-13, atol=0, equal_nan=True)
    for i in range(n):  # FD of the compiled gradient's component i
        fd = fd_partials(lambda p: t.gradient(p)[:, i], x)
        if name == "select":
            fd[x[:, 0] == 0.0, 0] = 0.0
        assert_close(hess[:, i, :], fd, 1e-6, nan="skip")
    assert np.allclose(hess, np.swapaxes(hess, 1, 2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_interpreter_gradient_matches_compiled(name):
    t = one_op_tape(name)
    x = sample_points(name, 16, seed=3)
    assert np.allclose(tapead.grad(t).evaluate(x), t.gradient(x), rtol=1e-13, atol=0)


# ---- (b) kernels vs numpy on drawn floats ---------------------------------------------------------------------------
def ulp_close(got, expected, ulps: int = 4) -> np.ndarray:
    """Elementwise: equal, both NaN, or within ``ulps`` units in the last place."""
    got, expected = np.asarray(got), np.asarray(expected)
    with np.errstate(all="ignore"):
        diff = np.abs(got - expected)
        tol = ulps * np.spacing(np.maximum(np.abs(got), np.abs(expected)))
    return (got == expected) | (np.isnan(got) & np.isnan(expected)) | (diff <= tol)


def _arg_strategy(name: str, j: int):
    lo, hi = OPS[name].domain
    if name == "pow" and j == 1:
        lo, hi = -np.inf, np.inf
    if name == "pow" and j == 0:
        hi = 1e10  # keep x**y mostly finite without excluding it
    return st.floats(min_value=None if np.isinf(lo) else lo, max_value=None if np.isinf(hi) else hi,
                     allow_nan=False, allow_infinity=False)


def _points(name: str):
    row = st.tuples(*[_arg_strategy(name, j) for j in range(OPS[name].arity)])
    return st.lists(row, min_size=1, max_size=16)


_FEW = settings(max_examples=min(settings.default.max_examples, 100))


@pytest.mark.parametrize("name", NAMES)
def test_kernel_matches_numpy(name):
    t = one_op_tape(name)
    t.compile()

    @_FEW
    @given(_points(name))
    def check(rows):
        x = np.array(rows, dtype=np.float64)
        expected = numpy_value(name, x)
        got = t.value(x)
        ok = ulp_close(got, expected)
        assert ok.all(), (x[~ok], got[~ok], expected[~ok])
        assert np.array_equal(t.evaluate(x), expected, equal_nan=True)
        assert ulp_close(t.value(x[0]), expected[0])

    check()


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_propagate_nan(name):
    t = one_op_tape(name)
    x = np.array([[np.nan, 1.0], [1.0, np.nan], [np.nan, np.nan]])
    assert np.isnan(t.value(x)).all()
    assert np.isnan(t.evaluate(x)).all()


@pytest.mark.parametrize("name", NAMES)
def test_special_values_match_numpy(name):
    specials = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-310, 1e308]
    n = OPS[name].arity
    grid = np.array(np.meshgrid(*[specials] * n, indexing="ij")).reshape(n, -1).T
    t = one_op_tape(name)
    expected = numpy_value(name, grid)
    ok = ulp_close(t.value(grid), expected)
    assert ok.all(), (grid[~ok], t.value(grid)[~ok], expected[~ok])


# ---- (c) tie conventions of the non-smooth ops ----------------------------------------------------------------------
def grad_at(f, *x):
    return tapead.record(f, np.array(x, dtype=np.float64)).gradient(np.array(x, dtype=np.float64))


@pytest.mark.parametrize("x", [0.0, -0.0])
def test_abs_derivative_at_zero_is_zero(x):
    t = one_op_tape("abs")
    assert t.gradient(np.array([x]))[0] == 0.0
    assert tapead.grad(t).evaluate(np.array([x]))[0] == 0.0


def test_sign_derivative_is_zero_everywhere():
    t = one_op_tape("sign")
    x = np.array([[-2.0], [-0.0], [0.0], [1e-300], [3.0]])
    assert np.array_equal(t.gradient(x), np.zeros_like(x))
    assert np.array_equal(t.value(x).ravel(), np.sign(x).ravel())


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_tie_goes_to_first_argument(name):
    t = one_op_tape(name)
    x = np.array([[1.5, 1.5], [0.0, -0.0], [-2.0, -2.0]])
    assert np.array_equal(t.gradient(x), np.tile([1.0, 0.0], (3, 1)))
    assert np.array_equal(tapead.grad(t).evaluate(x), np.tile([1.0, 0.0], (3, 1)))


def test_select_branch_not_taken_gets_exact_zero():
    t = one_op_tape("select")
    x = np.array([[1.0, 2.0, 3.0], [0.0, 2.0, 3.0], [np.nan, 2.0, 3.0], [-0.0, 1.0, 1.0]])
    g = t.gradient(x)
    assert np.array_equal(g, [[0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]])


def test_where_with_comparison_condition():
    f = lambda x: tapead.where(x[0] < x[1], x[0] * x[2], np.sin(x[2]))  # noqa: E731
    t = tapead.record(f, np.array([1.0, 2.0, 0.5]))
    assert t.op_counts() == {"lt": 1, "mul": 1, "select": 1, "sin": 1}
    g = t.gradient(np.array([[1.0, 2.0, 0.5], [3.0, 2.0, 0.5], [2.0, 2.0, 0.5]]))
    assert np.array_equal(g[0], [0.5, 0.0, 1.0])
    assert np.array_equal(g[1], [0.0, 0.0, np.cos(0.5)])
    assert np.array_equal(g[2], [0.0, 0.0, np.cos(0.5)])  # tie: lt is false


def test_where_untaken_branch_with_infinite_value():
    # the untaken branch overflows to inf, yet its cotangent is an exact zero, so the gradient stays finite
    t = tapead.record(lambda x: tapead.where(x[0] > 0, x[0] * x[0], x[1] * x[1]), np.array([1.0, 1.0]))
    g = t.gradient(np.array([2.0, 1e200]))
    assert np.array_equal(g, [4.0, 0.0])
    assert t.value(np.array([2.0, 1e200])) == 4.0


@pytest.mark.parametrize("x, expected", [(-1.0, 0.0), (0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (2.0, 0.0)])
def test_clip_derivative_at_and_beyond_bounds(x, expected):
    t = tapead.record(lambda v: np.clip(v, 0.0, 1.0)[0], np.array([0.5]))
    assert t.gradient(np.array([x]))[0] == expected
    assert t.value(np.array([x])) == np.clip(x, 0.0, 1.0)


def test_clip_with_traced_bounds_tie_goes_to_the_value():
    t = tapead.record(lambda v: np.clip(v[0], v[1], v[2]), np.array([0.5, 0.0, 1.0]))
    assert np.array_equal(t.gradient(np.array([0.0, 0.0, 1.0])), [1.0, 0.0, 0.0])
    assert np.array_equal(t.gradient(np.array([1.0, 0.0, 1.0])), [1.0, 0.0, 0.0])
    assert np.array_equal(t.gradient(np.array([-1.0, 0.0, 1.0])), [0.0, 1.0, 0.0])
    assert np.array_equal(t.gradient(np.array([3.0, 0.0, 1.0])), [0.0, 0.0, 1.0])


@pytest.mark.parametrize("name", ["lt", "le", "gt", "ge", "eq", "ne"])
def test_comparisons_on_ties_and_nan(name):
    t = one_op_tape(name)
    x = np.array([[1.0, 1.0], [0.0, -0.0], [np.nan, 1.0], [1.0, np.nan], [-np.inf, np.inf]])
    assert np.array_equal(t.value(x), numpy_value(name, x))
    assert np.array_equal(t.gradient(x), np.zeros_like(x))


# ---- (d) powers -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3, 4, 5, -1, -2, -3, 2.0, 0, 1])
def test_integer_powers_become_multiplications(k):
    t = tapead.record(lambda x: x[0] ** k, np.array([1.3]))
    counts = t.op_counts()
    if k < -1:  # 1 / (x * x) has NaN derivatives at 0 and inf; pow's rule does not
        assert counts == {"pow": 1}, str(t)
    else:
        assert "pow" not in counts, str(t)
        assert set(counts) <= {"mul", "div"}
    x = np.array([[0.7], [-1.9], [0.0], [2.5]])
    with np.errstate(divide="ignore"):
        expected = np.float64(x[:, 0]) ** float(k)
    assert np.allclose(t.value(x), expected, rtol=1e-15, atol=0)
    if k > 0:  # differentiable at 0 too
        assert np.allclose(t.gradient(x)[:, 0], k * x[:, 0] ** (k - 1), rtol=1e-14, atol=0)


def test_square_is_one_multiplication():
    t = tapead.record(lambda x: x[0] ** 2, np.array([1.3]))
    assert t.op_counts() == {"mul": 1}
    assert tapead.record(lambda x: np.square(x[0]), np.array([1.3])).op_counts() == {"mul": 1}


def test_half_power_is_the_square_root():
    """x ** 0.5 takes the square root's values and derivatives (whichever op records it): closed forms inside the
    domain, and at 0 the value 0 with an infinite slope."""
    t = tapead.record(lambda x: x[0] ** 0.5, np.array([1.3]))
    x = np.array([[1e-300], [0.25], [2.0], [4.0], [1e300]])
    assert np.array_equal(t.value(x), np.sqrt(x[:, 0]))
    assert_close(t.gradient(x)[:, 0], 0.5 / np.sqrt(x[:, 0]), 1e-15, scale=0.0)
    with np.errstate(over="ignore"):  # -inf at 1e-300, as the kernel gives
        assert_close(t.hessian(x)[:, 0, 0], -0.25 * x[:, 0] ** -1.5, 1e-15, scale=0.0)
    assert t.value(np.array([0.0])) == 0.0 and t.gradient(np.array([0.0]))[0] == np.inf
    assert t.value(np.array([np.inf])) == np.inf


@pytest.mark.parametrize("y", [1.5, -0.5, 1e-3, 2.000001])
def test_fractional_constant_power_records_pow(y):
    t = tapead.record(lambda x: x[0] ** y, np.array([1.3]))
    assert t.op_counts() == {"pow": 1}
    assert ulp_close(t.value(np.array([2.0])), 2.0 ** y)
    assert np.isclose(t.gradient(np.array([2.0]))[0], y * 2.0 ** (y - 1), rtol=1e-14)


def test_traced_exponent_records_pow():
    t = tapead.record(lambda x: x[0] ** x[1], np.array([1.3, 2.0]))
    assert t.op_counts() == {"pow": 1}
    g = t.gradient(np.array([2.0, 3.0]))
    assert np.allclose(g, [3.0 * 4.0, 8.0 * np.log(2.0)], rtol=1e-14)


@pytest.mark.parametrize("name", [n for n in NAMES if OPS[n].curvature != "general"])
def test_curvature_class_matches_second_derivatives(name):
    """The op table's curvature class (what Hessian sparsity trusts) agrees with the op's second derivatives:
    none for linear and piecewise-linear ops, only the mixed one for mul, none in the numerator for div."""
    t = one_op_tape(name)
    x = sample_points(name, 6, seed=5)
    H = tapead.hessian_tape(t).evaluate(x)  # (points, arity, arity)
    curvature = OPS[name].curvature
    if curvature in ("linear", "piecewise"):
        assert np.all(H == 0.0)
    elif curvature == "bilinear":
        assert np.all(H[:, 0, 0] == 0.0) and np.all(H[:, 1, 1] == 0.0) and np.all(H[:, 0, 1] != 0.0)
    else:
        assert curvature == "quotient" and np.all(H[:, 0, 0] == 0.0) and np.all(H[:, 1, 1] != 0.0)


def test_commutative_rows_are_commutative_bitwise():
    rng = np.random.default_rng(9)
    values = np.concatenate([rng.normal(size=50), [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-310]])
    a, b = np.meshgrid(values, values)
    for row in OPS.values():
        if row.commutative:
            with np.errstate(all="ignore"):
                assert np.array_equal(row.numpy(a, b), row.numpy(b, a), equal_nan=True), row.name
