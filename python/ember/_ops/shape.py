"""Shape ops: reshape/view, permute/transpose, squeeze/unsqueeze, expand, repeat, cat, stack,
split/chunk, contiguous, clone, flip.

Views stay views: the result shares the input's array and its version counter, so an in-place
change through either is seen by the autograd saved-tensor check.
"""

from __future__ import annotations

import math

import numpy as np

from .._utils import norm_dim, size_args
from ..autograd.function import Function
from ..tensor import Tensor
from ._common import cast, check_device, result_type
from ._common import xp as xp_


def _view_result(a, arr):
    """Wrap ``arr``; share ``a``'s version counter when ``arr`` is a view of ``a``'s memory."""
    if arr.base is not None and xp_(a).may_share_memory(arr, a._array):
        return Tensor._wrap(arr, a._version)
    return Tensor._wrap(arr)


def _infer_shape(shape, numel, op):
    shape = list(shape)
    neg = [i for i, s in enumerate(shape) if s == -1]
    if len(neg) > 1:
        raise ValueError(f"[{op}] only one dimension can be -1, got {tuple(shape)}")
    if any(s < -1 for s in shape):
        raise ValueError(f"[{op}] invalid shape {tuple(shape)}")
    known = math.prod(s for s in shape if s != -1)
    if neg:
        if known == 0 or numel % known:
            raise ValueError(f"[{op}] shape {tuple(shape)} is invalid for input of size {numel}")
        shape[neg[0]] = numel // known
    elif known != numel:
        raise ValueError(f"[{op}] shape {tuple(shape)} is invalid for input of size {numel}")
    return tuple(shape)


def _shape_args(shape, op):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    out = []
    for s in shape:
        if not hasattr(s, "__index__") or isinstance(s, bool):
            raise TypeError(f"[{op}] shape entries must be ints, got {type(s).__name__}")
        out.append(s.__index__())
    return tuple(out)


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape, must_view=False):
        op = "view" if must_view else "reshape"
        shape = _infer_shape(shape, a.numel(), op)
        ctx.in_shape = a.shape
        arr = a._array.reshape(shape)
        if must_view and arr.size and not xp_(a).may_share_memory(arr, a._array):
            raise RuntimeError(
                f"[view] shape {shape} is not compatible with the input's strides (it is not "
                "contiguous); use .reshape(...) instead"
            )
        return _view_result(a, arr)

    @staticmethod
    def backward(ctx, g):
        return g._array.reshape(ctx.in_shape), None, None


class Permute(Function):
    @staticmethod
    def forward(ctx, a, dims):
        n = a.ndim
        dims = tuple(norm_dim(d, n, "permute") for d in dims)
        if len(dims) != n or sorted(dims) != list(range(n)):
            raise ValueError(f"[permute] dims {dims} is not a permutation of {n} dims")
        ctx.inv = tuple(np.argsort(dims))
        return _view_result(a, a._array.transpose(dims))

    @staticmethod
    def backward(ctx, g):
        return g._array.transpose(ctx.inv), None


class Squeeze(Function):
    @staticmethod
    def forward(ctx, a, dim=None):
        ctx.in_shape = a.shape
        if dim is None:
            axes = tuple(i for i, s in enumerate(a.shape) if s == 1)
        else:
            dims = (dim,) if isinstance(dim, int) else tuple(dim)
            # a dim whose size is not 1 is left alone, as in PyTorch
            axes = tuple(
                sorted(
                    {
                        d
                        for d in (norm_dim(x, a.ndim, "squeeze") for x in dims)
                        if a.ndim and a.shape[d] == 1
                    }
                )
            )
        return _view_result(a, a._array.squeeze(axis=axes) if a.ndim else a._array)

    @staticmethod
    def backward(ctx, g):
        return g._array.reshape(ctx.in_shape), None


class Unsqueeze(Function):
    @staticmethod
    def forward(ctx, a, dim):
        d = norm_dim(dim, a.ndim + 1, "unsqueeze")
        ctx.d = d
        return _view_result(a, xp_(a).expand_dims(a._array, d))

    @staticmethod
    def backward(ctx, g):
        return g._array.squeeze(ctx.d), None


class Expand(Function):
    @staticmethod
    def forward(ctx, a, sizes):
        if len(sizes) < a.ndim:
            raise ValueError(f"[expand] {len(sizes)} sizes given for a {a.ndim}-d tensor")
        lead = len(sizes) - a.ndim
        shape = []
        for i, s in enumerate(sizes):
            cur = a.shape[i - lead] if i >= lead else None
            if s == -1:
                if cur is None:
                    raise ValueError("[expand] -1 is not allowed for a new leading dimension")
                s = cur
            elif cur is not None and cur != 1 and cur != s:
                raise ValueError(
                    f"[expand] the size of dim {i} ({cur}) must match {s} or be 1 (input {a.shape})"
                )
            shape.append(s)
        ctx.in_shape = a.shape
        return _view_result(a, xp_(a).broadcast_to(a._array, tuple(shape)))

    @staticmethod
    def backward(ctx, g):
        from ._common import unbroadcast

        return unbroadcast(g._array, ctx.in_shape), None


