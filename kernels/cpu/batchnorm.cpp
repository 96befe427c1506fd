// batchnorm.cpp -- batch-norm forward (training and eval) and backward on the CPU.
//
// Layout: x viewed as C-contiguous [N, C, S] (S = product of the spatial dims, 1 for [N, C]);
// channel c of sample n is the row x + (n*C + c)*S. Per-channel vectors ([C]) are T.
//
// Training forward, per channel over its n = N*S values:
//   stats   k = x[0, c, 0] (a shift taken from the data); D = sum(x - k), Q = sum((x - k)^2)
//           in double (the AVX2 path along rows forms x - k in float and adds up to 32 values
//           per float lane before adding the partial sums into double, see kFlush; the
//           short-row path sums in double, see chunk_sums);
//           mean = k + D/n, var = max(0, (Q - D*D/n) / n) (biased).
//           The shift makes a constant channel give D = Q = 0, so var is exactly 0 and mean
//           exactly the constant (no E[x^2] - E[x]^2 cancellation); with k one of the values,
//           |mean - k| is a few standard deviations and the remaining cancellation costs a
//           few double ulps, far below float32 (and below gradcheck's needs in float64).
//   apply   y = (x - mean) * scale + bias_c, scale = invstd * w, invstd = 1/sqrt(var + eps).
//           Subtracting the mean first (instead of x*scale + shift) keeps y exact for a
//           constant channel and avoids a large-mean cancellation.
//   Reads of x: 2 (stats, apply) + 1 write of y: the stats of every channel are needed before
//   the first value can be written, and the tensors this is fast for fit in L3 (see "Pass
//   order"), so the second read is served from there.
// Eval forward: the apply pass only, from running_mean / running_var (1 read + 1 write).
// Backward, per channel (training): sg = sum(g), sgx = sum(g * (x - mean)) in double, with the
//   same float partial sums as the stats on the AVX2 path (1 read of g and x), then
//   gx = a*g + b*(x - mean) + d with a = invstd*w, b = -a*invstd*sgx*invstd/n, d = -a*sg/n,
//   i.e. invstd*w*(g - mean(g) - xhat*mean(g*xhat)) (2nd read of g and x, 1 write).
//   grad_weight = sgx*invstd, grad_bias = sg. Eval: gx = a*g, reading only g (1 read + 1
//   write); the reduction pass runs only when grad_weight or grad_bias are wanted.
//
// Pass order: every pass walks the rows (n, c) in memory order, row r = n*C + c, so x, y, g
// and gx stream front to back and the hardware prefetchers see one sequential stream per
// array. An earlier version walked channel by channel (stats then apply of one channel while
// its rows were still in L2) to save the second DRAM read of x; its rows lie C*S elements
// apart, which defeats the prefetchers, and with power-of-two strides (32x32 maps: 256 KiB)
// all rows of a channel fall into the same L2 sets, so the reuse did not happen either. On the
// 2-core AMD EPYC (Zen 4, 32 MiB L3) development machine, row order took the 1-thread training
// forward / backward of 32x64x32x32 from 0.45 / 1.23 to 0.32 / 0.68 ms, of 64x256x14x14 from
// 1.18 / 2.62 to 0.79 / 1.64 ms and of 8x64x56x56 from 0.26 / 0.71 to 0.22 / 0.42 ms (old and
// new builds alternated in one session). The cost: a tensor too large for L3 is read twice
// from DRAM; at 8x64x112x112 (25.7 MB) row order was still 5-15% faster, at 16x64x112x112
// (51 MB, 2 threads) its backward was ~15% slower (5.7-6.5 against 5.0-5.7 ms).
//
// Threads (claim pool, pool.h): the reduction passes cut the rows into nb = min(R, 16)
// consecutive pieces (R = N*C rows); each piece adds its rows into its own [C] partial sums,
// and the pieces are added in piece order. nb depends only on the shape, so results are
// bit-identical for any thread count. The element-wise passes cut the rows into 8 pieces per
// thread; pieces never share a row, so only a cache line at a piece boundary is ever written
// by two threads.
//
// Variants: <step>_span_cpu<T> scalar references (float, double; sums in double) over one
// row; AVX2/FMA float versions of the same (8 floats per vector, sums converted to 4-double
// lanes), used for rows of at least 8 values. Shorter rows (S < 8: [N, C] and short [N, C, L])
// take a float AVX2 path across the C*S values of each sample (chunk_sums, apply_pos_avx2,
// bgrad_pos_avx2). double runs the reference (it exists for gradcheck). The vector loops leave
// the last S % 8 values of a row (C*S % 8 of a sample) to a scalar tail.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/cpu/common.h"
#include "kernels/cpu/pool.h"
#include "kernels/kernels.h"

