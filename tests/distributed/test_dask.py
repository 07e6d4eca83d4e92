"""Tape methods on Dask arrays: lazy graphs (one task per chunk), run on a two-process LocalCluster started here.

Results computed on the cluster must equal the one-process results bit for bit (same kernels); assemblies, whose
partial sums are added in a different order than one process adds them, equal the same graph run in this process
bit for bit and the one-process assembly to rounding.
"""
from __future__ import annotations

import logging
import os
import pickle
import time

import numpy as np
import pytest

import dask.array as da  # noqa: E402  (a test dependency: an import error fails, never skips)
import distributed  # noqa: E402
import dask  # noqa: E402

import tapead  # noqa: E402
from tapead.distributed import worker  # noqa: E402
from tapead.errors import BranchError, InputError, TapeFormatError  # noqa: E402
from functions import FUNCTIONS  # noqa: E402

CHUNK = 7


@tapead.custom_op(name="dask_softplus")
def softplus(x):
    """A custom op defined at module level: workers define it by importing this module."""
    return np.log1p(np.exp(x))


@softplus.derivative
def _(x):
    return (1 / (1 + np.exp(-x)),)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=logging.ERROR)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def weighted(x, p):
    """A scalar function of a 5-vector with params: sums, products and a transcendental."""
    return np.sum(p[0] * x ** 2) + np.sin(x[0] * x[1]) * p[1] + x[2] * x[3] * x[4]


def very_distinctive_function_name(x):
    return np.sum(np.exp(x) * x)


@pytest.fixture(scope="module")
def tape():
    rng = np.random.default_rng(0)
    return tapead.record(weighted, rng.normal(size=5), params=np.array([1.5, -0.5]))


