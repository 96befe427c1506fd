// vexp.cpp -- exp_avx2 / exp_avx512: the vectorised exps of vexp.h over an array, so tests can
// measure their error directly (the kernels inline them; nothing else calls this).
#include <cmath>
#include <cstdint>

#include "kernels/cpu/vexp.h"
#include "kernels/kernels.h"

namespace ember {

#if EMBER_COMPILED_AVX2
namespace {
template <bool LE88>
EMBER_AVX2 inline __m256 exp8(__m256 x) {
  return LE88 ? cpu::exp256_le88_ps(x) : cpu::exp256_ps(x);
}
template <bool LE88>
EMBER_AVX2 void exp_avx2_impl(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8<LE88>(_mm256_loadu_ps(x + i)));
  if (i < n) {  // tail through a padded register so the tail gets the same arithmetic
    float in[8] = {0}, out[8];
    for (int64_t k = i; k < n; ++k) in[k - i] = x[k];
    _mm256_storeu_ps(out, exp8<LE88>(_mm256_loadu_ps(in)));
    for (int64_t k = i; k < n; ++k) y[k] = out[k - i];
  }
}
EMBER_AVX512 void exp_avx512_impl(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, cpu::exp512_ps(_mm512_loadu_ps(x + i)));
  const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
  if (m) _mm512_mask_storeu_ps(y + i, m, cpu::exp512_ps(_mm512_maskz_loadu_ps(m, x + i)));
}
}  // namespace
#endif

bool exp_avx512(const float* x, float* y, int64_t n) {
#if EMBER_COMPILED_AVX2
  if (!cpu::cpu_supports_avx512f()) return false;
  exp_avx512_impl(x, y, n);
  return true;
#else
  (void)x, (void)y, (void)n;
  return false;
#endif
}

bool exp_avx2(const float* x, float* y, int64_t n, bool le88) {
#if EMBER_COMPILED_AVX2
  if (!cpu::cpu_supports_avx2_fma()) return false;
  if (le88)
    exp_avx2_impl<true>(x, y, n);
  else
    exp_avx2_impl<false>(x, y, n);
  return true;
#else
  (void)x, (void)y, (void)n, (void)le88;
  return false;
#endif
}

}  // namespace ember
