// attention.cpp -- scaled-dot-product attention, forward and backward, flash style (CPU).
//
// out[n, i, :] = sum_j softmax_j(s[n, i, :]) v[n, j, :],  s[n, i, j] = scale * q_i . k_j + mask
// q: [N, Lq, D], k: [N, Lk, D], v: [N, Lk, Dv], out: [N, Lq, Dv], all C-contiguous; N is every
// leading dim flattened (batch * heads); query and key lengths differ freely.
// lse: [N, Lq, 2], the rows' log-sum-exp saved for the backward as a hi + lo pair of T: lse is
// near the row's largest score, and P = exp(s - lse) through one rounded float lse would carry
// the absolute error ulp(|lse|) in its exponent; (s - hi) - lo keeps P as accurate as the
// forward's.
// Masks: `mask` (may be null) is additive and already in the data dtype (the Python layer turns
// a boolean mask into 0 / -inf). Batch n reads mask + ((n / mask_div) % mask_mod) * mask_bs,
// row i at + i * mask_rs (mask_rs = 0: one row for every query), columns contiguous; the
// div/mod pair expresses [B, 1] / [1, H] / [B, H] / [1, 1] broadcasts of a [B, H] batch.
// causal: PyTorch's is_causal, top-left aligned: query i sees keys j <= i.
// Fully-masked rows (every key masked, or Lk == 0) give out = 0 and lse hi = +inf, so the
// backward's recomputed P = exp(s - lse) is 0 there and every gradient is 0 -- never NaN.
// (PyTorch returns NaN for such rows; ember differs on purpose.)
//
// Variants:
// * AVX2 float (the fast path). Forward: a piece is one (n, 64-query tile); it walks 64-key
//   tiles with an online softmax (running max m and sum l per row, the accumulator rescaled by
//   exp(m_old - m_new) when the max grows), so the only score storage is a 64x64 tile in a
//   per-thread workspace that is reused across calls -- memory stays O(L * D). Causal skips the
//   key tiles entirely above the diagonal, and on diagonal tiles the query vectors before a
//   block of keys' diagonal and the keys past a block of queries' diagonal. Pool pieces are
//   runs of consecutive (n, tile) pieces, each prefetching the next one's first touches
//   (PfQueue, fwd_queue). Two layouts:
//   - AVX-512 (selected with the GEMM's rule, cpu::avx512_selected()): scores transposed,
//     S^T = K_j Q_i^T with the tile's 64 queries across the lanes (fwd_tile512). Q_i^T is
//     packed once per query tile, the softmax's row max and sum become vertical max / add over
//     key rows, P V reads P^T with unit stride, and the rescale by alpha rides in the P V
//     update of the accumulator. Products on micro_t: 6 rows x 64 columns, 24 zmm
//     accumulators, 24 FMAs per 37 uops (the 8 x 32 tile it replaced needed 29 for 16 and was
//     issue-bound; with that and the K^T transposes it had, 4x8x512x64 took 30 ms, now 21).
//   - AVX2: the same transposed layout on 8 lanes (fwd_tile_avx2), products on the 6x16 AVX2
//     micro-kernel (tile_mm), whose A operand is addressed by (row, k) strides.
//   Fused tiles (both layouts): a key tile with neither mask nor causal diagonal takes
//   P^T = exp(S^T - m) in the score kernel's epilogue (qk_exp_t, qk_exp8), against the running
//   max m of the earlier tiles rather than its own (on a row tile's first key tile, against the
//   max of its first block of 6 keys); exact while no score exceeds m by more than
//   kBaseSlack = 8 (P <= e^8, l and the accumulator at most e^8 larger than with the exact
//   max), and it saves the two passes over the score tile and the rescale. Masked and diagonal
//   tiles take the two-pass path; a tile past the bound is recomputed on it (one extra score
//   product). 1x12x1024x64, 1 thread: AVX-512 forward 35.0 -> 32.8 ms, AVX2 43.3 -> 36.3 ms
//   (with exp256_le88_ps and K chunks of 64).
//   exp512_ps and, on AVX2, exp256_le88_ps (vexp.h; its arguments here are <= 0, or <= 8 on
//   fused tiles, or belong to a fused tile that is recomputed) for the softmax.
//   Backward (FlashAttention-2): D_i = rowsum(dO_i * O_i) first, then per key tile j: recompute
//   S = Q K_j^T, P = exp(S - lse), dP = dO V_j^T, dS = scale * P * (dP - D_i), and accumulate
//   dV_j += P^T dO, dK_j += dS^T Q, dQ_i += dS K_j (tile_mm: micro_t under AVX-512, the 6x16
//   AVX2 micro-kernel otherwise; K_j^T and V_j^T packed once per key tile). A piece is a run
//   of whole n (all their key tiles), so dQ has one writer and needs no atomics or per-thread
//   copies; this caps the backward's parallelism at N pieces (N = batch * heads is >= 8 in
//   every realistic case). Each step prefetches what the next ones first touch, the next n of
//   the run included (PfQueue).
//   Why not gemm() per tile: its packing and dispatch would be paid per 64x64 tile product and
//   it would open the thread pool inside a pool piece (not measured against it).
// * Scalar template (float and double; double is the gradcheck path, float runs under
//   EMBER_NO_AVX2): per query row, the row's scores in an Lk-long per-thread buffer (O(L), not
//   O(L^2)), an exact max, then the sums; dot products accumulate in double. Backward per n,
//   row by row.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/common.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/vexp.h"
#include "kernels/kernels.h"

namespace ember {

namespace {

template <typename T>
const T* mask_batch(const AttnDims& d, const T* mask, int64_t n) {
  return mask ? mask + ((n / d.mask_div) % d.mask_mod) * d.mask_bs : nullptr;
}

// Accumulated in double: the scalar float path's one-accumulator sums over D (up to 256)
// would otherwise round well above a blocked float32 BLAS dot, and dP - D_i cancels.
template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<T>(s);
}

constexpr float kInf = std::numeric_limits<float>::infinity();

// lse = m + log(l) in double, stored as hi + lo (lo = 0 for a fully-masked row, m = +inf).
template <typename T>
void put_lse(T* dst, T m, T l) {
  if (std::isinf(m)) {
    dst[0] = m;
    dst[1] = 0;
    return;
  }
  const double x = static_cast<double>(m) + std::log(static_cast<double>(l));
  dst[0] = static_cast<T>(x);
  dst[1] = static_cast<T>(x - static_cast<double>(dst[0]));
}

}  // namespace

// ---- scalar reference ---------------------------------------------------------------------

template <typename T>
void attention_fwd_rows_cpu(const T* q, const T* k, const T* v, T* out, T* lse,
                            const AttnDims& d, const T* mask, int64_t n, int64_t i0,
                            int64_t i1) {
  static thread_local std::vector<T> srow;
  if (static_cast<int64_t>(srow.size()) < d.Lk) srow.resize(d.Lk);
  T* s = srow.data();
  const T inf = std::numeric_limits<T>::infinity();
  const T scale = static_cast<T>(d.scale);
  const T* mb = mask_batch(d, mask, n);
  for (int64_t i = i0; i < i1; ++i) {
    const T* qi = q + (n * d.Lq + i) * d.D;
    T* oi = out + (n * d.Lq + i) * d.Dv;
    const int64_t kend = d.causal ? std::min(d.Lk, i + 1) : d.Lk;
    const T* mrow = mb ? mb + i * d.mask_rs : nullptr;
    T m = -inf;
    for (int64_t j = 0; j < kend; ++j) {
      T sj = dot(qi, k + (n * d.Lk + j) * d.D, d.D) * scale;
      if (mrow) sj += mrow[j];
      s[j] = sj;
      m = std::max(m, sj);
    }
    std::fill(oi, oi + d.Dv, T(0));
    if (m == -inf) {  // fully masked (or no keys): 0 out, +inf lse -> zero gradients
      put_lse(lse + 2 * (n * d.Lq + i), inf, T(0));
      continue;
    }
    T l = 0;
    for (int64_t j = 0; j < kend; ++j) {
      const T p = std::exp(s[j] - m);
      if (p == T(0)) continue;
      l += p;
      const T* vj = v + (n * d.Lk + j) * d.Dv;
      for (int64_t c = 0; c < d.Dv; ++c) oi[c] += p * vj[c];
    }
    const T inv = T(1) / l;
    for (int64_t c = 0; c < d.Dv; ++c) oi[c] *= inv;
    put_lse(lse + 2 * (n * d.Lq + i), m, l);
  }
}

template <typename T>
void attention_bwd_batch_cpu(const T* q, const T* k, const T* v, const T* out, const T* lse,
                             const T* gout, T* gq, T* gk, T* gv, const AttnDims& d,
                             const T* mask, int64_t n) {
  const T scale = static_cast<T>(d.scale);
  const T* mb = mask_batch(d, mask, n);
  std::fill(gq + n * d.Lq * d.D, gq + (n + 1) * d.Lq * d.D, T(0));
  std::fill(gk + n * d.Lk * d.D, gk + (n + 1) * d.Lk * d.D, T(0));
  std::fill(gv + n * d.Lk * d.Dv, gv + (n + 1) * d.Lk * d.Dv, T(0));
  for (int64_t i = 0; i < d.Lq; ++i) {
    const int64_t r = n * d.Lq + i;
    const T* qi = q + r * d.D;
    const T* goi = gout + r * d.Dv;
    T* gqi = gq + r * d.D;
    const T di = dot(goi, out + r * d.Dv, d.Dv);
    const int64_t kend = d.causal ? std::min(d.Lk, i + 1) : d.Lk;
    const T* mrow = mb ? mb + i * d.mask_rs : nullptr;
    for (int64_t j = 0; j < kend; ++j) {
      const T* kj = k + (n * d.Lk + j) * d.D;
      const T* vj = v + (n * d.Lk + j) * d.Dv;
      T s = dot(qi, kj, d.D) * scale;
      if (mrow) s += mrow[j];
      const T p = std::exp((s - lse[2 * r]) - lse[2 * r + 1]);
      if (!(p > T(0))) continue;  // masked key or fully-masked row (lse = +inf)
      const T ds = p * (dot(goi, vj, d.Dv) - di) * scale;
      T* gkj = gk + (n * d.Lk + j) * d.D;
      T* gvj = gv + (n * d.Lk + j) * d.Dv;
      for (int64_t c = 0; c < d.D; ++c) {
        gqi[c] += ds * kj[c];
        gkj[c] += ds * qi[c];
      }
      for (int64_t c = 0; c < d.Dv; ++c) gvj[c] += p * goi[c];
    }
  }
}

