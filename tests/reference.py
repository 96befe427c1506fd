"""The float64 numpy reference of every op: the spec the tests compare ember against.

Per op ``<op>(x, ...)`` is the forward and ``<op>_vjp(g, x, ...)`` the vector-Jacobian product:
given the inputs and an upstream gradient ``g`` of the output's shape, it returns the gradient
of every array input, as a tuple in argument order. Both are written from the math, not from
ember's code, and compute in the dtype of their inputs: float64 inputs give the spec, float32
inputs give "a plain float32 numpy version of the same computation", which the reduction
tolerances of shared/DESIGN.md section 4 are measured against.

Conventions follow PyTorch: ties in max/min/maximum/minimum split the gradient evenly, the
subgradient of abs/relu/clamp at a kink is that of PyTorch, and NaN propagates through
relu/maximum/max/clamp.

The bottom of the file holds the comparison helpers (the tolerances).
"""

from __future__ import annotations

import builtins
import itertools
import math

import numpy as np

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def sum_to(g, shape):
    """Sum ``g`` down to ``shape`` (the adjoint of broadcasting ``shape`` up to ``g.shape``)."""
    g = np.asarray(g)
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    return g.reshape(shape)


def _axes(dim, ndim):
    """None -> every axis; int or sequence -> a sorted tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted(d % builtins.max(ndim, 1) for d in dims)) if ndim else ()


def _keep(g, shape, dim, keepdim):
    """An upstream gradient of a reduction, reshaped so it broadcasts against the input."""
    g = np.asarray(g)
    if keepdim:
        return g
    axes = _axes(dim, len(shape))
    return g.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape)))


def _count(shape, dim):
    return math.prod(shape[i] for i in _axes(dim, len(shape)))


def _errstate():
    return np.errstate(all="ignore")


# ---------------------------------------------------------------------------------------------
# element-wise binary ops (broadcasting)
# ---------------------------------------------------------------------------------------------


def add(x, y):
    return x + y


def add_vjp(g, x, y):
    return sum_to(g, np.shape(x)), sum_to(g, np.shape(y))


def sub(x, y):
    return x - y


def sub_vjp(g, x, y):
    return sum_to(g, np.shape(x)), sum_to(-g, np.shape(y))


def mul(x, y):
    return x * y


def mul_vjp(g, x, y):
    return sum_to(g * y, np.shape(x)), sum_to(g * x, np.shape(y))


def div(x, y):
    with _errstate():
        return x / y


def div_vjp(g, x, y):
    # d(x/y)/dx = 1/y, d(x/y)/dy = -x/y^2
    with _errstate():
        return sum_to(g / y, np.shape(x)), sum_to(-g * (x / y) / y, np.shape(y))


def pow(x, y):  # noqa: A001
    with _errstate():
        return np.power(x, y)


def pow_vjp(g, x, y):
    # d(x^y)/dx = y x^(y-1);  d(x^y)/dy = x^y ln x  (x > 0 in the tests)
    with _errstate():
        gx = g * y * np.power(x, y - 1)
        gy = g * np.power(x, y) * np.log(x)
    return sum_to(gx, np.shape(x)), sum_to(gy, np.shape(y))


def maximum(x, y):
    return np.maximum(x, y)  # NaN in either operand gives NaN


def maximum_vjp(g, x, y):
    # the larger operand takes the gradient; an exact tie splits it in halves (PyTorch)
    gx = g * ((x > y) + 0.5 * (x == y))
    gy = g * ((y > x) + 0.5 * (x == y))
    return sum_to(gx, np.shape(x)), sum_to(gy, np.shape(y))


def minimum(x, y):
    return np.minimum(x, y)


def minimum_vjp(g, x, y):
    gx = g * ((x < y) + 0.5 * (x == y))
    gy = g * ((y < x) + 0.5 * (x == y))
    return sum_to(gx, np.shape(x)), sum_to(gy, np.shape(y))


def where(cond, x, y):
    return np.where(cond, x, y)


def where_vjp(g, cond, x, y):
    zero = np.zeros((), g.dtype)
    shape = np.broadcast_shapes(np.shape(cond), np.shape(x), np.shape(y))
    g = np.broadcast_to(g, shape)
    return (
        None,
        sum_to(np.where(cond, g, zero), np.shape(x)),
        sum_to(np.where(cond, zero, g), np.shape(y)),
    )


# ---------------------------------------------------------------------------------------------
# element-wise unary ops
# ---------------------------------------------------------------------------------------------


def neg(x):
    return -x


def neg_vjp(g, x):
    return (-g,)


def abs(x):  # noqa: A001
    return np.abs(x)


def abs_vjp(g, x):
    return (g * np.sign(x),)  # subgradient 0 at 0


def exp(x):
    with _errstate():
        return np.exp(x)


def exp_vjp(g, x):
    with _errstate():
        return (g * np.exp(x),)


def log(x):
    with _errstate():
        return np.log(x)


def log_vjp(g, x):
    with _errstate():
        return (g / x,)


def sqrt(x):
    with _errstate():
        return np.sqrt(x)


def sqrt_vjp(g, x):
    # d sqrt(x) = 1 / (2 sqrt(x)) = sqrt(x) / (2 x)
    with _errstate():
        return (g * 0.5 / np.sqrt(x),)


def sin(x):
    return np.sin(x)


def sin_vjp(g, x):
    return (g * np.cos(x),)


def cos(x):
    return np.cos(x)


def cos_vjp(g, x):
    return (-g * np.sin(x),)


def tanh(x):
    return np.tanh(x)


def tanh_vjp(g, x):
    # d tanh = 1 - tanh^2
    t = np.tanh(x)
    return (g * (1 - t * t),)


def sigmoid(x):
    # 1 / (1 + e^-x), evaluated through e^-|x| so that it never overflows
    with _errstate():
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_vjp(g, x):
    # sigma' = sigma (1 - sigma)
    s = sigmoid(x)
    return (g * s * (1 - s),)


def relu(x):
    # max(x, 0) that keeps NaN (a comparison with NaN is False, so NaN is taken from x)
    return np.where(x < 0, np.zeros((), np.asarray(x).dtype), x)


def relu_vjp(g, x):
    return (g * (x > 0),)  # subgradient 0 at 0, as PyTorch


def clamp(x, lo=None, hi=None):
    y = x
    if lo is not None:
        y = np.where(y < lo, np.asarray(lo, y.dtype), y)  # NaN stays NaN
    if hi is not None:
        y = np.where(y > hi, np.asarray(hi, y.dtype), y)
    return y


def clamp_vjp(g, x, lo=None, hi=None):
    inside = np.ones(np.shape(x), bool)
    if lo is not None:
        inside &= x >= lo
    if hi is not None:
        inside &= x <= hi
    return (g * inside,)


def clamp_tensor_vjp(g, x, lo, hi):
    """Tensor bounds: out = min(max(x, lo), hi), differentiated by the chain rule of max/min."""
    m = np.maximum(x, lo)
    below_hi = m < hi
    gx = g * ((x > lo) & below_hi)
    glo = g * ((lo > x) & below_hi)
    ghi = g * (m > hi)
    return sum_to(gx, np.shape(x)), sum_to(glo, np.shape(lo)), sum_to(ghi, np.shape(hi))


# ---------------------------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------------------------


def sum(x, dim=None, keepdim=False):  # noqa: A001
    return np.sum(x, axis=_axes(dim, x.ndim), keepdims=keepdim)


def sum_vjp(g, x, dim=None, keepdim=False):
    return (np.broadcast_to(_keep(g, x.shape, dim, keepdim), x.shape).copy(),)


def mean(x, dim=None, keepdim=False):
    return np.sum(x, axis=_axes(dim, x.ndim), keepdims=keepdim) / x.dtype.type(_count(x.shape, dim))


def mean_vjp(g, x, dim=None, keepdim=False):
    n = x.dtype.type(_count(x.shape, dim))
    return (np.broadcast_to(_keep(g, x.shape, dim, keepdim) / n, x.shape).copy(),)


def var(x, dim=None, correction=1, keepdim=False):
    # two passes: the mean, then the mean squared deviation
    axes = _axes(dim, x.ndim)
    m = np.sum(x, axis=axes, keepdims=True) / x.dtype.type(_count(x.shape, dim))
    d = x - m
    with _errstate():
        return np.sum(d * d, axis=axes, keepdims=keepdim) / x.dtype.type(
            _count(x.shape, dim) - correction
        )


def var_vjp(g, x, dim=None, correction=1, keepdim=False):
    # d var / d x_i = 2 (x_i - mean) / (N - correction)
    axes = _axes(dim, x.ndim)
    n = _count(x.shape, dim)
    m = np.sum(x, axis=axes, keepdims=True) / x.dtype.type(n)
    return (_keep(g, x.shape, dim, keepdim) * (x - m) * x.dtype.type(2.0 / (n - correction)),)


def std(x, dim=None, correction=1, keepdim=False):
    return np.sqrt(var(x, dim, correction, keepdim))


def std_vjp(g, x, dim=None, correction=1, keepdim=False):
    # d std = d var / (2 std)
    s = _keep(std(x, dim, correction, keepdim), x.shape, dim, keepdim)
    (gv,) = var_vjp(g, x, dim, correction, keepdim)
    with _errstate():
        return (gv / (2 * s),)


def max(x, dim=None, keepdim=False):  # noqa: A001
    """Full reduction: the value. With ``dim``: (values, indices) of the first maximum."""
    if dim is None:
        return np.max(x)
    return _extreme_dim(x, dim, keepdim, np.argmax)


def min(x, dim=None, keepdim=False):  # noqa: A001
    if dim is None:
        return np.min(x)
    return _extreme_dim(x, dim, keepdim, np.argmin)


def _extreme_dim(x, dim, keepdim, argfn):
    d = dim % x.ndim
    idx = argfn(x, axis=d, keepdims=True)  # first occurrence; NaN counts as the extreme
    vals = np.take_along_axis(x, idx, axis=d)
    if not keepdim:
        vals, idx = vals.squeeze(d), idx.squeeze(d)
    return vals, idx.astype(np.int64)


def max_vjp(g, x, dim=None, keepdim=False):
    if dim is None:
        hit = x == np.max(x)
        return (g * hit / hit.sum(),)  # ties share the gradient evenly
    return (_extreme_dim_vjp(g, x, dim, keepdim, np.argmax),)


def min_vjp(g, x, dim=None, keepdim=False):
    if dim is None:
        hit = x == np.min(x)
        return (g * hit / hit.sum(),)
    return (_extreme_dim_vjp(g, x, dim, keepdim, np.argmin),)


def _extreme_dim_vjp(g, x, dim, keepdim, argfn):
    """``g`` is the gradient of the values (the indices have none)."""
    if isinstance(g, tuple):
        g = g[0]
    d = dim % x.ndim
    idx = argfn(x, axis=d, keepdims=True)
    onehot = np.arange(x.shape[d]).reshape([-1 if i == d else 1 for i in range(x.ndim)]) == idx
    return _keep(g, x.shape, dim, keepdim) * onehot


def argmax(x, dim=None, keepdim=False):
    if dim is None:
        r = np.int64(np.argmax(x))
        return np.reshape(r, (1,) * x.ndim) if keepdim else np.asarray(r)
    return np.argmax(x, axis=dim, keepdims=keepdim).astype(np.int64)


def argmin(x, dim=None, keepdim=False):
    if dim is None:
        r = np.int64(np.argmin(x))
        return np.reshape(r, (1,) * x.ndim) if keepdim else np.asarray(r)
    return np.argmin(x, axis=dim, keepdims=keepdim).astype(np.int64)


def logsumexp(x, dim, keepdim=False):
    # log sum exp(x) = m + log sum exp(x - m) with m the max: no overflow
    axes = _axes(dim, x.ndim)
    m = np.max(x, axis=axes, keepdims=True)
    r = m + np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True))
    return r if keepdim else r.reshape(tuple(n for i, n in enumerate(x.shape) if i not in axes))


def logsumexp_vjp(g, x, dim, keepdim=False):
    # the gradient is the softmax of x along dim
    lse = logsumexp(x, dim, keepdim=True)
    return (_keep(g, x.shape, dim, keepdim) * np.exp(x - lse),)


def prod(x, dim=None, keepdim=False):
    return np.prod(x, axis=_axes(dim, x.ndim), keepdims=keepdim)


def prod_vjp(g, x, dim=None, keepdim=False):
    # d prod / d x_i = the product of all the others (computed leave-one-out: exact with zeros)
    axes = _axes(dim, x.ndim)
    rest = tuple(i for i in range(x.ndim) if i not in axes)
    moved = np.transpose(x, rest + axes)
    flat = moved.reshape(moved.shape[: len(rest)] + (math.prod(x.shape[i] for i in axes),))
    others = np.empty_like(flat)
    for k in range(flat.shape[-1]):
        others[..., k] = np.prod(np.delete(flat, k, axis=-1), axis=-1)
    others = np.transpose(others.reshape(moved.shape), np.argsort(rest + axes))
    return (_keep(g, x.shape, dim, keepdim) * others,)


def norm(x, p=2, dim=None, keepdim=False):
    axes = _axes(dim, x.ndim)
    if p == 2:
        return np.sqrt(np.sum(x * x, axis=axes, keepdims=keepdim))
    if p == 1:
        return np.sum(np.abs(x), axis=axes, keepdims=keepdim)
    return np.sum(np.abs(x) ** p, axis=axes, keepdims=keepdim) ** (1.0 / p)


def norm_vjp(g, x, p=2, dim=None, keepdim=False):
    n = _keep(norm(x, p, dim, keepdim), x.shape, dim, keepdim)
    gk = _keep(g, x.shape, dim, keepdim)
    if p == 1:
        return (gk * np.sign(x),)
    # d ||x||_p / d x_i = sign(x_i) |x_i|^(p-1) / ||x||_p^(p-1)
    with _errstate():
        return (gk * np.sign(x) * (np.abs(x) / n) ** (p - 1),)


# ---------------------------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------------------------


def matmul(a, b):
    return np.matmul(a, b)


def matmul_vjp(g, a, b):
    """C = A B with numpy's 1-D promotion and batch broadcasting:
    dA = dC B^T and dB = A^T dC, summed over broadcast batch dims."""
    a2 = a.reshape(1, -1) if a.ndim == 1 else a
    b2 = b.reshape(-1, 1) if b.ndim == 1 else b
    out_shape = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1])
    g2 = np.reshape(g, out_shape)  # re-insert the dims that 1-D operands dropped
    ga = np.einsum("...mn,...kn->...mk", g2, np.broadcast_to(b2, out_shape[:-2] + b2.shape[-2:]))
    gb = np.einsum("...mk,...mn->...kn", np.broadcast_to(a2, out_shape[:-2] + a2.shape[-2:]), g2)
    return sum_to(ga, a2.shape).reshape(a.shape), sum_to(gb, b2.shape).reshape(b.shape)


# ---------------------------------------------------------------------------------------------
# shape ops
# ---------------------------------------------------------------------------------------------


def reshape(x, shape):
    return np.reshape(x, shape)


def reshape_vjp(g, x, shape):
    return (np.reshape(g, x.shape),)


view = reshape
view_vjp = reshape_vjp


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return x.reshape(1)
    s, e = start_dim % x.ndim, end_dim % x.ndim
    return x.reshape(x.shape[:s] + (math.prod(x.shape[s : e + 1]),) + x.shape[e + 1 :])


def flatten_vjp(g, x, start_dim=0, end_dim=-1):
    return (np.reshape(g, x.shape),)


def permute(x, dims):
    return np.transpose(x, dims)


def permute_vjp(g, x, dims):
    return (np.transpose(g, np.argsort(dims)),)


def transpose(x, d0, d1):
    return np.swapaxes(x, d0, d1)


def transpose_vjp(g, x, d0, d1):
    return (np.swapaxes(g, d0, d1),)


def squeeze(x, dim=None):
    if dim is None:
        return x.reshape(tuple(n for n in x.shape if n != 1))
    dims = (dim,) if isinstance(dim, int) else dim
    drop = {d % x.ndim for d in dims if x.shape[d] == 1}  # a dim of size != 1 stays (PyTorch)
    return x.reshape(tuple(n for i, n in enumerate(x.shape) if i not in drop))


def squeeze_vjp(g, x, dim=None):
    return (np.reshape(g, x.shape),)


def unsqueeze(x, dim):
    d = dim % (x.ndim + 1)
    return x.reshape(x.shape[:d] + (1,) + x.shape[d:])


def unsqueeze_vjp(g, x, dim):
    return (np.reshape(g, x.shape),)


def expand(x, shape):
    lead = len(shape) - x.ndim
    full = tuple(x.shape[i - lead] if (s == -1 and i >= lead) else s for i, s in enumerate(shape))
    return np.broadcast_to(x, full)


def expand_vjp(g, x, shape):
    return (sum_to(g, x.shape),)


def repeat(x, reps):
    return np.tile(x, reps)


def repeat_vjp(g, x, reps):
    # the output is a grid of copies of x (x padded with leading 1s): sum the copies
    base = (1,) * (len(reps) - x.ndim) + x.shape
    acc = np.zeros(base, g.dtype)
    for block in itertools.product(*(range(r) for r in reps)):
        acc += g[tuple(slice(b * n, (b + 1) * n) for b, n in zip(block, base, strict=True))]
    return (acc.reshape(x.shape),)


def cat(xs, dim=0):
    return np.concatenate(xs, axis=dim)


def cat_vjp(g, xs, dim=0):
    bounds = np.cumsum([0] + [x.shape[dim] for x in xs])
    return tuple(
        np.take(g, np.arange(lo, hi), axis=dim)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    )


def stack(xs, dim=0):
    return np.stack(xs, axis=dim)


def stack_vjp(g, xs, dim=0):
    return tuple(np.take(g, i, axis=dim) for i in range(len(xs)))


def split(x, size_or_sections, dim=0):
    n = x.shape[dim]
    if isinstance(size_or_sections, int):
        starts = list(range(0, n, size_or_sections)) or [0]
        sizes = [builtins.min(size_or_sections, n - s) for s in starts]
    else:
        sizes = list(size_or_sections)
    bounds = np.cumsum([0] + sizes)
    return tuple(
        np.take(x, np.arange(lo, hi), axis=dim)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    )


def split_vjp(gs, x, size_or_sections, dim=0):
    """``gs``: one gradient per piece; None for a piece that was not used."""
    pieces = split(x, size_or_sections, dim)
    return (
        np.concatenate(
            [np.zeros_like(p) if g is None else g for g, p in zip(gs, pieces, strict=True)],
            axis=dim,
        ),
    )


def chunk(x, chunks, dim=0):
    n = x.shape[dim]
    return split(x, -(-n // chunks) if n else 1, dim)


def chunk_vjp(gs, x, chunks, dim=0):
    n = x.shape[dim]
    return split_vjp(gs, x, -(-n // chunks) if n else 1, dim)


def getitem(x, idx):
    return x[idx]


def getitem_vjp(g, x, idx):
    # which input element each output element came from; repeats add up
    source = np.arange(x.size).reshape(x.shape)[idx]
    acc = np.bincount(np.ravel(source), weights=np.ravel(g).astype(np.float64), minlength=x.size)
    return (acc.astype(g.dtype).reshape(x.shape),)


def to(x, dtype):
    return x.astype(dtype)


def to_vjp(g, x, dtype):
    return (g.astype(x.dtype),)


# ---------------------------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------------------------


def _conv_windows(shape, stride, padding, dilation, ksize):
    """(OH, OW) and, per kernel tap (i, j), the slices of the padded input it reads."""
    (_, _, H, W), (sh, sw), (pt, pb, pl, pr), (dh, dw), (KH, KW) = (
        shape,
        stride,
        padding,
        dilation,
        ksize,
    )
    OH = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    taps = {
        (i, j): (
            slice(i * dh, i * dh + sh * (OH - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (OW - 1) + 1, sw),
        )
        for i in range(KH)
        for j in range(KW)
    }
    return OH, OW, taps


def conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """y[n,o,oh,ow] = b[o] + sum_{c,i,j} w[o,c,i,j] xpad[n, g*C/G + c, oh*sh + i*dh, ow*sw +
    j*dw]; padding = (top, bottom, left, right) zeros. One einsum per (group, tap)."""
    N, C, H, W = x.shape
    Co, Cg, KH, KW = w.shape
    pt, pb, pl, pr = padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    OH, OW, taps = _conv_windows(x.shape, stride, padding, dilation, (KH, KW))
    Og = Co // groups
    y = np.zeros((N, Co, OH, OW), x.dtype)
    for g in range(groups):
        xg, wg = xp[:, g * Cg : (g + 1) * Cg], w[g * Og : (g + 1) * Og]
        for (i, j), (si, sj) in taps.items():
            y[:, g * Og : (g + 1) * Og] += np.einsum(
                "nchw,oc->nohw", xg[:, :, si, sj], wg[:, :, i, j]
            )
    if b is not None:
        y += b.reshape(1, Co, 1, 1)
    return y


def conv2d_vjp(g, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """(grad_x, grad_w, grad_b or None) of conv2d for the upstream gradient g [N, O, OH, OW]."""
    N, C, H, W = x.shape
    Co, Cg, KH, KW = w.shape
    pt, pb, pl, pr = padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    _, _, taps = _conv_windows(x.shape, stride, padding, dilation, (KH, KW))
    Og = Co // groups
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for grp in range(groups):
        cs, os_ = slice(grp * Cg, (grp + 1) * Cg), slice(grp * Og, (grp + 1) * Og)
        gg = g[:, os_]
        for (i, j), (si, sj) in taps.items():
            gxp[:, cs, si, sj] += np.einsum("nohw,oc->nchw", gg, w[os_, :, i, j])
            gw[os_, :, i, j] = np.einsum("nohw,nchw->oc", gg, xp[:, cs, si, sj])
    gx = gxp[:, :, pt : pt + H, pl : pl + W]
    gb = None if b is None else g.sum(axis=(0, 2, 3))
    return gx, gw, gb


# softmax family and normalisation over trailing dims
# ---------------------------------------------------------------------------------------------


def softmax(x, dim=-1):
    with _errstate():
        e = np.exp(x - np.max(x, axis=dim, keepdims=True))
        return e / e.sum(axis=dim, keepdims=True)


def softmax_vjp(g, x, dim=-1):
    y = softmax(x, dim)
    return (y * (g - (g * y).sum(axis=dim, keepdims=True)),)


def log_softmax(x, dim=-1):
    with _errstate():
        s = x - np.max(x, axis=dim, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=dim, keepdims=True))


def log_softmax_vjp(g, x, dim=-1):
    return (g - softmax(x, dim) * g.sum(axis=dim, keepdims=True),)


def cross_entropy(x, t, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """PyTorch's cross_entropy with class-index targets: x [N, C, *], t [N, *] integers.

    loss_i = (1 - s) w[t_i] (-logp[i, t_i]) + (s / C) sum_c w[c] (-logp[i, c]), 0 where
    t_i == ignore_index; 'mean' divides the sum by the summed w[t_i] of non-ignored i (both
    terms), giving NaN when every target is ignored."""
    C = x.shape[1]
    logp = np.moveaxis(log_softmax(x, 1), 1, -1).reshape(-1, C)
    t = np.asarray(t).reshape(-1)
    w = np.ones(C, x.dtype) if weight is None else np.asarray(weight, x.dtype)
    valid = t != ignore_index
    safe = np.where(valid, t, 0)
    rows = np.arange(t.size)
    with _errstate():
        nll = np.where(valid, -logp[rows, safe] * w[safe], 0).astype(x.dtype)
        smooth = np.where(valid, -(logp * w).sum(1), 0).astype(x.dtype)
        loss = (1 - label_smoothing) * nll + (label_smoothing / C) * smooth
        if reduction == "none":
            return loss.reshape((x.shape[0],) + x.shape[2:])
        if reduction == "sum":
            return loss.sum()
        return loss.sum() / np.where(valid, w[safe], 0).sum()


def cross_entropy_vjp(g, x, t, weight=None, ignore_index=-100, reduction="mean",
                      label_smoothing=0.0):  # fmt: skip
    """d/dx of cross_entropy: per row i, gi * ((1 - s) w_t (p - onehot) + (s/C)(W p - w))."""
    C = x.shape[1]
    xr = np.moveaxis(x, 1, -1).reshape(-1, C)
    p = softmax(xr, 1)
    t = np.asarray(t).reshape(-1)
    w = np.ones(C, x.dtype) if weight is None else np.asarray(weight, x.dtype)
    valid = t != ignore_index
    safe = np.where(valid, t, 0)
    rows = np.arange(t.size)
    g = np.asarray(g, x.dtype)
    if reduction == "none":
        gi = g.reshape(-1)
    elif reduction == "sum":
        gi = np.full(t.size, g)
    else:
        with _errstate():
            gi = np.full(t.size, g / np.where(valid, w[safe], 0).sum())
    onehot = np.zeros_like(xr)
    onehot[rows, safe] = 1
    s = label_smoothing
    wt = w[safe][:, None]
    with _errstate():
        d = (1 - s) * wt * (p - onehot) + (s / C) * (w.sum() * p - w[None, :])
        gx = np.where(valid[:, None], gi[:, None] * d, 0).astype(x.dtype)
    moved = (x.shape[0],) + x.shape[2:] + (C,)
    return (np.moveaxis(gx.reshape(moved), -1, 1),)


def _trailing(x, k):
    return tuple(range(x.ndim - k, x.ndim))


def layer_norm(x, k, weight=None, bias=None, eps=1e-5):
    """Normalise over the last k dims (biased variance), then * weight + bias."""
    ax = _trailing(x, k)
    mean = x.mean(axis=ax, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=ax, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def layer_norm_vjp(g, x, k, weight=None, bias=None, eps=1e-5):
    """(gx, gweight, gbias); gweight / gbias None when the parameter is None."""
    ax = _trailing(x, k)
    lead = tuple(range(x.ndim - k))
    mean = x.mean(axis=ax, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(axis=ax, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    gh = g if weight is None else g * weight
    gx = rstd * (
        gh - gh.mean(axis=ax, keepdims=True) - xhat * (gh * xhat).mean(axis=ax, keepdims=True)
    )
    gw = None if weight is None else (g * xhat).sum(axis=lead)
    gb = None if bias is None else g.sum(axis=lead)
    return gx, gw, gb


def rms_norm(x, k, weight=None, eps=None):
    eps = np.finfo(x.dtype).eps if eps is None else eps
    ax = _trailing(x, k)
    y = x / np.sqrt((x * x).mean(axis=ax, keepdims=True) + eps)
    return y if weight is None else y * weight


def rms_norm_vjp(g, x, k, weight=None, eps=None):
    eps = np.finfo(x.dtype).eps if eps is None else eps
    ax = _trailing(x, k)
    lead = tuple(range(x.ndim - k))
    rstd = 1 / np.sqrt((x * x).mean(axis=ax, keepdims=True) + eps)
    xhat = x * rstd
    gh = g if weight is None else g * weight
    gx = rstd * (gh - xhat * (gh * xhat).mean(axis=ax, keepdims=True))
    gw = None if weight is None else (g * xhat).sum(axis=lead)
    return gx, gw


# ---------------------------------------------------------------------------------------------
# pooling (NCHW; PyTorch's window rules; max: first maximum in row-major order, a NaN wins)
# ---------------------------------------------------------------------------------------------


def pool_output_size(n, k, s, p, d=1, ceil_mode=False):
    """Output length along one dim: floor or ceil of (n + 2p - (d(k-1) + 1)) / s, plus 1; in
    ceil mode a last window starting beyond the input and left padding is dropped."""
    span = n + 2 * p - (d * (k - 1) + 1)
    o = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    return o


def _max_window_positions(o, n, k, s, p, d):
    return [i for i in (o * s - p + j * d for j in range(k)) if 0 <= i < n]


def max_pool2d(x, kernel, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    """(y, indices): the maximum of each window (padding excluded) and its flat h*W + w."""
    N, C, H, W = x.shape
    OH, OW = (
        pool_output_size(n, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip((H, W), kernel, stride, padding, dilation)
    )
    y = np.empty((N, C, OH, OW), x.dtype)
    idx = np.empty((N, C, OH, OW), np.int64)
    for oh in range(OH):
        hs = _max_window_positions(oh, H, kernel[0], stride[0], padding[0], dilation[0])
        for ow in range(OW):
            ws = _max_window_positions(ow, W, kernel[1], stride[1], padding[1], dilation[1])
            flat = np.array([h * W + w for h in hs for w in ws], np.int64)
            vals = x.reshape(N, C, H * W)[:, :, flat]
            nan = np.isnan(vals)
            last_nan = vals.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
            first_max = np.argmax(np.where(nan, -np.inf, vals), axis=2)
            pick = np.where(nan.any(axis=2), last_nan, first_max)
            idx[:, :, oh, ow] = flat[pick]
            y[:, :, oh, ow] = np.take_along_axis(vals, pick[:, :, None], axis=2)[:, :, 0]
    return y, idx


def max_pool2d_vjp(g, x, indices):
    """The upstream gradient added at each window's argmax."""
    N, C, H, W = x.shape
    gx = np.zeros((N * C, H * W), g.dtype)
    rows = np.repeat(np.arange(N * C), indices[0, 0].size)
    np.add.at(gx, (rows, indices.reshape(-1)), g.reshape(-1))
    return (gx.reshape(x.shape),)


