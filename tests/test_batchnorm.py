"""Batch-norm: kernels vs float64 numpy references (forward train/eval, VJP), gradcheck in
float64, running statistics, the constant-input and NaN cases, errors, the modules, and an
optional PyTorch cross-check."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.autograd import gradcheck

# [N, C], [N, C, L], [N, C, H, W]; odd sizes, S not a multiple of 8, C = 1, fewer rows than
# reduction pieces (N*C < 16) and more, sizes above the threading threshold, and short rows
# (S < 8: float32 works across the C*S values of a sample, in chunks of 512 positions with a
# scalar tail past the last multiple of 8, 4 samples per step plus single ones, and sample
# blocks of >= 64 samples).
SHAPES = [(7, 5), (6, 3, 13), (4, 3, 5, 7), (3, 1, 9, 11), (5, 17, 3, 3), (8, 4, 33, 35),
          (4, 20, 21, 23), (300, 37), (130, 20, 3), (70, 2, 4), (67, 531)]  # fmt: skip


def _t(a, grad=False):
    t = ember.from_numpy(np.ascontiguousarray(a))
    return t.requires_grad_() if grad else t


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _bc(v, x):  # [C] -> broadcastable against x
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def ref_forward(x, w, b, eps, mean=None, var=None):
    """float64 batch norm; batch statistics when mean/var are None."""
    x = x.astype(np.float64)
    if mean is None:
        mean, var = x.mean(_axes(x)), x.var(_axes(x))
    y = (x - _bc(mean, x)) / np.sqrt(_bc(var, x) + eps)
    if w is not None:
        y = y * _bc(w, x) + _bc(b, x)
    return y, mean, var


def ref_vjp(x, g, w, eps, training, rvar=None, rmean=None):
    x, g = x.astype(np.float64), g.astype(np.float64)
    ax = _axes(x)
    if training:
        mean, var = x.mean(ax), x.var(ax)
    else:
        mean, var = rmean.astype(np.float64), rvar.astype(np.float64)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x - _bc(mean, x)) * _bc(inv, x)
    wc = np.ones(x.shape[1]) if w is None else w.astype(np.float64)
    if training:
        gx = _bc(inv * wc, x) * (
            g - g.mean(ax, keepdims=True) - xhat * (g * xhat).mean(ax, keepdims=True)
        )
    else:
        gx = g * _bc(inv * wc, x)
    return gx, (g * xhat).sum(ax), g.sum(ax)


def _data(rng, shape, dtype):
    x = rng.standard_normal(shape) * 2.0 + 0.7
    x.flat[0] = 9.0  # an outlier
    return x.astype(dtype)


def _close32(got, ref, plain):
    """float32 error at most ~2x that of a plain float32 numpy computation (+ a tiny floor)."""
    err = np.abs(got.astype(np.float64) - ref).max()
    base = np.abs(plain.astype(np.float64) - ref).max()
    floor = 4e-7 * max(1.0, np.abs(ref).max())
    assert err <= 2 * base + floor, (err, base)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_forward_train_and_eval(rng, cpu_path, poison, shape, dtype, affine):
    C = shape[1]
    x = _data(rng, shape, dtype)
    w = rng.uniform(0.5, 1.5, C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    eps = 1e-5
    rm0 = rng.standard_normal(C).astype(dtype)
    rv0 = rng.uniform(0.5, 2.0, C).astype(dtype)
    rm, rv = _t(rm0.copy()), _t(rv0.copy())
    wt = None if w is None else _t(w)
    bt = None if b is None else _t(b)
    y = F.batch_norm(_t(x), rm, rv, wt, bt, training=True, momentum=0.1, eps=eps).detach().numpy()
    ref, mean, var = ref_forward(x, w, b, eps)
    n = x.size // C
    rm_ref = 0.9 * rm0 + 0.1 * mean
    rv_ref = 0.9 * rv0 + 0.1 * var * n / (n - 1)
    if dtype == np.float64:
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(rm.detach().numpy(), rm_ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rv.detach().numpy(), rv_ref, rtol=1e-12)
    else:
        ax = _axes(x)
        m32 = x.mean(ax, dtype=np.float32)
        v32 = x.var(ax, dtype=np.float32)
        plain = (x - _bc(m32, x)) / np.sqrt(_bc(v32, x) + np.float32(eps))
        if w is not None:
            plain = plain * _bc(w, x) + _bc(b, x)
        _close32(y, ref, plain)
        np.testing.assert_allclose(rm.detach().numpy(), rm_ref, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(rv.detach().numpy(), rv_ref, rtol=2e-6)
    # eval: running statistics, not touched
    rm1, rv1 = rm.detach().numpy().copy(), rv.detach().numpy().copy()
    ye = F.batch_norm(_t(x), rm, rv, wt, bt, training=False, eps=eps).detach().numpy()
    ref_e, _, _ = ref_forward(x, w, b, eps, rm1.astype(np.float64), rv1.astype(np.float64))
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(ye, ref_e, rtol=tol, atol=tol * np.abs(ref_e).max())
    np.testing.assert_array_equal(rm.detach().numpy(), rm1)
    np.testing.assert_array_equal(rv.detach().numpy(), rv1)


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 5), (2, 3, 2, 3)])
def test_gradcheck_training(rng, cpu_path, shape):
    C = shape[1]
    x = _t(_data(rng, shape, np.float64), grad=True)
    w = _t(rng.uniform(0.5, 1.5, C), grad=True)
    b = _t(rng.standard_normal(C), grad=True)
    assert gradcheck(lambda a, ww, bb: F.batch_norm(a, None, None, ww, bb, True), (x, w, b))
    assert gradcheck(lambda a: F.batch_norm(a, None, None, training=True), (x,))


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 2, 3)])
def test_gradcheck_eval(rng, cpu_path, shape):
    C = shape[1]
    x = _t(_data(rng, shape, np.float64), grad=True)
    w = _t(rng.uniform(0.5, 1.5, C), grad=True)
    b = _t(rng.standard_normal(C), grad=True)
    rm, rv = _t(rng.standard_normal(C)), _t(rng.uniform(0.5, 2.0, C))
    assert gradcheck(lambda a, ww, bb: F.batch_norm(a, rm, rv, ww, bb, False), (x, w, b))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_vjp_float32(rng, cpu_path, poison, shape, training):
    C = shape[1]
    x = _data(rng, shape, np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w = rng.uniform(0.5, 1.5, C).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    rm = rng.standard_normal(C).astype(np.float32)
    rv = rng.uniform(0.5, 2.0, C).astype(np.float32)
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    y = F.batch_norm(xt, _t(rm), _t(rv), wt, bt, training=training, eps=1e-5)
    y.backward(_t(g))
    ref = ref_vjp(x, g, w, 1e-5, training, rv, rm)
    # plain float32 numpy version of the same VJP
    ax = _axes(x)
    if training:
        m, v = x.mean(ax, dtype=np.float32), x.var(ax, dtype=np.float32)
    else:
        m, v = rm, rv
    inv = (1 / np.sqrt(v + np.float32(1e-5))).astype(np.float32)
    xh = (x - _bc(m, x)) * _bc(inv, x)
    if training:
        pgx = _bc(inv * w, x) * (
            g - g.mean(ax, keepdims=True) - xh * (g * xh).mean(ax, keepdims=True)
        )
    else:
        pgx = g * _bc(inv * w, x)
    plain = (pgx, (g * xh).sum(ax), g.sum(ax))
    for got, r, p in zip((xt.grad, wt.grad, bt.grad), ref, plain):
        _close32(got.detach().numpy(), r, p)


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (130, 3, 4), (70, 3)])
def test_constant_input_gives_zero_variance(cpu_path, shape):
    for dtype in (np.float32, np.float64):
        x = np.full(shape, 0.1, dtype)  # 0.1: not exact in binary
        x[:, 1] = 1e4
        rm, rv = _t(np.zeros(3, dtype)), _t(np.ones(3, dtype))
        w, b = (
            _t(np.array([2.0, -1.0, 3.0], dtype), True),
            _t(np.array([0.5, 0.25, -1.0], dtype), True),
        )
        xt = _t(x, True)
        y = F.batch_norm(xt, rm, rv, w, b, training=True, momentum=1.0)
        np.testing.assert_array_equal(rv.detach().numpy(), np.zeros(3))  # unbiased var, momentum 1
        np.testing.assert_array_equal(rm.detach().numpy(), x.reshape(shape[0], 3, -1)[0, :, 0])
        np.testing.assert_array_equal(
            y.detach().numpy(), np.broadcast_to(_bc(b.detach().numpy(), x), x.shape)
        )
        y.backward(_t(np.random.default_rng(0).standard_normal(x.shape).astype(dtype)))
        assert np.isfinite(xt.grad.detach().numpy()).all()
        assert np.isfinite(w.grad.detach().numpy()).all()


@pytest.mark.parametrize("shape", [(4, 3, 9), (40, 3, 5)])
def test_nan_propagates_within_its_channel(cpu_path, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    x[2, 1, 4] = np.nan
    y = F.batch_norm(_t(x), None, None, training=True).detach().numpy()
    assert np.isnan(y[:, 1]).all()
    assert np.isfinite(y[:, [0, 2]]).all()
    ye = (
        F.batch_norm(_t(x), _t(np.zeros(3, np.float32)), _t(np.ones(3, np.float32)))
        .detach()
        .numpy()
    )
    flat = np.ravel_multi_index((2, 1, 4), shape)
    assert np.isnan(ye[2, 1, 4]) and np.isfinite(np.delete(ye.ravel(), flat)).all()


def test_non_contiguous_and_empty_inputs(rng):
    base = _data(rng, (3, 4, 6, 5), np.float64)
    x = np.swapaxes(base, 2, 3)  # a strided view: made contiguous before the kernel
    y = F.batch_norm(ember.from_numpy(x), None, None, training=True).detach().numpy()
    np.testing.assert_allclose(y, ref_forward(x, None, None, 1e-5)[0], rtol=1e-12, atol=1e-12)
    rm, rv = _t(np.zeros(4)), _t(np.ones(4))
    assert F.batch_norm(_t(np.zeros((0, 4, 3))), rm, rv).shape == (0, 4, 3)  # eval, N = 0


@pytest.mark.parametrize("shape", [(8, 4, 33, 35), (1000, 48), (2, 8, 40, 41)])
def test_threads_give_identical_results(rng, shape):
    x = _data(rng, shape, np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    old = ember.get_num_threads()
    outs = []
    try:
        for nth in (1, 2, 3):
            ember.set_num_threads(nth)
            xt = _t(x, True)
            y = F.batch_norm(xt, None, None, training=True)
            y.backward(_t(g))
            outs.append((y.detach().numpy(), xt.grad.detach().numpy()))
    finally:
        ember.set_num_threads(old)
    for o in outs[1:]:
        np.testing.assert_array_equal(o[0], outs[0][0])
        np.testing.assert_array_equal(o[1], outs[0][1])


def test_errors():
    x = _t(np.zeros((4, 3, 5), np.float32))
    rm, rv = _t(np.zeros(3, np.float32)), _t(np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"\[batch_norm\] weight must have shape \(3,\)"):
        F.batch_norm(x, rm, rv, _t(np.ones(4, np.float32)), None, True)
    with pytest.raises(ValueError, match=r"\[batch_norm\] running_mean must have shape"):
        F.batch_norm(x, _t(np.zeros(2, np.float32)), rv)
    with pytest.raises(ValueError, match=r"\[batch_norm\] input must have at least 2 dims"):
        F.batch_norm(_t(np.zeros(3, np.float32)), rm, rv)
    with pytest.raises(
        ValueError,
        match=r"\[batch_norm\] expected more than 1 value per channel when training, got "
        r"input of shape \(1, 3\)",
    ):
        F.batch_norm(_t(np.zeros((1, 3), np.float32)), rm, rv, training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm2d(3)(_t(np.zeros((1, 3, 1, 1), np.float32)))
    nn.BatchNorm2d(3).eval()(_t(np.zeros((1, 3, 1, 1), np.float32)))  # fine in eval
    with pytest.raises(TypeError, match=r"\[batch_norm\] input must be a floating point"):
        F.batch_norm(_t(np.zeros((4, 3), np.int64)), rm, rv)
    with pytest.raises(
        TypeError, match=r"\[batch_norm\] running_var is ember.float64 but input is ember.float32"
    ):
        F.batch_norm(x, rm, _t(np.ones(3)))
    with pytest.raises(ValueError, match="must be given when not training"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match=r"\[BatchNorm2d\] expected 4D input \(got 3D input\)"):
        nn.BatchNorm2d(3)(x)
    with pytest.raises(ValueError, match=r"\[BatchNorm1d\] expected 2D or 3D input"):
        nn.BatchNorm1d(3)(_t(np.zeros((2, 3, 4, 4), np.float32)))
    with pytest.raises(ValueError, match=r"\[BatchNorm1d\] num_features"):
        nn.BatchNorm1d(0)


def test_c_boundary_errors():
    x = np.zeros((4, 3, 5), np.float32)
    out = np.empty_like(x)
    v = [np.empty(3, np.float32) for _ in range(3)]
    with pytest.raises(TypeError, match=r"\[batch_norm\] input has dtype int32"):
        ember._C.batchnorm_fwd_train(x.astype(np.int32), None, None, 1e-5, out, *v)
    with pytest.raises(ValueError, match=r"\[batch_norm\] out must be C-contiguous"):
        ember._C.batchnorm_fwd_train(x, None, None, 1e-5, np.empty((5, 3, 4), np.float32).T, *v)
    with pytest.raises(ValueError, match=r"\[batch_norm\] out is read-only"):
        ro = np.empty_like(x)
        ro.flags.writeable = False
        ember._C.batchnorm_fwd_train(x, None, None, 1e-5, ro, *v)
    with pytest.raises(ValueError, match=r"\[batch_norm\] mean must have shape \[3\]"):
        ember._C.batchnorm_fwd_train(x, None, None, 1e-5, out, np.empty(4, np.float32), *v[1:])
    with pytest.raises(ValueError, match=r"\[batch_norm\] out overlaps an input"):
        ember._C.batchnorm_fwd_train(x, None, None, 1e-5, x, *v)


def test_running_stats_momentum_and_cumulative(rng):
    batches = [_data(rng, (6, 3, 4), np.float64) for _ in range(3)]
    for momentum in (0.3, None):
        m = nn.BatchNorm1d(3, momentum=momentum).double()
        rm, rv = np.zeros(3), np.ones(3)
        for k, x in enumerate(batches, 1):
            m(_t(x))
            mean, var = x.mean((0, 2)), x.var((0, 2), ddof=1)
            f = 1.0 / k if momentum is None else momentum
            rm, rv = (1 - f) * rm + f * mean, (1 - f) * rv + f * var
            assert m.num_batches_tracked.item() == k
            np.testing.assert_allclose(m.running_mean.detach().numpy(), rm, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(m.running_var.detach().numpy(), rv, rtol=1e-12)
        if momentum is None:  # cumulative average = plain mean of the batch statistics
            np.testing.assert_allclose(rm, np.mean([x.mean((0, 2)) for x in batches], 0))


def test_module_train_eval_behaviour(rng):
    x = _data(rng, (5, 4), np.float32)
    m = nn.BatchNorm1d(4)
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    assert list(m.state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"
    ]  # fmt: skip
    m(_t(x))
    m.eval()
    rm, rv = m.running_mean.detach().numpy().copy(), m.running_var.detach().numpy().copy()
    y = m(_t(x)).detach().numpy()
    ref, _, _ = ref_forward(x, np.ones(4), np.zeros(4), 1e-5, rm, rv)
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=2e-6)
    assert m.num_batches_tracked.item() == 1
    # no running statistics: batch statistics in eval mode too, no buffers
    m2 = nn.BatchNorm1d(4, affine=False, track_running_stats=False).eval()
    assert list(m2.parameters()) == [] and list(m2.buffers()) == []
    ref2, _, _ = ref_forward(x, None, None, 1e-5)
    np.testing.assert_allclose(m2(_t(x)).detach().numpy(), ref2, rtol=2e-6, atol=2e-6)
    # BatchNorm2d on [N, C, H, W], [N, C, L] through BatchNorm1d, float64 after .double()
    m3 = nn.BatchNorm2d(3).double()
    x4 = _data(rng, (2, 3, 4, 5), np.float64)
    np.testing.assert_allclose(
        m3(_t(x4)).detach().numpy(), ref_forward(x4, None, None, 1e-5)[0], rtol=1e-12, atol=1e-12
    )
    assert m3.num_batches_tracked.dtype == ember.int64


def test_against_torch_if_available(rng):
    torch = pytest.importorskip("torch")
    C = 5
    ours, theirs = nn.BatchNorm2d(C, momentum=0.2), torch.nn.BatchNorm2d(C, momentum=0.2)
    w, b = rng.uniform(0.5, 1.5, C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    ours.weight.data = _t(w)
    ours.bias.data = _t(b)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(w))
        theirs.bias.copy_(torch.from_numpy(b))
    for _step in range(3):
        x = _data(rng, (4, C, 6, 7), np.float32)
        g = rng.standard_normal(x.shape).astype(np.float32)
        xo, xt = _t(x, True), torch.tensor(x, requires_grad=True)
        yo, yt = ours(xo), theirs(xt)
        yo.backward(_t(g))
        yt.backward(torch.from_numpy(g))
        np.testing.assert_allclose(
            yo.detach().numpy(), yt.detach().detach().numpy(), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            xo.grad.detach().numpy(), xt.grad.detach().numpy(), rtol=1e-4, atol=1e-5
        )
    np.testing.assert_allclose(
        ours.weight.grad.detach().numpy(), theirs.weight.grad.detach().numpy(), rtol=1e-4
    )
    np.testing.assert_allclose(
        ours.bias.grad.detach().numpy(), theirs.bias.grad.detach().numpy(), rtol=1e-4
    )
    np.testing.assert_allclose(
        ours.running_mean.detach().numpy(),
        theirs.running_mean.detach().numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        ours.running_var.detach().numpy(), theirs.running_var.detach().numpy(), rtol=1e-5
    )
    ours.eval()
    theirs.eval()
    x = _data(rng, (3, C, 4, 4), np.float32)
    np.testing.assert_allclose(
        ours(_t(x)).detach().numpy(),
        theirs(torch.from_numpy(x)).detach().detach().numpy(),
        rtol=1e-5,
        atol=1e-5,
    )


# ------------------------------------------------------------------------------ group norm


def ref_group_norm(x, G, w, b, eps):
    x = x.astype(np.float64)
    N, C = x.shape[:2]
    v = x.reshape(N, G, -1)
    xh = ((v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + eps)).reshape(
        x.shape
    )
    if w is not None:
        xh = xh * _bc(w.astype(np.float64), x) + _bc(b.astype(np.float64), x)
    return xh


GN_CASES = [((3, 6, 5, 4), 3), ((2, 4, 7), 2), ((5, 8), 4), ((2, 32, 3, 3), 8), ((1, 5, 9), 1)]


@pytest.mark.parametrize("shape,G", GN_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_norm_forward(rng, cpu_path, poison, shape, G, dtype):
    C = shape[1]
    x = _data(rng, shape, dtype)
    w = rng.uniform(0.5, 1.5, C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    y = F.group_norm(_t(x), G, _t(w), _t(b)).detach().numpy()
    ref = ref_group_norm(x, G, w, b, 1e-5)
    tol = 1e-12 if dtype == np.float64 else 3e-6
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol * np.abs(ref).max())
    y2 = nn.GroupNorm(G, C, affine=False)  # no parameters: dtype follows the input
    np.testing.assert_allclose(
        y2(_t(x)).detach().numpy(), ref_group_norm(x, G, None, None, 1e-5), rtol=tol, atol=tol * 10
    )


@pytest.mark.parametrize("shape,G", [((3, 6, 2, 2), 3), ((2, 4, 3), 4), ((4, 6), 2)])
def test_group_norm_gradcheck(rng, cpu_path, shape, G):
    C = shape[1]
    x = _t(_data(rng, shape, np.float64), grad=True)
    w = _t(rng.uniform(0.5, 1.5, C), grad=True)
    b = _t(rng.standard_normal(C), grad=True)
    assert gradcheck(lambda a, ww, bb: F.group_norm(a, G, ww, bb), (x, w, b))


def test_group_norm_one_value_per_group_and_errors():
    x = _t(np.random.default_rng(0).standard_normal((2, 4)), grad=True)
    y = F.group_norm(x, 4)  # as PyTorch: x - mean = 0, gradient 0
    np.testing.assert_array_equal(y.detach().numpy(), np.zeros((2, 4)))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.detach().numpy(), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\[group_norm\] expected the number of channels"):
        F.group_norm(_t(np.zeros((2, 6, 3))), 4)
    with pytest.raises(ValueError, match=r"\[group_norm\] weight must have shape \(6,\)"):
        F.group_norm(_t(np.zeros((2, 6, 3))), 3, _t(np.ones(3)))
    with pytest.raises(TypeError, match=r"\[group_norm\] input must be a floating point"):
        F.group_norm(_t(np.zeros((2, 6, 3), np.int32)), 3)
    with pytest.raises(ValueError, match=r"\[GroupNorm\] num_channels \(6\) must be divisible"):
        nn.GroupNorm(4, 6)


def test_group_norm_against_torch_if_available(rng):
    torch = pytest.importorskip("torch")
    x = _data(rng, (4, 12, 7, 5), np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    ours, theirs = nn.GroupNorm(4, 12), torch.nn.GroupNorm(4, 12)
    xo, xt = _t(x, True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    yo.backward(_t(g))
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(yo.detach().numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xo.grad.detach().numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        ours.weight.grad.detach().numpy(), theirs.weight.grad.numpy(), rtol=1e-4, atol=1e-4
    )


def test_inplace_change_after_forward_is_caught(rng):
    x = _t(_data(rng, (4, 3, 5), np.float64), grad=True)
    for fn in (lambda a: F.batch_norm(a, None, None, training=True), lambda a: F.group_norm(a, 3)):
        h = x * 1.0
        y = fn(h)
        with ember.no_grad():
            h.add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an in-place operation"):
            y.sum().backward()