template <typename T>
void attention_fwd_cpu(const T* q, const T* k, const T* v, T* out, T* lse, const AttnDims& d,
                       const T* mask) {
  constexpr int64_t kRows = 16;
  const int64_t tiles = (d.Lq + kRows - 1) / kRows;
  cpu::ClaimPool::instance().run(cpu::get_num_threads(), d.N * tiles, [&](int64_t p) {
    const int64_t n = p / tiles, i0 = (p % tiles) * kRows;
    attention_fwd_rows_cpu(q, k, v, out, lse, d, mask, n, i0, std::min(d.Lq, i0 + kRows));
  });
}

template <typename T>
void attention_bwd_cpu(const T* q, const T* k, const T* v, const T* out, const T* lse,
                       const T* gout, T* gq, T* gk, T* gv, const AttnDims& d, const T* mask) {
  cpu::ClaimPool::instance().run(cpu::get_num_threads(), d.N, [&](int64_t n) {
    attention_bwd_batch_cpu(q, k, v, out, lse, gout, gq, gk, gv, d, mask, n);
  });
}

template void attention_fwd_cpu<float>(const float*, const float*, const float*, float*, float*,
                                       const AttnDims&, const float*);
template void attention_fwd_cpu<double>(const double*, const double*, const double*, double*,
                                        double*, const AttnDims&, const double*);
template void attention_bwd_cpu<float>(const float*, const float*, const float*, const float*,
                                       const float*, const float*, float*, float*, float*,
                                       const AttnDims&, const float*);
template void attention_bwd_cpu<double>(const double*, const double*, const double*,
                                        const double*, const double*, const double*, double*,
                                        double*, double*, const AttnDims&, const double*);

// ---- AVX2 float path ----------------------------------------------------------------------
#if EMBER_COMPILED_AVX2
namespace {

constexpr int64_t kBq = 64;  // query rows per tile
constexpr int64_t kBk = 64;  // keys per tile (row stride of the score tiles)

// Row tails: masked loads, partial stores by cpu::store_first (not VEX masked stores, which
// are microcoded on AMD Zen; see common.h).
using cpu::tail_mask;

// K is summed in chunks of kKc whose partial sums are added into C: one FMA chain over
// D = 256 rounded ~3x worse (RMS) than float32 BLAS. Chunks of 64 (as micro_t's kKcT) keep the
// forward's and gradients' RMS error at <= 1.11x float32 numpy's at D = 64 and <= 0.62x at
// D = 256 (chunks of 32: 0.87x and 0.52x) and cost ~3% less than chunks of 32 (fewer C loads and
// stores between short calls; 1x12x1024x64 forward, AVX2, 42.3 -> 41.0 ms).
constexpr int64_t kKc = 64;

// The micro-kernels' share of the software prefetch (PfQueue): while pfn lines are left, one
// line at pf into L2 per k step. asm volatile: GCC deleted a loop of _mm_prefetch alone.
inline void pf_step(const char*& pf, int& pfn) {
  if (pfn > 0) {
    asm volatile("prefetcht1 %0" : : "m"(*pf));
    pf += 64;
    --pfn;
  }
}

// C[R x (8*NV)] (+)= A[R x K] B[K x 8*NV]. A[r][k] = A[r*ars + k*aks] (broadcast), B rows
// ldb apart, C rows ldc apart; MASK: the last 8-lane vector of B and C is partial (tm).
// pf, pfn: pfn lines from pf to prefetch into L2, one per k step (PfQueue; none: 0).
template <int R, int NV, bool MASK>
EMBER_AVX2 void micro(int64_t K, const float* A, int64_t ars, int64_t aks, const float* B,
                      int64_t ldb, float* C, int64_t ldc, __m256i tm, bool accum,
                      const char* pf, int pfn) {
  const int tail_n = MASK ? __builtin_popcount(_mm256_movemask_ps(_mm256_castsi256_ps(tm))) : 8;
  for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += kKc) {
    const int64_t k1 = std::min(K, k0 + kKc);
    __m256 c[R][NV];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) c[r][v] = _mm256_setzero_ps();
    for (int64_t kk = k0; kk < k1; ++kk) {
      const float* a = A + kk * aks;
      const float* b = B + kk * ldb;
      pf_step(pf, pfn);
      __m256 bv[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v)
        bv[v] = (MASK && v == NV - 1) ? _mm256_maskload_ps(b + 8 * v, tm)
                                      : _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        const __m256 ar = _mm256_broadcast_ss(a + r * ars);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) c[r][v] = _mm256_fmadd_ps(ar, bv[v], c[r][v]);
      }
    }
    const bool add = accum || k0 > 0;
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        float* cp = C + r * ldc + 8 * v;
        __m256 x = c[r][v];
        if (MASK && v == NV - 1) {
          if (add) x = _mm256_add_ps(x, _mm256_maskload_ps(cp, tm));
          cpu::store_first(cp, x, tail_n);
        } else {
          if (add) x = _mm256_add_ps(x, _mm256_loadu_ps(cp));
          _mm256_storeu_ps(cp, x);
        }
      }
    }
  }
}

using MicroFn = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*,
                         int64_t, __m256i, bool, const char*, int);

template <int NV, bool MASK>
constexpr MicroFn micro_for(int r) {
  return r == 1   ? &micro<1, NV, MASK>
         : r == 2 ? &micro<2, NV, MASK>
         : r == 3 ? &micro<3, NV, MASK>
         : r == 4 ? &micro<4, NV, MASK>
         : r == 5 ? &micro<5, NV, MASK>
                  : &micro<6, NV, MASK>;
}

// qk_exp_t's AVX2 twin (see there): R key rows x NV 8-query vectors of S^T = scale * K_j Q_i^T
// on the 6x16 register tile (K in chunks of kKc through C), then P^T = exp(S^T - mu) stored in
// place, the block's column max and sums folded into cmax / csum. B and C rows kBq apart.
// seed: mu is first set to this block's own column max (a row tile's first block).
template <int R, int NV>
EMBER_AVX2 void qk_exp8(int64_t K, const float* A, int64_t ars, const float* B, float* C,
                        float scale, float* mu, float* cmax, float* csum, bool seed,
                        const char* pf, int pfn) {
  const __m256 vs = _mm256_set1_ps(scale);
  for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += kKc) {
    const int64_t k1 = std::min(K, k0 + kKc);
    __m256 c[R][NV];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) c[r][v] = _mm256_setzero_ps();
    for (int64_t kk = k0; kk < k1; ++kk) {
      const float* b = B + kk * kBq;
      pf_step(pf, pfn);
      __m256 bv[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) bv[v] = _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        const __m256 ar = _mm256_broadcast_ss(A + r * ars + kk);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) c[r][v] = _mm256_fmadd_ps(ar, bv[v], c[r][v]);
      }
    }
    if (k1 < K) {  // not the last chunk: partial sums into C, as micro does
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) {
          float* cp = C + r * kBq + 8 * v;
          _mm256_storeu_ps(cp, k0 > 0 ? _mm256_add_ps(_mm256_loadu_ps(cp), c[r][v]) : c[r][v]);
        }
      continue;
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        const __m256 t = k0 > 0 ? _mm256_add_ps(_mm256_loadu_ps(C + r * kBq + 8 * v), c[r][v])
                                : c[r][v];
        c[r][v] = _mm256_mul_ps(t, vs);
      }
    if (seed)  // the row tile's first block: its own column max becomes the base
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        __m256 b = c[0][v];
#pragma GCC unroll 6
        for (int r = 1; r < R; ++r) b = _mm256_max_ps(c[r][v], b);
        _mm256_storeu_ps(mu + 8 * v, b);
      }
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const __m256 vm = _mm256_loadu_ps(mu + 8 * v);
      __m256 mx = _mm256_loadu_ps(cmax + 8 * v);
      __m256 sm = _mm256_loadu_ps(csum + 8 * v);
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        float* cp = C + r * kBq + 8 * v;
        const __m256 x = c[r][v];
        mx = _mm256_max_ps(x, mx);  // a NaN score skips the max (as in the two-pass path)
        const __m256 p = cpu::exp256_le88_ps(_mm256_sub_ps(x, vm));
        sm = _mm256_add_ps(sm, p);
        _mm256_storeu_ps(cp, p);
      }
      _mm256_storeu_ps(cmax + 8 * v, mx);
      _mm256_storeu_ps(csum + 8 * v, sm);
    }
  }
}

using QkExp8Fn = void (*)(int64_t, const float*, int64_t, const float*, float*, float, float*,
                          float*, float*, bool, const char*, int);

template <int NV>
constexpr QkExp8Fn qk_exp8_for(int r) {
  return r == 1   ? &qk_exp8<1, NV>
         : r == 2 ? &qk_exp8<2, NV>
         : r == 3 ? &qk_exp8<3, NV>
         : r == 4 ? &qk_exp8<4, NV>
         : r == 5 ? &qk_exp8<5, NV>
                  : &qk_exp8<6, NV>;
}

// Causal diagonal tiles (row r of the tile sees key columns <= r + diag): kNoDiag = all.
// Diag::outer is the transposed case (the backward's dV and dK: rows are keys, K runs over
// queries): row r's terms k < r - diag are 0.
constexpr int64_t kNoDiag = INT64_MAX / 4;
enum class Diag { none, cols, inner, outer };

