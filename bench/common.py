"""Shared benchmark helpers: timing (warm-up + median) and the machine's measured ceilings.

Ceilings are measured in the same run as the kernels, because our machines are shared and
their clocks drift (shared/DESIGN.md section 5).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time

import numpy as np


def median_time(fn, repeat: int = 20, warmup: int = 3, min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < repeat or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def interleaved_median_times(fns, repeat: int = 20, warmup: int = 3, min_time: float = 0.0):
    """Median wall time of each ``fn()`` in seconds, the calls interleaved round-robin (``fns[0]``,
    ``fns[1]``, ..., then again) after ``warmup`` calls of each: on a shared machine a slow
    spell then lands on every function alike instead of on whichever was being timed, so the
    ratios between them hold even when the absolute times drift. ``min_time`` is per function.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    t_end = time.perf_counter() + min_time * len(fns)
    while len(times[0]) < repeat or time.perf_counter() < t_end:
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [float(np.median(ts)) for ts in times]


def copy_bandwidth(nbytes: int = 256 << 20) -> float:
    """Measured copy bandwidth in GB/s (bytes read + bytes written), warm buffers.

    ``nbytes`` is the size of one buffer: pass a kernel's own working-set size to get the
    ceiling at that size (from cache for small buffers, from DRAM for large ones)."""
    src = np.random.default_rng(0).random(max(nbytes // 8, 1))
    dst = np.empty_like(src)
    t = median_time(lambda: np.copyto(dst, src), repeat=10)
    return 2 * src.nbytes / t / 1e9


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {platform.system()} {platform.release()}"


def table(rows, header) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(v).rjust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def git_commit() -> str:
    """Short hash of the checkout the benchmark runs from ("unknown" outside git)."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.check_output(["git", "-C", here, "rev-parse", "--short", "HEAD"])
        return out.decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