namespace ember {
namespace {
constexpr int64_t kParallelN = int64_t{1} << 15;  // elements; below this, one thread
constexpr int64_t kReducePieces = 16;             // row pieces of a reduction pass
constexpr int64_t kPiecesPerThread = 8;           // row pieces per thread, element-wise passes

struct Sums {
  double a = 0, b = 0;
};

// ---- scalar references (one row of n values) --------------------------------------------
// stats: a = sum(x - k), b = sum((x - k)^2).
template <typename T>
Sums stats_span_cpu(const T* x, int64_t n, double k) {
  Sums s;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - k;
    s.a += d;
    s.b += d * d;
  }
  return s;
}

template <typename T>
void apply_span_cpu(const T* x, T* y, int64_t n, T mean, T scale, T bias) {
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * scale + bias;
}

// backward sums: a = sum(g), b = sum(g * (x - mean)).
template <typename T>
Sums bsums_span_cpu(const T* g, const T* x, int64_t n, double mean) {
  Sums s;
  for (int64_t i = 0; i < n; ++i) {
    const double gi = double(g[i]);
    s.a += gi;
    s.b += gi * (double(x[i]) - mean);
  }
  return s;
}

// gx = a*g + b*(x - mean) + d; x == nullptr (eval) means gx = a*g without reading x.
template <typename T>
void bgrad_span_cpu(const T* g, const T* x, T* gx, int64_t n, T mean, T a, T b, T d) {
  if (!x) {
    for (int64_t i = 0; i < n; ++i) gx[i] = a * g[i];
    return;
  }
  for (int64_t i = 0; i < n; ++i) gx[i] = a * g[i] + (b * (x[i] - mean) + d);
}

// ---- AVX2 (float) -------------------------------------------------------------------------
#if EMBER_COMPILED_AVX2
// Float partial sums, flushed to double (cpu::partial_sums8): the converts to double (a
// cvtps2pd and an extract per 4 lanes) were the bottleneck of these passes (port 5), holding
// them to ~13 GB/s when x is in L3. Each float lane sums at most kFlush / 32 = 32 values (+3)
// before its total is added into the double accumulators, so the float error stays a few ulps
// of a 32-term partial sum.
constexpr int64_t kFlush = 1024;

// The 8 floats of v as two 4-double vectors.
EMBER_AVX2 inline void cvt8(__m256 v, __m256d* lo, __m256d* hi) {
  *lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
  *hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}

EMBER_AVX2 Sums stats_span_avx2(const float* r, int64_t n, double k) {
  // k is x[c*S] (a float), so x - k is exact for a constant channel.
  const __m256 kv = _mm256_set1_ps(float(k));
  double sa = 0, sb = 0;
  const int64_t i = cpu::partial_sums8(
      n, kFlush,
      [=](int64_t j, __m256* u, __m256* v) EMBER_AVX2 {
        *u = *v = _mm256_sub_ps(_mm256_loadu_ps(r + j), kv);
      },
      &sa, &sb);
  Sums s = stats_span_cpu(r + i, n - i, k);
  s.a += sa;
  s.b += sb;
  return s;
}

EMBER_AVX2 void apply_span_avx2(const float* x, float* y, int64_t n, float mean, float scale,
                                float bias) {
  const __m256 m = _mm256_set1_ps(mean), sc = _mm256_set1_ps(scale), bv = _mm256_set1_ps(bias);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 v0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), m);
    const __m256 v1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), m);
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(v0, sc, bv));
    _mm256_storeu_ps(y + i + 8, _mm256_fmadd_ps(v1, sc, bv));
  }
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), m), sc, bv));
  for (; i < n; ++i) y[i] = std::fma(x[i] - mean, scale, bias);
}

