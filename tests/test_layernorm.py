"""Layer norm and RMS norm on our kernels (kernels/cpu/layernorm.cpp): float64 references
(tests/reference.py) forward and backward on both CPU paths, gradcheck in float64 with every
combination of weight/bias, the constant-row case, errors at the functional layer and the _C
boundary, the modules, thread-count independence, and an optional PyTorch cross-check."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
import reference as R
from ember import _C
from ember.autograd import gradcheck


def _t(a, grad=False):
    a = np.asarray(a)
    t = ember.from_numpy(a if a.flags.c_contiguous else np.ascontiguousarray(a))
    return t.requires_grad_() if grad else t


def _data(rng, shape, dtype):
    x = rng.standard_normal(shape) * 2.0 + 0.7
    x.flat[0] = 9.0  # an outlier
    return x.astype(dtype)


# (input shape, number of normalised trailing dims): rows of 1, odd n, n not a multiple of 8,
# long rows, several trailing dims, and sizes above the threading threshold
CASES = [((4, 7), 1), ((3, 5, 6), 2), ((2, 3, 4, 5), 3), ((5, 1), 1), ((1, 33), 1),
         ((6, 4097), 1), ((64, 768), 1), ((300, 129), 1), ((7,), 1)]  # fmt: skip


def _params(rng, nshape, dtype, weighted, biased):
    w = rng.uniform(0.5, 1.5, nshape).astype(dtype) if weighted else None
    b = rng.standard_normal(nshape).astype(dtype) if biased else None
    return w, b


def _check32(got, want, plain, ref_abs, what):
    R.assert_reduction(got, want, plain, scale=ref_abs, floor=1e-6, what=what)


@pytest.mark.parametrize("shape,k", CASES)
@pytest.mark.parametrize("affine", ["none", "weight", "both", "bias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_vs_reference(rng, cpu_path, poison, shape, k, affine, dtype):
    nshape = shape[len(shape) - k :]
    x = _data(rng, shape, dtype)
    w, b = _params(rng, nshape, dtype, affine in ("weight", "both"), affine in ("bias", "both"))
    g = rng.standard_normal(shape).astype(dtype)
    xt = _t(x, True)
    wt = None if w is None else _t(w, True)
    bt = None if b is None else _t(b, True)
    y = F.layer_norm(xt, nshape, wt, bt, eps=1e-5)
    y.backward(_t(g))
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    w64 = None if w is None else w.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    want = R.layer_norm(x64, k, w64, b64)
    gwant = R.layer_norm_vjp(g64, x64, k, w64, b64)
    got = (y, xt.grad, None if wt is None else wt.grad, None if bt is None else bt.grad)
    assert y.dtype is xt.dtype and y.shape == xt.shape
    if dtype == np.float64:
        np.testing.assert_allclose(got[0].detach().numpy(), want, rtol=1e-12, atol=1e-12)
        for a, r in zip(got[1:], gwant):
            if r is None:
                continue
            np.testing.assert_allclose(a.numpy(), r, rtol=1e-11, atol=1e-11 * np.abs(r).max())
        return
    plain = R.layer_norm(x, k, w, b, eps=np.float32(1e-5))
    gplain = R.layer_norm_vjp(g, x, k, w, b, eps=np.float32(1e-5))
    _check32(got[0].detach().numpy(), want, plain, np.abs(want).max(), "y")
    names = ("grad_input", "grad_weight", "grad_bias")
    for a, r, p, name in zip(got[1:], gwant, gplain, names):
        if r is None:
            assert a is None
            continue
        _check32(a.numpy(), r, p, np.abs(r).max(), name)


@pytest.mark.parametrize("shape,k", CASES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rms_norm_vs_reference(rng, cpu_path, poison, shape, k, weighted, dtype):
    nshape = shape[len(shape) - k :]
    x = _data(rng, shape, dtype)
    w, _ = _params(rng, nshape, dtype, weighted, False)
    g = rng.standard_normal(shape).astype(dtype)
    xt = _t(x, True)
    wt = None if w is None else _t(w, True)
    y = F.rms_norm(xt, nshape, wt)  # eps None: finfo(dtype).eps
    y.backward(_t(g))
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    w64 = None if w is None else w.astype(np.float64)
    eps = float(np.finfo(dtype).eps)
    want = R.rms_norm(x64, k, w64, eps)
    gwant = R.rms_norm_vjp(g64, x64, k, w64, eps)
    got = (y.detach().numpy(), xt.grad.numpy(), None if wt is None else wt.grad.numpy())
    if dtype == np.float64:
        np.testing.assert_allclose(got[0], want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got[1], gwant[0], rtol=1e-11, atol=1e-11)
        if w is not None:
            np.testing.assert_allclose(got[2], gwant[1], rtol=1e-11, atol=1e-11)
        return
    plain = R.rms_norm(x, k, w)
    gplain = R.rms_norm_vjp(g, x, k, w)
    _check32(got[0], want, plain, np.abs(want).max(), "y")
    _check32(got[1], gwant[0], gplain[0], np.abs(gwant[0]).max(), "grad_input")
    if w is not None:
        _check32(got[2], gwant[1], gplain[1], np.abs(gwant[1]).max(), "grad_weight")


@pytest.mark.parametrize("shape,k", [((3, 5), 1), ((2, 3, 4), 2), ((4, 1, 9), 1)])
def test_gradcheck(rng, cpu_path, shape, k):
    nshape = shape[len(shape) - k :]
    x = _t(_data(rng, shape, np.float64), True)
    w = _t(rng.uniform(0.5, 1.5, nshape), True)
    b = _t(rng.standard_normal(nshape), True)
    assert gradcheck(lambda a, ww, bb: F.layer_norm(a, nshape, ww, bb), (x, w, b))
    assert gradcheck(lambda a, ww: F.layer_norm(a, nshape, ww), (x, w))
    assert gradcheck(lambda a, bb: F.layer_norm(a, nshape, None, bb, eps=1e-3), (x, b))
    assert gradcheck(lambda a: F.layer_norm(a, nshape), (x,))
    assert gradcheck(lambda a, ww: F.rms_norm(a, nshape, ww, eps=1e-6), (x, w))
    assert gradcheck(lambda a: F.rms_norm(a, nshape), (x,))


def test_constant_rows_give_zero_variance(cpu_path):
    for dtype in (np.float32, np.float64):
        x = np.full((4, 3, 37), 0.1, dtype)  # 0.1: not exact in binary
        x[1] = 1e4
        w = np.linspace(-1, 2, 111).reshape(3, 37).astype(dtype)
        b = np.linspace(0.5, -3, 111).reshape(3, 37).astype(dtype)
        xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
        y = F.layer_norm(xt, (3, 37), wt, bt)
        np.testing.assert_array_equal(y.detach().numpy(), np.broadcast_to(b, x.shape))
        y.backward(_t(np.random.default_rng(0).standard_normal(x.shape).astype(dtype)))
        for t in (xt, wt, bt):
            assert np.isfinite(t.grad.numpy()).all()
        # RMS norm of a zero row: 0, finite gradient
        z = _t(np.zeros((2, 16), dtype), True)
        r = F.rms_norm(z, 16)
        np.testing.assert_array_equal(r.detach().numpy(), 0)
        r.backward(_t(np.ones((2, 16), dtype)))
        assert np.isfinite(z.grad.numpy()).all()


def test_nan_stays_in_its_row(cpu_path):
    x = np.random.default_rng(1).standard_normal((4, 19)).astype(np.float32)
    x[2, 4] = np.nan
    for y in (F.layer_norm(_t(x), 19), F.rms_norm(_t(x), 19)):
        y = y.numpy()
        assert np.isnan(y[2]).all() and np.isfinite(y[[0, 1, 3]]).all()


def test_empty_inputs(cpu_path):
    x = _t(np.zeros((0, 8), np.float32), True)
    w = _t(np.ones(8, np.float32), True)
    y = F.layer_norm(x, 8, w)
    assert y.shape == (0, 8)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), 0)


def test_modules(rng):
    x = _t(_data(rng, (3, 4, 6), np.float32))
    ln = nn.LayerNorm((4, 6))
    assert ln.weight.shape == (4, 6) and ln.bias.shape == (4, 6)
    np.testing.assert_array_equal(ln.weight.detach().numpy(), 1)
    np.testing.assert_array_equal(ln.bias.detach().numpy(), 0)
    np.testing.assert_array_equal(ln(x).detach().numpy(), F.layer_norm(x, (4, 6)).numpy())
    assert repr(ln) == "LayerNorm((4, 6), eps=1e-05, elementwise_affine=True)"
    assert nn.LayerNorm(6, bias=False).bias is None
    assert len(list(nn.LayerNorm(6, elementwise_affine=False).parameters())) == 0
    rn = nn.RMSNorm(6, eps=1e-6)
    assert rn.weight.shape == (6,)
    np.testing.assert_array_equal(rn(x).detach().numpy(), F.rms_norm(x, 6, eps=1e-6).numpy())
    assert len(list(nn.RMSNorm([4, 6], elementwise_affine=False).parameters())) == 0
    assert repr(nn.RMSNorm(6)) == "RMSNorm((6,), eps=None, elementwise_affine=True)"
    ln64 = nn.LayerNorm(6, dtype=ember.float64)
    assert ln64.weight.dtype is ember.float64
    # a training step moves the parameters
    out = ln(x)
    (out * _t(rng.standard_normal(out.shape).astype(np.float32))).sum().backward()
    assert np.abs(ln.weight.grad.numpy()).max() > 0 and np.abs(ln.bias.grad.numpy()).max() > 0


def test_thread_count_does_not_change_results(rng):
    x = _data(rng, (513, 301), np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 301).astype(np.float32)
    b = rng.standard_normal(301).astype(np.float32)
    prev = ember.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            ember.set_num_threads(n)
            xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
            y = F.layer_norm(xt, 301, wt, bt)
            y.backward(_t(g))
            outs.append([y.detach().numpy()] + [t.grad.numpy() for t in (xt, wt, bt)])
    finally:
        ember.set_num_threads(prev)
    for a, c in zip(*outs):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("rms", [False, True])
def test_streamed_output(rng, cpu_path, rms):
    # An output of >= 16 MiB is written with non-temporal stores from its first 32-byte
    # boundary on (kernels/cpu/layernorm.cpp, kStreamBytes): every value written, the same
    # values at any output alignment, and as accurate as the cached path.
    rows, n = 4100, 1027  # 16.8 MB of float32; odd rows start at every 4-byte offset mod 32
    x = _data(rng, (rows, n), np.float32)
    w = rng.uniform(0.5, 1.5, n).astype(np.float32)
    b = None if rms else rng.standard_normal(n).astype(np.float32)
    outs = []
    for shift in (0, 1, 3):  # the output starts `shift` floats past an aligned buffer
        buf = np.full(rows * n + 16, np.nan, np.float32)
        start = (-buf.ctypes.data % 64) // 4 + shift
        out = buf[start : start + rows * n].reshape(rows, n)
        m, r = np.empty(rows, np.float32), np.empty(rows, np.float32)
        _C.layernorm_fwd(x, n, w, b, 1e-5, rms, out, None if rms else m, r)
        outs.append(out.copy())
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    x64 = x.astype(np.float64)
    if rms:
        want = R.rms_norm(x64, 1, w.astype(np.float64))
        plain = R.rms_norm(x, 1, w, eps=np.float32(1e-5))
    else:
        want = R.layer_norm(x64, 1, w.astype(np.float64), b.astype(np.float64))
        plain = R.layer_norm(x, 1, w, b, eps=np.float32(1e-5))
    _check32(outs[0], want, plain, np.abs(want).max(), "y")


@pytest.mark.parametrize("rms", [False, True])
def test_streamed_gradient(rng, cpu_path, rms):
    # An input gradient of >= 16 MiB is written with non-temporal stores from its first 32-byte
    # boundary on (kernels/cpu/layernorm.cpp, kStreamBytes): every value written, the same
    # values at any alignment of grad_input, as accurate as the cached path, and the weight
    # gradient unchanged by it.
    rows, n = 4100, 1027  # 16.8 MB of float32; odd rows start at every 4-byte offset mod 32
    x = _data(rng, (rows, n), np.float32)
    g = rng.standard_normal((rows, n)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, n).astype(np.float32)
    m, r = np.empty(rows, np.float32), np.empty(rows, np.float32)
    y = np.empty_like(x)
    _C.layernorm_fwd(x, n, w, None, 1e-5, rms, y, None if rms else m, r)
    outs, gws = [], []
    for shift in (0, 1, 3):  # grad_input starts `shift` floats past an aligned buffer
        buf = np.full(rows * n + 16, np.nan, np.float32)
        start = (-buf.ctypes.data % 64) // 4 + shift
        gx = buf[start : start + rows * n].reshape(rows, n)
        gw = np.empty(n, np.float32)
        _C.layernorm_bwd(g, x, n, None if rms else m, r, w, rms, gx, gw, None)
        outs.append(gx.copy())
        gws.append(gw)
    for o, gw in zip(outs[1:], gws[1:]):
        np.testing.assert_array_equal(o, outs[0])
        np.testing.assert_array_equal(gw, gws[0])
    x64, g64, w64 = x.astype(np.float64), g.astype(np.float64), w.astype(np.float64)
    if rms:
        want = R.rms_norm_vjp(g64, x64, 1, w64, eps=1e-5)
        plain = R.rms_norm_vjp(g, x, 1, w, eps=np.float32(1e-5))
    else:
        want = R.layer_norm_vjp(g64, x64, 1, w64)
        plain = R.layer_norm_vjp(g, x, 1, w, eps=np.float32(1e-5))
    _check32(outs[0], want[0], plain[0], np.abs(want[0]).max(), "grad_input")
    _check32(gws[0], want[1], plain[1], np.abs(want[1]).max(), "grad_weight")


def test_errors(rng):
    x = _t(_data(rng, (3, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"^\[layer_norm\] expected input with shape \[\*, 4\]"):
        F.layer_norm(x, 4)
    with pytest.raises(ValueError, match=r"^\[rms_norm\] expected input with shape \[\*, 3, 4"):
        F.rms_norm(x, (3, 4, 5, 6))
    with pytest.raises(ValueError, match=r"^\[layer_norm\] expected input with shape"):
        F.layer_norm(x, ())
    with pytest.raises(ValueError, match=r"^\[layer_norm\] weight must have shape \(4, 5\)"):
        F.layer_norm(x, (4, 5), _t(np.ones(20, np.float32)))
    with pytest.raises(ValueError, match=r"^\[layer_norm\] bias must have shape \(5,\)"):
        F.layer_norm(x, 5, None, _t(np.ones(4, np.float32)))
    with pytest.raises(
        TypeError, match=r"^\[layer_norm\] weight is ember.float64 but input is ember.float32"
    ):
        F.layer_norm(x, 5, _t(np.ones(5)))
    with pytest.raises(TypeError, match=r"^\[rms_norm\] input must be a floating point"):
        F.rms_norm(_t(np.ones((2, 3), np.int64)), 3)
    with pytest.raises(TypeError, match=r"^\[layer_norm\] normalized_shape must be an int"):
        F.layer_norm(x, "5")
    with pytest.raises(TypeError, match=r"^\[layer_norm\] weight must be a Tensor"):
        F.layer_norm(x, 5, np.ones(5, np.float32))


def test_boundary_errors():
    x = np.zeros((3, 4), np.float32)
    out, m, r = np.empty_like(x), np.empty(3, np.float32), np.empty(3, np.float32)
    with pytest.raises(ValueError, match=r"^\[layer_norm\] normalized size 5 does not divide"):
        _C.layernorm_fwd(x, 5, None, None, 1e-5, False, out, m, r)
    with pytest.raises(TypeError, match=r"^\[layer_norm\] weight has dtype float64"):
        _C.layernorm_fwd(x, 4, np.ones(4), None, 1e-5, False, out, m, r)
    with pytest.raises(ValueError, match=r"^\[layer_norm\] bias must have 4 elements"):
        _C.layernorm_fwd(x, 4, None, np.ones(3, np.float32), 1e-5, False, out, m, r)
    with pytest.raises(ValueError, match=r"^\[layer_norm\] rstd must have 3 elements"):
        _C.layernorm_fwd(x, 4, None, None, 1e-5, False, out, m, r[:2])
    with pytest.raises(ValueError, match=r"^\[layer_norm\] mean must be an array"):
        _C.layernorm_fwd(x, 4, None, None, 1e-5, False, out, None, r)
    with pytest.raises(ValueError, match=r"^\[rms_norm\] RMS norm takes no bias"):
        _C.layernorm_fwd(x, 4, None, np.ones(4, np.float32), 1e-5, True, out, None, r)
    with pytest.raises(ValueError, match=r"^\[layer_norm\] an output overlaps an input"):
        _C.layernorm_fwd(x, 4, None, None, 1e-5, False, x, m, r)
    with pytest.raises(ValueError, match=r"^\[layer_norm\] outputs overlap each other"):
        _C.layernorm_fwd(x, 4, None, None, 1e-5, False, out, m, m)
    with pytest.raises(ValueError, match=r"^\[layer_norm\] grad_out has shape \[4, 3\]"):
        _C.layernorm_bwd(x.T.copy(), x, 4, m, r, None, False, out, None, None)
    with pytest.raises(ValueError, match=r"^\[layer_norm\] grad_weight is read-only"):
        gw = np.empty(4, np.float32)
        gw.flags.writeable = False
        _C.layernorm_bwd(x, x, 4, m, r, None, False, None, gw, None)


def test_against_torch_if_available(rng):
    torch = pytest.importorskip("torch")
    x = _data(rng, (16, 9, 40), np.float32)
    w = rng.uniform(0.5, 1.5, (9, 40)).astype(np.float32)
    b = rng.standard_normal((9, 40)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    xr, wr, br = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    F.layer_norm(xt, (9, 40), wt, bt).backward(_t(g))
    yr = torch.nn.functional.layer_norm(xr, (9, 40), wr, br)
    yr.backward(torch.tensor(g))
    np.testing.assert_allclose(
        F.layer_norm(_t(x), (9, 40), _t(w), _t(b)).numpy(), yr.detach().numpy(), atol=2e-5
    )
    for a, r in ((xt, xr), (wt, wr), (bt, br)):
        np.testing.assert_allclose(a.grad.numpy(), r.grad.numpy(), rtol=1e-4, atol=1e-4)
    xt, wt = _t(x, True), _t(w[0], True)
    xr, wr = torch.tensor(x, requires_grad=True), torch.tensor(w[0], requires_grad=True)
    y = F.rms_norm(xt, 40, wt)
    y.backward(_t(g))
    yr = torch.nn.functional.rms_norm(xr, (40,), wr)
    yr.backward(torch.tensor(g))
    np.testing.assert_allclose(y.detach().numpy(), yr.detach().numpy(), rtol=1e-5, atol=1e-5)
    for a, r in ((xt, xr), (wt, wr)):
        np.testing.assert_allclose(a.grad.numpy(), r.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_non_contiguous_input(rng, cpu_path):
    base = _data(rng, (6, 10, 8), np.float64)
    view = base.transpose(1, 0, 2)[:, ::2]  # [10, 3, 8], not contiguous
    w = rng.uniform(0.5, 1.5, 8)
    xt = ember.from_numpy(view).requires_grad_()  # a non-contiguous tensor (no copy)
    assert not xt._array.flags.c_contiguous
    y = F.layer_norm(xt, 8, _t(w))
    np.testing.assert_allclose(y.detach().numpy(), R.layer_norm(view, 1, w), rtol=1e-12)
    g = rng.standard_normal(view.shape)
    y.backward(_t(g))
    gwant = R.layer_norm_vjp(g, view, 1, w)[0]
    np.testing.assert_allclose(xt.grad.numpy(), gwant, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(
        F.rms_norm(ember.from_numpy(view), (3, 8)).numpy(), R.rms_norm(view, 2), rtol=1e-12
    )
