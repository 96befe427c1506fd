"""GEMM through pytest-benchmark (not collected by the main test run: testpaths = ["tests"]).

    pip install -e .[bench]
    pytest bench/test_bench_gemm.py --benchmark-group-by=param:shape \
        --benchmark-columns=median,iqr,ops

Each shape is timed for ember, numpy (OpenBLAS) and, when installed, PyTorch, with the same
thread count (EMBER_BENCH_THREADS, default 1). Correctness is checked before timing.
bench/bench_gemm.py prints the full table with GFLOP/s and % of the measured FMA peak.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from ember import _C

THREADS = int(os.environ.get("EMBER_BENCH_THREADS", "1"))
SHAPES = [
    (64, 64, 64),
    (128, 128, 128),
    (512, 512, 512),
    (1024, 1024, 1024),
    (4096, 768, 768),
    (512, 3072, 768),
    (512, 768, 3072),
    (1024, 128, 128),
]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = _C.get_num_threads()
    _C.set_num_threads(THREADS)
    try:
        from threadpoolctl import threadpool_limits

        ctx = threadpool_limits(THREADS)
    except ImportError:
        ctx = None
    yield
    _C.set_num_threads(old)
    if ctx is not None:
        ctx.restore_original_limits()


def _operands(M, N, K):
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((M, K)).astype(np.float32),
        rng.standard_normal((K, N)).astype(np.float32),
    )


@pytest.mark.parametrize("lib", ["ember", "numpy", "torch"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm(benchmark, shape, lib):
    M, N, K = shape
    a, b = _operands(M, N, K)
    ref = a @ b
    if lib == "ember":
        c = np.empty((1, M, N), np.float32)
        fn = lambda: _C.gemm(a[None], b[None], c)  # noqa: E731
        out = lambda: c[0]  # noqa: E731
    elif lib == "numpy":
        c = np.empty((M, N), np.float32)
        fn = lambda: np.matmul(a, b, out=c)  # noqa: E731
        out = lambda: c  # noqa: E731
    else:
        torch = pytest.importorskip("torch")
        torch.set_num_threads(THREADS)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tc = torch.empty((M, N), dtype=torch.float32)
        fn = lambda: torch.mm(ta, tb, out=tc)  # noqa: E731
        out = lambda: tc.numpy()  # noqa: E731
    fn()
    assert np.max(np.abs(out() - ref)) <= 1e-4 * np.max(np.abs(ref))  # gate before timing
    benchmark.extra_info["gflops"] = 2.0 * M * N * K / 1e9
    benchmark(fn)
