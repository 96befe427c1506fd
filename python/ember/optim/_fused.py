"""Glue between the optimizers and the fused multi-tensor kernels (``_C.*_step``).

A step gathers, per parameter group, the parameters that have a gradient and makes one kernel
call per (dtype, step-dependent key) bucket: usually exactly one call per group. Parameters and
state buffers are passed as the arrays themselves and updated in place; the kernel refuses
(TypeError/ValueError) an array it could not write in place, so nothing is silently copied.
Gradients are only read: a non-contiguous or differently typed gradient is copied first.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from ..tensor import Tensor


def params_with_grad(name: str, group: dict[str, Any]) -> list[tuple[Tensor, np.ndarray]]:
    """(param, contiguous grad array of the param's dtype) for each param that has a grad."""
    out = []
    for p in group["params"]:
        if p.grad is None:
            continue
        a, g = p._array, p.grad._array
        if not isinstance(a, np.ndarray) or not isinstance(g, np.ndarray):
            raise NotImplementedError(
                f"[{name}] only CPU (numpy) parameters and gradients are supported"
            )
        if g.shape != a.shape:
            raise ValueError(
                f"[{name}] gradient of shape {g.shape} for a parameter of shape {a.shape}"
            )
        if g.dtype != a.dtype or not g.flags.c_contiguous:
            g = np.ascontiguousarray(g, dtype=a.dtype)
        out.append((p, g))
    return out


def buckets(
    items: list[tuple[Tensor, np.ndarray]], key: Callable[[Tensor], Hashable]
) -> dict[Hashable, list[tuple[Tensor, np.ndarray]]]:
    """Items grouped by (dtype, key(param)), in first-seen order."""
    out: dict[Hashable, list[tuple[Tensor, np.ndarray]]] = {}
    for p, g in items:
        out.setdefault((p._array.dtype, key(p)), []).append((p, g))
    return out


def zeros_state(p: Tensor, fill: float = 0.0) -> Tensor:
    """A fresh C-contiguous state buffer shaped and typed like ``p``."""
    return Tensor._wrap(np.full(p._array.shape, fill, dtype=p._array.dtype))


def arrays(ts: list[Tensor]) -> list[np.ndarray]:
    return [t._array for t in ts]


def bump(ps: list[Tensor]) -> None:
    for p in ps:
        p._bump_version()
