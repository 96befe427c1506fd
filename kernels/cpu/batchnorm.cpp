// batchnorm.cpp -- batch-norm forward (training and eval) and backward on the CPU.
//
// Layout: x viewed as C-contiguous [N, C, S] (S = product of the spatial dims, 1 for [N, C]);
// channel c of sample n is the row x + (n*C + c)*S. Per-channel vectors ([C]) are T.
//
// Training forward, per channel over its n = N*S values:
//   stats   k = x[0, c, 0] (a shift taken from the data); D = sum(x - k), Q = sum((x - k)^2)
//           in double (the AVX2 path forms x - k in float and adds up to 32 values per float
//           lane before adding the partial sums into double, see kFlush);
//           mean = k + D/n, var = max(0, (Q - D*D/n) / n) (biased).
//           The shift makes a constant channel give D = Q = 0, so var is exactly 0 and mean
//           exactly the constant (no E[x^2] - E[x]^2 cancellation); with k one of the values,
//           |mean - k| is a few standard deviations and the remaining cancellation costs a
//           few double ulps, far below float32 (and below gradcheck's needs in float64).
//   apply   y = (x - mean) * scale + bias_c, scale = invstd * w, invstd = 1/sqrt(var + eps).
//           Subtracting the mean first (instead of x*scale + shift) keeps y exact for a
//           constant channel and avoids a large-mean cancellation.
//   Reads of x: 2 (stats, apply) + 1 write of y. When a channel is one piece of work (C large
//   enough, see below) its apply pass runs right after its stats pass, so for channels of up
//   to ~1 MiB the second read is served from L2 and DRAM sees 1 read + 1 write.
// Eval forward: the apply pass only, from running_mean / running_var (1 read + 1 write).
// Backward, per channel (training): sg = sum(g), sgx = sum(g * (x - mean)) in double, with the
//   same float partial sums as the stats on the AVX2 path (1 read of g and x), then
//   gx = a*g + b*(x - mean) + d with a = invstd*w, b = -a*invstd*sgx*invstd/n, d = -a*sg/n,
//   i.e. invstd*w*(g - mean(g) - xhat*mean(g*xhat)) (2nd read of g and x, 1 write).
//   grad_weight = sgx*invstd, grad_bias = sg. Eval: gx = a*g, reading only g (1 read + 1
//   write); the reduction pass runs only when grad_weight or grad_bias are wanted.
//
// Prefetch: the N rows of one channel are C*S elements apart, so with short rows (a 14x14 map
// is 784 B) the hardware prefetchers see no stream; the passes prefetch the input rows (reads)
// and output rows (for ownership) a few rows ahead. This took the 64x256x14x14 float32
// forward from 9.2 to 3.1 ms on one thread (bench/bench_batchnorm.py).
//
// Threads (claim pool, pool.h): pieces are (channel, block of samples). C >= 16: one piece per
// channel (stats + apply fused per piece, see above), claimed in the order 0, 8, 16, ..., 1,
// 9, ... so concurrent pieces never share a cache line at a channel boundary. Smaller C: each channel is cut into
// nb = min(N, ceil(16 / C)) sample blocks; partial sums go to a [C, nb] scratch and are added in
// block order, then the apply pass runs over the same pieces. nb depends only on the shape, so
// results are bit-identical for any thread count.
//
// Variants: <step>_cpu<T> scalar references (float, double; sums in double); AVX2/FMA float
// paths along S (8 floats per vector, sums converted to 4-double lanes). double runs the
// reference (it exists for gradcheck). Rows shorter than a vector fall to the scalar tail.
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
constexpr int64_t kFusedC = 16;                   // C >= this: one piece per channel

struct Sums {
  double a = 0, b = 0;
};

