"""nn.TransformerEncoderLayer / DecoderLayer / Encoder / Decoder / Transformer against a plain
float64 numpy re-implementation with the same weights, gradients by finite differences, key
names, masks, and PyTorch itself when installed."""

import math

import numpy as np
import pytest

import ember
from ember import nn
from ember.autograd.gradcheck import gradcheck

F64 = ember.float64


# ---- numpy reference -------------------------------------------------------------------------
def _np(t):
    return t.detach().numpy().astype(np.float64)


def _layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _mha(mha, q_in, kv_in, nhead, add_mask):
    """Batch-first [N, L, E] multi-head attention with an additive [N or 1, 1 or h, Lq, Lk]
    mask (-inf = blocked); fully blocked rows give 0 (ember's documented choice)."""
    w, b = _np(mha.in_proj_weight), _np(mha.in_proj_bias)
    e = w.shape[1]
    q = q_in @ w[:e].T + b[:e]
    k = kv_in @ w[e : 2 * e].T + b[e : 2 * e]
    v = kv_in @ w[2 * e :].T + b[2 * e :]
    n, lq, lk, d = q.shape[0], q.shape[1], k.shape[1], e // nhead

    def heads(a, length):
        return a.reshape(n, length, nhead, d).transpose(0, 2, 1, 3)

    s = heads(q, lq) @ heads(k, lk).transpose(0, 1, 3, 2) / math.sqrt(d) + add_mask
    m = s.max(-1, keepdims=True)
    p = np.exp(s - np.where(np.isfinite(m), m, 0))
    den = p.sum(-1, keepdims=True)
    p = np.divide(p, den, out=np.zeros_like(p), where=den > 0)
    o = (p @ heads(v, lk)).transpose(0, 2, 1, 3).reshape(n, lq, e)
    return o @ _np(mha.out_proj.weight).T + _np(mha.out_proj.bias)


def _add_mask(n, lq, lk, attn_mask=None, key_padding=None, causal=False):
    m = np.zeros((n, 1, lq, lk))
    if causal:
        m = m + np.triu(np.full((lq, lk), -np.inf), k=1)
    if attn_mask is not None:
        m = m + (np.where(attn_mask, -np.inf, 0.0) if attn_mask.dtype == bool else attn_mask)
    if key_padding is not None:
        m = m + np.where(key_padding, -np.inf, 0.0)[:, None, None, :]
    return m


def _ffn(layer, x, act):
    h = x @ _np(layer.linear1.weight).T + _np(layer.linear1.bias)
    h = np.maximum(h, 0) if act == "relu" else _gelu(h)
    return h @ _np(layer.linear2.weight).T + _np(layer.linear2.bias)


def _ln(norm, x):
    return _layer_norm(x, _np(norm.weight), _np(norm.bias), norm.eps)


def ref_encoder_layer(layer, x, nhead, act, norm_first, mask):
    sa = lambda h: _mha(layer.self_attn, h, h, nhead, mask)  # noqa: E731
    if norm_first:
        x = x + sa(_ln(layer.norm1, x))
        return x + _ffn(layer, _ln(layer.norm2, x), act)
    x = _ln(layer.norm1, x + sa(x))
    return _ln(layer.norm2, x + _ffn(layer, x, act))


def ref_decoder_layer(layer, x, mem, nhead, act, norm_first, tmask, mmask):
    sa = lambda h: _mha(layer.self_attn, h, h, nhead, tmask)  # noqa: E731
    ca = lambda h: _mha(layer.multihead_attn, h, mem, nhead, mmask)  # noqa: E731
    if norm_first:
        x = x + sa(_ln(layer.norm1, x))
        x = x + ca(_ln(layer.norm2, x))
        return x + _ffn(layer, _ln(layer.norm3, x), act)
    x = _ln(layer.norm1, x + sa(x))
    x = _ln(layer.norm2, x + ca(x))
    return _ln(layer.norm3, x + _ffn(layer, x, act))


def _randomise_norms(module, rng):
    # LayerNorm starts at weight 1 / bias 0; random values make the test see both.
    for name, p in module.named_parameters():
        if "norm" in name:
            p._array[...] = rng.standard_normal(p.shape) * 0.5 + (1.0 if "weight" in name else 0)