EMBER_AVX2 Sums bsums_span_avx2(const float* g, const float* x, int64_t n, double mean) {
  // mean is the float the forward stored, so x - mean matches the reference's double math
  // up to the rounding of the difference itself.
  const __m256 mv = _mm256_set1_ps(float(mean));
  double sa = 0, sb = 0;
  const int64_t i = cpu::partial_sums8(
      n, kFlush,
      [=](int64_t j, __m256* u, __m256* v) EMBER_AVX2 {
        *u = _mm256_loadu_ps(g + j);
        *v = _mm256_sub_ps(_mm256_loadu_ps(x + j), mv);
      },
      &sa, &sb);
  Sums s = bsums_span_cpu(g + i, x + i, n - i, mean);
  s.a += sa;
  s.b += sb;
  return s;
}

EMBER_AVX2 void bgrad_span_avx2(const float* g, const float* x, float* gx, int64_t n, float mean,
                                float a, float b, float d) {
  const __m256 m = _mm256_set1_ps(mean), av = _mm256_set1_ps(a), bv = _mm256_set1_ps(b),
               dv = _mm256_set1_ps(d);
  int64_t i = 0;
  if (!x) {  // eval: gx = a*g, x not read
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(gx + i, _mm256_mul_ps(av, _mm256_loadu_ps(g + i)));
    for (; i < n; ++i) gx[i] = a * g[i];
    return;
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 t = _mm256_fmadd_ps(bv, _mm256_sub_ps(_mm256_loadu_ps(x + i), m), dv);
    _mm256_storeu_ps(gx + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(g + i), t));
  }
  for (; i < n; ++i) gx[i] = std::fma(a, g[i], std::fma(b, x[i] - mean, d));
}

// ---- AVX2 short rows (S < 8): vectorised across the L = C*S values of a sample ------------
// Position j of a sample belongs to channel j / S; kd, mp, ... are per-position copies of the
// per-channel values. chunk_sums adds, over samples n0..n1, into per-position accumulators
// pa, pb of the w positions a chunk starts at:
//   stats (kGrad false): u = v = x - kd;  backward (kGrad true): u = g, v = x - kd (the mean);
//   pa = sum(u), pb = sum(u * v), converted to double before the subtraction and summed in
//   double, as the scalar reference does. (Float partials, as along the rows, lose up to ~6x
//   the float32 error when the shift is an outlier of its channel; here the accumulators live
//   in L1.) Each sample's chunk is one contiguous run of memory: an earlier version kept 16
//   positions' sums in registers and stepped through the samples, one 64-byte piece per
//   4 KiB page at 512x1024, which the prefetchers could not follow. The 1-thread backward
//   sums of 512x1024 took 235 us that way, 176 us with chunks, and 140 us adding 4 samples
//   per pass over the accumulators (chunk_step); the double converts now bound it.
// Adds samples n..n+NS-1 of positions [0, w) into pa, pb: NS samples per load and store of
// the accumulators (the accumulator traffic, not the arithmetic, bounds a single sample).
template <bool kGrad, int NS>
EMBER_AVX2 void chunk_step(const float* g, const float* x, int64_t L, int64_t n, int64_t w,
                           const double* kd, double* pa, double* pb) {
  int64_t j = 0;
  for (; j + 8 <= w; j += 8) {
    const __m256d k0 = _mm256_loadu_pd(kd + j), k1 = _mm256_loadu_pd(kd + j + 4);
    __m256d a0 = _mm256_loadu_pd(pa + j), a1 = _mm256_loadu_pd(pa + j + 4);
    __m256d b0 = _mm256_loadu_pd(pb + j), b1 = _mm256_loadu_pd(pb + j + 4);
    for (int s = 0; s < NS; ++s) {
      __m256d x0, x1, u0, u1;
      cvt8(_mm256_loadu_ps(x + (n + s) * L + j), &x0, &x1);
      const __m256d d0 = _mm256_sub_pd(x0, k0), d1 = _mm256_sub_pd(x1, k1);
      if (kGrad) {
        cvt8(_mm256_loadu_ps(g + (n + s) * L + j), &u0, &u1);
      } else {
        u0 = d0;
        u1 = d1;
      }
      a0 = _mm256_add_pd(a0, u0);
      a1 = _mm256_add_pd(a1, u1);
      b0 = _mm256_fmadd_pd(u0, d0, b0);
      b1 = _mm256_fmadd_pd(u1, d1, b1);
    }
    _mm256_storeu_pd(pa + j, a0);
    _mm256_storeu_pd(pa + j + 4, a1);
    _mm256_storeu_pd(pb + j, b0);
    _mm256_storeu_pd(pb + j + 4, b1);
  }
  for (; j < w; ++j)
    for (int s = 0; s < NS; ++s) {
      const double d = double(x[(n + s) * L + j]) - kd[j];
      const double u = kGrad ? double(g[(n + s) * L + j]) : d;
      pa[j] += u;
      pb[j] = std::fma(u, d, pb[j]);
    }
}

