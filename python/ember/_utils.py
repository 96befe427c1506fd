"""Small argument helpers shared by the ops: dims, size arguments, errors."""

from __future__ import annotations

from collections.abc import Sequence


class DimensionError(IndexError, ValueError):
    """A dim argument out of range. An IndexError as in PyTorch, and a ValueError as our
    convention for shape problems, so either ``except`` catches it."""


def norm_dim(dim: int, ndim: int, op: str) -> int:
    n = max(ndim, 1)  # a 0-d tensor accepts dim 0 / -1, as in PyTorch
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"[{op}] dim must be an int, got {type(dim).__name__}")
    if not -n <= dim < n:
        raise DimensionError(
            f"[{op}] dimension out of range (expected to be in range of [{-n}, {n - 1}], got {dim})"
        )
    return dim % n if ndim else 0


def norm_dims(dim, ndim: int, op: str) -> tuple[int, ...] | None:
    """None -> None (all dims); int or sequence -> sorted tuple of non-negative dims."""
    if dim is None:
        return None
    if isinstance(dim, int) and not isinstance(dim, bool):
        return (norm_dim(dim, ndim, op),)
    if not isinstance(dim, (tuple, list)):
        raise TypeError(f"[{op}] dim must be an int or a tuple of ints, got {type(dim).__name__}")
    dims = tuple(norm_dim(d, ndim, op) for d in dim)
    if len(set(dims)) != len(dims):
        raise ValueError(f"[{op}] dim {tuple(dim)} appears multiple times")
    return tuple(sorted(dims)) if ndim else None


def size_args(size, op: str) -> tuple[int, ...]:
    """``f(2, 3)``, ``f((2, 3))`` and ``f([2, 3])`` all mean shape (2, 3)."""
    if len(size) == 1 and isinstance(size[0], Sequence):
        size = tuple(size[0])
    out = []
    for s in size:
        if hasattr(s, "__index__") and not isinstance(s, bool):
            s = s.__index__()
        else:
            raise TypeError(f"[{op}] size must be ints, got {type(s).__name__}")
        if s < 0:
            raise ValueError(f"[{op}] negative dimension {s} in size {tuple(size)}")
        out.append(s)
    return tuple(out)
