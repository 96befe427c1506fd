// layernorm.cpp -- layer norm and RMS norm forward/backward over the trailing dims, on the CPU.
//
// Layout: x viewed as C-contiguous [rows, n], n = the product of normalized_shape; weight and
// bias (and their gradients) are [n]; per-row statistics mean and rstd are [rows].
//
// Forward, per row (one read of the row for the statistics, one for y, back to back so the
// second is served from L1/L2 for rows up to ~256k floats: DRAM sees 1 read + 1 write; y of
// kStreamBytes or more is written with non-temporal stores, which skip reading y's lines in):
//   layer norm: k = x[0] (a shift taken from the row); D = sum(x - k), Q = sum((x - k)^2) in
//     double (the float path: x - k in float, float partials added into double every kFlush
//     values); mean = k + D/n, var = max(0, (Q - D*D/n) / n) (biased). A constant row gives
//     D = Q = 0: variance exactly 0, mean exactly the constant (no E[x^2] - E[x]^2
//     cancellation; the shift keeps the rest at a few double ulps, as in batchnorm.cpp).
//     rstd = 1/sqrt(var + eps); y = (x - mean) * rstd * w + b.
//   RMS norm: rstd = 1/sqrt(sum(x^2)/n + eps) (Q in double); y = x * rstd * w.
// Backward, per row, xhat = (x - mean) * rstd (rms: x * rstd), gh = g * w:
//   pass 1: A = sum(gh), B = sum(gh * xhat) in double (the float path: as the stats);
//   pass 2: gx = rstd * (gh - A/n - xhat * B/n) (rms: without the A term), and the weight /
//   bias partial sums gw += g * xhat, gb += g of this piece of rows.
//   Compulsory traffic: read g and x, write gx (the per-piece partials are [pieces, n]); gx
//   of kStreamBytes or more is written with non-temporal stores, as y is.
//
// Threads (claim pool): pieces are blocks of whole rows. The weight/bias gradients are summed
// per piece into a [pieces, n] workspace (float for the float path: a piece's rows are added in
// row order) and the pieces are added in double at the end, in piece order. The piece count
// depends only on the shape, so results are bit-identical for any thread count. The workspace
// is thread_local to the calling thread and reused across calls (no page faults per call).
//
// Variants: <step>_cpu<T> scalar references (float, double; sums in double); AVX2/FMA float
// paths (8 floats per vector; the row sums in float partials of a few values per lane and
// chain, added into 4-double lanes every kFlush values). double runs the reference.
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
constexpr int64_t kPieceN = int64_t{1} << 15;     // elements per piece (whole rows)
constexpr int64_t kMaxPieces = 32;                // bounds the [pieces, n] gradient workspace
// Outputs of at least this size are written with non-temporal stores (forward y): x and y
// together then outgrow the 32 MiB L3, so y goes to DRAM anyway, and streaming it skips the
// read-for-ownership of every line (a third of the forward's DRAM traffic). 1 thread,
// alternated builds: 4096x4096 10.2 -> 6.3 ms, 8192x768 2.4 -> 1.5, 4096x1024 1.6 -> 1.0
// (2 threads: 5.5 -> 3.7, 1.3 -> 0.95, 0.96 -> 0.61); at 3072x1024 (12 MiB) streaming lost
// 1.7x on 1 thread, y staying in L3 between calls. The backward's gx of this size is
// streamed too: once its sums no longer converted every value to double (kFlush), its
// write-allocate reads of gx showed (1 thread, alternated builds: 4096x4096 16.8 -> 12.3 ms,
// 8192x768 3.06 -> 2.33, 1024x4096 4.79 -> 3.59, 4096x1024 1.09-1.31x in two runs; 2 threads
// 1.13-1.36x). Before that change streaming gx had not gained.
constexpr int64_t kStreamBytes = int64_t{16} << 20;

struct Sums {
  double a = 0, b = 0;
};

