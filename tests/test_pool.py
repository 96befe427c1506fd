"""Pooling: max / avg / adaptive pooling kernels vs the float64 references of tests/reference.py
(forward, indices, VJP) on both CPU paths, gradcheck in float64, edge cases (1x1 images,
kernel = padded input, ceil_mode windows, ties, NaN), error inputs, the 1-D / unbatched forms,
the modules, and an optional PyTorch cross-check."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
import reference as R
from ember import _C
from ember.autograd import gradcheck

# (shape, kernel, stride, padding, dilation, ceil_mode): ResNet's 3/2/1 and 2/2, stride 1
# (AVX2 path), stride 3 (scalar path), dilation, ceil_mode, odd and non-square sizes, outputs
# wider than one vector plus a tail, and sizes above the threading threshold.
MAX_CASES = [
    ((2, 3, 17, 37), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ((2, 3, 16, 40), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 2, 11, 29), (3, 2), (1, 1), (1, 0), (1, 1), False),
    ((2, 2, 13, 31), (3, 3), (2, 1), (1, 1), (2, 2), False),
    ((1, 3, 12, 35), (3, 3), (3, 3), (1, 1), (1, 1), True),
    ((2, 2, 10, 27), (2, 4), (2, 2), (1, 2), (1, 1), True),
    ((1, 1, 9, 50), (5, 5), (2, 2), (2, 2), (2, 1), True),
    ((4, 16, 24, 40), (3, 3), (2, 2), (1, 1), (1, 1), False),
]
AVG_CASES = [
    ((2, 3, 17, 37), (3, 3), (2, 2), (1, 1), False, True, None),
    ((2, 3, 17, 37), (3, 3), (2, 2), (1, 1), False, False, None),
    ((2, 3, 16, 40), (2, 2), (2, 2), (0, 0), False, True, None),
    ((1, 2, 11, 29), (3, 2), (1, 1), (1, 1), False, False, None),
    ((1, 3, 12, 35), (3, 3), (3, 3), (1, 1), True, True, None),
    ((2, 2, 10, 27), (2, 4), (2, 2), (1, 2), True, False, None),
    ((2, 2, 10, 27), (4, 3), (2, 2), (2, 1), True, True, None),
    ((2, 2, 9, 30), (3, 3), (1, 2), (1, 1), False, True, 5),
    ((2, 2, 9, 31), (3, 4), (3, 3), (1, 2), True, False, -2),  # stride 3, negative divisor
    ((4, 16, 24, 40), (3, 3), (2, 2), (1, 1), False, True, None),
]
ADAPTIVE_CASES = [
    ((2, 3, 14, 14), (7, 7)),
    ((2, 3, 13, 17), (5, 4)),
    ((1, 2, 5, 7), (8, 9)),  # larger than the input: windows overlap and repeat
    ((2, 3, 45, 47), (1, 1)),  # global average
    ((3, 70, 7, 7), (1, 1)),  # global average over many small planes (threads)
    ((1, 1, 1, 1), (1, 1)),
]


def _t(a, grad=False):
    t = ember.from_numpy(np.ascontiguousarray(a))
    return t.requires_grad_() if grad else t


def _data(rng, shape, dtype):
    x = rng.standard_normal(shape) * 2.0
    x.flat[:: max(1, x.size // 7)] *= 30.0  # a few outliers
    return x.astype(dtype)


def _run(fn, x, g):
    xt = _t(x, True)
    out = fn(xt)
    y = out[0] if isinstance(out, tuple) else out
    y.backward(_t(g))
    return out, xt.grad.numpy()


# ---- forward / backward against the references --------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool2d_matches_reference(cpu_path, poison, rng, case, dtype):
    shape, k, s, p, d, ceil = case
    x = _data(rng, shape, dtype)
    ref_y, ref_i = R.max_pool2d(x.astype(np.float64), k, s, p, d, ceil)
    g = rng.standard_normal(ref_y.shape).astype(dtype)
    (y, idx), gx = _run(lambda t: F.max_pool2d(t, k, s, p, d, ceil, return_indices=True), x, g)
    R.assert_shape_dtype(y.detach().numpy(), ref_y.shape, dtype, "max_pool2d")
    R.assert_exact(y.detach().numpy(), ref_y.astype(dtype), "max_pool2d values")
    R.assert_exact(idx.numpy(), ref_i, "max_pool2d indices")
    assert idx.dtype is ember.int64
    (ref_gx,) = R.max_pool2d_vjp(g.astype(np.float64), x, ref_i)
    (plain,) = R.max_pool2d_vjp(g, x, ref_i)
    R.assert_elementwise(gx, ref_gx, plain, what="max_pool2d grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool2d_matches_reference(cpu_path, poison, rng, case, dtype):
    shape, k, s, p, ceil, cip, div = case
    x = _data(rng, shape, dtype)
    ref = R.avg_pool2d(x.astype(np.float64), k, s, p, ceil, cip, div)
    plain = R.avg_pool2d(x, k, s, p, ceil, cip, div)
    g = rng.standard_normal(ref.shape).astype(dtype)
    y, gx = _run(lambda t: F.avg_pool2d(t, k, s, p, ceil, cip, div), x, g)
    y = y.detach().numpy()
    R.assert_shape_dtype(y, ref.shape, dtype, "avg_pool2d")
    R.assert_reduction(
        y,
        ref,
        plain,
        scale=R.avg_pool2d(np.abs(x), k, s, p, ceil, cip, div).max(),
        what="avg_pool2d",
    )
    args = (k, s, p, ceil, cip, div)
    (ref_gx,) = R.avg_pool2d_vjp(g.astype(np.float64), x.astype(np.float64), *args)
    (plain_gx,) = R.avg_pool2d_vjp(g, x, *args)
    R.assert_reduction(gx, ref_gx, plain_gx, what="avg_pool2d grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ADAPTIVE_CASES)
def test_adaptive_avg_pool2d_matches_reference(cpu_path, poison, rng, case, dtype):
    shape, out_hw = case
    x = _data(rng, shape, dtype)
    ref = R.adaptive_avg_pool2d(x.astype(np.float64), out_hw)
    plain = R.adaptive_avg_pool2d(x, out_hw)
    g = rng.standard_normal(ref.shape).astype(dtype)
    y, gx = _run(lambda t: F.adaptive_avg_pool2d(t, out_hw), x, g)
    y = y.detach().numpy()
    R.assert_shape_dtype(y, ref.shape, dtype, "adaptive_avg_pool2d")
    scale = R.adaptive_avg_pool2d(np.abs(x).astype(np.float64), out_hw).max()
    R.assert_reduction(y, ref, plain, scale=scale, what="adaptive_avg_pool2d")
    (ref_gx,) = R.adaptive_avg_pool2d_vjp(g.astype(np.float64), x, out_hw)
    (plain_gx,) = R.adaptive_avg_pool2d_vjp(g, x, out_hw)
    R.assert_reduction(gx, ref_gx, plain_gx, what="adaptive_avg_pool2d grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ADAPTIVE_CASES)
def test_adaptive_max_pool2d_matches_reference(cpu_path, poison, rng, case, dtype):
    shape, out_hw = case
    x = _data(rng, shape, dtype)
    ref_y, ref_i = R.adaptive_max_pool2d(x.astype(np.float64), out_hw)
    g = rng.standard_normal(ref_y.shape).astype(dtype)
    (y, idx), gx = _run(lambda t: F.adaptive_max_pool2d(t, out_hw, return_indices=True), x, g)
    R.assert_exact(y.detach().numpy(), ref_y.astype(dtype), "adaptive_max_pool2d values")
    R.assert_exact(idx.numpy(), ref_i, "adaptive_max_pool2d indices")
    (ref_gx,) = R.max_pool2d_vjp(g.astype(np.float64), x, ref_i)
    (plain,) = R.max_pool2d_vjp(g, x, ref_i)
    R.assert_elementwise(gx, ref_gx, plain, what="adaptive_max_pool2d grad")


def test_paths_and_thread_counts_agree(rng):
    """The AVX2 max path gives the scalar path's values and indices bit for bit, and no
    result depends on the thread count (planes are never split)."""
    x = _data(rng, (4, 16, 30, 45), np.float32)
    x[0, 0, 3, 5] = np.nan
    x[1, 2] = np.round(x[1, 2])  # ties
    prev_threads = ember.get_num_threads()
    results = []
    try:
        for path in ("scalar", "auto"):
            ember.backends.cpu.set_cpu_path(path)
            for nt in (1, 2):
                ember.set_num_threads(nt)
                y, i = F.max_pool2d(_t(x), 3, 2, 1, return_indices=True)
                a = F.avg_pool2d(_t(x), 3, 1, 1)
                results.append((path, y.numpy(), i.numpy(), a.numpy()))
                # inference (no grad, no indices): the kernel's index-free variant
                R.assert_exact(F.max_pool2d(_t(x), 3, 2, 1).numpy(), y.numpy(), "no indices")
                R.assert_exact(
                    F.max_pool2d(_t(x), 2, 1).numpy(),
                    F.max_pool2d(_t(x), 2, 1, return_indices=True)[0].numpy(),
                )
    finally:
        ember.set_num_threads(prev_threads)
        ember.backends.cpu.set_cpu_path("auto")
    for path, y, i, _a in results[1:]:
        R.assert_exact(y, results[0][1], f"max values ({path})")
        R.assert_exact(i, results[0][2], f"max indices ({path})")
    R.assert_exact(results[1][3], results[0][3], "avg, scalar 1 vs 2 threads")
    R.assert_exact(results[3][3], results[2][3], "avg, auto 1 vs 2 threads")


@pytest.mark.parametrize(
    "shape,k,s,p,d,ceil",
    [
        ((2, 5, 14, 14), 2, 2, 0, 1, False),  # 7x7 outputs: the padded-row-copy vector path
        ((2, 5, 7, 7), 3, 2, 1, 1, False),  # border columns scalar, interior vector
        ((1, 3, 5, 5), 3, 1, 1, 1, False),
        ((1, 3, 9, 9), 2, 1, 0, 2, False),  # dilation
        ((1, 2, 13, 13), 3, 2, 0, 1, True),  # ceil_mode window past the edge
        ((3, 2, 2, 15), 2, 2, 0, 1, False),  # 7 outputs per row
    ],
)
def test_small_maps_vector_path_matches_scalar(rng, shape, k, s, p, d, ceil):
    """Maps with fewer than 8 output columns per row take the vector max path through padded
    row copies: values and indices must equal the scalar reference bit for bit (ties, NaN)."""
    x = _data(rng, shape, np.float32)
    x[0, 0, 1, 1] = np.nan
    x[-1, -1] = np.round(x[-1, -1] / 4)  # ties
    out = {}
    try:
        for path in ("scalar", "auto"):
            ember.backends.cpu.set_cpu_path(path)
            y, i = F.max_pool2d(_t(x), k, s, p, d, ceil_mode=ceil, return_indices=True)
            out[path] = (y.numpy(), i.numpy(), F.max_pool2d(_t(x), k, s, p, d, ceil).numpy())
    finally:
        ember.backends.cpu.set_cpu_path("auto")
    for a, b, what in zip(out["auto"], out["scalar"], ("values", "indices", "no-index values")):
        R.assert_exact(a, b, what)


# ---- gradcheck (float64, the real code path) --------------------------------------------------
def _distinct(rng, shape):
    """Values 0.1 apart in random order: no finite-difference step can change an argmax."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) * 0.1 - n * 0.05).astype(np.float64)


