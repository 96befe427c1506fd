// gemm.cpp -- batched strided matrix multiply on the CPU: scalar reference + simple AVX2 path.
//
// Computes c[i] = alpha * a[i] @ b[i] + beta * c[i] for i < B, with a[i]: [M, K],
// b[i]: [K, N] and c C-contiguous [B, M, N]. a and b are read through arbitrary element
// strides (GemmDims): 0 broadcasts a batch, negative strides are reversed views and a
// transposed operand is just a stride-swapped view, so nothing is ever copied or packed.
// beta == 0 means c is write-only: its old contents (possibly NaN) are never read.
//
// Variants:
//  * gemm_cpu<T>  scalar reference, float and double (double is the gradcheck path). One dot
//                 product per output, accumulated in double so the reference is at least as
//                 accurate as any fast path.
//  * gemm_avx2    float. Two stride patterns are vectorised with 8-wide FMA; anything else
//                 (e.g. both operands transposed) falls back to the reference:
//                   axpy: b contiguous along N (a@b, a.T@b). A c row is sum_k a[m,k]*b[k,:]
//                         with up to 64 columns held in 8 ymm accumulators and K innermost, so
//                         accumulators stay in registers and a[m,k] is one broadcast. 8
//                         independent chains cover the 4-cycle FMA latency at 2 FMAs/cycle.
//                         K is cut into blocks of 256 whose sums are added into c, as BLAS
//                         does (keeps float rounding error at sgemm's level for long K).
//                   dot:  a and b contiguous along K (a@b.T). Four outputs at a time share
//                         each 8-float load of the a row; masked loads take the K tail.
//                 This is deliberately the simple kernel (no packing or cache blocking: the
//                 BLIS-style GEMM is a later issue), so a large b streams from L2/L3 once per
//                 c row. float accumulation, like numpy/OpenBLAS sgemm.
//  * gemm         entry point: AVX2 or scalar chosen at run time, the B*M output rows split
//                 over threads once the work (B*M*N*K multiply-adds) pays for a thread start.
#include <algorithm>
#include <cstdint>

#include "kernels/cpu/common.h"
#include "kernels/kernels.h"

namespace ember {
namespace {

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr double kParallelWork = 32768.0;

inline bool worth_threads(const GemmDims& d) {
  return d.B * d.M > 1 &&
         static_cast<double>(d.B) * d.M * d.N * static_cast<double>(d.K) > kParallelWork;
}

// ---- scalar reference ---------------------------------------------------------------------
template <typename T>
void gemm_rows_cpu(const T* a, const T* b, T* c, const GemmDims& d, T alpha, T beta,
                   int64_t r0, int64_t r1) {
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
      cr[n] = static_cast<T>(be == 0.0 ? al * acc : al * acc + be * static_cast<double>(cr[n]));
    }
  }
}

// ---- AVX2 / FMA ---------------------------------------------------------------------------
#if EMBER_COMPILED_AVX2
alignas(32) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                            0,  0,  0,  0,  0,  0,  0,  0};

// Lanes [0, rem) set, rem in [1, 7].
EMBER_AVX2 inline __m256i tail_mask(int64_t rem) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - rem));
}

EMBER_AVX2 inline void store8(float* c, __m256 acc, __m256 va, __m256 vb, bool beta0) {
  __m256 r = _mm256_mul_ps(va, acc);
  if (!beta0) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), r);
  _mm256_storeu_ps(c, r);
}