// ---- scalar references ----------------------------------------------------------------------
// layer norm: a = sum(x - k), b = sum((x - k)^2); rms (k = 0): b = sum(x^2)
template <typename T>
Sums stats_row_cpu(const T* x, int64_t n, double k) {
  Sums s;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - k;
    s.a += d;
    s.b += d * d;
  }
  return s;
}

template <typename T>
void apply_row_cpu(const T* x, T* y, int64_t n, const T* w, const T* b, T mean, T rstd) {
  for (int64_t i = 0; i < n; ++i) {
    T v = (x[i] - mean) * rstd;
    if (w) v *= w[i];
    if (b) v += b[i];
    y[i] = v;
  }
}

// a = sum(g * w), b = sum(g * w * xhat)
template <typename T>
Sums bsums_row_cpu(const T* g, const T* x, int64_t n, const T* w, T mean, T rstd) {
  Sums s;
  for (int64_t i = 0; i < n; ++i) {
    const double gh = double(g[i]) * (w ? double(w[i]) : 1.0);
    s.a += gh;
    s.b += gh * double((x[i] - mean) * rstd);
  }
  return s;
}

// gx = rstd * (g*w - ca - xhat * cb); pw += g * xhat, pb += g (each may be null)
template <typename T>
void bgrad_row_cpu(const T* g, const T* x, T* gx, int64_t n, const T* w, T mean, T rstd, T ca,
                   T cb, T* pw, T* pb) {
  for (int64_t i = 0; i < n; ++i) {
    const T xh = (x[i] - mean) * rstd;
    if (gx) gx[i] = rstd * ((w ? g[i] * w[i] : g[i]) - ca - xh * cb);
    if (pw) pw[i] += g[i] * xh;
    if (pb) pb[i] += g[i];
  }
}

// ---- AVX2 (float) -------------------------------------------------------------------------
#if EMBER_COMPILED_AVX2
// The row sums add float partials flushed into double every kFlush values
// (cpu::partial_sums8, shared with batchnorm.cpp's rows). Converting every value to double
// first bounded both passes (the backward read only ~14 GB/s from DRAM on one thread).
constexpr int64_t kFlush = 256;

EMBER_AVX2 Sums stats_row_avx2(const float* x, int64_t n, double k) {
  const __m256 kv = _mm256_set1_ps(float(k));  // k is a value of the row: exact in float
  Sums s;
  const int64_t i = cpu::partial_sums8(
      n, kFlush,
      [=](int64_t j, __m256* u, __m256* v) EMBER_AVX2 {
        *u = *v = _mm256_sub_ps(_mm256_loadu_ps(x + j), kv);
      },
      &s.a, &s.b);
  for (int64_t j = i; j < n; ++j) {
    const double d = double(x[j]) - k;
    s.a += d;
    s.b += d * d;
  }
  return s;
}

// y[j, j + 8) of apply_row_avx2.
EMBER_AVX2 inline __m256 apply8(const float* x, const float* w, const float* b, int64_t j,
                                __m256 m, __m256 r) {
  __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), m), r);
  if (w && b)
    v = _mm256_fmadd_ps(v, _mm256_loadu_ps(w + j), _mm256_loadu_ps(b + j));
  else if (w)
    v = _mm256_mul_ps(v, _mm256_loadu_ps(w + j));
  else if (b)
    v = _mm256_add_ps(v, _mm256_loadu_ps(b + j));
  return v;
}

// One value of apply_row_avx2 outside its vectors, in the lanes' arithmetic.
EMBER_AVX2 inline float apply1(const float* x, const float* w, const float* b, int64_t i,
                               float mean, float rstd) {
  float v = (x[i] - mean) * rstd;
  if (w && b)
    v = std::fma(v, w[i], b[i]);
  else if (w)
    v *= w[i];
  else if (b)
    v += b[i];
  return v;
}