template <bool kGrad>
void chunk_sums(const float* g, const float* x, int64_t L, int64_t n0, int64_t n1, int64_t w,
                const double* kd, double* pa, double* pb) {
  std::fill_n(pa, w, 0.0);
  std::fill_n(pb, w, 0.0);
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) chunk_step<kGrad, 4>(g, x, L, n, w, kd, pa, pb);
  for (; n < n1; ++n) chunk_step<kGrad, 1>(g, x, L, n, w, kd, pa, pb);
}

// One sample of L values: y = (x - mp) * sp + bp, per-position coefficients.
EMBER_AVX2 void apply_pos_avx2(const float* x, float* y, int64_t L, const float* mp,
                               const float* sp, const float* bp) {
  int64_t j = 0;
  for (; j + 8 <= L; j += 8) {
    const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(mp + j));
    _mm256_storeu_ps(y + j, _mm256_fmadd_ps(d, _mm256_loadu_ps(sp + j), _mm256_loadu_ps(bp + j)));
  }
  for (; j < L; ++j) y[j] = std::fma(x[j] - mp[j], sp[j], bp[j]);
}

// One sample: gx = ap*g + bp*(x - mp) + dp, or gx = ap*g when x is null (eval).
EMBER_AVX2 void bgrad_pos_avx2(const float* g, const float* x, float* gx, int64_t L,
                               const float* mp, const float* ap, const float* bp,
                               const float* dp) {
  int64_t j = 0;
  if (!x) {
    for (; j + 8 <= L; j += 8)
      _mm256_storeu_ps(gx + j, _mm256_mul_ps(_mm256_loadu_ps(ap + j), _mm256_loadu_ps(g + j)));
    for (; j < L; ++j) gx[j] = ap[j] * g[j];
    return;
  }
  for (; j + 8 <= L; j += 8) {
    const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(mp + j));
    const __m256 t = _mm256_fmadd_ps(_mm256_loadu_ps(bp + j), d, _mm256_loadu_ps(dp + j));
    _mm256_storeu_ps(gx + j, _mm256_fmadd_ps(_mm256_loadu_ps(ap + j), _mm256_loadu_ps(g + j), t));
  }
  for (; j < L; ++j) gx[j] = std::fma(ap[j], g[j], std::fma(bp[j], x[j] - mp[j], dp[j]));
}
#endif

// Row dispatch: AVX2 for float rows of at least one vector when selected, else the reference.
template <typename T>
Sums stats_span(bool avx2, const T* x, int64_t n, double k) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2 && n >= 8) return stats_span_avx2(x, n, k);
#endif
  (void)avx2;
  return stats_span_cpu(x, n, k);
}
template <typename T>
void apply_span(bool avx2, const T* x, T* y, int64_t n, T mean, T scale, T bias) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2 && n >= 8) return apply_span_avx2(x, y, n, mean, scale, bias);
#endif
  (void)avx2;
  apply_span_cpu(x, y, n, mean, scale, bias);
}
template <typename T>
Sums bsums_span(bool avx2, const T* g, const T* x, int64_t n, double mean) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2 && n >= 8) return bsums_span_avx2(g, x, n, mean);
#endif
  (void)avx2;
  return bsums_span_cpu(g, x, n, mean);
}
template <typename T>
void bgrad_span(bool avx2, const T* g, const T* x, T* gx, int64_t n, T mean, T a, T b, T d) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2 && n >= 8) return bgrad_span_avx2(g, x, gx, n, mean, a, b, d);
#endif
  (void)avx2;
  bgrad_span_cpu(g, x, gx, n, mean, a, b, d);
}