// The rows of one channel lie C*S elements apart, so short rows (S*4 bytes of a 14x14 map is
// 784 B) give the hardware prefetchers, which follow one 4 KiB page, nothing to stream: each
// row would start with a full DRAM latency. The reduction passes (the ones that read from DRAM)
// therefore prefetch the row `dist` rows ahead (about 4 KiB of lookahead, first 4 KiB of a row).
struct RowPrefetch {
  int64_t dist, lines, stride;  // rows ahead, cache lines per row, elements between rows
  template <typename T>
  RowPrefetch(int64_t C, int64_t S, const T*) {
    const int64_t bytes = S * int64_t(sizeof(T));
    dist = std::clamp<int64_t>(4096 / std::max<int64_t>(bytes, 1), 1, 8);
    lines = (std::min<int64_t>(bytes, 4096) + 63) / 64;
    stride = C * S;
  }
  template <typename T>
  void operator()(const T* row, int64_t n, int64_t n1) const {
    if (n + dist >= n1) return;
    const char* p = reinterpret_cast<const char*>(row + dist * stride);
    for (int64_t l = 0; l < lines; ++l) __builtin_prefetch(p + 64 * l, 0, 3);
  }
  // The output rows of the element-wise passes: their lines are read for ownership before
  // being written, the same latency problem (prefetch with intent to write).
  template <typename T>
  void write(T* row, int64_t n, int64_t n1) const {
    if (n + dist >= n1) return;
    char* p = reinterpret_cast<char*>(row + dist * stride);
    for (int64_t l = 0; l < lines; ++l) __builtin_prefetch(p + 64 * l, 1, 3);
  }
};

// ---- scalar references ----------------------------------------------------------------------
// stats: a = sum(x - k), b = sum((x - k)^2) over rows n0..n1 of channel c.
template <typename T>
Sums stats_rows_cpu(const T* x, int64_t C, int64_t S, int64_t c, int64_t n0, int64_t n1,
                    double k) {
  Sums s;
  const RowPrefetch pf(C, S, x);
  for (int64_t n = n0; n < n1; ++n) {
    const T* r = x + (n * C + c) * S;
    pf(r, n, n1);
    for (int64_t i = 0; i < S; ++i) {
      const double d = double(r[i]) - k;
      s.a += d;
      s.b += d * d;
    }
  }
  return s;
}

template <typename T>
void apply_rows_cpu(const T* x, T* y, int64_t C, int64_t S, int64_t c, int64_t n0, int64_t n1,
                    T mean, T scale, T bias) {
  const RowPrefetch pf(C, S, x);
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t o = (n * C + c) * S;
    pf.write(y + o, n, n1);
    for (int64_t i = 0; i < S; ++i) y[o + i] = (x[o + i] - mean) * scale + bias;
  }
}

// backward sums: a = sum(g), b = sum(g * (x - mean)).
template <typename T>
Sums bsums_rows_cpu(const T* g, const T* x, int64_t C, int64_t S, int64_t c, int64_t n0,
                    int64_t n1, double mean) {
  Sums s;
  const RowPrefetch pf(C, S, x);
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t o = (n * C + c) * S;
    pf(x + o, n, n1);
    pf(g + o, n, n1);
    for (int64_t i = 0; i < S; ++i) {
      const double gi = double(g[o + i]);
      s.a += gi;
      s.b += gi * (double(x[o + i]) - mean);
    }
  }
  return s;
}

// gx = a*g + b*(x - mean) + d; x == nullptr (eval) means gx = a*g without reading x.
template <typename T>
void bgrad_rows_cpu(const T* g, const T* x, T* gx, int64_t C, int64_t S, int64_t c, int64_t n0,
                    int64_t n1, T mean, T a, T b, T d) {
  const RowPrefetch pf(C, S, g);
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t o = (n * C + c) * S;
    pf.write(gx + o, n, n1);
    pf(g + o, n, n1);
    if (!x) {  // eval: gx = a*g, x not read
      for (int64_t i = 0; i < S; ++i) gx[o + i] = a * g[o + i];
      continue;
    }
    pf(x + o, n, n1);
    for (int64_t i = 0; i < S; ++i) gx[o + i] = a * g[o + i] + (b * (x[o + i] - mean) + d);
  }
}