// C[R x 16*NV] = scale * A B (+ rs[r] * C when accum; rs null: 1). A[r][k] = A[r*ars + k*aks]
// (broadcast), B rows ldb apart, C rows ldc apart; MASK: the last vector of B and C is
// partial (tm). K in chunks of kKcT (64: the scores of D <= 64 in one chain, whose RMS error
// measured 0.5x float32 numpy's at D = 256 -- 0.4x with chunks of 32, 1.0x with none).
// pf, pfn: as in micro.
constexpr int64_t kKcT = 64;
template <int R, int NV, bool MASK>
EMBER_AVX512 void micro_t(int64_t K, const float* A, int64_t ars, int64_t aks, const float* B,
                          int64_t ldb, float* C, int64_t ldc, __mmask16 tm, bool accum,
                          float scale, const float* rs, const char* pf, int pfn) {
  const __m512 vs = _mm512_set1_ps(scale);
  for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += kKcT) {
    const int64_t k1 = std::min(K, k0 + kKcT);
    __m512 c[R][NV];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[r][v] = _mm512_setzero_ps();
    for (int64_t kk = k0; kk < k1; ++kk) {
      const float* a = A + kk * aks;
      const float* b = B + kk * ldb;
      pf_step(pf, pfn);
      __m512 bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        bv[v] = (MASK && v == NV - 1) ? _mm512_maskz_loadu_ps(tm, b + 16 * v)
                                      : _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        const __m512 ar = _mm512_set1_ps(a[r * ars]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) c[r][v] = _mm512_fmadd_ps(ar, bv[v], c[r][v]);
      }
    }
    const bool add = accum || k0 > 0;
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m512 vr = _mm512_set1_ps(rs && k0 == 0 ? rs[r] : 1.0f);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        float* cp = C + r * ldc + 16 * v;
        const __m512 x = _mm512_mul_ps(c[r][v], vs);
        if (MASK && v == NV - 1)
          _mm512_mask_storeu_ps(
              cp, tm, add ? _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, cp), vr, x) : x);
        else
          _mm512_storeu_ps(cp, add ? _mm512_fmadd_ps(_mm512_loadu_ps(cp), vr, x) : x);
      }
    }
  }
}

using MicroTFn = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t,
                          float*, int64_t, __mmask16, bool, float, const float*, const char*,
                          int);

template <int R, bool MASK>
constexpr MicroTFn micro_t_nv(int nv) {
  return nv == 1 ? &micro_t<R, 1, MASK>
         : nv == 2 ? &micro_t<R, 2, MASK>
         : nv == 3 ? &micro_t<R, 3, MASK>
                   : &micro_t<R, 4, MASK>;
}

template <bool MASK>
constexpr MicroTFn micro_t_for(int r, int nv) {
  return r == 1   ? micro_t_nv<1, MASK>(nv)
         : r == 2 ? micro_t_nv<2, MASK>(nv)
         : r == 3 ? micro_t_nv<3, MASK>(nv)
         : r == 4 ? micro_t_nv<4, MASK>(nv)
         : r == 5 ? micro_t_nv<5, MASK>(nv)
                  : micro_t_nv<6, MASK>(nv);
}

// The forward's fused score block: R key rows x NV query vectors of S^T = scale * K_j Q_i^T
// as in micro_t (K in chunks of kKcT added through C), then, while the last chunk's sums are in
// registers, P^T = exp(S^T - mu) is stored in place of S^T and the block's column max of S^T and
// sums of P^T are folded into cmax / csum (NV vectors each). mu is the running max of the
// earlier key tiles, not this tile's: see fwd_tile512 for when that is allowed. seed: mu is
// first set to this block's own column max (a row tile's first block, where no mu exists).
template <int R, int NV>
EMBER_AVX512 void qk_exp_t(int64_t K, const float* A, int64_t ars, const float* B, float* C,
                           float scale, float* mu, float* cmax, float* csum, bool seed,
                           const char* pf, int pfn) {
  const __m512 vs = _mm512_set1_ps(scale);
  for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += kKcT) {
    const int64_t k1 = std::min(K, k0 + kKcT);
    __m512 c[R][NV];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[r][v] = _mm512_setzero_ps();
    for (int64_t kk = k0; kk < k1; ++kk) {
      const float* b = B + kk * kBq;
      pf_step(pf, pfn);
      __m512 bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        const __m512 ar = _mm512_set1_ps(A[r * ars + kk]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) c[r][v] = _mm512_fmadd_ps(ar, bv[v], c[r][v]);
      }
    }
    if (k1 < K) {  // not the last chunk: partial sums into C, as micro_t does
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          float* cp = C + r * kBq + 16 * v;
          _mm512_storeu_ps(cp, k0 > 0 ? _mm512_add_ps(_mm512_loadu_ps(cp), c[r][v]) : c[r][v]);
        }
      continue;
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const __m512 t = k0 > 0 ? _mm512_add_ps(_mm512_loadu_ps(C + r * kBq + 16 * v), c[r][v])
                                : c[r][v];
        c[r][v] = _mm512_mul_ps(t, vs);
      }
    if (seed)  // the row tile's first block: its own column max becomes the base
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        __m512 b = c[0][v];
#pragma GCC unroll 6
        for (int r = 1; r < R; ++r) b = _mm512_max_ps(c[r][v], b);
        _mm512_storeu_ps(mu + 16 * v, b);
      }
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __m512 vm = _mm512_loadu_ps(mu + 16 * v);
      __m512 mx = _mm512_loadu_ps(cmax + 16 * v);
      __m512 sm = _mm512_loadu_ps(csum + 16 * v);
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        float* cp = C + r * kBq + 16 * v;
        const __m512 x = c[r][v];
        mx = _mm512_max_ps(x, mx);  // a NaN score skips the max (as in the two-pass path)
        const __m512 p = cpu::exp512_ps(_mm512_sub_ps(x, vm));
        sm = _mm512_add_ps(sm, p);
        _mm512_storeu_ps(cp, p);
      }
      _mm512_storeu_ps(cmax + 16 * v, mx);
      _mm512_storeu_ps(csum + 16 * v, sm);
    }
  }
}

using QkExpFn = void (*)(int64_t, const float*, int64_t, const float*, float*, float, float*,
                         float*, float*, bool, const char*, int);

template <int R>
constexpr QkExpFn qk_exp_nv(int nv) {
  return nv == 1 ? &qk_exp_t<R, 1> : nv == 2 ? &qk_exp_t<R, 2> : nv == 3 ? &qk_exp_t<R, 3>
                                                                         : &qk_exp_t<R, 4>;
}

constexpr QkExpFn qk_exp_for(int r, int nv) {
  return r == 1   ? qk_exp_nv<1>(nv)
         : r == 2 ? qk_exp_nv<2>(nv)
         : r == 3 ? qk_exp_nv<3>(nv)
         : r == 4 ? qk_exp_nv<4>(nv)
         : r == 5 ? qk_exp_nv<5>(nv)
                  : qk_exp_nv<6>(nv);
}

// Software prefetch, spread over the tile products (forward and backward). A step of the
// backward (one query tile against one key tile) first touches tiles of Q, dO, K, V and of
// the three gradients; with the arrays out of cache those first touches (misses in the K / V
// transposes, the products' loads and the gradient stores, one after another) cost the
// 8x8x128x64 backward (1 thread) ~15%: 83% of the FMA peak at 16 heads (4 MiB of arrays),
// 69-72% at 64 (16 MiB). Each step queues the ranges the next steps touch first (queue_next,
// fwd_queue) and each micro-kernel call of the products issues the next few lines of them,
// one per k step (PREFETCHT1: into L2, not L1, on Zen 4). Issued as bursts of whole tiles
// instead, the prefetches stalled on the miss buffers about as long as the misses they saved
// (the micro-kernels' side: pf_step). Alternated builds, 1 thread: 8x8x128x64 backward
// AVX-512 8.3-8.6 -> 7.6-7.8 ms, AVX2 8.5-8.9 -> 7.6-7.9 ms; 4x8x512x64 and 1x12x1024x64 1-3%
// or within noise. Forward, median of 15-20 alternations: AVX-512 1-3% (4x8x512x64 causal
// 6%), AVX2 2-6%.
struct PfQueue {
  static constexpr int kMax = 24;  // ranges; queue_next adds at most 11 per step
  const char* p[kMax];
  const char* e[kMax];
  int n = 0, cur = 0;
  void add(const float* ptr, int64_t floats) {
    if (cur == n) n = cur = 0;
    if (n == kMax || floats <= 0) return;  // full: dropped (a prefetch is only a hint)
    p[n] = reinterpret_cast<const char*>(ptr);
    e[n] = p[n] + floats * static_cast<int64_t>(sizeof(float));
    ++n;
  }
  // Up to `lines` lines of the current range, contiguous from *start; returns the count.
  int take(int lines, const char** start) {
    if (cur == n) return 0;
    *start = p[cur];
    const int64_t left = (e[cur] - p[cur] + 63) / 64;
    const int got = static_cast<int>(std::min<int64_t>(lines, left));
    p[cur] += 64 * static_cast<int64_t>(got);
    if (p[cur] >= e[cur]) ++cur;
    return got;
  }
};
// Lines per micro-kernel call: an 8x8x128x64 head queues ~4,600 lines over its ~220 micro_t
// calls; 12 per call left the queue behind (no gain), 24 and 48 measured alike. The AVX2
// micro-kernel does a quarter of micro_t's work per call.
constexpr int kPfLinesT = 48;
constexpr int kPfLines = 16;

// C[M x N] = scale * A B (+ C when accum) on micro_t: 6-row blocks, 64-column panels. Diag as
// in tile_mm: Diag::cols ends each row block's columns at its last row's diagonal column (a
// masked last vector; the caller zeroes what lies past each row's own diagonal), Diag::inner
// ends K there.