def test_gradcheck_max(cpu_path, rng):
    x = _t(_distinct(rng, (2, 2, 7, 9)), True)
    assert gradcheck(lambda a: F.max_pool2d(a, 3, 2, 1), (x,))
    assert gradcheck(lambda a: F.max_pool2d(a, (2, 3), (1, 2), (1, 1), 2, True), (x,))
    assert gradcheck(lambda a: F.adaptive_max_pool2d(a, (3, 4)), (x,))
    assert gradcheck(lambda a: F.max_pool1d(a, 3, 2, 1), (_t(_distinct(rng, (2, 3, 11)), True),))


def test_gradcheck_avg(cpu_path, rng):
    x = _t(rng.standard_normal((2, 2, 7, 9)), True)
    assert gradcheck(lambda a: F.avg_pool2d(a, 3, 2, 1), (x,))
    assert gradcheck(lambda a: F.avg_pool2d(a, 3, 2, 1, True, False), (x,))
    assert gradcheck(lambda a: F.avg_pool2d(a, (2, 3), 1, (1, 0), divisor_override=4), (x,))
    assert gradcheck(lambda a: F.adaptive_avg_pool2d(a, (3, 4)), (x,))
    assert gradcheck(lambda a: F.adaptive_avg_pool2d(a, 1), (x,))
    assert gradcheck(
        lambda a: F.avg_pool1d(a, 3, 2, 1), (_t(rng.standard_normal((2, 3, 11)), True),)
    )
    assert gradcheck(
        lambda a: F.adaptive_avg_pool1d(a, 4), (_t(rng.standard_normal((2, 3, 11)), True),)
    )


