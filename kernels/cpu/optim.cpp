// optim.cpp -- fused optimizer updates (SGD, Adam/AdamW, RMSprop, Adagrad), the squared-norm /
// max-abs reductions behind clip_grad_norm_, and bandwidth probes (triad, Adam's access
// pattern) for the benchmarks.
//
// Multi-tensor design: one call updates a LIST of tensors (OptimList: per-tensor pointers and
// sizes), not one flat buffer. Why a list: the parameters stay ordinary numpy arrays owned by
// their Tensors (p.data = ..., load_state_dict, module.to() keep working), gradients are separate
// arrays anyway, and one C++ call per group still removes the per-parameter Python overhead.
// The list is treated as one index space [0, sum n): it is cut into fixed pieces of kPiece
// elements that the caller and the claim pool (pool.h) take from a counter, so small tensors
// share a piece and big ones spread over all threads; a busy second core costs nothing (the
// caller just claims more pieces).
//
// Every update is element-wise and reads param, grad and each state buffer once and writes
// param and each state buffer once: one pass over memory (Adam: 16 B read + 12 B written per
// float32 element; 20 + 16 with amsgrad). Formulas are PyTorch's (torch.optim, 2.x, single
// tensor path), in the same operation order, with the step-dependent scalars (bias
// corrections, Adagrad's decayed lr) computed in double by the caller:
//   SGD:     g = ±grad (+ wd*p); buf = g (first) | mom*buf + (1-damp)*g;
//            g = nesterov ? g + mom*buf : buf; p -= lr*g
//   Adam:    g = ±grad; AdamW: p *= 1 - lr*wd, Adam: g += wd*p;
//            m += (1-b1)*(g-m) (lerp); v = b2*v + (1-b2)*g*g; vmax = max(vmax, v) (amsgrad,
//            NaN propagates as torch.maximum); p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)
//   RMSprop: g = ±grad (+ wd*p); sq = a*sq + (1-a)*g*g; centered: ga += (1-a)*(g-ga),
//            avg = sqrt(sq - ga*ga) + eps, else sqrt(sq) + eps;
//            mom > 0: buf = mom*buf + g/avg, p -= lr*buf; else p -= lr*g/avg
//   Adagrad: g = ±grad (+ wd*p); sum += g*g; p -= clr * g / (sqrt(sum) + eps)
// No special casing of NaN/inf: they propagate as in PyTorch.
//
// Variants per optimizer: <op>_cpu<T> scalar reference (float, double) over one range; an
// AVX2/FMA float path over one range (8 lanes; FMA contraction makes it differ from the
// scalar one by rounding only); the list entry point picks one at run time (float only:
// double runs the reference, it exists for tests).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/cpu/common.h"
#include "kernels/cpu/pool.h"
#include "kernels/kernels.h"

