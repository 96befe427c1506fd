// gemm.cpp -- batched strided GEMM on the CPU: scalar reference, simple AVX2 row kernel for
// skinny problems, and BLIS-style packed AVX2/FMA and AVX-512 kernels with a fused epilogue.
//
// Computes c[i] = act(alpha * a[i] @ b[i] + beta * c[i] + bias) for i < B, with a[i]: [M, K],
// b[i]: [K, N], c C-contiguous [B, M, N], bias [N] (optional, one value per output column, as
// Linear's bias) and act in {none, relu, gelu (erf), gelu_tanh}. a and b are read through
// arbitrary element strides (GemmDims): 0 broadcasts a batch, negative strides are reversed
// views and a transposed operand is a stride-swapped view. Nothing is ever copied except into
// the packing buffers, whose packing routines read through the strides. beta == 0 means c is
// write-only: its old contents (possibly NaN) are never read.
//
// Variants:
//  * gemm_cpu<T>   scalar reference, float and double (double is the gradcheck path): one dot
//                  product per output accumulated in double, then the epilogue in double.
//  * skinny_rows_avx2  the simple AVX2 kernel of the first version (no packing), kept for skinny
//                  problems (M <= kSkinnyM rows, e.g. matrix-vector), where packing B would
//                  cost as much as the product itself.
//  * packed<Ker>   the BLIS loop nest (Goto / van Zee & van de Geijn):
//                    for jc in N step NC          B block [KC x NC] -> L3
//                      for pc in K step KC          pack B block into NR-column panels
//                                                   (with several M blocks: 64 columns at a
//                                                   time, by the first M block, see kBGroup)
//                        for ic in M step MC        pack A block into MR-row panels -> L2
//                          for jr in NC step NR       B micro-panel [KC x NR] (L2, see KC)
//                            for ir in MC step MR       micro-kernel: MR x NR tile of C
//                  Packing zero-pads partial panels, so the micro-kernel always runs a whole
//                  register tile; edges are handled at the store with masked loads/stores (no
//                  scalar cliff), and AVX-512 edge tiles with <= 4 / <= 8 valid rows use 4- /
//                  8-row variants. Packing reads a and b through their strides, with vector
//                  fast paths (4x8 in-register transposes) for row-major and transposed
//                  layouts. The micro-kernel prefetches its C tile one line per 8 k steps,
//                  and (AVX-512) the B micro-panel 4 k steps ahead: with B streaming from L2
//                  that took the kernel alone from ~140 to ~175 GFLOP/s (kc = 512, 16
//                  panels) and 1024^3 from 150 to 160 (best of 4 alternated runs, 1 thread;
//                  2 or 6 k steps, and prefetching A 4 / 8 / 16 k steps ahead too, were no
//                  better).
//    AVX2/FMA  6x16: 12 ymm accumulators + 2 B vectors + 1 broadcast = 15 of 16 registers;
//              12 FMAs per 2 loads + 6 broadcasts keeps both FMA ports busy (needs >= 8
//              independent chains for 4-cycle latency x 2 ports; we have 12).
//    AVX-512   12x32: 24 zmm accumulators + 2 B vectors + broadcasts = 27 of 32 registers;
//              24 FMAs per 2 loads + 12 broadcasts (7 load-port cycles per 12 FMA cycles).
//    Blocking (both kernels; chosen by measurement on a Skylake-SP/Cascade Lake class Xeon,
//    32 KiB L1d, 1 MiB L2, shared L3, and consistent with Zen3's 32 KiB / 512 KiB / 32 MiB):
//      KC = 512: the textbook choice keeps the B micro-panel in L1 (KC*NR*4 <= 16 KiB), but
//              then C is read and written K/KC times, and for large C that traffic goes to
//              L3/DRAM; it cost more (-15..20% at 1024^3) than streaming the B micro-panel
//              from L2, which needs only 128 B (AVX-512) / 64 B (AVX2) per k step, well under
//              the L2->L1 bandwidth. K is cut into equal blocks <= KC (768 -> 2 x 384).
//      MC = 300 (AVX-512) / 288 (AVX2): A block MC*KC*4 = 600 / 576 KiB stays in a 1 MiB L2
//              (512 KiB on Zen3: then MC ~ 200 would be the choice) next to the streaming B
//              micro-panel; M is cut into equal blocks, multiples of MR.
//      NC = 4096: B block KC*NC*4 = 8 MiB sits in L3 and is shared by all MC blocks. With
//              a single M block (M <= MC, e.g. conv's 64 output channels) nothing shares the
//              B block, so it is cut to <= 512 KiB (kSmallBBytes): packing then writes into L2
//              and the micro-kernels read it back from there, not from L3 (64x3136x576: best
//              of 6 alternated runs 94 -> 105 GFLOP/s, 1 thread).
//      Retuning KC/MC for AVX-512 (256/300, 256/600, 320/480, 384/396 against 512/300,
//      alternated runs at 1024^3, 2048^3, 4096x768x768, 512x3072x768) found nothing better
//      outside the +-10% noise of the shared machine, so the values stay. On a Zen 4 EPYC (32
//      KiB L1d, 1 MiB L2) 256/300, 384/300, 256/600, 512/192, 512/240 and 512/396 were no
//      better either (best of 4 alternated runs: 512/300 at 107-111 GFLOP/s, ~92-94% of the
//      FMA peak, on 1024^3, 2048^3, 4096x768x768 and 512x3072x768).
//    Where the time goes (AVX-512, 1 thread, thread CPU time, % of the FMA peak measured in
//    the same run; medians of 3 runs alternated with the previous version on a loaded
//    machine): the micro-kernel with A and B in L1 reaches ~93%; the 8-row edge kernel as
//    much, the 4-row one ~70% (but M = 60, 64 and 72 run at the same rate, so the 4-row
//    tile of M = 64 costs little). Whole GEMMs: 512^3 74 -> 77%, 1024^3 71 -> 76%, 2048^3
//    71 -> 75%, 4096x768x768 73 -> 77%, 512x3072x768 67 -> 73%, 64x3136x576 50 -> 57%,
//    128x256x1152 67 -> 72%. What remains: packing B (~5% at 1024^3; ~20% for M = 64,
//    whose packed B elements are used only 64 times) and B/A streaming from L2.
//    Tried and dropped (no gain or a loss in alternated runs): the micro-kernel reading
//    row-major B in place for M <= 192 (no B packing; 64x3136x576 ~90 -> 55-80 GFLOP/s,
//    probably because kc rows 12.5 KiB apart alias in L1 and span many pages), packing B in the
//    first tile that reads each micro-panel (loads stored to the panel as the FMAs run),
//    zmm instead of ymm copies in the B packing (memory-bound), prefetching A as well as B,
//    prefetching the C tile 3 lines per 8 k steps (for small kc), and the same B prefetch in
//    the AVX2 kernel (already ~88% of the AVX2 peak at 1024^3).
//    K is split into KC blocks; each block's float sum is added into c (as BLAS does), which
//    keeps the rounding error at sgemm's level for long K. The epilogue (bias, activation) is
//    applied by the micro-kernel of the last K block while the tile is in registers (bias) /
//    L1 (activation, on the just-stored tile).
//    The AVX-512 path runs the AVX2 kernel when N <= 16 (no padded half panel).
//  * gemm_small512  (AVX-512; one matrix of up to kSmallWork multiply-adds, K <= 512): the
//                  12x32 tile on unpacked operands, A read in place (row- or column-major) and
//                  B's rows too (a transposed B packs one 32-column panel at a time); edge
//                  tiles compute only their own rows. Packing was a tenth of a 64^3 product.
//  * gemm_serial_gather / gemm_serial_colptr: the same loop nest (packed_serial_with) with B
//    given implicitly (B(k, n) = brow[k][bcol[n]], or bcolp[n][k]) and packed straight from
//    there: conv2d's implicit GEMMs over a padded input slab, all kernel taps in one K (or N).
//  * Threads: the whole batched problem is cut into independent pieces, one per thread,
//    claimed from a counter by the caller and the workers of a small pool (pool.h: a worker
//    that the scheduler wakes late costs nothing, unlike an OpenMP barrier) and run with no
//    barrier: whole batches when there are enough, else each matrix is split along N (each
//    piece packs its own B columns and all of A) when N >= M, or along M (each packs all of
//    B). Each thread owns a thread_local packing workspace that grows to the largest size
//    seen and is reused by every later call (no allocation per call; pool threads persist).
//    Small problems stay on one thread (kParallelWork, measured).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/common.h"
#include "kernels/cpu/pool.h"
#include "kernels/kernels.h"