// nt: y by non-temporal stores (see kStreamBytes) from its first 32-byte boundary on.
EMBER_AVX2 void apply_row_avx2(const float* x, float* y, int64_t n, const float* w,
                               const float* b, float mean, float rstd, bool nt) {
  const __m256 m = _mm256_set1_ps(mean), r = _mm256_set1_ps(rstd);
  int64_t i = 0;
  if (nt) {
    for (; i < n && reinterpret_cast<uintptr_t>(y + i) % 32 != 0; ++i)
      y[i] = apply1(x, w, b, i, mean, rstd);
    for (; i + 8 <= n; i += 8) _mm256_stream_ps(y + i, apply8(x, w, b, i, m, r));
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, apply8(x, w, b, i, m, r));
  for (; i < n; ++i) y[i] = apply1(x, w, b, i, mean, rstd);
}

// gh = g*w (g without a weight) and xhat = (x - mean) * rstd in float, as the gradient pass
// forms them; their sums in float partials (kFlush).
EMBER_AVX2 Sums bsums_row_avx2(const float* g, const float* x, int64_t n, const float* w,
                               float mean, float rstd) {
  const __m256 m = _mm256_set1_ps(mean), r = _mm256_set1_ps(rstd);
  Sums s;
  const int64_t i = cpu::partial_sums8(
      n, kFlush,
      [=](int64_t j, __m256* u, __m256* v) EMBER_AVX2 {
        *u = _mm256_loadu_ps(g + j);
        if (w) *u = _mm256_mul_ps(*u, _mm256_loadu_ps(w + j));
        *v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), m), r);
      },
      &s.a, &s.b);
  for (int64_t j = i; j < n; ++j) {
    const double gh = double(g[j]) * (w ? double(w[j]) : 1.0);
    s.a += gh;
    s.b += gh * double((x[j] - mean) * rstd);
  }
  return s;
}

// One value of bgrad_row_avx2 outside its vectors.
EMBER_AVX2 inline void bgrad1(const float* g, const float* x, float* gx, const float* w,
                              int64_t i, float mean, float rstd, float ca, float cb, float* pw,
                              float* pb) {
  const float xh = (x[i] - mean) * rstd;
  if (gx) gx[i] = rstd * std::fma(-xh, cb, (w ? g[i] * w[i] : g[i]) - ca);
  if (pw) pw[i] = std::fma(g[i], xh, pw[i]);
  if (pb) pb[i] += g[i];
}

// kNT: gx by non-temporal stores from its first 32-byte boundary on.
template <bool kNT>
EMBER_AVX2 void bgrad_row_avx2(const float* g, const float* x, float* gx, int64_t n,
                               const float* w, float mean, float rstd, float ca, float cb,
                               float* pw, float* pb) {
  const __m256 m = _mm256_set1_ps(mean), r = _mm256_set1_ps(rstd), av = _mm256_set1_ps(ca),
               bv = _mm256_set1_ps(cb);
  int64_t i = 0;
  if (kNT)
    for (; i < n && reinterpret_cast<uintptr_t>(gx + i) % 32 != 0; ++i)
      bgrad1(g, x, gx, w, i, mean, rstd, ca, cb, pw, pb);
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), m), r);
    if (gx) {
      const __m256 gh = w ? _mm256_mul_ps(gv, _mm256_loadu_ps(w + i)) : gv;
      const __m256 t = _mm256_fnmadd_ps(xh, bv, _mm256_sub_ps(gh, av));
      if (kNT)
        _mm256_stream_ps(gx + i, _mm256_mul_ps(r, t));
      else
        _mm256_storeu_ps(gx + i, _mm256_mul_ps(r, t));
    }
    if (pw) _mm256_storeu_ps(pw + i, _mm256_fmadd_ps(gv, xh, _mm256_loadu_ps(pw + i)));
    if (pb) _mm256_storeu_ps(pb + i, _mm256_add_ps(gv, _mm256_loadu_ps(pb + i)));
  }
  for (; i < n; ++i) bgrad1(g, x, gx, w, i, mean, rstd, ca, cb, pw, pb);
}
#endif

