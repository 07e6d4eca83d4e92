"""lj30 gradients at scale: a LocalCluster of worker processes against one process with two threads.

The workload is the same Dask graph everywhere: per chunk of points, the points are drawn on the worker from a
seed (``da.random``: 10^7 points x 90 doubles would be 7.2 GB if made on the client), their gradients computed
by ``tape.gradient`` (one task per chunk) and summed over the points, so only 90 numbers per chunk come back.
Reported: points per second of that graph on the cluster and on one process (threaded scheduler, 2 threads),
the scaling efficiency (their ratio), the kernel alone (``tape.gradient(X, threads=2)`` on points already in
memory), and the one-off costs: the tape bytes shipped, compile times (cold, as on a fresh machine) and what a
worker pays on its first task here (load the tape file, compile or read the kernel from the disk cache).
Run ``tapead bench --dask`` (``--quick`` for a small smoke run).
"""
from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np

import tapead
from tapead.distributed import worker

from . import cases

SIZES = (10**6, 10**7)
CHUNK = 100_000


def workload(tape: tapead.Tape, x0: np.ndarray, n: int, chunk: int, seed: int = 0):
    """The summed gradients of ``n`` jittered lj30 configurations, as a lazy (90,) array."""
    import dask.array as da
    X = x0 + da.random.default_rng(seed).uniform(-0.05, 0.05, size=(n, x0.size), chunks=(chunk, x0.size))
    return tape.gradient(X).sum(axis=0)


def settle() -> None:
    """Wait for this process's background O2 compilations (runs on each worker)."""
    for t in threading.enumerate():
        if t.name == "tapead-O2":
            t.join()


def _rate(n: int, seconds: float) -> float:
    return n / seconds


def run(sizes=SIZES, chunk: int = CHUNK, workers: int = 2, quick: bool = False, client=None, repeats: int = 1,
        progress=print) -> dict:
    """Time the workload at each size on one process and on the cluster; returns a JSON-ready dict.

    ``quick`` skips waiting for the O2 kernel (the O0 kernel runs). ``client``: an existing cluster to use.
    ``repeats``: runs of each configuration, alternating; the medians are reported."""
    import dask
    import distributed
    from tapead.distributed.dask_array import shipment

    case = cases.load(["lj"])[0]
    x0 = case.x0
    tape = tapead.record(case.f, x0)
    from tapead.ir.structure import records
    result: dict = {"function": "lj30", "ops": records(tape.tape), "chunk": chunk, "workers": workers, "rows": []}
    progress("compiling (cold, as a fresh machine would)")
    t0 = time.perf_counter()
    tape.compile()
    result["compile_o0_s"] = time.perf_counter() - t0
    if not quick:
        settle()  # the O2 kernel, also in the disk cache the local workers read
        result["compile_o2_s"] = time.perf_counter() - t0
    s = dask.compute(shipment(tape, "gradient", {}), scheduler="sync")[0]
    result["tape_bytes"] = len(s.tape)
    result["gradient_tape_bytes"] = len(s.derived)
    X = np.ascontiguousarray(x0 + np.random.default_rng(1).uniform(-0.05, 0.05, size=(chunk, x0.size)))
    G = np.empty_like(X)
    best = min(_timed(lambda: tape.gradient(X, out=G, threads=2)) for _ in range(3))
    result["kernel_points_per_s_2_threads"] = _rate(chunk, best)
    own = client is None
    if own:
        client = distributed.Client(distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=logging.ERROR))
    try:
        progress("first task on each worker")
        client.run(worker.reset)
        result["per_worker"] = list(client.run(worker.warm, s, "gradient", x0[None], settle=not quick,
                                               threads=1).values())
        dask.compute(workload(tape, x0, 2 * chunk, chunk), scheduler="threads", num_workers=2)  # warm this process
        if not quick:
            settle()
        for n in sizes:
            work = workload(tape, x0, n, chunk)
            local_times, remote_times = [], []
            for r in range(repeats):  # alternately, so that a change in the machine's load hits both alike
                progress(f"{n} points, one process with 2 threads ({r + 1}/{repeats})")
                t = time.perf_counter()
                local = dask.compute(work, scheduler="threads", num_workers=2)[0]
                local_times.append(time.perf_counter() - t)
                progress(f"{n} points, {workers}-worker cluster ({r + 1}/{repeats})")
                t = time.perf_counter()
                remote = dask.compute(work, scheduler=client.get)[0]
                remote_times.append(time.perf_counter() - t)
            local_s, remote_s = float(np.median(local_times)), float(np.median(remote_times))
            result["rows"].append({"points": n, "one_process_s": local_s, "cluster_s": remote_s,
                                   "one_process_times": local_times, "cluster_times": remote_times,
                                   "one_process_points_per_s": _rate(n, local_s),
                                   "cluster_points_per_s": _rate(n, remote_s),
                                   "efficiency": local_s / remote_s,
                                   "same_bits": bool(np.array_equal(local, remote))})
        result["worker_stats"] = list(client.run(worker.stats).values())
    finally:
        if own:
            cluster = client.cluster
            client.close()
            cluster.close()
    result["cpus"] = os.cpu_count()
    return result


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def format_result(r: dict) -> str:
    """The result as a small plain-text report."""
    lines = [f"lj30 gradients (a {r['ops']}-op tape, loops counted once), chunks of {r['chunk']} points, {r['workers']} workers, "
             f"{r['cpus']} CPUs",
             f"  shipped once per worker: tape {r['tape_bytes']} B + gradient tape {r['gradient_tape_bytes']} B",
             f"  compile (cold): O0 {r['compile_o0_s']:.2f} s"
             + (f", O2 ready after {r['compile_o2_s']:.1f} s" if "compile_o2_s" in r else ""),
             f"  kernel alone, one process, threads=2: {r['kernel_points_per_s_2_threads']:.3g} points/s"]
    for w in r["per_worker"]:
        lines.append(f"  first task on a worker: load {1e3 * w['load_s']:.1f} ms, first call "
                     f"{1e3 * w['first_call_s']:.0f} ms, O2 swap {1e3 * w['o2_swap_s']:.0f} ms")
    lines.append("  (median times of the alternating runs)")
    lines.append(f"  {'points':>10} {'1 process (s)':>14} {'cluster (s)':>12} {'1 process pts/s':>16} "
                 f"{'cluster pts/s':>14} {'efficiency':>10} {'same bits':>9}")
    for row in r["rows"]:
        lines.append(f"  {row['points']:>10} {row['one_process_s']:>14.2f} {row['cluster_s']:>12.2f} "
                     f"{row['one_process_points_per_s']:>16.3g} {row['cluster_points_per_s']:>14.3g} "
                     f"{row['efficiency']:>10.2f} {str(row['same_bits']):>9}")
    return "\n".join(lines)