// ---- AVX2 (float) -------------------------------------------------------------------------
#if EMBER_COMPILED_AVX2
EMBER_AVX2 inline double hsum(__m256d v) {
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// Float partial sums, flushed to double: the converts to double (a cvtps2pd and an extract per
// 4 lanes) were the bottleneck of these passes (port 5), holding them to ~13 GB/s when x is in
// L3. Each float lane now sums at most kFlush / 32 = 32 values before its total is added into
// the double accumulators, so the float error stays a few ulps of a 32-term partial sum.
constexpr int64_t kFlush = 1024;

EMBER_AVX2 inline void flush(__m256 f, __m256d* acc) {
  *acc = _mm256_add_pd(*acc, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
  *acc = _mm256_add_pd(*acc, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
}

EMBER_AVX2 Sums stats_rows_avx2(const float* x, int64_t C, int64_t S, int64_t c, int64_t n0,
                                int64_t n1, double k) {
  // k is x[c*S] (a float), so x - k is exact for a constant channel.
  const __m256 kv = _mm256_set1_ps(float(k));
  __m256d sa = _mm256_setzero_pd(), sb = sa;
  double ta = 0, tb = 0;
  const RowPrefetch pf(C, S, x);
  for (int64_t n = n0; n < n1; ++n) {
    const float* r = x + (n * C + c) * S;
    pf(r, n, n1);
    int64_t i = 0;
    while (i + 8 <= S) {
      const int64_t e = std::min(S, i + kFlush);
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      __m256 q0 = s0, q1 = s0, q2 = s0, q3 = s0;
      for (; i + 32 <= e; i += 32) {
        const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(r + i), kv);
        const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(r + i + 8), kv);
        const __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(r + i + 16), kv);
        const __m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(r + i + 24), kv);
        s0 = _mm256_add_ps(s0, d0);
        s1 = _mm256_add_ps(s1, d1);
        s2 = _mm256_add_ps(s2, d2);
        s3 = _mm256_add_ps(s3, d3);
        q0 = _mm256_fmadd_ps(d0, d0, q0);
        q1 = _mm256_fmadd_ps(d1, d1, q1);
        q2 = _mm256_fmadd_ps(d2, d2, q2);
        q3 = _mm256_fmadd_ps(d3, d3, q3);
      }
      for (; i + 8 <= e; i += 8) {
        const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(r + i), kv);
        s0 = _mm256_add_ps(s0, d0);
        q0 = _mm256_fmadd_ps(d0, d0, q0);
      }
      flush(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)), &sa);
      flush(_mm256_add_ps(_mm256_add_ps(q0, q1), _mm256_add_ps(q2, q3)), &sb);
    }
    for (; i < S; ++i) {
      const double d = double(r[i]) - k;
      ta += d;
      tb += d * d;
    }
  }
  Sums s;
  s.a = hsum(sa) + ta;
  s.b = hsum(sb) + tb;
  return s;
}

EMBER_AVX2 void apply_rows_avx2(const float* x, float* y, int64_t C, int64_t S, int64_t c,
                                int64_t n0, int64_t n1, float mean, float scale, float bias) {
  const __m256 m = _mm256_set1_ps(mean), sc = _mm256_set1_ps(scale), bv = _mm256_set1_ps(bias);
  const RowPrefetch pf(C, S, x);
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t o = (n * C + c) * S;
    const float* xr = x + o;
    float* yr = y + o;
    pf.write(yr, n, n1);
    int64_t i = 0;
    for (; i + 16 <= S; i += 16) {
      const __m256 v0 = _mm256_sub_ps(_mm256_loadu_ps(xr + i), m);
      const __m256 v1 = _mm256_sub_ps(_mm256_loadu_ps(xr + i + 8), m);
      _mm256_storeu_ps(yr + i, _mm256_fmadd_ps(v0, sc, bv));
      _mm256_storeu_ps(yr + i + 8, _mm256_fmadd_ps(v1, sc, bv));
    }
    for (; i + 8 <= S; i += 8)
      _mm256_storeu_ps(yr + i, _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + i), m), sc, bv));
    for (; i < S; ++i) yr[i] = std::fma(xr[i] - mean, scale, bias);
  }
}

