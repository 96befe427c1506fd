"""What the CPU kernels detected and use: ``ember.backends.cpu.capabilities()``."""

from __future__ import annotations

from .. import _C


def capabilities() -> dict:
    """CPU features found (avx2, fma, avx512f), whether the AVX2 kernels are compiled in,
    which path the kernels take now ("avx2" or "scalar"; EMBER_NO_AVX2=1 forces scalar),
    the GEMM kernel in use ("gemm_path": "avx512-12x32", "avx2-6x16" or "scalar";
    EMBER_NO_AVX512=1 turns the AVX-512 kernel off), OpenMP, and the thread count."""
    return dict(_C.cpu_capabilities())


def get_cpu_path() -> str:
    return _C.cpu_capabilities()["selected"]


def set_cpu_path(path: str) -> None:
    """Force the "scalar" kernels, or go back to "auto" (AVX2 when the CPU has it)."""
    if path not in ("auto", "scalar"):
        raise ValueError(f"[set_cpu_path] path must be 'auto' or 'scalar', got {path!r}")
    _C._set_force_scalar(path == "scalar")


# glibc's malloc (the one numpy uses) returns freed memory to the kernel: blocks above the
# mmap threshold (128 KiB at first, raised as such blocks are freed, at most 32 MiB) are
# munmap'ed on free, and free space above trim_threshold at the top of the heap is released.
# The next allocation of the same size then faults in fresh pages, about 2-3 us per 4 KiB on
# our VMs (shared/DESIGN.md section 3): a training step allocating 8 MiB activations and
# gradients spent as long faulting pages as in batch-norm's kernels. Keeping freed memory
# (no mmap for the main thread's blocks, no trimming below 1 GiB of free heap top) makes
# steady-state steps reuse warm pages, as a caching allocator would (a 32x64x112x112 max-pool
# fwd+bwd, 100+ MiB per step, ran ~20% faster on a loaded machine); the cost is that the
# process keeps its peak heap (up to 1 GiB of it free) and large blocks can fragment it.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_THRESHOLD: 128 * 1024,
                   _M_MMAP_MAX: 65536}  # fmt: skip
_KEEP = {_M_TRIM_THRESHOLD: 1 << 30, _M_MMAP_THRESHOLD: 32 << 20, _M_MMAP_MAX: 0}


def keep_freed_memory(enable: bool = True) -> bool:
    """Tune glibc's malloc to keep freed memory for reuse (``True``, ember's default at import
    unless ``EMBER_KEEP_FREED_MEMORY=0``) or restore glibc's default thresholds (``False``).
    Process-wide (it applies to every malloc user). Returns whether it took effect (False on
    a C library without ``mallopt``, e.g. musl, macOS, Windows)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018  (glibc only)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    values = _KEEP if enable else _GLIBC_DEFAULTS
    return all(mallopt(k, v) == 1 for k, v in values.items())
