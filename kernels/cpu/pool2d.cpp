// pool2d.cpp -- 2-D max / average / adaptive pooling on the CPU, forward and backward.
//
// Layout: NCHW, C-contiguous; the N*C planes of H x W are independent, so every kernel works
// plane by plane (x + p*H*W -> y + p*OH*OW) and the threads take blocks of whole planes.
// The 1-D forms (max_pool1d ...) are the same kernels with H = 1.
//
// Windows (PyTorch's rules; the caller computes OH, OW incl. ceil_mode):
//   max:  rows hs = oh*sH - pH + i*dH (i < kH), only the in-bounds ones (padding is -inf);
//         value = the first strict maximum in row-major window order, except that a NaN
//         always wins (the last NaN seen): `v > m || isnan(v)`, PyTorch's test. The argmax is
//         the flat index h*W + w within the input plane (int64, as PyTorch's indices). A
//         window with no in-bounds element (possible only with dilation > 1 skipping over a
//         tiny input) gives -inf and index -1, which the backward skips.
//   avg:  hs = oh*sH - pH, he = min(hs + kH, H + pH) (likewise w); the divisor is
//         divisor_override if != 0, else (he-hs)*(we-ws) with count_include_pad, else the
//         number of in-bounds elements; the sum runs over the in-bounds elements only.
//   adaptive: rows [floor(i*H/OH), ceil((i+1)*H/OH)), likewise columns; divisor = window size.
// Backward: grad_in is written completely (each plane zeroed, then the scatter-add of the
// output gradients through the argmax (max) or over the window with 1/divisor (avg)).
//
// Variants: <op>_cpu<T> scalar references (float, double; avg sums in double) and AVX2 float
// paths for the forwards, which dominate inference and are the costly half of training:
//   * max / avg with sW in {1, 2}: 8 adjacent output columns per vector over the interior
//     columns (whose horizontal window lies inside the input; the last block overlaps the
//     one before rather than leaving a scalar tail); per window element one
//     unaligned load (sW = 1) or two loads and an even-lane shuffle (sW = 2). The window is
//     visited in the reference's order with the same compare, so values AND indices equal
//     the scalar path bit for bit for max; avg sums in float (kH*kW terms, within the
//     reduction tolerance). Border columns and other strides run the reference per output.
//   * global average (adaptive 1x1): one plane reduction, float -> 4-double lanes.
//   * avg backward, any stride: a gather per output row (what each input column receives,
//     a sliding sum over the divided output gradients), added to the window's input rows.
//   * max forward without indices (inference: idx == nullptr) skips the index blend/stores.
//   * max with fewer than 8 interior output columns (7x7 outputs of 14x14 maps): the same
//     vector code on a -inf-padded copy of each window row ([128, 64, 14, 14] k2 s2, 1 thread:
//     10.7 -> 3.0 ms, the reference loop took ~25 ns per output).
// The max backward is a scatter through the argmax (one pass over grad_out and indices, the
// plane zeroed first while in cache) and runs the reference code for both types.
//
// Threads (claim pool): pieces are blocks of planes sized to ~64K elements of work; a
// plane's result never depends on the split, so results are identical for any thread count.
// A plane is never split, so N*C = 1 (one huge image) runs on one thread.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/common.h"
#include "kernels/cpu/pool.h"
#include "kernels/kernels.h"

