"""Element assembly against a numpy reference, thread-count independence and connectivity validation."""
import numpy as np
import pytest

import tapead


def spring(x, p):
    """Energy of a 2-D spring between two nodes, x = [ux0, uy0, ux1, uy1], p = [stiffness, rest length]."""
    d = x[2:] - x[:2]
    return 0.5 * p[0] * (np.sqrt(d[0] ** 2 + d[1] ** 2) - p[1]) ** 2


@pytest.fixture(scope="module")
def mesh():
    rng = np.random.default_rng(3)
    nodes = 500
    coords = rng.normal(size=(nodes, 2))
    edges = np.array([(i, j) for i in range(nodes) for j in rng.choice(nodes, 3, replace=False) if i != j])
    C = np.stack([2 * edges[:, 0], 2 * edges[:, 0] + 1, 2 * edges[:, 1], 2 * edges[:, 1] + 1], axis=1)
    X = coords.ravel()[C]
    P = np.stack([rng.uniform(1, 2, len(C)), rng.uniform(0.5, 1, len(C))], axis=1)
    tape = tapead.record(spring, X[0], params=P[0])
    return tape, X, C, P, 2 * nodes


def test_assemble_matches_numpy_reference(mesh):
    tape, X, C, P, M = mesh
    g = tape.assemble_gradient(X, C, M, params=P)
    reference = np.zeros(M)
    np.add.at(reference, C, tape.gradient(X, params=P))
    assert np.allclose(g, reference, rtol=1e-13, atol=1e-13)
    assert np.isclose(tape.assemble_value(X, params=P), sum(spring(x, p) for x, p in zip(X, P)))


def test_threads_are_bit_identical_and_out_is_filled(mesh, monkeypatch):
    tape, X, C, P, M = mesh
    monkeypatch.setattr("tapead.runtime.assemble.BLOCK", 64)  # several blocks
    monkeypatch.setattr("tapead.runtime.calls.OPS_PER_THREAD", 1)  # really split across threads
    g1 = tape.assemble_gradient(X, C, M, params=P, threads=1)
    out = np.full(M, 7.0)
    g2 = tape.assemble_gradient(X, C, M, params=P, threads=2, out=out)
    assert g2 is out
    assert np.array_equal(g1, g2)


def test_shared_params_and_empty(mesh):
    tape, X, C, P, M = mesh
    g = tape.assemble_gradient(X[:10], C[:10], M, params=P[0])
    reference = np.zeros(M)
    np.add.at(reference, C[:10], tape.gradient(X[:10], params=P[0]))
    assert np.allclose(g, reference)
    assert np.array_equal(tape.assemble_gradient(X[:0], C[:0], M, params=P[:0]), np.zeros(M))


@pytest.mark.parametrize("bad, match", [
    (lambda C, M: (C + M, M), "outside"),
    (lambda C, M: (C - C.max() - 1, M), "outside"),
    (lambda C, M: (C[:, :3], M), "shape"),
    (lambda C, M: (C.astype(float), M), "integer"),
    (lambda C, M: (C, -1), "non-negative"),
    (lambda C, M: (C[:-1], M), "shape"),
])
def test_bad_connectivity_is_refused(mesh, bad, match):
    tape, X, C, P, M = mesh
    c, m = bad(C, M)
    with pytest.raises(tapead.InputError, match=match):
        tape.assemble_gradient(X, c, m, params=P)


def test_assemble_hessian_matches_dense_reference(mesh):
    tape, X, C, P, M = mesh
    rows, cols, vals = tape.assemble_hessian(X, C, M, params=P)
    dense = np.zeros((M, M))
    H = tape.hessian(X, params=P)
    for e in range(len(C)):
        dense[np.ix_(C[e], C[e])] += H[e]
    K = np.zeros((M, M))
    K[rows, cols] = vals
    assert np.allclose(K, dense, rtol=1e-12, atol=1e-12)
    assert np.array_equal(K, K.T)
    assert len(set(zip(rows.tolist(), cols.tolist()))) == len(rows)  # duplicates summed
    pattern = tape.state.patterns["assembly"]
    stiffer = P.copy()
    stiffer[:, 0] *= 2  # the energy is linear in the stiffness
    rows2, cols2, vals2 = tape.assemble_hessian(X, C, M, params=stiffer)
    assert tape.state.patterns["assembly"] is pattern and np.array_equal(rows2, rows)
    assert np.allclose(vals2, 2 * vals)
