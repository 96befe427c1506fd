"""New nn layers, activations and losses: float64 numpy references, gradcheck, train/eval."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.autograd import gradcheck


def _t(a, grad=False):
    t = ember.from_numpy(np.ascontiguousarray(a))
    return t.requires_grad_() if grad else t


def _erf(a):
    return np.vectorize(math.erf)(a)


def _sp(a):  # softplus reference
    return np.logaddexp(0.0, a)


def _sig(a):  # no overflow for large |a|
    return 0.5 * (1.0 + np.tanh(0.5 * a))


ACTIVATIONS = {
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.07), lambda a: np.where(a > 0, a, 0.07 * a)),
    "elu": (lambda x: F.elu(x, 1.3), lambda a: np.where(a > 0, a, 1.3 * np.expm1(a))),
    "gelu": (F.gelu, lambda a: 0.5 * a * (1 + _erf(a / math.sqrt(2)))),
    "gelu_tanh": (
        lambda x: F.gelu(x, approximate="tanh"),
        lambda a: 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3))),
    ),
    "silu": (F.silu, lambda a: a * _sig(a)),
    "softplus": (lambda x: F.softplus(x), _sp),
    "softplus_beta": (
        lambda x: F.softplus(x, beta=2.5, threshold=3.0),
        lambda a: np.where(2.5 * a > 3.0, a, _sp(2.5 * a) / 2.5),
    ),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_forward_and_gradcheck(rng, name):
    fn, ref = ACTIVATIONS[name]
    a = rng.standard_normal((4, 5)) * 2.5
    a.flat[0], a.flat[1] = -31.0, 27.0  # outliers: saturated tails
    np.testing.assert_allclose(fn(_t(a)).numpy(), ref(a), rtol=1e-12, atol=1e-14)
    a32 = a.astype(np.float32)
    out32 = fn(_t(a32))
    assert out32.dtype == ember.float32
    np.testing.assert_allclose(out32.numpy(), ref(a32.astype(np.float64)), rtol=2e-6, atol=1e-6)
    # keep finite differences away from the kinks of leaky_relu / elu / softplus_beta
    b = rng.standard_normal((3, 4))
    b = np.where(np.abs(b) < 0.05, 0.3, b)
    b = np.where(np.abs(2.5 * b - 3.0) < 0.05, 0.5, b)
    assert gradcheck(fn, (_t(b, grad=True),))


def test_softplus_is_stable_for_extreme_inputs():
    a = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    with np.errstate(over="ignore"):
        got = F.softplus(_t(a)).numpy()
    np.testing.assert_allclose(got, _sp(a), rtol=1e-14)
    assert got[1] > 0  # exp(-40) is kept, not rounded to 0


def test_activation_modules_match_functional(rng):
    a = rng.standard_normal((3, 4))
    x = _t(a)
    pairs = [
        (nn.LeakyReLU(0.2), F.leaky_relu(x, 0.2)),
        (nn.ELU(0.7), F.elu(x, 0.7)),
        (nn.GELU(), F.gelu(x)),
        (nn.GELU("tanh"), F.gelu(x, "tanh")),
        (nn.SiLU(), F.silu(x)),
        (nn.Softplus(2.0, 10.0), F.softplus(x, 2.0, 10.0)),
        (nn.Softmax(dim=1), F.softmax(x, 1)),
        (nn.LogSoftmax(dim=0), F.log_softmax(x, 0)),
    ]
    for m, want in pairs:
        np.testing.assert_array_equal(m(x).numpy(), want.numpy(), err_msg=repr(m))
    e = np.exp(a - a.max(1, keepdims=True))
    np.testing.assert_allclose(nn.Softmax(1)(x).numpy(), e / e.sum(1, keepdims=True), rtol=1e-13)
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    with pytest.raises(ValueError, match=r"^\[GELU\]"):
        nn.GELU("fast")


# ------------------------------------------------------------------------ dropout
def test_dropout_train_eval_scaling_and_seed(rng):
    a = rng.standard_normal((200, 50)) + 3.0
    m = nn.Dropout(0.3)
    ember.manual_seed(5)
    y = m(_t(a)).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], a[kept] / 0.7, rtol=1e-14)
    ember.manual_seed(5)
    np.testing.assert_array_equal(m(_t(a)).numpy(), y)  # seeded: same mask
    assert not np.array_equal(m(_t(a)).numpy(), y)  # the next call draws a new mask
    m.eval()
    np.testing.assert_array_equal(m(_t(a)).numpy(), a)
    x = _t(a[:3, :4], grad=True)
    ember.manual_seed(9)
    out = F.dropout(x, 0.5)
    g = rng.standard_normal((3, 4))
    out.backward(_t(g))
    mask = out.detach().numpy() / a[:3, :4]
    np.testing.assert_allclose(x.grad.numpy(), g * mask, rtol=1e-14)
    assert F.dropout(_t(a), 1.0).numpy().max() == 0.0
    with pytest.raises(ValueError, match=r"^\[Dropout\] dropout probability"):
        nn.Dropout(1.5)


def test_dropout2d_zeroes_whole_channels(rng):
    a = rng.standard_normal((8, 16, 3, 5)) - 2.0
    ember.manual_seed(1)
    y = nn.Dropout2d(0.5)(_t(a)).numpy()
    per_channel = (y != 0).reshape(8, 16, -1)
    assert (per_channel.all(-1) | ~per_channel.any(-1)).all()  # all or nothing per channel
    kept = per_channel.all(-1)
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(y[kept], a[kept] * 2.0, rtol=1e-14)
    m = nn.Dropout2d(0.5).eval()
    np.testing.assert_array_equal(m(_t(a)).numpy(), a)
    with pytest.raises(ValueError, match=r"^\[dropout2d\] expected"):
        F.dropout2d(_t(a[0, 0]))


# ------------------------------------------------------------------------ embedding
def test_embedding_forward_backward_padding(rng):
    ember.manual_seed(3)
    emb = nn.Embedding(6, 4, padding_idx=2)
    np.testing.assert_array_equal(emb.weight.detach().numpy()[2], 0.0)
    w = emb.weight.detach().numpy().copy()
    idx = np.array([[1, 2, 5], [5, 0, 2]])
    out = emb(_t(idx))
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out.detach().numpy(), w[idx])
    g = rng.standard_normal((2, 3, 4))
    out.backward(_t(g.astype(np.float32)))
    want = np.zeros((6, 4))
    np.add.at(want, idx.ravel(), g.reshape(-1, 4))
    want[2] = 0.0  # the padding row gets no gradient
    np.testing.assert_allclose(emb.weight.grad.numpy(), want, rtol=1e-6)
    with pytest.raises(ValueError, match=r"^\[embedding\] index 6 is out of range"):
        emb(_t(np.array([0, 6])))
    with pytest.raises(TypeError, match=r"^\[embedding\] input must hold integer"):
        emb(_t(np.array([0.5])))


def test_embedding_gradcheck(rng):
    w = _t(rng.standard_normal((5, 3)), grad=True)
    idx = _t(np.array([4, 0, 4, 1]))
    # padding_idx=2 is not picked: a picked padding row has a zero gradient by design
    assert gradcheck(lambda w: F.embedding(idx, w, padding_idx=2), (w,))


# ------------------------------------------------------------- Unflatten, ModuleDict
def test_unflatten_and_module_dict(rng):
    a = rng.standard_normal((2, 12))
    y = nn.Unflatten(1, (3, -1))(_t(a))
    np.testing.assert_array_equal(y.numpy(), a.reshape(2, 3, 4))
    d = nn.ModuleDict({"enc": nn.Linear(3, 4), "act": nn.ReLU()})
    d["dec"] = nn.Linear(4, 2)
    assert list(d) == ["enc", "act", "dec"] and "act" in d and len(d) == 3
    assert sorted(d.state_dict()) == ["dec.bias", "dec.weight", "enc.bias", "enc.weight"]
    assert len(list(d.parameters())) == 4
    d.pop("act")
    assert list(d.keys()) == ["enc", "dec"]
    with pytest.raises(TypeError, match=r"^\[ModuleDict.update\]"):
        nn.ModuleDict([("a", nn.ReLU(), 3)])


# ---------------------------------------------------------------------------- losses
def _reduce(v, reduction):
    return {"none": v, "mean": v.mean(), "sum": v.sum()}[reduction]


def _huber(d, delta):
    return np.where(np.abs(d) < delta, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))


def _bce(x, t):
    return -(t * np.maximum(np.log(x), -100) + (1 - t) * np.maximum(np.log1p(-x), -100))


def _bcel(x, t, pw):
    return (1 - t) * x + (1 + (pw - 1) * t) * _sp(-x)


LOSSES = {
    "l1": (lambda x, t, r: F.l1_loss(x, t, reduction=r), lambda x, t: np.abs(x - t)),
    "smooth_l1": (
        lambda x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.6),
        lambda x, t: _huber(x - t, 0.6) / 0.6,
    ),
    "huber": (
        lambda x, t, r: F.huber_loss(x, t, reduction=r, delta=0.8),
        lambda x, t: _huber(x - t, 0.8),
    ),
    "bce": (
        lambda x, t, r: F.binary_cross_entropy(F.sigmoid(x), t, reduction=r),
        lambda x, t: _bce(_sig(x), t),
    ),
    "bce_logits": (
        lambda x, t, r: F.binary_cross_entropy_with_logits(x, t, reduction=r),
        lambda x, t: _bcel(x, t, 1.0),
    ),
    "bce_logits_pos_weight": (
        lambda x, t, r: F.binary_cross_entropy_with_logits(
            x, t, reduction=r, pos_weight=_t(np.array([0.5, 2.0, 3.5, 1.2]))
        ),
        lambda x, t: _bcel(x, t, np.array([0.5, 2.0, 3.5, 1.2])),
    ),
    "kl_div": (
        lambda x, t, r: F.kl_div(x, t, reduction=r),
        lambda x, t: np.where(t > 0, t * (np.log(np.where(t > 0, t, 1)) - x), 0.0),
    ),
    "kl_div_log_target": (
        lambda x, t, r: F.kl_div(x, t, reduction=r, log_target=True),
        lambda x, t: np.exp(t) * (t - x),
    ),
}


def _loss_data(rng, name):
    x = rng.standard_normal((3, 4)) * 2.0
    if name.startswith("bce"):
        t = rng.random((3, 4))
        t[0, :2] = (0.0, 1.0)  # hard labels too
    elif name == "kl_div":
        t = rng.random((3, 4))
        t[1, 2] = 0.0  # a zero target contributes 0
    elif name == "kl_div_log_target":
        t = -rng.random((3, 4)) * 3
    else:
        t = rng.standard_normal((3, 4))
    return x, t


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_forward_and_gradcheck(rng, name, reduction):
    fn, ref = LOSSES[name]
    x, t = _loss_data(rng, name)
    got = fn(_t(x), _t(t), reduction).numpy()
    np.testing.assert_allclose(got, _reduce(ref(x, t), reduction), rtol=1e-12, atol=1e-14)
    if name in ("l1", "smooth_l1", "huber"):  # keep |x - t| off the kinks
        d = x - t
        x = np.where(np.abs(np.abs(d) - 0.7) < 0.05, x + 0.2, x)
        x = np.where(np.abs(d) < 0.05, x + 0.2, x)
    assert gradcheck(lambda x: fn(x, _t(t), reduction), (_t(x, grad=True),))


def test_target_gradients(rng):
    x = _t(_sig(rng.standard_normal((2, 3))), grad=True)
    t = _t(rng.random((2, 3)), grad=True)
    assert gradcheck(F.binary_cross_entropy, (x, t))
    logits = _t(rng.standard_normal((2, 3)) * 3, grad=True)
    assert gradcheck(F.binary_cross_entropy_with_logits, (logits, t))
    assert gradcheck(lambda a, b: F.kl_div(a, b, log_target=True), (logits, t))


def test_loss_edge_cases_and_modules(rng):
    big = np.array([-1e4, 1e4, -50.0, 60.0])
    t = np.array([1.0, 0.0, 0.25, 0.75])
    x = _t(big, grad=True)
    loss = F.binary_cross_entropy_with_logits(x, _t(t), reduction="sum")
    np.testing.assert_allclose(loss.item(), _bcel(big, t, 1.0).sum(), rtol=1e-12)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), _sig(big) - t, rtol=1e-12, atol=1e-300)
    p = _t(np.array([0.0, 1.0, 0.3]), grad=True)
    bce = F.binary_cross_entropy(p, _t(np.array([1.0, 0.0, 0.6])), reduction="none")
    np.testing.assert_allclose(bce.detach().numpy()[:2], [100.0, 100.0])  # clamped logs
    bce.sum().backward()
    assert np.isfinite(p.grad.numpy()).all()
    with pytest.raises(ValueError, match=r"^\[binary_cross_entropy\] all elements"):
        F.binary_cross_entropy(_t(np.array([1.5])), _t(np.array([1.0])))
    with pytest.raises(ValueError, match=r"^\[l1_loss\] input shape"):
        F.l1_loss(_t(rng.standard_normal(3)), _t(rng.standard_normal((3, 1))))
    with pytest.raises(TypeError, match=r"^\[huber_loss\] input is"):
        F.huber_loss(_t(rng.standard_normal(3)), _t(rng.standard_normal(3).astype(np.float32)))
    a, b = rng.standard_normal((4, 5)), rng.random((4, 5))
    logp = a - np.log(np.exp(a).sum(1, keepdims=True))
    kl = nn.KLDivLoss(reduction="batchmean")(_t(logp), _t(b)).item()
    np.testing.assert_allclose(kl, (b * (np.log(b) - logp)).sum() / 4, rtol=1e-12)
    w = rng.random((4, 5))
    mods = [
        (nn.L1Loss(reduction="sum"), np.abs(a - b).sum()),
        (nn.SmoothL1Loss(beta=0.5), (_huber(a - b, 0.5) / 0.5).mean()),
        (nn.HuberLoss(delta=0.3), _huber(a - b, 0.3).mean()),
        (nn.BCEWithLogitsLoss(weight=_t(w)), (w * _bcel(a, b, 1.0)).mean()),
        (nn.BCELoss(), _bce(_sig(a), b).mean()),
    ]
    for m, want in mods:
        xin = _t(_sig(a)) if isinstance(m, nn.BCELoss) else _t(a)
        np.testing.assert_allclose(m(xin, _t(b)).item(), want, rtol=1e-12, err_msg=repr(m))


def test_cross_check_with_pytorch(rng):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    a = rng.standard_normal((3, 4)) * 3
    b = rng.random((3, 4))
    pw = rng.random(4) + 0.5
    ta, tb, tpw = (torch.from_numpy(v) for v in (a, b, pw))
    x, t = _t(a), _t(b)
    pairs = [
        (F.leaky_relu(x, 0.1), tF.leaky_relu(ta, 0.1)),
        (F.elu(x, 0.6), tF.elu(ta, 0.6)),
        (F.gelu(x), tF.gelu(ta)),
        (F.gelu(x, "tanh"), tF.gelu(ta, approximate="tanh")),
        (F.silu(x), tF.silu(ta)),
        (F.softplus(x, 1.5, 2.0), tF.softplus(ta, 1.5, 2.0)),
        (F.l1_loss(x, t), tF.l1_loss(ta, tb)),
        (F.smooth_l1_loss(x, t, beta=0.4), tF.smooth_l1_loss(ta, tb, beta=0.4)),
        (F.huber_loss(x, t, delta=0.4), tF.huber_loss(ta, tb, delta=0.4)),
        (F.binary_cross_entropy(F.sigmoid(x), t), tF.binary_cross_entropy(ta.sigmoid(), tb)),
        (
            F.binary_cross_entropy_with_logits(x, t, pos_weight=_t(pw)),
            tF.binary_cross_entropy_with_logits(ta, tb, pos_weight=tpw),
        ),
        (F.kl_div(F.log_softmax(x, 1), t, reduction="batchmean"),
         tF.kl_div(tF.log_softmax(ta, 1), tb, reduction="batchmean")),
        (F.kl_div(x, -t, reduction="sum", log_target=True),
         tF.kl_div(ta, -tb, reduction="sum", log_target=True)),
    ]  # fmt: skip
    for i, (ours, theirs) in enumerate(pairs):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12, err_msg=str(i))


def test_gelu_without_scipy_uses_math_erf(rng, monkeypatch):
    import sys

    a = rng.standard_normal((2, 3))
    want = F.gelu(_t(a)).numpy()
    monkeypatch.setitem(sys.modules, "scipy.special", None)  # import now fails
    np.testing.assert_allclose(F.gelu(_t(a)).numpy(), want, rtol=1e-15)
    assert gradcheck(F.gelu, (_t(a, grad=True),))


# ----------------------------------------------------------------------------- Bilinear


def _bilinear_ref(x1, x2, w, b):
    y = np.einsum("...i,oij,...j->...o", x1, w.astype(np.float64), x2)
    return y if b is None else y + b


@pytest.mark.parametrize("lead", [(6,), (2, 3), ()])
@pytest.mark.parametrize("bias", [True, False])
def test_bilinear_forward_and_gradients(lead, bias):
    ember.manual_seed(4)
    m = nn.Bilinear(3, 5, 4, bias=bias, dtype=ember.float64)
    rng = np.random.default_rng(8)
    x1 = rng.standard_normal(lead + (3,))
    x2 = rng.standard_normal(lead + (5,))
    b = None if not bias else m.bias.detach().numpy()
    y = m(ember.tensor(x1), ember.tensor(x2))
    np.testing.assert_allclose(
        y.detach().numpy(),
        _bilinear_ref(x1, x2, m.weight.detach().numpy(), b),
        rtol=1e-12,
        atol=1e-12,
    )
    t1 = ember.tensor(x1, requires_grad=True)
    t2 = ember.tensor(x2, requires_grad=True)
    args = (t1, t2, m.weight) + ((m.bias,) if bias else ())
    assert ember.autograd.gradcheck(lambda a, c, w, *bb: nn.functional.bilinear(a, c, w, *bb), args)


def test_bilinear_init_and_errors():
    ember.manual_seed(0)
    m = nn.Bilinear(16, 3, 40)
    bound = 1 / math.sqrt(16)
    w, b = m.weight.detach().numpy(), m.bias.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.9 * bound  # really spread over the interval (1920 draws)
    with pytest.raises(ValueError, match=r"\[bilinear\] inputs"):
        m(ember.randn(2, 15), ember.randn(2, 3))
    with pytest.raises(ValueError, match=r"\[bilinear\] inputs need the same leading dims"):
        m(ember.randn(2, 16), ember.randn(3, 3))
    with pytest.raises(ValueError, match=r"\[Bilinear\] out_features"):
        nn.Bilinear(2, 2, -1)
