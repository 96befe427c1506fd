"""``MultiheadAttention`` (PyTorch's names, parameters, initialisation and masks)."""

from __future__ import annotations

import math

import numpy as np

from ... import _ops, creation
from ..._device import move
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..parameter import Parameter
from .linear import Linear
from .module import Module


def _additive(mask, name: str, dtype) -> np.ndarray | None:
    """An MHA mask (bool: True = NOT allowed; float: added) as an additive numpy array."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"[MultiheadAttention] {name} must be a Tensor or None")
    a = mask.cpu()._array if mask.is_cuda else mask._array
    if a.dtype == np.bool_:
        return np.where(a, dtype.type(-np.inf), dtype.type(0))
    if a.dtype.kind != "f":
        raise TypeError(f"[MultiheadAttention] {name} must be bool or float, got {a.dtype}")
    return a.astype(dtype)


class MultiheadAttention(Module):
    """Multi-head attention (Vaswani et al., 2017) with ``torch.nn.MultiheadAttention``'s API.

    Parameters as PyTorch: ``in_proj_weight`` [3E, E] (xavier_uniform_) when query, key and
    value share E, else ``q_proj_weight`` [E, E], ``k_proj_weight`` [E, kdim] and
    ``v_proj_weight`` [E, vdim]; ``in_proj_bias`` [3E] (zeros), ``out_proj`` (a Linear, bias
    zeros), ``bias_k`` / ``bias_v`` [1, 1, E] (xavier_normal_) with ``add_bias_kv``.

    forward(query [L, N, E] (or [N, L, E] with batch_first, or unbatched [L, E]), key and
    value [S, N, kdim / vdim]) -> (output like query, weights [N, L, S] averaged over heads,
    [N, H, L, S] with average_attn_weights=False, or None with need_weights=False).
    key_padding_mask [N, S] / attn_mask [L, S] or [N*H, L, S]: bool True = NOT allowed (as
    PyTorch's MHA; note SDPA's bool masks mean the opposite) or float (added to the scores).
    is_causal is a hint that attn_mask is the causal mask; attn_mask is required with it.

    need_weights=False runs the fused flash-style kernel (F.scaled_dot_product_attention);
    need_weights=True computes the weights with matmul + softmax (a composite path that stores
    them). Differs from PyTorch: fully-masked query rows give 0 output and weights, not NaN.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(
                f"[MultiheadAttention] embed_dim and num_heads must be greater than 0, got "
                f"embed_dim={embed_dim} and num_heads={num_heads}"
            )
        if embed_dim % num_heads:
            raise ValueError(
                f"[MultiheadAttention] embed_dim ({embed_dim}) must be divisible by num_heads "
                f"({num_heads})"
            )
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        self.add_zero_attn = add_zero_attn
        kw = {"device": device, "dtype": dtype}
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(creation.empty(3 * embed_dim, embed_dim, **kw))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = Parameter(creation.empty(embed_dim, embed_dim, **kw))
            self.k_proj_weight = Parameter(creation.empty(embed_dim, self.kdim, **kw))
            self.v_proj_weight = Parameter(creation.empty(embed_dim, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(creation.empty(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, **kw)
        if add_bias_kv:
            self.bias_k = Parameter(creation.empty(1, 1, embed_dim, **kw))
            self.bias_v = Parameter(creation.empty(1, 1, embed_dim, **kw))
        else:
            self.bias_k = self.bias_v = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"

    def _projections(self):
        E = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:E], b[E : 2 * E], b[2 * E :])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            return (w[:E], bq), (w[E : 2 * E], bk), (w[2 * E :], bv)
        return (self.q_proj_weight, bq), (self.k_proj_weight, bk), (self.v_proj_weight, bv)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        op = "MultiheadAttention"
        batched = query.ndim == 3
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(
                f"[{op}] query, key and value must all be 3-D (batched) or 2-D (unbatched), "
                f"got {tuple(query.shape)}, {tuple(key.shape)} and {tuple(value.shape)}"
            )
        if is_causal and attn_mask is None:
            raise RuntimeError(f"[{op}] need attn_mask if specifying the is_causal hint")
        if not batched:
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        # [N, L, E] from here on
        N, L, E = query.shape
        S = key.shape[1]
        H, hd = self.num_heads, self.head_dim
        if E != self.embed_dim:
            raise ValueError(f"[{op}] query has embed dim {E}, expected {self.embed_dim}")
        if key.shape[-1] != self.kdim or value.shape[-1] != self.vdim:
            raise ValueError(
                f"[{op}] key / value have dims {key.shape[-1]} / {value.shape[-1]}, expected "
                f"{self.kdim} / {self.vdim}"
            )
        if key.shape[:2] != value.shape[:2] or key.shape[0] != N:
            raise ValueError(
                f"[{op}] key {tuple(key.shape)} and value {tuple(value.shape)} must have the "
                f"query's batch size {N} and the same length"
            )
        dt = query._array.dtype
        am = _additive(attn_mask, "attn_mask", dt)
        if am is not None:
            if am.shape == (L, S):
                am = am.reshape(1, 1, L, S)
            elif am.shape == (N * H, L, S):
                am = am.reshape(N, H, L, S)
            else:
                raise ValueError(
                    f"[{op}] attn_mask must have shape {(L, S)} or {(N * H, L, S)}, got "
                    f"{tuple(am.shape)}"
                )
        kpm = _additive(key_padding_mask, "key_padding_mask", dt)
        if kpm is not None:
            if kpm.shape != (N, S):
                raise ValueError(
                    f"[{op}] key_padding_mask must have shape {(N, S)}, got {tuple(kpm.shape)}"
                )
            kpm = kpm.reshape(N, 1, 1, S)
        (wq, bq), (wk, bk), (wv, bv) = self._projections()
        q = F.linear(query, wq, bq)
        k = F.linear(key, wk, bk)
        v = F.linear(value, wv, bv)

        def pad_masks(am, kpm):  # one more key that every query may see
            if am is not None:
                am = np.concatenate([am, np.zeros(am.shape[:-1] + (1,), dt)], -1)
            if kpm is not None:
                kpm = np.concatenate([kpm, np.zeros(kpm.shape[:-1] + (1,), dt)], -1)
            return am, kpm

        if self.bias_k is not None:
            k = _ops.cat([k, self.bias_k.expand(N, 1, E)], 1)
            v = _ops.cat([v, self.bias_v.expand(N, 1, E)], 1)
            am, kpm = pad_masks(am, kpm)
        q = q.reshape(N, L, H, hd).transpose(1, 2)
        k = k.reshape(N, k.shape[1], H, hd).transpose(1, 2)
        v = v.reshape(N, v.shape[1], H, hd).transpose(1, 2)
        if self.add_zero_attn:
            z = creation.zeros(N, H, 1, hd, dtype=q.dtype, device=q.device)
            k = _ops.cat([k, z], 2)
            v = _ops.cat([v, z], 2)
            am, kpm = pad_masks(am, kpm)
        mask = am if kpm is None else (kpm if am is None else am + kpm)
        p = self.dropout if self.training else 0.0
        if need_weights:
            o, w = F._attention_composite(q, k, v, mask, False, p, 1.0 / math.sqrt(hd))
            if average_attn_weights:
                w = w.mean(1)
        else:
            mt = None
            if mask is not None:
                mt = Tensor._wrap(move(mask, q.device) if q.is_cuda else mask)
            # As PyTorch: with the is_causal hint and no padding mask, the kernel's own causal
            # masking replaces attn_mask (it then skips the tiles above the diagonal).
            causal = bool(is_causal) and kpm is None and self.bias_k is None
            causal = causal and not self.add_zero_attn
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if causal else mt, dropout_p=p, is_causal=causal
            )
            w = None
        o = self.out_proj(o.transpose(1, 2).reshape(N, L, E))
        if not batched:
            return o.squeeze(0), (None if w is None else w.squeeze(0))
        if not self.batch_first:
            o = o.transpose(0, 1)
        return o, w
