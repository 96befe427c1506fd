"""Reductions with ``dim``/``keepdim``: sum, mean, var, std, max, min, argmax, argmin,
logsumexp, prod, all, any, norm.

numpy/cupy do the arithmetic (their float sums are pairwise, so float32 error grows like
log n, not n). Backward re-expands the reduced gradient with the kept dims.
"""

from __future__ import annotations

import builtins
import math
from collections import namedtuple

import numpy as np

from .. import _dtype as D
from .._utils import norm_dim, norm_dims
from ..autograd.function import Function
from ..tensor import Tensor
from ._common import xp as xp_

# The module-level sum, max, min, all, any shadow the builtins here: use builtins.max etc.
values_indices = namedtuple("values_indices", ["values", "indices"])


def _axes(dim, ndim, op):
    dims = norm_dims(dim, ndim, op)
    return None if dims is None else dims


def _expand(g, shape, axes, keepdim):
    """Reshape a reduced gradient so it broadcasts against the input of ``shape``."""
    if not keepdim and axes is not None and len(shape):
        g = g.reshape([1 if i in axes else n for i, n in enumerate(shape)])
    elif not keepdim and axes is None:
        g = g.reshape((1,) * len(shape))
    return g


def _count(shape, axes):
    if axes is None:
        return math.prod(shape)
    return math.prod(shape[i] for i in axes)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False, dtype=None):
        axes = _axes(dim, a.ndim, "sum")
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        nd = None if dtype is None else D.np_dtype(D.to_dtype(dtype))
        if nd is None and a.dtype in (D.bool_, D.uint8, D.int8, D.int16, D.int32):
            nd = np.int64  # PyTorch sums integers into int64
        return Tensor._wrap(xp_(a).asarray(a._array.sum(axis=axes, keepdims=keepdim, dtype=nd)))

    @staticmethod
    def backward(ctx, g):
        g = _expand(g._array, ctx.shape, ctx.axes, ctx.keepdim)
        return xp_of(g).broadcast_to(g, ctx.shape), None, None, None


def xp_of(a):
    from .._device import xp_of as f

    return f(a)


def _float_input(a, op):
    if not a.dtype.is_floating_point:
        raise TypeError(f"[{op}] needs a floating point input, got {a.dtype}")


class Mean(Function):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        _float_input(a, "mean")
        axes = _axes(dim, a.ndim, "mean")
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (
                a._array.mean(axis=axes, keepdims=keepdim)
                if a.numel()
                else xp_(a).full(_reduced_shape(a.shape, axes, keepdim), np.nan, a._array.dtype)
            )
        return Tensor._wrap(xp_(a).asarray(out))

    @staticmethod
    def backward(ctx, g):
        g = _expand(g._array, ctx.shape, ctx.axes, ctx.keepdim)
        n = builtins.max(_count(ctx.shape, ctx.axes), 1)
        return xp_of(g).broadcast_to(g / n, ctx.shape), None, None


def _reduced_shape(shape, axes, keepdim):
    if axes is None:
        axes = tuple(range(len(shape)))
    if keepdim:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _correction(unbiased, correction, op):
    if unbiased is not None and correction is not None:
        raise ValueError(f"[{op}] give either unbiased or correction, not both")
    if correction is not None:
        return correction
    return 1 if unbiased is None or unbiased else 0


def _deviations(x, axes):
    """x - mean(x) over ``axes``, computed on x shifted by its first element along ``axes``.

    Two passes (mean, then squared deviations) alone are not enough for a constant input: the
    rounded mean of n copies of v need not be v, leaving tiny non-zero deviations. After the
    shift a constant input is exactly 0, so var/std are exactly 0 (and the shift also removes
    a large common offset before the mean is taken, which helps accuracy in general)."""
    if x.size == 0:
        return x.copy()
    first = x[
        tuple(slice(0, 1) if axes is None or i in axes else slice(None) for i in range(x.ndim))
    ]
    y = x - first
    return y - y.mean(axis=axes, keepdims=True)


