// softmax.cpp -- softmax / log-softmax forward and backward, and cross-entropy fused with
// log-softmax, over the last dimension of a C-contiguous [rows, n] array, on the CPU.
//
// Row statistics (every op here starts with them): m = max(x), S = sum(exp(x - m)), and the
// log-sum ls = log(S) in [0, log n], so log-sum-exp(x) = m + ls. Keeping m and ls apart (instead
// of one lse) matters in float32: x - m is exact for x near m, then (x - m) - ls loses nothing,
// whereas x - lse rounds lse to the precision of |x| (logits near 1000: errors of 3e-5).
//   AVX2 (cross-entropy): ONE pass, the online max+sum: per lane a running max m and a sum s
//   in double; a block of 32 floats first takes its own max, and only when that exceeds a
//   lane's m is s rescaled by exp(m - m_new) (rare: the lanes start at the max of the row's
//   first kPrefixMax values), so the pass costs one exp per element. The 32 exps of a block are
//   added in float (4 terms per lane) and then into the double sums, so a 32000-long row sums
//   with double accuracy at float speed. The start is floored at -FLT_MAX (not -inf): a lane
//   that sees only -inf keeps s = 0 instead of exp(-inf + inf) = NaN, and a row of only -inf
//   ends with S = 0, i.e. NaN results, as PyTorch gives.
//   +inf or NaN in a row make that row NaN (as PyTorch).
//   Scalar reference (float and double; double is the gradcheck path): max, then sum.
//
// softmax fwd:      y = exp(x - m) / S   (AVX2: a max pass, an exp pass storing exp(x - m)
//                   into y and summing, a scaling pass over y: still one exp per element,
//                   where the online pass + exp(x - m) / S would take two)
// log-softmax fwd:  y = (x - m) - ls     (AVX2: the same three passes -- max; y = x - m
//                   stored while summing exp(x - m); y -= ls in cache. The online pass then a
//                   store-only pass took 1.4x as long: 8192x4096 43 -> 30 ms, 1 thread, as the
//                   stores then no longer overlap the exps)
// softmax bwd:      gx = y * (g - sum(g * y))      (pass 1 the dot, pass 2 gx)
// log-softmax bwd:  gx = g - exp(y) * sum(g)
// Both passes of a row run back to back, so rows up to L2 size (~256k floats) are read from
// DRAM once: compulsory traffic is read x + write y (fwd), read y, g + write gx (bwd). A
// large gx (here and in cross-entropy's backward) is streamed to DRAM (kStreamBytes). The
// AVX2 backward passes end rows with masked vectors, not scalar code: every value of a row
// takes the lanes' arithmetic wherever the stream starts.
//
// Cross-entropy (class-index targets t, class weights w (or 1), smoothing s, C classes,
// W = sum(w)), the loss of row i, PyTorch's definition:
//   loss_i = (1 - s) * w_t * (lse - x_t) + (s / C) * sum_c w_c * (lse - x_c)
//          = (1 - s) * w_t * (ls + m - x_t) + (s / C) * (W * (ls + m - k) - sum_c w_c (x_c - k))
//   (k = a finite value of the row, a shift that keeps the weighted sum free of cancellation;
//   it is accumulated in the same pass only when s > 0). Ignored rows (t == ignore_index) give
//   loss 0 and are not read. The forward writes loss_i and the row statistics (m, ls) -- the
//   only thing the backward needs; the reduction ('mean' divides by sum of w_t over
//   non-ignored rows) is done by the caller, which passes the backward one scale per row:
//   gx_ic = gi * ((1 - s) * w_t * (p_c - [c == t]) + (s / C) * (W * p_c - w_c)),
//   p_c = exp((x_c - m) - ls) recomputed from the logits: one read of x and one write of gx.
//
// exp: exp256_le88_ps (vexp.h) on 8 lanes -- every argument here is x - max <= 0 (or a
// log-probability); it costs 17 vector ops to exp256_ps's 24, which made the AVX2 passes
// 17-27% faster (EMBER_NO_AVX512, 1 thread: softmax 8192x4096 27.7 -> 22.3 ms, cross-entropy
// 512x32000 8.8 -> 6.9 ms; they were exp-bound, not bandwidth-bound).
// AVX-512 (where the CPU has it and EMBER_NO_AVX512 is unset): the exp passes of softmax fwd,
// log-softmax bwd and the cross-entropy gradient run on 16 lanes (exp512_ps); the online
// max+sum pass stays on 8.
//
// Threads (claim pool): pieces are blocks of whole rows (~16k elements each); rows are
// independent, so results do not depend on the thread count.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "kernels/cpu/common.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/vexp.h"
#include "kernels/kernels.h"