namespace ember {
namespace {

constexpr int64_t kPieceWork = int64_t{1} << 16;  // elements touched per piece (about)
constexpr int64_t kParallelWork = int64_t{1} << 15;

template <typename T>
using Acc = double;  // avg sums in double on the reference path (PyTorch's CPU acc type)

// Run fn(p0, p1) over blocks of planes. `per_plane` is the work of one plane (elements read +
// written, about), which sizes the blocks and decides whether threads pay off.
template <typename Fn>
void for_planes(int64_t NC, int64_t per_plane, Fn&& fn) {
  if (NC <= 0) return;
  per_plane = std::max<int64_t>(per_plane, 1);
  const int64_t ppp = std::max<int64_t>(1, kPieceWork / per_plane);
  const int64_t pieces = (NC + ppp - 1) / ppp;
  const int nth = NC * per_plane >= kParallelWork ? cpu::get_num_threads() : 1;
  auto piece = [&](int64_t p) { fn(p * ppp, std::min(NC, (p + 1) * ppp)); };
  if (nth <= 1 || pieces <= 1) {
    for (int64_t p = 0; p < pieces; ++p) piece(p);
    return;
  }
  cpu::ClaimPool::instance().run(nth, pieces, piece);
}

// ---- scalar references ----------------------------------------------------------------------
template <typename T>
inline void max_window_cpu(const T* x, const Pool2dDims& d, int64_t oh, int64_t ow, T* y,
                           int64_t* idx) {
  int64_t hs = oh * d.sH - d.pH, ws = ow * d.sW - d.pW;
  const int64_t he = std::min(hs + (d.kH - 1) * d.dH + 1, d.H);
  const int64_t we = std::min(ws + (d.kW - 1) * d.dW + 1, d.W);
  while (hs < 0) hs += d.dH;
  while (ws < 0) ws += d.dW;
  T m = -std::numeric_limits<T>::infinity();
  int64_t best = (hs < he && ws < we) ? hs * d.W + ws : -1;
  for (int64_t h = hs; h < he; h += d.dH)
    for (int64_t w = ws; w < we; w += d.dW) {
      const T v = x[h * d.W + w];
      if (v > m || std::isnan(v)) {
        m = v;
        best = h * d.W + w;
      }
    }
  *y = m;
  if (idx) *idx = best;
}

// The avg window of output (oh, ow): in-bounds [h0, h1) x [w0, w1) and its divisor.
struct AvgWin {
  int64_t h0, h1, w0, w1;
  int64_t div;
};

inline void avg_rows(const Pool2dDims& d, int64_t oh, int64_t* h0, int64_t* h1, int64_t* span) {
  const int64_t hs = oh * d.sH - d.pH, he = std::min(hs + d.kH, d.H + d.pH);
  *span = he - hs;
  *h0 = std::max<int64_t>(hs, 0);
  *h1 = std::min(he, d.H);
}

inline AvgWin avg_window(const Pool2dDims& d, int64_t oh, int64_t ow, bool include_pad,
                         int64_t divisor) {
  AvgWin a;
  int64_t hspan, wspan;
  avg_rows(d, oh, &a.h0, &a.h1, &hspan);
  const int64_t ws = ow * d.sW - d.pW, we = std::min(ws + d.kW, d.W + d.pW);
  wspan = we - ws;
  a.w0 = std::max<int64_t>(ws, 0);
  a.w1 = std::min(we, d.W);
  if (divisor != 0)
    a.div = divisor;
  else if (include_pad)
    a.div = hspan * wspan;
  else
    a.div = (a.h1 - a.h0) * (a.w1 - a.w0);
  return a;
}

template <typename T>
inline T avg_window_cpu(const T* x, int64_t W, const AvgWin& a) {
  if (a.h0 >= a.h1 || a.w0 >= a.w1) return T(0);
  Acc<T> s = 0;
  for (int64_t h = a.h0; h < a.h1; ++h)
    for (int64_t w = a.w0; w < a.w1; ++w) s += Acc<T>(x[h * W + w]);
  return T(s / Acc<T>(a.div));
}

// Scatter one output gradient over its window (the reference backward, per output).
template <typename T>
inline void avg_bwd_one(T g, T* gx, const Pool2dDims& d, const AvgWin& a) {
  const T v = T(Acc<T>(g) / Acc<T>(a.div));
  for (int64_t h = a.h0; h < a.h1; ++h)
    for (int64_t w = a.w0; w < a.w1; ++w) gx[h * d.W + w] += v;
}

template <typename T>
void avg_bwd_plane_cpu(const T* g, T* gx, const Pool2dDims& d, bool include_pad,
                       int64_t divisor) {
  for (int64_t oh = 0; oh < d.OH; ++oh)
    for (int64_t ow = 0; ow < d.OW; ++ow)
      avg_bwd_one(g[oh * d.OW + ow], gx, d, avg_window(d, oh, ow, include_pad, divisor));
}

template <typename T>
void max_fwd_plane_cpu(const T* x, T* y, int64_t* idx, const Pool2dDims& d) {
  for (int64_t oh = 0; oh < d.OH; ++oh)
    for (int64_t ow = 0; ow < d.OW; ++ow)
      max_window_cpu(x, d, oh, ow, y + oh * d.OW + ow, idx ? idx + oh * d.OW + ow : nullptr);
}

template <typename T>
void avg_fwd_plane_cpu(const T* x, T* y, const Pool2dDims& d, bool include_pad,
                       int64_t divisor) {
  for (int64_t oh = 0; oh < d.OH; ++oh)
    for (int64_t ow = 0; ow < d.OW; ++ow)
      y[oh * d.OW + ow] = avg_window_cpu(x, d.W, avg_window(d, oh, ow, include_pad, divisor));
}

inline int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
inline int64_t adaptive_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

// ---- AVX2 (float) -------------------------------------------------------------------------
#if EMBER_COMPILED_AVX2
// 8 floats at columns c, c + 2, ..., c + 14 of row r (needs c + 14 < W; reads c .. c + 14).
EMBER_AVX2 inline __m256 load_even(const float* r) {
  const __m256 a = _mm256_loadu_ps(r), b = _mm256_loadu_ps(r + 7);
  // per 128-bit lane: a0 a2 | b1 b3 -> [c0 c2 c8 c10 | c4 c6 c12 c14], then order the quads.
  const __m256 s = _mm256_shuffle_ps(a, b, 0xD8);
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xD8));
}