def points(n: int, d: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def run(client, obj):
    """Compute dask arrays (in tuples, lists, dicts) on the cluster."""
    return dask.compute(obj, scheduler=client.get)[0]


def same(a, b) -> bool:
    """Equal bits, through tuples (of tuples) of arrays."""
    if isinstance(b, tuple):
        return isinstance(a, tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return np.asarray(a).shape == np.asarray(b).shape and np.array_equal(a, b)


# ---- lazy in, lazy out ---------------------------------------------------------------------------------------
def test_every_method_on_the_cluster_equals_one_process(client, tape):
    X = points(40)
    P = np.random.default_rng(2).uniform(0.5, 2.0, size=(40, 2))
    V = points(40, seed=3)
    DX, DP, DV = (da.from_array(a, chunks=(CHUNK, -1)) for a in (X, P, V))
    shared = np.array([1.5, -0.5])
    lazy = {
        "value": tape.value(DX, params=DP),
        "gradient": tape.gradient(DX, params=shared),
        "value_and_gradient": tape.value_and_gradient(DX, params=DP),
        "jacobian": tape.jacobian(DX, params=DP),
        "hessian": tape.hessian(DX, params=DP),
        "hvp": tape.hvp(DX, v=DV, params=DP),
        "hvp_shared": tape.hvp(DX, v=V[0], params=shared),
        "jvp": tape.jvp(DX, v=DV, params=DP),
        "vjp": tape.vjp(DX, w=2.5, params=DP),
    }
    eager = {
        "value": tape.value(X, params=P),
        "gradient": tape.gradient(X, params=shared),
        "value_and_gradient": tape.value_and_gradient(X, params=P),
        "jacobian": tape.jacobian(X, params=P),
        "hessian": tape.hessian(X, params=P),
        "hvp": tape.hvp(X, v=V, params=P),
        "hvp_shared": tape.hvp(X, v=V[0], params=shared),
        "jvp": tape.jvp(X, v=V, params=P),
        "vjp": tape.vjp(X, w=2.5, params=P),
    }
    for name, r in lazy.items():
        for a in (r if isinstance(r, tuple) else (r,)):
            assert isinstance(a, da.Array) and a.chunks[0] == DX.chunks[0], name
    computed = run(client, lazy)
    for name in lazy:
        assert same(computed[name], eager[name]), name
    # the interpreter as an independent check of the gradient kernel
    assert np.allclose(computed["value"], tape.evaluate(X, params=P), rtol=1e-14, atol=0)


def test_multi_argument_tape_with_mixed_numpy_and_dask(client):
    case = FUNCTIONS["seed_foo4"]
    t = tapead.record(case.f, *case.args0, params=case.params)
    rng = np.random.default_rng(4)
    args = [rng.normal(size=(30,) + np.shape(a)) for a in case.args0]
    lazy_args = [da.from_array(a, chunks=(CHUNK,) + a.shape[1:]) for a in args[:3]] + [args[3]]  # last: numpy
    vs = tuple(rng.normal(size=a.shape) for a in args)
    g, (v, g2), H, hv = run(client, (t.gradient(*lazy_args, params=case.params),
                                     t.value_and_gradient(*lazy_args, params=case.params),
                                     t.hessian(*lazy_args, params=case.params),
                                     t.hvp(*lazy_args, v=vs, params=case.params)))
    assert same(g, t.gradient(*args, params=case.params))
    assert same(g2, t.gradient(*args, params=case.params))
    assert same(v, t.value(*args, params=case.params))
    assert same(H, t.hessian(*args, params=case.params))
    assert same(hv, t.hvp(*args, v=vs, params=case.params))
    expected = [np.stack(r) for r in zip(*[case.grad(*(a[k] for a in args), case.params) for k in range(30)])]
    for got, want in zip(g, expected):
        assert np.allclose(got, want, rtol=1e-13, atol=1e-13)


def test_one_task_per_chunk_and_nothing_computed_while_building():
    t = tapead.record(very_distinctive_function_name, np.ones(4))

    def boom():
        raise RuntimeError("computed while building the graph")
    X = da.concatenate([da.from_delayed(dask.delayed(boom)(), (CHUNK, 4), np.float64) for _ in range(5)])
    chunks = X.numblocks[0]
    for r in (t.value(X), t.gradient(X), t.hessian(X), t.jvp(X, v=np.ones(4)), t.jacobian(X)):
        assert len(r.dask.layers[r.name]) == chunks
    v, g = t.value_and_gradient(X)
    kernel_layer = [name for name in v.dask.layers if name.startswith("tapead-value_and_gradient-")
                    and "part" not in name]
    assert len(kernel_layer) == 1 and len(v.dask.layers[kernel_layer[0]]) == chunks
    assert len(v.dask.layers[v.name]) == len(g.dask.layers[g.name]) == chunks
    with pytest.raises(RuntimeError, match="computed while building"):
        t.gradient(X).compute(scheduler="sync")


def test_graph_carries_the_tape_not_the_function():
    t = tapead.record(very_distinctive_function_name, np.ones(4))
    r = t.hessian(da.ones((20, 4), chunks=(5, 4)))
    blob = pickle.dumps(dict(r.__dask_graph__()))
    assert b"very_distinctive_function_name" not in blob
    shipments = [v for v in dict(r.__dask_graph__()).values() if isinstance(v, worker.Shipment)]
    if not shipments:  # literal keys may be wrapped in a task object holding the value
        shipments = [getattr(v, "value", None) for v in dict(r.__dask_graph__()).values()]
        shipments = [s for s in shipments if isinstance(s, worker.Shipment)]
    assert len(shipments) == 1
    s = shipments[0]
    assert s.tape == tapead.ir.store.to_bytes(t.tape) and s.key == ("hessian_tape", False)
    assert s.derived == tapead.ir.store.to_bytes(t.state.derived[("hessian_tape", False)].tape)


def test_derived_tapes_are_the_ones_local_calls_use(tape):
    X = points(10)
    P = np.ones((10, 2))
    for method, kw in [("gradient", {}), ("hessian", {}), ("jacobian", {}), ("hvp", {"v": X}),
                       ("jvp", {"v": X}), ("vjp", {"w": 1.0})]:
        getattr(tape, method)(da.from_array(X, chunks=5), params=P, **kw)
        before = (dict(tape.state.derived), dict(tape.state.programs))
        getattr(tape, method)(X, params=P, **kw)
        after = (dict(tape.state.derived), dict(tape.state.programs))
        assert after == before, method  # the local call derived nothing new: the shipped tape is the same one


def test_compiles_once_per_worker(client):
    t = tapead.record(lambda x: np.sum(np.cos(x) * x[::-1]), np.ones(6))
    client.run(worker.reset)
    X = points(30 * CHUNK, 6)
    g = run(client, t.gradient(da.from_array(X, chunks=(CHUNK, 6))))
    assert np.array_equal(g, t.gradient(X))
    stats = client.run(worker.stats)
    assert sum(s["tasks"] for s in stats.values()) == 30
    for s in stats.values():
        if s["tasks"]:
            assert (s["loads"], s["kernels"]) == (2, 1), s  # the tape and its gradient tape; one kernel


# ---- assemblies ----------------------------------------------------------------------------------------------
def test_assemblies_are_tree_reductions(client):
    elem = tapead.record(lambda x, p: p[0] * (x[0] - x[1]) ** 2 + np.cos(x[1] * x[2]), np.ones(3),
                         params=np.array([2.0]))
    n, M = 50, 60
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, 3))
    C = rng.integers(0, M, size=(n, 3))
    P = rng.uniform(1, 2, size=(n, 1))
    DX, DC = da.from_array(X, chunks=(CHUNK, 3)), da.from_array(C, chunks=(CHUNK, 3))
    g = elem.assemble_gradient(DX, DC, M, params=P)
    v = elem.assemble_value(DX, params=P)
    rows, cols, vals = elem.assemble_hessian(DX, C, M, params=P)
    assert g.shape == (M,) and v.shape == ()
    on_cluster = run(client, [g, v, rows, cols, vals])
    here = dask.compute(g, v, rows, cols, vals, scheduler="sync")
    for a, b in zip(on_cluster, here):
        assert np.array_equal(a, b)
    assert np.allclose(on_cluster[0], elem.assemble_gradient(X, C, M, params=P), rtol=1e-13, atol=1e-13)
    assert np.isclose(float(on_cluster[1]), elem.assemble_value(X, params=P), rtol=1e-13)
    R, Cc, V = elem.assemble_hessian(X, C, M, params=P)
    assert np.array_equal(on_cluster[2], R) and np.array_equal(on_cluster[3], Cc)
    assert np.allclose(on_cluster[4], V, rtol=1e-13, atol=1e-13)
    # the gradient independently: scatter-add of per-element gradients in numpy
    ref = np.zeros(M)
    np.add.at(ref, C.ravel(), elem.gradient(X, params=P).ravel())
    assert np.allclose(on_cluster[0], ref, rtol=1e-13, atol=1e-13)