namespace ember {
namespace {
constexpr int64_t kParallelN = int64_t{1} << 15;  // elements; below this, one thread
constexpr int64_t kPieceN = int64_t{1} << 14;     // elements per piece (whole rows)
// The online max+sum pass starts its lanes at the max of the row's first kPrefixMax values
// (read again from L1 by the pass): from -FLT_MAX, a lane's max grew in most 32-value blocks
// of a 1024-long row, each growth costing an exp and a rescale of the double sums. 4096x1024
// cross-entropy forward, 1 thread: 2.82-2.94 -> 2.43-2.54 ms (512x32000: 9.3 -> 8.9 ms).
constexpr int64_t kPrefixMax = 1024;
// Gradients (gx) of at least kStreamBytes are written with non-temporal stores (store_row256,
// store_row512; softmax bwd on any rows, the exp passes -- log-softmax bwd, cross-entropy
// bwd -- on rows of at least kStreamRowExp). Alternated builds, median of 10 rounds, time
// with streaming over without, 1 / 2 threads: softmax bwd 8192x4096 0.75 / 0.84, 512x32000
// 0.69 / 0.82, 12288x1024 0.81 / 0.80; log-softmax bwd 8192x4096 0.99 / 0.84, 4096x2048
// 0.85 / 0.85; cross-entropy bwd 512x32000 0.84 / 0.76, 2048x8192 0.85. With 1024-long rows
// the exp passes lost on 1 thread (16384x1024: 1.21, 1.22); 4096x1024 (16 MiB, in L3 across
// calls) lost up to 1.9x.
constexpr int64_t kStreamBytes = int64_t{32} << 20;
constexpr int64_t kStreamRowExp = 2048;

struct RowStats {
  double m = 0;   // max
  double s = 0;   // sum(exp(x - m))
  double ls = 0;  // log(s)
  double wx = 0;  // sum_c w_c * (x_c - k) (cross-entropy smoothing only)
};

// ---- scalar references ----------------------------------------------------------------------
template <typename T>
T row_max(const T* x, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < n; ++i)
    if (x[i] > m || x[i] != x[i]) m = x[i];  // a NaN sticks (nothing compares above it)
  return m;
}

template <typename T>
RowStats row_stats_cpu(const T* x, int64_t n, const T* w, bool want_wx, double k) {
  RowStats st;
  const T m = row_max(x, n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(std::exp(x[i] - m));
  st.m = double(m);
  st.s = s;
  st.ls = std::log(s);
  if (want_wx) {
    double a = 0;
    for (int64_t i = 0; i < n; ++i) a += (w ? double(w[i]) : 1.0) * (double(x[i]) - k);
    st.wx = a;
  }
  return st;
}

template <typename T>
void softmax_row_cpu(const T* x, T* y, int64_t n, bool log) {
  const RowStats st = row_stats_cpu<T>(x, n, nullptr, false, 0);
  const T m = T(st.m), ls = T(st.ls);
  if (log) {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) - ls;
  } else {
    const T inv = T(1.0 / st.s);
    for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i] - m) * inv;
  }
}

template <typename T>
void softmax_bwd_row_cpu(const T* y, const T* g, T* gx, int64_t n, bool log) {
  double s = 0;
  if (log) {
    for (int64_t i = 0; i < n; ++i) s += double(g[i]);
    const T sv = T(s);
    for (int64_t i = 0; i < n; ++i) gx[i] = g[i] - std::exp(y[i]) * sv;
  } else {
    for (int64_t i = 0; i < n; ++i) s += double(g[i]) * double(y[i]);
    const T sv = T(s);
    for (int64_t i = 0; i < n; ++i) gx[i] = y[i] * (g[i] - sv);
  }
}

template <typename T>
void ce_grad_row_cpu(const T* x, T* gx, int64_t n, const T* w, T m, T ls, T a, T b) {
  for (int64_t i = 0; i < n; ++i) {
    const T p = std::exp((x[i] - m) - ls);
    gx[i] = a * p - (w ? b * w[i] : b);
  }
}

