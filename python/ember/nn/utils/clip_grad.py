"""Gradient clipping with PyTorch's semantics; the CPU norm is one fused kernel call.

``_C.grad_norm_reduce`` reads every gradient once in a single C++ call over the list (threads
over pieces of the list, sums of squares accumulated in double; max |g| for the inf norm, NaN
propagating), so clipping a model's gradients costs one pass for the norm plus one for the
scaling.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ... import _C
from ..._device import xp_of
from ...tensor import Tensor


def _grads(parameters) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _norm_cpu(arrays: list[np.ndarray], p: float) -> float:
    """The p-norm of all arrays together, in float64."""
    if p == 2.0 or math.isinf(p):
        by_dtype: dict[np.dtype, list[np.ndarray]] = {}
        for a in arrays:
            if a.dtype not in (np.float32, np.float64):
                a = a.astype(np.float64)
            by_dtype.setdefault(a.dtype, []).append(np.ascontiguousarray(a))
        parts = [_C.grad_norm_reduce(v, inf=math.isinf(p)) for v in by_dtype.values()]
        if math.isinf(p):
            return math.nan if any(math.isnan(x) for x in parts) else max(parts, default=0.0)
        return math.sqrt(sum(parts))
    if p == 0.0:
        return float(sum(np.count_nonzero(a) for a in arrays))
    total = sum(float(np.sum(np.abs(a.astype(np.float64)) ** p)) for a in arrays)
    return total ** (1.0 / p)


def _norm_xp(arrays, p: float) -> float:
    xp = xp_of(arrays[0])
    if math.isinf(p):
        return max(float(xp.max(xp.abs(a))) if a.size else 0.0 for a in arrays)
    return sum(float(xp.sum(xp.abs(a.astype(xp.float64)) ** p)) for a in arrays) ** (1.0 / p)


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Scale all gradients in place by ``min(1, max_norm / (total_norm + 1e-6))``, where
    ``total_norm`` is the ``norm_type``-norm of all gradients together (``inf``: max |g|).

    Returns the total norm as a 0-d tensor (dtype of the gradients; float32 when there are
    none). ``error_if_nonfinite=True`` raises RuntimeError for a NaN/inf norm; otherwise the
    gradients are scaled by it anyway (NaN in, NaN out), as PyTorch. ``foreach`` is ignored.
    """
    grads = _grads(parameters)
    p = float(norm_type)
    if not grads:
        return Tensor._wrap(np.asarray(0.0, np.float32))
    arrays = [g._array for g in grads]
    cpu = all(isinstance(a, np.ndarray) for a in arrays)
    total = _norm_cpu(arrays, p) if cpu else _norm_xp(arrays, p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"[clip_grad_norm_] the total norm of order {p} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    coef = min(float(max_norm) / (total + 1e-6), 1.0) if not math.isnan(total) else math.nan
    with np.errstate(invalid="ignore"):  # inf * 0 = NaN is the documented outcome
        for g in grads:
            a = g._array
            a *= a.dtype.type(coef)
            g._bump_version()
    dtype = np.result_type(*[a.dtype for a in arrays])
    if cpu:
        return Tensor._wrap(np.asarray(total, dtype))
    xp = xp_of(arrays[0])
    return Tensor._wrap(xp.asarray(total, dtype))


def clip_grad_value_(
    parameters: Tensor | Iterable[Tensor], clip_value: float, foreach: bool | None = None
) -> None:
    """Clamp every gradient in place to ``[-clip_value, clip_value]`` (NaN stays NaN)."""
    c = float(clip_value)
    for g in _grads(parameters):
        xp = xp_of(g._array)
        xp.clip(g._array, -c, c, out=g._array)
        g._bump_version()
