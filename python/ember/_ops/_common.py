"""Helpers shared by the ops: operands, PyTorch type promotion, device checks, broadcasting."""

from __future__ import annotations

import numbers

import numpy as np

from .. import _dtype as D
from .._device import xp_of
from ..tensor import Tensor


def is_scalar(x) -> bool:
    return isinstance(x, (bool, numbers.Number)) and not isinstance(x, np.ndarray)


def as_operand(x, op: str):
    """A Tensor or a Python scalar; numpy arrays, numpy scalars and lists become tensors."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (complex, np.complexfloating)):
        raise TypeError(f"[{op}] complex numbers are not supported by ember")
    if isinstance(x, np.generic):
        return x.item()
    if is_scalar(x):
        return x
    if isinstance(x, (np.ndarray, list, tuple)):
        from ..creation import tensor

        return tensor(x)
    raise TypeError(f"[{op}] unsupported operand type {type(x).__name__}")


def check_device(op: str, *operands):
    """Device of the tensor operands; RuntimeError if they are on different devices."""
    dev = None
    for x in operands:
        if isinstance(x, Tensor):
            d = x.device
            if dev is None:
                dev = d
            elif d != dev:
                raise RuntimeError(
                    f"[{op}] expected all tensors on the same device, got {dev} and {d}"
                )
    return dev


def result_type(*operands) -> D.dtype:
    """PyTorch's promotion: dimensioned tensors decide within their category; 0-d tensors and
    then Python scalars only matter when they are of a higher category (bool < int < float)."""
    dims = [x.dtype for x in operands if isinstance(x, Tensor) and x.ndim > 0]
    zeros = [x.dtype for x in operands if isinstance(x, Tensor) and x.ndim == 0]
    scal = [x for x in operands if not isinstance(x, Tensor)]
    r = None
    for group in (dims, zeros):
        if not group:
            continue
        g = group[0]
        for d in group[1:]:
            g = D.promote_types(g, d)
        if r is None or D.category(g) > D.category(r):
            r = g
    if scal:
        cat = max(
            0 if isinstance(s, bool) else 1 if isinstance(s, numbers.Integral) else 2 for s in scal
        )
        if isinstance(scal[0], complex) or any(isinstance(s, complex) for s in scal):
            raise TypeError("complex numbers are not supported by ember")
        if r is None or cat > D.category(r):
            r = (D.bool_, D.int64, D.get_default_dtype())[cat]
    return r


def cast(x, dt: D.dtype):
    """The array of a tensor operand in dtype ``dt`` (no copy when it already is); scalars pass."""
    if isinstance(x, Tensor):
        a = x._array
        nd = D.np_dtype(dt)
        return a if a.dtype == nd else a.astype(nd)
    return x


def broadcast_shape(op: str, *shapes):
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(
            f"[{op}] shapes {' and '.join(str(tuple(s)) for s in shapes)} are not broadcastable"
        ) from None


def shape_of(x):
    return x.shape if isinstance(x, Tensor) else ()


def unbroadcast(g, shape):
    """Sum ``g`` over the dims that broadcasting added or stretched, back to ``shape``."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def float_dtype_of(t: Tensor) -> D.dtype:
    """Ops that only make sense on floats (exp, log, mean ...) promote integers as PyTorch does."""
    return t.dtype if t.dtype.is_floating_point else D.get_default_dtype()


def xp(t: Tensor):
    return xp_of(t._array)


def save_operands(ctx, *xs):
    """Save tensor operands (version-checked) and remember scalar operands as constants."""
    ctx.save_for_backward(*(x if isinstance(x, Tensor) else None for x in xs))
    ctx.consts = tuple(None if isinstance(x, Tensor) else x for x in xs)


def load_operands(ctx, np_dt):
    """The saved operands as arrays in the gradient's dtype (scalars as they were)."""
    return tuple(
        c if t is None else t._array.astype(np_dt, copy=False)
        for t, c in zip(ctx.saved_tensors, ctx.consts)
    )