namespace ember {
namespace {

// Below this many multiply-adds (B*M*N*K) one thread is faster than two (waking a worker plus
// the duplicated packing): measured with bench/bench_gemm.py --threshold, 64x128x128 (1.0e6)
// was 24 us on 1 thread and 28 us on 2, 128^3 (2.1e6) 43 us and 30 us. The MLP's 32x64x128
// GEMMs (2.6e5) stay on one thread.
constexpr double kParallelWork = 1.5e6;
// Up to this many multiply-adds (M*N*K of one matrix; half as many with B transposed, whose
// panels are still packed) the AVX-512 path skips the packing (gemm_small512). 1 thread, best
// of 7 interleaved with the packed path, us: 128^3 40.9 -> 40.9 (B transposed 41.0 -> 42.5,
// hence the half), 96^3 17.8 -> 17.6 (transposed 21.1 -> 18.8).
constexpr double kSmallWork = 2.2e6;
constexpr int64_t kSkinnyM = 2;

// ---- epilogue (scalar) ---------------------------------------------------------------------
inline double act_ref(double x, GemmAct act) {
  switch (act) {
    case GemmAct::relu:
      return x < 0.0 ? 0.0 : x;
    case GemmAct::gelu:  // 0.5 x (1 + erf(x / sqrt2)) written with erfc: accurate for x < 0
      return 0.5 * x * std::erfc(-x * 0.70710678118654752440);
    case GemmAct::gelu_tanh: {  // 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)): no cancellation
      const double u = 0.79788456080286535588 * (x + 0.044715 * x * x * x);
      return x / (1.0 + std::exp(-2.0 * u));
    }
    default:
      return x;
  }
}

// ---- scalar reference ---------------------------------------------------------------------
template <typename T>
void gemm_rows_cpu(const T* a, const T* b, T* c, const GemmDims& d, T alpha, T beta,
                   const T* bias, GemmAct act, int64_t r0, int64_t r1) {
  const double al = alpha, be = beta;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t i = r / d.M, m = r % d.M;
    const T* ar = a + i * d.sab + m * d.sam;
    const T* bm = b + i * d.sbb;
    T* cr = c + r * d.N;
    for (int64_t n = 0; n < d.N; ++n) {
      const T* bc = bm + n * d.sbn;
      double acc = 0.0;
      for (int64_t k = 0; k < d.K; ++k)
        acc += static_cast<double>(ar[k * d.sak]) * static_cast<double>(bc[k * d.sbk]);
      double v = be == 0.0 ? al * acc : al * acc + be * static_cast<double>(cr[n]);
      if (bias) v += static_cast<double>(bias[n]);
      cr[n] = static_cast<T>(act_ref(v, act));
    }
  }
}

inline bool worth_threads(const GemmDims& d) {
  return static_cast<double>(d.B) * d.M * d.N * static_cast<double>(d.K) > kParallelWork;
}

// fn(r0, r1) over the B*M output rows, split over the claim pool (pool.h) when worth it.
template <typename Fn>
void rows_parallel(const GemmDims& d, Fn&& fn) {
  const int64_t rows = d.B * d.M;
  const int nth = worth_threads(d) ? cpu::get_num_threads() : 1;
  const int64_t pieces = std::min<int64_t>(nth, rows);
  cpu::ClaimPool::instance().run(nth, pieces, [&](int64_t p) {
    int64_t r0, r1;
    cpu::split_range(rows, 1, static_cast<int>(p), static_cast<int>(pieces), &r0, &r1);
    if (r0 < r1) fn(r0, r1);
  });
}

#if EMBER_COMPILED_AVX2
// ---- AVX2 helpers: masks and vector activations ---------------------------------------------
// Row tails: masked loads, partial stores by cpu::store_first (not VEX masked stores, which
// are microcoded on AMD Zen; see common.h).
using cpu::tail_mask;

// exp(x) for float lanes, Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial,
// 2^n through the exponent bits. Input clamped to [-87.3, 88.3] (finite result; NaN lanes
// give a finite value, callers multiply by x so NaN still propagates).
EMBER_AVX2 inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // n in [-126, 128]: split 2^n in two factors so n = 128 does not overflow the exponent.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i h = _mm256_srai_epi32(ni, 1);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
  const __m256 s2 = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

// GELU with exact erf: erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2) (Numerical Recipes
// erfcc, relative error < 1.2e-7 for all z >= 0). gelu(x) = x (1 - erfc(z)/2) for x >= 0 and
// x erfc(z)/2 for x < 0, z = |x|/sqrt2: both forms keep full relative precision.
EMBER_AVX2 inline __m256 gelu_erf256(__m256 x) {
  const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x),
                                 _mm256_set1_ps(0.70710678118654752f));
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                                 _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(0.17087277f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.82215223f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.48851587f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.13520398f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.27886807f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.18628806f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.09678418f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.37409196f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.00002368f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.26551223f));
  p = _mm256_fnmadd_ps(z, z, p);
  const __m256 half_erfc = _mm256_mul_ps(_mm256_mul_ps(t, exp256(p)), _mm256_set1_ps(0.5f));
  const __m256 pos = _mm256_mul_ps(x, _mm256_sub_ps(_mm256_set1_ps(1.0f), half_erfc));
  const __m256 neg = _mm256_mul_ps(x, half_erfc);
  return _mm256_blendv_ps(pos, neg, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
}

// GELU, tanh form: 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3).
EMBER_AVX2 inline __m256 gelu_tanh256(__m256 x) {
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  const __m256 u = _mm256_mul_ps(_mm256_fmadd_ps(x3, _mm256_set1_ps(0.044715f), x),
                                 _mm256_set1_ps(-1.5957691216057308f));  // -2 sqrt(2/pi)
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), exp256(u)));
}

EMBER_AVX2 inline __m256 act256(__m256 v, GemmAct act) {
  switch (act) {
    case GemmAct::relu:  // max(0, v) returns v when v is NaN (maxps returns its 2nd operand)
      return _mm256_max_ps(_mm256_setzero_ps(), v);
    case GemmAct::gelu:
      return gelu_erf256(v);
    case GemmAct::gelu_tanh:
      return gelu_tanh256(v);
    default:
      return v;
  }
}

// Activation over an [rows, cols] tile of c (row stride ldc), in place; the tile was just
// written, so it is in L1.
EMBER_AVX2 void act_tile_avx2(float* c, int64_t ldc, int64_t rows, int64_t cols, GemmAct act) {
  for (int64_t i = 0; i < rows; ++i) {
    float* cr = c + i * ldc;
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) _mm256_storeu_ps(cr + j, act256(_mm256_loadu_ps(cr + j), act));
    if (j < cols) {
      const __m256i m = tail_mask(cols - j);
      cpu::store_first(cr + j, act256(_mm256_maskload_ps(cr + j, m), act), cols - j);
    }
  }
}

// bias + activation over whole rows (used after the skinny row kernel).
EMBER_AVX2 void epilogue_rows_avx2(float* c, int64_t rows, int64_t N, const float* bias,
                                   GemmAct act) {
  if (!bias && act == GemmAct::none) return;
  for (int64_t r = 0; r < rows; ++r) {
    float* cr = c + r * N;
    int64_t j = 0;
    for (; j < N; j += 8) {
      const __m256i m = tail_mask(std::min<int64_t>(8, N - j));
      __m256 v = _mm256_maskload_ps(cr + j, m);
      if (bias) v = _mm256_add_ps(v, _mm256_maskload_ps(bias + j, m));
      cpu::store_first(cr + j, act256(v, act), std::min<int64_t>(8, N - j));
    }
  }
}

