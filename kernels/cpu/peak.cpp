// peak.cpp -- FMA-chain probe: the single-core floating-point ceiling, measured in the same run
// as a benchmark (our machines are shared and their clocks drift; shared/DESIGN.md section 5).
//
// 12 independent accumulator chains of vfmadd (ymm for AVX2, zmm for AVX-512): FMA latency is
// 4 cycles and there are up to 2 FMA ports, so >= 8 chains saturate the core; 12 leaves slack.
// FLOPs = iterations * 12 chains * lanes * 2. The result is stored through a volatile so the
// loop cannot be removed; no -ffast-math, so the compiler cannot reassociate the chains.
#include <algorithm>
#include <chrono>
#include <cstdint>

#include "kernels/cpu/common.h"
#include "kernels/kernels.h"

namespace ember {
namespace {

volatile float g_sink;

#if EMBER_COMPILED_AVX2
EMBER_AVX2 void chains_avx2(int64_t iters) {
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  __m256 c0 = _mm256_set1_ps(1.0f), c1 = _mm256_set1_ps(1.1f), c2 = _mm256_set1_ps(1.2f),
         c3 = _mm256_set1_ps(1.3f), c4 = _mm256_set1_ps(1.4f), c5 = _mm256_set1_ps(1.5f),
         c6 = _mm256_set1_ps(1.6f), c7 = _mm256_set1_ps(1.7f), c8 = _mm256_set1_ps(1.8f),
         c9 = _mm256_set1_ps(1.9f), c10 = _mm256_set1_ps(2.0f), c11 = _mm256_set1_ps(2.1f);
  for (int64_t i = 0; i < iters; ++i) {
    c0 = _mm256_fmadd_ps(c0, x, y);
    c1 = _mm256_fmadd_ps(c1, x, y);
    c2 = _mm256_fmadd_ps(c2, x, y);
    c3 = _mm256_fmadd_ps(c3, x, y);
    c4 = _mm256_fmadd_ps(c4, x, y);
    c5 = _mm256_fmadd_ps(c5, x, y);
    c6 = _mm256_fmadd_ps(c6, x, y);
    c7 = _mm256_fmadd_ps(c7, x, y);
    c8 = _mm256_fmadd_ps(c8, x, y);
    c9 = _mm256_fmadd_ps(c9, x, y);
    c10 = _mm256_fmadd_ps(c10, x, y);
    c11 = _mm256_fmadd_ps(c11, x, y);
    __asm__ volatile("" : "+x"(c0), "+x"(c6));  // keep the loop from being collapsed
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                           _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
  s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
  g_sink = _mm256_cvtss_f32(s);
}

EMBER_AVX512 void chains_avx512(int64_t iters) {
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  __m512 c0 = _mm512_set1_ps(1.0f), c1 = _mm512_set1_ps(1.1f), c2 = _mm512_set1_ps(1.2f),
         c3 = _mm512_set1_ps(1.3f), c4 = _mm512_set1_ps(1.4f), c5 = _mm512_set1_ps(1.5f),
         c6 = _mm512_set1_ps(1.6f), c7 = _mm512_set1_ps(1.7f), c8 = _mm512_set1_ps(1.8f),
         c9 = _mm512_set1_ps(1.9f), c10 = _mm512_set1_ps(2.0f), c11 = _mm512_set1_ps(2.1f);
  for (int64_t i = 0; i < iters; ++i) {
    c0 = _mm512_fmadd_ps(c0, x, y);
    c1 = _mm512_fmadd_ps(c1, x, y);
    c2 = _mm512_fmadd_ps(c2, x, y);
    c3 = _mm512_fmadd_ps(c3, x, y);
    c4 = _mm512_fmadd_ps(c4, x, y);
    c5 = _mm512_fmadd_ps(c5, x, y);
    c6 = _mm512_fmadd_ps(c6, x, y);
    c7 = _mm512_fmadd_ps(c7, x, y);
    c8 = _mm512_fmadd_ps(c8, x, y);
    c9 = _mm512_fmadd_ps(c9, x, y);
    c10 = _mm512_fmadd_ps(c10, x, y);
    c11 = _mm512_fmadd_ps(c11, x, y);
    __asm__ volatile("" : "+v"(c0), "+v"(c6));
  }
  __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                           _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)));
  g_sink = _mm512_reduce_add_ps(s);
}
#endif

}  // namespace

double fma_peak_gflops(int isa, double seconds) {
#if EMBER_COMPILED_AVX2
  const bool ok = isa == 1 ? cpu::cpu_supports_avx512f() : cpu::cpu_supports_avx2_fma();
  if (!ok) return 0.0;
  const int lanes = isa == 1 ? 16 : 8;
  auto run = [&](int64_t iters) {
    const auto t0 = std::chrono::steady_clock::now();
    if (isa == 1)
      chains_avx512(iters);
    else
      chains_avx2(iters);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  run(100000);  // warm up (AVX-512 frequency licence, page-in)
  int64_t iters = 1 << 16;
  double t = run(iters);
  while (t < seconds / 8 && iters < (int64_t{1} << 40)) t = run(iters *= 2);
  // Best of 5 runs of ~seconds/5 each: interruptions by other processes only ever slow it.
  iters = static_cast<int64_t>(iters * (seconds / 5) / t) + 1;
  double best = 1e300;
  for (int r = 0; r < 5; ++r) best = std::min(best, run(iters));
  return static_cast<double>(iters) * 12 * lanes * 2 / best / 1e9;
#else
  (void)isa;
  (void)seconds;
  return 0.0;
#endif
}

}  // namespace ember
