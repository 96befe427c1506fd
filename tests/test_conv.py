"""Convolution: F.conv2d / F.conv1d forward and backward (input, weight, bias) against the
float64 numpy reference on both CPU kernel paths, gradcheck in float64, edge cases, error
inputs, the modules, and an optional PyTorch cross-check."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
import reference as R
from ember.autograd import gradcheck

# (N, C, H, W, O, (KH, KW), stride, padding, dilation, groups): every option, odd sizes,
# and sizes that take several im2col tiles / several threads.
CASES = [
    (2, 3, 9, 11, 4, (3, 3), 1, 0, 1, 1),
    (2, 4, 9, 11, 6, (3, 3), 2, 1, 1, 1),
    (2, 4, 10, 11, 6, (2, 3), (2, 1), (1, 2), (2, 1), 2),
    (3, 5, 7, 8, 2, (1, 1), 1, 0, 1, 1),  # pointwise: GEMM on x directly
    (2, 8, 6, 5, 8, (1, 1), 1, 0, 1, 2),  # pointwise, grouped
    (2, 4, 7, 9, 3, (1, 1), 2, 1, 1, 1),  # 1x1 with stride and padding: im2col path
    (2, 6, 12, 13, 6, (3, 3), 1, 1, 1, 6),  # depthwise
    (2, 6, 12, 13, 6, (3, 3), 1, 2, 2, 6),  # depthwise, dilated
    (2, 6, 12, 13, 6, (5, 3), 1, (2, 0), 1, 6),  # depthwise, 5x3, asymmetric padding
    (1, 4, 11, 10, 4, (3, 3), 2, 1, 1, 4),  # depthwise, strided: GEMM path
    (2, 4, 11, 10, 8, (3, 3), 1, 1, 1, 4),  # channel multiplier 2
    (2, 8, 12, 13, 16, (3, 3), 1, "same", 1, 1),
    (2, 4, 12, 13, 5, (4, 2), 1, "same", 1, 1),  # even kernel: asymmetric padding
    (2, 4, 12, 13, 5, (4, 3), 1, "same", (2, 3), 1),
    (2, 3, 8, 9, 4, (3, 3), 1, "valid", 1, 1),
    (1, 16, 40, 40, 32, (3, 3), 1, 1, 1, 1),  # several tiles, batch 1
    (3, 64, 24, 24, 8, (3, 3), 1, 1, 1, 1),  # K = 576: tiles of a few rows
    (2, 7, 5, 6, 9, (5, 6), 1, 0, 1, 1),  # kernel = input
    (2, 3, 1, 1, 4, (1, 1), 1, 0, 1, 1),  # 1x1 image
    (2, 3, 1, 1, 4, (3, 3), 1, 1, 1, 1),  # 1x1 image, padded 3x3
    (1, 3, 5, 5, 2, (3, 3), 3, 1, 1, 1),  # stride = kernel
    # C/G >= 32, stride 1: the shifted-GEMM forward (padded slab, one GEMM per tap)
    (2, 64, 9, 10, 6, (4, 3), 1, "same", (2, 1), 1),
    (1, 64, 11, 9, 4, (3, 3), 1, (0, 2), 1, 2),
    (2, 32, 7, 8, 5, (3, 2), 1, 0, 1, 1),
    (1, 64, 70, 64, 4, (3, 3), 1, 1, 1, 1),  # several slab tiles
    (1, 256, 30, 31, 64, (3, 3), 1, 1, 1, 1),  # slab tiles, shifted input gradient (AVX2)
    (2, 8, 20, 45, 6, (3, 3), 2, 1, (1, 2), 1),  # stride 2 on rows wide enough for vectors
    (2, 32, 5, 6, 4, (3, 3), 1, 4, 1, 1),  # padding > kernel: all-zero windows (shifted)
    # O/G >= 32, stride 1: the input gradient as a forward of gy (flipped kernel, implicit GEMM)
    # (C/G >= 64 too)
    (2, 64, 9, 10, 64, (4, 3), 1, "same", (2, 1), 1),
    (1, 128, 11, 9, 64, (3, 3), 1, (0, 2), 1, 2),
    (9, 32, 5, 6, 40, (3, 3), 1, 1, 1, 1),  # small maps: several images per slab and GEMM
    (9, 64, 5, 6, 64, (3, 3), 1, (1, 2), (1, 2), 1),  # the same, and for the input gradient
    (2, 64, 6, 7, 32, (2, 3), 1, (2, 1), 1, 1),  # padding > (KH-1)*dh: the old shifted path
    (2, 4, 5, 6, 4, (3, 3), 1, (4, 3), 1, 4),  # the same, depthwise
    (2, 4, 5, 6, 4, (2, 3), 3, 4, 1, 1),  # the same, im2col
    # stride 1, < 64 channels per group (AVX-512): the direct forward / input gradient and the
    # stacked weight gradient
    (2, 16, 7, 8, 8, (3, 3), 1, 1, 1, 1),
    (3, 20, 9, 6, 14, (3, 3), 1, 2, 2, 1),  # dilated; 14 = 12 + 2 / 8 + 6 output channels
    (2, 16, 9, 10, 8, (3, 3), 1, 1, 1, 2),  # grouped
    (2, 12, 13, 11, 10, (5, 5), 1, 2, 1, 1),  # 25 taps: direct forward, GEMM weight gradient
    (1, 48, 100, 64, 4, (3, 3), 1, 1, 1, 1),  # several slab tiles of the direct forward
    (70, 8, 7, 7, 6, (3, 3), 1, 1, 1, 1),  # several stacks of images (weight gradient)
    (2, 3, 12, 13, 33, (4, 2), 1, "same", 1, 1),  # even kernel, asymmetric padding, 33 outputs
    # >= 32 output channels per group on small maps or with strides (AVX-512): the forward /
    # input gradient vectorised over output channels (pixel tiles over several images)
    (5, 24, 7, 7, 70, (3, 3), 1, 1, 1, 1),  # 70 = 64 + 6 channels; 3 + 2 images per task
    (3, 16, 14, 13, 48, (3, 3), 2, 1, 1, 1),  # stride 2: phase planes; 48 = 3 vectors
    (2, 64, 8, 9, 64, (3, 3), 1, 2, 2, 2),  # grouped (32 per group), dilated
    (1, 8, 16, 16, 32, (3, 3), 2, (1, 0), 1, 1),  # asymmetric padding, batch 1
    # tap groups: border pixels skip the taps over the padding; padding 3 leaves output rows
    # and columns with no tap inside the image; dilation 2 with padding 2 (groups of 1 pixel
    # per image join the all-tap group)
    (3, 8, 5, 5, 32, (3, 3), 1, 3, 1, 1),
    (2, 16, 6, 7, 48, (3, 3), 1, 2, 2, 1),
    # > 8 input channels per group (AVX-512): the weight gradient vectorised over input
    # channels on a channels-last slab
    (9, 40, 6, 5, 7, (3, 3), 1, 1, 1, 1),  # 40 = 3 vectors with 8 zero lanes; 7 = 4 + 3 outputs
    (2, 32, 9, 8, 6, (5, 5), 1, 2, 1, 1),  # 25 taps in blocks of 3 (two channel vectors)
    (2, 12, 15, 14, 12, (3, 3), 2, 2, 2, 1),  # stride and dilation 2: phase planes
    (2, 20, 13, 12, 6, (3, 3), 3, 1, 1, 2),  # stride 3, 10 channels per group
    # strides > 1, >= 8 input channels per group (AVX-512): the input gradient by phases of gx
    (2, 8, 11, 10, 6, (2, 2), 3, 0, 1, 1),  # stride 3 > kernel: phases no tap reaches are 0
    (3, 16, 9, 12, 20, (3, 3), (2, 1), (1, 0), 1, 1),  # strides (2, 1), asymmetric padding
    (2, 24, 10, 9, 8, (3, 2), 2, 2, (2, 1), 2),  # grouped, dilated, padding 2: shifts < 0
    # > 2 MFLOP, so two threads split it: several tasks / pieces of the phased input gradient,
    # the channel-vectorised weight gradient and the strided channel-vectorised forward
    (8, 16, 14, 14, 32, (3, 3), 2, 1, 1, 1),
    # 3x3 stride 1, >= 16 channels per group (AVX-512): Winograd F(2x2, 3x3) forward, input
    # gradient and (maps of 64+ pixels) weight gradient; without AVX-512 the same shapes take
    # the paths above. Odd output sizes (partial 2x2 tiles), padding 0 / 2 / asymmetric / "same",
    # output-channel blocks of 12 and 8 with edges, one tile row or column (a vector of 16
    # tiles spans 16 tile rows), several tasks per image, a small map with 64 channels
    (3, 16, 9, 8, 20, (3, 3), 1, 1, 1, 1),
    (2, 17, 10, 11, 16, (3, 3), 1, 0, 1, 1),
    (2, 32, 10, 9, 37, (3, 3), 1, 2, 1, 1),
    (2, 32, 12, 10, 32, (3, 3), 1, (0, 2), 1, 2),
    (2, 16, 12, 13, 24, (3, 3), 1, "same", 1, 1),
    (1, 64, 5, 5, 16, (3, 3), 1, 1, 1, 1),
    (2, 16, 2, 40, 16, (3, 3), 1, 1, 1, 1),
    (1, 16, 40, 2, 24, (3, 3), 1, 1, 1, 1),
    (2, 64, 30, 33, 64, (3, 3), 1, 1, 1, 1),
    # a map under 64 pixels with 64 input channels: Winograd on AVX-512, the channel-vector
    # forward (and the Winograd input gradient) on AVX2
    (3, 64, 7, 7, 40, (3, 3), 1, 1, 1, 1),
    # one input channel, stride 1, 2..9 taps: the forward along output rows (fwd_plane: channel
    # pairs on AVX-512, a masked last vector per row, blocks past the end repeating the last)
    (3, 1, 28, 28, 32, (3, 3), 1, 1, 1, 1),  # the MNIST stem: rows of 16 + 12
    (2, 1, 9, 17, 5, (3, 3), 1, 0, 1, 1),  # 5 channels: the last pair is one channel twice
    (1, 1, 12, 33, 7, (2, 2), 1, 1, 1, 1),  # 4 taps, rows of 34 (3 vectors), batch 1
    (2, 1, 10, 20, 4, (1, 3), 1, (0, 1), 1, 1),  # 1x3
    (2, 1, 11, 9, 3, (3, 3), 1, 2, 2, 1),  # dilated
    (2, 1, 8, 8, 6, (2, 4), 1, "same", 1, 1),  # 8 taps, asymmetric padding
    (1, 1, 5, 3, 2, (3, 1), 1, 0, 1, 1),  # rows of 3: one masked vector each
    (8, 1, 28, 30, 33, (3, 3), 1, 1, 1, 1),  # > 2 MFLOP: two threads split the images
    # 2-3 input channels: stacked planes (AVX2; AVX-512 up to 9 taps in all)
    (2, 3, 12, 13, 8, (3, 3), 1, 1, 1, 1),  # an RGB stem
    (2, 2, 9, 20, 5, (2, 2), 1, "same", 1, 1),  # 8 taps: the AVX-512 kernel too
    (1, 3, 17, 33, 6, (3, 3), 1, 2, 2, 1),  # dilated, rows of 33
]


def _pads(padding, ksize, dilation):
    """The (top, bottom, left, right) padding the functional computes (PyTorch's rule)."""
    dil = (dilation,) * 2 if isinstance(dilation, int) else dilation
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        tot = [d * (k - 1) for d, k in zip(dil, ksize)]
        return (tot[0] // 2, tot[0] - tot[0] // 2, tot[1] // 2, tot[1] - tot[1] // 2)
    p = (padding,) * 2 if isinstance(padding, int) else padding
    return (p[0], p[0], p[1], p[1])


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _data(rng, shape, dtype):
    a = rng.standard_normal(shape)
    if a.size:
        a.flat[0] = 5.0  # an outlier
    return a.astype(dtype)


def _run(case, dtype, rng, bias=True):
    N, C, H, W, Co, ks, stride, padding, dilation, groups = case
    x = _data(rng, (N, C, H, W), dtype)
    w = _data(rng, (Co, C // groups) + ks, dtype)
    b = _data(rng, (Co,), dtype) if bias else None
    xt = ember.from_numpy(x).requires_grad_()
    wt = ember.from_numpy(w).requires_grad_()
    bt = ember.from_numpy(b).requires_grad_() if bias else None
    y = F.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    g = _data(rng, y.shape, dtype)
    y.backward(ember.from_numpy(g))
    args = dict(
        stride=_pair(stride), padding=_pads(padding, ks, dilation), dilation=_pair(dilation),
        groups=groups,
    )  # fmt: skip
    return x, w, b, g, y, xt, wt, bt, args


def _check(got, x, w, b, g, args, dtype, what):
    """float32: error <= 2x that of the float32 numpy reference; float64: ~exact."""
    y, gx, gw, gb = got
    f = lambda *a: R.conv2d(*a, **args)  # noqa: E731
    v = lambda *a: R.conv2d_vjp(*a, **args)  # noqa: E731
    d64 = [None if a is None else a.astype(np.float64) for a in (x, w, b, g)]
    ref = [f(*d64[:3])] + list(v(d64[3], *d64[:3]))
    if dtype == np.float64:
        for name, a, r in zip(("y", "gx", "gw", "gb"), (y, gx, gw, gb), ref):
            if r is not None:
                np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11, err_msg=f"{what} {name}")
        return
    plain = [f(x, w, b)] + list(v(g, x, w, b))
    ab = [None if a is None else np.abs(a) for a in d64]
    scales = [np.abs(f(ab[0], ab[1], ab[2])).max()] + [
        None if s is None else np.abs(s).max() for s in v(ab[3], *ab[:3])
    ]
    for name, a, r, p, s in zip(("y", "gx", "gw", "gb"), (y, gx, gw, gb), ref, plain, scales):
        if r is None:
            continue
        R.assert_shape_dtype(a, r.shape, dtype, f"{what} {name}")
        R.assert_reduction(a, r, p, scale=s, what=f"{what} {name}")


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_vs_reference(case, dtype, rng, cpu_path, poison):
    x, w, b, g, y, xt, wt, bt, args = _run(case, dtype, rng)
    got = (y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy())
    _check(got, x, w, b, g, args, dtype, str(case))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "case",
    [CASES[i] for i in (1, 4, 6, 15, 16, 22, 25, 26, 46, 53, 56, 64, 67, 73)],
)
def test_conv2d_threads_no_bias(case, threads, rng, cpu_path):
    old = ember.get_num_threads()
    ember.set_num_threads(threads)
    try:
        x, w, b, g, y, xt, wt, bt, args = _run(case, np.float32, rng, bias=False)
        got = (y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None)
        _check(got, x, w, None, g, args, np.float32, str(case))
        # the same call again reuses the workspaces: same result, bit for bit
        y2 = F.conv2d(ember.from_numpy(x), ember.from_numpy(w), None, *_fargs(case))
        np.testing.assert_array_equal(y2.numpy(), y.detach().numpy())
    finally:
        ember.set_num_threads(old)


@pytest.mark.parametrize(
    "case",
    [
        (1, 256, 40, 40, 16, (1, 1), 1, 0, 1, 1),  # two row tiles (K * OW * OH > kColCap)
        (1, 64, 1, 5000, 8, (1, 1), 1, 0, 1, 1),  # column tiles of one long row
        (2, 32, 16, 16, 8, (1, 1), 1, 0, 1, 1),  # 256-pixel maps: through the C tile copy
    ],
)
def test_pointwise_no_bias_tiles(case, rng, cpu_path):
    """A pointwise convolution without bias writes y straight from the GEMM (when the map's
    size spreads y's rows over the L1 sets), tile by tile."""
    x, w, b, g, y, xt, wt, bt, args = _run(case, np.float32, rng, bias=False)
    got = (y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None)
    _check(got, x, w, None, g, args, np.float32, str(case))


def _fargs(case):
    return case[6], case[7], case[8], case[9]


@pytest.mark.parametrize(
    "case",
    [
        (2, 4, 6, 7, 4, (3, 3), 2, 1, 1, 2),
        (1, 3, 5, 6, 3, (3, 2), 1, "same", (1, 2), 3),
        (2, 2, 4, 4, 3, (1, 1), 1, 0, 1, 1),
        (1, 2, 5, 5, 2, (2, 2), (1, 2), (0, 1), 2, 1),
    ],
)
def test_conv2d_gradcheck(case, rng, cpu_path):
    N, C, H, W, Co, ks, stride, padding, dilation, groups = case
    x = ember.from_numpy(rng.standard_normal((N, C, H, W))).requires_grad_()
    w = ember.from_numpy(rng.standard_normal((Co, C // groups) + ks)).requires_grad_()
    b = ember.from_numpy(rng.standard_normal(Co)).requires_grad_()
    fn = lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups)  # noqa: E731
    assert gradcheck(fn, (x, w, b))


@pytest.mark.parametrize(
    "case",
    [
        (2, 3, 17, 4, 3, 1, 0, 1, 1),
        (2, 4, 16, 6, 4, 2, 2, 1, 2),
        (1, 4, 15, 4, 3, 1, "same", 2, 4),
        (3, 2, 9, 5, 2, 1, "same", 1, 1),
        (2, 6, 20, 3, 1, 1, "valid", 3, 1),
        # one unfolded row over the workspace cap: tiles of columns within the row
        (1, 64, 3001, 5, 3, 2, 1, 1, 1),  # im2col, strided
        (1, 128, 2100, 3, 1, 1, 0, 1, 1),  # pointwise
        (2, 16, 4000, 4, 5, 1, "same", 2, 1),  # im2col, C < 32
        (1, 64, 5000, 64, 3, 1, 1, 1, 1),  # the shifted slab row is over the cap too
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv1d_vs_reference(case, dtype, rng, cpu_path, poison):
    N, C, L, Co, K, stride, padding, dilation, groups = case
    x, w, b = (_data(rng, s, dtype) for s in ((N, C, L), (Co, C // groups, K), (Co,)))
    xt, wt, bt = (ember.from_numpy(a).requires_grad_() for a in (x, w, b))
    y = F.conv1d(xt, wt, bt, stride, padding, dilation, groups)
    g = _data(rng, y.shape, dtype)
    y.backward(ember.from_numpy(g))
    p = _pads(padding if isinstance(padding, str) else (0, padding), (1, K), (1, dilation))
    args = dict(stride=(1, stride), padding=p, dilation=(1, dilation), groups=groups)
    got = [y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()]
    assert got[0].shape[:2] == (N, Co) and got[1].shape == x.shape and got[2].shape == w.shape
    got = [a[:, :, None, :] if a.ndim == 3 else a for a in got]
    _check(got, x[:, :, None], w[:, :, None], b, g[:, :, None], args, dtype, str(case))


def test_conv1d_gradcheck(rng):
    x = ember.from_numpy(rng.standard_normal((2, 4, 9))).requires_grad_()
    w = ember.from_numpy(rng.standard_normal((6, 2, 3))).requires_grad_()
    b = ember.from_numpy(rng.standard_normal(6)).requires_grad_()
    assert gradcheck(lambda x, w, b: F.conv1d(x, w, b, 2, 1, 1, 2), (x, w, b))


def test_noncontiguous_input_and_weight(rng, cpu_path):
    base = rng.standard_normal((2, 9, 11, 5)).astype(np.float32)
    xv = ember.from_numpy(base).permute(0, 3, 1, 2)  # [2, 5, 9, 11], not contiguous
    assert not xv.is_contiguous()
    wbase = rng.standard_normal((3, 3, 5, 4)).astype(np.float32)
    wv = ember.from_numpy(wbase).permute(3, 2, 0, 1)  # [4, 5, 3, 3]
    y = F.conv2d(xv, wv, None, 1, 1)
    x64 = np.ascontiguousarray(base.transpose(0, 3, 1, 2)).astype(np.float64)
    w64 = np.ascontiguousarray(wbase.transpose(3, 2, 0, 1)).astype(np.float64)
    ref = R.conv2d(x64, w64, padding=(1, 1, 1, 1))
    plain = R.conv2d(x64.astype(np.float32), w64.astype(np.float32), padding=(1, 1, 1, 1))
    R.assert_reduction(y.numpy(), ref, plain)


def test_zero_batch(cpu_path):
    x = ember.zeros(0, 3, 5, 5).requires_grad_()
    w = ember.ones(4, 3, 3, 3).requires_grad_()
    b = ember.ones(4).requires_grad_()
    y = F.conv2d(x, w, b, padding=1)
    assert y.shape == (0, 4, 5, 5)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 5, 5)
    np.testing.assert_array_equal(w.grad.numpy(), 0.0)
    np.testing.assert_array_equal(b.grad.numpy(), 0.0)


def test_only_some_grads(rng, cpu_path):
    x = ember.from_numpy(_data(rng, (2, 3, 6, 6), np.float64))
    w = ember.from_numpy(_data(rng, (4, 3, 3, 3), np.float64)).requires_grad_()
    b = ember.from_numpy(_data(rng, (4,), np.float64))
    F.conv2d(x, w, b).sum().backward()
    assert x.grad is None and b.grad is None
    _, gw, _ = R.conv2d_vjp(np.ones((2, 4, 4, 4)), x.numpy(), w.detach().numpy(), b.numpy())
    np.testing.assert_allclose(w.grad.numpy(), gw, rtol=1e-12, atol=1e-12)


def _t(*shape, dtype="float32"):
    return ember.zeros(*shape, dtype=dtype)


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((_t(2, 3, 8, 8), _t(4, 2, 3, 3)), {}, ValueError, r"\[conv2d\] input has 3 channels"),
        ((_t(2, 6, 8, 8), _t(4, 3, 3, 3)), {"groups": 4}, ValueError, r"\[conv2d\] in_channels"),
        ((_t(2, 6, 8, 8), _t(5, 3, 3, 3)), {"groups": 2}, ValueError, r"\[conv2d\] out_channels"),
        ((_t(2, 3, 4, 4), _t(4, 3, 5, 5)), {}, ValueError, r"\[conv2d\] kernel size .* larger"),
        ((_t(2, 3, 4, 4), _t(4, 3, 3, 3)), {"dilation": 2}, ValueError, r"\[conv2d\] kernel"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3, 3)), {"stride": 0}, ValueError, r"\[conv2d\] stride must"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3, 3)), {"stride": (1, -1)}, ValueError, r"stride must be"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3, 3)), {"dilation": 0}, ValueError, r"\[conv2d\] dilation"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3, 3)), {"padding": -1}, ValueError, r"\[conv2d\] padding"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3, 3)), {"padding": "full"}, ValueError, r"\[conv2d\] padd"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3, 3)), {"padding": (1, 2, 3)}, ValueError, r"padding"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3, 3)), {"stride": 2, "padding": "same"}, ValueError,
         r"\[conv2d\] padding='same' is not supported for strided"),
        ((_t(3, 8, 8), _t(4, 3, 3, 3)), {}, ValueError, r"\[conv2d\] expected a 4-D input"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3)), {}, ValueError, r"\[conv2d\] expected a 4-D weight"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3, 3)), {"groups": 0}, ValueError, r"\[conv2d\] groups"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3, 3), _t(5)), {}, ValueError, r"\[conv2d\] bias must"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3, 3, dtype="float64")), {}, TypeError,
         r"\[conv2d\] weight is .*float64"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3, 3), _t(4, dtype="float64")), {}, TypeError,
         r"\[conv2d\] bias"),
        ((_t(2, 3, 8, 8, dtype="int64"), _t(4, 3, 3, 3)), {}, TypeError, r"\[conv2d\] input"),
        ((np.zeros((2, 3, 8, 8)), _t(4, 3, 3, 3)), {}, TypeError, r"\[conv2d\] input must be"),
    ],
)  # fmt: skip
def test_conv2d_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        F.conv2d(*args, **kwargs)


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((_t(2, 3, 8), _t(4, 2, 3)), {}, ValueError, r"\[conv1d\] input has 3 channels"),
        ((_t(2, 3, 8, 8), _t(4, 3, 3)), {}, ValueError, r"\[conv1d\] expected a 3-D input"),
        ((_t(2, 3, 2), _t(4, 3, 3)), {}, ValueError, r"\[conv1d\] kernel size"),
        ((_t(2, 3, 8), _t(4, 3, 3)), {"stride": 2, "padding": "same"}, ValueError, r"same"),
        ((_t(2, 3, 8), _t(4, 3, 3)), {"stride": (1, 1)}, ValueError, r"\[conv1d\] stride"),
    ],
)  # fmt: skip
def test_conv1d_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        F.conv1d(*args, **kwargs)


