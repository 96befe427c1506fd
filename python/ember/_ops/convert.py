"""dtype and device conversion with autograd (the gradient converts back)."""

from __future__ import annotations

from .. import _dtype as D
from .._device import device_of, move
from ..autograd.function import Function
from ..tensor import Tensor


class ToCopy(Function):
    @staticmethod
    def forward(ctx, a, dtype, dev, copy):
        x = a._array
        ctx.src_dtype, ctx.src_dev = x.dtype, device_of(x)
        if dev is not None and dev != ctx.src_dev:
            x = move(x, dev)
        if dtype is not None:
            x = x.astype(D.np_dtype(dtype), copy=False)
        if copy and x is a._array:
            x = x.copy()
        return Tensor._wrap(x)

    @staticmethod
    def backward(ctx, g):
        g = g._array
        if device_of(g) != ctx.src_dev:
            g = move(g, ctx.src_dev)
        return g.astype(ctx.src_dtype, copy=False), None, None, None


def to_copy(t, dtype=None, device=None, copy=False):
    return ToCopy.apply(t, dtype, device, copy)
