"""2-D (and 1-D) convolution on our CPU kernels (``_C.conv2d_fwd / _bwd_data / _bwd_weight``).

Arguments arrive validated and normalised by ``ember.nn.functional.conv2d`` / ``conv1d``:
stride and dilation as (h, w) pairs, padding as (top, bottom, left, right). A 1-D input
[N, C, L] with weight [O, C/G, K] runs as the 2-D kernel with H = KH = 1 (numpy views, no copy).
"""

from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd.function import Function
from ..tensor import Tensor


def _c(a):
    """a itself when the kernels can read it (C-contiguous, aligned), else an aligned copy
    (np.ascontiguousarray would return a misaligned contiguous view unchanged)."""
    return a if a.flags.c_contiguous and a.flags.aligned else np.array(a, order="C", copy=True)


def _as4(a):
    return a[:, :, None, :] if a.ndim == 3 else a


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        xa, wa = _as4(_c(x._array)), _as4(_c(weight._array))
        ba = None if bias is None else _c(bias._array)
        N, _, H, W = xa.shape
        Co, _, KH, KW = wa.shape
        pt, pb, pl, pr = padding
        OH = (H + pt + pb - dilation[0] * (KH - 1) - 1) // stride[0] + 1
        OW = (W + pl + pr - dilation[1] * (KW - 1) - 1) // stride[1] + 1
        out = np.empty((N, Co, OH, OW), xa.dtype)
        _C.conv2d_fwd(xa, wa, ba, out, stride, padding, dilation, groups)
        ctx.save_for_backward(x, weight)
        ctx.params = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        ctx.one_d = x._array.ndim == 3
        return Tensor._wrap(out[:, :, 0, :] if ctx.one_d else out)

    @staticmethod
    def backward(ctx, g):
        xt, wt = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.params
        need = ctx.needs_input_grad
        ga = _as4(_c(g._array))
        xa, wa = _as4(_c(xt._array)), _as4(_c(wt._array))
        gx = gw = gb = None
        if need[0]:
            gx = np.empty(xa.shape, xa.dtype)
            _C.conv2d_bwd_data(ga, wa, gx, stride, padding, dilation, groups)
        want_w, want_b = need[1], ctx.has_bias and need[2]
        if want_w or want_b:
            gw = np.empty(wa.shape, wa.dtype) if want_w else None
            gb = np.empty(wa.shape[0], wa.dtype) if want_b else None
            _C.conv2d_bwd_weight(ga, xa, gw, gb, wa.shape[2:], stride, padding, dilation, groups)
        if ctx.one_d:
            gx = None if gx is None else gx[:, :, 0, :]
            gw = None if gw is None else gw[:, :, 0, :]
        return gx, gw, gb, None, None, None, None


def conv2d(x, weight, bias, stride, padding, dilation, groups):
    """Checked by ``ember.nn.functional.conv2d`` / ``conv1d``; runs the kernel-backed Function."""
    return Conv2d.apply(x, weight, bias, stride, padding, dilation, groups)
