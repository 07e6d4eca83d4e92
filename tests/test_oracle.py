"""Independent AD libraries as oracles on the shared corpus: autograd (a test dependency) and JAX (when installed,
in float64) differentiate the same corpus functions, run on their own numpy, and must agree with tapead's
gradients, Jacobians and Hessians at args1 to rounding."""
from __future__ import annotations

import types

import numpy as np
import pytest

import tapead
from check import assert_close, magnitude
from functions import FUNCTIONS, Case

RTOL = 1e-12  # two exact derivatives of the same function, each with its own rounding
HESSIAN_NAMES = ["seed_foo", "seed_foo4", "seed_bar", "seed_baz", "rosenbrock"]  # dense Hessians
HVP_NAMES = ["rosenbrock_chained", "lj"]  # Hessian-vector products (lj's dense Hessian tape takes ~10 s to build)
_HESSIANS: dict = {}
# JAX refuses a Python list as an index (x[[0, 1]]); the function is the same under autograd
JAX_SKIP = {"seed_bar": "indexes with a Python list, which JAX refuses"}


def on(numpy_module, f):
    """``f`` with its global ``np`` bound to another numpy (autograd.numpy, jax.numpy): the corpus function's own
    code, run by the other library."""
    return types.FunctionType(f.__code__, {**f.__globals__, "np": numpy_module}, f.__name__, f.__defaults__,
                              f.__closure__)


def argnums(case: Case) -> tuple:
    return tuple(range(len(case.args1)))


def scalar(case: Case, numpy_module):
    """The function the gradient refers to (sum of the outputs for a vector function), params bound."""
    f = on(numpy_module, case.f)
    g = (lambda *a: numpy_module.sum(f(*a))) if case.vector else f
    return g if case.params is None else (lambda *a: g(*a, case.params))


def tapead_gradient(case: Case) -> tuple:
    s = (lambda *a: np.sum(case.f(*a))) if case.vector else case.f
    g = tapead.record(s, *case.args0, params=case.params).gradient(*case.args1, params=case.params)
    return g if isinstance(g, tuple) else (g,)


def tapead_hessian(case: Case) -> np.ndarray:
    """The dense Hessian over all arguments (flattened, concatenated), by the tape that tape.hessian evaluates."""
    if case.name not in _HESSIANS:
        t = tapead.record(case.f, *case.args0, params=case.params)
        _HESSIANS[case.name] = np.asarray(tapead.hessian_tape(t).evaluate(*case.args1, params=case.params))
    return _HESSIANS[case.name]


def tapead_hvps(case: Case, V: np.ndarray) -> np.ndarray:
    """H(args1) v for each row v of V (a single-argument scalar case)."""
    return tapead.record(case.f, *case.args0).hvp(*case.args1, v=V)


def directions(case: Case) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3, case.args1[0].size))


def flat_function(case: Case, numpy_module):
    """The scalar function of one flat vector holding every argument (for the libraries' Hessians)."""
    f, shapes = scalar(case, numpy_module), [a.shape for a in case.args1]
    ends = np.cumsum([a.size for a in case.args1]).tolist()

    def of_flat(z):
        starts = [0] + ends[:-1]
        return f(*[z[s:e].reshape(shape) for s, e, shape in zip(starts, ends, shapes)])
    return of_flat


def flat_args1(case: Case) -> np.ndarray:
    return np.concatenate([a.ravel() for a in case.args1])


def compare(got: tuple, want: tuple) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w, dtype=np.float64)
        assert_close(g, w, RTOL, scale=magnitude(w))


# ---- autograd ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def autograd():
    return pytest.importorskip("autograd")


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_gradient_matches_autograd(autograd, name):
    case = FUNCTIONS[name]
    want = autograd.grad(scalar(case, autograd.numpy), argnums(case))(*case.args1)
    compare(tapead_gradient(case), want)


@pytest.mark.parametrize("name", [n for n in FUNCTIONS if FUNCTIONS[n].vector])
def test_jacobian_matches_autograd(autograd, name):
    case = FUNCTIONS[name]
    want = autograd.jacobian(on(autograd.numpy, case.f))(*case.args1)
    got = tapead.record(case.f, *case.args0).jacobian(*case.args1)
    compare((got,), (want,))


@pytest.mark.parametrize("name", HESSIAN_NAMES)
def test_hessian_matches_autograd(autograd, name):
    case = FUNCTIONS[name]
    want = autograd.hessian(flat_function(case, autograd.numpy))(flat_args1(case))
    compare((tapead_hessian(case),), (want,))


@pytest.mark.parametrize("name", HVP_NAMES)
def test_hvp_matches_autograd(autograd, name):
    case = FUNCTIONS[name]
    hvp = autograd.hessian_vector_product(on(autograd.numpy, case.f))
    V = directions(case)
    compare((tapead_hvps(case, V),), (np.stack([hvp(case.args1[0], v) for v in V]),))


# ---- JAX ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _jax_case(name: str) -> Case:
    if name in JAX_SKIP:
        pytest.skip(JAX_SKIP[name])
    return FUNCTIONS[name]


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_gradient_matches_jax(jax, name):
    case = _jax_case(name)
    want = jax.jit(jax.grad(scalar(case, jax.numpy), argnums(case)))(*case.args1)
    compare(tapead_gradient(case), want)


@pytest.mark.parametrize("name", [n for n in HESSIAN_NAMES if n not in JAX_SKIP])
def test_hessian_matches_jax(jax, name):
    case = _jax_case(name)
    want = jax.jit(jax.hessian(flat_function(case, jax.numpy)))(flat_args1(case))
    compare((tapead_hessian(case),), (want,))


@pytest.mark.parametrize("name", HVP_NAMES)
def test_hvp_matches_jax(jax, name):
    case = _jax_case(name)
    f = on(jax.numpy, case.f)
    hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(f), (x,), (v,))[1])
    V = directions(case)
    compare((tapead_hvps(case, V),), (np.stack([hvp(case.args1[0], v) for v in V]),))