template <typename Fn>
void run_pieces(int nth, int64_t pieces, Fn&& fn) {
  if (nth <= 1) {
    for (int64_t p = 0; p < pieces; ++p) fn(p);
    return;
  }
  cpu::ClaimPool::instance().run(nth, pieces, fn);
}

int threads_for(int64_t N, int64_t C, int64_t S) {
  return N * C * S >= kParallelN ? cpu::get_num_threads() : 1;
}

// Per-channel totals of row(r) (a Sums for row r, channel r % C) over the R = N*C rows, read
// in memory order; see the header for the piece split that keeps them bit-identical.
template <typename RowFn>
std::vector<Sums> reduce_rows(int nth, int64_t R, int64_t C, RowFn&& row) {
  const int64_t nb = std::min(R, kReducePieces);
  std::vector<Sums> part(static_cast<size_t>(nb * C));
  run_pieces(nth, nb, [&](int64_t j) {
    Sums* pj = part.data() + j * C;
    for (int64_t r = R * j / nb, r1 = R * (j + 1) / nb; r < r1; ++r) {
      const Sums s = row(r);
      pj[r % C].a += s.a;
      pj[r % C].b += s.b;
    }
  });
  std::vector<Sums> tot(static_cast<size_t>(C));
  for (int64_t j = 0; j < nb; ++j)
    for (int64_t c = 0; c < C; ++c) {
      tot[c].a += part[j * C + c].a;
      tot[c].b += part[j * C + c].b;
    }
  return tot;
}

// row(r) for each of the R rows, in memory order within each piece.
template <typename RowFn>
void for_rows(int nth, int64_t R, RowFn&& row) {
  const int64_t nb = nth > 1 ? std::min<int64_t>(R, kPiecesPerThread * nth) : 1;
  run_pieces(nth, nb, [&](int64_t j) {
    for (int64_t r = R * j / nb, r1 = R * (j + 1) / nb; r < r1; ++r) row(r);
  });
}

// Short rows: S < 8 values per row is less than one vector, so the float AVX2 path works
// across the L = C*S values of a sample instead (an MLP's [N, C] activations; along the rows
// this ran at ~0.5 GB/s, 10x behind PyTorch on 256x512). Per-channel values are expanded to
// per-position arrays of L floats.
template <typename T>
bool short_rows(bool avx2, int64_t S) {
  return std::is_same_v<T, float> && avx2 && S < 8;
}

template <typename T>
std::vector<T> per_position(const T* v, int64_t C, int64_t S) {
  std::vector<T> out(static_cast<size_t>(C * S));
  for (int64_t c = 0; c < C; ++c) std::fill_n(out.begin() + c * S, S, v[c]);
  return out;
}

#if EMBER_COMPILED_AVX2
// Per-channel totals of chunk_sums (g is null for the stats) over all N samples. Pieces are
// (sample block, chunk of kChunk positions: 8 KiB of accumulators, in L1); the sample blocks
// (a shape-only count) are added in order, so the result is bit-identical for any thread
// count.
constexpr int64_t kChunk = 512;

template <bool kGrad>
std::vector<Sums> column_sums(int nth, const float* g, const float* x, int64_t N, int64_t C,
                              int64_t S, const std::vector<double>& kd) {
  const int64_t L = C * S, nchunk = (L + kChunk - 1) / kChunk;
  // Sample blocks of at least 64 samples, at most 16, and at most 4 MiB of partial sums.
  int64_t nbn = std::clamp<int64_t>(N / 64, 1, kReducePieces);
  nbn = std::max<int64_t>(1, std::min(nbn, (int64_t{1} << 18) / std::max<int64_t>(L, 1)));
  std::vector<double> pa(static_cast<size_t>(nbn * L)), pb(pa.size());
  run_pieces(nth, nbn * nchunk, [&](int64_t p) {
    const int64_t jb = p / nchunk, j0 = (p % nchunk) * kChunk;
    const int64_t n0 = N * jb / nbn, n1 = N * (jb + 1) / nbn;
    chunk_sums<kGrad>(g ? g + j0 : nullptr, x + j0, L, n0, n1, std::min(kChunk, L - j0),
                      kd.data() + j0, pa.data() + jb * L + j0, pb.data() + jb * L + j0);
  });
  std::vector<Sums> tot(static_cast<size_t>(C));
  for (int64_t jb = 0; jb < nbn; ++jb)
    for (int64_t j = 0; j < L; ++j) {
      tot[j / S].a += pa[jb * L + j];
      tot[j / S].b += pb[jb * L + j];
    }
  return tot;
}
#endif

