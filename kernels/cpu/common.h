// common.h -- shared by the CPU kernels: run-time ISA dispatch and thread helpers.
//
// AVX2 code is compiled per function with EMBER_AVX2 (__attribute__((target("avx2,fma"))))
// instead of a global -mavx2, so the scalar code can never contain AVX2 instructions and the
// module still runs on any x86-64. Dispatch (use_avx2()) is a cached CPUID result plus one
// relaxed atomic load of the force-scalar flag, cheap enough to do on every call.
//
// Threads: OpenMP parallel regions are opened only in the dispatching entry points, never
// inside EMBER_AVX2 functions (the outlined region would not be guaranteed to carry the
// target attribute). The thread count is a process-wide setting (set_num_threads) rather
// than OpenMP's per-thread ICV, so it holds for kernels called from any Python thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <new>
#include <string>

#include "kernels/kernels.h"

#ifdef EMBER_HAS_OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define EMBER_COMPILED_AVX2 1
#define EMBER_AVX2 __attribute__((target("avx2,fma")))
#define EMBER_AVX512 __attribute__((target("avx512f,avx2,fma")))
#include <immintrin.h>
#else
#define EMBER_COMPILED_AVX2 0
#define EMBER_AVX2
#define EMBER_AVX512
#endif

namespace ember::cpu {

inline std::atomic<bool> g_force_scalar{false};
inline std::atomic<bool> g_no_avx512{false};  // EMBER_NO_AVX512=1 / _C._set_no_avx512
inline std::atomic<int> g_num_threads{0};  // 0: OpenMP default (OMP_NUM_THREADS / cores)
// A child forked after the parent started its thread pool (pool.h) has no pool workers: its
// first parallel job would wait for them forever (e.g. multiprocessing / DataLoader workers
// with the default fork start method). A pthread_atfork child handler (csrc/runtime.cpp) calls
// on_fork_child(), and such a child then runs every kernel single-threaded, as PyTorch does.
inline std::atomic<bool> g_pool_started{false};
inline std::atomic<bool> g_forked_after_pool{false};
inline void on_fork_child() {
  if (g_pool_started.load(std::memory_order_relaxed))
    g_forked_after_pool.store(true, std::memory_order_relaxed);
}

inline bool cpu_supports_avx2_fma() {
#if EMBER_COMPILED_AVX2
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
#else
  return false;
#endif
}

inline bool cpu_supports_avx512f() {
#if EMBER_COMPILED_AVX2
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && cpu_supports_avx2_fma();
  }();
  return ok;
#else
  return false;
#endif
}

inline bool compiled_avx2() { return EMBER_COMPILED_AVX2 != 0; }
inline void set_force_scalar(bool on) { g_force_scalar.store(on, std::memory_order_relaxed); }
inline bool force_scalar() { return g_force_scalar.load(std::memory_order_relaxed); }
inline bool avx2_selected() { return cpu_supports_avx2_fma() && !force_scalar(); }
inline void set_no_avx512(bool on) { g_no_avx512.store(on, std::memory_order_relaxed); }
inline bool no_avx512() { return g_no_avx512.load(std::memory_order_relaxed); }
// AVX-512 kernels (only GEMM so far) run when the CPU has avx512f and neither the
// force-scalar flag nor EMBER_NO_AVX512 turns them off.
inline bool avx512_selected() { return avx2_selected() && cpu_supports_avx512f() && !no_avx512(); }

inline bool has_openmp() {
#ifdef EMBER_HAS_OPENMP
  return true;
#else
  return false;
#endif
}

inline void set_num_threads(int n) {
  g_num_threads.store(n, std::memory_order_relaxed);
#ifdef EMBER_HAS_OPENMP
  omp_set_num_threads(n);
#endif
}

// A kernel workspace that could not be allocated: a std::bad_alloc (MemoryError in Python)
// whose message names the op. Safe to throw inside ClaimPool pieces (pool.h rethrows it on the
// calling thread); not inside OpenMP regions.
struct AllocError : std::bad_alloc {
  std::string msg;
  AllocError(const char* op, size_t bytes)
      : msg(std::string("[") + op + "] could not allocate a " + std::to_string(bytes) +
            "-byte workspace") {}
  const char* what() const noexcept override { return msg.c_str(); }
};

inline int get_num_threads() {
#ifdef EMBER_HAS_OPENMP
  if (g_forked_after_pool.load(std::memory_order_relaxed)) return 1;
  const int n = g_num_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
#else
  return 1;
#endif
}