class Var(Function):
    @staticmethod
    def forward(ctx, a, dim=None, correction=1, keepdim=False, take_sqrt=False):
        op = "std" if take_sqrt else "var"
        _float_input(a, op)
        axes = _axes(dim, a.ndim, op)
        xp = xp_(a)
        x = a._array
        dev = _deviations(x, axes)
        n = _count(a.shape, axes)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (dev * dev).sum(axis=axes, keepdims=keepdim) / x.dtype.type(
                builtins.max(n - correction, 0)
            )
            out = xp.sqrt(var) if take_sqrt else var
        ctx.save_for_backward(a)
        ctx.axes, ctx.keepdim, ctx.correction, ctx.take_sqrt = axes, keepdim, correction, take_sqrt
        ctx.out = out
        return Tensor._wrap(xp.asarray(out).astype(x.dtype, copy=False))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        x = a._array
        g = _expand(g._array, a.shape, ctx.axes, ctx.keepdim)
        n = _count(a.shape, ctx.axes)
        dev = _deviations(x, ctx.axes)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = 2.0 / (n - ctx.correction) if n - ctx.correction > 0 else np.inf
            gx = g * dev * x.dtype.type(scale)
            if ctx.take_sqrt:
                out = _expand(ctx.out, a.shape, ctx.axes, ctx.keepdim)
                gx = gx / (2 * out)
        return gx.astype(x.dtype, copy=False), None, None, None, None


class MaxMin(Function):
    """max/min over all elements: the gradient is split evenly among tied maxima (PyTorch)."""

    @staticmethod
    def forward(ctx, a, is_max):
        if a.numel() == 0:
            raise ValueError(f"[{'max' if is_max else 'min'}] of an empty tensor (specify dim)")
        x = a._array
        out = x.max() if is_max else x.min()
        ctx.save_for_backward(a)
        ctx.out = out
        return Tensor._wrap(xp_(a).asarray(out))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        mask = a._array == ctx.out
        n = mask.sum()
        return (g._array * mask / builtins.max(int(n), 1)).astype(a._array.dtype, copy=False), None


class MaxMinDim(Function):
    """max/min along one dim, returning (values, indices); the gradient goes to the index."""

    @staticmethod
    def forward(ctx, a, dim, keepdim, is_max):
        op = "max" if is_max else "min"
        d = norm_dim(dim, a.ndim, op)
        if a.ndim and a.shape[d] == 0:
            raise ValueError(f"[{op}] reduction over a zero-size dimension {dim}")
        x = a._array
        xp = xp_(a)
        idx = (x.argmax if is_max else x.argmin)(axis=d if a.ndim else None, keepdims=True)
        if not a.ndim:
            idx = idx.reshape(())
        vals = xp.take_along_axis(x, idx, axis=d) if a.ndim else x.copy()
        if not keepdim and a.ndim:
            vals, idx = vals.squeeze(d), idx.squeeze(d)
        ctx.shape, ctx.d, ctx.keepdim = a.shape, d, keepdim
        ctx.idx = idx
        values, indices = Tensor._wrap(vals), Tensor._wrap(idx.astype(np.int64))
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, g, _g_idx):
        g = g._array
        xp = xp_of(g)
        out = xp.zeros(ctx.shape, g.dtype)
        if not len(ctx.shape):
            return g.reshape(()), None, None, None
        idx = ctx.idx if ctx.keepdim else xp.expand_dims(ctx.idx, ctx.d)
        gk = g if ctx.keepdim else xp.expand_dims(g, ctx.d)
        xp.put_along_axis(out, idx, gk, axis=ctx.d)
        return out, None, None, None