// ---- simple AVX2 row kernel (skinny M) -----------------------------------------------------
// One c row, b contiguous along N: cr[:] = alpha * sum_k ar[k*sak] * b[k, :] (+ beta*cr).
EMBER_AVX2 void row_axpy_avx2(const float* ar, int64_t sak, const float* bm, int64_t sbk,
                              float* cr, int64_t N, int64_t K, float alpha, float beta) {
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  const bool beta0 = beta == 0.0f;
  for (int64_t n = 0; n < N; n += 32) {
    const int64_t w = std::min<int64_t>(32, N - n);
    const __m256i m0 = tail_mask(std::min<int64_t>(8, w)),
                  m1 = tail_mask(std::clamp<int64_t>(w - 8, 0, 8)),
                  m2 = tail_mask(std::clamp<int64_t>(w - 16, 0, 8)),
                  m3 = tail_mask(std::clamp<int64_t>(w - 24, 0, 8));
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int64_t k = 0; k < K; ++k) {
      const float* bp = bm + k * sbk + n;
      const __m256 x = _mm256_set1_ps(ar[k * sak]);
      c0 = _mm256_fmadd_ps(x, _mm256_maskload_ps(bp + 0, m0), c0);
      c1 = _mm256_fmadd_ps(x, _mm256_maskload_ps(bp + 8, m1), c1);
      c2 = _mm256_fmadd_ps(x, _mm256_maskload_ps(bp + 16, m2), c2);
      c3 = _mm256_fmadd_ps(x, _mm256_maskload_ps(bp + 24, m3), c3);
    }
    const __m256 acc[4] = {c0, c1, c2, c3};
    const __m256i ms[4] = {m0, m1, m2, m3};
    for (int q = 0; q < 4 && q * 8 < w; ++q) {
      __m256 r = _mm256_mul_ps(va, acc[q]);
      if (!beta0) r = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cr + n + 8 * q, ms[q]), r);
      cpu::store_first(cr + n + 8 * q, r, std::min<int64_t>(8, w - 8 * q));
    }
  }
}

EMBER_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// One c row, a row and b columns contiguous along K: cr[n] = alpha * dot(ar, b[:, n]) (+ ...).
EMBER_AVX2 void row_dot_avx2(const float* ar, const float* bm, int64_t sbn, float* cr,
                             int64_t N, int64_t K, float alpha, float beta) {
  const bool beta0 = beta == 0.0f;
  const int64_t K8 = K & ~int64_t{7}, rem = K - K8;
  const __m256i mask = tail_mask(rem);
  for (int64_t n = 0; n < N; ++n) {
    const float* b0 = bm + n * sbn;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0;
    int64_t k = 0;
    for (; k + 16 <= K8; k += 16) {
      c0 = _mm256_fmadd_ps(_mm256_loadu_ps(ar + k), _mm256_loadu_ps(b0 + k), c0);
      c1 = _mm256_fmadd_ps(_mm256_loadu_ps(ar + k + 8), _mm256_loadu_ps(b0 + k + 8), c1);
    }
    if (k < K8) c0 = _mm256_fmadd_ps(_mm256_loadu_ps(ar + k), _mm256_loadu_ps(b0 + k), c0);
    if (rem)
      c1 = _mm256_fmadd_ps(_mm256_maskload_ps(ar + K8, mask), _mm256_maskload_ps(b0 + K8, mask),
                           c1);
    const float s = hsum8(_mm256_add_ps(c0, c1));
    cr[n] = beta0 ? alpha * s : alpha * s + beta * cr[n];
  }
}

constexpr int64_t kKBlock = 256;

// Rows [r0, r1) of the flattened B*M output with the simple kernel, for layouts where b is
// contiguous along N (axpy) or a and b along K (dot); the caller checks.
EMBER_AVX2 void skinny_rows_avx2(const float* a, const float* b, float* c, const GemmDims& d,
                                 float alpha, float beta, int64_t r0, int64_t r1) {
  const bool axpy = d.N <= 1 || d.sbn == 1;
  const bool dot = (d.K <= 1 || (d.sak == 1 && d.sbk == 1));
  if (dot && (!axpy || d.N < 8)) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / d.M, m = r % d.M;
      row_dot_avx2(a + i * d.sab + m * d.sam, b + i * d.sbb, d.sbn, c + r * d.N, d.N, d.K,
                   alpha, beta);
    }
    return;
  }
  for (int64_t k0 = 0; k0 < d.K; k0 += kKBlock) {
    const int64_t kb = std::min(kKBlock, d.K - k0);
    const float be = k0 == 0 ? beta : 1.0f;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / d.M, m = r % d.M;
      row_axpy_avx2(a + i * d.sab + m * d.sam + k0 * d.sak, d.sak, b + i * d.sbb + k0 * d.sbk,
                    d.sbk, c + r * d.N, d.N, kb, alpha, be);
    }
  }
}

// ---- packing ---------------------------------------------------------------------------------
// buf[k*R + i] = src[i*ld + k] for i < R, k < kc: R rows that are contiguous along k become an
// R-interleaved panel. This is packing A when a is row-major (R = MR) and packing B when b is a
// transposed view such as Linear's weight.T (R = NR). 4 rows x 8 k at a time through an
// in-register 4x8 transpose (8 ymm loads/shuffles -> 8 16-byte stores), 2-row and scalar
// remainders; ~4x faster than element-wise copies.
// Only the first `rows` (<= R) rows exist; the others are written as zeros (edge panels).
template <int R>
EMBER_AVX2 void pack_rows_t(const float* src, int64_t ld, int64_t kc, float* buf,
                            int rows = R) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    int i = 0;
    for (; i + 4 <= rows; i += 4) {
      const float* s0 = src + i * ld + k;
      const __m256 r0 = _mm256_loadu_ps(s0), r1 = _mm256_loadu_ps(s0 + ld),
                   r2 = _mm256_loadu_ps(s0 + 2 * ld), r3 = _mm256_loadu_ps(s0 + 3 * ld);
      const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
                   t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                   u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      float* d = buf + k * R + i;
      _mm_storeu_ps(d + 0 * R, _mm256_castps256_ps128(u0));
      _mm_storeu_ps(d + 1 * R, _mm256_castps256_ps128(u1));
      _mm_storeu_ps(d + 2 * R, _mm256_castps256_ps128(u2));
      _mm_storeu_ps(d + 3 * R, _mm256_castps256_ps128(u3));
      _mm_storeu_ps(d + 4 * R, _mm256_extractf128_ps(u0, 1));
      _mm_storeu_ps(d + 5 * R, _mm256_extractf128_ps(u1, 1));
      _mm_storeu_ps(d + 6 * R, _mm256_extractf128_ps(u2, 1));
      _mm_storeu_ps(d + 7 * R, _mm256_extractf128_ps(u3, 1));
    }
    // Two rows (the AVX2 kernel's MR = 6 is 4 + 2): one unpack pair gives the (row i, row
    // i+1) pairs of k, k+1 | k+4, k+5 (lo) and k+2, k+3 | k+6, k+7 (hi), stored 8 bytes each.
    for (; i + 2 <= rows; i += 2) {
      const float* s0 = src + i * ld + k;
      const __m256 r0 = _mm256_loadu_ps(s0), r1 = _mm256_loadu_ps(s0 + ld);
      const __m256 lo = _mm256_unpacklo_ps(r0, r1), hi = _mm256_unpackhi_ps(r0, r1);
      const __m128 l0 = _mm256_castps256_ps128(lo), l1 = _mm256_extractf128_ps(lo, 1),
                   h0 = _mm256_castps256_ps128(hi), h1 = _mm256_extractf128_ps(hi, 1);
      float* d = buf + k * R + i;
      _mm_storel_pi(reinterpret_cast<__m64*>(d + 0 * R), l0);
      _mm_storeh_pi(reinterpret_cast<__m64*>(d + 1 * R), l0);
      _mm_storel_pi(reinterpret_cast<__m64*>(d + 2 * R), h0);
      _mm_storeh_pi(reinterpret_cast<__m64*>(d + 3 * R), h0);
      _mm_storel_pi(reinterpret_cast<__m64*>(d + 4 * R), l1);
      _mm_storeh_pi(reinterpret_cast<__m64*>(d + 5 * R), l1);
      _mm_storel_pi(reinterpret_cast<__m64*>(d + 6 * R), h1);
      _mm_storeh_pi(reinterpret_cast<__m64*>(d + 7 * R), h1);
    }
    for (; i < rows; ++i)
      for (int kk = 0; kk < 8; ++kk) buf[(k + kk) * R + i] = src[i * ld + k + kk];
    for (; i < R; ++i)
      for (int kk = 0; kk < 8; ++kk) buf[(k + kk) * R + i] = 0.0f;
  }
  for (; k < kc; ++k)
    for (int i = 0; i < R; ++i) buf[k * R + i] = i < rows ? src[i * ld + k] : 0.0f;
}