// [begin, end) of `total` items for thread `tid` of `nth`, in multiples of `align` items so
// threads do not share cache lines of the output.
inline void split_range(int64_t total, int64_t align, int tid, int nth, int64_t* begin,
                        int64_t* end) {
  int64_t blocks = (total + align - 1) / align;
  int64_t per = blocks / nth, rem = blocks % nth;
  int64_t b0 = tid * per + std::min<int64_t>(tid, rem);
  int64_t b1 = b0 + per + (tid < rem ? 1 : 0);
  *begin = std::min(total, b0 * align);
  *end = std::min(total, b1 * align);
}

#if EMBER_COMPILED_AVX2
// Row tails of the AVX2 kernels. tail_mask(n): the first n lanes on (0 <= n <= 8), for
// _mm256_maskload_ps, which is cheap everywhere (0.9 ns per load in a loop on a Zen 4 EPYC).
// Stores of a partial vector go through store_first, not _mm256_maskstore_ps: on AMD Zen a
// VEX masked store is microcoded, 4.7 ns against 0.7 ns for a plain store on the Zen 4 (on
// Intel both are about one cycle), and the tails of short rows (7x7 maps: every row is a
// tail) made it a bottleneck.
EMBER_AVX2 inline __m256i tail_mask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx);
}

// Row sums of the normalisations (batchnorm.cpp, layernorm.cpp) in float partials flushed into
// double: over x[0, n8), n8 = n / 8 * 8 (returned; the caller adds the tail in its scalar
// arithmetic), *sa += sum(u) and *sb += sum(u * v) for the 8-value terms term(i, &u, &v)
// (statistics: u = v = x - k; backward sums: u = g (* w), v = x - mean (* rstd)). 4 float
// chains of 8 lanes, added into the double sums every `flush` values, so each lane adds at
// most flush / 32 + 3 values. Converting every value to double instead (a cvtps2pd and an
// extract per 4 lanes, on the ports the adds need) bounded these passes at ~13-14 GB/s.
template <typename Term>
EMBER_AVX2 inline int64_t partial_sums8(int64_t n, int64_t flush, Term term, double* sa,
                                        double* sb) {
  __m256d da = _mm256_setzero_pd(), db = da;
  const auto add8 = [](__m256 f, __m256d* acc) EMBER_AVX2 {
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
    *acc = _mm256_add_pd(_mm256_add_pd(*acc, lo), hi);
  };
  int64_t i = 0;
  while (i + 8 <= n) {
    const int64_t e = std::min(n, i + flush);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    __m256 u, v;
    for (; i + 32 <= e; i += 32) {
      term(i, &u, &v);
      a0 = _mm256_add_ps(a0, u);
      b0 = _mm256_fmadd_ps(u, v, b0);
      term(i + 8, &u, &v);
      a1 = _mm256_add_ps(a1, u);
      b1 = _mm256_fmadd_ps(u, v, b1);
      term(i + 16, &u, &v);
      a2 = _mm256_add_ps(a2, u);
      b2 = _mm256_fmadd_ps(u, v, b2);
      term(i + 24, &u, &v);
      a3 = _mm256_add_ps(a3, u);
      b3 = _mm256_fmadd_ps(u, v, b3);
    }
    for (; i + 8 <= e; i += 8) {
      term(i, &u, &v);
      a0 = _mm256_add_ps(a0, u);
      b0 = _mm256_fmadd_ps(u, v, b0);
    }
    add8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), &da);
    add8(_mm256_add_ps(_mm256_add_ps(b0, b1), _mm256_add_ps(b2, b3)), &db);
  }
  const auto hsum = [](__m256d w) EMBER_AVX2 {
    const __m128d t = _mm_add_pd(_mm256_castpd256_pd128(w), _mm256_extractf128_pd(w, 1));
    return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
  };
  *sa += hsum(da);
  *sb += hsum(db);
  return i;
}

// The first n lanes of v to p[0, n) (0 <= n <= 8) as 4-, 2- and 1-float stores.
EMBER_AVX2 inline void store_first(float* p, __m256 v, int64_t n) {
  if (n >= 8) {
    _mm256_storeu_ps(p, v);
    return;
  }
  __m128 q = _mm256_castps256_ps128(v);
  if (n & 4) {
    _mm_storeu_ps(p, q);
    q = _mm256_extractf128_ps(v, 1);
    p += 4;
  }
  if (n & 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(p), q);
    q = _mm_movehl_ps(q, q);
    p += 2;
  }
  if (n & 1) _mm_store_ss(p, q);
}
#endif

}  // namespace ember::cpu