EMBER_AVX2 Sums bsums_rows_avx2(const float* g, const float* x, int64_t C, int64_t S, int64_t c,
                                int64_t n0, int64_t n1, double mean) {
  // mean is the float the forward stored, so x - mean matches the reference's double math
  // up to the rounding of the difference itself.
  const __m256 mv = _mm256_set1_ps(float(mean));
  __m256d sa = _mm256_setzero_pd(), sb = sa;
  double ta = 0, tb = 0;
  const RowPrefetch pf(C, S, x);
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t o = (n * C + c) * S;
    const float* gr = g + o;
    const float* xr = x + o;
    pf(xr, n, n1);
    pf(gr, n, n1);
    int64_t i = 0;
    while (i + 8 <= S) {
      const int64_t e = std::min(S, i + kFlush);
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      __m256 q0 = s0, q1 = s0, q2 = s0, q3 = s0;
      for (; i + 32 <= e; i += 32) {
        const __m256 g0 = _mm256_loadu_ps(gr + i), g1 = _mm256_loadu_ps(gr + i + 8);
        const __m256 g2 = _mm256_loadu_ps(gr + i + 16), g3 = _mm256_loadu_ps(gr + i + 24);
        s0 = _mm256_add_ps(s0, g0);
        s1 = _mm256_add_ps(s1, g1);
        s2 = _mm256_add_ps(s2, g2);
        s3 = _mm256_add_ps(s3, g3);
        q0 = _mm256_fmadd_ps(g0, _mm256_sub_ps(_mm256_loadu_ps(xr + i), mv), q0);
        q1 = _mm256_fmadd_ps(g1, _mm256_sub_ps(_mm256_loadu_ps(xr + i + 8), mv), q1);
        q2 = _mm256_fmadd_ps(g2, _mm256_sub_ps(_mm256_loadu_ps(xr + i + 16), mv), q2);
        q3 = _mm256_fmadd_ps(g3, _mm256_sub_ps(_mm256_loadu_ps(xr + i + 24), mv), q3);
      }
      for (; i + 8 <= e; i += 8) {
        const __m256 g0 = _mm256_loadu_ps(gr + i);
        s0 = _mm256_add_ps(s0, g0);
        q0 = _mm256_fmadd_ps(g0, _mm256_sub_ps(_mm256_loadu_ps(xr + i), mv), q0);
      }
      flush(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)), &sa);
      flush(_mm256_add_ps(_mm256_add_ps(q0, q1), _mm256_add_ps(q2, q3)), &sb);
    }
    for (; i < S; ++i) {
      const double gi = double(gr[i]);
      ta += gi;
      tb += gi * (double(xr[i]) - mean);
    }
  }
  Sums s;
  s.a = hsum(sa) + ta;
  s.b = hsum(sb) + tb;
  return s;
}

EMBER_AVX2 void bgrad_rows_avx2(const float* g, const float* x, float* gx, int64_t C, int64_t S,
                                int64_t c, int64_t n0, int64_t n1, float mean, float a, float b,
                                float d) {
  const __m256 m = _mm256_set1_ps(mean), av = _mm256_set1_ps(a), bv = _mm256_set1_ps(b),
               dv = _mm256_set1_ps(d);
  const RowPrefetch pf(C, S, g);
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t o = (n * C + c) * S;
    pf.write(gx + o, n, n1);
    pf(g + o, n, n1);
    int64_t i = 0;
    if (!x) {  // eval: gx = a*g, x not read
      for (; i + 8 <= S; i += 8)
        _mm256_storeu_ps(gx + o + i, _mm256_mul_ps(av, _mm256_loadu_ps(g + o + i)));
      for (; i < S; ++i) gx[o + i] = a * g[o + i];
      continue;
    }
    pf(x + o, n, n1);
    for (; i + 8 <= S; i += 8) {
      const __m256 t = _mm256_fmadd_ps(bv, _mm256_sub_ps(_mm256_loadu_ps(x + o + i), m), dv);
      _mm256_storeu_ps(gx + o + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(g + o + i), t));
    }
    for (; i < S; ++i)
      gx[o + i] = std::fma(a, g[o + i], std::fma(b, x[o + i] - mean, d));
  }
}
#endif

// Row-range dispatch: AVX2 for float when selected, else the reference.
template <typename T>
Sums stats_rows(bool avx2, const T* x, int64_t C, int64_t S, int64_t c, int64_t n0, int64_t n1,
                double k) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return stats_rows_avx2(x, C, S, c, n0, n1, k);
#endif
  (void)avx2;
  return stats_rows_cpu(x, C, S, c, n0, n1, k);
}
template <typename T>
void apply_rows(bool avx2, const T* x, T* y, int64_t C, int64_t S, int64_t c, int64_t n0,
                int64_t n1, T mean, T scale, T bias) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return apply_rows_avx2(x, y, C, S, c, n0, n1, mean, scale, bias);
#endif
  (void)avx2;
  apply_rows_cpu(x, y, C, S, c, n0, n1, mean, scale, bias);
}
template <typename T>
Sums bsums_rows(bool avx2, const T* g, const T* x, int64_t C, int64_t S, int64_t c, int64_t n0,
                int64_t n1, double mean) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return bsums_rows_avx2(g, x, C, S, c, n0, n1, mean);
