"""Scaled-dot-product attention on our flash-style CPU kernels (``_C.attention_fwd/_bwd``).

query [..., Lq, D], key [..., Lk, D], value [..., Lk, Dv]: the leading (batch) dims broadcast
against each other and are flattened to one dim N for the kernel, which never stores the
Lq x Lk score matrix (tiles + online softmax; the backward recomputes the scores from the saved
log-sum-exp). The mask is prepared here: a boolean mask (True = take part) becomes an additive
0 / -inf mask in the data dtype, and its batch broadcast is expressed as (index / div) % M so a
[B, 1, Lq, Lk] mask for [B, H] heads is not copied H times. The mask gets no gradient.
Fully-masked rows give 0 output and 0 gradients (PyTorch gives NaN).
"""

from __future__ import annotations

import math

import numpy as np

from .. import _C
from ..autograd.function import Function
from ..tensor import Tensor
from ._common import unbroadcast

_OP = "scaled_dot_product_attention"


def prepare_mask(mask, bshape: tuple, lq: int, lk: int, dtype) -> tuple:
    """(array [M, Lq or 1, Lk] additive in ``dtype``, div) for the kernel, or (None, 1).

    ``mask`` is a numpy array (bool: True = take part; float: added to the scores),
    broadcastable to bshape + (Lq, Lk) without enlarging it (ValueError otherwise)."""
    if mask is None:
        return None, 1
    target = tuple(bshape) + (lq, lk)
    bad = mask.ndim > len(target) or mask.ndim < 1
    if not bad:
        try:
            bad = np.broadcast_shapes(mask.shape, target) != target
        except ValueError:
            bad = True
    if bad:
        raise ValueError(
            f"[{_OP}] attn_mask of shape {tuple(mask.shape)} does not broadcast to the attention "
            f"shape {target} ([*batch, Lq, Lk])"
        )
    if mask.dtype == np.bool_:
        m = np.where(mask, dtype.type(0), dtype.type(-np.inf))
    elif mask.dtype.kind == "f":
        m = mask.astype(dtype, copy=False)
    else:
        raise TypeError(f"[{_OP}] attn_mask must be bool or floating point, got {mask.dtype}")
    m = m.reshape((1,) * (len(target) - m.ndim) + m.shape)
    if m.shape[-1] != lk:
        m = np.broadcast_to(m, m.shape[:-1] + (lk,))
    rows = m.shape[-2]
    lead = [i for i, s in enumerate(m.shape[:-2]) if s != 1]
    if not lead:
        mcount, div = 1, 1
    elif lead == list(range(lead[0], lead[-1] + 1)):  # one run of batch dims: (n / div) % M
        mcount = math.prod(bshape[lead[0] : lead[-1] + 1])
        div = math.prod(bshape[lead[-1] + 1 :])
    else:  # e.g. [B, 1, C] against [B, H, C]: materialise the batch broadcast
        m = np.broadcast_to(m, tuple(bshape) + (rows, lk))
        mcount, div = math.prod(bshape), 1
    return np.ascontiguousarray(m).reshape(mcount, rows, lk), div


def _flat(a, bshape, n):
    return np.ascontiguousarray(np.broadcast_to(a, tuple(bshape) + a.shape[-2:])).reshape(
        (n,) + a.shape[-2:]
    )


class ScaledDotProductAttention(Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, mask_div, scale, causal):
        qa, ka, va = q._array, k._array, v._array
        bshape = np.broadcast_shapes(qa.shape[:-2], ka.shape[:-2], va.shape[:-2])
        n = math.prod(bshape)
        q3, k3, v3 = _flat(qa, bshape, n), _flat(ka, bshape, n), _flat(va, bshape, n)
        lq, dv = qa.shape[-2], va.shape[-1]
        out = np.empty((n, lq, dv), qa.dtype)
        lse = np.empty((n, lq, 2), qa.dtype)
        _C.attention_fwd(q3, k3, v3, mask, mask_div, float(scale), bool(causal), out, lse)
        ctx.save_for_backward(q, k, v)  # version-checked: in-place edits are caught
        ctx.arrays = (q3, k3, v3, out, lse, mask)
        ctx.meta = (bshape, mask_div, float(scale), bool(causal))
        return Tensor._wrap(out.reshape(tuple(bshape) + (lq, dv)))

    @staticmethod
    def backward(ctx, g):
        q, k, v = ctx.saved_tensors
        q3, k3, v3, out, lse, mask = ctx.arrays
        bshape, mask_div, scale, causal = ctx.meta
        g3 = np.ascontiguousarray(g._array, dtype=out.dtype).reshape(out.shape)
        # allocated in the batch shape, the kernel writing through [N, L, D] views: a gradient
        # with nothing to unbroadcast is then returned as its own array, which autograd moves
        # into .grad instead of copying (3 x 4 MiB per step at B=4, H=8, S=512, D=64)
        gq, gk, gv = (np.empty(tuple(bshape) + a.shape[1:], a.dtype) for a in (q3, k3, v3))
        _C.attention_bwd(
            q3, k3, v3, out, lse, g3, mask, mask_div, scale, causal,
            gq.reshape(q3.shape), gk.reshape(k3.shape), gv.reshape(v3.shape),
        )  # fmt: skip
        need = ctx.needs_input_grad
        grads = []
        for t, ga, nd in ((q, gq, need[0]), (k, gk, need[1]), (v, gv, need[2])):
            grads.append(unbroadcast(ga, t.shape) if nd else None)
        return grads[0], grads[1], grads[2], None, None, None, None


def scaled_dot_product_attention(q, k, v, mask, mask_div, scale, causal):
    """Checked by ``ember.nn.functional.scaled_dot_product_attention``; runs the kernel."""
    return ScaledDotProductAttention.apply(q, k, v, mask, mask_div, scale, causal)
