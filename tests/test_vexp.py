"""Accuracy of the AVX2 vectorised exp (kernels/cpu/vexp.h) that softmax and attention inline."""

import numpy as np
import pytest

from ember import _C
from ember.backends import cpu

pytestmark = pytest.mark.skipif(
    not (cpu.capabilities()["avx2"] and cpu.capabilities()["fma"]), reason="the CPU lacks AVX2/FMA"
)


def _ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in units in the last place between float32 arrays of the same sign pattern."""
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return np.abs(ia - ib)


def _vexp(x: np.ndarray) -> np.ndarray:
    out = np.full_like(x, np.nan)
    _C._exp_avx2(x, out)
    return out


HAS_AVX512 = cpu.capabilities()["avx512f"]


@pytest.mark.skipif(not HAS_AVX512, reason="the CPU lacks AVX-512F")
def test_exp512_is_bit_identical_to_exp256():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-100, 100, 10**6),
            rng.uniform(-1, 1, 10**5),
            [-np.inf, np.inf, np.nan, -87.34, -87.33, 88.72, 88.7229, 0.0, -0.0],
            np.linspace(88.3, 88.73, 1001),  # n = 128: 2^n by vscalefps vs 2 * 2^127
            np.linspace(-87.4, -86.9, 1001),  # results at the bottom of the normal range
            np.linspace(88.72, 89.5, 1001),  # overflow: exp512's scalef vs exp256's compare
            [1e30, -1e30, 3.4e38, -3.4e38, -1e-30, 1e-30],
        ]
    ).astype(np.float32)
    for n in (x.size, 1, 7, 15, 16, 17, 33):  # the masked tail too
        got = np.full(n, np.nan, np.float32)
        _C._exp_avx512(x[-n:], got)
        np.testing.assert_array_equal(got.view(np.uint32), _vexp(x[-n:]).view(np.uint32))


def _sweep(top: float):
    """Every 64th float32 bit pattern in [-87.3, top], in chunks: (x, exp(x) in float64 rounded
    to float32, mask of the normal results)."""
    for lo, hi in ((np.float32(0.0), np.float32(top)), (np.float32(-0.0), np.float32(-87.3))):
        start = int(np.array(lo).view(np.uint32))
        stop = int(np.array(hi).view(np.uint32))
        for c0 in range(start, stop, 64 * 2**20):
            bits = np.arange(c0, min(c0 + 64 * 2**20, stop + 1), 64, dtype=np.uint32)
            x = bits.view(np.float32)
            ref = np.exp(x.astype(np.float64)).astype(np.float32)
            yield x, ref, ref >= np.finfo(np.float32).tiny


def test_exp_within_one_ulp_over_the_normal_range():
    # Every 64th float32 bit pattern in [-87.3, 88.7] whose exp is a normal float (35M values),
    # in chunks; the reference is exp in float64 rounded to float32.
    worst = 0
    for x, ref, keep in _sweep(88.7):
        worst = max(worst, int(_ulp_distance(_vexp(x)[keep], ref[keep]).max()))
    assert worst <= 1, f"max error {worst} ulp"


def test_exp_tail_lengths_and_special_values():
    x = np.array(
        [-np.inf, np.inf, np.nan, -1e30, 1e30, -87.5, 88.8, 0.0, -0.0, 1.0, 88.72, -87.33],
        dtype=np.float32,
    )
    y = _vexp(x)
    assert y[0] == 0 and y[1] == np.inf and np.isnan(y[2])
    assert y[3] == 0 and y[4] == np.inf and y[5] == 0 and y[6] == np.inf
    assert y[7] == 1 and y[8] == 1
    ref = np.exp(x[9:].astype(np.float64)).astype(np.float32)
    assert np.all(_ulp_distance(y[9:], ref) <= 1)
    assert np.isfinite(y[10])  # just below ln(FLT_MAX): 2^128 split as 2^127 * 2
    for n in range(0, 20):  # every tail length through the padded-register path
        x = np.linspace(-10, 10, n, dtype=np.float32)
        ref = np.exp(x.astype(np.float64)).astype(np.float32)
        assert np.all(_ulp_distance(_vexp(x), ref) <= 1)


def _vexp_le88(x: np.ndarray) -> np.ndarray:
    out = np.full_like(x, np.nan)
    _C._exp_avx2_le88(x, out)
    return out


def test_exp_le88_within_one_ulp_and_rarely_differs_from_exp256():
    """exp256_le88_ps (attention's AVX2 softmax exp): every 64th float32 bit pattern in
    [-87.3, 88.3] whose exp is a normal float (35M values) within 1 ulp of exp in float64
    rounded to float32, and equal to exp256_ps except where its FMA rounds x * log2(e) to the
    other integer (49 of the 2.2e9 values of the range; an exhaustive C++ sweep found)."""
    worst, differ = 0, 0
    for x, ref, keep in _sweep(88.3):
        y = _vexp_le88(x)
        worst = max(worst, int(_ulp_distance(y[keep], ref[keep]).max()))
        differ += int(np.count_nonzero(y.view(np.uint32) != _vexp(x).view(np.uint32)))
    assert worst <= 1, f"max error {worst} ulp"
    assert differ <= 3, f"{differ} values differ from exp256_ps"


def test_exp_le88_special_values_and_tails():
    x = np.array([-np.inf, np.nan, -1e30, -87.5, -87.34, 0.0, -0.0, 88.3, 89.0, 1e30, np.inf],
                 dtype=np.float32)  # fmt: skip
    y = _vexp_le88(x)
    assert y[0] == 0 and np.isnan(y[1]) and y[2] == 0 and y[3] == 0 and y[4] == 0
    assert y[5] == 1 and y[6] == 1
    cap = np.exp(np.float64(np.float32(88.3))).astype(np.float32)
    assert _ulp_distance(y[7:8], cap[None]).max() <= 1
    assert np.all(y[8:] == y[7])  # clamped to e^88.3, finite
    for n in range(0, 20):
        x = np.linspace(-10, 10, n, dtype=np.float32)
        ref = np.exp(x.astype(np.float64)).astype(np.float32)
        assert np.all(_ulp_distance(_vexp_le88(x), ref) <= 1)


def test_exp_hook_rejects_bad_arrays():
    with pytest.raises(TypeError, match=r"\[exp_avx2\] x must be float32"):
        _C._exp_avx2(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match=r"\[exp_avx2\]"):
        _C._exp_avx2(np.zeros(4, np.float32), np.zeros(5, np.float32))
