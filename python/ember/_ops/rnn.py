"""Recurrent layers on our kernels: one autograd Function per layer and direction that covers the
whole sequence (``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` chain them; the cells run it with T = 1).

Forward, per layer-direction, x [T, B, I]:
  * the input projections of all steps are ONE GEMM, x [T*B, I] @ W_ih^T, with the biases
    fused in its epilogue (b_ih + b_hh for LSTM/RNN; GRU keeps b_hh on the h side, because r
    scales only W_hn h + b_hn);
  * each step is one GEMM h_{t-1} @ W_hh^T accumulated (beta = 1) into that step's slice of the
    projection (LSTM/RNN) or into a [B, 3H] scratch (GRU), then one fused cell kernel
    (``_C.lstm_cell_fwd`` ...) that writes h_t, c_t and the activations backward needs.
  * h_t for every step lives in one [T+1, B, H] buffer in time order (h_0 at index 0, or at
    index T for the reverse direction), so the output is a view of it and the h_{t-1} of every
    step is the contiguous block hs[:T] (forward) or hs[1:] (reverse).
Backward loops over the steps in reverse processing order: the fused cell backward gives the
pre-activation gradients of step t, and ONE GEMM per step carries dh to step t-1
(dgates_t @ W_hh). The weight gradients are then single GEMMs over all steps:
dW_ih = dG^T @ x, dW_hh = dG^T @ hs[prev], dx = dG @ W_ih, db = sum of dG over T*B rows.
The gradient buffers are a per-thread workspace reused across calls (no fresh pages per
backward); what backward returns is freshly allocated.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import _C
from ..autograd.function import Function
from ..tensor import Tensor

_ws = threading.local()


def _c(a):
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _arr(t):
    return None if t is None else _c(t._array)


def _gemm(a, b, c, beta=0.0, bias=None):
    """c = a @ b (+ beta * c) (+ bias) on 2-D arrays, ember's GEMM."""
    _C.gemm(a[None], b[None], c[None], 1.0, beta, bias, "none")


def _workspace(slot: int, shape, dtype) -> np.ndarray:
    """A scratch array of ``shape`` reused across calls on this thread (grows, never shrinks)."""
    bufs = getattr(_ws, "bufs", None)
    if bufs is None:
        bufs = _ws.bufs = {}
    n = int(np.prod(shape))
    key = (slot, np.dtype(dtype).str)
    buf = bufs.get(key)
    if buf is None or buf.size < n:
        buf = bufs[key] = np.empty(max(n, 1), dtype)
    return buf[:n].reshape(shape)


def _order(T: int, reverse: bool):
    """(t, index of h_{t-1} in hs, index of h_t in hs) in processing order."""
    if reverse:
        return [(t, t + 1, t) for t in range(T - 1, -1, -1)]
    return [(t, t, t + 1) for t in range(T)]


def _prev_block(hs, T, reverse):
    """The h_{t-1} of every step t, [T, B, H] in time order."""
    return hs[1:] if reverse else hs[:T]


def _init_state(s, B, H, dt):
    return np.zeros((B, H), dt) if s is None else s


def _weight_grads(ctx, G, x, hprev, w_ih, need, G_h=None):
    """dx, dW_ih, dW_hh, db_ih, db_hh from the pre-activation gradients G [T, B, G*H] (and, for
    GRU, the separate h-side gradients G_h)."""
    T, B, n_in = x.shape
    TB = T * B
    Gf = G.reshape(TB, -1)
    Ghf = Gf if G_h is None else G_h.reshape(TB, -1)
    dx = dwih = dwhh = dbih = dbhh = None
    if need[0]:
        dx = np.empty((TB, n_in), G.dtype)
        _gemm(Gf, w_ih, dx)
        dx = dx.reshape(T, B, n_in)
    if need[3]:
        dwih = np.empty((Gf.shape[1], n_in), G.dtype)
        _gemm(Gf.T, x.reshape(TB, n_in), dwih)
    if need[4]:
        dwhh = np.empty((Ghf.shape[1], hprev.shape[-1]), G.dtype)
        _gemm(Ghf.T, hprev.reshape(TB, -1), dwhh)
    if ctx.has_bias and need[5]:
        dbih = Gf.sum(0)
    if ctx.has_bias and need[6]:
        dbhh = Ghf.sum(0) if G_h is not None else (dbih.copy() if dbih is not None else Gf.sum(0))
    return dx, dwih, dwhh, dbih, dbhh


