"""``ember.ops``: ember's kernels on plain numpy arrays, without the autograd layer.

import numpy as np, ember
a = np.random.rand(512, 768).astype(np.float32)
w = np.random.rand(3072, 768).astype(np.float32)
b = np.random.rand(3072).astype(np.float32)
y = ember.ops.gemm(a, w, trans_b=True, bias=b, activation="gelu")   # Linear + GELU, one pass
"""

from __future__ import annotations

import numpy as np

from . import _C

__all__ = ["gemm"]

_ACTIVATIONS = ("none", "relu", "gelu", "gelu_tanh")


def _operand(x, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.ndim not in (2, 3):
        raise ValueError(
            f"[gemm] {name} must be 2-D [rows, cols] or 3-D [batch, rows, cols], "
            f"got shape {x.shape}"
        )
    return x


def gemm(
    a,
    b,
    c=None,
    *,
    alpha: float = 1.0,
    beta: float = 0.0,
    trans_a: bool = False,
    trans_b: bool = False,
    bias=None,
    activation: str = "none",
) -> np.ndarray:
    """``c = act(alpha * op(a) @ op(b) + beta * c + bias)`` on ember's CPU GEMM kernel.

    a: [M, K] or [Ba, M, K] (``trans_a``: [K, M] / [Ba, K, M]); b: [K, N] or [Bb, K, N]
    (``trans_b``: [N, K] / [Bb, N, K]); float32 or float64, both the same dtype; any strides
    (transposes and slices are read in place, never copied). A batch of 1 (or a 2-D operand)
    broadcasts against the other's batch. ``bias``: None or [N] (added to every row, as
    Linear's bias). ``activation``: "none", "relu", "gelu" (exact, erf) or "gelu_tanh"
    (tanh approximation).

    c: None (allocated; ``beta`` must then be 0) or a C-contiguous writeable array of shape
    [M, N] (2-D operands) / [B, M, N], written in place. With ``beta == 0`` c's old contents
    are never read (NaN in c does not leak). Returns c.

    Differs from BLAS sgemm in taking row-major numpy arrays and a fused bias/activation
    epilogue; errors raise ``ValueError``/``TypeError`` with a ``[gemm]`` prefix.
    """
    if type(a) is not np.ndarray:
        a = np.asarray(a)
    if type(b) is not np.ndarray:
        b = np.asarray(b)
    if trans_a:
        a = a.swapaxes(-1, -2)
    if trans_b:
        b = b.swapaxes(-1, -2)
    if a.ndim == 2 and b.ndim == 2 and (c is None or type(c) is np.ndarray and c.ndim == 2):
        # fast path (small GEMMs are dominated by call overhead); _C.gemm checks the rest
        if c is None:
            if beta != 0.0:
                raise ValueError("[gemm] beta != 0 needs an output c to accumulate into")
            if a.dtype != b.dtype:
                raise TypeError(
                    f"[gemm] a is {a.dtype} but b is {b.dtype} (all operands must "
                    "be float32 or all float64)"
                )
            c = np.empty((a.shape[0], b.shape[1]), a.dtype)
        if bias is not None and type(bias) is not np.ndarray:
            bias = np.asarray(bias, dtype=c.dtype)
        _C.gemm(a[None], b[None], c[None], alpha, beta, bias, activation)
        return c
    a = _operand(a, "a")
    b = _operand(b, "b")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"[gemm] activation must be one of {_ACTIVATIONS}, got {activation!r}")
    batched = a.ndim == 3 or b.ndim == 3
    a3 = a if a.ndim == 3 else a[None]
    b3 = b if b.ndim == 3 else b[None]
    M, N = a3.shape[1], b3.shape[2]
    if a3.shape[0] != b3.shape[0] and 1 not in (a3.shape[0], b3.shape[0]):
        raise ValueError(f"[gemm] batch sizes {a3.shape[0]} and {b3.shape[0]} don't broadcast")
    B = max(a3.shape[0], b3.shape[0])
    if c is None:
        if beta != 0.0:
            raise ValueError("[gemm] beta != 0 needs an output c to accumulate into")
        if a.dtype != b.dtype:
            raise TypeError(
                f"[gemm] a is {a.dtype} but b is {b.dtype} (all operands must be "
                "float32 or all float64)"
            )
        c = np.empty((B, M, N) if batched else (M, N), a.dtype)
    elif not isinstance(c, np.ndarray):
        raise TypeError(f"[gemm] c must be a numpy array, got {type(c).__name__}")
    if c.ndim == 2:
        if batched:
            raise ValueError(f"[gemm] batched operands need a 3-D c, got shape {c.shape}")
        c3 = c[None]
    elif c.ndim == 3:
        c3 = c
    else:
        raise ValueError(f"[gemm] c must be 2-D or 3-D, got shape {c.shape}")
    if bias is not None and not isinstance(bias, np.ndarray):
        bias = np.asarray(bias, dtype=c.dtype)
    _C.gemm(a3, b3, c3, float(alpha), float(beta), bias, activation)
    return c