def _to_layout(x, batch_first):
    return x if batch_first else np.ascontiguousarray(x.transpose(1, 0, 2))


# ---- tests -----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("act", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masks", ["none", "causal", "bool+padding", "float"])
def test_encoder_layer_matches_numpy(rng, norm_first, act, batch_first, masks):
    n, s, e, h = 3, 7, 16, 4
    layer = nn.TransformerEncoderLayer(
        e,
        h,
        24,
        dropout=0.0,
        activation=act,
        batch_first=batch_first,
        norm_first=norm_first,
        dtype=F64,
    )
    _randomise_norms(layer, rng)
    x = rng.standard_normal((n, s, e))
    kw, am, kp, causal = {}, None, None, False
    if masks == "causal":
        kw["is_causal"], causal = True, True
    elif masks == "bool+padding":
        am = rng.random((s, s)) < 0.3
        np.fill_diagonal(am, False)
        kp = np.zeros((n, s), bool)
        kp[0, -2:] = True
        kw["src_mask"] = ember.tensor(am)
        kw["src_key_padding_mask"] = ember.tensor(kp)
    elif masks == "float":
        am = rng.standard_normal((s, s))
        kw["src_mask"] = ember.tensor(am)
    out = layer(ember.tensor(_to_layout(x, batch_first)), **kw)
    ref = ref_encoder_layer(layer, x, h, act, norm_first, _add_mask(n, s, s, am, kp, causal))
    got = out.detach().numpy()
    np.testing.assert_allclose(got, _to_layout(ref, batch_first), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_numpy(rng, norm_first):
    n, t, s, e, h = 2, 5, 6, 12, 3
    layer = nn.TransformerDecoderLayer(
        e, h, 20, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=F64
    )
    _randomise_norms(layer, rng)
    x, mem = rng.standard_normal((n, t, e)), rng.standard_normal((n, s, e))
    mkp = np.zeros((n, s), bool)
    mkp[1, :2] = True
    out = layer(
        ember.tensor(x),
        ember.tensor(mem),
        tgt_is_causal=True,
        memory_key_padding_mask=ember.tensor(mkp),
    )
    ref = ref_decoder_layer(
        layer,
        x,
        mem,
        h,
        "relu",
        norm_first,
        _add_mask(n, t, t, causal=True),
        _add_mask(n, t, s, key_padding=mkp),
    )
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-9, atol=1e-9)


def test_encoder_layer_gradients_by_finite_differences(rng):
    layer = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=True, dtype=F64)
    x = ember.tensor(rng.standard_normal((2, 5, 8)), requires_grad=True)
    w = layer.linear1.weight
    assert gradcheck(lambda a, b: layer(a, is_causal=True) * 1.0 + 0 * b.sum(), (x, w))
    assert gradcheck(lambda a: layer(a), (x,))


def test_decoder_gradients_by_finite_differences(rng):
    layer = nn.TransformerDecoderLayer(
        8, 2, 12, dropout=0.0, batch_first=True, norm_first=True, dtype=F64
    )
    x = ember.tensor(rng.standard_normal((2, 4, 8)), requires_grad=True)
    mem = ember.tensor(rng.standard_normal((2, 3, 8)), requires_grad=True)
    assert gradcheck(lambda a, m: layer(a, m, tgt_is_causal=True), (x, mem))


def test_parameter_gradients_flow_to_every_weight(rng):
    layer = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=True)
    x = ember.tensor(rng.standard_normal((2, 5, 8)).astype(np.float32))
    (layer(x) * ember.tensor(rng.standard_normal((2, 5, 8)).astype(np.float32))).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert np.all(np.isfinite(p.grad.numpy())), name
        assert np.abs(p.grad.numpy()).max() > 0, name