#endif
  (void)avx2;
  return bsums_rows_cpu(g, x, C, S, c, n0, n1, mean);
}
template <typename T>
void bgrad_rows(bool avx2, const T* g, const T* x, T* gx, int64_t C, int64_t S, int64_t c,
                int64_t n0, int64_t n1, T mean, T a, T b, T d) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return bgrad_rows_avx2(g, x, gx, C, S, c, n0, n1, mean, a, b, d);
#endif
  (void)avx2;
  bgrad_rows_cpu(g, x, gx, C, S, c, n0, n1, mean, a, b, d);
}

// Work split: nb sample blocks per channel (shape-only, see header); block j of channel c is
// samples [n0, n1).
struct Split {
  int64_t N, C, nb;
  int nth;
  void block(int64_t j, int64_t* n0, int64_t* n1) const {
    *n0 = N * j / nb;
    *n1 = N * (j + 1) / nb;
  }
};

Split make_split(int64_t N, int64_t C, int64_t S) {
  Split s;
  s.N = N;
  s.C = C;
  s.nb = C >= kFusedC ? 1 : std::max<int64_t>(1, std::min<int64_t>(N, (kFusedC + C - 1) / C));
  s.nth = N * C * S >= kParallelN ? cpu::get_num_threads() : 1;
  return s;
}

template <typename Fn>
void run_pieces(int nth, int64_t pieces, Fn&& fn) {
  if (nth <= 1) {
    for (int64_t p = 0; p < pieces; ++p) fn(p);
    return;
  }
  cpu::ClaimPool::instance().run(nth, pieces, fn);
}

// Piece p -> channel, visiting channels in the order 0, K, 2K, ..., 1, K+1, ... so that the
// pieces threads claim at the same time are K channels apart: adjacent channels share a cache
// line at their boundaries whenever S*sizeof(T) is not a multiple of 64 (14x14 maps), and two
// threads writing them at once would bounce that line between cores.
constexpr int64_t kSpread = 8;
inline int64_t spread_channel(int64_t p, int64_t C) {
  for (int64_t r = 0; r < kSpread; ++r) {
    const int64_t cnt = (C - r + kSpread - 1) / kSpread;  // channels with c % K == r
    if (p < cnt) return r + p * kSpread;
    p -= cnt;
  }
  return p;  // not reached for p < C
}

struct ChannelStats {
  double mean, var;
};

inline ChannelStats finish_stats(double k, double sa, double sb, double n) {
  ChannelStats st;
  st.mean = k + sa / n;
  st.var = std::max(0.0, (sb - sa * (sa / n)) / n);
  return st;
}

template <typename T>
void fwd_train(const T* x, T* y, int64_t N, int64_t C, int64_t S, const T* w, const T* b,
               double eps, T* mean_out, T* var_out, T* invstd_out) {
  const bool avx2 = cpu::avx2_selected();
  const Split sp = make_split(N, C, S);
  const double n = double(N) * double(S);
  auto coeffs = [&](int64_t c, const ChannelStats& st) {
    const double inv = 1.0 / std::sqrt(st.var + eps);
    mean_out[c] = T(st.mean);
    var_out[c] = T(st.var);
    invstd_out[c] = T(inv);
  };
  auto apply = [&](int64_t c, int64_t n0, int64_t n1, double mean, double inv) {
    const double sc = inv * (w ? double(w[c]) : 1.0);
    apply_rows<T>(avx2, x, y, C, S, c, n0, n1, T(mean), T(sc), b ? b[c] : T(0));
  };
  if (sp.nb == 1) {
    run_pieces(sp.nth, C, [&](int64_t p) {
      const int64_t c = sp.nth > 1 ? spread_channel(p, C) : p;
      const double k = double(x[c * S]);
      const Sums s = stats_rows<T>(avx2, x, C, S, c, 0, N, k);
      const ChannelStats st = finish_stats(k, s.a, s.b, n);
      coeffs(c, st);
      apply(c, 0, N, st.mean, 1.0 / std::sqrt(st.var + eps));
    });
    return;
  }
  std::vector<Sums> part(static_cast<size_t>(C * sp.nb));
  run_pieces(sp.nth, C * sp.nb, [&](int64_t p) {
    const int64_t c = p / sp.nb;
    int64_t n0, n1;
    sp.block(p % sp.nb, &n0, &n1);
    part[p] = stats_rows<T>(avx2, x, C, S, c, n0, n1, double(x[c * S]));
  });
  std::vector<double> mean(C), inv(C);
  for (int64_t c = 0; c < C; ++c) {
    double sa = 0, sb = 0;
    for (int64_t j = 0; j < sp.nb; ++j) {
      sa += part[c * sp.nb + j].a;
      sb += part[c * sp.nb + j].b;
    }
    const ChannelStats st = finish_stats(double(x[c * S]), sa, sb, n);
    coeffs(c, st);
    mean[c] = st.mean;
    inv[c] = 1.0 / std::sqrt(st.var + eps);
  }
  run_pieces(sp.nth, C * sp.nb, [&](int64_t p) {
    const int64_t c = p / sp.nb;
    int64_t n0, n1;
    sp.block(p % sp.nb, &n0, &n1);
    apply(c, n0, n1, mean[c], inv[c]);
  });
}

