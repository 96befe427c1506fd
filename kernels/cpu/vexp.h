// vexp.h -- a vectorised single-precision exp for the AVX2 kernels (softmax, attention, GELU).
//
// exp256_ps(x) = e^x for 8 floats, Cephes' expf range reduction:
//   n = round(x * log2(e)),  r = x - n*ln2 (ln2 split in two parts, so r is exact to ~1 ulp),
//   e^r = 1 + r * Q(r), Q of degree 5 in Horner form (6 FMAs), fitted by weighted least
//   squares iterated toward minimax on |r| <= ln2/2: 2.2e-9 relative in exact arithmetic,
//   e^x = 2^n * e^r, 2^n built by shifting (n + 127) into the exponent field.
// Measured accuracy: every float32 in [-87.3, 88.7] whose exp is a normal float (2,237,668,959
// values, swept exhaustively through _C._exp_avx512, bit-identical) is within 1 ulp of exp
// computed in double and rounded to float, and 0.67% of them are not correctly rounded (3.5%
// with Cephes' 1 + r + r^2 * P5(r), which took 2 more ops); tests/test_vexp.py re-checks
// every 64th bit pattern of that range. The 2 ulp softmax needs is met with room to spare.
// Edge cases: x < -87.33 (below the smallest normal result) gives +0 exactly, so masked
// softmax entries (-inf, -1e30) vanish; x > 88.72 gives +inf; NaN in gives NaN out. Results
// that would be subnormal are flushed to 0 (e^-87.33 = 1.2e-38 is already negligible next to
// the 1 that the max element of a softmax row contributes).
// exp256_le88_ps: exp256_ps without the overflow handling, for arguments <= 88.3 (see there).
// exp512_ps is the same computation on 16 lanes (AVX-512F; 2^n by vscalefps, whose overflow
// and zero-mask also do the range handling), bit-identical to exp256_ps lane by lane
// (tests/test_vexp.py checks), for kernels with an AVX-512 path.
// Header-only and EMBER_AVX2/EMBER_AVX512-attributed, so they inline into the kernels.
#pragma once

#include "kernels/cpu/common.h"

#if EMBER_COMPILED_AVX2
namespace ember::cpu {

// e^r = 1 + r * Q(r) on |r| <= ln2/2 (the header's polynomial), shared by the 8-lane exps.
EMBER_AVX2 inline __m256 exp_poly256(__m256 r) {
  __m256 p = _mm256_set1_ps(0.0013859319733455777f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.008374758996069431f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.041667722165584564f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.1666642129421234f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.4999999403953552f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  return p;
}

EMBER_AVX2 inline __m256 exp256_ps(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.72283935546875f);   // ln(FLT_MAX), rounded up
  const __m256 lo = _mm256_set1_ps(-87.33654022216797f);  // ln(FLT_MIN)
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
  const __m256 c1 = _mm256_set1_ps(0.693359375f);     // ln2 high part (exact in 9 bits)
  const __m256 c2 = _mm256_set1_ps(-2.12194440e-4f);  // ln2 - c1
  const __m256 too_small = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  const __m256 too_big = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
  // Clamp into range so n stays within the exponent field; max/min put x second so NaN
  // survives (vmaxps/vminps return the second operand when either is NaN).
  __m256 xc = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, log2e),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, c1, xc);
  r = _mm256_fnmadd_ps(n, c2, r);
  __m256 p = exp_poly256(r);
  // 2^n for n in [-126, 128]: n = 128 (x just below ln(FLT_MAX)) does not fit the exponent
  // field, so it is built as 2^127 with p doubled instead.
  const __m256 n_over = _mm256_cmp_ps(n, _mm256_set1_ps(127.0f), _CMP_GT_OQ);
  p = _mm256_blendv_ps(p, _mm256_add_ps(p, p), n_over);
  const __m256i ni = _mm256_cvtps_epi32(_mm256_min_ps(n, _mm256_set1_ps(127.0f)));
  const __m256 pow2 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ni, _mm256_set1_epi32(127)), 23));
  __m256 y = _mm256_mul_ps(p, pow2);
  y = _mm256_andnot_ps(too_small, y);  // +0
  y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), too_big);
  return y;
}

// exp256_le88_ps(x) = e^min(x, 88.3): exp256_ps without its overflow handling, for arguments
// that cannot overflow (softmax's x - max <= 0; attention's fused tiles, whose x <= 8 or whose
// results are discarded). 17 vector ops instead of 24: n comes from one FMA that adds 1.5 * 2^23
// (rounding x * log2(e) to the nearest integer n, whose bits are then the low mantissa bits,
// so 2^n needs no convert), and n <= 127 needs no 2^127 * 2 split nor inf blend. Same
// reduction and polynomial as exp256_ps; the FMA rounds the exact x * log2(e) where exp256_ps
// rounds the rounded product, which gives a different n (an r just past ln2/2, as accurate)
// for 49 of the 2,237,608,768 float32 x in [-87.3, 88.3] with normal results. Measured over all
// of them (exhaustively, in C++): within 1 ulp of exp in double rounded to float, 0.67% not
// correctly rounded -- as exp256_ps. x < -87.33 gives +0, NaN gives NaN, x > 88.3 gives
// e^88.3 (not inf). AVX2 attention: 1x12x1024x64 forward 38.3 -> 36.6 ms (1 thread).
EMBER_AVX2 inline __m256 exp256_le88_ps(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654022216797f);  // ln(FLT_MIN)
  const __m256 too_small = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  // x second in max / min: NaN survives
  const __m256 xc = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(lo, x));
  const __m256 magic = _mm256_set1_ps(12582912.0f);  // 1.5 * 2^23, bits 0x4B400000
  const __m256 t = _mm256_fmadd_ps(xc, _mm256_set1_ps(1.44269504088896341f), magic);
  const __m256 n = _mm256_sub_ps(t, magic);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  const __m256 p = exp_poly256(r);
  // bits(t) = 0x4B400000 + n, so (n + 127) << 23 is 2^n (n in [-126, 127] after the clamp)
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(127 - 0x4B400000)), 23);
  return _mm256_andnot_ps(too_small, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));  // +0
}

EMBER_AVX512 inline __m512 exp512_ps(__m512 x) {
  // 14 vector ops (19 before): vscalefps builds p * 2^n exactly (n = 128 included) and
  // overflows to +inf by itself, so x > ln(FLT_MAX) needs no compare of its own -- the clamp at
  // 89 only keeps +inf out of the reduction -- and the flush to +0 below ln(FLT_MIN) is the
  // scalef's zero-mask. keep = "not x < lo" is true for NaN, which max/min (x second) carry.
  const __m512 lo = _mm512_set1_ps(-87.33654022216797f);
  const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ);
  const __m512 xc = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(lo, x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(0.0013859319733455777f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.008374758996069431f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.041667722165584564f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.1666642129421234f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.4999999403953552f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(keep, p, n);
}

}  // namespace ember::cpu
#endif