# ---- edge cases ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "H, k, s, p, ceil, expected",
    [
        (6, 3, 2, 0, False, 2),
        (6, 3, 2, 0, True, 3),  # the last window hangs over the right edge
        (5, 2, 2, 1, True, 3),  # a 4th window would start in the right padding: dropped
        (5, 2, 2, 1, False, 3),
        (3, 5, 1, 2, False, 3),
        (3, 5, 1, 1, False, 1),  # kernel equal to the padded input
        (1, 1, 1, 0, False, 1),  # 1x1 image
        (1, 3, 2, 1, True, 1),
    ],
)
def test_output_sizes_and_windows(cpu_path, rng, H, k, s, p, ceil, expected):
    x = _data(rng, (2, 3, H, H + 18), np.float64)  # wide enough for the vector path
    W = H + 18
    assert R.pool_output_size(H, k, s, p, 1, ceil) == expected
    y, idx = F.max_pool2d(_t(x), k, s, p, 1, ceil, return_indices=True)
    assert y.shape[2] == expected
    ref_y, ref_i = R.max_pool2d(x, (k, k), (s, s), (p, p), (1, 1), ceil)
    R.assert_exact(y.numpy(), ref_y)
    R.assert_exact(idx.numpy(), ref_i)
    for cip in (True, False):
        a = F.avg_pool2d(_t(x.astype(np.float32)), k, s, p, ceil, cip)
        ref = R.avg_pool2d(x, (k, k), (s, s), (p, p), ceil, cip)
        R.assert_elementwise(
            a.numpy(),
            ref,
            R.avg_pool2d(x.astype(np.float32), (k, k), (s, s), (p, p), ceil, cip),
            rtol=2e-6,
        )
    assert W == x.shape[3]