def test_boundary_checks():
    """The _C entry points refuse bad arrays themselves (no crash on a direct call)."""
    C = ember._C
    x, w = np.zeros((2, 3, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32)
    y = np.zeros((2, 4, 6, 6), np.float32)
    geo = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
    C.conv2d_fwd(x, w, None, y, *geo)
    with pytest.raises(ValueError, match=r"\[conv2d\] out must have shape"):
        C.conv2d_fwd(x, w, None, np.zeros((2, 4, 5, 6), np.float32), *geo)
    with pytest.raises(TypeError, match=r"\[conv2d\] out has dtype"):
        C.conv2d_fwd(x, w, None, y.astype(np.float64), *geo)
    with pytest.raises(ValueError, match=r"\[conv2d\] out must be C-contiguous"):
        C.conv2d_fwd(x, w, None, np.zeros((2, 4, 6, 12), np.float32)[..., ::2], *geo)
    with pytest.raises(ValueError, match=r"overlaps an input"):
        C.conv2d_fwd(x, w, None, x.reshape(-1)[: y.size].reshape(y.shape), *geo)
    ro = y.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"read-only"):
        C.conv2d_fwd(x, w, None, ro, *geo)
    with pytest.raises(ValueError, match=r"padding must be non-negative"):
        C.conv2d_fwd(x, w, None, y, (1, 1), (0, -1, 0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match=r"grad_out must have shape"):
        C.conv2d_bwd_data(np.zeros((2, 4, 5, 5), np.float32), w, np.zeros_like(x), *geo)
    with pytest.raises(ValueError, match=r"grad_weight must have shape"):
        C.conv2d_bwd_weight(y, x, np.zeros((4, 3, 2, 3), np.float32), None, (3, 3), *geo)


@pytest.mark.parametrize("groups", [1, 32])  # dense (slab / channel-vector paths), depthwise
def test_workspace_failure_is_a_memory_error(rng, groups):
    """A workspace that cannot be allocated (simulated by the _C hook) raises MemoryError naming
    conv2d, on one thread and on two (the pool rethrows a piece's exception on the caller
    instead of the worker ending the process), and nothing is left broken: with the limit
    lifted the same calls give the right results."""
    if ember.backends.cpu.capabilities()["selected"] != "avx2":
        pytest.skip("the workspaces belong to the AVX2/AVX-512 paths")
    C = ember._C
    x = rng.standard_normal((4, 32, 14, 14)).astype(np.float32)
    w = rng.standard_normal((32, 32 // groups, 3, 3)).astype(np.float32)
    g = rng.standard_normal((4, 32, 14, 14)).astype(np.float32)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), groups)
    y, gx, gw = np.empty_like(g), np.empty_like(x), np.empty_like(w)
    calls = [
        lambda: C.conv2d_fwd(x, w, None, y, *geo),
        lambda: C.conv2d_bwd_data(g, w, gx, *geo),
        lambda: C.conv2d_bwd_weight(g, x, gw, None, (3, 3), *geo),
    ]
    ref_y = R.conv2d(
        x.astype(np.float64), w.astype(np.float64), padding=(1, 1, 1, 1), groups=groups
    )
    old = ember.get_num_threads()
    try:
        for nth in (1, 2):
            ember.set_num_threads(nth)
            C._set_conv_workspace_limit(256)
            for call in calls if groups == 1 else calls[::2]:  # depthwise data grad: no workspace
                with pytest.raises(MemoryError, match=r"\[conv2d\] could not allocate"):
                    call()
            C._set_conv_workspace_limit(0)
            y[...] = np.nan
            calls[0]()
            np.testing.assert_allclose(y, ref_y, rtol=1e-4, atol=1e-4 * np.abs(ref_y).max())
    finally:
        C._set_conv_workspace_limit(0)
        ember.set_num_threads(old)


# ---- modules -------------------------------------------------------------------------------


def test_conv2d_module(rng):
    m = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    assert m.weight.shape == (6, 2, 3, 3) and m.bias.shape == (6,)
    bound = 1 / math.sqrt(2 * 9)
    assert np.abs(m.weight.detach().numpy()).max() <= bound
    assert np.abs(m.bias.detach().numpy()).max() <= bound
    assert np.abs(m.weight.detach().numpy()).max() > 0.5 * bound  # not a degenerate init
    x = ember.from_numpy(rng.standard_normal((2, 4, 9, 9)).astype(np.float32))
    y = m(x)
    assert y.shape == (2, 6, 5, 5)
    ref = R.conv2d(
        x.numpy().astype(np.float64), m.weight.detach().numpy().astype(np.float64),
        m.bias.detach().numpy().astype(np.float64), (2, 2), (1, 1, 1, 1), (1, 1), 2,
    )  # fmt: skip
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert m.weight.grad.shape == m.weight.shape and m.bias.grad.shape == (6,)
    assert repr(m) == "Conv2d(4, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=2)"
    m2 = nn.Conv2d(3, 8, (3, 5), padding="same", dilation=2, bias=False)
    assert m2.bias is None
    assert m2(ember.zeros(1, 3, 7, 9)).shape == (1, 8, 7, 9)
    assert (
        "padding='same'" in repr(m2) and "bias=False" in repr(m2) and "dilation=(2, 2)" in repr(m2)
    )


def test_conv1d_module(rng):
    m = nn.Conv1d(3, 5, 4, padding=2, dtype=ember.float64)
    assert m.weight.shape == (5, 3, 4) and m.weight.dtype == ember.float64
    assert np.abs(m.weight.detach().numpy()).max() <= 1 / math.sqrt(12)
    y = m(ember.from_numpy(rng.standard_normal((2, 3, 10))))
    assert y.shape == (2, 5, 11)
    assert repr(m) == "Conv1d(3, 5, kernel_size=(4,), stride=(1,), padding=(2,))"


def test_module_errors():
    with pytest.raises(NotImplementedError, match=r"\[Conv2d\] padding_mode='reflect'"):
        nn.Conv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"\[Conv2d\] padding_mode must be"):
        nn.Conv2d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"\[Conv2d\] in_channels \(3\) must be divisible"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"\[Conv1d\] padding='same' is not supported"):
        nn.Conv1d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"\[Conv2d\] kernel_size must be"):
        nn.Conv2d(3, 4, (3, 3, 3))