// buf[k*R + j] = src[k*ld + j]: R contiguous floats per k (b row-major, or a transposed).
template <int R>
EMBER_AVX2 void pack_rows_n(const float* src, int64_t ld, int64_t kc, float* buf) {
  for (int64_t k = 0; k < kc; ++k)
    for (int j = 0; j < R; j += 8)
      _mm256_store_ps(buf + k * R + j, _mm256_loadu_ps(src + k * ld + j));
}

// A block [mc, kc] (strides sam, sak) -> MR-row panels, panel p at buf + p*MR*kc, element
// (i, k) of a panel at k*MR + i; rows past mc are zero. Reads through the strides.
template <int MR>
void pack_a(const float* a, int64_t sam, int64_t sak, int64_t mc, int64_t kc, float* buf) {
  for (int64_t ir = 0; ir < mc; ir += MR, buf += MR * kc) {
    const int64_t mr = std::min<int64_t>(MR, mc - ir);
    const float* ap = a + ir * sam;
    if (sak == 1) {
      pack_rows_t<MR>(ap, sam, kc, buf, static_cast<int>(mr));
    } else if (mr == MR && sam == 1 && MR % 8 == 0) {
      pack_rows_n<MR>(ap, sak, kc, buf);
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t i = 0; i < MR; ++i) buf[k * MR + i] = i < mr ? ap[i * sam + k * sak] : 0.0f;
    }
  }
}

// B block [kc, nc] (strides sbk, sbn) -> NR-column panels, panel p at buf + p*NR*kc, element
// (k, j) at k*NR + j; columns past nc are zero.
template <int NR>
void pack_b(const float* b, int64_t sbk, int64_t sbn, int64_t kc, int64_t nc, float* buf) {
  if (sbn == 1) {
    // Row-major b: walk 8 rows at a time across all full panels, so each source row is read
    // sequentially (one page after the other, prefetcher-friendly) instead of 128 bytes from
    // each of kc rows per panel (a new page per access).
    const int64_t full = nc / NR * NR;
    for (int64_t k0 = 0; k0 < kc; k0 += 8) {
      const int64_t k1 = std::min(kc, k0 + 8);
      for (int64_t jr = 0; jr < full; jr += NR)
        pack_rows_n<NR>(b + k0 * sbk + jr, sbk, k1 - k0, buf + jr * kc + k0 * NR);
    }
    if (full == nc) return;
    b += full;
    buf += full * kc;
    nc -= full;
  }
  for (int64_t jr = 0; jr < nc; jr += NR, buf += NR * kc) {
    const int64_t nr = std::min<int64_t>(NR, nc - jr);
    const float* bp = b + jr * sbn;
    if (nr == NR && sbn == 1) {
      pack_rows_n<NR>(bp, sbk, kc, buf);
    } else if (sbk == 1) {  // b transposed (Linear's weight.T)
      pack_rows_t<NR>(bp, sbn, kc, buf, static_cast<int>(nr));
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t j = 0; j < NR; ++j) buf[k * NR + j] = j < nr ? bp[k * sbk + j * sbn] : 0.0f;
    }
  }
}

// Per-thread packing workspace: grows to the largest size seen, reused by every later call.
// A failed allocation throws cpu::AllocError (MemoryError in Python; the claim pool rethrows
// it on the calling thread).
struct Workspace {
  float* p = nullptr;
  size_t cap = 0;
  ~Workspace() { std::free(p); }
  float* get(size_t n) {
    if (n > cap) {
      std::free(p);
      const size_t bytes = (n * sizeof(float) + 63) & ~size_t{63};
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      cap = p ? n : 0;
      if (!p) throw cpu::AllocError("gemm", bytes);
    }
    return p;
  }
};
thread_local Workspace tl_workspace;

// Store phase shared by both micro-kernels' conventions:
//   first K block: c = alpha*acc (+ beta*c);  later blocks: c += alpha*acc;
//   last block: + bias, then the activation over the tile.
struct TileArgs {
  float* c;
  int64_t ldc;
  int mr, nr;
  float alpha, beta;
  bool first;
  const float* bias;  // non-null only in the last K block
  GemmAct act;        // none unless last K block
};

// ---- AVX2/FMA 6x16 micro-kernel --------------------------------------------------------------
struct Avx2Ker {
  static constexpr int MR = 6, NR = 16;
  static constexpr int64_t KC = 512, MC = 288, NC = 4096;
  static void micro(int64_t kc, const float* A, const float* B, const TileArgs& t);
};