EMBER_AVX512 void tile_mm512(int64_t M, int64_t N, int64_t K, const float* A, int64_t ars,
                             int64_t aks, const float* B, int64_t ldb, float* C, int64_t ldc,
                             bool accum, float scale = 1.0f, Diag dmode = Diag::none,
                             int64_t diag = kNoDiag, PfQueue* pf = nullptr) {
  for (int64_t r0 = 0; r0 < M; r0 += 6) {
    const int r = static_cast<int>(std::min<int64_t>(6, M - r0));
    const int64_t last = r0 + r - 1 + diag;  // the block's last row's diagonal column
    const int64_t n = dmode == Diag::cols ? std::clamp<int64_t>(last + 1, 0, N) : N;
    const int64_t kk = dmode == Diag::inner ? std::clamp<int64_t>(last + 1, 0, K) : K;
    const int64_t k0 = dmode == Diag::outer ? std::clamp<int64_t>(r0 - diag, 0, K) : 0;
    if (accum && kk == k0) continue;
    for (int64_t c0 = 0; c0 < n; c0 += 64) {
      const int64_t nc = std::min<int64_t>(64, n - c0);
      const int nv = static_cast<int>((nc + 15) / 16);
      const int64_t rem = nc - 16 * (nv - 1);
      const __mmask16 tm = static_cast<__mmask16>((1u << rem) - 1u);
      const MicroTFn f = rem < 16 ? micro_t_for<true>(r, nv) : micro_t_for<false>(r, nv);
      const char* pfs = nullptr;
      const int pfn = pf ? pf->take(kPfLinesT, &pfs) : 0;
      f(kk - k0, A + r0 * ars + k0 * aks, ars, aks, B + k0 * ldb + c0, ldb, C + r0 * ldc + c0,
        ldc, tm, accum, scale, nullptr, pfs, pfn);
    }
  }
}

// C[M x N] (+)= A[M x K] B[K x N] on the AVX2 micro-kernel (tile_mm512 where AVX-512 is
// selected): column panels outer (the K x 16 B panel stays in L1 while row blocks of A stream
// past it). On a causal diagonal tile,
// Diag::cols skips the column panels wholly right of a row block's diagonal (Q K^T: those
// scores are masked anyway), Diag::inner stops K at the block's diagonal (P V: the P
// entries past it are 0) and Diag::outer starts K at its first row's (P^T dO, dS^T Q), so a
// diagonal tile costs about half of a full one.
EMBER_AVX2 void tile_mm(int64_t M, int64_t N, int64_t K, const float* A, int64_t ars,
                        int64_t aks, const float* B, int64_t ldb, float* C, int64_t ldc,
                        bool accum, Diag dmode = Diag::none, int64_t diag = kNoDiag,
                        PfQueue* pf = nullptr) {
  if (cpu::avx512_selected()) {
    tile_mm512(M, N, K, A, ars, aks, B, ldb, C, ldc, accum, 1.0f, dmode, diag, pf);
    return;
  }
  for (int64_t c0 = 0; c0 < N; c0 += 16) {
    const int64_t nc = std::min<int64_t>(16, N - c0);
    const int nv = nc > 8 ? 2 : 1;
    const int64_t rem = nc - 8 * (nv - 1);
    const bool mask = rem < 8;
    const __m256i tm = tail_mask(rem);
    for (int64_t r0 = 0; r0 < M; r0 += 6) {
      const int r = static_cast<int>(std::min<int64_t>(6, M - r0));
      const int64_t last = r0 + r - 1 + diag;
      if (dmode == Diag::cols && c0 > last) continue;
      const int64_t kk = dmode == Diag::inner ? std::clamp<int64_t>(last + 1, 0, K) : K;
      const int64_t k0 = dmode == Diag::outer ? std::clamp<int64_t>(r0 - diag, 0, K) : 0;
      MicroFn f = nv == 2 ? (mask ? micro_for<2, true>(r) : micro_for<2, false>(r))
                          : (mask ? micro_for<1, true>(r) : micro_for<1, false>(r));
      const char* pfs = nullptr;
      const int pfn = pf ? pf->take(kPfLines, &pfs) : 0;
      f(kk - k0, A + r0 * ars + k0 * aks, ars, aks, B + k0 * ldb + c0, ldb, C + r0 * ldc + c0,
        ldc, tm, accum, pfs, pfn);
    }
  }
}

// col[c][j] = src[j][c] for an 8 x 8 block (rows lds floats apart): its columns in registers.
EMBER_AVX2 inline void tr8x8_regs(const float* src, int64_t lds, __m256* col) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    col[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    col[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// dst[c][j] = src[j][c] for an 8 x 8 block (rows lds / ldd floats apart).
EMBER_AVX2 inline void tr8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 col[8];
  tr8x8_regs(src, lds, col);
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + i * ldd, col[i]);
}

// kt[c][j] = src[j][c] for j < nk, c < cols: a key tile transposed, rows kBk floats apart.
// 8 x 8 register transposes (a scalar transpose of a 64 x 64 tile cost about half as much as
// the tile's two products), scalar for the edges.
EMBER_AVX2 void pack_t(const float* src, int64_t nk, int64_t cols, float* kt) {
  const int64_t nk8 = nk / 8 * 8, c8 = cols / 8 * 8;
  for (int64_t j = 0; j < nk8; j += 8)
    for (int64_t c = 0; c < c8; c += 8) tr8x8(src + j * cols + c, cols, kt + c * kBk + j, kBk);
  for (int64_t j = 0; j < nk; ++j) {
    const float* s = src + j * cols;
    for (int64_t c = j < nk8 ? c8 : 0; c < cols; ++c) kt[c * kBk + j] = s[c];
  }
}

// The backward's row pass over a whole tile under AVX-512; S is already scaled by its
// product. Row r: s += mrow (mask row r, may be null), then p = exp((s - hi_r) - lo_r) into S
// and dS = p * (dP - D_r) * scale into dP for j < nv_r (nv_r = the causal diagonal's cut:
// r + 1 + diag, clamped to [0, nk]); both are 0 for nv_r <= j < nk (maybe never computed).
// Whole tile in one loop, four vectors per row unrolled: the exps' long dependency chains
// overlap only when there is independent work in flight (one row per call ran at 33 TSC
// cycles per 16-lane vector, this at ~23).
EMBER_AVX512 void bwd_rows512(float* S, float* dP, int64_t nq, int64_t nk, int64_t diag,
                              const float* mask, int64_t mask_rs, const float* lse,
                              const float* di, float scale) {
  const __m512 vs = _mm512_set1_ps(scale);
  const auto lanes = [](int64_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xFFFF)
                   : static_cast<__mmask16>(n <= 0 ? 0u : (1u << n) - 1u);
  };
  for (int64_t r = 0; r < nq; ++r) {
    float* s = S + r * kBk;
    float* dp = dP + r * kBk;
    const float* mrow = mask ? mask + r * mask_rs : nullptr;
    const int64_t nv = std::clamp<int64_t>(r + 1 + diag, 0, nk);
    const __m512 vhi = _mm512_set1_ps(lse[2 * r]), vlo = _mm512_set1_ps(lse[2 * r + 1]);
    const __m512 vd = _mm512_set1_ps(di[r]);
#pragma GCC unroll 4
    for (int64_t j = 0; j < kBk; j += 16) {
      if (j >= nk) break;
      // Whole vectors plain: masked stores are slow on Zen 4 (they were ~70% of this pass).
      // The stores may always be whole (S and dP rows are kBk floats); a partial vector's
      // loads stay masked (the mask row may end there, and p must be 0 past the diagonal).
      const bool whole = j + 16 <= nv;
      const __mmask16 m = lanes(nv - j);
      __m512 x = whole ? _mm512_loadu_ps(s + j) : _mm512_maskz_loadu_ps(m, s + j);
      if (mrow)
        x = _mm512_add_ps(x, whole ? _mm512_loadu_ps(mrow + j)
                                   : _mm512_maskz_loadu_ps(m, mrow + j));
      __m512 p = cpu::exp512_ps(_mm512_sub_ps(_mm512_sub_ps(x, vhi), vlo));
      if (!whole) p = _mm512_maskz_mov_ps(m, p);
      const __m512 g = whole ? _mm512_loadu_ps(dp + j) : _mm512_maskz_loadu_ps(m, dp + j);
      const __m512 t = _mm512_mul_ps(p, _mm512_sub_ps(g, vd));
      _mm512_storeu_ps(s + j, p);
      _mm512_storeu_ps(dp + j, _mm512_mul_ps(t, vs));
    }
  }
}

// dst[c][i] = src[i][c] for i < rows, c < cols (src rows lds apart, dst rows ldd apart).
EMBER_AVX2 void transpose_tile(const float* src, int64_t lds, int64_t rows, int64_t cols,
                               float* dst, int64_t ldd) {
  const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (int64_t i = 0; i < r8; i += 8)
    for (int64_t c = 0; c < c8; c += 8) tr8x8(src + i * lds + c, lds, dst + c * ldd + i, ldd);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = i < r8 ? c8 : 0; c < cols; ++c) dst[c * ldd + i] = src[i * lds + c];
}

// Lanes of the query vector starting at column c0 that key row jr may see on a causal
// diagonal tile: query column ic sees key row jr when ic >= jr + off.
EMBER_AVX512 inline __mmask16 causal_lanes(int64_t jr, int64_t off, int64_t c0) {
  const int64_t t = jr + off - c0;  // first visible lane
  if (t <= 0) return static_cast<__mmask16>(0xFFFF);
  if (t >= 16) return 0;
  return static_cast<__mmask16>(0xFFFFu << t);
}

// The forward pieces' per-thread workspace, both layouts: Q_i^T [D][kBq], the score tile S^T
// and the transposed mask tile [kBk][kBq], the accumulator [kBq][ldacc] and the per-query
// running max m, sum l and rescale factor alpha.
struct FwdWs {
  std::vector<float> qt, st, mt, acc, m, l, alpha;
  PfQueue pf;

  // Sizes the buffers, packs the query tile (nq rows of D; lanes past nq become zero queries)
  // and resets acc, m and l.
  EMBER_AVX2 void begin(const float* qtile, int64_t nq, int64_t D, int64_t ldacc) {
    if (static_cast<int64_t>(qt.size()) < D * kBq) qt.resize(D * kBq);
    if (st.size() < static_cast<size_t>(kBk * kBq)) {
      st.resize(kBk * kBq);
      mt.resize(kBk * kBq);
      for (auto* a : {&m, &l, &alpha}) a->resize(kBq);
    }
    if (static_cast<int64_t>(acc.size()) < kBq * ldacc) acc.resize(kBq * ldacc);
    transpose_tile(qtile, D, nq, D, qt.data(), kBq);
    if (nq < kBq)
      for (int64_t c = 0; c < D; ++c) std::fill(&qt[c * kBq + nq], &qt[(c + 1) * kBq], 0.0f);
    std::fill(acc.begin(), acc.begin() + nq * ldacc, 0.0f);
    std::fill(m.begin(), m.end(), -kInf);
    std::fill(l.begin(), l.end(), 0.0f);
  }

