"""ReLU on our element-wise kernels: ``_C.relu_fwd/_bwd`` (AVX2 or scalar) on the CPU and
``_C.relu_fwd_cuda/_bwd_cuda`` on cupy's current stream. NaN propagates (relu(NaN) = NaN)."""

from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd.function import Function
from ..tensor import Tensor
from ._common import xp as xp_


def _c_contiguous(x, xp=np):
    # not ascontiguousarray alone: it turns a 0-d array into a 1-d one
    return x if x.flags.c_contiguous else xp.ascontiguousarray(x)


def _cuda_stream():
    import cupy

    return cupy.cuda.get_current_stream().ptr


class ReLU(Function):
    @staticmethod
    def forward(ctx, a):
        if not isinstance(a, Tensor):
            raise TypeError(f"[relu] expected a Tensor, got {type(a).__name__}")
        x = a._array
        if x.dtype in (np.float32, np.float64):
            if isinstance(x, np.ndarray):
                x = _c_contiguous(x)
                out = np.empty_like(x)
                _C.relu_fwd(x, out)
            else:
                x = _c_contiguous(x, xp_(a))
                out = xp_(a).empty_like(x)
                _C.relu_fwd_cuda(x, out, _cuda_stream())
        else:  # integers / half: no kernel of ours, and nothing hot runs here
            out = xp_(a).where(x < 0, x.dtype.type(0), x)
        ctx.save_for_backward(a)
        return Tensor._wrap(out)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        x, g = a._array, g._array
        if x.dtype in (np.float32, np.float64):
            if isinstance(x, np.ndarray):
                x, g = _c_contiguous(x), _c_contiguous(g)
                out = np.empty_like(x)
                _C.relu_bwd(g, x, out)
            else:
                xp = xp_(a)
                x, g = _c_contiguous(x, xp), _c_contiguous(g, xp)
                out = xp.empty_like(x)
                _C.relu_bwd_cuda(g, x, out, _cuda_stream())
            return out
        return g * (x > 0)


def relu(input):
    return ReLU.apply(input)