namespace ember {
namespace {
constexpr int64_t kPiece = int64_t{1} << 15;     // elements per claimed piece (128 KiB f32)
constexpr int64_t kParallelN = int64_t{1} << 17;  // below this, one thread

// fn(tensor index, begin, end) over all elements of the list, threaded in pieces.
template <typename Fn>
void for_each_range(const int64_t* n, int64_t count, Fn&& fn) {
  int64_t total = 0;
  for (int64_t t = 0; t < count; ++t) total += n[t];
  if (total == 0) return;
  const int nth = total >= kParallelN ? cpu::get_num_threads() : 1;
  // Start offset of each tensor: the only per-call allocation, O(tensors) int64s.
  std::vector<int64_t> off(static_cast<size_t>(count) + 1, 0);
  for (int64_t t = 0; t < count; ++t) off[t + 1] = off[t] + n[t];
  const int64_t pieces = (total + kPiece - 1) / kPiece;
  auto piece = [&](int64_t p) {
    const int64_t b = p * kPiece, e = std::min(total, b + kPiece);
    int64_t t = std::upper_bound(off.begin(), off.end(), b) - off.begin() - 1;
    for (int64_t i = b; i < e; ++t) {
      const int64_t te = std::min(e, off[t + 1]);
      if (te > i) fn(t, i - off[t], te - off[t]);
      i = std::max(i, te);
    }
  };
  // One thread walks the same pieces in order, so a range never straddles a piece boundary
  // on any path and reductions built on pieces (norm_reduce) give the same bits for every
  // thread count.
  if (nth <= 1) {
    for (int64_t p = 0; p < pieces; ++p) piece(p);
    return;
  }
  cpu::ClaimPool::instance().run(nth, pieces, piece);
}

template <typename T>
inline T maybe_neg(T g, bool maximize) {
  return maximize ? -g : g;
}
}  // namespace

// ---- scalar references --------------------------------------------------------------------
template <typename T>
void sgd_cpu(T* p, const T* grad, T* buf, int64_t n, const SgdArgs& a, bool first) {
  const T lr = T(a.lr), mom = T(a.momentum), damp1 = T(1 - a.dampening), wd = T(a.weight_decay);
  for (int64_t i = 0; i < n; ++i) {
    T g = maybe_neg(grad[i], a.maximize);
    if (a.weight_decay != 0) g = g + wd * p[i];
    if (a.momentum != 0) {
      const T b = first ? g : mom * buf[i] + damp1 * g;
      buf[i] = b;
      g = a.nesterov ? g + mom * b : b;
    }
    p[i] = p[i] - lr * g;
  }
}

template <typename T>
void adam_cpu(T* p, const T* grad, T* m, T* v, T* vmax, int64_t n, const AdamArgs& a) {
  const T b1c = T(1 - a.beta1), b2 = T(a.beta2), b2c = T(1 - a.beta2), wd = T(a.weight_decay);
  const T decay = T(1 - a.lr * a.weight_decay), step = T(a.lr / a.bc1);
  const T bc2s = T(std::sqrt(a.bc2)), eps = T(a.eps);
  for (int64_t i = 0; i < n; ++i) {
    T g = maybe_neg(grad[i], a.maximize);
    T x = p[i];
    if (a.weight_decay != 0) {
      if (a.decoupled)
        x = x * decay;
      else
        g = g + wd * x;
    }
    const T mi = m[i] + b1c * (g - m[i]);
    const T vi = b2 * v[i] + b2c * (g * g);
    m[i] = mi;
    v[i] = vi;
    T s = vi;
    if (a.amsgrad) {
      const T old = vmax[i];
      s = (vi > old || vi != vi) ? vi : old;
      vmax[i] = s;
    }
    const T denom = std::sqrt(s) / bc2s + eps;
    p[i] = x - step * (mi / denom);
  }
}

template <typename T>
void rmsprop_cpu(T* p, const T* grad, T* sq, T* gavg, T* buf, int64_t n, const RmspropArgs& a) {
  const T al = T(a.alpha), al1 = T(1 - a.alpha), eps = T(a.eps), lr = T(a.lr);
  const T wd = T(a.weight_decay), mom = T(a.momentum);
  for (int64_t i = 0; i < n; ++i) {
    T g = maybe_neg(grad[i], a.maximize);
    if (a.weight_decay != 0) g = g + wd * p[i];
    const T s = al * sq[i] + al1 * (g * g);
    sq[i] = s;
    T avg;
    if (a.centered) {
      const T ga = gavg[i] + al1 * (g - gavg[i]);
      gavg[i] = ga;
      // Fused like PyTorch's CPU addcmul: with a huge gradient ga*ga overflows on its own but
      // s - ga*ga computed in one rounding stays finite (PyTorch gives a finite update).
      avg = std::sqrt(std::fma(-ga, ga, s)) + eps;
    } else {
      avg = std::sqrt(s) + eps;
    }
    if (a.momentum > 0) {
      const T b = mom * buf[i] + g / avg;
      buf[i] = b;
      p[i] = p[i] - lr * b;
    } else {
      p[i] = p[i] - lr * (g / avg);
    }
  }
}

template <typename T>
void adagrad_cpu(T* p, const T* grad, T* sum, int64_t n, const AdagradArgs& a) {
  const T clr = T(a.clr), eps = T(a.eps), wd = T(a.weight_decay);
  for (int64_t i = 0; i < n; ++i) {
    T g = maybe_neg(grad[i], a.maximize);
    if (a.weight_decay != 0) g = g + wd * p[i];
    const T s = sum[i] + g * g;
    sum[i] = s;
    p[i] = p[i] - clr * (g / (std::sqrt(s) + eps));
  }
}

template void sgd_cpu<float>(float*, const float*, float*, int64_t, const SgdArgs&, bool);
template void sgd_cpu<double>(double*, const double*, double*, int64_t, const SgdArgs&, bool);
template void adam_cpu<float>(float*, const float*, float*, float*, float*, int64_t,
                              const AdamArgs&);
template void adam_cpu<double>(double*, const double*, double*, double*, double*, int64_t,
                               const AdamArgs&);
template void rmsprop_cpu<float>(float*, const float*, float*, float*, float*, int64_t,
                                 const RmspropArgs&);
template void rmsprop_cpu<double>(double*, const double*, double*, double*, double*, int64_t,
                                  const RmspropArgs&);
template void adagrad_cpu<float>(float*, const float*, float*, int64_t, const AdagradArgs&);
template void adagrad_cpu<double>(double*, const double*, double*, int64_t, const AdagradArgs&);

// ---- AVX2 (float) -------------------------------------------------------------------------
#if EMBER_COMPILED_AVX2
namespace {
EMBER_AVX2 inline __m256 neg_if(__m256 g, bool maximize) {
  return maximize ? _mm256_xor_ps(g, _mm256_set1_ps(-0.0f)) : g;
}

// NaN-propagating max (torch.maximum): v if v > old or v is NaN, else old (NaN old stays).
EMBER_AVX2 inline __m256 max_nan(__m256 v, __m256 old) {
  const __m256 pick = _mm256_or_ps(_mm256_cmp_ps(v, old, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_blendv_ps(old, v, pick);
}

EMBER_AVX2 void sgd_avx2(float* p, const float* grad, float* buf, int64_t n, const SgdArgs& a,
                         bool first) {
  const __m256 lr = _mm256_set1_ps(float(a.lr)), mom = _mm256_set1_ps(float(a.momentum));
  const __m256 damp1 = _mm256_set1_ps(float(1 - a.dampening));
  const __m256 wd = _mm256_set1_ps(float(a.weight_decay));
  const bool use_wd = a.weight_decay != 0, use_mom = a.momentum != 0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(p + i);
    __m256 g = neg_if(_mm256_loadu_ps(grad + i), a.maximize);
    if (use_wd) g = _mm256_fmadd_ps(wd, x, g);
    if (use_mom) {
      const __m256 b =
          first ? g : _mm256_fmadd_ps(mom, _mm256_loadu_ps(buf + i), _mm256_mul_ps(damp1, g));
      _mm256_storeu_ps(buf + i, b);
      g = a.nesterov ? _mm256_fmadd_ps(mom, b, g) : b;
    }
    _mm256_storeu_ps(p + i, _mm256_fnmadd_ps(lr, g, x));
  }
  sgd_cpu<float>(p + i, grad + i, buf ? buf + i : nullptr, n - i, a, first);
}

EMBER_AVX2 void adam_avx2(float* p, const float* grad, float* m, float* v, float* vmax,
                          int64_t n, const AdamArgs& a) {
  const __m256 b1c = _mm256_set1_ps(float(1 - a.beta1)), b2 = _mm256_set1_ps(float(a.beta2));
  const __m256 b2c = _mm256_set1_ps(float(1 - a.beta2)), wd = _mm256_set1_ps(float(a.weight_decay));
  const __m256 decay = _mm256_set1_ps(float(1 - a.lr * a.weight_decay));
  const __m256 step = _mm256_set1_ps(float(a.lr / a.bc1));
  const __m256 bc2s = _mm256_set1_ps(float(std::sqrt(a.bc2))), eps = _mm256_set1_ps(float(a.eps));
  const bool l2 = a.weight_decay != 0 && !a.decoupled, dec = a.weight_decay != 0 && a.decoupled;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(p + i);
    __m256 g = neg_if(_mm256_loadu_ps(grad + i), a.maximize);
    if (dec) x = _mm256_mul_ps(x, decay);
    if (l2) g = _mm256_fmadd_ps(wd, x, g);
    const __m256 m0 = _mm256_loadu_ps(m + i);
    const __m256 mi = _mm256_fmadd_ps(b1c, _mm256_sub_ps(g, m0), m0);
    const __m256 vi = _mm256_fmadd_ps(b2, _mm256_loadu_ps(v + i), _mm256_mul_ps(b2c, _mm256_mul_ps(g, g)));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    __m256 s = vi;
    if (a.amsgrad) {
      s = max_nan(vi, _mm256_loadu_ps(vmax + i));
      _mm256_storeu_ps(vmax + i, s);
    }
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(s), bc2s), eps);
    _mm256_storeu_ps(p + i, _mm256_fnmadd_ps(step, _mm256_div_ps(mi, denom), x));
  }
  adam_cpu<float>(p + i, grad + i, m + i, v + i, vmax ? vmax + i : nullptr, n - i, a);
}