// ---- AVX2 (float) -------------------------------------------------------------------------
#if EMBER_COMPILED_AVX2
EMBER_AVX2 inline double hsum_pd(__m256d v) {
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// Row tails: masked loads, partial stores by cpu::store_first (not VEX masked stores, which
// are microcoded on AMD Zen; see common.h).
using cpu::tail_mask;

EMBER_AVX2 inline void add_pd8(__m256d* lo, __m256d* hi, __m256 v) {
  *lo = _mm256_add_pd(*lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
  *hi = _mm256_add_pd(*hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

// Arrays too big for the caches (x over kPrefetchBytes: x and y do not both stay in a 32 MiB L3):
// the exp pass of row r prefetches row r + 1, one line per 32 values, so that row's DRAM read
// overlaps row r's exps instead of stalling its max pass. 1 thread, alternated builds:
// softmax 8192x4096 15.6 -> 15.0 ms, 512x32000 8.0 -> 6.3 ms; in-L3 arrays (4096x1024) lost ~5%
// to the extra instructions and keep the plain path. (Writing y with non-temporal stores from a
// row buffer, to save the read-for-ownership of y, was slower here: 15.6 -> 19.0 ms.)
constexpr int64_t kPrefetchBytes = int64_t{16} << 20;

// Writes a backward row gx[0, n) from val(j, r), its values from j, of which r (<= 8) are
// read (r < 8: masked loads; cpu::tail_mask), all in the lanes' arithmetic. nt:
// whole 64-byte lines of gx by non-temporal stores, which skip reading gx's lines in first
// (gx then goes to DRAM anyway: the backward's inputs and gx outgrow the 32 MiB L3). The
// partial lines at the row's ends take plain stores: a line written both ways (a plain
// vector overlapping the first streamed line, tried first) made 1024-long rows up to 1.7x
// slower.
template <typename V>
EMBER_AVX2 inline void store_row256(float* gx, int64_t n, bool nt, V val) {
  int64_t i = 0;
  if (nt && n >= 64) {
    const int64_t head = static_cast<int64_t>((64 - reinterpret_cast<uintptr_t>(gx) % 64) % 64 / 4);
    for (; i + 8 <= head; i += 8) _mm256_storeu_ps(gx + i, val(i, 8));
    if (i < head) {
      cpu::store_first(gx + i, val(i, 8), head - i);
      i = head;
    }
    for (; i + 16 <= n; i += 16) {
      _mm256_stream_ps(gx + i, val(i, 8));
      _mm256_stream_ps(gx + i + 8, val(i + 8, 8));
    }
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(gx + i, val(i, 8));
  if (i < n) cpu::store_first(gx + i, val(i, n - i), n - i);
}

// 8 floats from p, of which the first r are read.
EMBER_AVX2 inline __m256 load_first(const float* p, int64_t r) {
  return r >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail_mask(r));
}

EMBER_AVX2 inline void prefetch_next(const float* next, int64_t i) {
  if (next) {
    _mm_prefetch(reinterpret_cast<const char*>(next + i), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(next + i + 16), _MM_HINT_T0);
  }
}

// AVX-512 twins of the exp passes (16 lanes; exp512_ps is within 1 ulp of the 8-lane passes'
// exp256_le88_ps and equal to it for all but 49 of the 2.2e9 float32 in its range), used
// where the CPU has AVX-512F and it is not switched off (EMBER_NO_AVX512): exp is about half of
// these kernels' time with 8 lanes. Masked tails instead of scalar ones.
EMBER_AVX512 inline __mmask16 mask16(int64_t rem) {
  return rem >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << rem) - 1u);
}

// store_row256's 16-lane twin: val(j, k) gives the values from j in the lanes of k (masked
// loads), so it writes the whole row.
template <typename V>
EMBER_AVX512 inline void store_row512(float* gx, int64_t n, bool nt, V val) {
  int64_t i = 0;
  if (nt && n >= 64) {
    i = static_cast<int64_t>((64 - reinterpret_cast<uintptr_t>(gx) % 64) % 64 / 4);
    if (i > 0) _mm512_mask_storeu_ps(gx, mask16(i), val(0, mask16(i)));
    for (; i + 16 <= n; i += 16) _mm512_stream_ps(gx + i, val(i, 0xFFFF));
  }
  for (; i < n; i += 16) {
    const __mmask16 k = mask16(n - i);
    _mm512_mask_storeu_ps(gx + i, k, val(i, k));
  }
}

EMBER_AVX512 inline void add_pd16(__m512d* lo, __m512d* hi, __m512 v) {
  *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
  *hi = _mm512_add_pd(
      *hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

// y = exp(x - m); returns sum(y) (float blocks of 32 added into double lanes, as the AVX2 path)
EMBER_AVX512 double exp_store_sum512(const float* x, float* y, int64_t n, float m,
                                     const float* next) {
  const __m512 mv = _mm512_set1_ps(m);
  __m512d lo = _mm512_setzero_pd(), hi = lo;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    prefetch_next(next, i);
    const __m512 e0 = cpu::exp512_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv));
    const __m512 e1 = cpu::exp512_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), mv));
    _mm512_storeu_ps(y + i, e0);
    _mm512_storeu_ps(y + i + 16, e1);
    add_pd16(&lo, &hi, _mm512_add_ps(e0, e1));
  }
  for (; i < n; i += 16) {
    const __mmask16 k = mask16(n - i);
    const __m512 e =
        _mm512_maskz_mov_ps(k, cpu::exp512_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv)));
    _mm512_mask_storeu_ps(y + i, k, e);
    add_pd16(&lo, &hi, e);
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

// y = x - m; returns sum(exp(x - m)) (log-softmax's forward: the stores of y go out while the
// exps run, as in exp_store_sum512)
EMBER_AVX512 double diff_store_sum512(const float* x, float* y, int64_t n, float m,
                                      const float* next) {
  const __m512 mv = _mm512_set1_ps(m);
  __m512d lo = _mm512_setzero_pd(), hi = lo;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    prefetch_next(next, i);
    const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + i), mv);
    const __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), mv);
    _mm512_storeu_ps(y + i, d0);
    _mm512_storeu_ps(y + i + 16, d1);
    add_pd16(&lo, &hi, _mm512_add_ps(cpu::exp512_ps(d0), cpu::exp512_ps(d1)));
  }
  for (; i < n; i += 16) {
    const __mmask16 k = mask16(n - i);
    const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv);
    _mm512_mask_storeu_ps(y + i, k, d);
    add_pd16(&lo, &hi, _mm512_maskz_mov_ps(k, cpu::exp512_ps(d)));
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

// Raise the 16 lanes' max to at least bm, rescaling their double sums (rarely taken).
EMBER_AVX512 inline void online_raise512(__m512* m, __m512d* slo, __m512d* shi, __m512 bm) {
  const __mmask16 grow = _mm512_cmp_ps_mask(bm, *m, _CMP_GT_OQ);
  if (grow == 0) return;
  const __m512 mn = _mm512_max_ps(*m, bm);
  const __m512 sc = cpu::exp512_ps(_mm512_sub_ps(*m, mn));
  *slo = _mm512_mul_pd(*slo, _mm512_cvtps_pd(_mm512_castps512_ps256(sc)));
  *shi = _mm512_mul_pd(
      *shi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sc), 1))));
  *m = mn;
}