EMBER_AVX2 void Avx2Ker::micro(int64_t kc, const float* A, const float* B, const TileArgs& t) {
  for (int i = 0; i < t.mr; ++i) _mm_prefetch(reinterpret_cast<const char*>(t.c + i * t.ldc), _MM_HINT_T0);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
    __m256 a;
    a = _mm256_broadcast_ss(A + 0);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(A + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(A + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(A + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(A + 4);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(A + 5);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
    A += 6;
    B += 16;
  }
  const __m256 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                            {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256 va = _mm256_set1_ps(t.alpha), vb = _mm256_set1_ps(t.beta);
  const bool full = t.nr == 16;
  const __m256i m0 = tail_mask(std::min(t.nr, 8)), m1 = tail_mask(std::max(t.nr - 8, 0));
  __m256 bias0 = _mm256_setzero_ps(), bias1 = bias0;
  if (t.bias) {
    bias0 = _mm256_maskload_ps(t.bias, m0);
    bias1 = _mm256_maskload_ps(t.bias + 8, m1);
  }
  const bool read_c = !t.first || t.beta != 0.0f;
  for (int i = 0; i < t.mr; ++i) {
    float* cr = t.c + i * t.ldc;
    __m256 v0 = _mm256_mul_ps(va, acc[i][0]), v1 = _mm256_mul_ps(va, acc[i][1]);
    if (read_c) {
      const __m256 o0 = full ? _mm256_loadu_ps(cr) : _mm256_maskload_ps(cr, m0);
      const __m256 o1 = full ? _mm256_loadu_ps(cr + 8) : _mm256_maskload_ps(cr + 8, m1);
      v0 = t.first ? _mm256_fmadd_ps(vb, o0, v0) : _mm256_add_ps(v0, o0);
      v1 = t.first ? _mm256_fmadd_ps(vb, o1, v1) : _mm256_add_ps(v1, o1);
    }
    if (t.bias) {
      v0 = _mm256_add_ps(v0, bias0);
      v1 = _mm256_add_ps(v1, bias1);
    }
    if (t.act == GemmAct::relu) {
      v0 = _mm256_max_ps(_mm256_setzero_ps(), v0);
      v1 = _mm256_max_ps(_mm256_setzero_ps(), v1);
    }
    if (full) {
      _mm256_storeu_ps(cr, v0);
      _mm256_storeu_ps(cr + 8, v1);
    } else {
      cpu::store_first(cr, v0, std::min(t.nr, 8));
      if (t.nr > 8) cpu::store_first(cr + 8, v1, t.nr - 8);
    }
  }
  if (t.act != GemmAct::none && t.act != GemmAct::relu)
    act_tile_avx2(t.c, t.ldc, t.mr, t.nr, t.act);
}

// ---- AVX-512 12x32 micro-kernel --------------------------------------------------------------
struct Avx512Ker {
  static constexpr int MR = 12, NR = 32;
  static constexpr int64_t KC = 512, MC = 300, NC = 4096;
  static void micro(int64_t kc, const float* A, const float* B, const TileArgs& t);
};

// R <= 12 rows of the 12-row panel are computed: edge tiles with 1-4 or 5-8 valid rows run
// a kernel with 8 / 16 accumulators instead of paying for all 12 rows (M = 64: 5 full tiles
// + one 4-row tile).
// GCC 12 warns that _mm512_max_ps's internal _mm512_undefined_ps "may be used
// uninitialized" (a known false positive of the intrinsic header); silence it here only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Lane masks of the two 16-float halves of a row of nr <= 32 columns.
inline __mmask16 half_mask(int nr, int h) {
  const int n = std::clamp(nr - 16 * h, 0, 16);
  return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
}

// The store phase of the 12x32 tiles (TileArgs' conventions) for the accumulators c of the
// tile's rows (R >= t.mr computed, the first t.mr stored).
template <int R>
EMBER_AVX512 inline void store_tile512(const __m512 (&c)[R][2], const TileArgs& t) {
  const __m512 va = _mm512_set1_ps(t.alpha), vb = _mm512_set1_ps(t.beta);
  const __mmask16 m0 = half_mask(t.nr, 0), m1 = half_mask(t.nr, 1);
  __m512 bias0 = _mm512_setzero_ps(), bias1 = bias0;
  if (t.bias) {
    bias0 = _mm512_maskz_loadu_ps(m0, t.bias);
    bias1 = _mm512_maskz_loadu_ps(m1, t.bias + 16);
  }
  const bool read_c = !t.first || t.beta != 0.0f;
  for (int i = 0; i < std::min(t.mr, R); ++i) {
    float* cr = t.c + i * t.ldc;
    __m512 v0 = _mm512_mul_ps(va, c[i][0]), v1 = _mm512_mul_ps(va, c[i][1]);
    if (read_c) {
      const __m512 o0 = _mm512_maskz_loadu_ps(m0, cr), o1 = _mm512_maskz_loadu_ps(m1, cr + 16);
      v0 = t.first ? _mm512_fmadd_ps(vb, o0, v0) : _mm512_add_ps(v0, o0);
      v1 = t.first ? _mm512_fmadd_ps(vb, o1, v1) : _mm512_add_ps(v1, o1);
    }
    if (t.bias) {
      v0 = _mm512_add_ps(v0, bias0);
      v1 = _mm512_add_ps(v1, bias1);
    }
    if (t.act == GemmAct::relu) {
      v0 = _mm512_max_ps(_mm512_setzero_ps(), v0);
      v1 = _mm512_max_ps(_mm512_setzero_ps(), v1);
    }
    _mm512_mask_storeu_ps(cr, m0, v0);
    if (m1) _mm512_mask_storeu_ps(cr + 16, m1, v1);
  }
  if (t.act != GemmAct::none && t.act != GemmAct::relu)
    act_tile_avx2(t.c, t.ldc, t.mr, t.nr, t.act);
}

template <int R>
EMBER_AVX512 void micro_avx512(int64_t kc, const float* A, const float* B, const TileArgs& t) {
  // Named accumulators (not an array indexed in a loop) so they are sure to live in zmm.
#define EMBER_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define EMBER_DECL(i) __m512 r##i##a = _mm512_setzero_ps(), r##i##b = r##i##a;
#define EMBER_FMA(i)                                   \
  if constexpr ((i) < R) {                             \
    const __m512 av = _mm512_set1_ps(A[i]);            \
    r##i##a = _mm512_fmadd_ps(av, b0, r##i##a);        \
    r##i##b = _mm512_fmadd_ps(av, b1, r##i##b);        \
  }
#define EMBER_OUT(i) \
  if constexpr ((i) < R) { c[i][0] = r##i##a; c[i][1] = r##i##b; }
  EMBER_ROWS(EMBER_DECL)
  // The C tile is read only after the K loop, and for large problems it lives in L3 or
  // memory: prefetch it one cache line per 8 k steps, so the 24 line fills overlap the FMAs
  // instead of all queueing on the line-fill buffers at once.
  const int nlines = 2 * t.mr;
  int line = 0;
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    if (line < nlines) {
      _mm_prefetch(reinterpret_cast<const char*>(t.c + (line >> 1) * t.ldc + (line & 1) * 16),
                   _MM_HINT_T0);
      ++line;
    }
#pragma GCC unroll 8
    for (int kk = 0; kk < 8; ++kk) {
      // The B micro-panel (KC x 32 floats = 64 KiB) streams from L2 (see KC below): fetch
      // its two lines 4 k steps (~48 cycles) ahead so the loads hit L1.
      _mm_prefetch(reinterpret_cast<const char*>(B + 4 * 32), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(B + 4 * 32 + 16), _MM_HINT_T0);
      const __m512 b0 = _mm512_load_ps(B), b1 = _mm512_load_ps(B + 16);
      EMBER_ROWS(EMBER_FMA)
      A += 12;
      B += 32;
    }
  }
  for (; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(B), b1 = _mm512_load_ps(B + 16);
    EMBER_ROWS(EMBER_FMA)
    A += 12;
    B += 32;
  }
  for (; line < nlines; ++line)
    _mm_prefetch(reinterpret_cast<const char*>(t.c + (line >> 1) * t.ldc + (line & 1) * 16),
                 _MM_HINT_T0);
  __m512 c[R][2];
  EMBER_ROWS(EMBER_OUT)
#undef EMBER_OUT
#undef EMBER_FMA
#undef EMBER_DECL
#undef EMBER_ROWS
  store_tile512<R>(c, t);
}

// ---- small products: the 12x32 tile on unpacked operands ------------------------------------
// For a product this small the packing is a tenth of the time (64^3, 1 thread: A's transpose
// into 12-row panels 6.5% of the samples, B's copy 3.5%, the micro-kernels ~65%), and both
// operands fit in L1 anyway. Here A(i, k) is read in place, A[i*lda + k] (ATrans: A[i +
// k*lda]), and B's row k at B + k*ldb, masked to the tile's t.nr <= 32 columns (nothing past
// them is read; B has no zero padding). R == t.mr: an edge tile computes only its own rows,
// and no row beyond M is touched. NV = 1 for a last panel of <= 16 columns: one vector per
// row, not a half-empty pair (80^3: 12.5 -> 11.0 us). 1 thread, Zen 4, best of 7 interleaved
// with the packed path, us (numpy/OpenBLAS alongside): 64^3 6.2 -> 5.6 (6.0), 48^3 4.6 -> 2.6
// (3.2), 80^3 14.5 -> 10.6 (10.3), 33x65x47 5.2 -> 2.9 (3.3), a transposed 80^3 15.5 -> 10.5;
// B transposed 64^3 6.3 -> 6.1 (9.0).
template <int R, bool ATrans, int NV>
EMBER_AVX512 void micro_small512(int64_t K, const float* A, int64_t lda, const float* B,
                                 int64_t ldb, const TileArgs& t) {
  static_assert(R >= 1 && R <= 12 && (NV == 1 || NV == 2));
#define EMBER_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define EMBER_DECL(i) __m512 r##i##a = _mm512_setzero_ps(), r##i##b = r##i##a;
  // Row-major A: rows 3q, 3q + 1, 3q + 2 at ap[q] + {0, 1, 2} * lda, so that the broadcasts'
  // addresses are base + index * scale forms of four pointers and one stride.
#define EMBER_FMA(i)                                                                       \
  if constexpr ((i) < R) {                                                                 \
    const __m512 av =                                                                      \
        _mm512_set1_ps(ATrans ? ap[0][i] : ap[(i) / 3][((i) % 3) * lda]);                  \
    r##i##a = _mm512_fmadd_ps(av, b0, r##i##a);                                            \
    if constexpr (NV == 2) r##i##b = _mm512_fmadd_ps(av, b1, r##i##b);                     \
  }
#define EMBER_OUT(i) \
  if constexpr ((i) < R) { c[i][0] = r##i##a; c[i][1] = r##i##b; }
  EMBER_ROWS(EMBER_DECL)
  const __mmask16 m0 = half_mask(t.nr, 0), m1 = half_mask(t.nr, 1);
  const float* ap[4];
  for (int q = 0; q < 4; ++q) ap[q] = ATrans || 3 * q >= R ? A : A + 3 * q * lda;
  const int64_t astep = ATrans ? lda : 1;
  for (int64_t k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, B);
    const __m512 b1 = NV == 2 ? _mm512_maskz_loadu_ps(m1, B + 16) : b0;
    EMBER_ROWS(EMBER_FMA)
    for (int q = 0; q < 4; ++q) ap[q] += astep;
    B += ldb;
  }
  __m512 c[R][2];
  EMBER_ROWS(EMBER_OUT)
#undef EMBER_OUT
#undef EMBER_FMA
#undef EMBER_DECL
#undef EMBER_ROWS
  store_tile512<R>(c, t);
}

// micro_small512 for r = t.mr in 1..12, with R known at compile time.
template <bool ATrans, int NV, int R = 12>
void small_tile_r(int r, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                  const TileArgs& t) {
  if constexpr (R >= 1) {
    if (r == R) {
      micro_small512<R, ATrans, NV>(K, A, lda, B, ldb, t);
      return;
    }
    small_tile_r<ATrans, NV, R - 1>(r, K, A, lda, B, ldb, t);
  }
}

// Where the unpacked tiles apply: A and B each row- or column-major, and a product small
// enough (kSmallWork) that packing A would not pay for itself.
bool use_small512(int64_t M, int64_t N, int64_t K, int64_t sam, int64_t sak, int64_t sbk,
                  int64_t sbn) {
  return (sbn == 1 || sbk == 1) && (sak == 1 || sam == 1) && N > 16 && K <= 512 &&
         static_cast<double>(M) * N * K <= (sbn == 1 ? kSmallWork : kSmallWork / 2);
}

// c[M, N] (row stride ldc) = act(alpha * a @ b + beta * c + bias) on the unpacked tiles:
// 32-column panels of B outer (one panel, K x 32 floats, stays in L1), 12-row tiles inner.
// A transposed B (sbn != 1, so sbk == 1: Linear's x @ W^T) has each panel transposed into a
// K x 32 buffer first (pack_b), as its columns cannot be loaded as vectors in place.
void gemm_small512(const float* a, int64_t sam, int64_t sak, const float* b, int64_t sbk,
                   int64_t sbn, float* c, int64_t ldc, int64_t M, int64_t N, int64_t K,
                   float alpha, float beta, const float* bias, GemmAct act) {
  const bool at = sak != 1;  // then sam == 1
  const int64_t lda = at ? sak : sam;
  float* panel = sbn == 1 ? nullptr : tl_workspace.get(static_cast<size_t>(K * 32));
  for (int64_t jr = 0; jr < N; jr += 32) {
    TileArgs t{};
    t.ldc = ldc;
    t.nr = static_cast<int>(std::min<int64_t>(32, N - jr));
    t.alpha = alpha;
    t.beta = beta;
    t.first = true;
    t.bias = bias ? bias + jr : nullptr;
    t.act = act;
    const float* bp = b + jr * sbn;
    int64_t ldb = sbk;
    if (panel) {
      pack_b<32>(bp, sbk, sbn, K, t.nr, panel);
      bp = panel;
      ldb = 32;
    }
    for (int64_t ir = 0; ir < M; ir += 12) {
      t.mr = static_cast<int>(std::min<int64_t>(12, M - ir));
      t.c = c + ir * ldc + jr;
      const float* ai = a + ir * sam;
      const bool one = t.nr <= 16;
      if (at && one)
        small_tile_r<true, 1>(t.mr, K, ai, lda, bp, ldb, t);
      else if (at)
        small_tile_r<true, 2>(t.mr, K, ai, lda, bp, ldb, t);
      else if (one)
        small_tile_r<false, 1>(t.mr, K, ai, lda, bp, ldb, t);
      else
        small_tile_r<false, 2>(t.mr, K, ai, lda, bp, ldb, t);
    }
  }
}

#pragma GCC diagnostic pop

void Avx512Ker::micro(int64_t kc, const float* A, const float* B, const TileArgs& t) {
  if (t.mr <= 4)
    micro_avx512<4>(kc, A, B, t);
  else if (t.mr <= 8)
    micro_avx512<8>(kc, A, B, t);
  else
    micro_avx512<12>(kc, A, B, t);
}

constexpr int64_t kSmallBBytes = 512 * 1024;
constexpr int64_t kBGroup = 64;  // B columns packed at a time by the first M block (see below)

// ---- the BLIS loop nest over one [M, N] matrix (a sub-block of one batch) ---------------------
// PackB(pc, jc, kc, nc, buf) packs B rows [pc, pc + kc) x columns [jc, jc + nc) into
// NR-column panels (pack_b's layout); the strided GEMM and the gathered one (below) differ
// only there.
template <class Ker, class PackB>
void packed_serial_with(const float* a, int64_t sam, int64_t sak, PackB&& pack_b_block,
                        float* c, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
                        float beta, const float* bias, GemmAct act) {
  constexpr int MR = Ker::MR, NR = Ker::NR;
  constexpr int64_t KC = Ker::KC, MC = Ker::MC, NC = Ker::NC;
  // K blocks of equal size (<= KC): K = 768 with KC = 512 runs 2 x 384, not 512 + 256.
  const int64_t kblocks = (K + KC - 1) / KC;
  const int64_t kc_max = (K + kblocks - 1) / kblocks;
  // M blocks of equal size too (multiples of MR), so no thin last block wastes an A packing.
  const int64_t mblocks = (M + MC - 1) / MC;
  const int64_t mc_max = ((M + mblocks - 1) / mblocks + MR - 1) / MR * MR;
  // One M block (conv's M = 64 output channels): each packed B block is used by only
  // mc / MR tiles per K block, and a B block larger than L2 (288 x 3136 floats = 3.6 MB) is
  // written to L3 by the packing and read back from there by the micro-kernels. A B block of
  // <= kSmallBBytes keeps that round trip inside L2 (64 x 3136 x 576: +7%, measured).
  const int64_t nc_blk =
      mblocks == 1 ? std::clamp<int64_t>(kSmallBBytes / (kc_max * 4) / NR * NR, NR, NC) : NC;
  const int64_t nc_max = (std::min(nc_blk, N) + NR - 1) / NR * NR;
  float* ws = tl_workspace.get(static_cast<size_t>(kc_max) * (mc_max + nc_max) + 16);
  float* bufA = ws;
  float* bufB = ws + ((kc_max * mc_max + 15) & ~int64_t{15});
  // Several M blocks share each packed B block, which then lives in L3. The first M block
  // packs it kBGroup columns at a time just before its tiles use them (as OpenBLAS does), so
  // those tiles read their B panels from L1/L2 instead of from L3 (and the packing overlaps
  // the FMAs); the later M blocks read the whole block from L3. AVX2 kernel, 1 thread, builds
  // alternated (11 rounds): 512x3072x768 1.8% faster (0.97 -> 0.99-1.00x numpy with
  // OPENBLAS_CORETYPE=Haswell, in two runs), 1024^3, 2048^3, 4096x768x768, 1024x3072x768,
  // 512x768x3072 and 600^3 within +-1%, as was the AVX-512 kernel.
  const bool b_by_group = mblocks > 1;
  for (int64_t jc = 0; jc < N; jc += nc_blk) {
    const int64_t nc = std::min(nc_blk, N - jc);
    for (int64_t pc = 0; pc < K; pc += kc_max) {
      const int64_t kc = std::min(kc_max, K - pc);
      const bool first = pc == 0, last = pc + kc == K;
      if (!b_by_group) pack_b_block(pc, jc, kc, nc, bufB);
      for (int64_t ic = 0; ic < M; ic += mc_max) {
        const int64_t mc = std::min(mc_max, M - ic);
        pack_a<MR>(a + ic * sam + pc * sak, sam, sak, mc, kc, bufA);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          if (b_by_group && ic == 0 && jr % kBGroup == 0)
            pack_b_block(pc, jc + jr, kc, std::min(kBGroup, nc - jr), bufB + jr * kc);
          TileArgs t{};
          t.ldc = ldc;
          t.nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          t.alpha = alpha;
          t.beta = beta;
          t.first = first;
          t.bias = last && bias ? bias + jc + jr : nullptr;
          t.act = last ? act : GemmAct::none;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            t.mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            t.c = c + (ic + ir) * ldc + jc + jr;
            Ker::micro(kc, bufA + ir * kc, bufB + jr * kc, t);
          }
        }
      }
    }
  }
}

template <class Ker>
void packed_serial(const float* a, int64_t sam, int64_t sak, const float* b, int64_t sbk,
                   int64_t sbn, float* c, int64_t ldc, int64_t M, int64_t N, int64_t K,
                   float alpha, float beta, const float* bias, GemmAct act) {
  packed_serial_with<Ker>(
      a, sam, sak,
      [&](int64_t pc, int64_t jc, int64_t kc, int64_t nc, float* buf) {
        pack_b<Ker::NR>(b + pc * sbk + jc * sbn, sbk, sbn, kc, nc, buf);
      },
      c, ldc, M, N, K, alpha, beta, bias, act);
}

// Gathered B: B(k, n) = brow[k][bcol[n]] (an implicit-GEMM operand, e.g. conv's K = taps x
// channels rows, each a shifted view of one padded input slab, and columns that skip the
// slab's padding columns). Each panel's columns are split into runs of consecutive bcol,
// copied per k with (masked) 8-float moves; columns past nc are zero.
template <int NR>
EMBER_AVX2 void pack_b_gather(const float* const* brow, const int64_t* bcol, int64_t kc,
                              int64_t nc, float* buf) {
  for (int64_t jr = 0; jr < nc; jr += NR, buf += NR * kc) {
    const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
    const int64_t* cj = bcol + jr;
    int run0[NR + 1], nruns = 0;
    for (int j = 0; j < nr; ++j)
      if (j == 0 || cj[j] != cj[j - 1] + 1) run0[nruns++] = j;
    run0[nruns] = nr;
    if (nruns == 1 && nr == NR) {
      const int64_t off = cj[0];
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = brow[k] + off;
        for (int j = 0; j < NR; j += 8)
          _mm256_store_ps(buf + k * NR + j, _mm256_loadu_ps(src + j));
      }
      continue;
    }
    for (int64_t k = 0; k < kc; ++k) {
      float* dst = buf + k * NR;
      for (int j = 0; j < NR; j += 8) _mm256_store_ps(dst + j, _mm256_setzero_ps());
      for (int r = 0; r < nruns; ++r) {
        const float* src = brow[k] + cj[run0[r]];
        const int j0 = run0[r], len = run0[r + 1] - j0;
        int t = 0;
        for (; t + 8 <= len; t += 8) _mm256_storeu_ps(dst + j0 + t, _mm256_loadu_ps(src + t));
        if (t < len) {
          cpu::store_first(dst + j0 + t, _mm256_maskload_ps(src + t, tail_mask(len - t)),
                           len - t);
        }
      }
    }
  }
}