EMBER_AVX2 void rmsprop_avx2(float* p, const float* grad, float* sq, float* gavg, float* buf,
                             int64_t n, const RmspropArgs& a) {
  const __m256 al = _mm256_set1_ps(float(a.alpha)), al1 = _mm256_set1_ps(float(1 - a.alpha));
  const __m256 eps = _mm256_set1_ps(float(a.eps)), lr = _mm256_set1_ps(float(a.lr));
  const __m256 wd = _mm256_set1_ps(float(a.weight_decay)), mom = _mm256_set1_ps(float(a.momentum));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(p + i);
    __m256 g = neg_if(_mm256_loadu_ps(grad + i), a.maximize);
    if (a.weight_decay != 0) g = _mm256_fmadd_ps(wd, x, g);
    const __m256 s = _mm256_fmadd_ps(al, _mm256_loadu_ps(sq + i), _mm256_mul_ps(al1, _mm256_mul_ps(g, g)));
    _mm256_storeu_ps(sq + i, s);
    __m256 avg;
    if (a.centered) {
      const __m256 ga0 = _mm256_loadu_ps(gavg + i);
      const __m256 ga = _mm256_fmadd_ps(al1, _mm256_sub_ps(g, ga0), ga0);
      _mm256_storeu_ps(gavg + i, ga);
      avg = _mm256_add_ps(_mm256_sqrt_ps(_mm256_fnmadd_ps(ga, ga, s)), eps);
    } else {
      avg = _mm256_add_ps(_mm256_sqrt_ps(s), eps);
    }
    if (a.momentum > 0) {
      const __m256 b = _mm256_fmadd_ps(mom, _mm256_loadu_ps(buf + i), _mm256_div_ps(g, avg));
      _mm256_storeu_ps(buf + i, b);
      _mm256_storeu_ps(p + i, _mm256_fnmadd_ps(lr, b, x));
    } else {
      _mm256_storeu_ps(p + i, _mm256_fnmadd_ps(lr, _mm256_div_ps(g, avg), x));
    }
  }
  rmsprop_cpu<float>(p + i, grad + i, sq + i, gavg ? gavg + i : nullptr, buf ? buf + i : nullptr,
                     n - i, a);
}

