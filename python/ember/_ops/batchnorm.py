"""Batch-norm on our CPU kernels (``_C.batchnorm_fwd_train/_fwd_eval/_bwd``, AVX2 or scalar).

Input [N, C, *] is seen as [N, C, S]. Training mode normalises with the batch statistics and
updates the running ones in place (PyTorch's rule); eval mode uses the running statistics.
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


class BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        xa = _c(x._array)
        w, b = _arr(weight), _arr(bias)
        out = np.empty_like(xa)
        C = xa.shape[1]
        if training:
            mean = np.empty(C, xa.dtype)
            var = np.empty(C, xa.dtype)
            invstd = np.empty(C, xa.dtype)
            _C.batchnorm_fwd_train(xa, w, b, float(eps), out, mean, var, invstd)
            n = xa.size // C if C else 0
            if running_mean is not None:
                rm = running_mean._array
                rm[...] = (1.0 - momentum) * rm + momentum * mean.astype(np.float64)
                running_mean._bump_version()
            if running_var is not None:
                rv = running_var._array
                unbiased = var.astype(np.float64) * (n / (n - 1))
                rv[...] = (1.0 - momentum) * rv + momentum * unbiased
                running_var._bump_version()
        else:
            rm, rv = _c(running_mean._array), _c(running_var._array)
            _C.batchnorm_fwd_eval(xa, rm, rv, w, b, float(eps), out)
            mean = rm.copy()
            invstd = (1.0 / np.sqrt(rv.astype(np.float64) + eps)).astype(xa.dtype)
        ctx.save_for_backward(x, weight)  # version-checked: in-place edits are caught
        ctx.mean, ctx.invstd = mean, invstd
        ctx.training = training
        ctx.has_w, ctx.has_b = weight is not None, bias is not None
        return Tensor._wrap(out)

    @staticmethod
    def backward(ctx, g):
        xt, wt = ctx.saved_tensors
        ga, x, w = _c(g._array), _c(xt._array), _arr(wt)
        need = ctx.needs_input_grad
        gx = np.empty_like(x) if need[0] else None
        gw = np.empty(x.shape[1], x.dtype) if ctx.has_w and need[1] else None
        gb = np.empty(x.shape[1], x.dtype) if ctx.has_b and need[2] else None
        _C.batchnorm_bwd(ga, x, ctx.mean, ctx.invstd, w, bool(ctx.training), gx, gw, gb)
        return gx, gw, gb, None, None, None, None, None


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    """Checked by ``ember.nn.functional.batch_norm``; runs the kernel-backed Function."""
    return BatchNorm.apply(x, weight, bias, running_mean, running_var, training, momentum, eps)


class GroupNormalize(Function):
    """Group norm without the affine part: x [N, C, *] seen as [1, N*G, C/G*S] is exactly a
    training batch-norm over N*G "channels" with no weight, so the batch-norm kernels give the
    per-(n, g) statistics, xhat and its gradient."""

    @staticmethod
    def forward(ctx, x, num_groups, eps):
        xa = _c(x._array)
        rows = xa.shape[0] * num_groups
        k = xa.size // rows if rows else 0
        ctx.k = k
        if k <= 1:  # one value per group: x - mean = 0 (as PyTorch), gradient 0
            return Tensor._wrap(np.zeros_like(xa))
        v = xa.reshape(1, rows, k)
        out = np.empty_like(v)
        mean, var, invstd = (np.empty(rows, xa.dtype) for _ in range(3))
        _C.batchnorm_fwd_train(v, None, None, float(eps), out, mean, var, invstd)
        ctx.save_for_backward(x)
        ctx.mean, ctx.invstd = mean, invstd
        return Tensor._wrap(out.reshape(xa.shape))

    @staticmethod
    def backward(ctx, g):
        ga = _c(g._array)
        if ctx.k <= 1:
            return np.zeros_like(ga), None, None
        (xt,) = ctx.saved_tensors
        v = _c(xt._array).reshape(1, ctx.mean.shape[0], ctx.k)
        gx = np.empty_like(v)
        _C.batchnorm_bwd(ga.reshape(v.shape), v, ctx.mean, ctx.invstd, None, True, gx,
                         None, None)  # fmt: skip
        return gx.reshape(ga.shape), None, None