template <int SW>
EMBER_AVX2 inline __m256 load_cols(const float* r) {
  if constexpr (SW == 1)
    return _mm256_loadu_ps(r);
  else
    return load_even(r);
}

// Padded row copies of the small-map max path: 8 outputs * stride 2 + the widest window.
constexpr int64_t kSmallRow = 64;

// Interior output columns [oa, ob): the horizontal window lies inside the input.
inline void interior(const Pool2dDims& d, int64_t span_w, int64_t* oa, int64_t* ob) {
  const int64_t a = (d.pW + d.sW - 1) / d.sW;
  const int64_t num = d.W - span_w + d.pW;  // last start column allowed: W - span_w
  const int64_t b = num < 0 ? 0 : num / d.sW + 1;
  *oa = std::min(a, d.OW);
  *ob = std::clamp(b, *oa, d.OW);
}

template <int SW, bool IDX>
EMBER_AVX2 void max_fwd_plane_avx2(const float* x, float* y, int64_t* idx, const Pool2dDims& d) {
  int64_t oa, ob;
  interior(d, (d.kW - 1) * d.dW + 1, &oa, &ob);
  const __m256i lane = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                          _mm256_set1_epi32(SW));
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t oh = 0; oh < d.OH; ++oh) {
    float* yr = y + oh * d.OW;
    int64_t* ir = IDX ? idx + oh * d.OW : nullptr;
    int64_t hs = oh * d.sH - d.pH;
    const int64_t he = std::min(hs + (d.kH - 1) * d.dH + 1, d.H);
    while (hs < 0) hs += d.dH;
    int64_t ow = 0;
    for (; ow < oa; ++ow) max_window_cpu(x, d, oh, ow, yr + ow, IDX ? ir + ow : nullptr);
    if (hs < he && ob - oa >= 8) {
      // The last block overlaps the one before instead of leaving up to 7 scalar outputs
      // (pure outputs: the overlap is recomputed to the same values).
      for (int64_t blk = oa; blk < ob; blk += 8) {
        const int64_t o = std::min(blk, ob - 8);
        const int64_t c0 = o * SW - d.pW;
        __m256 m = ninf;
        __m256i bi = _mm256_add_epi32(_mm256_set1_epi32(int32_t(hs * d.W + c0)), lane);
        for (int64_t h = hs; h < he; h += d.dH) {
          const float* r = x + h * d.W + c0;
          const int32_t base = int32_t(h * d.W + c0);
          for (int64_t kw = 0; kw < d.kW; ++kw) {
            const int64_t off = kw * d.dW;
            const __m256 v = load_cols<SW>(r + off);
            const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ),
                                             _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            m = _mm256_blendv_ps(m, v, take);
            if constexpr (IDX) {
              const __m256i iv = _mm256_add_epi32(_mm256_set1_epi32(base + int32_t(off)), lane);
              bi = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bi),
                                                        _mm256_castsi256_ps(iv), take));
            }
          }
        }
        _mm256_storeu_ps(yr + o, m);
        if constexpr (!IDX) continue;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(ir + o),
                            _mm256_cvtepi32_epi64(_mm256_castsi256_si128(bi)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(ir + o + 4),
                            _mm256_cvtepi32_epi64(_mm256_extracti128_si256(bi, 1)));
      }
      ow = ob;
    } else if (hs < he && ob > oa) {
      // Fewer than 8 interior outputs (small maps, e.g. 14x14 -> 7x7): the same vector code
      // on a copy of each window row padded with -inf, stores cut to the valid lanes.
      const int64_t nv = ob - oa;
      const int64_t c0 = oa * SW - d.pW;
      const int64_t span = (nv - 1) * SW + (d.kW - 1) * d.dW + 1;  // input columns read
      const int64_t off_max = (d.kW - 1) * d.dW;
      if (off_max + 16 <= kSmallRow) {
        alignas(32) float row[kSmallRow];
        std::fill(row, row + kSmallRow, -std::numeric_limits<float>::infinity());
        __m256 m = ninf;
        __m256i bi = _mm256_add_epi32(_mm256_set1_epi32(int32_t(hs * d.W + c0)), lane);
        for (int64_t h = hs; h < he; h += d.dH) {
          std::copy(x + h * d.W + c0, x + h * d.W + c0 + span, row);
          const int32_t base = int32_t(h * d.W + c0);
          for (int64_t kw = 0; kw < d.kW; ++kw) {
            const int64_t off = kw * d.dW;
            const __m256 v = load_cols<SW>(row + off);
            const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ),
                                             _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            m = _mm256_blendv_ps(m, v, take);
            if constexpr (IDX) {
              const __m256i iv = _mm256_add_epi32(_mm256_set1_epi32(base + int32_t(off)), lane);
              bi = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bi),
                                                        _mm256_castsi256_ps(iv), take));
            }
          }
        }
        alignas(32) float mv[8];
        alignas(32) int32_t iv[8];
        _mm256_store_ps(mv, m);
        _mm256_store_si256(reinterpret_cast<__m256i*>(iv), bi);
        for (int64_t l = 0; l < nv; ++l) {
          yr[oa + l] = mv[l];
          if constexpr (IDX) ir[oa + l] = iv[l];
        }
        ow = ob;
      }
    }
    for (; ow < d.OW; ++ow) max_window_cpu(x, d, oh, ow, yr + ow, IDX ? ir + ow : nullptr);
  }
}