def test_ties_take_the_first_maximum(cpu_path):
    x = np.zeros((1, 1, 4, 24), np.float32)
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = 5.0  # two maxima in the first 2x2 window
    xt = _t(x, True)
    y, idx = F.max_pool2d(xt, 2, 2, return_indices=True)
    assert idx.numpy()[0, 0, 0, 0] == 1  # row-major first: (0, 1) before (1, 1)
    assert (idx.numpy()[0, 0, 0, 1:] == np.arange(2, 24, 2)).all()  # all-equal windows
    y.sum().backward()
    gx = xt.grad.numpy()[0, 0]
    assert gx[0, 1] == 1.0 and gx[1, 1] == 0.0  # the whole gradient to the argmax (PyTorch)
    assert gx.sum() == y.numel()


def test_nan_and_inf_propagate(cpu_path):
    x = np.arange(2 * 8 * 30, dtype=np.float32).reshape(1, 2, 8, 30) % 7
    x[0, 0, 2, 9] = np.nan
    x[0, 0, 5, 20] = np.inf
    x[0, 1] = -np.inf
    y, idx = F.max_pool2d(_t(x), 3, 2, 1, return_indices=True)
    ref_y, ref_i = R.max_pool2d(x.astype(np.float64), (3, 3), (2, 2), (1, 1))
    R.assert_exact(y.numpy(), ref_y)
    R.assert_exact(idx.numpy(), ref_i)
    assert np.isnan(y.numpy()[0, 0, 1, 4:6]).all() and np.isnan(y.numpy()).sum() == 2
    assert (y.numpy()[0, 1] == -np.inf).all()
    a = F.avg_pool2d(_t(x), 2).numpy()
    assert np.isnan(a[0, 0, 1, 4]) and np.isnan(a).sum() == 1 and a[0, 0, 2, 10] == np.inf


def test_one_by_one_and_global(cpu_path, rng):
    x = _data(rng, (3, 4, 1, 1), np.float32)
    R.assert_exact(F.max_pool2d(_t(x), 1).numpy(), x)
    R.assert_exact(F.avg_pool2d(_t(x), 1).numpy(), x)
    R.assert_exact(F.adaptive_avg_pool2d(_t(x), 1).numpy(), x)
    R.assert_exact(F.adaptive_max_pool2d(_t(x), (1, 1)).numpy(), x)
    xt = _t(x, True)
    F.adaptive_avg_pool2d(xt, 1).sum().backward()
    R.assert_exact(xt.grad.numpy(), np.ones_like(x))