class LSTMLayer(Function):
    """(x [T,B,I], h0 [B,H] | None, c0 | None, W_ih [4H,I], W_hh [4H,H], b_ih | None, b_hh,
    reverse) -> (out [T,B,H], h_n [B,H], c_n [B,H])."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse):
        ctx.set_materialize_grads(False)
        xa = _c(x._array)
        wih, whh = _c(w_ih._array), _c(w_hh._array)
        T, B, n_in = xa.shape
        H = whh.shape[1]
        dt = xa.dtype
        whh_t = np.ascontiguousarray(whh.T)  # row-major B operand: cheaper packing per step
        bias = None if b_ih is None else _c(b_ih._array) + _c(b_hh._array)
        save = any(ctx.needs_input_grad)
        # without a graph the gates and cells are scratch: reuse warm pages (DESIGN.md 3)
        gates = np.empty((T, B, 4 * H), dt) if save else _workspace(5, (T, B, 4 * H), dt)
        _gemm(xa.reshape(T * B, n_in), wih.T, gates.reshape(T * B, 4 * H), bias=bias)
        hs = np.empty((T + 1, B, H), dt)
        cs = np.empty((T + 1, B, H), dt) if save else _workspace(6, (T + 1, B, H), dt)
        i0 = T if reverse else 0
        hs[i0] = _init_state(_arr(h0), B, H, dt)
        cs[i0] = _init_state(_arr(c0), B, H, dt)
        for t, p, q in _order(T, reverse):
            g = gates[t]
            _gemm(hs[p], whh_t, g, beta=1.0)
            _C.lstm_cell_fwd(g, cs[p], g if save else None, cs[q], hs[q])
        out = Tensor._wrap(hs[:T] if reverse else hs[1:])
        i1 = 0 if reverse else T
        if save:
            ctx.save_for_backward(x, w_ih, w_hh, out)
            ctx.act, ctx.hs, ctx.cs, ctx.xa = gates, hs, cs, xa
            ctx.reverse, ctx.has_bias = reverse, b_ih is not None
        return out, Tensor._wrap(hs[i1].copy()), Tensor._wrap(cs[i1].copy())

    @staticmethod
    def backward(ctx, g_out, g_hn, g_cn):
        ctx.saved_tensors  # noqa: B018 -- raises if x, a weight or the output changed in place
        act, hs, cs, xa = ctx.act, ctx.hs, ctx.cs, ctx.xa
        whh = _c(ctx.saved_tensors[2]._array)
        wih = _c(ctx.saved_tensors[1]._array)
        T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        dt = act.dtype
        dh = _workspace(0, (B, H), dt)
        dc = _workspace(1, (B, H), dt)
        G = _workspace(2, (T, B, 4 * H), dt)
        if g_hn is None:
            dh.fill(0)
        else:
            dh[...] = g_hn._array
        if g_cn is None:
            dc.fill(0)
        else:
            dc[...] = g_cn._array
        gy = None if g_out is None else _c(g_out._array)
        for t, p, q in reversed(_order(T, ctx.reverse)):
            _C.lstm_cell_bwd(act[t], cs[p], cs[q], dh, None if gy is None else gy[t], dc, G[t])
            _gemm(G[t], whh, dh)
        need = ctx.needs_input_grad
        dh0 = dh.copy() if need[1] else None
        dc0 = dc.copy() if need[2] else None
        dx, dwih, dwhh, dbih, dbhh = _weight_grads(
            ctx, G, xa, _prev_block(hs, T, ctx.reverse), wih, need
        )
        return dx, dh0, dc0, dwih, dwhh, dbih, dbhh, None


class GRULayer(Function):
    """(x [T,B,I], h0 [B,H] | None, W_ih [3H,I], W_hh [3H,H], b_ih | None, b_hh | None,
    reverse) -> (out [T,B,H], h_n [B,H])."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, reverse):
        ctx.set_materialize_grads(False)
        xa = _c(x._array)
        wih, whh = _c(w_ih._array), _c(w_hh._array)
        T, B, n_in = xa.shape
        H = whh.shape[1]
        dt = xa.dtype
        whh_t = np.ascontiguousarray(whh.T)  # row-major B operand: cheaper packing per step
        bih, bhh = _arr(b_ih), _arr(b_hh)
        xg = _workspace(5, (T, B, 3 * H), dt)  # read only inside this forward
        _gemm(xa.reshape(T * B, n_in), wih.T, xg.reshape(T * B, 3 * H), bias=bih)
        hs = np.empty((T + 1, B, H), dt)
        hs[T if reverse else 0] = _init_state(_arr(h0), B, H, dt)
        record = any(ctx.needs_input_grad)
        save = np.empty((T, B, 4 * H), dt) if record else None
        hg = _workspace(3, (B, 3 * H), dt)
        for t, p, q in _order(T, reverse):
            _gemm(hs[p], whh_t, hg, bias=bhh)
            _C.gru_cell_fwd(xg[t], hg, hs[p], hs[q], None if save is None else save[t])
        out = Tensor._wrap(hs[:T] if reverse else hs[1:])
        if record:
            ctx.save_for_backward(x, w_ih, w_hh, out)
            ctx.sv, ctx.hs, ctx.xa = save, hs, xa
            ctx.reverse, ctx.has_bias = reverse, b_ih is not None
        return out, Tensor._wrap(hs[0 if reverse else T].copy())

    @staticmethod
    def backward(ctx, g_out, g_hn):
        _, w_ih, w_hh, _ = ctx.saved_tensors
        wih, whh = _c(w_ih._array), _c(w_hh._array)
        sv, hs, xa = ctx.sv, ctx.hs, ctx.xa
        T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        dt = sv.dtype
        dh = _workspace(0, (B, H), dt)
        dh2 = _workspace(1, (B, H), dt)
        Gx = _workspace(2, (T, B, 3 * H), dt)
        Gh = _workspace(4, (T, B, 3 * H), dt)
        if g_hn is None:
            dh.fill(0)
        else:
            dh[...] = g_hn._array
        gy = None if g_out is None else _c(g_out._array)
        for t, p, _q in reversed(_order(T, ctx.reverse)):
            _C.gru_cell_bwd(sv[t], hs[p], dh, None if gy is None else gy[t], Gx[t], Gh[t], dh2)
            _gemm(Gh[t], whh, dh2, beta=1.0)
            dh, dh2 = dh2, dh
        need = ctx.needs_input_grad
        need7 = (need[0], need[1], None, need[2], need[3], need[4], need[5])
        dh0 = dh.copy() if need[1] else None
        dx, dwih, dwhh, dbih, dbhh = _weight_grads(
            ctx, Gx, xa, _prev_block(hs, T, ctx.reverse), wih, need7, G_h=Gh
        )
        return dx, dh0, dwih, dwhh, dbih, dbhh, None


