// vexp.cpp -- exp_avx2: the vectorised exp of vexp.h over an array, so tests can measure its
// error directly (the kernels that use exp256_ps inline it; nothing else calls this).
#include <cmath>
#include <cstdint>

#include "kernels/cpu/vexp.h"
#include "kernels/kernels.h"

namespace ember {

#if EMBER_COMPILED_AVX2
namespace {
EMBER_AVX2 void exp_avx2_impl(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, cpu::exp256_ps(_mm256_loadu_ps(x + i)));
  if (i < n) {  // tail through a padded register so the tail gets the same arithmetic
    float in[8] = {0}, out[8];
    for (int64_t k = i; k < n; ++k) in[k - i] = x[k];
    _mm256_storeu_ps(out, cpu::exp256_ps(_mm256_loadu_ps(in)));
    for (int64_t k = i; k < n; ++k) y[k] = out[k - i];
  }
}
}  // namespace
#endif

bool exp_avx2(const float* x, float* y, int64_t n) {
#if EMBER_COMPILED_AVX2
  if (!cpu::cpu_supports_avx2_fma()) return false;
  exp_avx2_impl(x, y, n);
  return true;
#else
  (void)x, (void)y, (void)n;
  return false;
#endif
}

}  // namespace ember