EMBER_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// One c row, b contiguous along N: cr[:] = alpha * sum_k ar[k*sak] * b[k, :] (+ beta*cr).
EMBER_AVX2 void row_axpy_avx2(const float* ar, int64_t sak, const float* bm, int64_t sbk,
                              float* cr, int64_t N, int64_t K, float alpha, float beta) {
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  const bool beta0 = beta == 0.0f;
  int64_t n = 0;
  for (; n + 64 <= N; n += 64) {
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
           c7 = c0;
    for (int64_t k = 0; k < K; ++k) {
      const float* bp = bm + k * sbk + n;
      const __m256 x = _mm256_set1_ps(ar[k * sak]);
      c0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 0), c0);
      c1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 8), c1);
      c2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 16), c2);
      c3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 24), c3);
      c4 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 32), c4);
      c5 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 40), c5);
      c6 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 48), c6);
      c7 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 56), c7);
    }
    store8(cr + n + 0, c0, va, vb, beta0);
    store8(cr + n + 8, c1, va, vb, beta0);
    store8(cr + n + 16, c2, va, vb, beta0);
    store8(cr + n + 24, c3, va, vb, beta0);
    store8(cr + n + 32, c4, va, vb, beta0);
    store8(cr + n + 40, c5, va, vb, beta0);
    store8(cr + n + 48, c6, va, vb, beta0);
    store8(cr + n + 56, c7, va, vb, beta0);
  }
  for (; n + 16 <= N; n += 16) {
    __m256 c0 = _mm256_setzero_ps(), c1 = c0;
    for (int64_t k = 0; k < K; ++k) {
      const float* bp = bm + k * sbk + n;
      const __m256 x = _mm256_set1_ps(ar[k * sak]);
      c0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 0), c0);
      c1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 8), c1);
    }
    store8(cr + n + 0, c0, va, vb, beta0);
    store8(cr + n + 8, c1, va, vb, beta0);
  }
  for (; n + 8 <= N; n += 8) {
    __m256 c0 = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k)
      c0 = _mm256_fmadd_ps(_mm256_set1_ps(ar[k * sak]), _mm256_loadu_ps(bm + k * sbk + n), c0);
    store8(cr + n, c0, va, vb, beta0);
  }
  if (n < N) {  // masked tail: masked-off lanes are never touched, so no over-read
    const __m256i mask = tail_mask(N - n);
    __m256 c0 = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k)
      c0 = _mm256_fmadd_ps(_mm256_set1_ps(ar[k * sak]),
                           _mm256_maskload_ps(bm + k * sbk + n, mask), c0);
    __m256 r = _mm256_mul_ps(va, c0);
    if (!beta0) r = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cr + n, mask), r);
    _mm256_maskstore_ps(cr + n, mask, r);
  }
}

// One c row, a row and b columns contiguous along K: cr[n] = alpha * dot(ar, b[:, n]) (+ ...).
EMBER_AVX2 void row_dot_avx2(const float* ar, const float* bm, int64_t sbn, float* cr,
                             int64_t N, int64_t K, float alpha, float beta) {
  const bool beta0 = beta == 0.0f;
  const int64_t K8 = K & ~int64_t{7}, rem = K - K8;
  const __m256i mask = rem ? tail_mask(rem) : _mm256_setzero_si256();
  int64_t n = 0;
  for (; n + 4 <= N; n += 4) {
    const float* b0 = bm + n * sbn;
    const float* b1 = b0 + sbn;
    const float* b2 = b1 + sbn;
    const float* b3 = b2 + sbn;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int64_t k = 0; k < K8; k += 8) {
      const __m256 x = _mm256_loadu_ps(ar + k);
      c0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b0 + k), c0);
      c1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b1 + k), c1);
      c2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b2 + k), c2);
      c3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b3 + k), c3);
    }
    if (rem) {
      const __m256 x = _mm256_maskload_ps(ar + K8, mask);
      c0 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b0 + K8, mask), c0);
      c1 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b1 + K8, mask), c1);
      c2 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b2 + K8, mask), c2);
      c3 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b3 + K8, mask), c3);
    }
    const float s[4] = {hsum8(c0), hsum8(c1), hsum8(c2), hsum8(c3)};
    for (int j = 0; j < 4; ++j)
      cr[n + j] = beta0 ? alpha * s[j] : alpha * s[j] + beta * cr[n + j];
  }
  for (; n < N; ++n) {
    const float* b0 = bm + n * sbn;
    __m256 c0 = _mm256_setzero_ps();
    for (int64_t k = 0; k < K8; k += 8)
      c0 = _mm256_fmadd_ps(_mm256_loadu_ps(ar + k), _mm256_loadu_ps(b0 + k), c0);
    if (rem)
      c0 = _mm256_fmadd_ps(_mm256_maskload_ps(ar + K8, mask), _mm256_maskload_ps(b0 + K8, mask),
                           c0);
    const float s = hsum8(c0);
    cr[n] = beta0 ? alpha * s : alpha * s + beta * cr[n];
  }
}

