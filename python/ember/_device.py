"""Devices: ``ember.device("cpu")`` / ``"cuda"`` / ``"cuda:1"``, and the array module behind each.

CPU tensors hold numpy arrays, CUDA tensors cupy arrays. cupy is imported lazily, so ember
imports (and every CPU feature works) on a machine without cupy, a driver or a GPU.
"""

from __future__ import annotations

import numpy as np


class device:
    __slots__ = ("type", "index")

    def __init__(self, type, index: int | None = None):  # noqa: A002 (PyTorch's name)
        if isinstance(type, device):
            type, index = type.type, type.index
        elif isinstance(type, str) and ":" in type:
            type, _, idx = type.partition(":")
            if not idx.isdigit():
                raise ValueError(f"[device] invalid device string {type}:{idx!r}")
            index = int(idx)
        if type not in ("cpu", "cuda"):
            raise ValueError(f"[device] unknown device type {type!r} (expected 'cpu' or 'cuda')")
        if type == "cuda" and index is None:
            index = 0
        if type == "cpu":
            index = None
        self.type = type
        self.index = index

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return (
            f"device(type='{self.type}'"
            + ("" if self.index is None else f", index={self.index}")
            + ")"
        )

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except ValueError:
                return False
        return isinstance(other, device) and other.type == self.type and other.index == self.index

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = device("cpu")
_cupy = None


def cupy_module():
    """Import cupy on first use; RuntimeError naming the problem when CUDA can't be used."""
    global _cupy
    if _cupy is None:
        from . import cuda

        if not cuda.is_available():
            raise RuntimeError(f"[cuda] CUDA is not available: {cuda.unavailable_reason()}")
        import cupy

        _cupy = cupy
    return _cupy


def to_device(d) -> device:
    if d is None:
        return CPU
    return d if isinstance(d, device) else device(d)


def device_of(arr) -> device:
    if isinstance(arr, np.ndarray):
        return CPU
    return device("cuda", int(arr.device.id))


def xp_of(arr):
    """The array module (numpy or cupy) that owns ``arr``."""
    return np if isinstance(arr, np.ndarray) else _cupy


def move(arr, dev: device):
    """Copy ``arr`` to ``dev`` (no copy when it is already there)."""
    if dev.type == "cpu":
        return arr if isinstance(arr, np.ndarray) else arr.get()
    cp = cupy_module()
    with cp.cuda.Device(dev.index):
        return cp.asarray(arr)