template <int SW>
EMBER_AVX2 void avg_fwd_plane_avx2(const float* x, float* y, const Pool2dDims& d,
                                   bool include_pad, int64_t divisor) {
  int64_t oa, ob;
  interior(d, d.kW, &oa, &ob);
  for (int64_t oh = 0; oh < d.OH; ++oh) {
    float* yr = y + oh * d.OW;
    int64_t ow = 0;
    for (; ow < oa; ++ow) yr[ow] = avg_window_cpu(x, d.W, avg_window(d, oh, ow, include_pad, divisor));
    const AvgWin a = avg_window(d, oh, oa, include_pad, divisor);  // same rows, div inside
    if (a.h0 < a.h1 && ob - oa >= 8) {
      const __m256 dv = _mm256_set1_ps(float(a.div));
      for (int64_t blk = oa; blk < ob; blk += 8) {
        const int64_t o = std::min(blk, ob - 8);  // overlapping last block, as in max
        const float* r0 = x + o * SW - d.pW;
        __m256 s = _mm256_setzero_ps();
        for (int64_t h = a.h0; h < a.h1; ++h) {
          const float* r = r0 + h * d.W;
          for (int64_t kw = 0; kw < d.kW; ++kw) s = _mm256_add_ps(s, load_cols<SW>(r + kw));
        }
        _mm256_storeu_ps(yr + o, _mm256_div_ps(s, dv));
      }
      ow = ob;
    }
    for (; ow < d.OW; ++ow)
      yr[ow] = avg_window_cpu(x, d.W, avg_window(d, oh, ow, include_pad, divisor));
  }
}