EMBER_AVX2 void adagrad_avx2(float* p, const float* grad, float* sum, int64_t n,
                             const AdagradArgs& a) {
  const __m256 clr = _mm256_set1_ps(float(a.clr)), eps = _mm256_set1_ps(float(a.eps));
  const __m256 wd = _mm256_set1_ps(float(a.weight_decay));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(p + i);
    __m256 g = neg_if(_mm256_loadu_ps(grad + i), a.maximize);
    if (a.weight_decay != 0) g = _mm256_fmadd_ps(wd, x, g);
    const __m256 s = _mm256_fmadd_ps(g, g, _mm256_loadu_ps(sum + i));
    _mm256_storeu_ps(sum + i, s);
    const __m256 d = _mm256_add_ps(_mm256_sqrt_ps(s), eps);
    _mm256_storeu_ps(p + i, _mm256_fnmadd_ps(clr, _mm256_div_ps(g, d), x));
  }
  adagrad_cpu<float>(p + i, grad + i, sum + i, n - i, a);
}

// Sum of squares of floats in double (4 double accumulators x 2), max |x| with NaN -> NaN.
EMBER_AVX2 double sumsq_avx2(const float* x, int64_t n) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    s0 = _mm256_fmadd_pd(lo, lo, s0);
    s1 = _mm256_fmadd_pd(hi, hi, s1);
  }
  alignas(32) double t[4];
  _mm256_store_pd(t, _mm256_add_pd(s0, s1));
  double s = (t[0] + t[1]) + (t[2] + t[3]);
  for (; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}
}  // namespace
#endif

