"""How many threads a batch uses: ``threads=`` validated in one place, and a default that never costs time.

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

from .errors import InputError

CHUNK_SECONDS = 1e-3  # least work per thread for the default to split (hand-off costs ~20-50 us here)
SAMPLE_SECONDS = 0.5  # how often the idle-core estimate is refreshed
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_sample: tuple | None = None  # (wall time, machine busy seconds, own CPU seconds, idle-core estimate)


def check_threads(threads) -> None:
    """``threads`` is None (the default policy) or a positive int (not a bool): the same rule for every call."""
    if threads is not None and (type(threads) is not int or threads < 1):
        raise InputError(f"threads must be None (automatic) or a positive integer, got {threads!r}")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


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