class LogSumExp(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim):
        _float_input(a, "logsumexp")
        axes = _axes(dim, a.ndim, "logsumexp")
        xp = xp_(a)
        x = a._array
        m = x.max(axis=axes, keepdims=True) if x.size else xp.zeros((1,) * x.ndim, x.dtype)
        # rows that are all -inf (or +inf) would give inf - inf = NaN: shift by 0 instead
        m = xp.where(xp.isfinite(m), m, 0).astype(x.dtype, copy=False)
        with np.errstate(divide="ignore"):
            lse = xp.log(xp.exp(x - m).sum(axis=axes, keepdims=True)) + m
        out = lse if keepdim else (lse.reshape(_reduced_shape(a.shape, axes, False)))
        ctx.save_for_backward(a)
        ctx.axes, ctx.keepdim, ctx.lse = axes, keepdim, lse
        return Tensor._wrap(xp.asarray(out))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        g = _expand(g._array, a.shape, ctx.axes, ctx.keepdim)
        xp = xp_of(g)
        with np.errstate(invalid="ignore"):
            p = xp.exp(a._array - ctx.lse)
        return g * p, None, None


class Prod(Function):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        axes = _axes(dim, a.ndim, "prod")
        ctx.save_for_backward(a)
        ctx.axes, ctx.keepdim = axes, keepdim
        return Tensor._wrap(xp_(a).asarray(a._array.prod(axis=axes, keepdims=keepdim)))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        x = a._array
        xp = xp_of(x)
        if x.size == 0:  # nothing to differentiate (and the reshapes below need elements)
            return xp.zeros(x.shape, g._array.dtype), None, None
        g = _expand(g._array, a.shape, ctx.axes, ctx.keepdim)
        # product of all the others, exact with zeros: prefix * suffix products along each axis
        axes = ctx.axes if ctx.axes is not None else tuple(range(x.ndim))
        moved = xp.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim)))
        flat = moved.reshape(moved.shape[: x.ndim - len(axes)] + (-1,))
        ones = xp.ones(flat.shape[:-1] + (1,), x.dtype)
        pre = xp.concatenate([ones, xp.cumprod(flat, -1)[..., :-1]], -1)
        suf = xp.flip(xp.concatenate([ones, xp.cumprod(xp.flip(flat, -1), -1)[..., :-1]], -1), -1)
        others = xp.moveaxis(
            (pre * suf).reshape(moved.shape), tuple(range(x.ndim - len(axes), x.ndim)), axes
        )
        return g * others, None, None


def sum(input, dim=None, keepdim=False, *, dtype=None):  # noqa: A001
    return Sum.apply(input, dim, keepdim, dtype)


def mean(input, dim=None, keepdim=False):
    return Mean.apply(input, dim, keepdim)


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    if isinstance(dim, bool):  # legacy var(x, unbiased)
        dim, unbiased = None, dim
    return Var.apply(input, dim, _correction(unbiased, correction, "var"), keepdim, False)


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    if isinstance(dim, bool):  # legacy std(x, unbiased)
        dim, unbiased = None, dim
    return Var.apply(input, dim, _correction(unbiased, correction, "std"), keepdim, True)


def _maxmin(input, dim, keepdim, is_max, other_fn):
    if isinstance(dim, Tensor):  # max(a, b): element-wise, as in PyTorch
        return other_fn(input, dim)
    if dim is None:
        return MaxMin.apply(input, is_max)
    return values_indices(*MaxMinDim.apply(input, dim, keepdim, is_max))


def max(input, dim=None, keepdim=False):  # noqa: A001
    from .elementwise import maximum

    return _maxmin(input, dim, keepdim, True, maximum)


def min(input, dim=None, keepdim=False):  # noqa: A001
    from .elementwise import minimum

    return _maxmin(input, dim, keepdim, False, minimum)


class AMaxMin(Function):
    """amax/amin over ``dim`` (an int, a tuple, or None for all): unlike max(dim), which
    returns an index and sends the gradient there, ties share the gradient evenly."""

    @staticmethod
    def forward(ctx, a, dim, keepdim, is_max):
        op = "amax" if is_max else "amin"
        axes = _axes(dim, a.ndim, op)
        x = a._array
        if x.size == 0 or (axes is not None and builtins.any(a.shape[i] == 0 for i in axes)):
            raise ValueError(f"[{op}] reduction over a zero-size dimension")
        ext = x.max(axis=axes, keepdims=True) if is_max else x.min(axis=axes, keepdims=True)
        ctx.save_for_backward(a)
        ctx.axes, ctx.keepdim, ctx.ext = axes, keepdim, ext
        out = ext if keepdim else ext.reshape(_reduced_shape(a.shape, axes, False))
        return Tensor._wrap(xp_(a).asarray(out))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        g = _expand(g._array, a.shape, ctx.axes, ctx.keepdim)
        mask = a._array == ctx.ext
        count = mask.sum(axis=ctx.axes, keepdims=True)
        return (g * mask / count).astype(a._array.dtype, copy=False), None, None, None