// ---- entry points -------------------------------------------------------------------------
namespace {
template <typename T>
bool use_avx2() {
  return std::is_same<T, float>::value && cpu::avx2_selected();
}
}  // namespace

template <typename T>
void sgd_step(const OptimList<T>& l, const SgdArgs& a, bool first) {
  const bool avx2 = use_avx2<T>();
  for_each_range(l.n, l.count, [&](int64_t t, int64_t b, int64_t e) {
    T* buf = l.s0 ? l.s0[t] + b : nullptr;
#if EMBER_COMPILED_AVX2
    if constexpr (std::is_same<T, float>::value)
      if (avx2) return sgd_avx2(l.param[t] + b, l.grad[t] + b, buf, e - b, a, first);
#endif
    (void)avx2;
    sgd_cpu<T>(l.param[t] + b, l.grad[t] + b, buf, e - b, a, first);
  });
}

template <typename T>
void adam_step(const OptimList<T>& l, const AdamArgs& a) {
  const bool avx2 = use_avx2<T>();
  for_each_range(l.n, l.count, [&](int64_t t, int64_t b, int64_t e) {
    T* vmax = l.s2 ? l.s2[t] + b : nullptr;
#if EMBER_COMPILED_AVX2
    if constexpr (std::is_same<T, float>::value)
      if (avx2)
        return adam_avx2(l.param[t] + b, l.grad[t] + b, l.s0[t] + b, l.s1[t] + b, vmax, e - b,
                         a);
#endif
    (void)avx2;
    adam_cpu<T>(l.param[t] + b, l.grad[t] + b, l.s0[t] + b, l.s1[t] + b, vmax, e - b, a);
  });
}

template <typename T>
void rmsprop_step(const OptimList<T>& l, const RmspropArgs& a) {
  const bool avx2 = use_avx2<T>();
  for_each_range(l.n, l.count, [&](int64_t t, int64_t b, int64_t e) {
    T* gavg = l.s1 ? l.s1[t] + b : nullptr;
    T* buf = l.s2 ? l.s2[t] + b : nullptr;
#if EMBER_COMPILED_AVX2
    if constexpr (std::is_same<T, float>::value)
      if (avx2)
        return rmsprop_avx2(l.param[t] + b, l.grad[t] + b, l.s0[t] + b, gavg, buf, e - b, a);
#endif
    (void)avx2;
    rmsprop_cpu<T>(l.param[t] + b, l.grad[t] + b, l.s0[t] + b, gavg, buf, e - b, a);
  });
}

template <typename T>
void adagrad_step(const OptimList<T>& l, const AdagradArgs& a) {
  const bool avx2 = use_avx2<T>();
  for_each_range(l.n, l.count, [&](int64_t t, int64_t b, int64_t e) {
#if EMBER_COMPILED_AVX2
    if constexpr (std::is_same<T, float>::value)
      if (avx2) return adagrad_avx2(l.param[t] + b, l.grad[t] + b, l.s0[t] + b, e - b, a);
#endif
    (void)avx2;
    adagrad_cpu<T>(l.param[t] + b, l.grad[t] + b, l.s0[t] + b, e - b, a);
  });
}