template <typename T>
void fwd_eval(const T* x, T* y, int64_t N, int64_t C, int64_t S, const T* rmean, const T* rvar,
              const T* w, const T* b, double eps) {
  const bool avx2 = cpu::avx2_selected();
  const Split sp = make_split(N, C, S);
  run_pieces(sp.nth, C * sp.nb, [&](int64_t p) {
    const int64_t c = p / sp.nb;
    int64_t n0, n1;
    sp.block(p % sp.nb, &n0, &n1);
    const double inv = 1.0 / std::sqrt(double(rvar[c]) + eps);
    const double sc = inv * (w ? double(w[c]) : 1.0);
    apply_rows<T>(avx2, x, y, C, S, c, n0, n1, rmean[c], T(sc), b ? b[c] : T(0));
  });
}

template <typename T>
void bwd(const T* g, const T* x, int64_t N, int64_t C, int64_t S, const T* mean,
         const T* invstd, const T* w, bool train, T* gx, T* gw, T* gb) {
  const bool avx2 = cpu::avx2_selected();
  const Split sp = make_split(N, C, S);
  const double n = double(N) * double(S);
  const bool need_sums = train || gw || gb;
  // Coefficients of gx = a*g + b*(x - mean) + d for channel c from its sums; writes gw, gb.
  auto finish = [&](int64_t c, double sg, double sgx, double* a, double* bb, double* d) {
    const double inv = double(invstd[c]), wc = w ? double(w[c]) : 1.0;
    if (gw) gw[c] = T(sgx * inv);
    if (gb) gb[c] = T(sg);
    *a = inv * wc;
    *bb = train ? -(*a) * inv * inv * sgx / n : 0.0;
    *d = train ? -(*a) * sg / n : 0.0;
  };
  auto grad = [&](int64_t c, int64_t n0, int64_t n1, double a, double bb, double d) {
    bgrad_rows<T>(avx2, g, train ? x : nullptr, gx, C, S, c, n0, n1, mean[c], T(a), T(bb), T(d));
  };
  if (sp.nb == 1) {
    run_pieces(sp.nth, C, [&](int64_t p) {
      const int64_t c = sp.nth > 1 ? spread_channel(p, C) : p;
      Sums s;
      if (need_sums) s = bsums_rows<T>(avx2, g, x, C, S, c, 0, N, double(mean[c]));
      double a, bb, d;
      finish(c, s.a, s.b, &a, &bb, &d);
      if (gx) grad(c, 0, N, a, bb, d);
    });
    return;
  }
  std::vector<Sums> part(static_cast<size_t>(C * sp.nb));
  if (need_sums)
    run_pieces(sp.nth, C * sp.nb, [&](int64_t p) {
      const int64_t c = p / sp.nb;
      int64_t n0, n1;
      sp.block(p % sp.nb, &n0, &n1);
      part[p] = bsums_rows<T>(avx2, g, x, C, S, c, n0, n1, double(mean[c]));
    });
  std::vector<double> ca(C), cb(C), cd(C);
  for (int64_t c = 0; c < C; ++c) {
    double sa = 0, sb = 0;
    for (int64_t j = 0; j < sp.nb; ++j) {
      sa += part[c * sp.nb + j].a;
      sb += part[c * sp.nb + j].b;
    }
    finish(c, sa, sb, &ca[c], &cb[c], &cd[c]);
  }
  if (gx)
    run_pieces(sp.nth, C * sp.nb, [&](int64_t p) {
      const int64_t c = p / sp.nb;
      int64_t n0, n1;
      sp.block(p % sp.nb, &n0, &n1);
      grad(c, n0, n1, ca[c], cb[c], cd[c]);
    });
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