def amax(input, dim=None, keepdim=False):
    return AMaxMin.apply(input, dim, keepdim, True)


def amin(input, dim=None, keepdim=False):
    return AMaxMin.apply(input, dim, keepdim, False)


def _arg(op, input, dim, keepdim):
    x = input._array
    f = x.argmax if op == "argmax" else x.argmin
    if dim is None:
        if x.size == 0:
            raise ValueError(f"[{op}] of an empty tensor")
        r = f()
        return Tensor._wrap(
            xp_(input).asarray(r, dtype=np.int64).reshape((1,) * x.ndim if keepdim else ())
        )
    d = norm_dim(dim, input.ndim, op)
    if x.size == 0 and (x.ndim == 0 or x.shape[d] == 0):
        raise ValueError(f"[{op}] reduction over a zero-size dimension {dim}")
    return Tensor._wrap(
        xp_(input).asarray(f(axis=d if x.ndim else None, keepdims=keepdim), dtype=np.int64)
    )


def argmax(input, dim=None, keepdim=False):
    return _arg("argmax", input, dim, keepdim)


def argmin(input, dim=None, keepdim=False):
    return _arg("argmin", input, dim, keepdim)


def logsumexp(input, dim, keepdim=False):
    return LogSumExp.apply(input, dim, keepdim)


def prod(input, dim=None, keepdim=False):
    return Prod.apply(input, dim, keepdim)


def all(input, dim=None, keepdim=False):  # noqa: A001
    axes = _axes(dim, input.ndim, "all")
    return Tensor._wrap(xp_(input).asarray(input._array.all(axis=axes, keepdims=keepdim)))


def any(input, dim=None, keepdim=False):  # noqa: A001
    axes = _axes(dim, input.ndim, "any")
    return Tensor._wrap(xp_(input).asarray(input._array.any(axis=axes, keepdims=keepdim)))


def norm(input, p="fro", dim=None, keepdim=False):
    """Vector p-norm over ``dim`` (all elements by default); p in {1, 2, 'fro', inf, -inf}
    or any positive number."""
    from . import elementwise as E

    if p in ("fro", 2, 2.0):
        return Norm2.apply(input, dim, keepdim)
    if p in (float("inf"), "inf"):
        return amax(E.abs(input), dim, keepdim)
    if p in (float("-inf"), "-inf"):
        return amin(E.abs(input), dim, keepdim)
    if isinstance(p, (int, float)) and p > 0:
        return E.pow(sum(E.pow(E.abs(input), p), dim, keepdim), 1.0 / p)
    raise ValueError(f"[norm] unsupported p={p!r}")


class Norm2(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim):
        _float_input(a, "norm")
        axes = _axes(dim, a.ndim, "norm")
        x = a._array
        out = xp_(a).sqrt((x * x).sum(axis=axes, keepdims=keepdim))
        ctx.save_for_backward(a)
        ctx.axes, ctx.keepdim, ctx.out = axes, keepdim, out
        return Tensor._wrap(xp_(a).asarray(out))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        xp = xp_of(g._array)
        g = _expand(g._array, a.shape, ctx.axes, ctx.keepdim)
        n = _expand(ctx.out, a.shape, ctx.axes, ctx.keepdim)
        # the subgradient 0 at the origin, as PyTorch (not NaN from 0/0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = xp.where(n > 0, a._array / n, 0)
        return (g * r).astype(a._array.dtype, copy=False), None, None