# ---- optional PyTorch cross-check ---------------------------------------------------------------


@pytest.mark.parametrize("case", [CASES[2], CASES[8], CASES[12], CASES[16]])
def test_vs_torch(case, rng):
    torch = pytest.importorskip("torch")
    x, w, b, g, y, xt, wt, bt, _ = _run(case, np.float32, rng)
    N, C, H, W, Co, ks, stride, padding, dilation, groups = case
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    ty.backward(torch.tensor(g))
    for a, t in ((y.detach(), ty), (xt.grad, tx.grad), (wt.grad, tw.grad), (bt.grad, tb.grad)):
        t = t.detach().numpy()
        np.testing.assert_allclose(a.numpy(), t, rtol=1e-4, atol=1e-4 * np.abs(t).max())


@pytest.mark.parametrize(
    "case",
    [CASES[i] for i in (1, 3, 6, 7, 8, 21, 35, 36, 37, 40, 42, 44, 46, 48, 49, 56, 59, 63)],
)
def test_inf_in_input_stays_local(case, rng, cpu_path):
    """An inf in x reaches only the outputs and weight-gradient taps that read it (no 0 * inf
    from a vector lane past a row end)."""
    N, C, H, W, Co, ks, stride, padding, dilation, groups = case
    x = _data(rng, (N, C, H, W), np.float32)
    x[0, 0, H // 2, W - 1] = np.inf
    x[-1, -1, 0, 0] = -np.inf
    w = _data(rng, (Co, C // groups) + ks, np.float32)
    xt, wt = ember.from_numpy(x).requires_grad_(), ember.from_numpy(w).requires_grad_()
    y = F.conv2d(xt, wt, None, stride, padding, dilation, groups)
    g = _data(rng, y.shape, np.float32)
    y.backward(ember.from_numpy(g))
    args = dict(
        stride=_pair(stride), padding=_pads(padding, ks, dilation), dilation=_pair(dilation),
        groups=groups,
    )  # fmt: skip
    with np.errstate(invalid="ignore"):
        ry = R.conv2d(x.astype(np.float64), w.astype(np.float64), **args)
        _, rgw, _ = R.conv2d_vjp(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64),
                                 **args)  # fmt: skip
    for got, ref in ((y.detach().numpy(), ry), (wt.grad.numpy(), rgw)):
        assert np.array_equal(np.isnan(got), np.isnan(ref))
        assert np.array_equal(np.isinf(got), np.isinf(ref))
        assert np.isfinite(ref).any()


def test_misaligned_input(rng):
    """A float32 view at an odd byte offset (e.g. from a packed buffer) is copied, not refused."""
    raw = np.zeros(2 * 3 * 6 * 6 * 4 + 1, np.uint8)
    x = raw[1:].view(np.float32).reshape(2, 3, 6, 6)
    assert not x.flags.aligned
    x[...] = rng.standard_normal(x.shape)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = F.conv2d(ember.from_numpy(x), ember.from_numpy(w), None, 1, 1)
    ref = R.conv2d(x.astype(np.float64), w.astype(np.float64), padding=(1, 1, 1, 1))
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)