def test_assembly_rejects_bad_connectivity_at_compute(client):
    elem = tapead.record(lambda x: np.sum(x ** 2), np.ones(2))
    X = da.ones((10, 2), chunks=5)
    with pytest.raises(InputError, match="connectivity C"):
        elem.assemble_gradient(X, np.ones((10, 2)), 4)
    g = elem.assemble_gradient(X, np.full((10, 2), 7), 4)  # indices checked on the workers, chunk by chunk
    with pytest.raises(InputError, match="outside 0..3"):
        run(client, g)


# ---- branches, custom ops ------------------------------------------------------------------------------------
def branchy(x):
    if x[0] > 0:
        return np.sum(x ** 2)
    return np.sum(x ** 3)


def test_guard_flip_on_a_worker_names_the_chunk_and_the_guard(client):
    t = tapead.record(branchy, np.ones(3))
    X = np.abs(points(20, 3)) + 0.1
    ok = run(client, t.gradient(da.from_array(X, chunks=CHUNK)))
    assert np.array_equal(ok, t.gradient(X))
    X[16, 0] = -1.0  # in chunk 2 (points 14..19)
    with pytest.raises(BranchError, match=r"chunk 2 \(points 14\.\.19\).*comparison.*gt") as e:
        run(client, t.gradient(da.from_array(X, chunks=CHUNK)))
    assert "Python function" in str(e.value)


def test_custom_op_defined_in_an_importable_module(client):
    t = tapead.record(lambda x: np.sum(softplus(x) * x), np.ones(4))
    X = points(21, 4)
    assert np.array_equal(run(client, t.gradient(da.from_array(X, chunks=CHUNK))), t.gradient(X))


def test_unknown_custom_op_on_a_worker_is_named(client):
    @tapead.custom_op(name="dask_nowhere")
    def cube(x):
        return x ** 3

    @cube.derivative
    def _(x):
        return (3 * x ** 2,)
    t = tapead.record(lambda x: np.sum(cube(x)), np.ones(2))
    with pytest.raises(TapeFormatError, match="custom.dask_nowhere"):
        run(client, t.gradient(da.ones((4, 2), chunks=2)))