// Column-pointer B: B(k, n) = bcolp[n][k] (column n contiguous along k, e.g. one channel of a
// shifted slab view). pack_rows_t's 4x8 in-register transposes, with a pointer per column.
template <int NR>
EMBER_AVX2 void pack_b_colptr(const float* const* bp, int64_t pc, int64_t kc, int64_t nc,
                              float* buf) {
  for (int64_t jr = 0; jr < nc; jr += NR, buf += NR * kc) {
    const int rows = static_cast<int>(std::min<int64_t>(NR, nc - jr));
    const float* const* src = bp + jr;
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
      int i = 0;
      for (; i + 4 <= rows; i += 4) {
        const int64_t o = pc + k;
        const __m256 r0 = _mm256_loadu_ps(src[i] + o), r1 = _mm256_loadu_ps(src[i + 1] + o),
                     r2 = _mm256_loadu_ps(src[i + 2] + o), r3 = _mm256_loadu_ps(src[i + 3] + o);
        const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
                     t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                     u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        float* d = buf + k * NR + i;
        _mm_storeu_ps(d + 0 * NR, _mm256_castps256_ps128(u0));
        _mm_storeu_ps(d + 1 * NR, _mm256_castps256_ps128(u1));
        _mm_storeu_ps(d + 2 * NR, _mm256_castps256_ps128(u2));
        _mm_storeu_ps(d + 3 * NR, _mm256_castps256_ps128(u3));
        _mm_storeu_ps(d + 4 * NR, _mm256_extractf128_ps(u0, 1));
        _mm_storeu_ps(d + 5 * NR, _mm256_extractf128_ps(u1, 1));
        _mm_storeu_ps(d + 6 * NR, _mm256_extractf128_ps(u2, 1));
        _mm_storeu_ps(d + 7 * NR, _mm256_extractf128_ps(u3, 1));
      }
      for (; i < rows; ++i)
        for (int kk = 0; kk < 8; ++kk) buf[(k + kk) * NR + i] = src[i][pc + k + kk];
      for (; i < NR; ++i)
        for (int kk = 0; kk < 8; ++kk) buf[(k + kk) * NR + i] = 0.0f;
    }
    for (; k < kc; ++k)
      for (int i = 0; i < NR; ++i) buf[k * NR + i] = i < rows ? src[i][pc + k] : 0.0f;
  }
}