def test_adaptive_none_keeps_size_and_empty_batch(rng):
    x = _data(rng, (2, 3, 9, 11), np.float32)
    assert F.adaptive_avg_pool2d(_t(x), (None, 4)).shape == (2, 3, 9, 4)
    assert F.adaptive_avg_pool2d(_t(x), (5, None)).shape == (2, 3, 5, 11)
    assert F.adaptive_avg_pool2d(_t(x), None).shape == x.shape
    R.assert_elementwise(F.adaptive_avg_pool2d(_t(x), None).numpy(), x, rtol=1e-7)
    empty = np.zeros((0, 3, 9, 11), np.float32)
    assert F.max_pool2d(_t(empty), 3, 2).shape == (0, 3, 4, 5)
    assert F.avg_pool2d(_t(empty), 3, 2).shape == (0, 3, 4, 5)


def test_non_contiguous_input(rng):
    base = _data(rng, (2, 3, 20, 18), np.float32)
    x = base.transpose(0, 1, 3, 2)
    ref_y, _ = R.max_pool2d(x.astype(np.float64), (3, 3), (2, 2), (1, 1))
    R.assert_exact(F.max_pool2d(ember.from_numpy(x), 3, 2, 1).numpy(), ref_y)


# ---- unbatched and 1-D forms ----------------------------------------------------------------
def test_unbatched_and_1d_forms(cpu_path, rng):
    x = _data(rng, (3, 11, 26), np.float32)
    R.assert_exact(
        F.max_pool2d(_t(x), 3, 2, 1).numpy(), F.max_pool2d(_t(x[None]), 3, 2, 1).numpy()[0]
    )
    R.assert_exact(F.avg_pool2d(_t(x), 2).numpy(), F.avg_pool2d(_t(x[None]), 2).numpy()[0])
    R.assert_exact(
        F.adaptive_avg_pool2d(_t(x), 2).numpy(), F.adaptive_avg_pool2d(_t(x[None]), 2).numpy()[0]
    )
    x1 = _data(rng, (2, 3, 37), np.float32)
    y, i = F.max_pool1d(_t(x1), 4, 3, 2, 1, True, return_indices=True)
    ref_y, ref_i = R.max_pool2d(
        x1[:, :, None].astype(np.float64), (1, 4), (1, 3), (0, 2), (1, 1), True
    )
    R.assert_exact(y.numpy(), ref_y[:, :, 0])
    R.assert_exact(i.numpy(), ref_i[:, :, 0])  # positions along L
    a = F.avg_pool1d(_t(x1), 3, 2, 1, False, False)
    ref = R.avg_pool2d(x1[:, :, None].astype(np.float64), (1, 3), (1, 2), (0, 1), False, False)
    R.assert_elementwise(a.numpy(), ref[:, :, 0], rtol=2e-6)
    ad = F.adaptive_avg_pool1d(_t(x1), 5)
    R.assert_elementwise(
        ad.numpy(),
        R.adaptive_avg_pool2d(x1[:, :, None].astype(np.float64), (1, 5))[:, :, 0],
        rtol=2e-6,
    )
    am = F.adaptive_max_pool1d(_t(x1[0]), 5)
    R.assert_exact(
        am.numpy(), R.adaptive_max_pool2d(x1[:1, :, None].astype(np.float64), (1, 5))[0][0, :, 0]
    )
    assert F.max_pool1d(_t(x1[0]), 3).shape == (3, 12)