def test_state_dict_keys_are_pytorchs():
    enc = nn.TransformerEncoderLayer(8, 2, 12)
    assert list(enc.state_dict()) == [
        "self_attn.in_proj_weight", "self_attn.in_proj_bias",
        "self_attn.out_proj.weight", "self_attn.out_proj.bias",
        "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
        "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
    ]  # fmt: skip
    dec = nn.TransformerDecoderLayer(8, 2, 12)
    keys = list(dec.state_dict())
    assert keys[4:8] == [
        "multihead_attn.in_proj_weight", "multihead_attn.in_proj_bias",
        "multihead_attn.out_proj.weight", "multihead_attn.out_proj.bias",
    ]  # fmt: skip
    assert keys[-2:] == ["norm3.weight", "norm3.bias"]
    stack = nn.TransformerEncoder(enc, 2, norm=nn.LayerNorm(8))
    assert "layers.1.linear2.bias" in stack.state_dict()
    assert "norm.weight" in stack.state_dict()


def test_encoder_stack_copies_are_independent_and_norm_is_applied(rng):
    layer = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=True, dtype=F64)
    stack = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8, dtype=F64))
    p0, p1 = stack.layers[0].linear1.weight, stack.layers[1].linear1.weight
    assert p0 is not p1 and p0._array is not p1._array
    p1._array[...] = rng.standard_normal(p1.shape)
    x = rng.standard_normal((2, 5, 8))
    out = stack(ember.tensor(x), is_causal=True)
    mask = _add_mask(2, 5, 5, causal=True)
    ref = x
    for lay in stack.layers:
        ref = ref_encoder_layer(lay, ref, 2, "relu", False, mask)
    ref = _layer_norm(ref, 1.0, 0.0)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-9, atol=1e-9)


def test_full_transformer_and_subsequent_mask(rng):
    m = nn.Transformer.generate_square_subsequent_mask(4)
    ref = np.triu(np.full((4, 4), -np.inf), k=1)
    np.testing.assert_array_equal(m.numpy(), ref)
    model = nn.Transformer(
        d_model=8,
        nhead=2,
        num_encoder_layers=1,
        num_decoder_layers=2,
        dim_feedforward=16,
        dropout=0.0,
    )
    src = ember.tensor(rng.standard_normal((6, 3, 8)).astype(np.float32))
    tgt = ember.tensor(rng.standard_normal((4, 3, 8)).astype(np.float32))
    out = model(src, tgt, tgt_mask=m)
    assert out.shape == (4, 3, 8)
    with pytest.raises(ValueError, match=r"\[Transformer\] src and tgt batch sizes differ"):
        model(src, ember.tensor(rng.standard_normal((4, 2, 8)).astype(np.float32)))


def test_dropout_only_in_training(rng):
    layer = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.5, batch_first=True)
    x = ember.tensor(rng.standard_normal((2, 5, 8)).astype(np.float32))
    layer.eval()
    np.testing.assert_array_equal(layer(x).detach().numpy(), layer(x).detach().numpy())
    layer.train()
    assert not np.array_equal(layer(x).detach().numpy(), layer(x).detach().numpy())


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\[TransformerEncoderLayer\] d_model \(10\) must be "):
        nn.TransformerEncoderLayer(10, 3)
    with pytest.raises(ValueError, match=r"\[TransformerDecoderLayer\] activation must be"):
        nn.TransformerDecoderLayer(8, 2, activation="swish")
    with pytest.raises(ValueError, match=r"\[TransformerEncoder\] num_layers"):
        nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2), -1)


@pytest.mark.parametrize("norm_first", [False, True])
def test_matches_pytorch_with_copied_weights(rng, norm_first):
    torch = pytest.importorskip("torch")
    e, h = 16, 4
    ours = nn.TransformerEncoderLayer(
        e, h, 32, dropout=0.0, batch_first=True, norm_first=norm_first, activation="gelu", dtype=F64
    )
    _randomise_norms(ours, rng)
    theirs = torch.nn.TransformerEncoderLayer(
        e,
        h,
        32,
        dropout=0.0,
        batch_first=True,
        norm_first=norm_first,
        activation="gelu",
        dtype=torch.float64,
    )
    theirs.load_state_dict(
        {k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()}
    )
    x = rng.standard_normal((2, 6, e))
    mask = torch.nn.Transformer.generate_square_subsequent_mask(6, dtype=torch.float64)
    want = theirs(torch.from_numpy(x), src_mask=mask, is_causal=True).detach().numpy()
    got = ours(ember.tensor(x), is_causal=True).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