template <class Ker>
void gemm_packed(const float* a, const float* b, float* c, const GemmDims& d, float alpha,
                 float beta, const float* bias, GemmAct act) {
  const int nth = worth_threads(d) ? cpu::get_num_threads() : 1;
  const int64_t MN = d.M * d.N;
  auto block = [&](int64_t i, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    if constexpr (std::is_same_v<Ker, Avx512Ker>) {
      if (use_small512(m1 - m0, n1 - n0, d.K, d.sam, d.sak, d.sbk, d.sbn)) {
        gemm_small512(a + i * d.sab + m0 * d.sam, d.sam, d.sak, b + i * d.sbb + n0 * d.sbn,
                      d.sbk, d.sbn, c + i * MN + m0 * d.N + n0, d.N, m1 - m0, n1 - n0, d.K,
                      alpha, beta, bias ? bias + n0 : nullptr, act);
        return;
      }
    }
    packed_serial<Ker>(a + i * d.sab + m0 * d.sam, d.sam, d.sak, b + i * d.sbb + n0 * d.sbn,
                       d.sbk, d.sbn, c + i * MN + m0 * d.N + n0, d.N, m1 - m0, n1 - n0, d.K,
                       alpha, beta, bias ? bias + n0 : nullptr, act);
  };
  // One piece per thread, claimed (not assigned): see kernels/cpu/pool.h.
  const bool by_batch = d.B >= 4 * nth || d.B % nth == 0;
  const bool by_n = d.N >= d.M;
  const int64_t pieces = nth == 1 ? 1 : by_batch ? std::min<int64_t>(d.B, nth) : nth;
  cpu::ClaimPool::instance().run(nth, pieces, [&](int64_t piece) {
    if (pieces == 1) {
      for (int64_t i = 0; i < d.B; ++i) block(i, 0, d.M, 0, d.N);
      return;
    }
    const int tid = static_cast<int>(piece), nt = static_cast<int>(pieces);
    int64_t lo, hi;
    if (by_batch) {
      cpu::split_range(d.B, 1, tid, nt, &lo, &hi);
      for (int64_t i = lo; i < hi; ++i) block(i, 0, d.M, 0, d.N);
    } else if (by_n) {  // split columns in whole NR panels: each piece packs its own B
      cpu::split_range(d.N, Ker::NR, tid, nt, &lo, &hi);
      if (lo < hi)
        for (int64_t i = 0; i < d.B; ++i) block(i, 0, d.M, lo, hi);
    } else {
      cpu::split_range(d.M, Ker::MR, tid, nt, &lo, &hi);
      if (lo < hi)
        for (int64_t i = 0; i < d.B; ++i) block(i, lo, hi, 0, d.N);
    }
  });
}