// The online max+sum pass of row_stats_avx2 on 16 lanes (same algorithm, see the header).
EMBER_AVX512 RowStats row_stats512(const float* x, int64_t n, const float* w, bool want_wx,
                                   float k) {
  // every lane starts at the max of the row's first kPrefixMax values (see there)
  __m512 a = _mm512_set1_ps(-FLT_MAX);
  for (int64_t j = 0; j + 16 <= std::min(n, kPrefixMax); j += 16)
    a = _mm512_max_ps(_mm512_loadu_ps(x + j), a);
  __m512 m = _mm512_set1_ps(std::max(-FLT_MAX, _mm512_reduce_max_ps(a)));
  __m512d slo = _mm512_setzero_pd(), shi = slo, wlo = slo, whi = slo;
  const __m512 kv = _mm512_set1_ps(k);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
    online_raise512(&m, &slo, &shi, _mm512_max_ps(v0, v1));
    add_pd16(&slo, &shi,
             _mm512_add_ps(cpu::exp512_ps(_mm512_sub_ps(v0, m)),
                           cpu::exp512_ps(_mm512_sub_ps(v1, m))));
    if (want_wx) {
      __m512 d0 = _mm512_sub_ps(v0, kv), d1 = _mm512_sub_ps(v1, kv);
      if (w) {
        d0 = _mm512_mul_ps(d0, _mm512_loadu_ps(w + i));
        d1 = _mm512_mul_ps(d1, _mm512_loadu_ps(w + i + 16));
      }
      add_pd16(&wlo, &whi, _mm512_add_ps(d0, d1));
    }
  }
  for (; i < n; i += 16) {  // masked lanes read as -inf (exp 0) and 0 for the weighted sum
    const __mmask16 km = mask16(n - i);
    const __m512 raw = _mm512_maskz_loadu_ps(km, x + i);
    const __m512 v = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), km, raw);
    online_raise512(&m, &slo, &shi, v);
    add_pd16(&slo, &shi, cpu::exp512_ps(_mm512_sub_ps(v, m)));
    if (want_wx) {
      __m512 d = _mm512_maskz_sub_ps(km, raw, kv);
      if (w) d = _mm512_mul_ps(d, _mm512_maskz_loadu_ps(km, w + i));
      add_pd16(&wlo, &whi, d);
    }
  }
  alignas(64) float ml[16];
  _mm512_store_ps(ml, m);
  float M = ml[0];
  for (int l = 1; l < 16; ++l)
    if (ml[l] > M || ml[l] != ml[l]) M = ml[l];
  // S = sum s_l * exp(m_l - M): the 16 factors by exp512_ps (1 ulp; 16 scalar double exps
  // were a third of a 1024-long row's time), the sum in double
  const __m512 sc = cpu::exp512_ps(_mm512_sub_ps(m, _mm512_set1_ps(M)));
  const __m512d sclo = _mm512_cvtps_pd(_mm512_castps512_ps256(sc));
  const __m512d schi =
      _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sc), 1)));
  const double S = _mm512_reduce_add_pd(_mm512_fmadd_pd(slo, sclo, _mm512_mul_pd(shi, schi)));
  RowStats st;
  st.m = double(M);
  st.s = S;
  st.ls = std::log(S);
  if (want_wx) st.wx = _mm512_reduce_add_pd(_mm512_add_pd(wlo, whi));
  return st;
}

// log-softmax backward's second pass: gx = g - exp(y) * s
EMBER_AVX512 void logsoftmax_gx512(const float* y, const float* g, float* gx, int64_t n,
                                   float s, bool nt) {
  const __m512 sv = _mm512_set1_ps(s);
  store_row512(gx, n, nt, [=](int64_t i, __mmask16 k) EMBER_AVX512 {
    const __m512 e = cpu::exp512_ps(_mm512_maskz_loadu_ps(k, y + i));
    return _mm512_fnmadd_ps(e, sv, _mm512_maskz_loadu_ps(k, g + i));
  });
}

// cross-entropy gradient row: gx = a * p - b * w (w null: b), p = exp((x - m) - ls), then
// gx[t] -= c (in the lane, the same float subtraction as after the row)
EMBER_AVX512 void ce_grad_row512(const float* x, float* gx, int64_t n, const float* w, float m,
                                 float ls, float a, float b, int64_t t, float c, bool nt) {
  const __m512 mv = _mm512_set1_ps(m), lv = _mm512_set1_ps(ls), av = _mm512_set1_ps(a),
               bv = _mm512_set1_ps(b), cv = _mm512_set1_ps(c);
  store_row512(gx, n, nt, [=](int64_t i, __mmask16 k) EMBER_AVX512 {
    const __m512 p =
        cpu::exp512_ps(_mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv), lv));
    const __m512 wb = w ? _mm512_mul_ps(bv, _mm512_maskz_loadu_ps(k, w + i)) : bv;
    const __m512 v = _mm512_fmsub_ps(av, p, wb);
    return static_cast<uint64_t>(t - i) < 16
               ? _mm512_mask_sub_ps(v, static_cast<__mmask16>(1u << (t - i)), v, cv)
               : v;
  });
}

// The online max+sum state of 8 lanes (see the header).
struct Online {
  __m256 m;
  __m256d slo, shi;
};

