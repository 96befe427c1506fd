"""Recurrent layers: the fused cell kernels (_C.lstm_cell_*, gru_cell_*, rnn_cell_*) and
nn.RNN / nn.LSTM / nn.GRU / the cells against a plain numpy reference (below, written from
PyTorch's equations, dtype-generic: float64 is the spec, float32 the "plain float32"
baseline of DESIGN.md section 4), gradcheck in float64, dropout between layers, PyTorch's
parameter names, errors, and an optional PyTorch cross-check."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember import _C
from ember._ops.rnn import GRULayer, LSTMLayer, RNNLayer
from ember.autograd import gradcheck

MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


# ------------------------------------------------------------------------ numpy reference
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def ref_step(mode, x, h, c, wih, whh, bih, bhh):
    """One step from PyTorch's equations. x [B, NI], h, c [B, H]. Returns (h', c', cache)."""
    H = h.shape[1]
    xg = x @ wih.T + (0 if bih is None else bih)
    hg = h @ whh.T + (0 if bhh is None else bhh)
    if mode == "LSTM":
        a = xg + hg
        i, f = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H])
        g, o = np.tanh(a[:, 2 * H : 3 * H]), sigmoid(a[:, 3 * H :])
        c2 = f * c + i * g
        return o * np.tanh(c2), c2, (i, f, g, o, c2)
    if mode == "GRU":
        r = sigmoid(xg[:, :H] + hg[:, :H])
        z = sigmoid(xg[:, H : 2 * H] + hg[:, H : 2 * H])
        n = np.tanh(xg[:, 2 * H :] + r * hg[:, 2 * H :])
        return (1 - z) * n + z * h, None, (r, z, n, hg[:, 2 * H :])
    a = xg + hg
    h2 = np.tanh(a) if mode == "RNN_TANH" else np.maximum(a, 0)
    return h2, None, (h2,)


def ref_step_vjp(mode, dh, dc, x, h, c, wih, whh, cache):
    """Gradients of one step: returns (dx, dh_prev, dc_prev, dW_ih, dW_hh, db_ih, db_hh)."""
    if mode == "LSTM":
        i, f, g, o, c2 = cache
        tc = np.tanh(c2)
        dct = dc + dh * o * (1 - tc**2)
        da = np.concatenate(
            [dct * g * i * (1 - i), dct * c * f * (1 - f), dct * i * (1 - g**2),
             dh * tc * o * (1 - o)], axis=1)  # fmt: skip
        return (da @ wih, da @ whh, dct * f, da.T @ x, da.T @ h, da.sum(0), da.sum(0))
    if mode == "GRU":
        r, z, n, hn = cache
        dn = dh * (1 - z) * (1 - n**2)
        dz = dh * (h - n) * z * (1 - z)
        dr = dn * hn * r * (1 - r)
        dxg = np.concatenate([dr, dz, dn], axis=1)
        dhg = np.concatenate([dr, dz, dn * r], axis=1)
        return (dxg @ wih, dh * z + dhg @ whh, None, dxg.T @ x, dhg.T @ h, dxg.sum(0),
                dhg.sum(0))  # fmt: skip
    (h2,) = cache
    da = dh * (1 - h2**2) if mode == "RNN_TANH" else dh * (h2 > 0)
    return da @ wih, da @ whh, None, da.T @ x, da.T @ h, da.sum(0), da.sum(0)


def ref_layer(mode, x, h0, c0, w, reverse):
    """x [T, B, NI] -> out [T, B, H], h_n, c_n, and the caches of each step (time order)."""
    T = x.shape[0]
    h, c = h0, c0
    out, caches = [None] * T, [None] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        hp, cp = h, c
        h, c, cache = ref_step(mode, x[t], h, c, *w)
        out[t], caches[t] = h, (hp, cp, cache)
    return np.stack(out), h, c, caches


def ref_layer_vjp(mode, gout, ghn, gcn, x, w, caches, reverse):
    T = x.shape[0]
    dh, dc = ghn.copy(), None if gcn is None else gcn.copy()
    dx = np.zeros_like(x)
    dw = [np.zeros_like(a) for a in w]
    for t in range(T) if reverse else range(T - 1, -1, -1):
        hp, cp, cache = caches[t]
        r = ref_step_vjp(mode, dh + gout[t], dc, x[t], hp, cp, w[0], w[1], cache)
        dx[t], dh, dc = r[0], r[1], r[2]
        for k in range(4):
            if dw[k] is not None:
                dw[k] += r[3 + k]
    return dx, dh, dc, dw


def ref_rnn(mode, x, h0, c0, params, L, D, masks=None):
    """Multi-layer, maybe bidirectional, time-major x [T, B, NI]; params[l][d] = (W_ih, W_hh,
    b_ih, b_hh); masks[l] multiplies layer l's output (dropout). Returns out, h_n, c_n, tape."""
    tape, hn, cn = [], [], []
    inp = x
    for layer in range(L):
        outs = []
        for d in range(D):
            k = layer * D + d
            o, h, c, caches = ref_layer(
                mode, inp, h0[k], None if c0 is None else c0[k], params[layer][d], d == 1
            )
            outs.append(o)
            hn.append(h)
            cn.append(c)
            tape.append((inp, caches))
        inp = np.concatenate(outs, axis=2)
        if masks is not None and layer < L - 1:
            inp = inp * masks[layer]
    return inp, np.stack(hn), (np.stack(cn) if c0 is not None else None), tape


