"""Indexing: ``t[idx]`` with ints, slices, None, Ellipsis, integer arrays/tensors and bool masks
(autograd scatters the gradient back, summing over repeated indices), and ``t[idx] = v``.
"""

from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from ..autograd.grad_mode import is_grad_enabled
from ..tensor import Tensor
from ._common import check_device
from ._common import xp as xp_


def _convert_index(idx, t):
    """Tensors inside an index become arrays on ``t``'s device; lists become int/bool arrays."""
    xp = xp_(t)

    def one(i):
        if isinstance(i, Tensor):
            check_device("index", t, i)
            if i.dtype.is_floating_point:
                raise TypeError(
                    f"[index] tensors used as indices must be integer or bool, got {i.dtype}"
                )
            return i._array
        if isinstance(i, list):
            a = np.asarray(i)
            if a.dtype.kind not in "iub" and a.size:
                raise TypeError(
                    f"[index] lists used as indices must hold ints or bools, got {a.dtype}"
                )
            return xp.asarray(a.astype(np.int64) if a.dtype.kind != "b" else a)
        if isinstance(i, np.ndarray) and xp is not np:
            return xp.asarray(i)
        if isinstance(i, float):
            raise TypeError("[index] float indices are not allowed")
        return i

    if isinstance(idx, tuple):
        return tuple(one(i) for i in idx)
    return one(idx)


def _is_basic(idx):
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(
        isinstance(i, (int, slice, type(None), type(Ellipsis))) or (isinstance(i, np.integer))
        for i in items
    )


def _do_index(a, idx, op="index"):
    try:
        return a[idx]
    except IndexError as e:
        raise IndexError(f"[{op}] {e} (shape {a.shape})") from None


class GetItem(Function):
    @staticmethod
    def forward(ctx, t, idx):
        idx = _convert_index(idx, t)
        a = t._array
        out = _do_index(a, idx)
        if not hasattr(out, "shape") or isinstance(out, np.generic):
            out = xp_(t).asarray(out)
        ctx.idx, ctx.shape, ctx.dtype, ctx.basic = idx, a.shape, a.dtype, _is_basic(idx)
        if ctx.basic and out.base is not None:
            return Tensor._wrap(out, t._version)  # a view: shares the version counter
        return Tensor._wrap(out)

    @staticmethod
    def backward(ctx, g):
        g = g._array
        xp = np if isinstance(g, np.ndarray) else __import__("cupy")
        out = xp.zeros(ctx.shape, g.dtype)
        if ctx.basic:
            out[ctx.idx] = g  # basic indexing never repeats an element
        elif xp is np:
            np.add.at(out, ctx.idx, g)  # integer arrays may repeat: accumulate
        else:
            import cupyx

            cupyx.scatter_add(out, ctx.idx, g)
        return out, None


def getitem(t, idx):
    return GetItem.apply(t, idx)


def setitem(t, idx, value):
    """``t[idx] = value``, in place and outside autograd."""
    if is_grad_enabled() and t.requires_grad:
        raise RuntimeError(
            "[setitem] in-place assignment into a tensor that requires grad is not supported by "
            "autograd; do it under ember.no_grad() or build the tensor with ember.where/cat"
        )
    if t._array.flags.writeable is False if hasattr(t._array, "flags") else False:
        raise ValueError("[setitem] the tensor is read-only (an expanded view?); clone() it first")
    idx = _convert_index(idx, t)
    if isinstance(value, Tensor):
        check_device("setitem", t, value)
        value = value._array
    try:
        t._array[idx] = value
    except IndexError as e:
        raise IndexError(f"[setitem] {e} (shape {t.shape})") from None
    except ValueError as e:
        raise ValueError(f"[setitem] {e}") from None
    t._bump_version()


def index_select(input, dim, index):
    from .._utils import norm_dim

    d = norm_dim(dim, input.ndim, "index_select")
    if index.ndim > 1:
        raise ValueError(f"[index_select] index must be 0-d or 1-d, got {index.ndim}-d")
    return GetItem.apply(input, (slice(None),) * d + (index.reshape(-1),))


def masked_fill(input, mask, value):
    from .elementwise import where

    if mask.dtype.name != "bool":
        raise TypeError(f"[masked_fill] mask must be bool, got {mask.dtype}")
    v = value.item() if isinstance(value, Tensor) else value
    return where(mask, Tensor._wrap(xp_(input).asarray(v, dtype=input._array.dtype)), input)