// Backward, any stride, as a gather (vector read-modify-writes of overlapping windows would
// stall on store forwarding: a store of 8 floats then a load one float further is not
// forwarded). Per output row oh: v[ow] = g[oh, ow] / (hf[oh] * wf[ow]) (the divisor is a
// product of a row and a column factor, or the override), spread to u[sW * ow] (zeros in
// between, zero margins), then R[c] = sum_j u[c + pW - j] (j < kW) is what input column c
// receives from this output row, and R is added to each input row of the window.
// Scratch (per thread, grown on demand, reused across calls): hf, wf, u, R.
struct AvgBwdScratch {
  std::vector<float> hf, wf, u, r;
};

EMBER_AVX2 void avg_bwd_plane_avx2(const float* g, float* gx, const Pool2dDims& d,
                                   bool include_pad, int64_t divisor, AvgBwdScratch& sc) {
  const int64_t pad = d.kW + 8;
  const int64_t ulen = pad + std::max(d.sW * d.OW, d.W + d.pW) + 16;
  sc.hf.resize(size_t(d.OH));
  sc.wf.resize(size_t(d.OW) + 8);
  sc.u.assign(size_t(ulen), 0.0f);
  sc.r.resize(size_t(d.W) + 8);
  for (int64_t oh = 0; oh < d.OH; ++oh) {
    int64_t h0, h1, span;
    avg_rows(d, oh, &h0, &h1, &span);
    sc.hf[oh] = divisor != 0 ? 1.0f : float(include_pad ? span : h1 - h0);
  }
  for (int64_t ow = 0; ow < d.OW; ++ow) {
    const int64_t ws = ow * d.sW - d.pW, we = std::min(ws + d.kW, d.W + d.pW);
    const int64_t cnt = std::min(we, d.W) - std::max<int64_t>(ws, 0);
    sc.wf[ow] = divisor != 0 ? float(divisor) : float(include_pad ? we - ws : cnt);
    if (cnt <= 0) sc.wf[ow] = 0.0f;  // empty window: contributes nowhere (v = 0 below)
  }
  float* u = sc.u.data() + pad;
  float* r = sc.r.data();
  for (int64_t oh = 0; oh < d.OH; ++oh) {
    int64_t h0, h1, span;
    avg_rows(d, oh, &h0, &h1, &span);
    if (h0 >= h1) continue;
    const float* gr = g + oh * d.OW;
    for (int64_t ow = 0; ow < d.OW; ++ow) {
      const float div = sc.hf[oh] * sc.wf[ow];  // integers below 2^24: exact
      u[ow * d.sW] = div != 0.0f ? gr[ow] / div : 0.0f;
    }
    int64_t c = 0;
    for (; c + 8 <= d.W; c += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t j = 0; j < d.kW; ++j) acc = _mm256_add_ps(acc, _mm256_loadu_ps(u + c + d.pW - j));
      _mm256_storeu_ps(r + c, acc);
    }
    for (; c < d.W; ++c) {
      float acc = 0.0f;
      for (int64_t j = 0; j < d.kW; ++j) acc += u[c + d.pW - j];
      r[c] = acc;
    }
    for (int64_t h = h0; h < h1; ++h) {
      float* row = gx + h * d.W;
      int64_t q = 0;
      for (; q + 8 <= d.W; q += 8)
        _mm256_storeu_ps(row + q, _mm256_add_ps(_mm256_loadu_ps(row + q), _mm256_loadu_ps(r + q)));
      for (; q < d.W; ++q) row[q] += r[q];
    }
  }
}

