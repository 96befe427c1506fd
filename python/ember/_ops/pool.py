"""Pooling on our CPU kernels (``_C.maxpool2d_*``, ``avgpool2d_*``, ``adaptive_*pool2d_*``).

The Functions take a 4-D C-contiguous-able [N, C, H, W] tensor and checked window arguments
(``ember.nn.functional`` validates them and reshapes 3-D / 1-D inputs to this form). Max
pooling returns the int64 argmax indices as a second, non-differentiable output (flat index
h*W + w within each input plane, as PyTorch) and its backward scatters through them.
"""

from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd.function import Function
from ..tensor import Tensor


def _c(a):
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size along one dim (ceil_mode: the last window must start
    inside the input or the left padding). May be < 1; callers reject that."""
    return _C.pool_output_size(size, k, s, p, d, bool(ceil_mode))


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, k, s, p, d, ceil_mode, out_hw, return_indices):
        xa = _c(x._array)
        N, C = xa.shape[:2]
        shape = (N, C) + tuple(out_hw)
        out = np.empty(shape, xa.dtype)
        # Inference (no gradient wanted, no indices asked for): the kernel skips the argmax.
        want = return_indices or ctx.needs_input_grad[0]
        idx = np.empty(shape, np.int64) if want else None
        _C.maxpool2d_fwd(xa, k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], bool(ceil_mode),
                         out, idx)  # fmt: skip
        ctx.idx, ctx.in_shape = idx, xa.shape
        return Tensor._wrap(out), None if idx is None else Tensor._wrap(idx)

    @staticmethod
    def backward(ctx, g, _g_idx):
        ga = _c(g._array)
        gx = np.empty(ctx.in_shape, ga.dtype)
        _C.maxpool2d_bwd(ga, ctx.idx, gx)
        return gx, None, None, None, None, None, None, None


class AdaptiveMaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, out_hw):
        xa = _c(x._array)
        shape = xa.shape[:2] + tuple(out_hw)
        out = np.empty(shape, xa.dtype)
        idx = np.empty(shape, np.int64)
        _C.adaptive_maxpool2d_fwd(xa, out, idx)
        ctx.idx, ctx.in_shape = idx, xa.shape
        return Tensor._wrap(out), Tensor._wrap(idx)

    @staticmethod
    def backward(ctx, g, _g_idx):
        ga = _c(g._array)
        gx = np.empty(ctx.in_shape, ga.dtype)
        _C.maxpool2d_bwd(ga, ctx.idx, gx)
        return gx, None


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, k, s, p, ceil_mode, count_include_pad, divisor, out_hw):
        xa = _c(x._array)
        out = np.empty(xa.shape[:2] + tuple(out_hw), xa.dtype)
        ctx.args = (k[0], k[1], s[0], s[1], p[0], p[1], bool(ceil_mode), bool(count_include_pad),
                    int(divisor))  # fmt: skip
        _C.avgpool2d_fwd(xa, *ctx.args, out)
        ctx.in_shape = xa.shape
        return Tensor._wrap(out)

    @staticmethod
    def backward(ctx, g):
        ga = _c(g._array)
        gx = np.empty(ctx.in_shape, ga.dtype)
        _C.avgpool2d_bwd(ga, *ctx.args, gx)
        return gx, None, None, None, None, None, None, None


class AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, out_hw):
        xa = _c(x._array)
        out = np.empty(xa.shape[:2] + tuple(out_hw), xa.dtype)
        _C.adaptive_avgpool2d_fwd(xa, out)
        ctx.in_shape = xa.shape
        return Tensor._wrap(out)

    @staticmethod
    def backward(ctx, g):
        ga = _c(g._array)
        gx = np.empty(ctx.in_shape, ga.dtype)
        _C.adaptive_avgpool2d_bwd(ga, gx)
        return gx, None