  // out rows = acc / l and their lse; a query that saw no unmasked key (l = 0) gets 0 and +inf.
  void finish(float* out, float* lse, int64_t nq, int64_t Dv, int64_t ldacc) const {
    for (int64_t i = 0; i < nq; ++i) {
      const float* a = &acc[i * ldacc];
      const bool empty = !(l[i] > 0.0f);
      const float inv = empty ? 0.0f : 1.0f / l[i];
      for (int64_t c = 0; c < Dv; ++c) out[i * Dv + c] = a[c] * inv;
      put_lse(lse + 2 * i, empty ? kInf : m[i], empty ? 0.0f : l[i]);
    }
  }
};

EMBER_AVX2 FwdWs& fwd_ws() {
  static thread_local FwdWs ws;
  return ws;
}


// The fused forward tile's preconditions (fwd_tile512, fwd_tile_avx2): every query lane's
// running max m is finite (not -inf: no unmasked key seen yet; not NaN), and afterwards no
// score of the tile exceeded it by more than kBaseSlack (false for a NaN max too). n lanes.
constexpr float kBaseSlack = 8.0f;
EMBER_AVX2 inline bool finite_base(const float* m, int64_t n) {
  for (int64_t i = 0; i < n; i += 8)
    if (_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(m + i), _mm256_set1_ps(-kInf),
                                         _CMP_GT_OQ)) != 0xFF)
      return false;
  return true;
}

EMBER_AVX2 inline bool within_slack(const float* cmax, const float* m, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 lim = _mm256_add_ps(_mm256_loadu_ps(m + i), _mm256_set1_ps(kBaseSlack));
    if (_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(cmax + i), lim, _CMP_LE_OQ)) != 0xFF)
      return false;
  }
  return true;
}

// The forward's t-th key tile of ntiles. Causal: the last tile (the diagonal one) first -- it
// gives every query of the tile a finite running max, so all the tiles left of it take the
// fused path (in key order the first of them would be two-pass).
inline int64_t key_tile(int64_t t, int64_t ntiles, bool causal) {
  return (causal ? (t == 0 ? ntiles - 1 : t - 1) : t) * kBk;
}

// The forward's prefetch (PfQueue, as the backward's): a forward piece's next piece in the
// same pool run (n2 = -1: none).
struct FwdNext {
  int64_t n2 = -1, i2 = 0;
};
// Before key tile step t (of T) of the piece (n, keys below kend): queue the K and V rows of
// its step t + 1, and step t's share of what the next piece touches first: its query and
// output rows and, for a new n, its first key tile's K and V rows. (Queuing K and V only on a
// run's first piece of each n, whose K and V are not yet in this core's caches, measured the
// same: 0.98-1.03x.)
EMBER_AVX2 void fwd_queue(PfQueue& pf, const float* q, const float* k, const float* v,
                          const float* out, const AttnDims& d, int64_t n, int64_t kend,
                          int64_t t, int64_t T, const FwdNext& nx) {
  const int64_t D = d.D, Dv = d.Dv, n2 = nx.n2, i2 = nx.i2;
  if (t + 1 < T) {
    const int64_t j1 = key_tile(t + 1, T, d.causal), nk1 = std::min(kBk, kend - j1);
    pf.add(k + (n * d.Lk + j1) * D, nk1 * D);
    pf.add(v + (n * d.Lk + j1) * Dv, nk1 * Dv);
  }
  if (n2 < 0) return;
  const auto share = [&](const float* base, int64_t rows, int64_t w) {
    const int64_t a = rows * t / T, b = rows * (t + 1) / T;
    pf.add(base + a * w, (b - a) * w);
  };
  const int64_t nq2 = std::min(kBq, d.Lq - i2), r2 = n2 * d.Lq + i2;
  share(q + r2 * D, nq2, D);
  share(out + r2 * Dv, nq2, Dv);
  const int64_t kend2 = d.causal ? std::min(d.Lk, i2 + nq2) : d.Lk;
  if (n2 != n && kend2 > 0) {
    const int64_t T2 = (kend2 + kBk - 1) / kBk;
    const int64_t j = key_tile(0, T2, d.causal), nk = std::min(kBk, kend2 - j);
    share(k + (n2 * d.Lk + j) * D, nk, D);
    share(v + (n2 * d.Lk + j) * Dv, nk, Dv);
  }
}

// One (n, 64-query tile) piece of the AVX-512 forward, scores transposed (S^T = K_j Q_i^T):
// see the header. Lanes past nq hold zero queries and are never read back.
EMBER_AVX512 void fwd_tile512(const float* q, const float* k, const float* v, float* out,
                              float* lse, const AttnDims& d, const float* mask, int64_t n,
                              int64_t i0, const FwdNext& nx) {
  const int64_t D = d.D, Dv = d.Dv;
  const int64_t ldacc = (Dv + 15) / 16 * 16;
  const int64_t nq = std::min(kBq, d.Lq - i0);
  FwdWs& ws = fwd_ws();
  ws.begin(q + (n * d.Lq + i0) * D, nq, D, ldacc);
  float *qt = ws.qt.data(), *st = ws.st.data(), *mt = ws.mt.data(), *acc = ws.acc.data();
  float *m = ws.m.data(), *l = ws.l.data(), *alpha = ws.alpha.data();
  const float scale = static_cast<float>(d.scale);
  const int64_t nvq = (nq + 15) / 16;  // query vectors (lanes past nq: zero queries, unused)
  const float* kb = k + n * d.Lk * D;
  const float* vb = v + n * d.Lk * Dv;
  const float* mb = mask_batch(d, mask, n);
  const int64_t kend = d.causal ? std::min(d.Lk, i0 + nq) : d.Lk;
  const int dnv = static_cast<int>(std::min<int64_t>(4, (Dv + 15) / 16));
  const int64_t ntiles = (kend + kBk - 1) / kBk;
  for (int64_t t = 0; t < ntiles; ++t) {
    const int64_t j0 = key_tile(t, ntiles, d.causal);
    const int64_t nk = std::min(kBk, kend - j0);
    fwd_queue(ws.pf, q, k, v, out, d, n, kend, t, ntiles, nx);
    const int64_t off = j0 - i0;  // causal: query column ic sees key row jr iff ic >= jr + off
    const bool diag = d.causal && j0 + nk - 1 > i0;
    // Fused: a tile with neither mask nor diagonal, once every query has a finite running max
    // m, computes P^T = exp(S^T - m) in the score kernel's epilogue (qk_exp_t), against the
    // earlier tiles' max instead of its own: that is exact as long as no score exceeds m by
    // more than kBaseSlack (P <= e^8 then, far from float overflow), and it saves the two
    // passes over the tile and the rescale (alpha = 1, m stays the base of P). A tile that
    // breaks the bound is recomputed on the two-pass path.
    // The row tile's first key tile (t == 0, m all -inf) is fused too: its first block of 6
    // key rows seeds m with its own column max (undone if the tile falls back).
    bool fused = false;
    const bool seed = t == 0 && !diag && !mb;
    if (!diag && !mb && (seed || finite_base(m, 16 * nvq))) {
      alignas(64) float cmax[kBq], csum[kBq];
      std::fill(cmax, cmax + 16 * nvq, -kInf);
      std::fill(csum, csum + 16 * nvq, 0.0f);
      const QkExpFn f6 = qk_exp_for(6, static_cast<int>(nvq));
      for (int64_t r0 = 0; r0 < nk; r0 += 6) {
        const int r = static_cast<int>(std::min<int64_t>(6, nk - r0));
        const char* pfs = nullptr;
        const int pfn = ws.pf.take(kPfLinesT, &pfs);
        (r == 6 ? f6 : qk_exp_for(r, static_cast<int>(nvq)))(D, kb + (j0 + r0) * D, D, qt,
                                                              st + r0 * kBq, scale, m, cmax,
                                                              csum, seed && r0 == 0, pfs, pfn);
      }
      fused = (!seed || finite_base(m, 16 * nvq)) && within_slack(cmax, m, 16 * nvq);
      if (fused)
        for (int64_t c = 0; c < nvq; ++c)
          _mm512_storeu_ps(l + 16 * c, _mm512_add_ps(_mm512_loadu_ps(l + 16 * c),
                                                     _mm512_loadu_ps(csum + 16 * c)));
      else if (seed)
        std::fill(m, m + 16 * nvq, -kInf);
    }
    if (!fused) {
      // S^T = scale * K_j Q_i^T; on a diagonal tile a block of key rows skips the query
      // vectors wholly left of its first row's diagonal (masked for every row of the block)
      for (int64_t r0 = 0; r0 < nk; r0 += 6) {
        const int r = static_cast<int>(std::min<int64_t>(6, nk - r0));
        const int64_t v0 = diag ? std::clamp<int64_t>((r0 + off) / 16, 0, nvq) : 0;
        if (v0 >= nvq) continue;
        const char* pfs = nullptr;
        const int pfn = ws.pf.take(kPfLinesT, &pfs);
        micro_t_for<false>(r, static_cast<int>(nvq - v0))(D, kb + (j0 + r0) * D, D, 1,
                                                         qt + 16 * v0, kBq, st + r0 * kBq + 16 * v0,
                                                         kBq, 0, false, scale, nullptr, pfs,
                                                         pfn);
      }
      const float* mrow = nullptr;  // mask_rs == 0: one mask row for every query
      if (mb && d.mask_rs != 0)
        transpose_tile(mb + i0 * d.mask_rs + j0, d.mask_rs, nq, nk, mt, kBq);
      else if (mb)
        mrow = mb + j0;
      // pass 1: the mask, the column max over the key rows, the new running max mu and the
      // rescale factor alpha = exp(m_old - mu); pass 2: P^T = exp(S^T - mu) and its column sums
      __m512 vmax[4], vmu[4], vsum[4];
      for (int64_t c = 0; c < nvq; ++c) vmax[c] = _mm512_set1_ps(-kInf);
      // On a diagonal tile, row jr's query vectors wholly left of its diagonal (all lanes
      // masked) skip the max and the exp: the exp pass stores their zeros (the 6-query blocks of
      // P V straddle vectors, so some of those lanes are read).
      const auto first_vec = [&](int64_t jr) {
        return diag ? std::clamp<int64_t>((jr + off) / 16, 0, nvq) : 0;
      };
      for (int64_t jr = 0; jr < nk; ++jr) {
        float* srow = st + jr * kBq;
        for (int64_t c = first_vec(jr); c < nvq; ++c) {
          __m512 x = _mm512_loadu_ps(srow + 16 * c);
          if (mb) {
            x = _mm512_add_ps(x, mrow ? _mm512_set1_ps(mrow[jr])
                                      : _mm512_loadu_ps(mt + jr * kBq + 16 * c));
            _mm512_storeu_ps(srow + 16 * c, x);
          }
          const __mmask16 lanes = diag ? causal_lanes(jr, off, 16 * c) : 0xFFFF;
          vmax[c] = _mm512_mask_max_ps(vmax[c], lanes, x, vmax[c]);
        }
      }
      for (int64_t c = 0; c < nvq; ++c) {
        const __m512 mold = _mm512_loadu_ps(m + 16 * c);
        const __m512 mnew = _mm512_max_ps(vmax[c], mold);
        // all -inf so far: mu = 0 keeps exp() finite (and exp(-inf - 0) = 0)
        vmu[c] = _mm512_mask_mov_ps(mnew, _mm512_cmp_ps_mask(mnew, _mm512_set1_ps(-kInf),
                                                             _CMP_EQ_OQ),
                                    _mm512_setzero_ps());
        _mm512_storeu_ps(alpha + 16 * c, cpu::exp512_ps(_mm512_sub_ps(mold, vmu[c])));
        _mm512_storeu_ps(m + 16 * c, mnew);
        vsum[c] = _mm512_setzero_ps();
      }
      for (int64_t jr = 0; jr < nk; ++jr) {
        float* srow = st + jr * kBq;
        const int64_t c0 = first_vec(jr);
        for (int64_t c = 0; c < c0; ++c) _mm512_storeu_ps(srow + 16 * c, _mm512_setzero_ps());
        for (int64_t c = c0; c < nvq; ++c) {
          const __mmask16 lanes = diag ? causal_lanes(jr, off, 16 * c) : 0xFFFF;
          const __m512 p = _mm512_maskz_mov_ps(
              lanes, cpu::exp512_ps(_mm512_sub_ps(_mm512_loadu_ps(srow + 16 * c), vmu[c])));
          vsum[c] = _mm512_add_ps(vsum[c], p);
          _mm512_storeu_ps(srow + 16 * c, p);
        }
      }
      for (int64_t c = 0; c < nvq; ++c) {
        const __m512 va = _mm512_loadu_ps(alpha + 16 * c);
        _mm512_storeu_ps(l + 16 * c, _mm512_fmadd_ps(_mm512_loadu_ps(l + 16 * c), va, vsum[c]));
      }
    }
    // acc = alpha * acc + P V, the rescale riding in the micro-kernel's C update. A = P^T read
    // down its columns (unit stride across a block's queries); on a diagonal tile a block stops
    // at its last query's diagonal (P is 0 past it; a block that stops at 0 has alpha = 1)
    for (int64_t r0 = 0; r0 < nq; r0 += 6) {
      const int r = static_cast<int>(std::min<int64_t>(6, nq - r0));
      const int64_t kk = diag ? std::clamp<int64_t>(r0 + r - off, 0, nk) : nk;
      if (kk == 0) continue;
      for (int64_t c0 = 0; c0 < Dv; c0 += 64) {
        const int nv = static_cast<int>(std::min<int64_t>(dnv, (Dv - c0 + 15) / 16));
        const int64_t rem = std::min<int64_t>(64, Dv - c0) - 16 * (nv - 1);
        const __mmask16 tm = static_cast<__mmask16>((1u << rem) - 1u);
        const MicroTFn f = rem < 16 ? micro_t_for<true>(r, nv) : micro_t_for<false>(r, nv);
        const char* pfs = nullptr;
        const int pfn = ws.pf.take(kPfLinesT, &pfs);
        f(kk, st + r0, 1, kBq, vb + j0 * Dv + c0, Dv, acc + r0 * ldacc + c0, ldacc, tm, true,
          1.0f, fused ? nullptr : alpha + r0, pfs, pfn);
      }
    }
  }
  ws.finish(out + (n * d.Lq + i0) * Dv, lse + 2 * (n * d.Lq + i0), nq, Dv, ldacc);
}