class Repeat(Function):
    @staticmethod
    def forward(ctx, a, reps):
        if len(reps) < a.ndim:
            raise ValueError(
                f"[repeat] number of repeats ({len(reps)}) can't be smaller than the number of "
                f"dims ({a.ndim})"
            )
        if any(r < 0 for r in reps):
            raise ValueError(f"[repeat] repeats must be non-negative, got {tuple(reps)}")
        shape = (1,) * (len(reps) - a.ndim) + a.shape
        ctx.shape, ctx.reps, ctx.in_shape = shape, tuple(reps), a.shape
        return Tensor._wrap(xp_(a).tile(a._array.reshape(shape), reps))

    @staticmethod
    def backward(ctx, g):
        g = g._array
        inter = []
        for r, s in zip(ctx.reps, ctx.shape):
            inter += [r, s]
        g = g.reshape(inter).sum(axis=tuple(range(0, len(inter), 2)))
        return g.reshape(ctx.in_shape), None


class Cat(Function):
    @staticmethod
    def forward(ctx, *tensors, dim=0):
        _check_seq(tensors, "cat")
        check_device("cat", *tensors)
        ref = next(
            (t for t in tensors if t.shape != (0,)), tensors[0]
        )  # PyTorch skips legacy 1-D empties
        if ref.ndim == 0:
            raise ValueError("[cat] zero-dimensional tensors cannot be concatenated")
        d = norm_dim(dim, ref.ndim, "cat")
        parts = [t for t in tensors if not (t.shape == (0,) and ref.shape != (0,))]
        for t in parts:
            if t.ndim != ref.ndim or any(
                t.shape[i] != ref.shape[i] for i in range(ref.ndim) if i != d
            ):
                raise ValueError(
                    f"[cat] sizes must match except in dim {d}: got {ref.shape} and {t.shape}"
                )
        dt = result_type(*parts)
        ctx.d = d
        ctx.sizes = [
            t.shape[d] if not (t.shape == (0,) and ref.shape != (0,)) else None for t in tensors
        ]
        return Tensor._wrap(xp_(ref).concatenate([cast(t, dt) for t in parts], axis=d))

    @staticmethod
    def backward(ctx, g):
        g = g._array
        out, off = [], 0
        for s in ctx.sizes:
            if s is None:
                out.append(None)
                continue
            idx = [slice(None)] * g.ndim
            idx[ctx.d] = slice(off, off + s)
            out.append(g[tuple(idx)])
            off += s
        return tuple(out)


