"""How a batch runs across threads: ``threads=`` validated in one place, a default that never costs time, and the
chunked native calls.

A split pays only when every thread gets far more work than it costs to hand a chunk to another thread (tens of
microseconds to wake a pool thread, more on a busy machine) and when there is a free core to run it. The default
therefore splits a batch only when its measured single-thread time (seconds per point of this kernel, from
earlier one-thread calls) gives each thread at least CHUNK_SECONDS of work, and over at most the cores other
processes leave idle (the CPU time of the whole machine minus this process's own, sampled from /proc/stat; the
1-minute load average where that is unavailable). A kernel not yet timed runs on one thread, which times it.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..arrays import pointer
from ..errors import InputError

CHUNK_SECONDS = 1e-3  # least work per thread for the default to split (hand-off costs ~20-50 us here)
SAMPLE_SECONDS = 0.5  # how often the idle-core estimate is refreshed
CPU_MAX = "/sys/fs/cgroup/cpu.max"  # "quota period" in microseconds, or "max period"
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_sample: tuple | None = None  # (wall time, machine busy seconds, own CPU seconds, idle-core estimate)


def check_threads(threads) -> None:
    """``threads`` is None (the default policy) or a positive int (not a bool): the same rule for every call."""
    if threads is not None and (type(threads) is not int or threads < 1):
        raise InputError(f"threads must be None (automatic) or a positive integer, got {threads!r}")


def cores() -> int:
    """The cores this process may run on: its CPU affinity, bounded by a cgroup CPU quota (containers)."""
    try:
        n = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        n = max(1, os.cpu_count() or 1)
    try:
        with open(CPU_MAX, "rb") as fh:
            quota, period = fh.read().split()[:2]
        if quota != b"max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return n


def _forget_pool_in_child() -> None:
    """A forked child has none of the parent's pool threads: it starts its own pool when it needs one (handing
    work to the inherited one would wait forever)."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="tapead")
    return _pool


def _machine_busy() -> float | None:
    """Seconds of CPU time the whole machine has spent busy since boot (None where /proc/stat is absent)."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = fh.readline().split()[1:]
        ticks = [int(v) for v in fields]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user)
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def idle_cores() -> int:
    """Cores not used by other processes, refreshed at most every SAMPLE_SECONDS (at least 1)."""
    global _sample
    now = time.monotonic()
    last = _sample
    if last is not None and now - last[0] < SAMPLE_SECONDS:
        return last[3]
    n = cores()
    busy, own = _machine_busy(), _own_cpu()
    if busy is not None and last is not None and last[1] is not None:
        others = max(0.0, (busy - last[1]) - (own - last[2])) / (now - last[0])
    else:
        try:  # no earlier sample: the 1-minute load average, which counts this process's running thread too
            others = max(0.0, os.getloadavg()[0] - 1.0)
        except (AttributeError, OSError):
            others = 0.0
    estimate = max(1, min(n, int(n - others + 0.5)))
    _sample = (now, busy, own, estimate)
    return estimate


def default_threads(n: int, seconds_per_point: float | None) -> int:
    """Threads the default (``threads=None``) gives a batch of ``n`` points of a kernel timed at
    ``seconds_per_point`` on one thread (None: not timed yet, so one thread)."""
    if seconds_per_point is None or n * seconds_per_point < 2 * CHUNK_SECONDS:
        return 1
    return max(1, min(int(n * seconds_per_point / CHUNK_SECONDS), n, idle_cores()))


def run_batch(k, b, ptrs: list, p, outs: list, t: int, status) -> int:
    """The batch kernel ``k`` over all points of the bound call ``b`` in ``t`` chunks of consecutive points, one
    native call each (the first on this thread; ctypes releases the GIL); returns the failure count. ``ptrs``
    and ``p`` are the input and params addresses; ``status`` (None, or int32 per point) receives the statuses."""
    n = b.n
    s = pointer(status)
    if t == 1:  # the common case, without the chunk bookkeeping (small batches of tiny kernels feel it)
        fast = k.fast.get(tuple([o is not None for o in outs])) if status is None else None
        if fast is not None:
            return fast(n, *ptrs, p, b.p_stride, *[pointer(o) for o in outs if o is not None])
        return k.batch(n, *ptrs, p, b.p_stride, *[pointer(o) for o in outs], s)
    in_rows = [x.size // n * 8 for x in b.xs]
    out_rows = [0 if o is None else o.size // n * 8 for o in outs]
    bounds = [n * i // t for i in range(t + 1)]
    # (a list, not a generator: a generator here retains memory in CPython 3.11)
    fast = k.fast.get(tuple([o is not None for o in outs])) if status is None else None

    def chunk(lo: int, hi: int) -> int:
        xs = [a + lo * r for a, r in zip(ptrs, in_rows)]
        pp = None if p is None else p + lo * b.p_stride * 8
        os_ = [None if o is None else pointer(o) + lo * r for o, r in zip(outs, out_rows)]
        if fast is not None:
            return fast(hi - lo, *xs, pp, b.p_stride, *[o for o in os_ if o is not None])
        return k.batch(hi - lo, *xs, pp, b.p_stride, *os_, None if s is None else s + lo * 4)

    futures = [executor().submit(chunk, bounds[i], bounds[i + 1]) for i in range(1, t)]
    return chunk(bounds[0], bounds[1]) + sum(f.result() for f in futures)