// The AVX2 forward piece, in fwd_tile512's transposed layout (S^T = K_j Q_i^T, the tile's 64
// queries across 8 vectors of 8 lanes). Products on tile_mm (the 6x16 AVX2 micro-kernel); the
// scale is applied in the max pass and the alpha rescale is a pass over the accumulator.
// Against the row layout it replaced (S = Q K_j^T with K_j^T packed per visit, row-wise
// max and sum), 1 thread, EMBER_NO_AVX512: 4x8x512x64 45-46 -> 42 ms, causal 25.4 -> 24.2.
// Lanes l of a query vector with l + t >= 0 (t = its first column - key row - off: the lanes
// whose query sees the key row on a causal diagonal tile), as an all-ones float mask.
EMBER_AVX2 inline __m256 visible8(__m256i lane, int64_t t) {
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(
      _mm256_add_epi32(lane, _mm256_set1_epi32(static_cast<int>(t + 1))), _mm256_setzero_si256()));
}

EMBER_AVX2 void fwd_tile_avx2(const float* q, const float* k, const float* v, float* out,
                              float* lse, const AttnDims& d, const float* mask, int64_t n,
                              int64_t i0, const FwdNext& nx) {
  const int64_t D = d.D, Dv = d.Dv;
  const int64_t ldacc = (Dv + 7) / 8 * 8;
  const int64_t nq = std::min(kBq, d.Lq - i0);
  FwdWs& ws = fwd_ws();
  ws.begin(q + (n * d.Lq + i0) * D, nq, D, ldacc);
  float *qt = ws.qt.data(), *st = ws.st.data(), *mt = ws.mt.data(), *acc = ws.acc.data();
  float *m = ws.m.data(), *l = ws.l.data(), *alpha = ws.alpha.data();
  const float scale = static_cast<float>(d.scale);
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 ninf = _mm256_set1_ps(-kInf);
  const int64_t nvq = (nq + 7) / 8;  // query vectors (lanes past nq: zero queries, unused)
  const float* kb = k + n * d.Lk * D;
  const float* vb = v + n * d.Lk * Dv;
  const float* mb = mask_batch(d, mask, n);
  const int64_t kend = d.causal ? std::min(d.Lk, i0 + nq) : d.Lk;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int64_t ntiles = (kend + kBk - 1) / kBk;
  for (int64_t t = 0; t < ntiles; ++t) {
    const int64_t j0 = key_tile(t, ntiles, d.causal);
    const int64_t nk = std::min(kBk, kend - j0);
    fwd_queue(ws.pf, q, k, v, out, d, n, kend, t, ntiles, nx);
    const int64_t off = j0 - i0;  // causal: query column ic sees key row jr iff ic >= jr + off
    const bool diag = d.causal && j0 + nk - 1 > i0;
    // Fused tiles as in fwd_tile512 (exp against the earlier tiles' max, alpha = 1), on
    // 16-query panels (the D x 16 panel of Q_i^T stays in L1 while the key blocks pass).
    bool fused = false;
    const bool seed = t == 0 && !diag && !mb;  // as in fwd_tile512: seeded per 16-query panel
    if (!diag && !mb && (seed || finite_base(m, 8 * nvq))) {
      alignas(32) float cmax[kBq], csum[kBq];
      std::fill(cmax, cmax + 8 * nvq, -kInf);
      std::fill(csum, csum + 8 * nvq, 0.0f);
      for (int64_t c0 = 0; c0 < 8 * nvq; c0 += 16) {
        const bool two = 8 * nvq - c0 >= 16;
        for (int64_t r0 = 0; r0 < nk; r0 += 6) {
          const int r = static_cast<int>(std::min<int64_t>(6, nk - r0));
          const char* pfs = nullptr;
          const int pfn = ws.pf.take(kPfLines, &pfs);
          (two ? qk_exp8_for<2>(r) : qk_exp8_for<1>(r))(
              D, kb + (j0 + r0) * D, D, qt + c0, st + r0 * kBq + c0, scale, m + c0, cmax + c0,
              csum + c0, seed && r0 == 0, pfs, pfn);
        }
      }
      fused = (!seed || finite_base(m, 8 * nvq)) && within_slack(cmax, m, 8 * nvq);
      if (fused)
        for (int64_t c = 0; c < nvq; ++c)
          _mm256_storeu_ps(l + 8 * c, _mm256_add_ps(_mm256_loadu_ps(l + 8 * c),
                                                    _mm256_loadu_ps(csum + 8 * c)));
      else if (seed)
        std::fill(m, m + 8 * nvq, -kInf);
    }
    if (!fused) {
      if (!diag) {
        tile_mm(nk, nvq * 8, D, kb + j0 * D, D, 1, qt, kBq, st, kBq, false, Diag::none, kNoDiag,
                &ws.pf);
      } else {  // a block of key rows skips the query vectors wholly left of its first row's
        for (int64_t r0 = 0; r0 < nk; r0 += 6) {  // diagonal (masked for all its rows)
          const int64_t c0 = std::clamp<int64_t>((r0 + off) / 8, 0, nvq) * 8;
          if (c0 < nvq * 8)
            tile_mm(std::min<int64_t>(6, nk - r0), nvq * 8 - c0, D, kb + (j0 + r0) * D, D, 1,
                    qt + c0, kBq, st + r0 * kBq + c0, kBq, false, Diag::none, kNoDiag, &ws.pf);
        }
      }
      const float* mrow = nullptr;  // mask_rs == 0: one mask row for every query
      if (mb && d.mask_rs != 0)
        transpose_tile(mb + i0 * d.mask_rs + j0, d.mask_rs, nq, nk, mt, kBq);
      else if (mb)
        mrow = mb + j0;
      __m256 vmax[8], vmu[8], vsum[8];
      for (int64_t c = 0; c < nvq; ++c) vmax[c] = ninf;
      // on a diagonal tile, row jr's vectors wholly left of its diagonal skip both passes (the
      // exp pass stores their zeros: P V's 6-query blocks straddle vectors)
      const auto first_vec = [&](int64_t jr) {
        return diag ? std::clamp<int64_t>((jr + off) / 8, 0, nvq) : 0;
      };
      for (int64_t jr = 0; jr < nk; ++jr) {  // pass 1: scale, mask, column max
        float* srow = st + jr * kBq;
        for (int64_t c = first_vec(jr); c < nvq; ++c) {
          __m256 x = _mm256_mul_ps(_mm256_loadu_ps(srow + 8 * c), vscale);
          if (mb)
            x = _mm256_add_ps(x, mrow ? _mm256_set1_ps(mrow[jr])
                                      : _mm256_loadu_ps(mt + jr * kBq + 8 * c));
          if (diag) x = _mm256_blendv_ps(ninf, x, visible8(lane, 8 * c - jr - off));
          _mm256_storeu_ps(srow + 8 * c, x);
          vmax[c] = _mm256_max_ps(x, vmax[c]);
        }
      }
      for (int64_t c = 0; c < nvq; ++c) {
        const __m256 mold = _mm256_loadu_ps(m + 8 * c);
        const __m256 mnew = _mm256_max_ps(vmax[c], mold);
        // all -inf so far: mu = 0 keeps exp() finite (and exp(-inf - 0) = 0)
        vmu[c] = _mm256_andnot_ps(_mm256_cmp_ps(mnew, ninf, _CMP_EQ_OQ), mnew);
        _mm256_storeu_ps(alpha + 8 * c, cpu::exp256_le88_ps(_mm256_sub_ps(mold, vmu[c])));
        _mm256_storeu_ps(m + 8 * c, mnew);
        vsum[c] = _mm256_setzero_ps();
      }
      for (int64_t jr = 0; jr < nk; ++jr) {  // pass 2: P^T = exp(S^T - mu), column sums
        float* srow = st + jr * kBq;
        const int64_t cf = first_vec(jr);
        for (int64_t c = 0; c < cf; ++c) _mm256_storeu_ps(srow + 8 * c, _mm256_setzero_ps());
        for (int64_t c = cf; c < nvq; ++c) {
          const __m256 p =
              cpu::exp256_le88_ps(_mm256_sub_ps(_mm256_loadu_ps(srow + 8 * c), vmu[c]));
          vsum[c] = _mm256_add_ps(vsum[c], p);
          _mm256_storeu_ps(srow + 8 * c, p);
        }
      }
      for (int64_t c = 0; c < nvq; ++c) {
        const __m256 va = _mm256_loadu_ps(alpha + 8 * c);
        _mm256_storeu_ps(l + 8 * c, _mm256_fmadd_ps(_mm256_loadu_ps(l + 8 * c), va, vsum[c]));
      }
      for (int64_t i = 0; i < nq; ++i) {
        if (alpha[i] == 1.0f) continue;
        const __m256 va = _mm256_set1_ps(alpha[i]);
        float* a = acc + i * ldacc;
        for (int64_t c = 0; c < ldacc; c += 8)
          _mm256_storeu_ps(a + c, _mm256_mul_ps(_mm256_loadu_ps(a + c), va));
      }
    }
    // acc += P V, A = P^T read down its columns; a diagonal tile's row blocks stop at their
    // last query's diagonal (P is 0 past it)
    tile_mm(nq, Dv, nk, st, 1, kBq, vb + j0 * Dv, Dv, acc, ldacc, true,
            diag ? Diag::inner : Diag::none, i0 - j0, &ws.pf);
  }
  ws.finish(out + (n * d.Lq + i0) * Dv, lse + 2 * (n * d.Lq + i0), nq, Dv, ldacc);
}

