"""``ember.cuda``: is a GPU usable, how many, synchronisation, seeding, memory statistics.

The CUDA backend needs both our kernels compiled in (``_C.cuda_compiled()``) and cupy for
storage; ``is_available()`` is True only when both work and a device is present. Nothing here
raises on a machine without a GPU, driver or cupy.
"""

from __future__ import annotations

from . import _C

_reason = None


def _probe() -> str | None:
    """None when CUDA is usable, else why not (cached)."""
    global _reason
    if _reason is not None:
        return _reason or None
    if not _C.cuda_compiled():
        _reason = "ember was built without CUDA (no nvcc at build time, or EMBER_CUDA=OFF)"
    elif _C.cuda_device_count() == 0:
        _reason = "no CUDA device or driver found"
    else:
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
            _reason = ""
        except Exception as e:  # ImportError, or cupy's CUDARuntimeError
            _reason = (
                f"cupy is needed for CUDA tensors and could not be used ({e}); "
                "pip install cupy-cuda12x"
            )
    return _reason or None


def is_available() -> bool:
    return _probe() is None


def unavailable_reason() -> str:
    return _probe() or ""


def device_count() -> int:
    return _C.cuda_device_count() if is_available() else 0


def current_device() -> int:
    _require("current_device")
    import cupy

    return cupy.cuda.Device().id


def set_device(device) -> None:
    _require("set_device")
    import cupy

    cupy.cuda.Device(int(getattr(device, "index", device) or 0)).use()


def synchronize() -> None:
    _require("synchronize")
    import cupy

    cupy.cuda.get_current_stream().synchronize()
    _C.cuda_synchronize()


def manual_seed(seed: int) -> None:
    if is_available():
        import cupy

        cupy.random.seed(int(seed))


manual_seed_all = manual_seed


def memory_allocated() -> int:
    _require("memory_allocated")
    import cupy

    return cupy.get_default_memory_pool().used_bytes()


def memory_reserved() -> int:
    _require("memory_reserved")
    import cupy

    return cupy.get_default_memory_pool().total_bytes()


def empty_cache() -> None:
    if is_available():
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()


def _require(op: str) -> None:
    if not is_available():
        raise RuntimeError(f"[cuda.{op}] CUDA is not available: {unavailable_reason()}")