// ---- row dispatch ---------------------------------------------------------------------------
template <typename T>
Sums stats_row(bool avx2, const T* x, int64_t n, double k) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return stats_row_avx2(x, n, k);
#endif
  (void)avx2;
  return stats_row_cpu(x, n, k);
}
template <typename T>
void apply_row(bool avx2, const T* x, T* y, int64_t n, const T* w, const T* b, T mean, T rstd,
               bool nt) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return apply_row_avx2(x, y, n, w, b, mean, rstd, nt);
#endif
  (void)avx2, (void)nt;
  apply_row_cpu(x, y, n, w, b, mean, rstd);
}
template <typename T>
Sums bsums_row(bool avx2, const T* g, const T* x, int64_t n, const T* w, T mean, T rstd) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return bsums_row_avx2(g, x, n, w, mean, rstd);
#endif
  (void)avx2;
  return bsums_row_cpu(g, x, n, w, mean, rstd);
}
template <typename T>
void bgrad_row(bool avx2, const T* g, const T* x, T* gx, int64_t n, const T* w, T mean, T rstd,
               T ca, T cb, T* pw, T* pb, bool nt) {
#if EMBER_COMPILED_AVX2
  if constexpr (std::is_same_v<T, float>)
    if (avx2)
      return nt && gx ? bgrad_row_avx2<true>(g, x, gx, n, w, mean, rstd, ca, cb, pw, pb)
                      : bgrad_row_avx2<false>(g, x, gx, n, w, mean, rstd, ca, cb, pw, pb);
#endif
  (void)avx2, (void)nt;
  bgrad_row_cpu(g, x, gx, n, w, mean, rstd, ca, cb, pw, pb);
}

// Pieces of whole rows: shape-only (see the header).
struct Split {
  int64_t rows, per, pieces;
  int nth;
};
Split make_split(int64_t rows, int64_t n) {
  Split s;
  s.rows = rows;
  const int64_t want = std::clamp<int64_t>(rows * n / kPieceN, 1, kMaxPieces);
  s.pieces = std::min(rows, want);
  s.per = (rows + s.pieces - 1) / s.pieces;
  s.pieces = (rows + s.per - 1) / s.per;
  s.nth = rows * n >= kParallelN ? cpu::get_num_threads() : 1;
  return s;
}

template <typename Fn>
void run_pieces(const Split& sp, Fn&& fn) {
  auto piece = [&](int64_t p) { fn(p, p * sp.per, std::min(sp.rows, (p + 1) * sp.per)); };
  if (sp.nth <= 1 || sp.pieces <= 1) {
    for (int64_t p = 0; p < sp.pieces; ++p) piece(p);
    return;
  }
  cpu::ClaimPool::instance().run(sp.nth, sp.pieces, piece);
}

template <typename T>
void fwd(const T* x, T* y, int64_t rows, int64_t n, const T* w, const T* b, double eps, bool rms,
         T* mean_out, T* rstd_out) {
  if (rows <= 0 || n <= 0) return;  // the caller handles empty rows
  const bool avx2 = cpu::avx2_selected();
  const Split sp = make_split(rows, n);
  const bool nt = rows * n * static_cast<int64_t>(sizeof(T)) >= kStreamBytes;
  run_pieces(sp, [&](int64_t, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * n;
      double mean = 0, var;
      if (rms) {
        var = stats_row<T>(avx2, xr, n, 0.0).b / double(n);
      } else {
        const double k = double(xr[0]);
        const Sums s = stats_row<T>(avx2, xr, n, k);
        mean = k + s.a / double(n);
        var = std::max(0.0, (s.b - s.a * (s.a / double(n))) / double(n));
        mean_out[r] = T(mean);
      }
      const double rstd = 1.0 / std::sqrt(var + eps);
      rstd_out[r] = T(rstd);
      apply_row<T>(avx2, xr, y + r * n, n, w, rms ? nullptr : b, T(mean), T(rstd), nt);
    }
#if EMBER_COMPILED_AVX2
    if (nt) _mm_sfence();  // this thread's streamed y, ordered before the pool's join
#endif
  });
}