// bwd_rows512's AVX2 twin; here S is unscaled (tile_mm has no scale): the scale (and the mask)
// is applied as each value is loaded, x = s * scale (+ m), the forward's rounding of the score
// (both layouts scale the product, then add the mask), so P matches the saved lse. (It was a
// separate pass over the row; folding it in measured no different, 1 thread, but is one pass.)
EMBER_AVX2 void bwd_rows_avx2(float* S, float* dP, int64_t nq, int64_t nk, int64_t diag,
                              const float* mask, int64_t mask_rs, const float* lse,
                              const float* di, float scale) {
  const __m256 vs = _mm256_set1_ps(scale);
  for (int64_t r = 0; r < nq; ++r) {
    float* s = S + r * kBk;
    float* dp = dP + r * kBk;
    const float* mrow = mask ? mask + r * mask_rs : nullptr;
    const int64_t nv = std::clamp<int64_t>(r + 1 + diag, 0, nk);
    const float hi = lse[2 * r], lo = lse[2 * r + 1];
    const __m256 vhi = _mm256_set1_ps(hi), vlo = _mm256_set1_ps(lo);
    const __m256 vd = _mm256_set1_ps(di[r]);
    int64_t j = 0;
    for (; j + 8 <= nv; j += 8) {
      __m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + j), vs);
      if (mrow) x = _mm256_add_ps(x, _mm256_loadu_ps(mrow + j));
      const __m256 p = cpu::exp256_le88_ps(_mm256_sub_ps(_mm256_sub_ps(x, vhi), vlo));
      const __m256 t = _mm256_mul_ps(p, _mm256_sub_ps(_mm256_loadu_ps(dp + j), vd));
      _mm256_storeu_ps(s + j, p);
      _mm256_storeu_ps(dp + j, _mm256_mul_ps(t, vs));
    }
    for (; j < nv; ++j) {
      const float x = mrow ? s[j] * scale + mrow[j] : s[j] * scale;
      const float p = std::exp((x - hi) - lo);
      s[j] = p;
      dp[j] = p * (dp[j] - di[r]) * scale;
    }
    for (; j < nk; ++j) s[j] = dp[j] = 0.0f;  // past the causal diagonal (maybe not computed)
  }
}

// D_i = rowsum(dO_i * O_i) for rows [0, rows), in the arithmetic of the dP tiles it is
// subtracted from (one FMA chain per chunk of `chunk` terms from zero, the chunks' sums added
// in order: micro / micro_t on dO V^T). A row whose softmax saw one key has O_i = V_j exactly,
// so dP_ij - D_i is then exactly 0 and so is the gradient (a double D_i, as before, left dP's
// own rounding there: ~1 ulp of |dP| in dQ where the answer is 0 -- the first row of every
// causal attention). Eight rows at once: eight independent FMA chains, one per lane of a
// vector (8 x 8 blocks of dO and O transposed in registers; the same FMAs in the same order
// as the scalar loop, which kept its eight sums in memory: ~3% of an 8x8x128x64 backward).
EMBER_AVX2 void row_dots(const float* o, const float* g, int64_t rows, int64_t n, int64_t chunk,
                         float* dst) {
  for (int64_t i0 = 0; i0 < rows; i0 += 8) {
    const int64_t nr = std::min<int64_t>(8, rows - i0);
    if (nr == 8) {
      const float* gb = g + i0 * n;
      const float* ob = o + i0 * n;
      __m256 tot = _mm256_setzero_ps();
      for (int64_t k0 = 0; k0 < n || k0 == 0; k0 += chunk) {
        const int64_t k1 = std::min(n, k0 + chunk);
        __m256 part = _mm256_setzero_ps();
        int64_t kk = k0;
        for (; kk + 8 <= k1; kk += 8) {
          __m256 gc[8], oc[8];
          tr8x8_regs(gb + kk, n, gc);
          tr8x8_regs(ob + kk, n, oc);
          for (int c = 0; c < 8; ++c) part = _mm256_fmadd_ps(gc[c], oc[c], part);
        }
        for (; kk < k1; ++kk) {  // a last column: its eight values gathered
          alignas(32) float gv[8], ov[8];
          for (int r = 0; r < 8; ++r) {
            gv[r] = gb[r * n + kk];
            ov[r] = ob[r * n + kk];
          }
          part = _mm256_fmadd_ps(_mm256_load_ps(gv), _mm256_load_ps(ov), part);
        }
        tot = k0 == 0 ? part : _mm256_add_ps(tot, part);
      }
      _mm256_storeu_ps(dst + i0, tot);
      continue;
    }
    float tot[8] = {}, part[8];
    for (int64_t k0 = 0; k0 < n || k0 == 0; k0 += chunk) {
      const int64_t k1 = std::min(n, k0 + chunk);
      for (int64_t r = 0; r < nr; ++r) part[r] = 0.0f;
      for (int64_t kk = k0; kk < k1; ++kk)
        for (int64_t r = 0; r < nr; ++r)
          part[r] = std::fma(g[(i0 + r) * n + kk], o[(i0 + r) * n + kk], part[r]);
      for (int64_t r = 0; r < nr; ++r) tot[r] = k0 == 0 ? part[r] : tot[r] + part[r];
    }
    for (int64_t r = 0; r < nr; ++r) dst[i0 + r] = tot[r];
  }
}

struct BwdWs {
  std::vector<float> kt, vt, s, dp, di;
  PfQueue pf;
};