// Raise the lanes' max to at least bm, rescaling their sums (only when some lane grows).
EMBER_AVX2 inline void online_raise(Online* o, __m256 bm) {
  const __m256 grow = _mm256_cmp_ps(bm, o->m, _CMP_GT_OQ);
  if (_mm256_movemask_ps(grow) == 0) return;
  const __m256 mn = _mm256_max_ps(o->m, bm);
  const __m256 sc = cpu::exp256_le88_ps(_mm256_sub_ps(o->m, mn));
  o->slo = _mm256_mul_pd(o->slo, _mm256_cvtps_pd(_mm256_castps256_ps128(sc)));
  o->shi = _mm256_mul_pd(o->shi, _mm256_cvtps_pd(_mm256_extractf128_ps(sc, 1)));
  o->m = mn;
}

EMBER_AVX2 RowStats row_stats_avx2(const float* x, int64_t n, const float* w, bool want_wx,
                                   float k) {
  if (cpu::avx512_selected()) return row_stats512(x, n, w, want_wx, k);
  Online o;
  {  // every lane starts at the max of the row's first kPrefixMax values (see there)
    __m256 a = _mm256_set1_ps(-FLT_MAX);
    for (int64_t j = 0; j + 8 <= std::min(n, kPrefixMax); j += 8)
      a = _mm256_max_ps(_mm256_loadu_ps(x + j), a);
    alignas(32) float al[8];
    _mm256_store_ps(al, a);
    o.m = _mm256_set1_ps(std::max(-FLT_MAX, *std::max_element(al, al + 8)));
  }
  o.slo = _mm256_setzero_pd();
  o.shi = o.slo;
  __m256d wlo = _mm256_setzero_pd(), whi = wlo;  // sum w * (x - k)
  const __m256 kv = _mm256_set1_ps(k);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    const __m256 v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
    online_raise(&o, _mm256_max_ps(_mm256_max_ps(v0, v1), _mm256_max_ps(v2, v3)));
    const __m256 e01 = _mm256_add_ps(cpu::exp256_le88_ps(_mm256_sub_ps(v0, o.m)),
                                     cpu::exp256_le88_ps(_mm256_sub_ps(v1, o.m)));
    const __m256 e23 = _mm256_add_ps(cpu::exp256_le88_ps(_mm256_sub_ps(v2, o.m)),
                                     cpu::exp256_le88_ps(_mm256_sub_ps(v3, o.m)));
    add_pd8(&o.slo, &o.shi, _mm256_add_ps(e01, e23));
    if (want_wx) {
      __m256 d0 = _mm256_sub_ps(v0, kv), d1 = _mm256_sub_ps(v1, kv);
      __m256 d2 = _mm256_sub_ps(v2, kv), d3 = _mm256_sub_ps(v3, kv);
      if (w) {
        d0 = _mm256_mul_ps(d0, _mm256_loadu_ps(w + i));
        d1 = _mm256_mul_ps(d1, _mm256_loadu_ps(w + i + 8));
        d2 = _mm256_mul_ps(d2, _mm256_loadu_ps(w + i + 16));
        d3 = _mm256_mul_ps(d3, _mm256_loadu_ps(w + i + 24));
      }
      add_pd8(&wlo, &whi, _mm256_add_ps(_mm256_add_ps(d0, d1), _mm256_add_ps(d2, d3)));
    }
  }
  for (; i < n; i += 8) {
    // the last partial vector: masked lanes load as -inf (exp 0) and 0 for the weighted sum
    const __m256i mask = tail_mask(std::min<int64_t>(8, n - i));
    const __m256 raw = _mm256_maskload_ps(x + i, mask);
    const __m256 v =
        _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), raw, _mm256_castsi256_ps(mask));
    online_raise(&o, v);
    add_pd8(&o.slo, &o.shi, cpu::exp256_le88_ps(_mm256_sub_ps(v, o.m)));
    if (want_wx) {
      __m256 d = _mm256_and_ps(_mm256_sub_ps(raw, kv), _mm256_castsi256_ps(mask));
      if (w) d = _mm256_mul_ps(d, _mm256_maskload_ps(w + i, mask));
      add_pd8(&wlo, &whi, d);
    }
  }
  // combine the lanes: M = max m_l, S = sum s_l * exp(m_l - M)
  alignas(32) float ml[8];
  _mm256_store_ps(ml, o.m);
  float M = ml[0];
  for (int l = 1; l < 8; ++l)
    if (ml[l] > M || ml[l] != ml[l]) M = ml[l];
  // the 8 factors exp(m_l - M) by exp256_le88_ps (row_stats512: exp512_ps), the sum in double
  const __m256 sc = cpu::exp256_le88_ps(_mm256_sub_ps(o.m, _mm256_set1_ps(M)));
  const __m256d sclo = _mm256_cvtps_pd(_mm256_castps256_ps128(sc));
  const __m256d schi = _mm256_cvtps_pd(_mm256_extractf128_ps(sc, 1));
  const double S = hsum_pd(_mm256_fmadd_pd(o.slo, sclo, _mm256_mul_pd(o.shi, schi)));
  RowStats st;
  st.m = double(M);
  st.s = S;
  st.ls = std::log(S);
  if (want_wx) st.wx = hsum_pd(_mm256_add_pd(wlo, whi));
  return st;
}

