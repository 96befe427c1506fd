"""GEMM (kernels/cpu/gemm.cpp) against float64 numpy references, on every CPU path.

Paths: "scalar" (force-scalar flag), "avx2" (AVX-512 disabled) and "avx512" (when the CPU has
it). Tolerance follows shared/DESIGN.md: the float32 kernel's max error against the float64
reference is at most ~2x the error of numpy's float32 product of the same inputs, plus a tiny
floor relative to sum |a||b|. float64 (the gradcheck path) must be within 1e-12 of it.
Self-contained: needs only numpy and pytest (torch cross-checks are skipped when absent).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import _C

CAPS = _C.cpu_capabilities()
PATHS = ["scalar", "avx2", "avx512"]
SIZES = [0, 1, 2, 5, 6, 7, 15, 16, 17, 31, 64, 65, 127, 128, 129, 255, 300]
ACTS = ["none", "relu", "gelu", "gelu_tanh"]


def _path_available(path):
    if path == "scalar":
        return True
    ok = CAPS["avx2"] and CAPS["fma"] and CAPS["compiled_avx2"]
    return ok and (path == "avx2" or CAPS["avx512f"])


@pytest.fixture(params=PATHS)
def path(request):
    """Run the test on one CPU GEMM path, restoring the dispatch flags afterwards."""
    p = request.param
    if not _path_available(p):
        pytest.skip(f"CPU has no {p}")
    old = (_C._force_scalar(), _C._no_avx512())
    _C._set_force_scalar(p == "scalar")
    _C._set_no_avx512(p != "avx512")
    try:
        expected = {"scalar": "scalar", "avx2": "avx2-6x16", "avx512": "avx512-12x32"}[p]
        assert _C.cpu_capabilities()["gemm_path"] == expected
        yield p
    finally:
        _C._set_force_scalar(old[0])
        _C._set_no_avx512(old[1])


@pytest.fixture
def threads():
    old = _C.get_num_threads()
    yield
    _C.set_num_threads(old)


def _rand(rng, shape, dtype=np.float32):
    """Normal values with a few outliers (x30), never all-zero."""
    x = rng.standard_normal(shape)
    if x.size:
        flat = x.reshape(-1)
        flat[rng.integers(0, flat.size, size=max(1, flat.size // 50))] *= 30.0
    return x.astype(dtype)


def _operand(rng, B, R, C, dtype, transposed):
    """[B, R, C] operand; transposed: a swapaxes view of a [B, C, R] array (no copy)."""
    if transposed:
        return _rand(rng, (B, C, R), dtype).swapaxes(1, 2)
    return _rand(rng, (B, R, C), dtype)


def _act64(z, act):
    if act == "relu":
        return np.where(z < 0, 0.0, z)
    if act == "gelu":
        erfc = np.vectorize(math.erfc, otypes=[np.float64])
        return 0.5 * z * erfc(-z / math.sqrt(2.0))
    if act == "gelu_tanh":  # 0.5 z (1 + tanh(u)) without the cancellation for z << 0
        u = math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)
        with np.errstate(over="ignore"):
            return z / (1 + np.exp(-2 * u))
    return z


def check_gemm(a, b, c0=None, alpha=1.0, beta=0.0, bias=None, act="none", label=""):
    """Run _C.gemm on a copy of c0 (NaN-poisoned when None) and compare with float64."""
    dt = a.dtype
    B = max(a.shape[0], b.shape[0])
    M, N = a.shape[1], b.shape[2]
    if c0 is None:
        c0 = np.full((B, M, N), np.nan, dt)
    c = c0.copy()
    _C.gemm(a, b, c, alpha, beta, bias, act)
    if c.size == 0:
        return c
    a64, b64, c64 = a.astype(np.float64), b.astype(np.float64), c0.astype(np.float64)
    z = alpha * np.matmul(a64, b64)
    scale = abs(alpha) * np.matmul(np.abs(a64), np.abs(b64))
    if beta != 0.0:
        z = z + beta * c64
        scale = scale + abs(beta) * np.abs(c64)
    if bias is not None:
        z = z + bias.astype(np.float64)
        scale = scale + np.abs(bias.astype(np.float64))
    z = np.broadcast_to(z, c.shape)
    ref = _act64(z, act)
    scale = max(float(np.max(scale)), 1.0)
    assert not np.isnan(c).any(), f"NaN in output (unwritten element?) {label}"
    err = np.abs(c.astype(np.float64) - ref)
    if dt == np.float32:
        z32 = np.float32(alpha) * np.matmul(a, b)
        if beta != 0.0:
            z32 = z32 + np.float32(beta) * c0
        if bias is not None:
            z32 = z32 + bias
        err_np = float(np.max(np.abs(np.broadcast_to(z32, c.shape).astype(np.float64) - z)))
        # activations have slope <= 1.13 and add a few ulp of their own
        tol = 2.0 * 1.13 * err_np + 1e-6 * scale + 4e-6 * np.abs(ref)
    else:
        tol = 1e-12 * scale + 1e-12 * np.abs(ref)
    bad = err > tol
    assert not bad.any(), (
        f"gemm error {float(err.max()):.3g} > tol {float(np.max(tol)):.3g} {label}"
    )
    return c


# ---------------------------------------------------------------------------------- shapes
def test_gemm_shape_grid(path):
    """A seeded sample of the M, N, K grid x all four transpose combos, float32."""
    rng = np.random.default_rng(1)
    grid = [(M, N, K) for M in SIZES for N in SIZES for K in SIZES]
    idx = rng.choice(len(grid), size=200, replace=False)
    cases = [grid[i] for i in idx] + [(0, 5, 3), (5, 0, 3), (5, 3, 0), (1, 1, 1), (300, 300, 300)]
    for M, N, K in cases:
        if path == "scalar" and M * N * K > 3e6:
            continue
        for ta in (False, True):
            for tb in (False, True):
                a = _operand(rng, 1, M, K, np.float32, ta)
                b = _operand(rng, 1, K, N, np.float32, tb)
                check_gemm(a, b, label=f"M={M} N={N} K={K} ta={ta} tb={tb}")


@pytest.mark.parametrize(
    "M,N,K",
    [
        (6, 16, 7),
        (12, 32, 5),
        (7, 17, 1),
        (13, 33, 515),
        (301, 97, 1025),
        (2, 300, 64),
        (1, 129, 300),
        (129, 1, 77),
        (64, 1000, 600),  # one M block, N cut into L2-sized B blocks (+ a partial panel)
    ],
)
def test_gemm_tile_edges_and_k_blocks(path, M, N, K):
    """Register-tile multiples and +1, K past one and several KC blocks, skinny M."""
    rng = np.random.default_rng(M * 1000 + N)
    for ta in (False, True):
        for tb in (False, True):
            a = _operand(rng, 1, M, K, np.float32, ta)
            b = _operand(rng, 1, K, N, np.float32, tb)
            check_gemm(a, b, label=f"ta={ta} tb={tb}")


def test_gemm_small_unpacked_tiles(path):
    """The AVX-512 unpacked tiles for small products (gemm_small512): every row count of an
    edge tile (1..12 and past 12), last column panels of <= 16 and 17..31 columns, K at the
    512 limit and past it (packed), all transposes, with alpha, beta, bias and activation."""
    rng = np.random.default_rng(11)
    for M in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 25):
        for N, K in ((17, 1), (31, 7), (33, 64), (48, 9), (80, 512), (40, 513)):
            for ta in (False, True):
                for tb in (False, True):
                    a = _operand(rng, 1, M, K, np.float32, ta)
                    b = _operand(rng, 1, K, N, np.float32, tb)
                    label = f"M={M} N={N} K={K} ta={ta} tb={tb}"
                    check_gemm(a, b, label=label)
                    check_gemm(
                        a, b, _rand(rng, (1, M, N)), -0.5, 0.25, _rand(rng, (N,)), "gelu", label
                    )


def test_gemm_large_once():
    rng = np.random.default_rng(2)
    a = _rand(rng, (1, 1000, 1000))
    b = _rand(rng, (1, 1000, 1000))
    check_gemm(a, b, label="1000^3")


def test_gemm_float64(path):
    rng = np.random.default_rng(3)
    for M, N, K in [(1, 1, 1), (7, 17, 31), (65, 33, 129)]:
        for tb in (False, True):
            a = _operand(rng, 2, M, K, np.float64, False)
            b = _operand(rng, 2, K, N, np.float64, tb)
            check_gemm(a, b, label=f"{M} {N} {K}")
            check_gemm(
                a,
                b,
                _rand(rng, (2, M, N), np.float64),
                0.5,
                -1.5,
                _rand(rng, (N,), np.float64),
                "gelu",
            )


# ---------------------------------------------------------------------- alpha, beta, NaN
@pytest.mark.parametrize(
    "alpha,beta", [(1.0, 0.0), (2.5, 0.0), (1.0, 1.0), (-0.5, 0.25), (0.0, 2.0), (1.0, -1.0)]
)
def test_gemm_alpha_beta(path, alpha, beta):
    rng = np.random.default_rng(4)
    for M, N, K in [(5, 7, 3), (13, 33, 40), (64, 65, 600)]:
        a = _rand(rng, (1, M, K))
        b = _operand(rng, 1, K, N, np.float32, True)
        c0 = _rand(rng, (1, M, N)) if beta != 0.0 else np.full((1, M, N), np.nan, np.float32)
        check_gemm(a, b, c0, alpha, beta, label=f"{M} {N} {K}")


def test_gemm_nan_in_c_does_not_leak_with_beta_zero(path):
    rng = np.random.default_rng(5)
    for K in (0, 3, 600):
        a, b = _rand(rng, (2, 13, K)), _rand(rng, (2, K, 35))
        c = np.full((2, 13, 35), np.nan, np.float32)
        _C.gemm(a, b, c, 1.0, 0.0, _rand(rng, (35,)), "gelu")
        assert np.isfinite(c).all()


# --------------------------------------------------------------------- epilogue
@pytest.mark.parametrize("act", ACTS)
def test_gemm_bias_and_activation(path, act):
    rng = np.random.default_rng(6)
    for M, N, K in [
        (1, 5, 3),
        (2, 40, 17),
        (7, 17, 5),
        (30, 70, 130),
        (13, 33, 600),
        (70, 700, 1100),
        (5, 3, 0),
    ]:
        for tb in (False, True):
            a = _rand(rng, (1, M, K))
            b = _operand(rng, 1, K, N, np.float32, tb)
            bias = _rand(rng, (N,))
            check_gemm(a, b, bias=bias, act=act, label=f"{M} {N} {K} tb={tb}")
            check_gemm(a, b, None, 0.5, 0.0, None, act, label="no bias")
            check_gemm(a, b, _rand(rng, (1, M, N)), 1.0, 0.5, bias, act, label="beta")


def test_gemm_activation_nan_and_extremes(path):
    """relu/gelu of NaN is NaN; gelu keeps relative precision far out in the negative tail."""
    z = np.array(
        [[np.nan, -np.inf, -20.0, -9.0, -3.0, -1e-3, 0.0, 1e-3, 3.0, 9.0, 50.0]], np.float32
    )
    eye = np.ones((1, 1, 1), np.float32)
    for act in ("relu", "gelu", "gelu_tanh"):
        c = np.empty((1, 1, z.shape[1]), np.float32)
        _C.gemm(eye, z[None], c, 1.0, 0.0, None, act)
        assert np.isnan(c[0, 0, 0]), act
        ref = _act64(z[0, 2:].astype(np.float64), act)
        got = c[0, 0, 2:].astype(np.float64)
        assert np.all(np.abs(got - ref) <= 1e-5 * np.abs(ref) + 1e-30), (act, got, ref)


# ------------------------------------------------------------------ strides and batches
def test_gemm_noncontiguous_and_broadcast(path):
    rng = np.random.default_rng(7)
    B, M, N, K = 3, 19, 37, 45
    big_a = _rand(rng, (B, 2 * M, 3 * K))
    big_b = _rand(rng, (B, 2 * K, 2 * N))
    a = big_a[:, ::2, ::3]
    b = big_b[:, ::2, ::2]
    check_gemm(a, b, label="step slices")
    check_gemm(a[:, ::-1], b[:, :, ::-1], label="negative strides")
    check_gemm(a[:1], b, label="a batch 1")
    check_gemm(np.broadcast_to(a[:1], (B, M, K)), b, label="a stride-0 batch")
    check_gemm(
        a,
        np.broadcast_to(b[:1].swapaxes(1, 2).copy().swapaxes(1, 2), (B, K, N)),
        label="b broadcast transposed",
    )
    check_gemm(np.asfortranarray(a[0])[None], b[:1], label="fortran a")


def test_gemm_thread_counts_give_identical_results(threads):
    """1 and 2 threads: same blocking per output element, so bit-identical; covers the
    batch split, the N split and the M split."""
    rng = np.random.default_rng(8)
    cases = [
        (4, 100, 120, 90, False),
        (1, 150, 400, 300, True),
        (1, 700, 64, 200, False),
        (3, 90, 70, 515, True),
    ]
    for B, M, N, K, tb in cases:
        a = _rand(rng, (B, M, K))
        b = _operand(rng, B, K, N, np.float32, tb)
        bias = _rand(rng, (N,))
        outs = []
        for n in (1, 2):
            _C.set_num_threads(n)
            c = np.full((B, M, N), np.nan, np.float32)
            _C.gemm(a, b, c, 1.0, 0.0, bias, "gelu")
            outs.append(c)
        assert np.array_equal(outs[0], outs[1]), (B, M, N, K)
        check_gemm(a, b, bias=bias, act="gelu")


def test_gemm_workspace_reuse_across_sizes():
    """Thread-local packing buffers grow and are reused: big, small, big again stay right."""
    rng = np.random.default_rng(9)
    for M, N, K in [(400, 500, 700), (7, 9, 11), (33, 1000, 20), (400, 500, 700)]:
        check_gemm(_rand(rng, (1, M, K)), _rand(rng, (1, K, N)))


def test_gemm_from_python_threads():
    """Kernels are re-entrant: concurrent calls from Python threads (GIL released)."""
    rng = np.random.default_rng(10)
    a, b = _rand(rng, (1, 200, 300)), _rand(rng, (1, 300, 250))
    ref = np.empty((1, 200, 250), np.float32)
    _C.gemm(a, b, ref)
    errors = []

    def work():
        c = np.empty_like(ref)
        for _ in range(5):
            _C.gemm(a, b, c)
            if not np.array_equal(c, ref):
                errors.append("mismatch")

    ts = [threading.Thread(target=work) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


# ----------------------------------------------------------------------------- errors
def test_gemm_errors_epilogue():
    a, b = np.ones((1, 3, 4), np.float32), np.ones((1, 4, 5), np.float32)
    c = np.empty((1, 3, 5), np.float32)
    with pytest.raises(ValueError, match=r"^\[gemm\] bias must have shape \[N\] = \[5\]"):
        _C.gemm(a, b, c, bias=np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"^\[gemm\] bias must have shape"):
        _C.gemm(a, b, c, bias=np.ones((1, 5), np.float32))
    with pytest.raises(TypeError, match=r"^\[gemm\] bias is float64"):
        _C.gemm(a, b, c, bias=np.ones(5))
    with pytest.raises(ValueError, match=r"^\[gemm\] bias must be C-contiguous"):
        _C.gemm(a, b, c, bias=np.ones(10, np.float32)[::2])
    with pytest.raises(ValueError, match=r"^\[gemm\] activation must be"):
        _C.gemm(a, b, c, activation="tanh")
    with pytest.raises(ValueError, match=r"^\[gemm\] output c overlaps bias"):
        _C.gemm(a, b, c, bias=c.reshape(-1)[:5])


def test_ops_gemm_errors():
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"^\[gemm\] a must be 2-D"):
        ember.ops.gemm(np.ones(3, np.float32), b)
    with pytest.raises(ValueError, match=r"^\[gemm\] .*inner dimensions"):
        ember.ops.gemm(a, b, trans_b=True)
    with pytest.raises(ValueError, match=r"^\[gemm\] beta != 0 needs"):
        ember.ops.gemm(a, b, beta=1.0)
    with pytest.raises(TypeError, match=r"^\[gemm\] a is float32 but b is float64"):
        ember.ops.gemm(a, b.astype(np.float64))
    with pytest.raises(ValueError, match=r"^\[gemm\] activation must be"):
        ember.ops.gemm(a, b, activation="swish")
    with pytest.raises(ValueError, match=r"^\[gemm\] batched operands need a 3-D c"):
        ember.ops.gemm(np.ones((2, 3, 4), np.float32), b, np.empty((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"^\[gemm\] output c must be C-contiguous"):
        ember.ops.gemm(a, b, np.empty((5, 3), np.float32).T)


# ------------------------------------------------------------------------ ember.ops.gemm
def test_ops_gemm(path):
    rng = np.random.default_rng(11)
    a, w = _rand(rng, (33, 70)), _rand(rng, (50, 70))
    bias = _rand(rng, (50,))
    y = ember.ops.gemm(a, w, trans_b=True, bias=bias, activation="relu")
    check_gemm(a[None], w.T[None], bias=bias, act="relu")
    ref = np.maximum(a.astype(np.float64) @ w.T.astype(np.float64) + bias, 0)
    assert y.shape == (33, 50) and np.allclose(y, ref, rtol=1e-4, atol=1e-3)
    at = np.ascontiguousarray(a.T)
    y2 = ember.ops.gemm(at, w, trans_a=True, trans_b=True, bias=bias, activation="relu")
    assert np.allclose(y2, y, rtol=1e-5, atol=1e-4)
    c = _rand(rng, (33, 50))
    c_ref = 2.0 * (a.astype(np.float64) @ w.T.astype(np.float64)) + 0.5 * c
    out = ember.ops.gemm(a, w, c, alpha=2.0, beta=0.5, trans_b=True)
    assert out is c and np.allclose(c, c_ref, rtol=1e-4, atol=1e-3)
    ab = _rand(rng, (4, 33, 70))
    yb = ember.ops.gemm(ab, w, trans_b=True)  # 3-D @ 2-D broadcasts the 2-D operand
    assert yb.shape == (4, 33, 50)
    assert np.allclose(yb, ab.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-3)


# -------------------------------------------------------------- autograd: linear, matmul
def _t(rng, *shape):
    return ember.tensor(rng.standard_normal(shape), dtype=ember.float64, requires_grad=True)


@pytest.mark.parametrize("act", ACTS)
def test_linear_act_gradcheck(act):
    rng = np.random.default_rng(12)
    x, w, b = _t(rng, 6, 7), _t(rng, 5, 7), _t(rng, 5)
    assert ember.autograd.gradcheck(lambda x, w, b: F._linear_act(x, w, b, act), (x, w, b))
    assert ember.autograd.gradcheck(lambda x, w: F._linear_act(x, w, None, act), (x, w))
    x3 = _t(rng, 2, 3, 7)
    assert ember.autograd.gradcheck(lambda x, w, b: F._linear_act(x, w, b, act), (x3, w, b))


def test_linear_gradcheck_and_values():
    rng = np.random.default_rng(13)
    x, w, b = _t(rng, 4, 9), _t(rng, 3, 9), _t(rng, 3)
    assert ember.autograd.gradcheck(F.linear, (x, w, b))
    assert ember.autograd.gradcheck(lambda x, w: F.linear(x, w), (x, w))
    x1 = _t(rng, 9)
    assert F.linear(x1, w, b).shape == (3,)
    assert ember.autograd.gradcheck(F.linear, (x1, w, b))
    # float32 forward and backward against float64 numpy
    x32 = ember.tensor(rng.standard_normal((40, 30)), dtype=ember.float32, requires_grad=True)
    w32 = ember.tensor(rng.standard_normal((20, 30)), dtype=ember.float32, requires_grad=True)
    b32 = ember.tensor(rng.standard_normal(20), dtype=ember.float32, requires_grad=True)
    g = rng.standard_normal((40, 20))
    y = F._linear_act(x32, w32, b32, "gelu")
    (y * ember.tensor(g, dtype=ember.float32)).sum().backward()
    X, W, Bv = (t.detach().numpy().astype(np.float64) for t in (x32, w32, b32))
    z = X @ W.T + Bv
    assert np.allclose(y.detach().numpy(), _act64(z, "gelu"), rtol=1e-4, atol=1e-4)
    cdf = 0.5 * np.vectorize(math.erfc)(-z / math.sqrt(2))
    gz = g * (cdf + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi))
    assert np.allclose(x32.grad.numpy(), gz @ W, rtol=1e-3, atol=1e-3)
    assert np.allclose(w32.grad.numpy(), gz.T @ X, rtol=1e-3, atol=1e-3)
    assert np.allclose(b32.grad.numpy(), gz.sum(0), rtol=1e-3, atol=1e-3)


def test_linear_act_matches_unfused():
    rng = np.random.default_rng(14)
    x = ember.tensor(rng.standard_normal((8, 16)), dtype=ember.float32)
    lin = ember.nn.Linear(16, 12)
    with ember.no_grad():
        y = F._linear_act(x, lin.weight, lin.bias, "relu")
        y_ref = F.relu(F.linear(x, lin.weight, lin.bias))
    assert np.array_equal(y.numpy(), y_ref.numpy())


def test_matmul_bmm_gradcheck():
    rng = np.random.default_rng(15)
    a, b = _t(rng, 2, 3, 4), _t(rng, 2, 4, 5)
    assert ember.autograd.gradcheck(ember.bmm, (a, b))
    a2, b2 = _t(rng, 3, 1, 4, 6), _t(rng, 2, 6, 5)  # broadcast batch dims
    assert ember.autograd.gradcheck(ember.matmul, (a2, b2))
    v = _t(rng, 6)
    assert ember.autograd.gradcheck(ember.matmul, (a2, v))
    assert ember.autograd.gradcheck(lambda x, y: x @ y.T, (_t(rng, 5, 3), _t(rng, 4, 3)))


def test_linear_against_torch_if_available():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(16)
    x = rng.standard_normal((9, 11)).astype(np.float32)
    w = rng.standard_normal((7, 11)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    for act, tf in [
        ("gelu", lambda z: torch.nn.functional.gelu(z)),
        ("gelu_tanh", lambda z: torch.nn.functional.gelu(z, approximate="tanh")),
        ("relu", torch.relu),
    ]:
        ours = F._linear_act(ember.tensor(x), ember.tensor(w), ember.tensor(b), act).numpy()
        ref = tf(
            torch.nn.functional.linear(torch.tensor(x), torch.tensor(w), torch.tensor(b))
        ).numpy()
        assert np.allclose(ours, ref, rtol=1e-5, atol=1e-5), act


def test_matmul_batched_times_matrix_folds_batch():
    """[..., M, K] @ [K, N] runs as one GEMM over prod(...)*M rows; values and grads."""
    rng = np.random.default_rng(17)
    a = _t(rng, 2, 3, 4, 6)
    b = _t(rng, 6, 5)
    y = a @ b
    ref = a.detach().numpy() @ b.detach().numpy()
    assert y.shape == (2, 3, 4, 5) and np.allclose(y.detach().numpy(), ref, rtol=1e-12)
    assert ember.autograd.gradcheck(ember.matmul, (a, b))
    a6 = _t(rng, 2, 6, 4)  # a transposed view inside the function: the per-batch path
    assert ember.autograd.gradcheck(lambda x, w: x.transpose(1, 2) @ w, (a6, b))