# ---- refusals ------------------------------------------------------------------------------------------------
def test_bad_lazy_calls_are_refused_before_any_graph(tape):
    X = da.from_array(points(12), chunks=(4, 5))
    with pytest.raises(InputError, match="out="):
        tape.gradient(X, params=np.ones(2), out=np.empty((12, 5)))
    with pytest.raises(InputError, match="leading chunks"):
        tape.hvp(X, v=da.from_array(points(12), chunks=(6, 5)), params=np.ones(2))
    with pytest.raises(InputError, match=r"expected \(N,\) \+ \(5,\)"):
        tape.gradient(da.ones((12, 4), chunks=4), params=np.ones(2))
    with pytest.raises(InputError, match="params"):
        tape.gradient(X)
    with pytest.raises(InputError, match="params"):
        tape.gradient(X, params=da.ones((12, 3), chunks=4))
    with pytest.raises(InputError, match="dtype bool"):
        tape.gradient(X.astype(bool), params=np.ones(2))
    with pytest.raises(InputError, match="dtype <U1"):
        tape.vjp(X, w="a", params=np.ones(2))
    with pytest.raises(InputError, match="not Delayed"):
        tape.value(dask.delayed(points)(12), params=np.ones(2))
    with pytest.raises(InputError, match="threads"):
        tape.value(X, params=np.ones(2), threads=0)
    with pytest.raises(InputError, match="scalar"):
        tapead.record(lambda x: x * 2, np.ones(2)).gradient(da.ones((4, 2), chunks=2))


def test_split_recorded_axes_are_rechunked_whole(tape):
    X = points(12)
    r = tape.gradient(da.from_array(X, chunks=(4, 2)), params=np.ones(2))
    assert r.chunks == ((4, 4, 4), (5,))
    assert np.array_equal(r.compute(scheduler="sync"), tape.gradient(X, params=np.ones(2)))


def test_scaling_benchmark_smoke(client):
    from tapead import cli
    cli._benchmarks()  # puts the source tree on sys.path
    from benchmarks import dask_scale
    r = dask_scale.run(sizes=(3000,), chunk=1000, quick=True, client=client, progress=lambda msg: None)
    case = FUNCTIONS["lj"]
    t = tapead.record(case.f, *case.args0)
    assert r["tape_bytes"] == len(tapead.ir.store.to_bytes(t)) and len(r["per_worker"]) == 2
    assert [row["points"] for row in r["rows"]] == [3000] and r["rows"][0]["same_bits"] is True
    assert "efficiency" in dask_scale.format_result(r)


def test_unknown_chunk_sizes(tape):
    X = points(20)
    D = da.from_array(X, chunks=(6, 5))
    D = D[D[:, 0] > 0]  # chunk sizes known only after computing
    v, g = tape.value_and_gradient(D, params=np.ones(2))
    assert np.isnan(g.chunks[0][0])
    keep = X[X[:, 0] > 0]
    assert same(dask.compute(v, g, scheduler="sync"), tape.value_and_gradient(keep, params=np.ones(2)))


# ---- faults (last: it replaces a worker of the shared cluster) -----------------------------------------------
async def _exit():
    os._exit(1)  # the worker process dies at once, like a machine lost mid-compute


def test_killed_worker_mid_compute_still_gives_the_right_result(client):
    case = FUNCTIONS["lj"]
    t = tapead.record(case.f, *case.args0)
    X = case.args0[0] + da.random.default_rng(6).uniform(-0.05, 0.05, size=(60_000, 90), chunks=(1000, 90))
    expected = t.gradient(X.compute(scheduler="sync"))  # (the points are made on the workers, from seeds)
    fut = client.compute(t.gradient(X))
    deadline = time.monotonic() + 30
    while not any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    victim = sorted(client.ncores())[0]  # asked of the scheduler now (scheduler_info() is a cached copy)
    assert not fut.done()  # the kill must land mid-compute for the test to mean anything
    client.run(_exit, workers=[victim], wait=False)
    assert np.array_equal(fut.result(timeout=120), expected)
    assert victim not in client.ncores()