// Row max of 8 lanes (masked tail lanes read as -inf). NaN handling is not needed here: a NaN
// (or +inf) in the row turns the sum of exp(x - max) into NaN, and with it the whole row.
EMBER_AVX2 float row_max_avx2(const float* x, int64_t n) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + i + 8));
    m2 = _mm256_max_ps(m2, _mm256_loadu_ps(x + i + 16));
    m3 = _mm256_max_ps(m3, _mm256_loadu_ps(x + i + 24));
  }
  for (; i < n; i += 8) {
    const __m256i mask = tail_mask(std::min<int64_t>(8, n - i));
    m0 = _mm256_max_ps(
        m0, _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + i, mask), _mm256_castsi256_ps(mask)));
  }
  alignas(32) float ml[8];
  _mm256_store_ps(ml, _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
  return *std::max_element(ml, ml + 8);
}

// d = x - m stored into y while summing exp(d) (AVX2 twin of diff_store_sum512)
EMBER_AVX2 double diff_store_sum256(const float* x, float* y, int64_t n, float m,
                                    const float* next) {
  const __m256 mv = _mm256_set1_ps(m);
  __m256d lo = _mm256_setzero_pd(), hi = lo;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    prefetch_next(next, i);
    for (int64_t j = i; j < i + 32; j += 16) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + j), mv);
      const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + j + 8), mv);
      _mm256_storeu_ps(y + j, d0);
      _mm256_storeu_ps(y + j + 8, d1);
      add_pd8(&lo, &hi, _mm256_add_ps(cpu::exp256_le88_ps(d0), cpu::exp256_le88_ps(d1)));
    }
  }
  for (; i < n; i += 8) {
    const __m256i mask = tail_mask(std::min<int64_t>(8, n - i));
    const __m256 d = _mm256_sub_ps(_mm256_maskload_ps(x + i, mask), mv);
    cpu::store_first(y + i, d, std::min<int64_t>(8, n - i));
    add_pd8(&lo, &hi, _mm256_and_ps(cpu::exp256_le88_ps(d), _mm256_castsi256_ps(mask)));
  }
  return hsum_pd(_mm256_add_pd(lo, hi));
}

// e = exp(x - m) stored into y while summing (AVX2 twin of exp_store_sum512)
EMBER_AVX2 double exp_store_sum256(const float* x, float* y, int64_t n, float m,
                                   const float* next) {
  const __m256 mv = _mm256_set1_ps(m);
  __m256d lo = _mm256_setzero_pd(), hi = lo;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    prefetch_next(next, i);
    const __m256 e0 = cpu::exp256_le88_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
    const __m256 e1 = cpu::exp256_le88_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), mv));
    const __m256 e2 = cpu::exp256_le88_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i + 16), mv));
    const __m256 e3 = cpu::exp256_le88_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i + 24), mv));
    _mm256_storeu_ps(y + i, e0);
    _mm256_storeu_ps(y + i + 8, e1);
    _mm256_storeu_ps(y + i + 16, e2);
    _mm256_storeu_ps(y + i + 24, e3);
    add_pd8(&lo, &hi, _mm256_add_ps(_mm256_add_ps(e0, e1), _mm256_add_ps(e2, e3)));
  }
  for (; i < n; i += 8) {
    const __m256i mask = tail_mask(std::min<int64_t>(8, n - i));
    const __m256 e = _mm256_and_ps(
        cpu::exp256_le88_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, mask), mv)),
        _mm256_castsi256_ps(mask));
    cpu::store_first(y + i, e, std::min<int64_t>(8, n - i));
    add_pd8(&lo, &hi, e);
  }
  return hsum_pd(_mm256_add_pd(lo, hi));
}

// softmax: max pass, then e = exp(x - max) stored into y while summing, then y *= 1/sum (y
// is still in L1/L2): one exp per element. log-softmax: max pass, then d = x - max stored into
// y while summing exp(d), then y -= log(sum). next: the following row, to prefetch (or null).
EMBER_AVX2 void softmax_row_avx2(const float* x, float* y, int64_t n, bool log,
                                 const float* next) {
  const float mx = row_max_avx2(x, n);
  const bool w512 = cpu::avx512_selected();
  if (log) {
    const double sum = w512 ? diff_store_sum512(x, y, n, mx, next)
                            : diff_store_sum256(x, y, n, mx, next);
    const float ls = float(std::log(sum));
    const __m256 lv = _mm256_set1_ps(ls);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_sub_ps(_mm256_loadu_ps(y + i), lv));
    for (; i < n; ++i) y[i] -= ls;
    return;
  }
  const double sum =
      w512 ? exp_store_sum512(x, y, n, mx, next) : exp_store_sum256(x, y, n, mx, next);
  const float inv = float(1.0 / sum);
  const __m256 iv = _mm256_set1_ps(inv);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), iv));
  for (; i < n; ++i) y[i] *= inv;
}