def _check_seq(tensors, op):
    if not tensors:
        raise ValueError(f"[{op}] expected a non-empty sequence of tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"[{op}] expected a sequence of Tensors, got {type(t).__name__}")


class Stack(Function):
    @staticmethod
    def forward(ctx, *tensors, dim=0):
        _check_seq(tensors, "stack")
        check_device("stack", *tensors)
        shape = tensors[0].shape
        for t in tensors:
            if t.shape != shape:
                raise ValueError(
                    f"[stack] all tensors must have the same shape: {shape} vs {t.shape}"
                )
        d = norm_dim(dim, len(shape) + 1, "stack")
        dt = result_type(*tensors)
        ctx.d, ctx.n = d, len(tensors)
        return Tensor._wrap(xp_(tensors[0]).stack([cast(t, dt) for t in tensors], axis=d))

    @staticmethod
    def backward(ctx, g):
        g = g._array
        return tuple(g.take(i, axis=ctx.d) for i in range(ctx.n))


class Split(Function):
    @staticmethod
    def forward(ctx, a, sizes, dim):
        d = norm_dim(dim, a.ndim, "split")
        if sum(sizes) != a.shape[d]:
            raise ValueError(f"[split] sizes {list(sizes)} don't add up to {a.shape[d]} (dim {d})")
        ctx.d, ctx.sizes, ctx.in_shape = d, sizes, a.shape
        outs, off = [], 0
        for s in sizes:
            idx = [slice(None)] * a.ndim
            idx[d] = slice(off, off + s)
            outs.append(_view_result(a, a._array[tuple(idx)]))
            off += s
        return tuple(outs)

    @staticmethod
    def backward(ctx, *gs):
        return xp_of(gs[0]._array).concatenate([g._array for g in gs], axis=ctx.d), None, None


def xp_of(a):
    from .._device import xp_of as f

    return f(a)


class Contiguous(Function):
    @staticmethod
    def forward(ctx, a):
        if a._array.flags.c_contiguous:  # no copy: share the storage and its version counter
            return Tensor._wrap(a._array, a._version)
        # (ascontiguousarray only for the copy: it would turn a 0-d array into a 1-d one)
        return Tensor._wrap(xp_(a).ascontiguousarray(a._array))

    @staticmethod
    def backward(ctx, g):
        return g


class Clone(Function):
    @staticmethod
    def forward(ctx, a):
        return Tensor._wrap(a._array.copy())

    @staticmethod
    def backward(ctx, g):
        return g


class Flip(Function):
    @staticmethod
    def forward(ctx, a, dims):
        axes = tuple(norm_dim(d, a.ndim, "flip") for d in dims)
        ctx.axes = axes
        return Tensor._wrap(xp_(a).flip(a._array, axes).copy())

    @staticmethod
    def backward(ctx, g):
        return xp_of(g._array).flip(g._array, ctx.axes), None


# --------------------------------------------------------------------------- entry points


def reshape(input, *shape):
    return Reshape.apply(input, _shape_args(shape, "reshape"))


def view(input, *shape):
    return Reshape.apply(input, _shape_args(shape, "view"), True)


def flatten(input, start_dim=0, end_dim=-1):
    if input.ndim == 0:
        return Reshape.apply(input, (1,))
    s = norm_dim(start_dim, input.ndim, "flatten")
    e = norm_dim(end_dim, input.ndim, "flatten")
    if s > e:
        raise ValueError(f"[flatten] start_dim {start_dim} comes after end_dim {end_dim}")
    shape = input.shape[:s] + (math.prod(input.shape[s : e + 1]),) + input.shape[e + 1 :]
    return Reshape.apply(input, shape)


def unflatten(input, dim, sizes):
    d = norm_dim(dim, input.ndim, "unflatten")
    sizes = _infer_shape(sizes, input.shape[d], "unflatten")
    return Reshape.apply(input, input.shape[:d] + tuple(sizes) + input.shape[d + 1 :])


def permute(input, *dims):
    return Permute.apply(input, _shape_args(dims, "permute"))


def transpose(input, dim0, dim1):
    n = input.ndim
    d0, d1 = norm_dim(dim0, n, "transpose"), norm_dim(dim1, n, "transpose")
    perm = list(range(n))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return Permute.apply(input, tuple(perm))


swapaxes = swapdims = transpose


def t(input):
    if input.ndim > 2:
        raise ValueError(f"[t] expects a tensor with <= 2 dims, got {input.ndim}")
    return transpose(input, 0, 1) if input.ndim == 2 else input


def squeeze(input, dim=None):
    return Squeeze.apply(input, dim)


def unsqueeze(input, dim):
    return Unsqueeze.apply(input, dim)


def expand(input, *sizes):
    return Expand.apply(input, _shape_args(sizes, "expand"))


def expand_as(input, other):
    return Expand.apply(input, other.shape)


def broadcast_to(input, shape):
    return Expand.apply(input, tuple(shape))


def repeat(input, *sizes):
    return Repeat.apply(input, size_args(sizes, "repeat"))


def cat(tensors, dim=0):
    return Cat.apply(*tensors, dim=dim)


concat = concatenate = cat


def stack(tensors, dim=0):
    return Stack.apply(*tensors, dim=dim)


def split(tensor, split_size_or_sections, dim=0):
    d = norm_dim(dim, tensor.ndim, "split")
    n = tensor.shape[d]
    if isinstance(split_size_or_sections, int):
        s = split_size_or_sections
        if s <= 0:
            raise ValueError(f"[split] split_size must be positive, got {s}")
        sizes = [s] * (n // s) + ([n % s] if n % s else [])
        if not sizes:
            sizes = [0]
    else:
        sizes = list(split_size_or_sections)
    return Split.apply(tensor, tuple(sizes), d)


def chunk(input, chunks, dim=0):
    if chunks <= 0:
        raise ValueError(f"[chunk] chunks must be positive, got {chunks}")
    d = norm_dim(dim, input.ndim, "chunk")
    size = -(-input.shape[d] // chunks) if input.shape[d] else 1
    return split(input, max(size, 1), d)


def unbind(input, dim=0):
    d = norm_dim(dim, input.ndim, "unbind")
    return tuple(squeeze(p, d) for p in split(input, 1, d)) if input.shape[d] else ()


def contiguous(input):
    return Contiguous.apply(input)


def clone(input):
    return Clone.apply(input)


def flip(input, dims):
    return Flip.apply(input, tuple([dims] if isinstance(dims, int) else dims))


def movedim(input, source, destination):
    n = input.ndim
    s, d = norm_dim(source, n, "movedim"), norm_dim(destination, n, "movedim")
    perm = [i for i in range(n) if i != s]
    perm.insert(d, s)
    return Permute.apply(input, tuple(perm))
