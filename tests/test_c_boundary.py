"""Tests of the compiled boundary (ember._C) called directly on numpy arrays.

The float64 numpy result is the spec. float32 GEMM may differ from it by at most ~2x the
error of a plain float32 numpy matmul of the same inputs (plus a tiny floor so 0-vs-0 cases
do not fail). Every kernel runs on both CPU paths (AVX2 and scalar) in one process via
_C._set_force_scalar. Only numpy and pytest are needed; CUDA checks adapt to the build and
the machine (no GPU needed).
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest

from ember import _C

SIZES = (0, 1, 7, 8, 9, 33, 65)
DTYPES = (np.float32, np.float64)


# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------
def _avx2_usable() -> bool:
    caps = _C.cpu_capabilities()
    return caps["avx2"] and caps["fma"] and caps["compiled_avx2"]


@pytest.fixture(params=["avx2", "scalar"])
def cpu_path(request):
    """Run the test on one CPU kernel path; restore the previous override afterwards."""
    if request.param == "avx2" and not _avx2_usable():
        pytest.skip("AVX2+FMA not available on this CPU/build")
    old = _C._force_scalar()
    _C._set_force_scalar(request.param == "scalar")
    try:
        assert _C.cpu_capabilities()["selected"] == request.param
        yield request.param
    finally:
        _C._set_force_scalar(old)


@pytest.fixture
def restore_threads():
    old = _C.get_num_threads()
    yield
    _C.set_num_threads(old)


def _rand(rng, shape, dtype):
    """Random normal data with negatives and a few outliers; never all zeros."""
    x = rng.standard_normal(shape)
    if x.size:
        flat = x.reshape(-1)
        idx = rng.integers(0, flat.size, size=max(1, flat.size // 50))
        flat[idx] *= 30.0
    return x.astype(dtype)


def _make_operand(rng, shape, dtype, transposed):
    """A [B, R, C] operand; transposed -> a swapaxes view of a [B, C, R] array (no copy)."""
    B, R, C = shape
    if transposed:
        return _rand(rng, (B, C, R), dtype).swapaxes(1, 2)
    return _rand(rng, (B, R, C), dtype)


def _check_gemm(a, b, c0, alpha=1.0, beta=0.0, label=""):
    """Run _C.gemm on a copy of c0 and compare with the float64 reference."""
    c = c0.copy()
    _C.gemm(a, b, c, alpha, beta)
    assert c.shape == c0.shape and c.dtype == c0.dtype
    if c.size == 0:
        return
    a64, b64, c64 = a.astype(np.float64), b.astype(np.float64), c0.astype(np.float64)
    ref = alpha * np.matmul(a64, b64)
    scale = abs(alpha) * np.matmul(np.abs(a64), np.abs(b64))
    if beta != 0.0:
        ref = ref + beta * c64
        scale = scale + abs(beta) * np.abs(c64)
    ref = np.broadcast_to(ref, c.shape)
    scale = max(float(np.max(scale)), 1.0)
    assert np.all(np.isfinite(c)), f"non-finite output {label}"
    err = float(np.max(np.abs(c.astype(np.float64) - ref)))
    if c.dtype == np.float32:
        np32 = np.float32(alpha) * np.matmul(a, b)
        if beta != 0.0:
            np32 = np32 + np.float32(beta) * c0
        err_np = float(np.max(np.abs(np.broadcast_to(np32, c.shape).astype(np.float64) - ref)))
        tol = 2.0 * err_np + 1e-6 * scale
    else:
        tol = 1e-12 * scale
    assert err <= tol, f"gemm error {err:.3g} > tol {tol:.3g} {label}"


# ---------------------------------------------------------------------------------------------
# gemm: correctness
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
def test_gemm_all_small_shapes(cpu_path, dtype, ta, tb):
    rng = np.random.default_rng(1234 + 2 * ta + tb)
    for M, N, K in itertools.product(SIZES, repeat=3):
        B = 2
        a = _make_operand(rng, (B, M, K), dtype, ta)
        b = _make_operand(rng, (B, K, N), dtype, tb)
        c0 = np.full((B, M, N), np.nan, dtype=dtype)  # poisoned: beta=0 must ignore it
        _check_gemm(a, b, c0, label=f"M={M} N={N} K={K} ta={ta} tb={tb}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize(
    "B,M,N,K", [(3, 17, 95, 70), (2, 64, 300, 257), (1, 5, 130, 1000), (1, 1, 1, 4097)]
)
def test_gemm_larger_shapes(cpu_path, dtype, ta, tb, B, M, N, K):
    rng = np.random.default_rng(B * M * N + K)
    a = _make_operand(rng, (B, M, K), dtype, ta)
    b = _make_operand(rng, (B, K, N), dtype, tb)
    _check_gemm(a, b, np.full((B, M, N), np.nan, dtype=dtype), label=f"{(B, M, N, K)}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "alpha,beta", [(1.0, 0.0), (2.5, 0.0), (-1.5, 0.5), (0.5, 1.0), (0.0, 2.0), (1.0, -1.0)]
)
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_alpha_beta(cpu_path, dtype, alpha, beta, tb):
    rng = np.random.default_rng(7)
    for M, N, K in [(7, 9, 33), (8, 65, 8), (1, 70, 9), (33, 3, 65)]:
        a = _rand(rng, (2, M, K), dtype)
        b = _make_operand(rng, (2, K, N), dtype, tb)
        c0 = _rand(rng, (2, M, N), dtype)
        _check_gemm(a, b, c0, alpha, beta, label=f"M={M} N={N} K={K}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_nan_in_c_does_not_leak_when_beta_zero(cpu_path, dtype):
    rng = np.random.default_rng(3)
    for M, N, K in [(9, 65, 33), (7, 3, 9), (8, 8, 0)]:
        a, b = _rand(rng, (1, M, K), dtype), _rand(rng, (1, K, N), dtype)
        c = np.full((1, M, N), np.nan, dtype=dtype)
        _C.gemm(a, b, c, 1.0, 0.0)
        assert np.all(np.isfinite(c))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_k_zero(cpu_path, dtype):
    a, b = np.ones((2, 3, 0), dtype), np.ones((2, 0, 5), dtype)
    c = np.full((2, 3, 5), np.nan, dtype=dtype)
    _C.gemm(a, b, c, 1.0, 0.0)
    np.testing.assert_array_equal(c, 0.0)
    c = np.full((2, 3, 5), 4.0, dtype=dtype)
    _C.gemm(a, b, c, 1.0, 0.5)
    np.testing.assert_array_equal(c, 2.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_broadcast_batch(cpu_path, dtype):
    rng = np.random.default_rng(11)
    B, M, N, K = 4, 9, 33, 17
    a1, b1 = _rand(rng, (1, M, K), dtype), _rand(rng, (1, K, N), dtype)
    a, b = _rand(rng, (B, M, K), dtype), _rand(rng, (B, K, N), dtype)
    c0 = np.full((B, M, N), np.nan, dtype=dtype)
    _check_gemm(np.broadcast_to(a1, (B, M, K)), b, c0, label="a stride-0 batch")
    _check_gemm(a, np.broadcast_to(b1, (B, K, N)), c0, label="b stride-0 batch")
    _check_gemm(a1, b, c0, label="a batch 1")
    _check_gemm(a, b1, c0, label="b batch 1")
    _check_gemm(a1, b1, c0, label="both batch 1")
    bt = _rand(rng, (1, N, K), dtype).swapaxes(1, 2)  # broadcast + transposed
    _check_gemm(a, np.broadcast_to(bt, (B, K, N)), c0, label="b broadcast transposed")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_negative_and_odd_strides(cpu_path, dtype):
    rng = np.random.default_rng(5)
    B, M, N, K = 3, 9, 65, 33
    a, b = _rand(rng, (B, M, 2 * K), dtype), _rand(rng, (B, 2 * K, 2 * N), dtype)
    c0 = np.full((B, M, N), np.nan, dtype=dtype)
    a0, b0 = a[:, :, :K], b[:, :K, :N]
    cases = {
        "a rows reversed": (a0[:, ::-1], b0),
        "a K reversed": (a0[:, :, ::-1], b0),
        "b N reversed": (a0, b0[:, :, ::-1]),
        "b K reversed": (a0, b0[:, ::-1]),
        "batch reversed": (a0[::-1], b0[::-1]),
        "every other K": (a[:, :, ::2], b[:, ::2, :N]),
        "every other N": (a0, b[:, :K, ::2][:, :, :N]),
        "a^T reversed": (a0.swapaxes(1, 2)[:, ::-1].swapaxes(1, 2), b0),
    }
    for label, (x, y) in cases.items():
        _check_gemm(x, y, c0, label=label)


def test_gemm_identical_across_thread_counts(restore_threads):
    rng = np.random.default_rng(9)
    a, b = _rand(rng, (2, 64, 200), np.float32), _rand(rng, (2, 200, 96), np.float32)
    outs = []
    for n in (1, 2, 3):
        _C.set_num_threads(n)
        c = np.empty((2, 64, 96), np.float32)
        _C.gemm(a, b, c)
        outs.append(c)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_gemm_from_python_threads():
    """Kernels are re-entrant and release the GIL: concurrent calls give the right answers."""
    rng = np.random.default_rng(13)
    a, b = _rand(rng, (4, 48, 64), np.float32), _rand(rng, (4, 64, 80), np.float32)
    ref = np.empty((4, 48, 80), np.float32)
    _C.gemm(a, b, ref)
    outs = [np.full_like(ref, np.nan) for _ in range(4)]
    errors = []

    def work(c):
        try:
            for _ in range(20):
                _C.gemm(a, b, c)
        except Exception as e:  # noqa: BLE001 - any failure in a worker is reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(c,)) for c in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for c in outs:
        np.testing.assert_array_equal(c, ref)


# ---------------------------------------------------------------------------------------------
# gemm: errors
# ---------------------------------------------------------------------------------------------
def _ok(dtype=np.float32, B=2, M=3, N=4, K=5):
    return np.ones((B, M, K), dtype), np.ones((B, K, N), dtype), np.zeros((B, M, N), dtype)


def test_gemm_error_not_3d():
    a, b, c = _ok()
    with pytest.raises(ValueError, match=r"^\[gemm\] a must be 3-D"):
        _C.gemm(a[0], b, c)
    with pytest.raises(ValueError, match=r"^\[gemm\] b must be 3-D"):
        _C.gemm(a, b[None], c)
    with pytest.raises(ValueError, match=r"^\[gemm\] c must be 3-D"):
        _C.gemm(a, b, c[0])


def test_gemm_error_inner_dim():
    a, _, c = _ok()
    b = np.ones((2, 6, 4), np.float32)
    with pytest.raises(ValueError, match=r"^\[gemm\] a is \[B,M,K\]=\[2, 3, 5\] but b is"):
        _C.gemm(a, b, c)


def test_gemm_error_batch_mismatch():
    a, b, c = _ok(B=2)
    with pytest.raises(ValueError, match=r"^\[gemm\] batch mismatch"):
        _C.gemm(np.ones((3, 3, 5), np.float32), b, c)
    with pytest.raises(ValueError, match=r"^\[gemm\] batch mismatch"):
        _C.gemm(a, b, np.zeros((3, 3, 4), np.float32))


def test_gemm_error_c_shape():
    a, b, _ = _ok()
    with pytest.raises(ValueError, match=r"^\[gemm\] c has shape \[2, 4, 3\]"):
        _C.gemm(a, b, np.zeros((2, 4, 3), np.float32))


@pytest.mark.parametrize(
    "da,db,dc",
    [
        (np.float32, np.float64, np.float32),
        (np.float64, np.float64, np.float32),
        (np.int64, np.int64, np.int64),
        (np.float16, np.float16, np.float16),
        (">f4", ">f4", ">f4"),
        (np.complex64, np.complex64, np.complex64),
    ],
)
def test_gemm_error_dtype(da, db, dc):
    a, b, c = np.ones((1, 2, 3), da), np.ones((1, 3, 4), db), np.zeros((1, 2, 4), dc)
    with pytest.raises(TypeError, match=r"^\[gemm\] "):
        _C.gemm(a, b, c)


def test_gemm_error_c_not_contiguous():
    a, b, _ = _ok()
    c = np.zeros((2, 4, 3), np.float32).swapaxes(1, 2)
    with pytest.raises(ValueError, match=r"^\[gemm\] output c must be C-contiguous"):
        _C.gemm(a, b, c)
    c = np.zeros((2, 3, 8), np.float32)[:, :, ::2]
    with pytest.raises(ValueError, match=r"^\[gemm\] output c must be C-contiguous"):
        _C.gemm(a, b, c)


def test_gemm_error_c_read_only():
    a, b, c = _ok()
    c.flags.writeable = False
    with pytest.raises(ValueError, match=r"^\[gemm\] output c is read-only"):
        _C.gemm(a, b, c)


def test_gemm_error_c_overlaps_input():
    x = np.ones((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"^\[gemm\] output c overlaps an input"):
        _C.gemm(x, np.ones((2, 4, 4), np.float32), x)
    with pytest.raises(ValueError, match=r"^\[gemm\] output c overlaps an input"):
        _C.gemm(np.ones((2, 4, 4), np.float32), x, x)
    buf = np.ones(200, np.float32)
    a = buf[:40].reshape(2, 4, 5)
    c = buf[30:70].reshape(2, 4, 5)[:, :, :4].copy()  # disjoint copy is fine
    _C.gemm(a, np.ones((2, 5, 4), np.float32), c)
    c_view = buf[30:62].reshape(2, 4, 4)  # shares bytes 30..39 with a
    with pytest.raises(ValueError, match=r"^\[gemm\] output c overlaps an input"):
        _C.gemm(a, np.ones((2, 5, 4), np.float32), c_view)


def test_gemm_error_not_an_array():
    a, b, c = _ok()
    with pytest.raises(TypeError, match=r"^\[gemm\] a must be a numpy.ndarray, got list"):
        _C.gemm(a.tolist(), b, c)
    with pytest.raises(TypeError, match=r"^\[gemm\] c must be a numpy.ndarray"):
        _C.gemm(a, b, c.tolist())
    with pytest.raises(TypeError, match=r"^\[gemm\] b must be a numpy.ndarray, got NoneType"):
        _C.gemm(a, None, c)


def test_gemm_error_stride_not_multiple_of_itemsize():
    base = np.zeros(64, np.float32)
    a = np.lib.stride_tricks.as_strided(base, shape=(1, 2, 3), strides=(0, 6, 4))
    b, c = np.ones((1, 3, 4), np.float32), np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r"^\[gemm\] a has a byte stride of 6 on axis 1"):
        _C.gemm(a, b, c)


def test_gemm_error_misaligned():
    raw = np.zeros(4 * 24 + 1, np.uint8)
    a = raw[1:].view(np.float32).reshape(1, 4, 6)
    assert not a.flags.aligned
    b, c = np.ones((1, 6, 2), np.float32), np.zeros((1, 4, 2), np.float32)
    with pytest.raises(ValueError, match=r"^\[gemm\] a is not aligned"):
        _C.gemm(a, b, c)


# ---------------------------------------------------------------------------------------------
# relu
# ---------------------------------------------------------------------------------------------
def _relu_ref(x):
    return np.where(x < 0, np.zeros_like(x), x)


def _relu_grad_ref(g, x):
    return np.where(x > 0, g, np.zeros_like(g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 4, 7, 8, 9, 31, 33, 1000, 65536, 1000003])
def test_relu_fwd_bwd(cpu_path, dtype, n):
    rng = np.random.default_rng(n)
    x = _rand(rng, n, dtype)
    g = _rand(rng, n, dtype)
    out = np.full(n, np.nan, dtype)
    _C.relu_fwd(x, out)
    np.testing.assert_array_equal(out, _relu_ref(x))
    gin = np.full(n, np.nan, dtype)
    _C.relu_bwd(g, x, gin)
    np.testing.assert_array_equal(gin, _relu_grad_ref(g, x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_special_values(cpu_path, dtype):
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30], dtype)
    x = np.tile(specials, 5)  # 40 elements: vector body and scalar tail both see them
    out = np.empty_like(x)
    _C.relu_fwd(x, out)
    ref = _relu_ref(x)
    np.testing.assert_array_equal(out, ref)  # NaN positions must match: NaN propagates
    assert np.array_equal(np.signbit(out), np.signbit(ref))
    assert np.isnan(out[::8]).all()
    g = np.arange(1, x.size + 1, dtype=dtype)
    gin = np.full_like(x, np.nan)
    _C.relu_bwd(g, x, gin)
    np.testing.assert_array_equal(gin, _relu_grad_ref(g, x))  # NaN x -> 0
    assert gin[0] == 0 and gin[2] == 3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [7, 1000003])
def test_relu_in_place(cpu_path, dtype, n):
    rng = np.random.default_rng(1)
    x = _rand(rng, n, dtype)
    x0 = x.copy()
    _C.relu_fwd(x, x)
    np.testing.assert_array_equal(x, _relu_ref(x0))
    x, g = _rand(rng, n, dtype), _rand(rng, n, dtype)
    ref = _relu_grad_ref(g, x)
    g_in_place = g.copy()
    _C.relu_bwd(g_in_place, x, g_in_place)  # grad_in is grad_out
    np.testing.assert_array_equal(g_in_place, ref)
    x_in_place = x.copy()
    _C.relu_bwd(g, x_in_place, x_in_place)  # grad_in is x
    np.testing.assert_array_equal(x_in_place, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (3, 0, 2), (), (3, 5, 7), (2, 1, 9)])
def test_relu_shapes(cpu_path, dtype, shape):
    rng = np.random.default_rng(2)
    x, g = _rand(rng, shape, dtype), _rand(rng, shape, dtype)
    out, gin = np.full(shape, np.nan, dtype), np.full(shape, np.nan, dtype)
    _C.relu_fwd(x, out)
    _C.relu_bwd(g, x, gin)
    np.testing.assert_array_equal(out, _relu_ref(x))
    np.testing.assert_array_equal(gin, _relu_grad_ref(g, x))


def test_relu_errors():
    x = np.ones((4, 6), np.float32)
    out = np.empty_like(x)
    with pytest.raises(ValueError, match=r"^\[relu\] x must be C-contiguous"):
        _C.relu_fwd(x.T, out.T.copy())
    with pytest.raises(ValueError, match=r"^\[relu\] out must be C-contiguous"):
        _C.relu_fwd(x.T.copy(), out.T)
    with pytest.raises(ValueError, match=r"^\[relu\] out has shape \[6, 4\] but x has \[4, 6\]"):
        _C.relu_fwd(x, out.reshape(6, 4))
    with pytest.raises(TypeError, match=r"^\[relu\] out has dtype float64 but x has float32"):
        _C.relu_fwd(x, out.astype(np.float64))
    with pytest.raises(TypeError, match=r"^\[relu\] x has dtype int32"):
        _C.relu_fwd(x.astype(np.int32), out)
    with pytest.raises(TypeError, match=r"^\[relu\] x must be a numpy.ndarray, got list"):
        _C.relu_fwd([1.0, -1.0], out)
    with pytest.raises(TypeError, match=r"^\[relu\] out must be a numpy.ndarray"):
        _C.relu_fwd(x, None)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"^\[relu\] out is read-only"):
        _C.relu_fwd(x, ro)
    buf = np.ones(30, np.float32)
    with pytest.raises(ValueError, match=r"^\[relu\] out partially overlaps x"):
        _C.relu_fwd(buf[:24], buf[1:25])
    raw = np.zeros(4 * 8 + 1, np.uint8)
    with pytest.raises(ValueError, match=r"^\[relu\] x is not aligned"):
        _C.relu_fwd(raw[1:].view(np.float32), np.empty(8, np.float32))


def test_relu_bwd_errors():
    g = np.ones(10, np.float64)
    x = np.ones(10, np.float64)
    gin = np.empty(10, np.float64)
    big = np.ones(20, np.float64)
    with pytest.raises(ValueError, match=r"^\[relu\] grad_out must be C-contiguous"):
        _C.relu_bwd(big[::2], x, gin)
    with pytest.raises(ValueError, match=r"^\[relu\] x must be C-contiguous"):
        _C.relu_bwd(g, big[::2], gin)
    with pytest.raises(ValueError, match=r"^\[relu\] grad_in must be C-contiguous"):
        _C.relu_bwd(g, x, big[::2])
    with pytest.raises(ValueError, match=r"^\[relu\] x has shape \[9\] but grad_out has \[10\]"):
        _C.relu_bwd(g, x[:9], gin)
    with pytest.raises(ValueError, match=r"^\[relu\] grad_in has shape"):
        _C.relu_bwd(g, x, gin[:9])
    with pytest.raises(TypeError, match=r"^\[relu\] x has dtype float32 but grad_out has float64"):
        _C.relu_bwd(g, x.astype(np.float32), gin)
    with pytest.raises(TypeError, match=r"^\[relu\] grad_in has dtype float32"):
        _C.relu_bwd(g, x, gin.astype(np.float32))
    with pytest.raises(TypeError, match=r"^\[relu\] grad_out has dtype int64"):
        _C.relu_bwd(g.astype(np.int64), x, gin)
    gin.flags.writeable = False
    with pytest.raises(ValueError, match=r"^\[relu\] grad_in is read-only"):
        _C.relu_bwd(g, x, gin)
    with pytest.raises(ValueError, match=r"^\[relu\] grad_in partially overlaps grad_out"):
        _C.relu_bwd(big[:10], x, big[5:15])
    with pytest.raises(ValueError, match=r"^\[relu\] grad_in partially overlaps x"):
        _C.relu_bwd(g, big[:10], big[5:15])


# ---------------------------------------------------------------------------------------------
# runtime: capabilities, dispatch override, threads
# ---------------------------------------------------------------------------------------------
def test_cpu_capabilities():
    caps = _C.cpu_capabilities()
    bool_keys = [
        "avx2",
        "fma",
        "avx512f",
        "compiled_avx2",
        "no_avx2_env",
        "no_avx512_env",
        "openmp",
    ]
    assert set(caps) == set(bool_keys) | {"selected", "max_threads", "gemm_path"}
    for k in bool_keys:
        assert isinstance(caps[k], bool), k
    assert caps["selected"] in ("avx2", "scalar")
    assert caps["gemm_path"] in ("scalar", "avx2-6x16", "avx512-12x32")
    assert isinstance(caps["max_threads"], int) and caps["max_threads"] >= 1
    env = os.environ.get("EMBER_NO_AVX2", "").lower() in ("1", "true", "yes", "on")
    assert caps["no_avx2_env"] == env


def test_force_scalar_override():
    old = _C._force_scalar()
    try:
        _C._set_force_scalar(True)
        assert _C._force_scalar() is True
        assert _C.cpu_capabilities()["selected"] == "scalar"
        _C._set_force_scalar(False)
        assert _C._force_scalar() is False
        assert _C.cpu_capabilities()["selected"] == ("avx2" if _avx2_usable() else "scalar")
    finally:
        _C._set_force_scalar(old)


def test_threads(restore_threads):
    assert isinstance(_C.get_num_threads(), int) and _C.get_num_threads() >= 1
    _C.set_num_threads(1)
    assert _C.get_num_threads() == 1
    _C.set_num_threads(3)
    assert _C.get_num_threads() == (3 if _C.cpu_capabilities()["openmp"] else 1)
    assert _C.cpu_capabilities()["max_threads"] == _C.get_num_threads()
    for bad in (0, -1):
        with pytest.raises(ValueError, match=r"^\[set_num_threads\] "):
            _C.set_num_threads(bad)
    with pytest.raises(ValueError, match=r"^\[set_num_threads\] "):
        _C.set_num_threads(10**9)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kernels_work_in_forked_child(restore_threads):
    """GNU OpenMP hangs in a child forked after the pool started; ember must not."""
    x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    y = np.empty_like(x)
    a = np.ones((4, 64, 256), np.float32)
    c = np.empty((4, 64, 64), np.float32)
    _C.set_num_threads(max(2, _C.get_num_threads()))
    _C.relu_fwd(x, y)  # start the thread pool in the parent
    _C.gemm(a, a.swapaxes(1, 2), c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "process is multi-threaded"
        pid = os.fork()
    if pid == 0:  # child: must finish, and correctly
        code = 1
        try:
            _C.relu_fwd(x, y)
            _C.gemm(a, a.swapaxes(1, 2), c)
            code = 0 if np.array_equal(y, _relu_ref(x)) and np.all(c == 256.0) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("kernel call in a forked child hung")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


# ---------------------------------------------------------------------------------------------
# CUDA bindings (exist in every build; behaviour depends on build and machine)
# ---------------------------------------------------------------------------------------------
class FakeCudaArray:
    """Exposes __cuda_array_interface__ without any GPU memory behind it."""

    def __init__(self, shape, typestr="<f4", ptr=1 << 20, readonly=False, strides=None, **extra):
        self.__cuda_array_interface__ = {
            "shape": tuple(shape),
            "typestr": typestr,
            "data": (ptr, readonly),
            "strides": strides,
            "version": 3,
            **extra,
        }


def _no_gpu_driver() -> bool:
    return not os.path.exists("/dev/nvidiactl")


def test_cuda_queries_never_raise():
    assert isinstance(_C.cuda_compiled(), bool)
    n = _C.cuda_device_count()
    assert isinstance(n, int) and n >= 0
    assert _C.cuda_device_count() == n  # a failed query leaves no sticky state behind
    if not _C.cuda_compiled() or _no_gpu_driver():
        assert n == 0


def test_cuda_synchronize_without_gpu():
    if _C.cuda_device_count() > 0:
        _C.cuda_synchronize()
        return
    match = r"^\[cuda_synchronize\] " + ("CUDA error" if _C.cuda_compiled() else "ember was built")
    with pytest.raises(RuntimeError, match=match):
        _C.cuda_synchronize()


@pytest.mark.skipif(_C.cuda_compiled(), reason="build has CUDA")
def test_cuda_bindings_without_cuda_build():
    x = FakeCudaArray((4,))
    with pytest.raises(RuntimeError, match=r"^\[relu\] ember was built without CUDA"):
        _C.relu_fwd_cuda(x, x, 0)
    with pytest.raises(RuntimeError, match=r"^\[relu\] ember was built without CUDA"):
        _C.relu_bwd_cuda(x, x, x, 0)


@pytest.mark.skipif(not _C.cuda_compiled(), reason="build without CUDA")
def test_cuda_binding_validation():
    """All of these fail in validation, before any CUDA call, so they are safe anywhere."""
    x, out = FakeCudaArray((4, 5)), FakeCudaArray((4, 5), ptr=1 << 21)
    with pytest.raises(TypeError, match=r"^\[relu\] x must expose __cuda_array_interface__"):
        _C.relu_fwd_cuda(np.ones(3, np.float32), out, 0)
    with pytest.raises(TypeError, match=r"^\[relu\] x has typestr '<i4'"):
        _C.relu_fwd_cuda(FakeCudaArray((4, 5), "<i4"), out, 0)
    with pytest.raises(TypeError, match=r"^\[relu\] out has typestr '<f8' but x has '<f4'"):
        _C.relu_fwd_cuda(x, FakeCudaArray((4, 5), "<f8", ptr=1 << 21), 0)
    with pytest.raises(ValueError, match=r"^\[relu\] out has shape \[5, 4\] but x has \[4, 5\]"):
        _C.relu_fwd_cuda(x, FakeCudaArray((5, 4), ptr=1 << 21), 0)
    with pytest.raises(ValueError, match=r"^\[relu\] x must be C-contiguous"):
        _C.relu_fwd_cuda(FakeCudaArray((4, 5), strides=(4, 16)), out, 0)
    with pytest.raises(ValueError, match=r"^\[relu\] out is read-only"):
        _C.relu_fwd_cuda(x, FakeCudaArray((4, 5), ptr=1 << 21, readonly=True), 0)
    with pytest.raises(ValueError, match=r"^\[relu\] out partially overlaps x"):
        _C.relu_fwd_cuda(x, FakeCudaArray((4, 5), ptr=(1 << 20) + 8), 0)
    with pytest.raises(ValueError, match=r"^\[relu\] x has a null data pointer"):
        _C.relu_fwd_cuda(FakeCudaArray((4, 5), ptr=0), out, 0)
    with pytest.raises(ValueError, match=r"^\[relu\] x is a masked array"):
        _C.relu_fwd_cuda(FakeCudaArray((4, 5), mask=object()), out, 0)
    with pytest.raises(TypeError, match=r"^\[relu\] x has a malformed __cuda_array_interface__"):
        _C.relu_fwd_cuda(FakeCudaArray(("a", 5)), out, 0)
    with pytest.raises(TypeError, match=r"^\[relu\] stream must be an int"):
        _C.relu_fwd_cuda(x, out, "stream")
    with pytest.raises(ValueError, match=r"^\[relu\] grad_in is read-only"):
        _C.relu_bwd_cuda(x, x, FakeCudaArray((4, 5), ptr=1 << 21, readonly=True), 0)
    with pytest.raises(ValueError, match=r"^\[relu\] grad_in partially overlaps x"):
        _C.relu_bwd_cuda(out, x, FakeCudaArray((4, 5), ptr=(1 << 20) + 4), 0)
    # zero-size arrays are a no-op that never touches CUDA
    z = FakeCudaArray((0, 5), ptr=0)
    assert _C.relu_fwd_cuda(z, z, 0) is None
    assert _C.relu_bwd_cuda(z, z, z, 0) is None


@pytest.mark.skipif(
    not _C.cuda_compiled() or _C.cuda_device_count() > 0, reason="needs a CUDA build, no GPU"
)
def test_cuda_launch_without_gpu_raises_cleanly():
    x, out = FakeCudaArray((1000,)), FakeCudaArray((1000,), ptr=1 << 21)
    with pytest.raises(RuntimeError, match=r"^\[relu\] CUDA error: "):
        _C.relu_fwd_cuda(x, out, 0)
    with pytest.raises(RuntimeError, match=r"^\[relu\] CUDA error: "):
        _C.relu_bwd_cuda(x, x, out, 0)
    assert _C.cuda_device_count() == 0  # still answers after the failure


def _cupy_or_skip():
    if not _C.cuda_compiled() or _C.cuda_device_count() == 0:
        pytest.skip("needs a CUDA build and a GPU")
    return pytest.importorskip("cupy")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000, 1000003])
@pytest.mark.parametrize("offset", [0, 1])  # 1: unaligned view -> scalar kernel
def test_cuda_relu_matches_numpy(dtype, n, offset):
    cp = _cupy_or_skip()
    rng = np.random.default_rng(n)
    xh, gh = _rand(rng, n + offset, dtype), _rand(rng, n + offset, dtype)
    xh[::97] = np.nan
    x, g = cp.asarray(xh)[offset:], cp.asarray(gh)[offset:]
    out = cp.full(n + offset, cp.nan, dtype)[offset:]
    gin = cp.full(n + offset, cp.nan, dtype)[offset:]
    stream = cp.cuda.get_current_stream().ptr
    _C.relu_fwd_cuda(x, out, stream)
    _C.relu_bwd_cuda(g, x, gin, stream)
    np.testing.assert_array_equal(cp.asnumpy(out), _relu_ref(xh[offset:]))
    np.testing.assert_array_equal(cp.asnumpy(gin), _relu_grad_ref(gh[offset:], xh[offset:]))
    _C.relu_fwd_cuda(x, x, stream)  # in place
    np.testing.assert_array_equal(cp.asnumpy(x), _relu_ref(xh[offset:]))
    _C.cuda_synchronize()


def test_keep_freed_memory_toggles_and_reuses_pages():
    """glibc: keep_freed_memory tunes mallopt (ember does it at import unless
    EMBER_KEEP_FREED_MEMORY=0); a freed 8 MiB block is then reused instead of unmapped."""
    import sys

    from ember.backends import cpu

    if not sys.platform.startswith("linux") or not cpu.keep_freed_memory(True):
        pytest.skip("not glibc")
    try:
        a = np.ones(2 << 20, np.float32)
        addr = a.ctypes.data
        del a
        b = np.ones(2 << 20, np.float32)
        assert b.ctypes.data == addr  # the same block, its pages already faulted in
        assert cpu.keep_freed_memory(False) is True
    finally:
        cpu.keep_freed_memory(True)


def test_pool_rethrows_a_piece_exception_on_the_caller():
    """An exception thrown in a claim-pool piece (on a worker or on the calling thread) reaches
    Python as an error instead of ending the process (an exception leaving a worker thread
    calls std::terminate; one leaving the caller's piece used to unwind while workers still
    ran the job), the pieces not yet claimed are skipped, and the pool keeps working."""
    C = _C
    for throw_at in (0, 7, 15):  # the caller claims piece 0 first; the others go either way
        for _ in range(5):
            with pytest.raises(RuntimeError, match=r"\[pool test\] piece"):
                C._pool_throw_test(2, 16, throw_at)
    assert C._pool_throw_test(2, 16, -1) == 16
    assert C._pool_throw_test(1, 4, -1) == 4
    with pytest.raises(RuntimeError, match=r"piece 2"):
        C._pool_throw_test(1, 4, 2)