template void sgd_step<float>(const OptimList<float>&, const SgdArgs&, bool);
template void sgd_step<double>(const OptimList<double>&, const SgdArgs&, bool);
template void adam_step<float>(const OptimList<float>&, const AdamArgs&);
template void adam_step<double>(const OptimList<double>&, const AdamArgs&);
template void rmsprop_step<float>(const OptimList<float>&, const RmspropArgs&);
template void rmsprop_step<double>(const OptimList<double>&, const RmspropArgs&);
template void adagrad_step<float>(const OptimList<float>&, const AdagradArgs&);
template void adagrad_step<double>(const OptimList<double>&, const AdagradArgs&);

// Sum of squares (accumulated in double) or max |x| (NaN wins) over a list of arrays, single
// pass, threads over pieces; per-piece partials are combined in piece order.
template <typename T>
double norm_reduce(const T* const* x, const int64_t* n, int64_t count, bool inf) {
  int64_t total = 0;
  for (int64_t t = 0; t < count; ++t) total += n[t];
  const int64_t pieces = std::max<int64_t>(1, (total + kPiece - 1) / kPiece);
  std::vector<double> part(static_cast<size_t>(pieces), 0.0);
  const bool avx2 = use_avx2<T>();
  (void)avx2;
  std::vector<int64_t> off(static_cast<size_t>(count) + 1, 0);
  for (int64_t t = 0; t < count; ++t) off[t + 1] = off[t] + n[t];
  for_each_range(n, count, [&](int64_t t, int64_t b, int64_t e) {
    // A range never straddles a piece boundary, so one partial per piece is race-free.
    double& acc = part[static_cast<size_t>((off[t] + b) / kPiece)];
    const T* p = x[t] + b;
    if (inf) {
      double m = acc;  // NaN is sticky: nothing compares greater than it
      for (int64_t i = 0; i < e - b; ++i) {
        const double a = std::fabs(double(p[i]));
        if (a != a) {
          m = a;
          break;
        }
        if (a > m) m = a;
      }
      acc = m;
      return;
    }
#if EMBER_COMPILED_AVX2
    if constexpr (std::is_same<T, float>::value)
      if (avx2) {
        acc += sumsq_avx2(p, e - b);
        return;
      }
#endif
    double s = 0;
    for (int64_t i = 0; i < e - b; ++i) s += double(p[i]) * double(p[i]);
    acc += s;
  });
  double r = 0;
  for (double v : part) {
    if (!inf)
      r += v;
    else if (v != v)
      return v;
    else if (v > r)
      r = v;
  }
  return r;
}

template double norm_reduce<float>(const float* const*, const int64_t*, int64_t, bool);
template double norm_reduce<double>(const double* const*, const int64_t*, int64_t, bool);

// a[i] = b[i] + s * c[i], `reps` times, threaded like the optimizers; returns seconds of the
// median repetition. Counted as 12 B/element (STREAM convention: write-allocate not counted).
double triad_seconds(float* a, const float* b, const float* c, int64_t n, int reps) {
  std::vector<double> ts;
  const int64_t one = n;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for_each_range(&one, 1, [&](int64_t, int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) a[i] = b[i] + 3.0f * c[i];
    });
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  return ts.empty() ? 0.0 : ts[ts.size() / 2];
}

// The optimizer's own access pattern with trivial arithmetic: a += d, b += d, c += d (reads 4
// streams, writes 3 in place: 28 B/element like Adam). The ceiling for a one-pass Adam.
double rmw4_seconds(float* a, float* b, float* c, const float* d, int64_t n, int reps) {
  std::vector<double> ts;
  const int64_t one = n;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for_each_range(&one, 1, [&](int64_t, int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        a[i] += d[i];
        b[i] += d[i];
        c[i] += d[i];
      }
    });
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  return ts.empty() ? 0.0 : ts[ts.size() / 2];
}

}  // namespace ember