constexpr int64_t kKBlock = 256;

// A stride only matters when the dimension has more than one element.
inline bool unit(int64_t stride, int64_t size) { return size <= 1 || stride == 1; }

void gemm_rows_avx2(const float* a, const float* b, float* c, const GemmDims& d, float alpha,
                    float beta, int64_t r0, int64_t r1) {
  const bool axpy = unit(d.sbn, d.N);
  const bool dot = unit(d.sak, d.K) && unit(d.sbk, d.K);
  if (!axpy && !dot) {
    gemm_rows_cpu<float>(a, b, c, d, alpha, beta, r0, r1);
    return;
  }
  // Narrow outputs (matrix-vector) vectorise better along K.
  if (dot && (!axpy || d.N < 8)) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / d.M, m = r % d.M;
      row_dot_avx2(a + i * d.sab + m * d.sam, b + i * d.sbb, d.sbn, c + r * d.N, d.N, d.K,
                   alpha, beta);
    }
    return;
  }
  // axpy: K in blocks of kKBlock, each block's sum added into c (c = beta*c + alpha*s_0, then
  // c += alpha*s_j), like BLAS. Without it every output is one K-long float FMA chain whose
  // rounding error grows ~3x past sgemm's at K = 4096. Blocks outermost so the b panel of a
  // block is reused by all rows of this thread while it is in cache.
  for (int64_t k0 = 0;; k0 += kKBlock) {
    const int64_t kb = std::min(kKBlock, d.K - k0);
    const float be = k0 == 0 ? beta : 1.0f;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / d.M, m = r % d.M;
      row_axpy_avx2(a + i * d.sab + m * d.sam + k0 * d.sak, d.sak, b + i * d.sbb + k0 * d.sbk,
                    d.sbk, c + r * d.N, d.N, kb, alpha, be);
    }
    if (k0 + kKBlock >= d.K) break;
  }
}
#else
void gemm_rows_avx2(const float* a, const float* b, float* c, const GemmDims& d, float alpha,
                    float beta, int64_t r0, int64_t r1) {
  gemm_rows_cpu<float>(a, b, c, d, alpha, beta, r0, r1);
}
#endif

}  // namespace

// ---- entry points -------------------------------------------------------------------------
template <typename T>
void gemm_cpu(const T* a, const T* b, T* c, const GemmDims& d, T alpha, T beta) {
  gemm_rows_cpu<T>(a, b, c, d, alpha, beta, 0, d.B * d.M);
}
template void gemm_cpu<float>(const float*, const float*, float*, const GemmDims&, float, float);
template void gemm_cpu<double>(const double*, const double*, double*, const GemmDims&, double,
                               double);

void gemm_avx2(const float* a, const float* b, float* c, const GemmDims& d, float alpha,
               float beta) {
  gemm_rows_avx2(a, b, c, d, alpha, beta, 0, d.B * d.M);
}

void gemm(const float* a, const float* b, float* c, const GemmDims& d, float alpha, float beta) {
  if (d.B * d.M == 0 || d.N == 0) return;
  if (cpu::avx2_selected()) {
    cpu::parallel_range(d.B * d.M, 1, worth_threads(d), [&](int64_t r0, int64_t r1) {
      gemm_rows_avx2(a, b, c, d, alpha, beta, r0, r1);
    });
  } else {
    cpu::parallel_range(d.B * d.M, 1, worth_threads(d), [&](int64_t r0, int64_t r1) {
      gemm_rows_cpu<float>(a, b, c, d, alpha, beta, r0, r1);
    });
  }
}

void gemm(const double* a, const double* b, double* c, const GemmDims& d, double alpha,
          double beta) {
  if (d.B * d.M == 0 || d.N == 0) return;
  cpu::parallel_range(d.B * d.M, 1, worth_threads(d), [&](int64_t r0, int64_t r1) {
    gemm_rows_cpu<double>(a, b, c, d, alpha, beta, r0, r1);
  });
}

}  // namespace ember
