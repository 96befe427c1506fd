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