EMBER_AVX2 float plane_mean_avx2(const float* x, int64_t n) {
  __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v0)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v0, 1)));
    s2 = _mm256_add_pd(s2, _mm256_cvtps_pd(_mm256_castps256_ps128(v1)));
    s3 = _mm256_add_pd(s3, _mm256_cvtps_pd(_mm256_extractf128_ps(v1, 1)));
  }
  const __m256d s = _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3));
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  double t = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
  for (; i < n; ++i) t += double(x[i]);
  return float(t / double(n));
}
#endif

// ---- per-plane dispatch ---------------------------------------------------------------------
// The int32 lane indices of the AVX2 max path need planes below 2^31 elements.
inline bool vec_ok(const Pool2dDims& d) {
  return (d.sW == 1 || d.sW == 2) && d.H * d.W < (int64_t{1} << 31) && d.OW >= 8;
}
// Max pooling also takes maps with fewer than 8 output columns (padded row copies).
inline bool vec_ok_max(const Pool2dDims& d) {
  return (d.sW == 1 || d.sW == 2) && d.H * d.W < (int64_t{1} << 31);
}

template <typename T>
void max_fwd_plane(bool avx2, const T* x, T* y, int64_t* idx, const Pool2dDims& d) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2 && vec_ok_max(d)) {
      if (idx)
        return d.sW == 1 ? max_fwd_plane_avx2<1, true>(x, y, idx, d)
                         : max_fwd_plane_avx2<2, true>(x, y, idx, d);
      return d.sW == 1 ? max_fwd_plane_avx2<1, false>(x, y, idx, d)
                       : max_fwd_plane_avx2<2, false>(x, y, idx, d);
    }
#endif
  (void)avx2;
  max_fwd_plane_cpu(x, y, idx, d);
}

template <typename T>
void avg_fwd_plane(bool avx2, const T* x, T* y, const Pool2dDims& d, bool include_pad,
                   int64_t divisor) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2 && vec_ok(d))
      return d.sW == 1 ? avg_fwd_plane_avx2<1>(x, y, d, include_pad, divisor)
                       : avg_fwd_plane_avx2<2>(x, y, d, include_pad, divisor);
#endif
  (void)avx2;
  avg_fwd_plane_cpu(x, y, d, include_pad, divisor);
}

template <typename T>
void avg_bwd_plane(bool avx2, const T* g, T* gx, const Pool2dDims& d, bool include_pad,
                   int64_t divisor) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) {
      static thread_local AvgBwdScratch scratch;
      return avg_bwd_plane_avx2(g, gx, d, include_pad, divisor, scratch);
    }
#endif
  (void)avx2;
  avg_bwd_plane_cpu(g, gx, d, include_pad, divisor);
}

template <typename T>
T plane_mean(bool avx2, const T* x, int64_t n) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return plane_mean_avx2(x, n);
#endif
  (void)avx2;
  Acc<T> s = 0;
  for (int64_t i = 0; i < n; ++i) s += Acc<T>(x[i]);
  return T(s / Acc<T>(n));
}

// ---- whole-tensor drivers -------------------------------------------------------------------
template <typename T>
void max_fwd(const T* x, T* y, int64_t* idx, const Pool2dDims& d) {
  const bool avx2 = cpu::avx2_selected();
  const int64_t in = d.H * d.W, out = d.OH * d.OW;
  for_planes(d.NC, in + out * d.kH * d.kW, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      max_fwd_plane(avx2, x + p * in, y + p * out, idx ? idx + p * out : nullptr, d);
  });
}