def _avg_windows(H, W, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
    """[(oh, ow, rows, cols, divisor)] of average pooling."""
    out = []
    OH, OW = (
        pool_output_size(n, k, s, p, 1, ceil_mode)
        for n, k, s, p in zip((H, W), kernel, stride, padding)
    )
    for oh in range(OH):
        h0 = oh * stride[0] - padding[0]
        h1 = builtins.min(h0 + kernel[0], H + padding[0])
        for ow in range(OW):
            w0 = ow * stride[1] - padding[1]
            w1 = builtins.min(w0 + kernel[1], W + padding[1])
            rows = range(builtins.max(h0, 0), builtins.min(h1, H))
            cols = range(builtins.max(w0, 0), builtins.min(w1, W))
            if divisor:
                div = divisor
            elif count_include_pad:
                div = (h1 - h0) * (w1 - w0)
            else:
                div = len(rows) * len(cols)
            out.append((oh, ow, rows, cols, div))
    return out, (OH, OW)


def avg_pool2d(x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True,
               divisor_override=None):  # fmt: skip
    N, C, H, W = x.shape
    wins, (OH, OW) = _avg_windows(H, W, kernel, stride, padding, ceil_mode, count_include_pad,
                                  divisor_override)  # fmt: skip
    y = np.empty((N, C, OH, OW), x.dtype)
    for oh, ow, rows, cols, div in wins:
        win = x[:, :, rows.start : rows.stop, cols.start : cols.stop]
        y[:, :, oh, ow] = win.sum(axis=(2, 3)) / x.dtype.type(div)
    return y


def avg_pool2d_vjp(g, x, kernel, stride, padding=(0, 0), ceil_mode=False,
                   count_include_pad=True, divisor_override=None):  # fmt: skip
    N, C, H, W = x.shape
    wins, _ = _avg_windows(H, W, kernel, stride, padding, ceil_mode, count_include_pad,
                           divisor_override)  # fmt: skip
    gx = np.zeros(x.shape, g.dtype)
    for oh, ow, rows, cols, div in wins:
        gx[:, :, rows.start : rows.stop, cols.start : cols.stop] += g[:, :, oh, ow][
            :, :, None, None
        ] / g.dtype.type(div)
    return (gx,)


def _adaptive_ranges(n, o):
    return [range((i * n) // o, -(-((i + 1) * n) // o)) for i in range(o)]


def adaptive_avg_pool2d(x, out_hw):
    N, C, H, W = x.shape
    y = np.empty((N, C) + tuple(out_hw), x.dtype)
    for i, rows in enumerate(_adaptive_ranges(H, out_hw[0])):
        for j, cols in enumerate(_adaptive_ranges(W, out_hw[1])):
            y[:, :, i, j] = x[:, :, rows.start : rows.stop, cols.start : cols.stop].mean(
                axis=(2, 3)
            )
    return y


def adaptive_avg_pool2d_vjp(g, x, out_hw):
    gx = np.zeros(x.shape, g.dtype)
    for i, rows in enumerate(_adaptive_ranges(x.shape[2], out_hw[0])):
        for j, cols in enumerate(_adaptive_ranges(x.shape[3], out_hw[1])):
            n = len(rows) * len(cols)
            gx[:, :, rows.start : rows.stop, cols.start : cols.stop] += g[:, :, i, j][
                :, :, None, None
            ] / g.dtype.type(n)
    return (gx,)


def adaptive_max_pool2d(x, out_hw):
    """(y, indices) over the adaptive windows; max rules as max_pool2d."""
    N, C, H, W = x.shape
    y = np.empty((N, C) + tuple(out_hw), x.dtype)
    idx = np.empty((N, C) + tuple(out_hw), np.int64)
    for i, rows in enumerate(_adaptive_ranges(H, out_hw[0])):
        for j, cols in enumerate(_adaptive_ranges(W, out_hw[1])):
            flat = np.array([h * W + w for h in rows for w in cols], np.int64)
            vals = x.reshape(N, C, H * W)[:, :, flat]
            nan = np.isnan(vals)
            last_nan = vals.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
            pick = np.where(nan.any(axis=2), last_nan, np.argmax(np.where(nan, -np.inf, vals), 2))
            idx[:, :, i, j] = flat[pick]
            y[:, :, i, j] = np.take_along_axis(vals, pick[:, :, None], axis=2)[:, :, 0]
    return y, idx


# ---------------------------------------------------------------------------------------------
# comparison helpers: the tolerances of shared/DESIGN.md section 4
# ---------------------------------------------------------------------------------------------


def _same_specials(actual, expected, what):
    """NaN where (and only where) the reference has NaN; infinities equal."""
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(nan_a, nan_e), (
        f"{what}: NaN pattern differs (ember NaN at {np.argwhere(nan_a & ~nan_e)[:5].tolist()}, "
        f"missing at {np.argwhere(nan_e & ~nan_a)[:5].tolist()})"
    )
    inf_e = np.isinf(expected)
    assert np.array_equal(actual[inf_e], expected[inf_e]), f"{what}: infinities differ"
    assert not np.isinf(actual[~inf_e & ~nan_e]).any(), (
        f"{what}: ember overflowed where the reference is finite"
    )
    return ~(nan_e | inf_e)


def _report(actual, expected, bad, tol, what):
    i = tuple(int(k) for k in np.argwhere(bad)[0])
    t = float(np.broadcast_to(tol, bad.shape)[i])
    return (
        f"{what}: {int(bad.sum())} of {bad.size} elements off; first at {i}: ember "
        f"{actual[i]!r} vs reference {expected[i]!r} (tolerance {t:.3g})"
    )


def assert_shape_dtype(actual, expected_shape, expected_dtype, what=""):
    assert tuple(actual.shape) == tuple(expected_shape), (
        f"{what}: shape {actual.shape} != {expected_shape}"
    )
    assert actual.dtype == np.dtype(expected_dtype), (
        f"{what}: dtype {actual.dtype} != {np.dtype(expected_dtype)}"
    )


def assert_elementwise(actual, expected, plain32=None, rtol=1e-6, what=""):
    """Element by element: |ember - ref| <= rtol |ref| + rtol s + 2 |plain32 - ref|.

    s is the median magnitude of the reference, so the bound stays meaningful where a result
    crosses 0. ``plain32`` (the reference formula evaluated in float32) adds the error that
    float32 cannot avoid: where the formula cancels (1 - tanh^2 near |tanh| = 1, a gradient
    summed over broadcast dims), ember may be as far off as twice the plain float32 result."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    finite = _same_specials(actual, expected, what)
    if not finite.any():
        return
    scale = float(np.median(np.abs(expected[finite])))
    tol = rtol * np.abs(expected) + rtol * scale
    if plain32 is not None:
        with _errstate():
            tol = tol + np.nan_to_num(
                2 * np.abs(np.asarray(plain32, np.float64) - expected), nan=0.0, posinf=0.0
            )
    bad = finite & ~(np.abs(actual - expected) <= tol)
    assert not bad.any(), _report(actual, expected, bad, tol, what)


def assert_reduction(actual, expected, plain32, ratio=2.0, floor=1e-6, scale=None, what=""):
    """The largest error of ember against the float64 reference is at most ``ratio`` times the
    largest error of a plain float32 numpy computation (``plain32``), plus ``floor`` times
    ``scale`` (so that a float32 result that happens to be exact does not demand exactness
    from ember). ``scale`` is the magnitude the rounding errors of the computation scale with:
    by default the largest reference magnitude; for sums with cancellation, the same
    computation on absolute values (sum |x_i|, |A| |B|), as in the classic error bounds."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    plain32 = np.asarray(plain32, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    finite = _same_specials(actual, expected, what)
    if not finite.any():
        return
    err = float(np.max(np.abs(actual - expected)[finite]))
    err32 = float(np.max(np.abs(plain32 - expected)[finite & np.isfinite(plain32)], initial=0.0))
    magnitude = float(np.max(np.abs(expected[finite])))
    if scale is not None:
        magnitude = builtins.max(magnitude, float(scale))
    tol = ratio * err32 + floor * magnitude
    assert err <= tol, (
        f"{what}: max error {err:.3g} > {ratio} x float32-numpy error {err32:.3g} + floor "
        f"(tolerance {tol:.3g})"
    )


def assert_exact(actual, expected, what=""):
    """Bit-exact (data movement, max/min, indices): NaN equals NaN."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.dtype.kind == "f":
        expected = expected.astype(actual.dtype)
    ok = np.array_equal(actual, expected, equal_nan=actual.dtype.kind == "f")
    if not ok:
        bad = ~(
            (actual == expected) | (np.isnan(actual) & np.isnan(expected))
            if actual.dtype.kind == "f"
            else actual == expected
        )
        raise AssertionError(_report(actual, expected, bad, 0.0, what))


# ---------------------------------------------------------------------------------------------
# scaled-dot-product attention
# ---------------------------------------------------------------------------------------------


def attention_probs(q, k, mask=None, causal=False, scale=None, dtype=np.float64):
    """softmax(q k^T * scale + mask) over the keys, in ``dtype``. mask: bool (True = take part)
    or additive float, broadcastable to [..., Lq, Lk]. Rows where every key is masked give 0
    (ember's rule; PyTorch gives NaN)."""
    q, k = q.astype(dtype), k.astype(dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ np.swapaxes(k, -1, -2)) * dtype(scale)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask.astype(dtype)
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    m = s.max(-1, keepdims=True)
    with _errstate():
        e = np.exp(s - np.where(np.isfinite(m), m, 0))
    den = e.sum(-1, keepdims=True)
    return np.where(den > 0, e / np.where(den > 0, den, 1), 0).astype(dtype)


def attention(q, k, v, mask=None, causal=False, scale=None, dtype=np.float64):
    """softmax(q k^T * scale + mask) v: [..., Lq, D], [..., Lk, D], [..., Lk, Dv] -> [..., Lq, Dv]
    (float64 unless ``dtype`` says otherwise)."""
    p = attention_probs(q, k, mask, causal, scale, dtype)
    return p @ v.astype(dtype)


def attention_vjp(g, q, k, v, mask=None, causal=False, scale=None, dtype=np.float64):
    """(dq, dk, dv) for upstream g, summed back over broadcast batch dims. The softmax VJP's
    row term sum_j dP_ij P_ij is written as rowsum(g * out) (equal; FlashAttention-2's form),
    so the float32 version rounds like the flash backward does."""
    scale = dtype(1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    q, k, v, g = (a.astype(dtype) for a in (q, k, v, g))
    p = attention_probs(q, k, mask, causal, scale, dtype)
    dv = np.swapaxes(p, -1, -2) @ g
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (g * (p @ v)).sum(-1, keepdims=True)) * scale
    return (
        sum_to(ds @ k, q.shape),
        sum_to(np.swapaxes(ds, -1, -2) @ q, k.shape),
        sum_to(dv, v.shape),
    )


def multihead_attention(query, key, value, wq, wk, wv, bq, bk, bv, wo, bo, num_heads,
                        key_padding_mask=None, attn_mask=None, bias_k=None, bias_v=None,
                        add_zero_attn=False):  # fmt: skip
    """torch.nn.MultiheadAttention's forward (batch first [N, L, E], no dropout) in float64:
    returns (output [N, L, E], per-head weights [N, H, L, S]). Masks: bool True = NOT allowed,
    float = added; attn_mask [L, S] or [N*H, L, S], key_padding_mask [N, S]."""
    f = np.float64
    q = query.astype(f) @ wq.T.astype(f) + (0 if bq is None else bq)
    k = key.astype(f) @ wk.T.astype(f) + (0 if bk is None else bk)
    v = value.astype(f) @ wv.T.astype(f) + (0 if bv is None else bv)
    n, lq, e = q.shape
    h = num_heads
    hd = e // h

    def additive(m):
        if m is None:
            return None
        return np.where(m, -np.inf, 0.0) if m.dtype == np.bool_ else m.astype(f)

    am, kpm = additive(attn_mask), additive(key_padding_mask)

    def pad(m):
        return None if m is None else np.concatenate([m, np.zeros(m.shape[:-1] + (1,))], -1)

    if bias_k is not None:
        k = np.concatenate([k, np.broadcast_to(bias_k.astype(f), (n, 1, e))], 1)
        v = np.concatenate([v, np.broadcast_to(bias_v.astype(f), (n, 1, e))], 1)
        am, kpm = pad(am), pad(kpm)
    s_len = k.shape[1]
    q = q.reshape(n, lq, h, hd).transpose(0, 2, 1, 3)
    k = k.reshape(n, s_len, h, hd).transpose(0, 2, 1, 3)
    v = v.reshape(n, s_len, h, hd).transpose(0, 2, 1, 3)
    if add_zero_attn:
        k = np.concatenate([k, np.zeros((n, h, 1, hd))], 2)
        v = np.concatenate([v, np.zeros((n, h, 1, hd))], 2)
        am, kpm = pad(am), pad(kpm)
        s_len += 1
    mask = np.zeros((n, h, lq, s_len))
    if am is not None:
        mask = mask + (am.reshape(n, h, lq, s_len) if am.ndim == 3 else am)
    if kpm is not None:
        mask = mask + kpm.reshape(n, 1, 1, s_len)
    p = attention_probs(q, k, mask)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(n, lq, e)
    return o @ wo.T.astype(f) + (0 if bo is None else bo), p