# ---- errors ---------------------------------------------------------------------------------
X4 = np.zeros((1, 2, 6, 6), np.float32)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: F.max_pool2d(_t(X4), 3, padding=2), ValueError, r"\[max_pool2d\] padding"),
        (lambda: F.avg_pool2d(_t(X4), 2, padding=(0, 2)), ValueError, r"\[avg_pool2d\] padding"),
        (lambda: F.max_pool2d(_t(X4), 2, stride=0), ValueError, r"\[max_pool2d\] stride"),
        (lambda: F.avg_pool2d(_t(X4), 2, stride=-1), ValueError, r"\[avg_pool2d\] stride"),
        (lambda: F.max_pool2d(_t(X4), 0), ValueError, r"\[max_pool2d\] kernel_size"),
        (lambda: F.max_pool2d(_t(X4), (2, -1)), ValueError, r"\[max_pool2d\] kernel_size"),
        (lambda: F.max_pool2d(_t(X4), 2, dilation=0), ValueError, r"\[max_pool2d\] dilation"),
        (lambda: F.max_pool2d(_t(X4), (2, 2, 2)), ValueError, r"\[max_pool2d\] kernel_size"),
        (lambda: F.max_pool2d(_t(X4), 7), ValueError, r"\[max_pool2d\] .*too small"),
        (lambda: F.avg_pool2d(_t(X4), 7), ValueError, r"\[avg_pool2d\] .*too small"),
        (lambda: F.max_pool2d(_t(X4), 4, dilation=2), ValueError, r"\[max_pool2d\] .*too small"),
        (lambda: F.max_pool2d(_t(X4[0, 0]), 2), ValueError, r"\[max_pool2d\] input must be 3-D"),
        (lambda: F.max_pool2d(_t(X4[None]), 2), ValueError, r"\[max_pool2d\] input must be"),
        (lambda: F.max_pool1d(_t(X4), 2), ValueError, r"\[max_pool1d\] input must be"),
        (lambda: F.avg_pool1d(_t(X4[0, 0, 0]), 2), ValueError, r"\[avg_pool1d\] input must be"),
        (lambda: F.adaptive_avg_pool2d(_t(X4), 0), ValueError, r"\[adaptive_avg_pool2d\] output"),
        (lambda: F.adaptive_avg_pool2d(_t(X4), (3, 0)), ValueError, r"\[adaptive_avg_pool2d\]"),
        (lambda: F.adaptive_max_pool2d(_t(X4), (1, 2, 3)), ValueError, r"\[adaptive_max_pool2d\]"),
        (lambda: F.adaptive_avg_pool1d(_t(X4[0]), 0), ValueError, r"\[adaptive_avg_pool1d\]"),
        (lambda: F.avg_pool2d(_t(X4), 2, divisor_override=0), ValueError, r"divisor_override"),
        (
            lambda: F.max_pool2d(_t(np.zeros((1, 0, 4, 4), np.float32)), 2),
            ValueError,
            r"\[max_pool2d\] .*non-zero",
        ),
        (
            lambda: F.max_pool2d(_t(np.zeros((1, 2, 4, 4), np.int64)), 2),
            TypeError,
            r"\[max_pool2d\]",
        ),
        (lambda: F.max_pool2d(X4, 2), TypeError, r"\[max_pool2d\] input must be a Tensor"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_boundary_errors():
    x = np.zeros((1, 2, 6, 6), np.float32)
    out = np.zeros((1, 2, 3, 3), np.float32)
    idx = np.zeros((1, 2, 3, 3), np.int64)
    _C.maxpool2d_fwd(x, 2, 2, 2, 2, 0, 0, 1, 1, False, out, idx)  # valid
    with pytest.raises(ValueError, match=r"\[max_pool2d\] out must have shape"):
        _C.maxpool2d_fwd(x, 3, 3, 2, 2, 0, 0, 1, 1, False, out, idx)
    with pytest.raises(TypeError, match=r"\[max_pool2d\] indices must be int64"):
        _C.maxpool2d_fwd(x, 2, 2, 2, 2, 0, 0, 1, 1, False, out, idx.astype(np.int32))
    with pytest.raises(ValueError, match=r"\[max_pool2d\] padding"):
        _C.maxpool2d_fwd(x, 2, 2, 2, 2, 2, 0, 1, 1, False, out, idx)
    with pytest.raises(ValueError, match=r"\[max_pool2d\] out must be C-contiguous"):
        big = np.zeros((1, 2, 3, 6), np.float32)
        _C.maxpool2d_fwd(x, 2, 2, 2, 2, 0, 0, 1, 1, False, big[:, :, :, ::2], idx)
    with pytest.raises(ValueError, match=r"\[avg_pool2d\] .*overlaps"):
        xx = np.zeros((1, 2, 2, 2), np.float32)
        _C.avgpool2d_fwd(xx, 1, 1, 1, 1, 0, 0, False, True, 0, xx)
    with pytest.raises(ValueError, match=r"read-only"):
        ro = np.zeros((1, 2, 3, 3), np.float32)
        ro.flags.writeable = False
        _C.avgpool2d_fwd(x, 2, 2, 2, 2, 0, 0, False, True, 0, ro)
    with pytest.raises(TypeError, match=r"\[adaptive_avg_pool2d\] out has dtype"):
        _C.adaptive_avgpool2d_fwd(x, np.zeros((1, 2, 1, 1), np.float64))
    # indices from outside the plane are skipped, never written through
    g = np.ones((1, 2, 3, 3), np.float32)
    gx = np.full((1, 2, 6, 6), np.nan, np.float32)
    bad = np.full((1, 2, 3, 3), 10**9, np.int64)
    bad[0, 0, 0, 0] = -5
    bad[0, 1, 1, 1] = 7
    _C.maxpool2d_bwd(g, bad, gx)
    assert gx.sum() == 1.0 and gx[0, 1].flat[7] == 1.0


# ---- modules --------------------------------------------------------------------------------
def test_modules(rng):
    x = _t(_data(rng, (2, 3, 12, 20), np.float32))
    m = nn.MaxPool2d(3, 2, 1)
    assert repr(m) == "MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)"
    R.assert_exact(m(x).numpy(), F.max_pool2d(x, 3, 2, 1).numpy())
    y, i = nn.MaxPool2d(2, return_indices=True)(x)
    assert i.shape == y.shape == (2, 3, 6, 10)
    assert repr(nn.AvgPool2d(3)) == "AvgPool2d(kernel_size=3, stride=3, padding=0)"
    R.assert_exact(
        nn.AvgPool2d(3, 1, 1, count_include_pad=False)(x).numpy(),
        F.avg_pool2d(x, 3, 1, 1, count_include_pad=False).numpy(),
    )
    assert repr(nn.AdaptiveAvgPool2d((None, 7))) == "AdaptiveAvgPool2d(output_size=(None, 7))"
    assert nn.AdaptiveAvgPool2d(1)(x).shape == (2, 3, 1, 1)
    assert nn.AdaptiveMaxPool2d((2, 3))(x).shape == (2, 3, 2, 3)
    x1 = _t(_data(rng, (2, 3, 20), np.float32))
    assert repr(nn.AvgPool1d(3)) == "AvgPool1d(kernel_size=(3,), stride=(3,), padding=(0,))"
    assert nn.AvgPool1d(3)(x1).shape == (2, 3, 6)
    assert nn.MaxPool1d(3, 2, 1)(x1).shape == (2, 3, 10)
    assert nn.AdaptiveAvgPool1d(4)(x1).shape == (2, 3, 4)
    assert nn.AdaptiveMaxPool1d(4)(x1).shape == (2, 3, 4)
    assert "MaxPool2d" in nn.__all__ and "AdaptiveAvgPool2d" in nn.__all__


# ---- optional PyTorch cross-check ----------------------------------------------------------
def test_against_torch_if_available(rng):
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    for _ in range(40):
        H, W = (int(v) for v in rng.integers(3, 30, 2))
        k = tuple(int(v) for v in rng.integers(1, 5, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = tuple(int(rng.integers(0, ki // 2 + 1)) for ki in k)
        ceil, cip = bool(rng.integers(2)), bool(rng.integers(2))
        x = _data(rng, (2, 3, H, W), np.float32)
        try:
            ty, ti = TF.max_pool2d(torch.from_numpy(x), k, s, p, 1, ceil, return_indices=True)
        except RuntimeError:
            with pytest.raises(ValueError):
                F.max_pool2d(_t(x), k, s, p, 1, ceil)
            continue
        y, i = F.max_pool2d(_t(x), k, s, p, 1, ceil, return_indices=True)
        np.testing.assert_array_equal(y.numpy(), ty.numpy())
        np.testing.assert_array_equal(i.numpy(), ti.numpy())
        ta = TF.avg_pool2d(torch.from_numpy(x), k, s, p, ceil, cip)
        np.testing.assert_allclose(
            F.avg_pool2d(_t(x), k, s, p, ceil, cip).numpy(), ta.numpy(), rtol=1e-5, atol=1e-5
        )
        o = (int(rng.integers(1, H + 3)), int(rng.integers(1, W + 3)))
        np.testing.assert_allclose(
            F.adaptive_avg_pool2d(_t(x), o).numpy(),
            TF.adaptive_avg_pool2d(torch.from_numpy(x), o).numpy(),
            rtol=1e-5,
            atol=1e-5,
        )