class RNNLayer(Function):
    """(x [T,B,I], h0 [B,H] | None, W_ih [H,I], W_hh [H,H], b_ih | None, b_hh | None, reverse,
    nonlinearity) -> (out [T,B,H], h_n [B,H])."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, reverse, nonlinearity):
        ctx.set_materialize_grads(False)
        xa = _c(x._array)
        wih, whh = _c(w_ih._array), _c(w_hh._array)
        T, B, n_in = xa.shape
        H = whh.shape[1]
        dt = xa.dtype
        whh_t = np.ascontiguousarray(whh.T)  # row-major B operand: cheaper packing per step
        bias = None if b_ih is None else _c(b_ih._array) + _c(b_hh._array)
        pre = _workspace(5, (T, B, H), dt)  # read only inside this forward
        _gemm(xa.reshape(T * B, n_in), wih.T, pre.reshape(T * B, H), bias=bias)
        hs = np.empty((T + 1, B, H), dt)
        hs[T if reverse else 0] = _init_state(_arr(h0), B, H, dt)
        for t, p, q in _order(T, reverse):
            _gemm(hs[p], whh_t, pre[t], beta=1.0)
            _C.rnn_cell_fwd(pre[t], hs[q], nonlinearity)
        out = Tensor._wrap(hs[:T] if reverse else hs[1:])
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(x, w_ih, w_hh, out)
            ctx.hs, ctx.xa, ctx.nl = hs, xa, nonlinearity
            ctx.reverse, ctx.has_bias = reverse, b_ih is not None
        return out, Tensor._wrap(hs[0 if reverse else T].copy())

    @staticmethod
    def backward(ctx, g_out, g_hn):
        _, w_ih, w_hh, _ = ctx.saved_tensors
        wih, whh = _c(w_ih._array), _c(w_hh._array)
        hs, xa = ctx.hs, ctx.xa
        T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        dt = hs.dtype
        dh = _workspace(0, (B, H), dt)
        G = _workspace(2, (T, B, H), dt)
        if g_hn is None:
            dh.fill(0)
        else:
            dh[...] = g_hn._array
        gy = None if g_out is None else _c(g_out._array)
        for t, _p, q in reversed(_order(T, ctx.reverse)):
            _C.rnn_cell_bwd(hs[q], dh, None if gy is None else gy[t], G[t], ctx.nl)
            _gemm(G[t], whh, dh)
        need = ctx.needs_input_grad
        dh0 = dh.copy() if need[1] else None
        need7 = (need[0], need[1], None, need[2], need[3], need[4], need[5])
        dx, dwih, dwhh, dbih, dbhh = _weight_grads(
            ctx, G, xa, _prev_block(hs, T, ctx.reverse), wih, need7
        )
        return dx, dh0, dwih, dwhh, dbih, dbhh, None, None