void gemm_f32_simd(const float* a, const float* b, float* c, const GemmDims& d, float alpha,
                   float beta, const float* bias, GemmAct act, bool avx512) {
  if (d.K == 0) {  // c = act(beta * c + bias): the epilogue alone (also an activation kernel)
    const int64_t n = d.B * d.M * d.N;
    if (beta == 0.0f)
      std::fill(c, c + n, 0.0f);
    else if (beta != 1.0f)
      for (int64_t i = 0; i < n; ++i) c[i] *= beta;
    epilogue_rows_avx2(c, d.B * d.M, d.N, bias, act);
    return;
  }
  const bool skinny_layout = (d.N <= 1 || d.sbn == 1) || (d.K <= 1 || (d.sak == 1 && d.sbk == 1));
  if (d.M <= kSkinnyM && skinny_layout) {
    rows_parallel(d, [&](int64_t r0, int64_t r1) {
      skinny_rows_avx2(a, b, c, d, alpha, beta, r0, r1);
    });
    epilogue_rows_avx2(c, d.B * d.M, d.N, bias, act);
    return;
  }
  // N <= 16: a 32-wide AVX-512 panel would be half padding, and the 16-wide AVX2 panel does
  // the same work per k step (2 FMAs per row) with no waste (16^3: 1.1 vs 1.5 us).
  if (avx512 && d.N > 16)
    gemm_packed<Avx512Ker>(a, b, c, d, alpha, beta, bias, act);
  else
    gemm_packed<Avx2Ker>(a, b, c, d, alpha, beta, bias, act);
}
#endif  // EMBER_COMPILED_AVX2

}  // namespace

// ---- entry points -------------------------------------------------------------------------
bool gemm_serial(const float* a, int64_t sam, int64_t sak, const float* b, int64_t sbk,
                 int64_t sbn, float* c, int64_t ldc, int64_t M, int64_t N, int64_t K,
                 float alpha, float beta) {
#if EMBER_COMPILED_AVX2
  const int path = gemm_path();
  if (path == 0 || K <= 0) return false;
  if (M <= 0 || N <= 0) return true;
  if (path == 2 && N > 16)
    packed_serial<Avx512Ker>(a, sam, sak, b, sbk, sbn, c, ldc, M, N, K, alpha, beta, nullptr,
                             GemmAct::none);
  else
    packed_serial<Avx2Ker>(a, sam, sak, b, sbk, sbn, c, ldc, M, N, K, alpha, beta, nullptr,
                           GemmAct::none);
  return true;
#else
  (void)a, (void)sam, (void)sak, (void)b, (void)sbk, (void)sbn, (void)c, (void)ldc, (void)M,
      (void)N, (void)K, (void)alpha, (void)beta;
  return false;
#endif
}

bool gemm_serial_gather(const float* a, int64_t lda, const float* const* brow,
                        const int64_t* bcol, float* c, int64_t ldc, int64_t M, int64_t N,
                        int64_t K, float alpha, float beta) {
#if EMBER_COMPILED_AVX2
  const int path = gemm_path();
  if (path == 0 || K <= 0) return false;
  if (M <= 0 || N <= 0) return true;
  auto run = [&](auto ker) {
    using Ker = decltype(ker);
    packed_serial_with<Ker>(
        a, lda, 1,
        [&](int64_t pc, int64_t jc, int64_t kc, int64_t nc, float* buf) {
          pack_b_gather<Ker::NR>(brow + pc, bcol + jc, kc, nc, buf);
        },
        c, ldc, M, N, K, alpha, beta, nullptr, GemmAct::none);
  };
  if (path == 2 && N > 16)
    run(Avx512Ker{});
  else
    run(Avx2Ker{});
  return true;
#else
  (void)a, (void)lda, (void)brow, (void)bcol, (void)c, (void)ldc, (void)M, (void)N, (void)K,
      (void)alpha, (void)beta;
  return false;
#endif
}

bool gemm_serial_colptr(const float* a, int64_t lda, const float* const* bcolp, float* c,
                        int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
                        float beta) {
#if EMBER_COMPILED_AVX2
  const int path = gemm_path();
  if (path == 0 || K <= 0) return false;
  if (M <= 0 || N <= 0) return true;
  auto run = [&](auto ker) {
    using Ker = decltype(ker);
    packed_serial_with<Ker>(
        a, lda, 1,
        [&](int64_t pc, int64_t jc, int64_t kc, int64_t nc, float* buf) {
          pack_b_colptr<Ker::NR>(bcolp + jc, pc, kc, nc, buf);
        },
        c, ldc, M, N, K, alpha, beta, nullptr, GemmAct::none);
  };
  if (path == 2 && N > 16)
    run(Avx512Ker{});
  else
    run(Avx2Ker{});
  return true;
#else
  (void)a, (void)lda, (void)bcolp, (void)c, (void)ldc, (void)M, (void)N, (void)K, (void)alpha,
      (void)beta;
  return false;
#endif
}

int gemm_path() {
  if (!cpu::avx2_selected()) return 0;
  return cpu::avx512_selected() ? 2 : 1;
}

const char* gemm_path_name() {
  static const char* const names[3] = {"scalar", "avx2-6x16", "avx512-12x32"};
  return names[gemm_path()];
}

template <typename T>
void gemm_cpu(const T* a, const T* b, T* c, const GemmDims& d, T alpha, T beta, const T* bias,
              GemmAct act) {
  gemm_rows_cpu<T>(a, b, c, d, alpha, beta, bias, act, 0, d.B * d.M);
}
template void gemm_cpu<float>(const float*, const float*, float*, const GemmDims&, float, float,
                              const float*, GemmAct);
template void gemm_cpu<double>(const double*, const double*, double*, const GemmDims&, double,
                               double, const double*, GemmAct);

void gemm(const float* a, const float* b, float* c, const GemmDims& d, float alpha, float beta,
          const float* bias, GemmAct act) {
  if (d.B * d.M == 0 || d.N == 0) return;
#if EMBER_COMPILED_AVX2
  const int path = gemm_path();
  if (path > 0) {
    gemm_f32_simd(a, b, c, d, alpha, beta, bias, act, path == 2);
    return;
  }
#endif
  rows_parallel(d, [&](int64_t r0, int64_t r1) {
    gemm_rows_cpu<float>(a, b, c, d, alpha, beta, bias, act, r0, r1);
  });
}

void gemm(const double* a, const double* b, double* c, const GemmDims& d, double alpha,
          double beta, const double* bias, GemmAct act) {
  if (d.B * d.M == 0 || d.N == 0) return;
  rows_parallel(d, [&](int64_t r0, int64_t r1) {
    gemm_rows_cpu<double>(a, b, c, d, alpha, beta, bias, act, r0, r1);
  });
}

}  // namespace ember
