"""Layer norm and RMS norm on our CPU kernels (``_C.layernorm_fwd/_bwd``, AVX2 or scalar).

The input [*, *normalized_shape] is seen as [rows, n] with n = prod(normalized_shape); the
forward saves the per-row mean (layer norm) and rstd = 1/sqrt(var + eps) for the backward,
which gives the input, weight and bias gradients in one kernel call.
"""

from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd.function import Function
from ..tensor import Tensor


def _c(a):
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _arr(t):
    return None if t is None else _c(t._array)


class LayerNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, nshape, eps, rms):
        xa = _c(x._array)
        n = int(np.prod(nshape, dtype=np.int64))
        rows = xa.size // n if n else 0
        out = np.empty_like(xa)
        mean = None if rms else np.empty(rows, xa.dtype)
        rstd = np.empty(rows, xa.dtype)
        _C.layernorm_fwd(xa, n, _arr(weight), _arr(bias), float(eps), bool(rms), out, mean, rstd)
        ctx.save_for_backward(x, weight)  # version-checked: in-place edits are caught
        ctx.mean, ctx.rstd, ctx.n, ctx.rms = mean, rstd, n, bool(rms)
        ctx.nshape = tuple(nshape)
        ctx.has_b = bias is not None
        return Tensor._wrap(out)

    @staticmethod
    def backward(ctx, g):
        xt, wt = ctx.saved_tensors
        x, ga = _c(xt._array), _c(g._array)
        need = ctx.needs_input_grad
        gx = np.empty_like(x) if need[0] else None
        gw = np.empty(ctx.n, x.dtype) if wt is not None and need[1] else None
        gb = np.empty(ctx.n, x.dtype) if ctx.has_b and need[2] else None
        w = _arr(wt)
        _C.layernorm_bwd(ga, x, ctx.n, ctx.mean, ctx.rstd, w, ctx.rms, gx, gw, gb)
        gw = None if gw is None else gw.reshape(ctx.nshape)
        gb = None if gb is None else gb.reshape(ctx.nshape)
        return gx, gw, gb, None, None, None


def layer_norm(x, weight, bias, normalized_shape, eps, rms=False) -> Tensor:
    """Checked by ``ember.nn.functional.layer_norm`` / ``rms_norm``."""
    return LayerNorm.apply(x, weight, bias, tuple(normalized_shape), eps, rms)