def ref_rnn_vjp(mode, gout, ghn, gcn, params, L, D, tape, masks=None):
    """Gradients of ref_rnn: (dx, dh0, dc0, dparams like params)."""
    H = ghn.shape[-1]
    dh0, dc0 = np.zeros_like(ghn), None if gcn is None else np.zeros_like(gcn)
    dparams = [[None] * D for _ in range(L)]
    g = gout
    for layer in range(L - 1, -1, -1):
        if masks is not None and layer < L - 1:
            g = g * masks[layer]
        dinp = 0
        for d in range(D):
            k = layer * D + d
            inp, caches = tape[k]
            dx, dh, dc, dw = ref_layer_vjp(
                mode, g[..., d * H : (d + 1) * H], ghn[k], None if gcn is None else gcn[k],
                inp, params[layer][d], caches, d == 1,
            )  # fmt: skip
            dinp = dinp + dx
            dh0[k] = dh
            if dc0 is not None:
                dc0[k] = dc
            dparams[layer][d] = dw
        g = dinp
    return g, dh0, dc0, dparams


# ------------------------------------------------------------------------ helpers
def _t(a, grad=False):
    t = ember.from_numpy(np.ascontiguousarray(a))
    return t.requires_grad_() if grad else t


def _np(t):
    return t.detach().numpy()


def _close32(got, ref, plain, floor=2e-7):
    """float32 error at most 2x that of the same computation in plain float32 numpy."""
    got, ref, plain = (np.asarray(a, np.float64) for a in (got, ref, plain))
    err = np.abs(got - ref).max(initial=0)
    base = np.abs(plain - ref).max(initial=0)
    fl = floor * max(1.0, np.abs(ref).max(initial=0))
    assert err <= 2 * base + fl, (err, base, fl)


def _check(got, ref64, ref32, dtype):
    if dtype == np.float64:
        np.testing.assert_allclose(got, ref64, rtol=1e-10, atol=1e-12)
    else:
        _close32(got, ref64, ref32)


def _module(mode, NI, H, **kw):
    if mode.startswith("RNN_"):
        return nn.RNN(NI, H, nonlinearity=mode[4:].lower(), **kw)
    return getattr(nn, mode)(NI, H, **kw)


