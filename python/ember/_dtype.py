"""ember dtypes: thin named wrappers over numpy dtypes, PyTorch-style names and promotion.

ember stores data in numpy (CPU) or cupy (CUDA) arrays, so every dtype maps to a numpy dtype,
except bfloat16, which numpy lacks: it is declared so the name exists, and creating a tensor of
it raises until the CUDA half-precision work (issue 8) gives it storage.
"""

from __future__ import annotations

import numpy as np


class dtype:
    """A tensor element type (``ember.float32`` ...). Compares equal to itself only."""

    __slots__ = ("name", "np_dtype", "is_floating_point", "itemsize")

    def __init__(self, name: str, np_dtype, is_floating_point: bool, itemsize: int):
        self.name = name
        self.np_dtype = None if np_dtype is None else np.dtype(np_dtype)
        self.is_floating_point = is_floating_point
        self.itemsize = itemsize

    def __repr__(self) -> str:
        return f"ember.{self.name}"

    def __reduce__(self):  # pickle as the module-level singleton
        return (_by_name, (self.name,))


float16 = dtype("float16", np.float16, True, 2)
bfloat16 = dtype("bfloat16", None, True, 2)
float32 = dtype("float32", np.float32, True, 4)
float64 = dtype("float64", np.float64, True, 8)
uint8 = dtype("uint8", np.uint8, False, 1)
int8 = dtype("int8", np.int8, False, 1)
int16 = dtype("int16", np.int16, False, 2)
int32 = dtype("int32", np.int32, False, 4)
int64 = dtype("int64", np.int64, False, 8)
bool_ = dtype("bool", np.bool_, False, 1)

half, float, double = float16, float32, float64  # noqa: A001  PyTorch aliases
short, int, long = int16, int32, int64  # noqa: A001

_ALL = (float16, bfloat16, float32, float64, uint8, int8, int16, int32, int64, bool_)
_NAMES = {d.name: d for d in _ALL}
_FROM_NP = {d.np_dtype: d for d in _ALL if d.np_dtype is not None}

_default_float = float32


def _by_name(name: str) -> dtype:
    return _NAMES[name]


def get_default_dtype() -> dtype:
    return _default_float


def set_default_dtype(d) -> None:
    global _default_float
    d = to_dtype(d)
    if d not in (float32, float64):
        raise TypeError(f"[set_default_dtype] only float32 and float64 are allowed, got {d}")
    _default_float = d


def to_dtype(d) -> dtype:
    """Accept an ember dtype, a numpy dtype/type, a name, or Python's bool/int/float."""
    if isinstance(d, dtype):
        return d
    if d is builtins_float:
        return float64  # PyTorch: dtype=float means float64
    if d is builtins_int:
        return int64
    if d is builtins_bool:
        return bool_
    if isinstance(d, str) and d in _NAMES:
        return _NAMES[d]
    try:
        nd = np.dtype(d)
    except TypeError:
        raise TypeError(f"[dtype] cannot interpret {d!r} as an ember dtype") from None
    if nd not in _FROM_NP:
        raise TypeError(f"[dtype] numpy dtype {nd} has no ember equivalent")
    return _FROM_NP[nd]


def from_numpy_dtype(nd) -> dtype:
    nd = np.dtype(nd)
    if nd not in _FROM_NP:
        raise TypeError(f"[tensor] numpy dtype {nd} is not supported by ember")
    return _FROM_NP[nd]


def np_dtype(d: dtype) -> np.dtype:
    if d.np_dtype is None:
        raise TypeError(f"[tensor] {d} tensors are not supported yet (no storage type)")
    return d.np_dtype


def category(d: dtype) -> int:
    """0 bool, 1 integer, 2 floating: the ordering PyTorch's type promotion uses."""
    if d is bool_:
        return 0
    return 2 if d.is_floating_point else 1


def promote_types(a: dtype, b: dtype) -> dtype:
    """PyTorch's rule: across categories (bool < integer < floating) the higher category's
    dtype wins as it is (int64 + float32 -> float32, not numpy's float64); within a category,
    the wider type (numpy's promotion: int8 + uint8 -> int16, float16 + float32 -> float32)."""
    if a is b:
        return a
    ca, cb = category(a), category(b)
    if ca != cb:
        return a if ca > cb else b
    return from_numpy_dtype(np.promote_types(np_dtype(a), np_dtype(b)))


import builtins as _builtins  # noqa: E402

builtins_float, builtins_int, builtins_bool = _builtins.float, _builtins.int, _builtins.bool