// Queue (PfQueue) what the steps after step (i0, j0) of head n first touch: the next query
// tile's Q, dO and dQ rows (on the first key tile, which visits every query tile first), and
// this step's share (step t of the key tile's T) of the next key tile's K, V, dK and dV rows
// -- or, on the last key tile, of the rows the next head n_next (the same thread's; -1: none)
// starts with: all of O and dO (D_i), its first key tile's and first query tile's.
EMBER_AVX2 void queue_next(PfQueue& pf, const float* q, const float* k, const float* v,
                           const float* out, const float* gout, const float* gq,
                           const float* gk, const float* gv, const AttnDims& d, int64_t n,
                           int64_t n_next, int64_t i0, int64_t j0, int64_t t, int64_t T) {
  const int64_t D = d.D, Dv = d.Dv, Lq = d.Lq, Lk = d.Lk;
  const auto share = [&](const float* base, int64_t rows, int64_t w) {
    const int64_t a = rows * t / T, b = rows * (t + 1) / T;
    pf.add(base + a * w, (b - a) * w);
  };
  if (j0 == 0 && i0 + kBq < Lq) {
    const int64_t r = n * Lq + i0 + kBq, nq1 = std::min(kBq, Lq - i0 - kBq);
    pf.add(q + r * D, nq1 * D);
    pf.add(gout + r * Dv, nq1 * Dv);
    pf.add(gq + r * D, nq1 * D);
  }
  if (j0 + kBk < Lk) {
    const int64_t r = n * Lk + j0 + kBk, nk1 = std::min(kBk, Lk - j0 - kBk);
    share(k + r * D, nk1, D);
    share(v + r * Dv, nk1, Dv);
    share(gk + r * D, nk1, D);
    share(gv + r * Dv, nk1, Dv);
  } else if (n_next >= 0) {
    const int64_t rq = n_next * Lq, rk = n_next * Lk;
    const int64_t nq1 = std::min(kBq, Lq), nk1 = std::min(kBk, Lk);
    share(out + rq * Dv, Lq, Dv);
    share(gout + rq * Dv, Lq, Dv);
    share(k + rk * D, nk1, D);
    share(v + rk * Dv, nk1, Dv);
    share(q + rq * D, nq1, D);
    share(gq + rq * D, nq1, D);
    share(gk + rk * D, nk1, D);
    share(gv + rk * Dv, nk1, Dv);
  }
}

EMBER_AVX2 void bwd_batch_avx2(const float* q, const float* k, const float* v, const float* out,
                               const float* lse, const float* gout, float* gq, float* gk,
                               float* gv, const AttnDims& d, const float* mask, int64_t n,
                               int64_t n_next) {
  static thread_local BwdWs ws;
  const int64_t D = d.D, Dv = d.Dv, Lq = d.Lq, Lk = d.Lk;
  if (static_cast<int64_t>(ws.kt.size()) < D * kBk) ws.kt.resize(D * kBk);
  if (static_cast<int64_t>(ws.vt.size()) < Dv * kBk) ws.vt.resize(Dv * kBk);
  if (static_cast<int64_t>(ws.s.size()) < kBq * kBk) {
    ws.s.resize(kBq * kBk);
    ws.dp.resize(kBq * kBk);
  }
  if (static_cast<int64_t>(ws.di.size()) < Lq) ws.di.resize(Lq);
  float *kt = ws.kt.data(), *vt = ws.vt.data(), *S = ws.s.data(), *dP = ws.dp.data(),
        *di = ws.di.data();
  const float scale = static_cast<float>(d.scale);
  const float* qb = q + n * Lq * D;
  const float* kb = k + n * Lk * D;
  const float* vb = v + n * Lk * Dv;
  const float* gob = gout + n * Lq * Dv;
  const float* lb = lse + 2 * n * Lq;
  float* gqb = gq + n * Lq * D;
  float* gkb = gk + n * Lk * D;
  float* gvb = gv + n * Lk * Dv;
  const float* mb = mask_batch(d, mask, n);
  const bool w512 = cpu::avx512_selected();
  row_dots(out + n * Lq * Dv, gob, Lq, Dv, w512 ? kKcT : kKc, di);
  // gq, gk, gv are not zeroed first (that fill was 7% of the backward): each tile's first
  // product into them stores instead of adding -- dQ_i at key tile 0, dK_j / dV_j at the first
  // query tile that sees key tile j; rows no tile reaches are zeroed where they are skipped.
  if (Lk == 0) std::fill(gqb, gqb + Lq * D, 0.0f);
  for (int64_t j0 = 0; j0 < Lk; j0 += kBk) {
    const int64_t nk = std::min(kBk, Lk - j0);
    // causal: query tiles whose last row is before j0 see none of these keys
    const int64_t qstart = d.causal ? j0 / kBq * kBq : 0;
    if (qstart >= Lq) {  // no query sees these keys (causal, Lk > Lq; or Lq = 0)
      std::fill(gkb + j0 * D, gkb + (j0 + nk) * D, 0.0f);
      std::fill(gvb + j0 * Dv, gvb + (j0 + nk) * Dv, 0.0f);
      continue;
    }
    pack_t(kb + j0 * D, nk, D, kt);
    pack_t(vb + j0 * Dv, nk, Dv, vt);
    const int64_t steps = (Lq - qstart + kBq - 1) / kBq;
    for (int64_t i0 = qstart; i0 < Lq; i0 += kBq) {
      const int64_t nq = std::min(kBq, Lq - i0);
      queue_next(ws.pf, q, k, v, out, gout, gq, gk, gv, d, n, n_next, i0, j0,
                 (i0 - qstart) / kBq, steps);
      const float* qt = qb + i0 * D;
      const float* got = gob + i0 * Dv;
      const bool diag = d.causal && j0 + nk - 1 > i0;
      const Diag dc = diag ? Diag::cols : Diag::none, di_ = diag ? Diag::inner : Diag::none;
      PfQueue* pf = &ws.pf;
      if (w512)  // S scaled in the product, as in the forward (the same rounding)
        tile_mm512(nq, nk, D, qt, D, 1, kt, kBk, S, kBk, false, scale, dc, i0 - j0, pf);
      else
        tile_mm(nq, nk, D, qt, D, 1, kt, kBk, S, kBk, false, dc, i0 - j0, pf);
      tile_mm(nq, nk, Dv, got, Dv, 1, vt, kBk, dP, kBk, false, dc, i0 - j0, pf);
      const int64_t cut = diag ? i0 - j0 : kNoDiag;
      const float* mt = mb ? mb + i0 * d.mask_rs + j0 : nullptr;
      if (w512)
        bwd_rows512(S, dP, nq, nk, cut, mt, d.mask_rs, lb + 2 * i0, di + i0, scale);
      else
        bwd_rows_avx2(S, dP, nq, nk, cut, mt, d.mask_rs, lb + 2 * i0, di + i0, scale);
      const bool first = i0 == qstart;
      const Diag dout = diag ? Diag::outer : Diag::none;
      tile_mm(nk, Dv, nq, S, 1, kBk, got, Dv, gvb + j0 * Dv, Dv, !first, dout, i0 - j0,
              pf);  // dV += P^T dO
      tile_mm(nk, D, nq, dP, 1, kBk, qt, D, gkb + j0 * D, D, !first, dout, i0 - j0,
              pf);  // dK += dS^T Q
      tile_mm(nq, D, nk, dP, kBk, 1, kb + j0 * D, D, gqb + i0 * D, D, j0 > 0, di_, i0 - j0,
              pf);  // dQ += dS K
    }
  }
}

}  // namespace
#endif

// ---- entry points -------------------------------------------------------------------------

void attention_fwd(const float* q, const float* k, const float* v, float* out, float* lse,
                   const AttnDims& d, const float* mask) {
#if EMBER_COMPILED_AVX2
  if (cpu::avx2_selected()) {
    // Pieces (n, query tile); a pool piece is a run of consecutive ones, so that a thread
    // knows its next one and prefetches it (fwd_queue); ~16 runs per thread keep the balance
    // (causal pieces differ in length).
    const int64_t tiles = (d.Lq + kBq - 1) / kBq, P = d.N * tiles;
    const int nth = cpu::get_num_threads();
    const int64_t per = std::max<int64_t>(1, P / (16 * nth));
    const auto piece = [&](int64_t p, int64_t* n, int64_t* i0) {
      int64_t t = p % tiles;
      if (d.causal) t = tiles - 1 - t;  // causal: the longest tiles first, for balance
      *n = p / tiles;
      *i0 = t * kBq;
    };
    cpu::ClaimPool::instance().run(nth, (P + per - 1) / per, [&](int64_t g) {
      const int64_t p1 = std::min(P, (g + 1) * per);
      for (int64_t p = g * per; p < p1; ++p) {
        int64_t n, i0;
        FwdNext nx;
        piece(p, &n, &i0);
        if (p + 1 < p1) piece(p + 1, &nx.n2, &nx.i2);
        if (cpu::avx512_selected())
          fwd_tile512(q, k, v, out, lse, d, mask, n, i0, nx);
        else
          fwd_tile_avx2(q, k, v, out, lse, d, mask, n, i0, nx);
      }
    });
    return;
  }
#endif
  attention_fwd_cpu(q, k, v, out, lse, d, mask);
}

void attention_fwd(const double* q, const double* k, const double* v, double* out, double* lse,
                   const AttnDims& d, const double* mask) {
  attention_fwd_cpu(q, k, v, out, lse, d, mask);
}

void attention_bwd(const float* q, const float* k, const float* v, const float* out,
                   const float* lse, const float* gout, float* gq, float* gk, float* gv,
                   const AttnDims& d, const float* mask) {
#if EMBER_COMPILED_AVX2
  if (cpu::avx2_selected()) {
    // A piece is a run of consecutive heads, so a thread knows the head it does next and
    // prefetches it (queue_next); about four pieces per thread keep the claim pool's balance.
    const int nth = cpu::get_num_threads();
    const int64_t per = std::max<int64_t>(1, d.N / (4 * nth));
    cpu::ClaimPool::instance().run(nth, (d.N + per - 1) / per, [&](int64_t p) {
      const int64_t n1 = std::min(d.N, (p + 1) * per);
      for (int64_t n = p * per; n < n1; ++n)
        bwd_batch_avx2(q, k, v, out, lse, gout, gq, gk, gv, d, mask, n, n + 1 < n1 ? n + 1 : -1);
    });
    return;
  }
#endif
  attention_bwd_cpu(q, k, v, out, lse, gout, gq, gk, gv, d, mask);
}

void attention_bwd(const double* q, const double* k, const double* v, const double* out,
                   const double* lse, const double* gout, double* gq, double* gk, double* gv,
                   const AttnDims& d, const double* mask) {
  attention_bwd_cpu(q, k, v, out, lse, gout, gq, gk, gv, d, mask);
}

}  // namespace ember
