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
    if b.ndim == 2 and a.ndim > 2 and a.flags.c_contiguous:
        # [..., M, K] @ [K, N]: fold the batch into M, one GEMM of prod(...)*M rows (x @ W on
        # a [B, T, C] activation); far better tiles than many small products.
        out = np.empty(a.shape[:-1] + (N,), dt)
        _C.gemm(a.reshape(1, -1, K), b[None], out.reshape(1, -1, N))
        return out
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
                raise ValueError("[matmul] both arguments need at least 1 dimension, got 0-d")
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
            raise ValueError(
                f"[matmul] batch dims of {a.shape} and {b.shape} don't broadcast"
            ) from None
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
            if (
                y2.ndim == 2
                and x2.ndim > 2
                and isinstance(g2, np.ndarray)
                and x2.flags.c_contiguous
                and g2.flags.c_contiguous
            ):
                # batch summed inside one GEMM: K = prod(batch) * M (no [batch, K, N] temporary)
                xf, gf = x2.reshape(-1, x2.shape[-1]), g2.reshape(-1, g2.shape[-1])
                gb = _mm_arrays(xf.T, gf).reshape(b.shape)
            else:
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


# ------------------------------------------------------------------ Linear (+ activation)
_LINEAR_ACTS = ("none", "relu", "gelu", "gelu_tanh")
_SQRT_2PI_INV = 0.3989422804014327  # 1 / sqrt(2 pi)
_SQRT_2_OVER_PI = 0.7978845608028654


def _act_inplace(z, activation):
    """z = act(z) in place on our GEMM's epilogue (a K = 0 product: c = act(1 * c))."""
    B = z.reshape(1, -1, z.shape[-1])
    empty_a = np.empty((1, B.shape[1], 0), z.dtype)
    empty_b = np.empty((1, 0, B.shape[2]), z.dtype)
    _C.gemm(empty_a, empty_b, B, 1.0, 1.0, None, activation)
    return z


def _act_grad(z, y, activation):
    """d act(z) / dz, given z and y = act(z)."""
    if activation == "gelu":
        # gelu(z) = z Phi(z)  =>  Phi = y / z (y keeps full relative precision for z < 0);
        # gelu'(z) = Phi(z) + z phi(z).
        with np.errstate(invalid="ignore", divide="ignore"):
            phi_cdf = np.where(z == 0, 0.5, y / np.where(z == 0, 1, z))
        return phi_cdf + z * (_SQRT_2PI_INV * np.exp(-0.5 * z * z))
    if activation == "gelu_tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z**3))
        du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * z * z)
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du
    raise AssertionError(activation)


class LinearAct(Function):
    """y = act(x @ w.T + b) for x [n, in], w [out, in], b [out] or None, on one GEMM whose
    epilogue adds the bias (and applies the activation) while the tile is in cache; ``w.T`` is
    a stride-swapped view, never copied.

    Backward (dz = dy * act'(z)): dx = dz @ w, dw = dz^T @ x (dz^T a view), db = dz.sum(0).
    ReLU's mask comes from y (y > 0 iff z > 0), so relu is fused in training too. For GELU the
    backward needs z: when a gradient will be needed the forward writes z (bias fused) and
    applies GELU on a copy with the same epilogue code (one extra pass over the output);
    without grad (inference) GELU is fused into the GEMM.
    """

    @staticmethod
    def forward(ctx, x, w, b, activation):
        xa, wa = x._array, w._array
        ba = None if b is None else b._array
        out = np.empty((xa.shape[0], wa.shape[0]), xa.dtype)
        need_z = activation in ("gelu", "gelu_tanh") and any(ctx.needs_input_grad)
        _C.gemm(xa[None], wa.T[None], out[None], 1.0, 0.0, ba, "none" if need_z else activation)
        ctx.activation = activation
        ctx.has_bias = b is not None
        if need_z:
            y = _act_inplace(out.copy(), activation)
            ctx.save_for_backward(x, w, Tensor._wrap(out), Tensor._wrap(y))
            return y
        if activation == "relu":
            ctx.save_for_backward(x, w, None, Tensor._wrap(out))
        else:
            ctx.save_for_backward(x, w, None, None)
        return out

    @staticmethod
    def backward(ctx, g):
        x, w, z, y = ctx.saved_tensors
        g = g._array
        act = ctx.activation
        if act == "relu":
            g = np.where(y._array > 0, g, 0).astype(g.dtype, copy=False)
        elif act != "none":
            g = (g * _act_grad(z._array, y._array, act)).astype(g.dtype, copy=False)
        xa, wa = x._array, w._array
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _mm_arrays(g, wa)  # [n, out] @ [out, in]
        if ctx.needs_input_grad[1]:
            gw = _mm_arrays(g.T, xa)  # [out, n] @ [n, in], g.T a view
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gw, gb, None