template <typename T>
void max_bwd(const T* g, const int64_t* idx, T* gx, int64_t NC, int64_t in, int64_t out) {
  for_planes(NC, 2 * in + 2 * out, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* gp = gx + p * in;
      const T* go = g + p * out;
      const int64_t* ip = idx + p * out;
      std::memset(static_cast<void*>(gp), 0, sizeof(T) * size_t(in));
      for (int64_t o = 0; o < out; ++o) {
        const int64_t i = ip[o];
        if (i >= 0 && i < in) gp[i] += go[o];
      }
    }
  });
}

template <typename T>
void avg_fwd(const T* x, T* y, const Pool2dDims& d, bool include_pad, int64_t divisor) {
  const bool avx2 = cpu::avx2_selected();
  const int64_t in = d.H * d.W, out = d.OH * d.OW;
  for_planes(d.NC, in + out * d.kH * d.kW, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      avg_fwd_plane(avx2, x + p * in, y + p * out, d, include_pad, divisor);
  });
}

template <typename T>
void avg_bwd(const T* g, T* gx, const Pool2dDims& d, bool include_pad, int64_t divisor) {
  const bool avx2 = cpu::avx2_selected();
  const int64_t in = d.H * d.W, out = d.OH * d.OW;
  for_planes(d.NC, 2 * in + out * d.kH * d.kW, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* gp = gx + p * in;
      const T* go = g + p * out;
      std::memset(static_cast<void*>(gp), 0, sizeof(T) * size_t(in));
      avg_bwd_plane(avx2, go, gp, d, include_pad, divisor);
    }
  });
}

template <typename T>
void adaptive_avg_fwd(const T* x, T* y, int64_t NC, int64_t H, int64_t W, int64_t OH,
                      int64_t OW) {
  const bool avx2 = cpu::avx2_selected();
  const int64_t in = H * W, out = OH * OW;
  for_planes(NC, in + out, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* xp = x + p * in;
      T* yp = y + p * out;
      if (out == 1) {
        yp[0] = plane_mean(avx2, xp, in);
        continue;
      }
      for (int64_t oh = 0; oh < OH; ++oh) {
        const int64_t h0 = adaptive_start(oh, H, OH), h1 = adaptive_end(oh, H, OH);
        for (int64_t ow = 0; ow < OW; ++ow) {
          const int64_t w0 = adaptive_start(ow, W, OW), w1 = adaptive_end(ow, W, OW);
          Acc<T> s = 0;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) s += Acc<T>(xp[h * W + w]);
          yp[oh * OW + ow] = T(s / Acc<T>((h1 - h0) * (w1 - w0)));
        }
      }
    }
  });
}

template <typename T>
void adaptive_avg_bwd(const T* g, T* gx, int64_t NC, int64_t H, int64_t W, int64_t OH,
                      int64_t OW) {
  const int64_t in = H * W, out = OH * OW;
  for_planes(NC, in + out, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* gp = gx + p * in;
      const T* go = g + p * out;
      if (out == 1) {  // global: a broadcast fill, no zeroing pass
        const T v = T(Acc<T>(go[0]) / Acc<T>(in));
        std::fill(gp, gp + in, v);
        continue;
      }
      std::memset(static_cast<void*>(gp), 0, sizeof(T) * size_t(in));
      for (int64_t oh = 0; oh < OH; ++oh) {
        const int64_t h0 = adaptive_start(oh, H, OH), h1 = adaptive_end(oh, H, OH);
        for (int64_t ow = 0; ow < OW; ++ow) {
          const int64_t w0 = adaptive_start(ow, W, OW), w1 = adaptive_end(ow, W, OW);
          const T v = T(Acc<T>(go[oh * OW + ow]) / Acc<T>((h1 - h0) * (w1 - w0)));
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) gp[h * W + w] += v;
        }
      }
    }
  });
}