template <typename T>
void bwd(const T* g, const T* x, int64_t rows, int64_t n, const T* mean, const T* rstd,
         const T* w, bool rms, T* gx, T* gw, T* gb) {
  if (rows <= 0 || n <= 0) {
    if (gw) std::fill(gw, gw + std::max<int64_t>(n, 0), T(0));
    if (gb) std::fill(gb, gb + std::max<int64_t>(n, 0), T(0));
    return;
  }
  const bool avx2 = cpu::avx2_selected();
  const bool nt = rows * n * static_cast<int64_t>(sizeof(T)) >= kStreamBytes;  // gx
  const Split sp = make_split(rows, n);
  thread_local std::vector<T> work;  // [pieces, n] for gw, then [pieces, n] for gb
  const int64_t nw = gw ? sp.pieces * n : 0, nb = gb ? sp.pieces * n : 0;
  if (work.size() < size_t(nw + nb)) work.resize(size_t(nw + nb));
  T* const pw_all = gw ? work.data() : nullptr;
  T* const pb_all = gb ? work.data() + nw : nullptr;
  run_pieces(sp, [&](int64_t p, int64_t r0, int64_t r1) {
    T* pw = pw_all ? pw_all + p * n : nullptr;
    T* pb = pb_all ? pb_all + p * n : nullptr;
    if (pw) std::fill(pw, pw + n, T(0));
    if (pb) std::fill(pb, pb + n, T(0));
    for (int64_t r = r0; r < r1; ++r) {
      const T* gr = g + r * n;
      const T* xr = x + r * n;
      if (n == 1 && !rms) {  // x - mean = 0 exactly: xhat = 0, gx = 0, gw += 0, gb += g
        if (gx) gx[r] = T(0);
        if (pb) pb[0] += gr[0];
        continue;
      }
      const T mu = rms ? T(0) : mean[r], rs = rstd[r];
      T ca = 0, cb = 0;
      if (gx) {
        const Sums s = bsums_row<T>(avx2, gr, xr, n, w, mu, rs);
        ca = rms ? T(0) : T(s.a / double(n));
        cb = T(s.b / double(n));
      }
      bgrad_row<T>(avx2, gr, xr, gx ? gx + r * n : nullptr, n, w, mu, rs, ca, cb, pw, pb, nt);
    }
  });
  auto reduce = [&](const T* part, T* out) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < sp.pieces; ++p) s += double(part[p * n + j]);
      out[j] = T(s);
    }
  };
  if (gw) reduce(pw_all, gw);
  if (gb) reduce(pb_all, gb);
}
}  // namespace

// ---- entry points -------------------------------------------------------------------------
void layernorm_fwd(const float* x, float* y, int64_t rows, int64_t n, const float* w,
                   const float* b, double eps, bool rms, float* mean, float* rstd) {
  fwd(x, y, rows, n, w, b, eps, rms, mean, rstd);
}
void layernorm_fwd(const double* x, double* y, int64_t rows, int64_t n, const double* w,
                   const double* b, double eps, bool rms, double* mean, double* rstd) {
  fwd(x, y, rows, n, w, b, eps, rms, mean, rstd);
}
void layernorm_bwd(const float* g, const float* x, int64_t rows, int64_t n, const float* mean,
                   const float* rstd, const float* w, bool rms, float* gx, float* gw, float* gb) {
  bwd(g, x, rows, n, mean, rstd, w, rms, gx, gw, gb);
}
void layernorm_bwd(const double* g, const double* x, int64_t rows, int64_t n,
                   const double* mean, const double* rstd, const double* w, bool rms,
                   double* gx, double* gw, double* gb) {
  bwd(g, x, rows, n, mean, rstd, w, rms, gx, gw, gb);
}

}  // namespace ember