// Per-channel totals over all rows: the stats (g null; shift = k per channel) or the backward
// sums (shift = the saved mean), by columns for short float rows, else by rows.
template <typename T>
std::vector<Sums> channel_sums(bool avx2, int nth, const T* g, const T* x, int64_t N, int64_t C,
                               int64_t S, const T* shift) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (short_rows<T>(avx2, S)) {
      std::vector<double> kd(static_cast<size_t>(C * S));
      for (int64_t c = 0; c < C; ++c) std::fill_n(kd.begin() + c * S, S, double(shift[c]));
      return g ? column_sums<true>(nth, g, x, N, C, S, kd)
               : column_sums<false>(nth, nullptr, x, N, C, S, kd);
    }
#endif
  return reduce_rows(nth, N * C, C, [&](int64_t r) {
    const double k = double(shift[r % C]);
    return g ? bsums_span<T>(avx2, g + r * S, x + r * S, S, k)
             : stats_span<T>(avx2, x + r * S, S, k);
  });
}

// y = (x - mean) * scale + bias over all rows, per-channel coefficients.
template <typename T>
void apply_all(bool avx2, int nth, const T* x, T* y, int64_t N, int64_t C, int64_t S,
               const T* mean, const T* scale, const T* bias) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (short_rows<T>(avx2, S)) {
      const int64_t L = C * S;
      const std::vector<float> mp = per_position(mean, C, S), sp = per_position(scale, C, S),
                               bp = per_position(bias, C, S);
      for_rows(nth, N, [&](int64_t n) {
        apply_pos_avx2(x + n * L, y + n * L, L, mp.data(), sp.data(), bp.data());
      });
      return;
    }
#endif
  for_rows(nth, N * C, [&](int64_t r) {
    const int64_t c = r % C;
    apply_span<T>(avx2, x + r * S, y + r * S, S, mean[c], scale[c], bias[c]);
  });
}

// gx = a*g + b*(x - mean) + d over all rows (x null: gx = a*g), per-channel coefficients.
template <typename T>
void grad_all(bool avx2, int nth, const T* g, const T* x, T* gx, int64_t N, int64_t C, int64_t S,
              const T* mean, const T* a, const T* b, const T* d) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (short_rows<T>(avx2, S)) {
      const int64_t L = C * S;
      const std::vector<float> mp = per_position(mean, C, S), ap = per_position(a, C, S),
                               bp = per_position(b, C, S), dp = per_position(d, C, S);
      for_rows(nth, N, [&](int64_t n) {
        bgrad_pos_avx2(g + n * L, x ? x + n * L : nullptr, gx + n * L, L, mp.data(), ap.data(),
                       bp.data(), dp.data());
      });
      return;
    }
#endif
  for_rows(nth, N * C, [&](int64_t r) {
    const int64_t c = r % C, o = r * S;
    bgrad_span<T>(avx2, g + o, x ? x + o : nullptr, gx + o, S, mean[c], a[c], b[c], d[c]);
  });
}

template <typename T>
void fwd_train(const T* x, T* y, int64_t N, int64_t C, int64_t S, const T* w, const T* b,
               double eps, T* mean_out, T* var_out, T* invstd_out) {
  const bool avx2 = cpu::avx2_selected();
  const int nth = threads_for(N, C, S);
  const double n = double(N) * double(S);
  std::vector<T> k(C), mean(C), scale(C), bias(C);
  for (int64_t c = 0; c < C; ++c) k[c] = x[c * S];  // the shift: x[0, c, 0] (see the header)
  const std::vector<Sums> tot = channel_sums<T>(avx2, nth, nullptr, x, N, C, S, k.data());
  for (int64_t c = 0; c < C; ++c) {
    const double sa = tot[c].a, sb = tot[c].b;
    const double m = double(k[c]) + sa / n, var = std::max(0.0, (sb - sa * (sa / n)) / n);
    const double inv = 1.0 / std::sqrt(var + eps);
    mean_out[c] = T(m);
    var_out[c] = T(var);
    invstd_out[c] = T(inv);
    mean[c] = T(m);
    scale[c] = T(inv * (w ? double(w[c]) : 1.0));
    bias[c] = b ? b[c] : T(0);
  }
  apply_all<T>(avx2, nth, x, y, N, C, S, mean.data(), scale.data(), bias.data());
}

