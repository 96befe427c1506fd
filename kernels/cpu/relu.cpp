// relu.cpp -- element-wise ReLU forward and backward on the CPU.
//
// fwd: y = x < 0 ? 0 : x     (NaN propagates: relu(NaN) = NaN, relu(-0) = -0)
// bwd: gx = x > 0 ? gy : 0   (the subgradient at 0 is 0; NaN x gives 0)
// All buffers are contiguous with n elements; y may be x (in place), gx may be gy or x.
//
// Variants:
//  * relu_{fwd,bwd}_cpu<T>  scalar reference, float and double.
//  * relu_{fwd,bwd}_avx2    8 floats / 4 doubles per instruction, 4 vectors per iteration.
//                           fwd is max(0, x) with x as the SECOND operand: vmaxps returns the
//                           second operand when either is NaN, so NaN in x survives (max(x, 0)
//                           would turn it into 0). bwd is an ordered x > 0 compare (false for
//                           NaN) used as an AND mask on gy. Each index is loaded before it is
//                           stored, which is what makes exact aliasing safe.
//  * relu_{fwd,bwd}         entry points: AVX2 or scalar at run time; n >= 2^16 is split into
//                           per-thread chunks of whole cache lines (memory-bound, so fewer
//                           elements would not amortise the thread start), run on the claim
//                           pool like every other kernel. These were the last OpenMP regions:
//                           after one, libgomp's workers spin-wait for the next region on the
//                           second core while the pool's worker needs it, and a 2-thread
//                           ResNet training step took 172-221 ms against 160 ms with
//                           OMP_WAIT_POLICY=passive (1 thread: 190 ms).
#include <cstdint>

#include "kernels/cpu/common.h"
#include "kernels/cpu/pool.h"
#include "kernels/kernels.h"

namespace ember {
namespace {
constexpr int64_t kParallelN = int64_t{1} << 16;
constexpr int64_t kChunkAlign = 64;  // elements; a multiple of a 64-byte line for f32 and f64
}  // namespace

// ---- scalar reference ---------------------------------------------------------------------
template <typename T>
void relu_fwd_cpu(const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < T(0) ? T(0) : x[i];
}

template <typename T>
void relu_bwd_cpu(const T* gy, const T* x, T* gx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gx[i] = x[i] > T(0) ? gy[i] : T(0);
}

template void relu_fwd_cpu<float>(const float*, float*, int64_t);
template void relu_fwd_cpu<double>(const double*, double*, int64_t);
template void relu_bwd_cpu<float>(const float*, const float*, float*, int64_t);
template void relu_bwd_cpu<double>(const double*, const double*, double*, int64_t);

// ---- AVX2 ---------------------------------------------------------------------------------
#if EMBER_COMPILED_AVX2
namespace {
EMBER_AVX2 void fwd_avx2_f32(const float* x, float* y, int64_t n) {
  const __m256 z = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8),
                 v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
    _mm256_storeu_ps(y + i, _mm256_max_ps(z, v0));
    _mm256_storeu_ps(y + i + 8, _mm256_max_ps(z, v1));
    _mm256_storeu_ps(y + i + 16, _mm256_max_ps(z, v2));
    _mm256_storeu_ps(y + i + 24, _mm256_max_ps(z, v3));
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_max_ps(z, _mm256_loadu_ps(x + i)));
  relu_fwd_cpu<float>(x + i, y + i, n - i);
}

EMBER_AVX2 void fwd_avx2_f64(const double* x, double* y, int64_t n) {
  const __m256d z = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256d v0 = _mm256_loadu_pd(x + i), v1 = _mm256_loadu_pd(x + i + 4),
                  v2 = _mm256_loadu_pd(x + i + 8), v3 = _mm256_loadu_pd(x + i + 12);
    _mm256_storeu_pd(y + i, _mm256_max_pd(z, v0));
    _mm256_storeu_pd(y + i + 4, _mm256_max_pd(z, v1));
    _mm256_storeu_pd(y + i + 8, _mm256_max_pd(z, v2));
    _mm256_storeu_pd(y + i + 12, _mm256_max_pd(z, v3));
  }
  for (; i + 4 <= n; i += 4) _mm256_storeu_pd(y + i, _mm256_max_pd(z, _mm256_loadu_pd(x + i)));
  relu_fwd_cpu<double>(x + i, y + i, n - i);
}