EMBER_AVX2 void softmax_bwd_row_avx2(const float* y, const float* g, float* gx, int64_t n,
                                     bool log, bool nt) {
  __m256d lo = _mm256_setzero_pd(), hi = lo;
  int64_t i = 0;
  // pass 1: sum(g) (log) or sum(g * y), 16 floats added in float per step, then in double
  if (log) {
    for (; i + 16 <= n; i += 16)
      add_pd8(&lo, &hi, _mm256_add_ps(_mm256_loadu_ps(g + i), _mm256_loadu_ps(g + i + 8)));
  } else {
    for (; i + 16 <= n; i += 16)
      add_pd8(&lo, &hi,
              _mm256_fmadd_ps(_mm256_loadu_ps(g + i), _mm256_loadu_ps(y + i),
                              _mm256_mul_ps(_mm256_loadu_ps(g + i + 8),
                                            _mm256_loadu_ps(y + i + 8))));
  }
  double s = hsum_pd(_mm256_add_pd(lo, hi));
  for (; i < n; ++i) s += log ? double(g[i]) : double(g[i]) * double(y[i]);
  const float sf = float(s);
  const __m256 sv = _mm256_set1_ps(sf);
  if (log && cpu::avx512_selected()) {
    logsoftmax_gx512(y, g, gx, n, sf, nt);
  } else if (log) {
    store_row256(gx, n, nt, [=](int64_t j, int64_t r) EMBER_AVX2 {
      const __m256 e = cpu::exp256_le88_ps(load_first(y + j, r));
      return _mm256_fnmadd_ps(e, sv, load_first(g + j, r));
    });
  } else {
    store_row256(gx, n, nt, [=](int64_t j, int64_t r) EMBER_AVX2 {
      return _mm256_mul_ps(load_first(y + j, r), _mm256_sub_ps(load_first(g + j, r), sv));
    });
  }
}

// gx = a * p - b * w (w null: b), p = exp((x - m) - ls), then gx[t] -= c (as ce_grad_row512)
EMBER_AVX2 void ce_grad_row_avx2(const float* x, float* gx, int64_t n, const float* w, float m,
                                 float ls, float a, float b, int64_t t, float c, bool nt) {
  if (cpu::avx512_selected()) return ce_grad_row512(x, gx, n, w, m, ls, a, b, t, c, nt);
  const __m256 mv = _mm256_set1_ps(m), lv = _mm256_set1_ps(ls), av = _mm256_set1_ps(a),
               bv = _mm256_set1_ps(b);
  store_row256(gx, n, nt, [=](int64_t j, int64_t r) EMBER_AVX2 {
    const __m256 p =
        cpu::exp256_le88_ps(_mm256_sub_ps(_mm256_sub_ps(load_first(x + j, r), mv), lv));
    const __m256 wb = w ? _mm256_mul_ps(bv, load_first(w + j, r)) : bv;
    const __m256 v = _mm256_fmsub_ps(av, p, wb);
    if (static_cast<uint64_t>(t - j) >= 8) return v;
    alignas(32) float lane[8];  // rare: the target's vector
    _mm256_store_ps(lane, v);
    lane[t - j] -= c;
    return _mm256_load_ps(lane);
  });
}
#endif

// ---- row dispatch ---------------------------------------------------------------------------
template <typename T>
RowStats row_stats(bool avx2, const T* x, int64_t n, const T* w, bool want_wx, double k) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return row_stats_avx2(x, n, w, want_wx, float(k));
#endif
  (void)avx2;
  return row_stats_cpu(x, n, w, want_wx, k);
}

template <typename T>
void softmax_row(bool avx2, const T* x, T* y, int64_t n, bool log, const T* next) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return softmax_row_avx2(x, y, n, log, next);
#endif
  (void)avx2, (void)next;
  softmax_row_cpu(x, y, n, log);
}

template <typename T>
void softmax_bwd_row(bool avx2, const T* y, const T* g, T* gx, int64_t n, bool log, bool nt) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return softmax_bwd_row_avx2(y, g, gx, n, log, nt);
#endif
  (void)avx2, (void)nt;
  softmax_bwd_row_cpu(y, g, gx, n, log);
}

template <typename T>
void ce_grad_row(bool avx2, const T* x, T* gx, int64_t n, const T* w, T m, T ls, T a, T b,
                 int64_t t, T c, bool nt) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return ce_grad_row_avx2(x, gx, n, w, m, ls, a, b, t, c, nt);
#endif
  (void)avx2, (void)nt;
  ce_grad_row_cpu(x, gx, n, w, m, ls, a, b);
  gx[t] -= c;
}

// fn(row) for every row, rows grouped into pieces of ~kPieceN elements over the claim pool.
// fence: the rows store non-temporally; each piece ends with an sfence.
template <typename Fn>
void for_rows(int64_t rows, int64_t n, Fn&& fn, bool fence = false) {
  if (rows <= 0) return;
  const int64_t per = std::max<int64_t>(1, kPieceN / std::max<int64_t>(n, 1));
  const int64_t pieces = (rows + per - 1) / per;
  const int nth = rows * n >= kParallelN ? cpu::get_num_threads() : 1;
  auto piece = [&](int64_t p) {
    const int64_t r1 = std::min(rows, (p + 1) * per);
    for (int64_t r = p * per; r < r1; ++r) fn(r);
#if EMBER_COMPILED_AVX2
    if (fence) _mm_sfence();
#endif
  };
  if (nth <= 1 || pieces <= 1) {
    for (int64_t p = 0; p < pieces; ++p) piece(p);
    return;
  }
  cpu::ClaimPool::instance().run(nth, pieces, piece);
}

template <typename T>
void fwd(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  const bool avx2 = cpu::avx2_selected();
  const bool pf = rows * n * static_cast<int64_t>(sizeof(T)) > kPrefetchBytes;
  for_rows(rows, n, [&](int64_t r) {
    const T* next = pf && r + 1 < rows ? x + (r + 1) * n : nullptr;
    softmax_row<T>(avx2, x + r * n, y + r * n, n, log, next);
  });
}