def _params_of(m, L, D, dtype):
    sd = {k: v.detach().numpy().astype(dtype) for k, v in m.state_dict().items()}
    out = []
    for layer in range(L):
        row = []
        for d in range(D):
            s = f"_l{layer}" + ("_reverse" if d else "")
            row.append([sd.get(n + s) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")])
        out.append(row)
    return out


# ------------------------------------------------------------------------ cell kernels
CELL_SHAPES = [(1, 1), (3, 7), (2, 8), (5, 20), (4, 67), (64, 300)]  # (B, H): tails, threads


def _gates(rng, shape, dtype):
    a = rng.standard_normal(shape) * 2.5
    a.flat[0] = 12.0  # saturated gate
    return a.astype(dtype)


@pytest.mark.parametrize("B,H", CELL_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_cell_kernel(rng, cpu_path, poison, B, H, dtype):
    gates = _gates(rng, (B, 4 * H), dtype)
    cp = rng.standard_normal((B, H)).astype(dtype)
    act, c, h = np.empty_like(gates), np.empty_like(cp), np.empty_like(cp)
    _C.lstm_cell_fwd(gates, cp, act, c, h)

    def ref(gt, cpv):
        i, f = sigmoid(gt[:, :H]), sigmoid(gt[:, H : 2 * H])
        g, o = np.tanh(gt[:, 2 * H : 3 * H]), sigmoid(gt[:, 3 * H :])
        c2 = f * cpv + i * g
        return np.concatenate([i, f, g, o], 1), c2, o * np.tanh(c2)

    r64 = ref(gates.astype(np.float64), cp.astype(np.float64))
    r32 = ref(gates, cp)
    for got, a, b in zip((act, c, h), r64, r32):
        _check(got, a, b, dtype)
    # in place (act is gates) gives the same
    g2, c3, h3 = gates.copy(), np.empty_like(cp), np.empty_like(cp)
    _C.lstm_cell_fwd(g2, cp, g2, c3, h3)
    np.testing.assert_array_equal(g2, act)
    np.testing.assert_array_equal(h3, h)
    # act = None (inference): nothing saved, same c and h
    c4, h4 = np.empty_like(cp), np.empty_like(cp)
    _C.lstm_cell_fwd(gates, cp, None, c4, h4)
    np.testing.assert_array_equal(c4, c)
    np.testing.assert_array_equal(h4, h)
    # backward from the saved activations, with and without dy
    dh = rng.standard_normal((B, H)).astype(dtype)
    dy = rng.standard_normal((B, H)).astype(dtype)
    dc0 = rng.standard_normal((B, H)).astype(dtype)

    def ref_b(actv, cpv, cv, dhv, dcv):
        i, f, g, o = (actv[:, k * H : (k + 1) * H] for k in range(4))
        tc = np.tanh(cv)
        dct = dcv + dhv * o * (1 - tc * tc)
        d = [dct * g * i * (1 - i), dct * cpv * f * (1 - f), dct * i * (1 - g * g),
             dhv * tc * o * (1 - o)]  # fmt: skip
        return np.concatenate(d, 1), dct * f

    for use_dy in (False, True):
        dc = dc0.copy()
        dg = np.empty_like(gates)
        _C.lstm_cell_bwd(act, cp, c, dh, dy if use_dy else None, dc, dg)
        tot = dh + dy if use_dy else dh
        R64 = ref_b(act.astype(np.float64), cp.astype(np.float64), c.astype(np.float64),
                    tot.astype(np.float64), dc0.astype(np.float64))  # fmt: skip
        R32 = ref_b(act, cp, c, tot, dc0)
        _check(dg, R64[0], R32[0], dtype)
        _check(dc, R64[1], R32[1], dtype)


@pytest.mark.parametrize("B,H", CELL_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gru_cell_kernel(rng, cpu_path, poison, B, H, dtype):
    xg = _gates(rng, (B, 3 * H), dtype)
    hg = _gates(rng, (B, 3 * H), dtype)
    hp = rng.standard_normal((B, H)).astype(dtype)
    h, save = np.empty_like(hp), np.empty((B, 4 * H), dtype)
    _C.gru_cell_fwd(xg, hg, hp, h, save)

    def ref(xv, hv, hpv):
        r = sigmoid(xv[:, :H] + hv[:, :H])
        z = sigmoid(xv[:, H : 2 * H] + hv[:, H : 2 * H])
        n = np.tanh(xv[:, 2 * H :] + r * hv[:, 2 * H :])
        return (1 - z) * n + z * hpv, np.concatenate([r, z, n, hv[:, 2 * H :]], 1)

    r64 = ref(xg.astype(np.float64), hg.astype(np.float64), hp.astype(np.float64))
    r32 = ref(xg, hg, hp)
    _check(h, r64[0], r32[0], dtype)
    _check(save, r64[1], r32[1], dtype)
    h2 = np.empty_like(hp)
    _C.gru_cell_fwd(xg, hg, hp, h2, None)
    np.testing.assert_array_equal(h2, h)

    dh = rng.standard_normal((B, H)).astype(dtype)
    dy = rng.standard_normal((B, H)).astype(dtype)

    def ref_b(sv, hpv, d):
        r, z, n, hn = (sv[:, k * H : (k + 1) * H] for k in range(4))
        dn = d * (1 - z) * (1 - n * n)
        dz = d * (hpv - n) * z * (1 - z)
        dr = dn * hn * r * (1 - r)
        return (np.concatenate([dr, dz, dn], 1), np.concatenate([dr, dz, dn * r], 1), d * z)

    for use_dy in (False, True):
        dxg, dhg, dhp = np.empty_like(xg), np.empty_like(xg), np.empty_like(hp)
        _C.gru_cell_bwd(save, hp, dh, dy if use_dy else None, dxg, dhg, dhp)
        tot = dh + dy if use_dy else dh
        R64 = ref_b(save.astype(np.float64), hp.astype(np.float64), tot.astype(np.float64))
        R32 = ref_b(save, hp, tot)
        for got, a, b in zip((dxg, dhg, dhp), R64, R32):
            _check(got, a, b, dtype)


@pytest.mark.parametrize("B,H", CELL_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nl", ["tanh", "relu"])
def test_rnn_cell_kernel(rng, cpu_path, poison, B, H, dtype, nl):
    pre = _gates(rng, (B, H), dtype)
    h = np.empty_like(pre)
    _C.rnn_cell_fwd(pre, h, nl)
    f = np.tanh if nl == "tanh" else (lambda a: np.maximum(a, 0))
    _check(h, f(pre.astype(np.float64)), f(pre), dtype)
    dh = rng.standard_normal((B, H)).astype(dtype)
    dy = rng.standard_normal((B, H)).astype(dtype)
    d = np.empty_like(pre)
    _C.rnn_cell_bwd(h, dh, dy, d, nl)
    tot = dh + dy
    want = tot * (1 - h * h) if nl == "tanh" else tot * (h > 0)
    want64 = tot.astype(np.float64) * ((1 - h.astype(np.float64) ** 2) if nl == "tanh" else (h > 0))
    _check(d, want64, want, dtype)
    # in place (dpre is dh) gives what out of place gives
    d1, d2 = np.empty_like(dh), dh.copy()
    _C.rnn_cell_bwd(h, dh, None, d1, nl)
    _C.rnn_cell_bwd(h, d2, None, d2, nl)
    np.testing.assert_array_equal(d2, d1)


def _special_values():
    v = [0.0, -0.0, 1e-40, -1e-38, 1e-30, 1e-8, -3e-6, 1e-4, 0.01, -0.1, 0.3, 0.6, 0.62499,
         0.625, -0.625, 0.62501, 0.7, 1.0, -2.0, 5.0, 9.0, 9.1, -15.0, 20.0, 44.0, 45.0, 88.0,
         89.0, 100.0, -100.0, 1e30, -1e30]  # fmt: skip
    rng = np.random.default_rng(5)
    logs = 10.0 ** rng.uniform(-30, 2.2, 4000)
    return np.concatenate([v, logs, -logs, rng.uniform(-3, 3, 4000)]).astype(np.float32)


def test_tanh_accuracy_near_zero_and_large(cpu_path):
    """tanh through rnn_cell_fwd: relative error <= 3 * 2^-23 everywhere, including the tiny
    inputs where 1 - 2/(e^{2x} + 1) would lose every digit."""
    x = _special_values().reshape(1, -1)
    h = np.empty_like(x)
    _C.rnn_cell_fwd(x, h, "tanh")
    ref = np.tanh(x.astype(np.float64))
    rel = np.abs(h - ref) / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)
    assert rel.max() <= 3 * 2.0**-23, rel.max()  # relative 3 * 2^-23: ~3 ulp
    assert np.signbit(h[0, 1])  # tanh(-0) = -0
    inf = np.array([[np.inf, -np.inf, np.nan]], np.float32)
    out = np.empty_like(inf)
    _C.rnn_cell_fwd(inf, out, "tanh")
    assert out[0, 0] == 1 and out[0, 1] == -1 and np.isnan(out[0, 2])


def test_sigmoid_accuracy(cpu_path):
    """sigmoid through the LSTM activations (act = i, f, g, o): relative error within 4 ulp
    down to sigmoid(-80) ~ 1.8e-35, exact 0 / 1 at the saturated ends, NaN propagated."""
    x = np.concatenate([np.linspace(-80, 30, 7999, dtype=np.float32), [np.nan]])
    H = x.size
    gates = np.tile(x, 4).reshape(1, 4 * H).astype(np.float32)
    act, c, h = np.empty_like(gates), np.empty((1, H), np.float32), np.empty((1, H), np.float32)
    _C.lstm_cell_fwd(gates, np.zeros((1, H), np.float32), act, c, h)
    ref = 1 / (1 + np.exp(-x[:-1].astype(np.float64)))
    for k in (0, 1, 3):
        got = act[0, k * H : (k + 1) * H]
        rel = np.abs(got[:-1] - ref) / ref
        assert rel.max() <= 4 * 2.0**-23, rel.max()
        assert np.isnan(got[-1])
    ext = np.array([[-np.inf, np.inf, -200.0, 200.0] * 4], np.float32)
    a2 = np.empty_like(ext)
    _C.lstm_cell_fwd(ext, np.zeros((1, 4), np.float32), a2, np.empty((1, 4), np.float32),
                     np.empty((1, 4), np.float32))  # fmt: skip
    np.testing.assert_array_equal(a2[0, :4], [0, 1, 0, 1])


# ------------------------------------------------------------------------ modules
LAYOUTS = [(False, False), (True, True), (False, True)]  # (batch_first, hx given)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first,with_hx", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_module_vs_reference(
    rng, cpu_path, poison, mode, L, bidirectional, batch_first, with_hx, dtype
):
    T, B, NI, H = 5, 3, 4, 9
    D = 2 if bidirectional else 1
    ember.manual_seed(int(rng.integers(1 << 30)))
    m = _module(mode, NI, H, num_layers=L, bidirectional=bidirectional, batch_first=batch_first)
    if dtype == np.float64:
        m = m.double()
    x = rng.standard_normal((T, B, NI)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    lstm = mode == "LSTM"
    xin = x.transpose(1, 0, 2) if batch_first else x
    xt = _t(xin, True)
    ht, ct = _t(h0, True), _t(c0, True)
    hx = ((ht, ct) if lstm else ht) if with_hx else None
    out, hn = m(xt, hx)
    if lstm:
        hn, cn = hn
    gout = rng.standard_normal(out.shape).astype(dtype)
    ghn = rng.standard_normal(hn.shape).astype(dtype)
    gcn = rng.standard_normal(hn.shape).astype(dtype)
    loss = (out * _t(gout)).sum() + (hn * _t(ghn)).sum()
    if lstm:
        loss = loss + (cn * _t(gcn)).sum()
    loss.backward()

    gout_tm = gout.transpose(1, 0, 2) if batch_first else gout
    res = {}
    for rdt in (np.float64, dtype):
        P = _params_of(m, L, D, rdt)
        h0r = h0.astype(rdt) if with_hx else np.zeros_like(h0, rdt)
        c0r = (c0.astype(rdt) if with_hx else np.zeros_like(c0, rdt)) if lstm else None
        o, hnr, cnr, tape = ref_rnn(mode, x.astype(rdt), h0r, c0r, P, L, D)
        grads = ref_rnn_vjp(mode, gout_tm.astype(rdt), ghn.astype(rdt),
                            gcn.astype(rdt) if lstm else None, P, L, D, tape)  # fmt: skip
        res[rdt] = (o, hnr, cnr, grads)
    r64, r32 = res[np.float64], res[dtype]
    o_got = _np(out).transpose(1, 0, 2) if batch_first else _np(out)
    _check(o_got, r64[0], r32[0], dtype)
    _check(_np(hn), r64[1], r32[1], dtype)
    if lstm:
        _check(_np(cn), r64[2], r32[2], dtype)
    dx = _np(xt.grad).transpose(1, 0, 2) if batch_first else _np(xt.grad)
    _check(dx, r64[3][0], r32[3][0], dtype)
    if with_hx:
        _check(_np(ht.grad), r64[3][1], r32[3][1], dtype)
        if lstm:
            _check(_np(ct.grad), r64[3][2], r32[3][2], dtype)
    named = dict(m.named_parameters())
    for layer in range(L):
        for d in range(D):
            s = f"_l{layer}" + ("_reverse" if d else "")
            for k, n in enumerate(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
                got = _np(named[n + s].grad)
                _check(got, r64[3][3][layer][d][k], r32[3][3][layer][d][k], dtype)


@pytest.mark.parametrize("mode", MODES)
def test_no_bias_and_unbatched(rng, cpu_path, mode):
    T, NI, H = 4, 3, 5
    m = _module(mode, NI, H, bias=False, num_layers=2, bidirectional=True).double()
    assert all("bias" not in k for k in m.state_dict())
    x = rng.standard_normal((T, NI))
    lstm = mode == "LSTM"
    h0 = rng.standard_normal((4, H))
    hx = (_t(h0), _t(h0 * 0.5)) if lstm else _t(h0)
    out, hn = m(_t(x), hx)
    assert out.shape == (T, 2 * H)
    # the same as a batch of one
    out_b, hn_b = m(_t(x[:, None]), (_t(h0[:, None]), _t(h0[:, None] * 0.5)) if lstm
                    else _t(h0[:, None]))  # fmt: skip
    np.testing.assert_allclose(_np(out), _np(out_b)[:, 0], rtol=1e-14)
    if lstm:
        hn, hn_b = hn[1], hn_b[1]
    assert hn.shape == (4, H)
    np.testing.assert_allclose(_np(hn), _np(hn_b)[:, 0], rtol=1e-14)
    P = _params_of(m, 2, 2, np.float64)
    o, hr, cr, _ = ref_rnn(mode, x[:, None], h0[:, None], h0[:, None] * 0.5 if lstm else None,
                           P, 2, 2)  # fmt: skip
    np.testing.assert_allclose(_np(out), o[:, 0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_np(hn), (cr if lstm else hr)[:, 0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_layer(rng, cpu_path, mode, reverse):
    T, B, NI, H = 3, 2, 3, 4
    G = GATES[mode] * H
    x = _t(rng.standard_normal((T, B, NI)), True)
    h0 = _t(rng.standard_normal((B, H)), True)
    c0 = _t(rng.standard_normal((B, H)), True)
    ws = [_t(rng.standard_normal(s) * 0.6, True) for s in ((G, NI), (G, H), (G,), (G,))]
    if mode == "LSTM":
        assert gradcheck(lambda *a: LSTMLayer.apply(*a, reverse), (x, h0, c0, *ws))
    elif mode == "GRU":
        assert gradcheck(lambda *a: GRULayer.apply(*a, reverse), (x, h0, *ws))
    else:
        assert gradcheck(lambda *a: RNNLayer.apply(*a, reverse, "tanh"), (x, h0, *ws))


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_module(rng, mode):
    m = _module(mode, 3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    x = _t(rng.standard_normal((2, 3, 3)), True)
    h0 = _t(rng.standard_normal((4, 2, 4)), True)
    if mode == "LSTM":
        c0 = _t(rng.standard_normal((4, 2, 4)), True)

        def fn(a, h, c):
            out, (hn, cn) = m(a, (h, c))
            return out, hn, cn

        assert gradcheck(fn, (x, h0, c0))
    else:
        assert gradcheck(lambda a, h: m(a, h), (x, h0))


def test_gradcheck_relu_rnn(rng):
    # away from the kink: a relu RNN's finite differences are exact except at 0
    m = nn.RNN(3, 4, nonlinearity="relu").double()
    x = _t(rng.standard_normal((3, 2, 3)), True)
    assert gradcheck(lambda a: m(a)[0], (x,))


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell", "RNNCell", "RNNCell_relu"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [True, False])
def test_cells(rng, cpu_path, cell, batched, with_hx):
    NI, H, B = 5, 6, 3
    mode = {"LSTMCell": "LSTM", "GRUCell": "GRU", "RNNCell": "RNN_TANH",
            "RNNCell_relu": "RNN_RELU"}[cell]  # fmt: skip
    m = (nn.RNNCell(NI, H, nonlinearity="relu") if cell == "RNNCell_relu"
         else getattr(nn, cell)(NI, H)).double()  # fmt: skip
    assert set(m.state_dict()) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    x = rng.standard_normal((B, NI))
    h = rng.standard_normal((B, H))
    c = rng.standard_normal((B, H))
    sl = slice(None) if batched else 0
    xt = _t(x[sl], True)
    ht, ct = _t(h[sl], True), _t(c[sl], True)
    lstm = mode == "LSTM"
    hx = ((ht, ct) if lstm else ht) if with_hx else None
    res = m(xt, hx)
    h2, c2 = res if lstm else (res, None)
    assert h2.shape == ((B, H) if batched else (H,))
    w = [_np(getattr(m, n)) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    hr = h if with_hx else np.zeros_like(h)
    cr = c if with_hx else np.zeros_like(c)
    rh, rc, cache = ref_step(mode, x, hr, cr, *w)
    np.testing.assert_allclose(_np(h2), rh[sl], rtol=1e-10, atol=1e-12)
    gh = rng.standard_normal((B, H))
    gc = rng.standard_normal((B, H))
    loss = (h2 * _t(gh[sl])).sum() + ((c2 * _t(gc[sl])).sum() if lstm else 0)
    loss.backward()
    np.testing.assert_allclose(_np(c2), rc[sl], rtol=1e-10) if lstm else None
    r = ref_step_vjp(mode, gh, gc if lstm else None, x, hr, cr, w[0], w[1], cache)
    if not batched:  # only row 0 contributed
        gh1, gc1 = gh.copy(), gc.copy()
        gh1[1:], gc1[1:] = 0, 0
        r = ref_step_vjp(mode, gh1, gc1 if lstm else None, x, hr, cr, w[0], w[1], cache)
    np.testing.assert_allclose(_np(xt.grad), r[0][sl], rtol=1e-10, atol=1e-12)
    if with_hx:
        np.testing.assert_allclose(_np(ht.grad), r[1][sl], rtol=1e-10, atol=1e-12)
        if lstm:
            np.testing.assert_allclose(_np(ct.grad), r[2][sl], rtol=1e-10, atol=1e-12)
    for k, n in enumerate(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
        np.testing.assert_allclose(_np(getattr(m, n).grad), r[3 + k], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------ dropout
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_dropout_between_layers_only_in_training(rng, mode):
    T, B, NI, H, L, p = 4, 3, 5, 6, 3, 0.4
    m = _module(mode, NI, H, num_layers=L, dropout=p, bidirectional=True).double()
    x = rng.standard_normal((T, B, NI))
    P = _params_of(m, L, 2, np.float64)
    zeros = np.zeros((2 * L, B, H))
    c0 = zeros if mode == "LSTM" else None
    # eval: no dropout at all
    m.eval()
    o_eval = _np(m(_t(x))[0])
    np.testing.assert_allclose(o_eval, ref_rnn(mode, x, zeros, c0, P, L, 2)[0], rtol=1e-10)
    # training: one mask per layer output except the last, drawn in layer order (PyTorch)
    m.train()
    ember.manual_seed(123)
    masks = [_np(F.dropout(_t(np.ones((T, B, 2 * H))), p, True)) for _ in range(L - 1)]
    ember.manual_seed(123)
    xt = _t(x, True)
    out, _ = m(xt)
    o_ref, _, _, tape = ref_rnn(mode, x, zeros, c0, P, L, 2, masks=masks)
    np.testing.assert_allclose(_np(out), o_ref, rtol=1e-10, atol=1e-12)
    assert not np.allclose(_np(out), o_eval)
    g = rng.standard_normal(out.shape)
    out.backward(_t(g))
    dx = ref_rnn_vjp(mode, g, np.zeros((2 * L, B, H)), zeros if mode == "LSTM" else None, P, L,
                     2, tape, masks=masks)[0]  # fmt: skip
    np.testing.assert_allclose(_np(xt.grad), dx, rtol=1e-9, atol=1e-12)
    # a single layer: dropout has nothing to act on (as in PyTorch)
    m1 = _module(mode, NI, H, dropout=0.9).double()
    m1.train()
    a = _np(m1(_t(x))[0])
    m1.eval()
    np.testing.assert_array_equal(a, _np(m1(_t(x))[0]))


# ------------------------------------------------------------------------ names, errors
def test_state_dict_names_match_pytorch():
    m = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    want = []
    for layer in range(2):
        for s in ("", "_reverse"):
            want += [f"{n}_l{layer}{s}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert list(m.state_dict()) == want
    sd = m.state_dict()
    assert sd["weight_ih_l0"].shape == (16, 3)
    assert sd["weight_ih_l1"].shape == (16, 8)
    assert sd["weight_hh_l1_reverse"].shape == (16, 4)
    assert nn.GRU(3, 4).weight_hh_l0.shape == (12, 4)
    assert nn.RNN(3, 4).bias_ih_l0.shape == (4,)
    # PyTorch's init: everything within 1/sqrt(H)
    big = nn.GRU(7, 100, num_layers=2)
    for p in big.parameters():
        a = np.abs(_np(p))
        assert a.max() <= 0.1 and a.max() > 0.09


def test_errors():
    m = nn.LSTM(4, 5, num_layers=2)
    with pytest.raises(ValueError, match=r"\[LSTM\] input.size\(-1\) must be equal to "
                       r"input_size. Expected 4, got 3"):  # fmt: skip
        m(_t(np.zeros((2, 3, 3), np.float32)))
    with pytest.raises(ValueError, match=r"\[LSTM\] Expected hidden\[0\] size \(2, 3, 5\)"):
        h = _t(np.zeros((1, 3, 5), np.float32))
        m(_t(np.zeros((2, 3, 4), np.float32)), (h, h))
    with pytest.raises(ValueError, match=r"\[LSTM\] Expected hidden\[1\] size"):
        h = _t(np.zeros((2, 3, 5), np.float32))
        m(_t(np.zeros((2, 3, 4), np.float32)), (h, _t(np.zeros((2, 3, 4), np.float32))))
    with pytest.raises(ValueError, match=r"\[LSTM\] hx must be a tuple"):
        m(_t(np.zeros((2, 3, 4), np.float32)), _t(np.zeros((2, 3, 5), np.float32)))
    with pytest.raises(ValueError, match=r"\[GRU\] Expected hidden size \(1, 5\)"):
        nn.GRU(4, 5)(_t(np.zeros((2, 4), np.float32)), _t(np.zeros((1, 3, 5), np.float32)))
    with pytest.raises(ValueError, match=r"\[RNN\] Unknown nonlinearity 'sigmoid'"):
        nn.RNN(4, 5, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"\[RNNCell\] Unknown nonlinearity"):
        nn.RNNCell(4, 5, nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"\[LSTM\] expected input of 2 \(unbatched\) or 3"):
        m(_t(np.zeros((2, 3, 4, 1), np.float32)))
    with pytest.raises(ValueError, match=r"sequence length larger than 0"):
        m(_t(np.zeros((0, 3, 4), np.float32)))
    msg = r"\[LSTM\] input must have the type ember.float32, got type ember.float64"
    with pytest.raises(TypeError, match=msg):
        m(_t(np.zeros((2, 3, 4), np.float64)))
    with pytest.raises(ValueError, match=r"\[LSTM\] proj_size is not supported"):
        nn.LSTM(4, 5, proj_size=2)
    with pytest.raises(ValueError, match=r"\[GRU\] dropout must be a number in \[0, 1\]"):
        nn.GRU(4, 5, dropout=1.5)
    with pytest.raises(ValueError, match=r"\[RNN\] hidden_size must be a positive int"):
        nn.RNN(4, 0)
    with pytest.raises(ValueError, match=r"\[GRUCell\] input has inconsistent input_size"):
        nn.GRUCell(4, 5)(_t(np.zeros((2, 3), np.float32)))
    with pytest.raises(ValueError, match=r"\[LSTMCell\] hidden state 1 has shape \[2, 4\]"):
        z = np.zeros((2, 5), np.float32)
        nn.LSTMCell(4, 5)(_t(np.zeros((2, 4), np.float32)), (_t(z), _t(z[:, :4])))


def test_kernel_boundary_errors():
    f32 = np.zeros((2, 8), np.float32)
    g = np.zeros((2, 32), np.float32)
    with pytest.raises(ValueError, match=r"\[lstm_cell\] c_prev must have shape \[2, 8\]"):
        _C.lstm_cell_fwd(g, np.zeros((2, 7), np.float32), None, f32.copy(), f32.copy())
    with pytest.raises(ValueError, match=r"\[lstm_cell\] c_prev has 3 rows but gates has 2"):
        _C.lstm_cell_fwd(g, np.zeros((3, 8), np.float32), None, f32.copy(), f32.copy())
    with pytest.raises(TypeError, match=r"\[lstm_cell\] c has dtype float64"):
        _C.lstm_cell_fwd(g, f32, None, np.zeros((2, 8)), f32.copy())
    with pytest.raises(ValueError, match=r"\[lstm_cell\] c overlaps h"):
        c = f32.copy()
        _C.lstm_cell_fwd(g, f32, None, c, c)
    with pytest.raises(ValueError, match=r"\[lstm_cell\] act overlaps gates \(in place"):
        gg = np.zeros(72, np.float32)
        _C.lstm_cell_fwd(gg[:64].reshape(2, 32), f32, gg[8:].reshape(2, 32), f32.copy(),
                         f32.copy())  # fmt: skip
    with pytest.raises(ValueError, match=r"must be C-contiguous"):
        _C.rnn_cell_fwd(np.zeros((8, 2), np.float32).T, f32.copy(), "tanh")
    with pytest.raises(ValueError, match=r"\[rnn_cell\] nonlinearity must be 'tanh' or 'relu'"):
        _C.rnn_cell_fwd(f32, f32.copy(), "sigmoid")
    with pytest.raises(ValueError, match=r"read-only"):
        ro = f32.copy()
        ro.setflags(write=False)
        _C.rnn_cell_fwd(f32, ro, "tanh")
    with pytest.raises(ValueError, match=r"\[gru_cell\] save must be an array, got None|"
                       r"\[gru_cell_backward\] save"):  # fmt: skip
        _C.gru_cell_bwd(None, f32, f32, None, g[:, :24].copy(), g[:, :24].copy(), f32.copy())
    with pytest.raises(TypeError, match=r"must be a numpy.ndarray"):
        _C.rnn_cell_fwd([1.0], f32, "tanh")


def test_saved_output_modified_in_place_is_caught(rng):
    m = nn.GRU(3, 4)
    out, _ = m(_t(rng.standard_normal((3, 2, 3)).astype(np.float32), True))
    with ember.no_grad():
        out.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        out.sum().backward()


def test_backward_twice_with_retain_graph(rng):
    m = nn.LSTM(3, 4, num_layers=2)
    x = _t(rng.standard_normal((4, 2, 3)).astype(np.float32), True)
    out, _ = m(x)
    out.sum().backward(retain_graph=True)
    g1 = _np(x.grad).copy()
    w1 = _np(m.weight_hh_l0.grad).copy()
    out.sum().backward()
    np.testing.assert_allclose(_np(x.grad), 2 * g1, rtol=1e-6)
    np.testing.assert_allclose(_np(m.weight_hh_l0.grad), 2 * w1, rtol=1e-6)


def test_threads_do_not_change_results(rng):
    m = nn.LSTM(16, 96, num_layers=1)
    x = _t(rng.standard_normal((3, 200, 16)).astype(np.float32))
    n0 = ember.get_num_threads()
    try:
        ember.set_num_threads(1)
        a = _np(m(x)[0])
        ember.set_num_threads(2)
        b = _np(m(x)[0])
    finally:
        ember.set_num_threads(n0)
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------ PyTorch cross-check
@pytest.mark.parametrize("mode", MODES)
def test_matches_pytorch(rng, mode):
    torch = pytest.importorskip("torch")
    T, B, NI, H, L = 6, 4, 5, 7, 2
    kw = dict(num_layers=L, bidirectional=True, batch_first=True)
    if mode.startswith("RNN_"):
        tm = torch.nn.RNN(NI, H, nonlinearity=mode[4:].lower(), **kw)
    else:
        tm = getattr(torch.nn, mode)(NI, H, **kw)
    em = _module(mode, NI, H, **kw)
    em.load_state_dict({k: _t(v.detach().numpy().copy()) for k, v in tm.state_dict().items()})
    assert list(em.state_dict()) == list(tm.state_dict())
    x = rng.standard_normal((B, T, NI)).astype(np.float32)
    xt, xe = torch.tensor(x, requires_grad=True), _t(x, True)
    ot, ht = tm(xt)
    oe, he = em(xe)
    if mode == "LSTM":
        ht, he = ht[1], he[1]
    np.testing.assert_allclose(_np(oe), ot.detach().numpy(), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(_np(he), ht.detach().numpy(), rtol=1e-5, atol=2e-6)
    g = rng.standard_normal(ot.shape).astype(np.float32)
    (ot * torch.tensor(g)).sum().backward()
    (oe * _t(g)).sum().backward()
    np.testing.assert_allclose(_np(xe.grad), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    ep = dict(em.named_parameters())
    for k, p in tm.named_parameters():
        np.testing.assert_allclose(_np(ep[k].grad), p.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_only_final_state_used(rng, cpu_path, mode):
    """Backward when the output sequence gets no gradient (only h_n, or only c_n, is used)."""
    T, B, NI, H = 4, 2, 3, 5
    m = _module(mode, NI, H, num_layers=2).double()
    x = rng.standard_normal((T, B, NI))
    xt = _t(x, True)
    out, hn = m(xt)
    lstm = mode == "LSTM"
    g = rng.standard_normal((2, B, H))
    ((hn[1] if lstm else hn) * _t(g)).sum().backward()
    P = _params_of(m, 2, 1, np.float64)
    z = np.zeros((2, B, H))
    _, _, _, tape = ref_rnn(mode, x, z, z if lstm else None, P, 2, 1)
    ghn, gcn = (z, g) if lstm else (g, None)
    want = ref_rnn_vjp(mode, np.zeros((T, B, H)), ghn, gcn, P, 2, 1, tape)
    np.testing.assert_allclose(_np(xt.grad), want[0], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(_np(m.weight_hh_l0.grad), want[3][0][0][1], rtol=1e-10,
                               atol=1e-13)  # fmt: skip


def test_inference_matches_training_forward(rng, cpu_path):
    """no_grad forward (scratch buffers reused across calls) gives the graph forward's values."""
    for mode in MODES:
        m = _module(mode, 6, 7, num_layers=2, bidirectional=True)
        x = _t(rng.standard_normal((5, 3, 6)).astype(np.float32), True)
        a = _np(m(x)[0])
        with ember.no_grad():
            b = _np(m(x)[0])
            c = _np(m(x[:3])[0])  # a different shape through the same scratch
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, _np(m(x[:3])[0]))


def test_all_weights_and_flatten_parameters():
    m = nn.GRU(3, 4, num_layers=2, bidirectional=True, bias=False)
    m.flatten_parameters()
    w = m.all_weights
    assert len(w) == 4 and all(len(r) == 2 for r in w)
    assert w[3][0] is m.weight_ih_l1_reverse and w[0][1] is m.weight_hh_l0