EMBER_AVX2 void bwd_avx2_f32(const float* gy, const float* x, float* gx, int64_t n) {
  const __m256 z = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 pos = _mm256_cmp_ps(_mm256_loadu_ps(x + i), z, _CMP_GT_OQ);
    _mm256_storeu_ps(gx + i, _mm256_and_ps(pos, _mm256_loadu_ps(gy + i)));
  }
  relu_bwd_cpu<float>(gy + i, x + i, gx + i, n - i);
}

EMBER_AVX2 void bwd_avx2_f64(const double* gy, const double* x, double* gx, int64_t n) {
  const __m256d z = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d pos = _mm256_cmp_pd(_mm256_loadu_pd(x + i), z, _CMP_GT_OQ);
    _mm256_storeu_pd(gx + i, _mm256_and_pd(pos, _mm256_loadu_pd(gy + i)));
  }
  relu_bwd_cpu<double>(gy + i, x + i, gx + i, n - i);
}
}  // namespace

void relu_fwd_avx2(const float* x, float* y, int64_t n) { fwd_avx2_f32(x, y, n); }
void relu_fwd_avx2(const double* x, double* y, int64_t n) { fwd_avx2_f64(x, y, n); }
void relu_bwd_avx2(const float* gy, const float* x, float* gx, int64_t n) {
  bwd_avx2_f32(gy, x, gx, n);
}
void relu_bwd_avx2(const double* gy, const double* x, double* gx, int64_t n) {
  bwd_avx2_f64(gy, x, gx, n);
}
#else
void relu_fwd_avx2(const float* x, float* y, int64_t n) { relu_fwd_cpu(x, y, n); }
void relu_fwd_avx2(const double* x, double* y, int64_t n) { relu_fwd_cpu(x, y, n); }
void relu_bwd_avx2(const float* gy, const float* x, float* gx, int64_t n) {
  relu_bwd_cpu(gy, x, gx, n);
}
void relu_bwd_avx2(const double* gy, const double* x, double* gx, int64_t n) {
  relu_bwd_cpu(gy, x, gx, n);
}
#endif

// ---- entry points -------------------------------------------------------------------------
namespace {
// fn(begin, end) over [0, n): inline below kParallelN, else one chunk of whole cache lines
// per thread on the claim pool.
template <typename Fn>
void for_chunks(int64_t n, Fn&& fn) {
  if (n <= 0) return;
  const int nth = n >= kParallelN ? cpu::get_num_threads() : 1;
  if (nth <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  cpu::ClaimPool::instance().run(nth, nth, [&](int64_t p) {
    int64_t b, e;
    cpu::split_range(n, kChunkAlign, static_cast<int>(p), nth, &b, &e);
    if (b < e) fn(b, e);
  });
}

template <typename T>
void relu_fwd_dispatch(const T* x, T* y, int64_t n) {
  const bool avx2 = cpu::avx2_selected();
  for_chunks(n, [&](int64_t b, int64_t e) {
    if (avx2)
      relu_fwd_avx2(x + b, y + b, e - b);
    else
      relu_fwd_cpu<T>(x + b, y + b, e - b);
  });
}

template <typename T>
void relu_bwd_dispatch(const T* gy, const T* x, T* gx, int64_t n) {
  const bool avx2 = cpu::avx2_selected();
  for_chunks(n, [&](int64_t b, int64_t e) {
    if (avx2)
      relu_bwd_avx2(gy + b, x + b, gx + b, e - b);
    else
      relu_bwd_cpu<T>(gy + b, x + b, gx + b, e - b);
  });
}
}  // namespace

void relu_fwd(const float* x, float* y, int64_t n) { relu_fwd_dispatch(x, y, n); }
void relu_fwd(const double* x, double* y, int64_t n) { relu_fwd_dispatch(x, y, n); }
void relu_bwd(const float* gy, const float* x, float* gx, int64_t n) {
  relu_bwd_dispatch(gy, x, gx, n);
}
void relu_bwd(const double* gy, const double* x, double* gx, int64_t n) {
  relu_bwd_dispatch(gy, x, gx, n);
}

}  // namespace ember
