"""``matmul`` / ``@`` / ``bmm`` / ``mm`` / ``dot`` on our GEMM kernel (``_C.gemm``).

The kernel takes 3-D strided operands, so transposes in backward are stride-swapped views
(no copies) and broadcast batch dims are stride-0 views. Integer matmul has no kernel of ours
and uses numpy's integer loop (which never calls BLAS). CUDA tensors use cupy (cuBLAS) until
the CUDA GEMM lands (issue 8).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd.function import Function
from ..tensor import Tensor
from ._common import cast, check_device, result_type


def _mm_arrays(a, b):
    """a [..., M, K] @ b [..., K, N] (both >= 2-D, same dtype) with batch broadcasting."""
    M, K = a.shape[-2:]
    N = b.shape[-1]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if not isinstance(a, np.ndarray):
        return a @ b  # cupy: cuBLAS for now
    dt = a.dtype
    if dt not in (np.float32, np.float64):
        if dt == np.float16:  # no half kernel on the CPU: compute in float32
            return _mm_arrays(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)
        return np.matmul(a, b)  # integers/bool: numpy's plain loop, not BLAS
    out = np.empty(batch + (M, N), dt)
    nb = int(np.prod(batch)) if batch else 1

    def as3(x, rows, cols):
        x = np.broadcast_to(x, batch + (rows, cols)) if x.shape[:-2] != batch else x
        if x.ndim == 2:
            return x[None]
        if x.ndim == 3:
            return x
        return x.reshape(nb, rows, cols)  # copies only when broadcast dims can't be merged

    _C.gemm(as3(a, M, K), as3(b, K, N), out.reshape(nb, M, N))
    return out


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        for x in (a, b):
            if not isinstance(x, Tensor):
                raise TypeError(f"[matmul] expected Tensors, got {type(x).__name__}")
            if x.ndim == 0:
                raise ValueError("[matmul] both arguments need at least 1 dimension, got a 0-d tensor")
        check_device("matmul", a, b)
        dt = result_type(a, b)
        x, y = cast(a, dt), cast(b, dt)
        # 1-D operands are promoted to matrices and the added dim removed afterwards (numpy rule)
        x2 = x[None, :] if x.ndim == 1 else x
        y2 = y[:, None] if y.ndim == 1 else y
        if x2.shape[-1] != y2.shape[-2]:
            raise ValueError(
                f"[matmul] shapes {a.shape} and {b.shape} cannot be multiplied "
                f"({x2.shape[-1]} != {y2.shape[-2]})"
            )
        try:
            np.broadcast_shapes(x2.shape[:-2], y2.shape[:-2])
        except ValueError:
            raise ValueError(f"[matmul] batch dims of {a.shape} and {b.shape} don't broadcast") from None
        out = _mm_arrays(x2, y2)
        if a.ndim == 1:
            out = out.squeeze(-2)
        if b.ndim == 1:
            out = out.squeeze(-1)
        ctx.save_for_backward(a, b)
        ctx.dt = dt
        return Tensor._wrap(out)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        g = g._array
        x, y = cast(a, ctx.dt), cast(b, ctx.dt)
        x2 = x[None, :] if x.ndim == 1 else x
        y2 = y[:, None] if y.ndim == 1 else y
        # re-insert the dims forward squeezed away, in reverse order (b's trailing dim first,
        # so that 1-D @ 1-D, whose gradient is 0-d, works too)
        g2 = g
        if b.ndim == 1:
            g2 = g2[..., None]
        if a.ndim == 1:
            g2 = g2[..., None, :]
        ga = gb = None
        if ctx.needs_input_grad[0]:  # dA = dC @ B^T  (B^T is a stride-swapped view)
            ga = _sum_to(_mm_arrays(g2, y2.swapaxes(-1, -2)), x2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:  # dB = A^T @ dC
            gb = _sum_to(_mm_arrays(x2.swapaxes(-1, -2), g2), y2.shape).reshape(b.shape)
        return ga, gb


def _sum_to(g, shape):
    from ._common import unbroadcast

    return unbroadcast(g, shape)


def matmul(input, other):
    return MatMul.apply(input, other)


def mm(input, mat2):
    if input.ndim != 2 or mat2.ndim != 2:
        raise ValueError(f"[mm] expects 2-D tensors, got {input.shape} and {mat2.shape}")
    return MatMul.apply(input, mat2)


def bmm(input, mat2):
    if input.ndim != 3 or mat2.ndim != 3:
        raise ValueError(f"[bmm] expects 3-D tensors, got {input.shape} and {mat2.shape}")
    if input.shape[0] != mat2.shape[0]:
        raise ValueError(f"[bmm] batch sizes differ: {input.shape[0]} and {mat2.shape[0]}")
    return MatMul.apply(input, mat2)


def dot(input, other):
    if input.ndim != 1 or other.ndim != 1:
        raise ValueError(f"[dot] expects 1-D tensors, got {input.shape} and {other.shape}")
    return MatMul.apply(input, other)


def mv(input, vec):
    if input.ndim != 2 or vec.ndim != 1:
        raise ValueError(f"[mv] expects a matrix and a vector, got {input.shape} and {vec.shape}")
    return MatMul.apply(input, vec)


def outer(input, vec2):
    return MatMul.apply(input.reshape(-1, 1), vec2.reshape(1, -1))