template <typename T>
void bwd(const T* y, const T* g, T* gx, int64_t rows, int64_t n, bool log) {
  const bool avx2 = cpu::avx2_selected();
  const bool nt = rows * n * static_cast<int64_t>(sizeof(T)) >= kStreamBytes &&
                  (!log || n >= kStreamRowExp);
  const auto row = [&](int64_t r) {
    softmax_bwd_row<T>(avx2, y + r * n, g + r * n, gx + r * n, n, log, nt);
  };
  for_rows(rows, n, row, nt);
}

inline double sum_weights(const float* w, int64_t C) {
  double s = 0;
  for (int64_t c = 0; c < C; ++c) s += w ? double(w[c]) : 1.0;
  return s;
}
inline double sum_weights(const double* w, int64_t C) {
  double s = 0;
  for (int64_t c = 0; c < C; ++c) s += w ? w[c] : 1.0;
  return s;
}

template <typename T>
void ce_fwd(const T* x, const int64_t* target, const T* w, int64_t N, int64_t C,
            int64_t ignore_index, double smoothing, T* loss, T* stats) {
  const bool avx2 = cpu::avx2_selected();
  const bool smooth = smoothing > 0;
  const double W = sum_weights(w, C);
  for_rows(N, C, [&](int64_t r) {
    const int64_t t = target[r];
    if (t == ignore_index) {
      loss[r] = T(0);
      stats[2 * r] = T(0);
      stats[2 * r + 1] = T(0);
      return;
    }
    const T* xr = x + r * C;
    const double k = std::isfinite(double(xr[0])) ? double(xr[0]) : 0.0;
    const RowStats st = row_stats<T>(avx2, xr, C, w, smooth, k);
    const double wt = w ? double(w[t]) : 1.0;
    double l = (1.0 - smoothing) * wt * (st.ls + (st.m - double(xr[t])));
    if (smooth) l += (smoothing / double(C)) * (W * (st.ls + (st.m - k)) - st.wx);
    loss[r] = T(l);
    stats[2 * r] = T(st.m);
    stats[2 * r + 1] = T(st.ls);
  });
}

template <typename T>
void ce_bwd(const T* x, const int64_t* target, const T* w, const T* stats, const T* grow,
            int64_t N, int64_t C, int64_t ignore_index, double smoothing, T* gx) {
  const bool avx2 = cpu::avx2_selected();
  const double W = sum_weights(w, C);
  const bool nt = N * C * static_cast<int64_t>(sizeof(T)) >= kStreamBytes && C >= kStreamRowExp;
  const auto row = [&](int64_t r) {
    T* gr = gx + r * C;
    const int64_t t = target[r];
    if (t == ignore_index) {
      std::fill(gr, gr + C, T(0));
      return;
    }
    const double gi = double(grow[r]);
    const double wt = w ? double(w[t]) : 1.0;
    const double a = gi * ((1.0 - smoothing) * wt + smoothing / double(C) * W);
    const double b = gi * smoothing / double(C);
    ce_grad_row<T>(avx2, x + r * C, gr, C, w, stats[2 * r], stats[2 * r + 1], T(a), T(b), t,
                   T(gi * (1.0 - smoothing) * wt), nt);
  };
  for_rows(N, C, row, nt);
}
}  // namespace

// ---- entry points -------------------------------------------------------------------------
void softmax_fwd(const float* x, float* y, int64_t rows, int64_t n, bool log) {
  fwd(x, y, rows, n, log);
}
void softmax_fwd(const double* x, double* y, int64_t rows, int64_t n, bool log) {
  fwd(x, y, rows, n, log);
}
void softmax_bwd(const float* y, const float* g, float* gx, int64_t rows, int64_t n, bool log) {
  bwd(y, g, gx, rows, n, log);
}
void softmax_bwd(const double* y, const double* g, double* gx, int64_t rows, int64_t n,
                 bool log) {
  bwd(y, g, gx, rows, n, log);
}
void cross_entropy_fwd(const float* x, const int64_t* target, const float* w, int64_t N,
                       int64_t C, int64_t ignore_index, double smoothing, float* loss,
                       float* stats) {
  ce_fwd(x, target, w, N, C, ignore_index, smoothing, loss, stats);
}
void cross_entropy_fwd(const double* x, const int64_t* target, const double* w, int64_t N,
                       int64_t C, int64_t ignore_index, double smoothing, double* loss,
                       double* stats) {
  ce_fwd(x, target, w, N, C, ignore_index, smoothing, loss, stats);
}
void cross_entropy_bwd(const float* x, const int64_t* target, const float* w, const float* stats,
                       const float* grow, int64_t N, int64_t C, int64_t ignore_index,
                       double smoothing, float* gx) {
  ce_bwd(x, target, w, stats, grow, N, C, ignore_index, smoothing, gx);
}
void cross_entropy_bwd(const double* x, const int64_t* target, const double* w,
                       const double* stats, const double* grow, int64_t N, int64_t C,
                       int64_t ignore_index, double smoothing, double* gx) {
  ce_bwd(x, target, w, stats, grow, N, C, ignore_index, smoothing, gx);
}

}  // namespace ember
