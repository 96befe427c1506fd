"""Softmax, log-softmax and cross-entropy on our CPU kernels (``_C.softmax_fwd/_bwd``,
``_C.cross_entropy_fwd/_bwd``: AVX2 or scalar, over the last axis of a C-contiguous array).

Another ``dim`` is moved last first (``np.moveaxis`` + a contiguous copy); the result is the
moved-back view. Cross-entropy runs as one kernel pass per direction on logits seen as
[M, C] (class dim moved last): the forward writes each row's loss and its (max,
log-sum-exp - max) pair, the backward recomputes the softmax from the logits and that pair.
"""

from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd.function import Function
from ..tensor import Tensor


def _c(a):
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _last(a, d):
    """a with axis d moved last, C-contiguous."""
    return _c(a if d == a.ndim - 1 else np.moveaxis(a, d, -1))


def _back(a, d):
    return a if d == a.ndim - 1 else np.moveaxis(a, -1, d)


class Softmax(Function):
    """softmax (log=False) or log_softmax (log=True) of x along dim d."""

    @staticmethod
    def forward(ctx, x, d, log):
        xa = _last(x._array, d)
        out = np.empty_like(xa)
        _C.softmax_fwd(xa, bool(log), out)
        y = Tensor._wrap(_back(out, d))
        ctx.save_for_backward(y)  # version-checked: an in-place edit of y is caught
        ctx.d, ctx.log = d, bool(log)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        ya = _last(y._array, ctx.d)
        ga = _last(g._array, ctx.d)
        gx = np.empty_like(ya)
        _C.softmax_bwd(ya, ga, ctx.log, gx)
        return _back(gx, ctx.d), None, None


def softmax(x: Tensor, d: int, log: bool) -> Tensor:
    """Checked by ``ember.nn.functional``: float32/float64 CPU tensor, d normalised."""
    return Softmax.apply(x, d, log)


class CrossEntropy(Function):
    """Cross-entropy of logits [N, C, *] with int64 class targets [N, *] (already checked).

    reduction 'mean' divides by ``denom`` (the summed weights of the non-ignored targets)."""

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, smoothing, reduction, denom):
        xa = x._array
        C = xa.shape[1]
        rows = _last(xa, 1).reshape(-1, C)
        t = _c(target.reshape(-1).astype(np.int64, copy=False))
        w = None if weight is None else _c(weight.astype(xa.dtype, copy=False))
        loss = np.empty(rows.shape[0], xa.dtype)
        stats = np.empty((rows.shape[0], 2), xa.dtype)
        _C.cross_entropy_fwd(rows, t, w, int(ignore_index), float(smoothing), loss, stats)
        if reduction == "none":
            out = loss.reshape(target.shape)
        else:
            total = loss.sum(dtype=np.float64)
            if reduction == "mean":
                with np.errstate(invalid="ignore", divide="ignore"):
                    total = total / denom  # 0 / 0 = NaN when every target is ignored
            out = np.asarray(total, xa.dtype)
        ctx.save_for_backward(x)
        ctx.rows_shape, ctx.t, ctx.w, ctx.stats = rows.shape, t, w, stats
        ctx.ignore_index, ctx.smoothing = int(ignore_index), float(smoothing)
        ctx.reduction, ctx.denom, ctx.tshape = reduction, denom, target.shape
        return Tensor._wrap(out)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        xa = x._array
        rows = _last(xa, 1).reshape(ctx.rows_shape)
        ga = g._array
        if ctx.reduction == "none":
            grow = _c(ga.reshape(-1).astype(xa.dtype, copy=False))
        else:
            scale = float(ga)
            if ctx.reduction == "mean":
                with np.errstate(invalid="ignore", divide="ignore"):
                    scale = np.float64(scale) / ctx.denom
            grow = np.full(ctx.rows_shape[0], scale, xa.dtype)
        gx = np.empty(ctx.rows_shape, xa.dtype)
        _C.cross_entropy_bwd(
            rows, ctx.t, ctx.w, ctx.stats, grow, ctx.ignore_index, ctx.smoothing, gx
        )
        if xa.ndim > 2:  # back to [N, C, d1, ...]
            moved = (xa.shape[0],) + xa.shape[2:] + (xa.shape[1],)
            gx = np.moveaxis(gx.reshape(moved), -1, 1)
        return gx, None, None, None, None, None, None


def cross_entropy(x, target, weight, ignore_index, smoothing, reduction, denom) -> Tensor:
    """x: float32/float64 CPU logits [N, C, *]; target: integer array [N, *] (range-checked by
    the caller); weight: array [C] or None; denom: float64 'mean' divisor."""
    return CrossEntropy.apply(x, target, weight, ignore_index, smoothing, reduction, denom)
