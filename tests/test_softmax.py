"""Softmax, log-softmax and cross-entropy on our kernels (kernels/cpu/softmax.cpp): float64
references (tests/reference.py) forward and backward on both CPU paths, gradcheck in float64
for every option, the numerical robustness cases, errors at the functional layer and at the
_C boundary, thread-count independence, and an optional PyTorch cross-check."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
import reference as R
from ember import _C
from ember.autograd import gradcheck


def _t(a, grad=False):
    a = np.asarray(a)  # (not ascontiguousarray: it makes a 0-d array 1-d)
    t = ember.from_numpy(a if a.flags.c_contiguous else np.ascontiguousarray(a))
    return t.requires_grad_() if grad else t


def _logits(rng, shape, dtype, scale=3.0):
    x = rng.standard_normal(shape) * scale
    x.flat[0] = 4 * scale  # an outlier
    return x.astype(dtype)


# rows not a multiple of 8 or 32, a single element, long rows past 4096, dims not last
SM_CASES = [((4, 7), 1), ((4, 7), 0), ((3, 4, 5), 1), ((3, 4, 5), -1), ((6,), 0), ((2, 1, 3), 1),
            ((5, 1), 1), ((3, 33), 1), ((2, 4097), 1), ((3, 1000), -1), ((64, 300), 1),
            ((40, 1024), 1)]  # fmt: skip


@pytest.mark.parametrize("shape,dim", SM_CASES)
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_backward_vs_reference(rng, cpu_path, poison, shape, dim, log, dtype):
    fn, ref, vjp = (
        (F.log_softmax, R.log_softmax, R.log_softmax_vjp)
        if log
        else (F.softmax, R.softmax, R.softmax_vjp)
    )
    x = _logits(rng, shape, dtype)
    g = rng.standard_normal(shape).astype(dtype)
    xt = _t(x, True)
    y = fn(xt, dim)
    y.backward(_t(g))
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    want, gwant = ref(x64, dim), vjp(g64, x64, dim)[0]
    got, ggot = y.detach().numpy(), xt.grad.detach().numpy()
    assert got.dtype == dtype and ggot.dtype == dtype
    if dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(ggot, gwant, rtol=1e-11, atol=1e-14)
    else:
        R.assert_elementwise(got, want, ref(x, dim), rtol=1e-6, what="forward")
        # g - sum(...) cancels: compare max errors, scaled by the same sums on magnitudes
        p = R.softmax(x64, dim)
        if log:
            scale = np.abs(g64) + p * np.abs(g64).sum(dim, keepdims=True)
        else:
            scale = p * (np.abs(g64) + np.abs(g64 * p).sum(dim, keepdims=True))
        R.assert_reduction(
            ggot, gwant, vjp(g, x, dim)[0], scale=scale.max(), floor=1e-6, what="backward"
        )


@pytest.mark.parametrize("shape,dim", [((3, 4), 1), ((2, 3, 2), 1), ((3, 4), 0), ((2, 19), 1)])
def test_gradcheck(rng, cpu_path, shape, dim):
    x = _t(_logits(rng, shape, np.float64, 1.0), True)
    assert gradcheck(lambda a: F.softmax(a, dim), (x,))
    assert gradcheck(lambda a: F.log_softmax(a, dim), (x,))


def test_robustness(cpu_path):
    for dt in (np.float32, np.float64):
        x = _t(np.array([1000.0, 1001.0, 1002.0], dt))
        s = F.softmax(x, 0).numpy()
        assert np.isfinite(s).all() and abs(s.astype(np.float64).sum() - 1) < 1e-6
        np.testing.assert_allclose(s, [0.09003057, 0.24472847, 0.66524096], rtol=1e-6)
        ls = F.log_softmax(x, 0).numpy()
        np.testing.assert_allclose(ls, [-2.40760596, -1.40760596, -0.40760596], rtol=1e-6)
        # long rows of large logits (past the 32-float blocks, odd length): sums to 1
        rng = np.random.default_rng(0)
        big = (1000 + rng.standard_normal((3, 4099))).astype(dt)
        s = F.softmax(_t(big), 1).numpy()
        np.testing.assert_allclose(s.astype(np.float64).sum(1), 1, rtol=2e-6)
        np.testing.assert_allclose(s, R.softmax(big.astype(np.float64), 1), rtol=1e-5)
        # -inf entries vanish; the rest is the softmax of the finite ones
        m = np.array([[-np.inf, 0.5, -1.0] + [-np.inf] * 10, [2.0] * 13], dt)
        s = F.softmax(_t(m), 1).numpy()
        assert (s[0, [0] + list(range(3, 13))] == 0).all()
        np.testing.assert_allclose(s[0, 1:3], R.softmax(np.array([0.5, -1.0])), rtol=1e-6)
        np.testing.assert_allclose(s[1], 1 / 13, rtol=1e-6)
        ls = F.log_softmax(_t(m), 1).numpy()
        assert ls[0, 0] == -np.inf and np.isfinite(ls[0, 1:3]).all()
        # a row of only -inf, or holding +inf or NaN, is NaN (as PyTorch); other rows untouched
        bad = np.zeros((4, 11), dt)
        bad[0] = -np.inf
        bad[1, 3] = np.inf
        bad[2, 7] = np.nan
        for fn in (F.softmax, F.log_softmax):
            out = fn(_t(bad), 1).numpy()
            assert np.isnan(out[:3]).all() and np.isfinite(out[3]).all()
        # -inf logits: finite gradients everywhere
        xt = _t(m, True)
        F.log_softmax(xt, 1).backward(_t(np.ones_like(m)))
        assert np.isfinite(xt.grad.numpy()).all()


def test_empty_and_dtype_cast(cpu_path):
    e = F.softmax(_t(np.zeros((0, 5), np.float32)), 1)
    assert e.shape == (0, 5)
    assert F.log_softmax(_t(np.zeros((3, 0))), 1).shape == (3, 0)
    y = F.softmax(ember.tensor([1.0, 2.0]), 0, dtype=ember.float64)
    assert y.dtype is ember.float64


def test_modules_route_to_functional(rng):
    x = _t(_logits(rng, (3, 5, 4), np.float32))
    np.testing.assert_array_equal(nn.Softmax(1)(x).numpy(), F.softmax(x, 1).numpy())
    np.testing.assert_array_equal(nn.LogSoftmax(-1)(x).numpy(), F.log_softmax(x, -1).numpy())


def test_thread_count_does_not_change_results(rng):
    x = _logits(rng, (300, 1031), np.float32)
    t = rng.integers(0, 1031, 300)
    g = rng.standard_normal(x.shape).astype(np.float32)
    prev = ember.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            ember.set_num_threads(n)
            xt = _t(x, True)
            s = F.softmax(xt, 1)
            s.backward(_t(g))
            xc = _t(x, True)
            loss = F.cross_entropy(xc, _t(t), label_smoothing=0.1)
            loss.backward()
            outs.append((s.detach().numpy(), xt.grad.numpy(), loss.item(), xc.grad.numpy()))
    finally:
        ember.set_num_threads(prev)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_softmax_boundary_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match=r"^\[softmax\] out has dtype float64"):
        _C.softmax_fwd(x, False, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"^\[log_softmax\] out has shape \[3, 2\]"):
        _C.softmax_fwd(x, True, np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"^\[softmax\] input must be C-contiguous"):
        _C.softmax_fwd(np.zeros((3, 2), np.float32).T, False, x)
    with pytest.raises(ValueError, match=r"^\[softmax\] an output overlaps an input"):
        _C.softmax_fwd(x, False, x)
    with pytest.raises(TypeError, match=r"^\[softmax\] input has dtype int64"):
        _C.softmax_fwd(np.zeros((2, 3), np.int64), False, x)
    with pytest.raises(ValueError, match=r"^\[softmax\] grad_in is read-only"):
        ro = np.zeros((2, 3), np.float32)
        ro.flags.writeable = False
        _C.softmax_bwd(x, x.copy(), False, ro)


# ================================================================================ cross-entropy

CE_SHAPES = [(6, 5), (5, 1), (4, 33), (3, 4097), (2, 4, 3), (3, 5, 2, 3), (9, 1001)]
CE_OPTS = list(itertools.product([False, True], [None, 2], [0.0, 0.2], ["mean", "sum", "none"]))


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "cross_entropy"])
def test_streamed_gradients(rng, cpu_path, op):
    # A gradient of >= 32 MiB with rows of >= 2048 is written with non-temporal stores from
    # each row's first 64-byte line boundary on (kernels/cpu/softmax.cpp, kStreamBytes): the
    # same values at any alignment of gx, every value written, as accurate as the cached path.
    rows, n = 4100, 2050  # 33.6 MB of float32 per array; rows start at every offset mod 64
    x = _logits(rng, (rows, n), np.float32)
    g = rng.standard_normal((rows, n)).astype(np.float32)
    t = rng.integers(0, n, rows)
    t[::7] = -100  # ignored rows
    gi = rng.uniform(0.5, 1.5, rows).astype(np.float32)
    y = np.empty_like(x)
    stats, loss = np.empty((rows, 2), np.float32), np.empty(rows, np.float32)
    if op == "cross_entropy":
        _C.cross_entropy_fwd(x, t, None, -100, 0.1, loss, stats)
    else:
        _C.softmax_fwd(x, op == "log_softmax", y)
    outs = []
    for shift in (0, 1, 7):  # gx starts `shift` floats past a 64-byte boundary
        buf = np.full(rows * n + 32, np.nan, np.float32)
        start = (-buf.ctypes.data % 64) // 4 + shift
        gx = buf[start : start + rows * n].reshape(rows, n)
        if op == "cross_entropy":
            _C.cross_entropy_bwd(x, t, None, stats, gi, -100, 0.1, gx)
        else:
            _C.softmax_bwd(y, g, op == "log_softmax", gx)
        outs.append(gx.copy())
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    x64 = x.astype(np.float64)
    p = R.softmax(x64, -1)
    if op == "cross_entropy":
        kw = dict(reduction="none", label_smoothing=0.1)
        want = R.cross_entropy_vjp(gi.astype(np.float64), x64, t, None, **kw)[0]
        plain = R.cross_entropy_vjp(gi, x, t, None, **kw)[0]
        scale = 2 * float(gi.max())
    else:
        vjp = R.log_softmax_vjp if op == "log_softmax" else R.softmax_vjp
        g64 = g.astype(np.float64)
        want, plain = vjp(g64, x64, -1)[0], vjp(g, x, -1)[0]
        if op == "log_softmax":
            scale = (np.abs(g64) + p * np.abs(g64).sum(-1, keepdims=True)).max()
        else:
            scale = (p * (np.abs(g64) + np.abs(g64 * p).sum(-1, keepdims=True))).max()
    R.assert_reduction(outs[0], want, plain, scale=scale, floor=1e-6, what=op)


def _ce_data(rng, shape, dtype, ignore):
    C = shape[1]
    x = _logits(rng, shape, dtype)
    tshape = (shape[0],) + shape[2:]
    t = rng.integers(0, C, tshape)
    if ignore is not None and t.size > 1:
        t.flat[:: max(2, t.size // 3)] = ignore
        if (t == ignore).all():  # keep a counted row (all ignored: its own test below)
            t.flat[1] = (ignore + 1) % C
    w = rng.uniform(0.2, 2.0, C).astype(dtype)
    return x, t, w


@pytest.mark.parametrize("shape", CE_SHAPES)
@pytest.mark.parametrize("weighted,ignore,smoothing,reduction", CE_OPTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_vs_reference(
    rng, cpu_path, poison, shape, weighted, ignore, smoothing, reduction, dtype
):
    x, t, w = _ce_data(rng, shape, dtype, ignore)
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    if ignore is not None:
        kw["ignore_index"] = ignore
    w = w if weighted else None
    xt = _t(x, True)
    loss = F.cross_entropy(xt, _t(t), None if w is None else _t(w), **kw)
    g = rng.standard_normal(loss.shape).astype(dtype) if reduction == "none" else dtype(0.7)
    loss.backward(_t(np.asarray(g, dtype)))
    x64 = x.astype(np.float64)
    w64 = None if w is None else w.astype(np.float64)
    want = R.cross_entropy(x64, t, w64, **kw)
    gwant = R.cross_entropy_vjp(np.asarray(g, np.float64), x64, t, w64, **kw)[0]
    got, ggot = loss.detach().numpy(), xt.grad.numpy()
    assert got.dtype == dtype and got.shape == np.shape(want)
    if dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(ggot, gwant, rtol=1e-11, atol=1e-14)
    else:
        plain = R.cross_entropy(x, t, w, **kw)
        R.assert_reduction(got, want, plain, floor=1e-6, what="loss")
        gplain = R.cross_entropy_vjp(np.asarray(g, dtype), x, t, w, **kw)[0]
        # p - onehot cancels at the target: compare max errors, scaled by the terms' magnitude
        # |gi| (1 - s) w_t (p + 1) + |gi| (s / C) (W p + w) <= 2 |gi| max(w)
        wmax = 1.0 if w is None else float(w.max())
        gi = np.abs(g).max()
        if reduction == "mean":
            valid = t != kw.get("ignore_index", -100)
            gi = gi / (valid.sum() if w is None else w.astype(np.float64)[t[valid]].sum())
        scale = 2 * wmax * gi
        R.assert_reduction(ggot, gwant, gplain, scale=scale, floor=1e-6, what="grad")


@pytest.mark.parametrize("weighted,ignore,smoothing,reduction", CE_OPTS)
def test_cross_entropy_gradcheck(rng, cpu_path, weighted, ignore, smoothing, reduction):
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    if ignore is not None:
        kw["ignore_index"] = ignore
    for shape in ((4, 5), (3, 4, 2)):
        x, t, w = _ce_data(rng, shape, np.float64, ignore)
        tt, wt = _t(t), (_t(w) if weighted else None)
        assert gradcheck(lambda a, tt=tt, wt=wt: F.cross_entropy(a, tt, wt, **kw), (_t(x, True),))


def test_cross_entropy_extreme_logits(cpu_path):
    for dt in (np.float32, np.float64):
        x = _t(np.array([[1e4, -1e4], [-1e4, 1e4]], dt), True)
        loss = F.cross_entropy(x, _t(np.array([1, 0])))
        assert loss.item() == 20000.0
        loss.backward()
        g = x.grad.numpy()
        assert np.isfinite(g).all()
        np.testing.assert_array_equal(g, [[0.5, -0.5], [-0.5, 0.5]])
        # with smoothing and weights too: finite and equal to the reference
        x = _t(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]], dt), True)
        w = np.array([1.0, 2.0, 0.5], dt)
        loss = F.cross_entropy(x, _t(np.array([1, 0])), _t(w), label_smoothing=0.1)
        loss.backward()
        want = R.cross_entropy(
            x.detach().numpy().astype(np.float64), [1, 0], w, label_smoothing=0.1
        )
        np.testing.assert_allclose(loss.item(), want, rtol=1e-6)
        assert np.isfinite(x.grad.numpy()).all()


def test_cross_entropy_inf_logits(cpu_path):
    for dt in (np.float32, np.float64):
        y = np.array([[-np.inf, 1.0, 2.0] + [-np.inf] * 30], dt)
        yt = _t(y, True)
        loss = F.cross_entropy(yt, _t(np.array([2])))
        loss.backward()
        np.testing.assert_allclose(loss.item(), -R.log_softmax(np.array([1.0, 2.0]))[1], rtol=1e-6)
        assert np.isfinite(yt.grad.numpy()).all() and (yt.grad.numpy()[0, 3:] == 0).all()
        # the target's logit is -inf: infinite loss (as PyTorch), finite gradient
        yt = _t(y, True)
        loss = F.cross_entropy(yt, _t(np.array([0])))
        assert loss.item() == np.inf
        loss.backward()
        assert np.isfinite(yt.grad.numpy()).all()


def test_cross_entropy_all_ignored(cpu_path):
    for dt in (np.float32, np.float64):
        x = _t(np.random.default_rng(0).standard_normal((3, 4)).astype(dt), True)
        t = _t(np.array([-100, -100, -100]))
        loss = F.cross_entropy(x, t)
        assert np.isnan(loss.item())  # 0 / 0, as PyTorch
        loss.backward()
        np.testing.assert_array_equal(x.grad.numpy(), 0)
        assert F.cross_entropy(x, t, reduction="sum").item() == 0.0
        np.testing.assert_array_equal(F.cross_entropy(x, t, reduction="none").detach().numpy(), 0)
        ls = F.cross_entropy(x, t, _t(np.ones(4, dt)), label_smoothing=0.3)
        assert np.isnan(ls.item())


def test_cross_entropy_unbatched_and_int32_target(rng, cpu_path):
    x = _logits(rng, (5,), np.float32)
    want = R.cross_entropy(x[None].astype(np.float64), [3])
    np.testing.assert_allclose(F.cross_entropy(_t(x), ember.tensor(3)).item(), want, rtol=1e-6)
    assert F.cross_entropy(_t(x), ember.tensor(3), reduction="none").shape == ()
    x2 = _logits(rng, (4, 6), np.float64)
    t = np.array([1, 5, 0, 2], np.int32)
    np.testing.assert_allclose(
        F.cross_entropy(_t(x2), _t(t)).item(), R.cross_entropy(x2, t), rtol=1e-13
    )


def test_cross_entropy_module(rng):
    x = _t(_logits(rng, (4, 6), np.float32))
    t = _t(rng.integers(0, 6, 4))
    w = _t(rng.uniform(0.5, 1.5, 6).astype(np.float32))
    crit = nn.CrossEntropyLoss(weight=w, label_smoothing=0.1, reduction="sum")
    np.testing.assert_array_equal(
        crit(x, t).numpy(),
        F.cross_entropy(x, t, w, label_smoothing=0.1, reduction="sum").numpy(),
    )


def test_cross_entropy_errors(rng):
    x = _t(_logits(rng, (4, 10), np.float32))
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] target 12 is out of range for 10"):
        F.cross_entropy(x, _t(np.array([1, 2, 12, 3])))
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] target -3 is out of range"):
        F.cross_entropy(x, _t(np.array([1, -3, -100, 3])))
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] input of shape \(4, 10\) expects"):
        F.cross_entropy(x, _t(np.array([1, 2, 3])))
    with pytest.raises(TypeError, match=r"^\[cross_entropy\] target must hold int64"):
        F.cross_entropy(x, _t(np.array([1.0, 2.0, 3.0])))
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] weight must have shape \(10,\)"):
        F.cross_entropy(x, _t(np.array([1, 2, 3, 4])), _t(np.ones(9, np.float32)))
    with pytest.raises(TypeError, match=r"^\[cross_entropy\] input must be a floating point"):
        F.cross_entropy(_t(np.array([[1, 2]])), _t(np.array([0])))


def test_cross_entropy_boundary_errors():
    x = np.zeros((3, 4), np.float32)
    t = np.array([0, 1, 2])
    loss, st = np.empty(3, np.float32), np.empty((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] target 4 is out of range for 4"):
        _C.cross_entropy_fwd(x, np.array([0, 4, 1]), None, -100, 0.0, loss, st)
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] target -1 is out of range"):
        _C.cross_entropy_bwd(x, np.array([0, -1, 1]), None, st, loss, -100, 0.0, x.copy())
    with pytest.raises(TypeError, match=r"^\[cross_entropy\] target must hold int64"):
        _C.cross_entropy_fwd(x, t.astype(np.int32), None, -100, 0.0, loss, st)
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] target must have shape \[3\]"):
        _C.cross_entropy_fwd(x, t[:2], None, -100, 0.0, loss, st)
    with pytest.raises(TypeError, match=r"^\[cross_entropy\] weight has dtype float64"):
        _C.cross_entropy_fwd(x, t, np.ones(4), -100, 0.0, loss, st)
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] weight must have shape \[4\]"):
        _C.cross_entropy_fwd(x, t, np.ones(3, np.float32), -100, 0.0, loss, st)
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] label_smoothing must be between"):
        _C.cross_entropy_fwd(x, t, None, -100, 1.5, loss, st)
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] input must be 2-D"):
        _C.cross_entropy_fwd(x[None], t, None, -100, 0.0, loss, st)
    with pytest.raises(TypeError, match=r"^\[cross_entropy\] outputs must have the input's dtype"):
        _C.cross_entropy_fwd(x, t, None, -100, 0.0, loss.astype(np.float64), st)
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] stats must have shape \[3, 2\]"):
        _C.cross_entropy_fwd(x, t, None, -100, 0.0, loss, st[:, :1].copy())
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] grad_in has shape \[4, 3\]"):
        _C.cross_entropy_bwd(x, t, None, st, loss, -100, 0.0, x.T.copy())


def test_against_torch_if_available(rng):
    torch = pytest.importorskip("torch")
    x = _logits(rng, (16, 37, 3), np.float32)
    t = rng.integers(0, 37, (16, 3))
    t[0, 0] = t[5, 2] = -1
    w = rng.uniform(0.5, 1.5, 37).astype(np.float32)
    g = rng.standard_normal((16, 3)).astype(np.float32)
    for red, s in itertools.product(["mean", "sum", "none"], [0.0, 0.15]):
        xt, xr = _t(x, True), torch.tensor(x, requires_grad=True)
        a = F.cross_entropy(xt, _t(t), _t(w), ignore_index=-1, reduction=red, label_smoothing=s)
        b = torch.nn.functional.cross_entropy(
            xr, torch.tensor(t), torch.tensor(w), ignore_index=-1, reduction=red, label_smoothing=s
        )
        gg = g if red == "none" else np.float32(1.3)
        a.backward(_t(np.asarray(gg)))
        b.backward(torch.tensor(gg))
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(xt.grad.numpy(), xr.grad.numpy(), rtol=2e-5, atol=1e-6)
    for fn, tfn in ((F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)):
        np.testing.assert_allclose(
            fn(_t(x), 1).numpy(), tfn(torch.tensor(x), 1).numpy(), rtol=2e-6, atol=1e-6
        )


def test_non_contiguous_views(rng, cpu_path):
    base = _logits(rng, (9, 14), np.float64)
    view = base[::2, 1::3]  # strided, not contiguous
    for fn, ref in ((F.softmax, R.softmax), (F.log_softmax, R.log_softmax)):
        for d in (0, 1):
            vt = ember.from_numpy(view)  # a non-contiguous tensor (no copy)
            assert not vt._array.flags.c_contiguous
            np.testing.assert_allclose(fn(vt, d).numpy(), ref(view, d), rtol=1e-13)
    xt = ember.from_numpy(base.T).requires_grad_()  # [14, 9] transposed view, 9 classes
    assert not xt._array.flags.c_contiguous
    t = rng.integers(0, 9, 14)
    loss = F.cross_entropy(xt, _t(t), label_smoothing=0.1)
    loss.backward()
    np.testing.assert_allclose(loss.item(), R.cross_entropy(base.T, t, label_smoothing=0.1))
    gwant = R.cross_entropy_vjp(np.float64(1), base.T, t, label_smoothing=0.1)[0]
    np.testing.assert_allclose(xt.grad.numpy(), gwant, rtol=1e-12, atol=1e-15)