template <typename T>
void adaptive_max_fwd(const T* x, T* y, int64_t* idx, int64_t NC, int64_t H, int64_t W,
                      int64_t OH, int64_t OW) {
  const int64_t in = H * W, out = OH * OW;
  for_planes(NC, in + out, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* xp = x + p * in;
      for (int64_t oh = 0; oh < OH; ++oh) {
        const int64_t h0 = adaptive_start(oh, H, OH), h1 = adaptive_end(oh, H, OH);
        for (int64_t ow = 0; ow < OW; ++ow) {
          const int64_t w0 = adaptive_start(ow, W, OW), w1 = adaptive_end(ow, W, OW);
          T m = -std::numeric_limits<T>::infinity();
          int64_t best = h0 * W + w0;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) {
              const T v = xp[h * W + w];
              if (v > m || std::isnan(v)) {
                m = v;
                best = h * W + w;
              }
            }
          y[p * out + oh * OW + ow] = m;
          idx[p * out + oh * OW + ow] = best;
        }
      }
    }
  });
}
}  // namespace

// ---- entry points -------------------------------------------------------------------------
void maxpool2d_fwd(const float* x, float* y, int64_t* idx, const Pool2dDims& d) {
  max_fwd(x, y, idx, d);
}
void maxpool2d_fwd(const double* x, double* y, int64_t* idx, const Pool2dDims& d) {
  max_fwd(x, y, idx, d);
}
void maxpool2d_bwd(const float* g, const int64_t* idx, float* gx, int64_t NC, int64_t in_plane,
                   int64_t out_plane) {
  max_bwd(g, idx, gx, NC, in_plane, out_plane);
}
void maxpool2d_bwd(const double* g, const int64_t* idx, double* gx, int64_t NC, int64_t in_plane,
                   int64_t out_plane) {
  max_bwd(g, idx, gx, NC, in_plane, out_plane);
}
void avgpool2d_fwd(const float* x, float* y, const Pool2dDims& d, bool count_include_pad,
                   int64_t divisor_override) {
  avg_fwd(x, y, d, count_include_pad, divisor_override);
}
void avgpool2d_fwd(const double* x, double* y, const Pool2dDims& d, bool count_include_pad,
                   int64_t divisor_override) {
  avg_fwd(x, y, d, count_include_pad, divisor_override);
}
void avgpool2d_bwd(const float* g, float* gx, const Pool2dDims& d, bool count_include_pad,
                   int64_t divisor_override) {
  avg_bwd(g, gx, d, count_include_pad, divisor_override);
}
void avgpool2d_bwd(const double* g, double* gx, const Pool2dDims& d, bool count_include_pad,
                   int64_t divisor_override) {
  avg_bwd(g, gx, d, count_include_pad, divisor_override);
}
void adaptive_avgpool2d_fwd(const float* x, float* y, int64_t NC, int64_t H, int64_t W,
                            int64_t OH, int64_t OW) {
  adaptive_avg_fwd(x, y, NC, H, W, OH, OW);
}
void adaptive_avgpool2d_fwd(const double* x, double* y, int64_t NC, int64_t H, int64_t W,
                            int64_t OH, int64_t OW) {
  adaptive_avg_fwd(x, y, NC, H, W, OH, OW);
}
void adaptive_avgpool2d_bwd(const float* g, float* gx, int64_t NC, int64_t H, int64_t W,
                            int64_t OH, int64_t OW) {
  adaptive_avg_bwd(g, gx, NC, H, W, OH, OW);
}
void adaptive_avgpool2d_bwd(const double* g, double* gx, int64_t NC, int64_t H, int64_t W,
                            int64_t OH, int64_t OW) {
  adaptive_avg_bwd(g, gx, NC, H, W, OH, OW);
}
void adaptive_maxpool2d_fwd(const float* x, float* y, int64_t* idx, int64_t NC, int64_t H,
                            int64_t W, int64_t OH, int64_t OW) {
  adaptive_max_fwd(x, y, idx, NC, H, W, OH, OW);
}
void adaptive_maxpool2d_fwd(const double* x, double* y, int64_t* idx, int64_t NC, int64_t H,
                            int64_t W, int64_t OH, int64_t OW) {
  adaptive_max_fwd(x, y, idx, NC, H, W, OH, OW);
}

}  // namespace ember