template <typename T>
void fwd_eval(const T* x, T* y, int64_t N, int64_t C, int64_t S, const T* rmean, const T* rvar,
              const T* w, const T* b, double eps) {
  std::vector<T> scale(C), bias(C);
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = T((1.0 / std::sqrt(double(rvar[c]) + eps)) * (w ? double(w[c]) : 1.0));
    bias[c] = b ? b[c] : T(0);
  }
  apply_all<T>(cpu::avx2_selected(), threads_for(N, C, S), x, y, N, C, S, rmean, scale.data(),
               bias.data());
}

template <typename T>
void bwd(const T* g, const T* x, int64_t N, int64_t C, int64_t S, const T* mean,
         const T* invstd, const T* w, bool train, T* gx, T* gw, T* gb) {
  const bool avx2 = cpu::avx2_selected();
  const int nth = threads_for(N, C, S);
  const double n = double(N) * double(S);
  std::vector<Sums> tot(static_cast<size_t>(C));
  if (train || gw || gb) tot = channel_sums<T>(avx2, nth, g, x, N, C, S, mean);
  // gx = a*g + b*(x - mean) + d per channel (see the header).
  std::vector<T> ca(C), cb(C), cd(C);
  for (int64_t c = 0; c < C; ++c) {
    const double sg = tot[c].a, sgx = tot[c].b;
    const double inv = double(invstd[c]), a = inv * (w ? double(w[c]) : 1.0);
    if (gw) gw[c] = T(sgx * inv);
    if (gb) gb[c] = T(sg);
    ca[c] = T(a);
    cb[c] = T(train ? -a * inv * inv * sgx / n : 0.0);
    cd[c] = T(train ? -a * sg / n : 0.0);
  }
  if (gx)  // the eval gradient does not read x
    grad_all<T>(avx2, nth, g, train ? x : nullptr, gx, N, C, S, mean, ca.data(), cb.data(),
                cd.data());
}
}  // namespace

// ---- entry points -------------------------------------------------------------------------
void batchnorm_fwd_train(const float* x, float* y, int64_t N, int64_t C, int64_t S,
                         const float* w, const float* b, double eps, float* mean, float* var,
                         float* invstd) {
  fwd_train(x, y, N, C, S, w, b, eps, mean, var, invstd);
}
void batchnorm_fwd_train(const double* x, double* y, int64_t N, int64_t C, int64_t S,
                         const double* w, const double* b, double eps, double* mean, double* var,
                         double* invstd) {
  fwd_train(x, y, N, C, S, w, b, eps, mean, var, invstd);
}
void batchnorm_fwd_eval(const float* x, float* y, int64_t N, int64_t C, int64_t S,
                        const float* rmean, const float* rvar, const float* w, const float* b,
                        double eps) {
  fwd_eval(x, y, N, C, S, rmean, rvar, w, b, eps);
}
void batchnorm_fwd_eval(const double* x, double* y, int64_t N, int64_t C, int64_t S,
                        const double* rmean, const double* rvar, const double* w,
                        const double* b, double eps) {
  fwd_eval(x, y, N, C, S, rmean, rvar, w, b, eps);
}
void batchnorm_bwd(const float* g, const float* x, int64_t N, int64_t C, int64_t S,
                   const float* mean, const float* invstd, const float* w, bool train, float* gx,
                   float* gw, float* gb) {
  bwd(g, x, N, C, S, mean, invstd, w, train, gx, gw, gb);
}
void batchnorm_bwd(const double* g, const double* x, int64_t N, int64_t C, int64_t S,
                   const double* mean, const double* invstd, const double* w, bool train,
                   double* gx, double* gw, double* gb) {
  bwd(g, x, N, C, S, mean, invstd, w, train, gx, gw, gb);
}

}  // namespace ember
