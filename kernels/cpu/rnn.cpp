// rnn.cpp -- the per-time-step gate math of the recurrent layers (LSTM, GRU, plain RNN), each
// fused into one pass over the [B, *H] rows, forward and backward.
//
// The matrix products (x @ W_ih^T for the whole sequence, h @ W_hh^T per step) are ember's GEMM,
// called from Python; these kernels do everything between two GEMMs in one read of each
// operand, so a step costs one GEMM plus one streaming pass (instead of ~10 numpy temporaries).
//
// Layout: every buffer is C-contiguous with rows of the given width; row b of gates is
// gates + b*4H (LSTM) / 3H (GRU). Gate order is PyTorch's: LSTM i, f, g, o; GRU r, z, n.
//
// LSTM   fwd: gates [B,4H] = x W_ih^T + b_ih + h W_hh^T + b_hh (pre-activations), c_prev [B,H]
//             i = s(gi), f = s(gf), g = tanh(gg), o = s(go); c = f c_prev + i g; h = o tanh(c)
//             act [B,4H] <- (i, f, g, o) (saved for backward; may alias gates: in place).
//        bwd: dh_t = dh + dy (recurrent part + output gradient; dy may be null),
//             tc = tanh(c) (recomputed: cheaper than a [T,B,H] buffer of it)
//             dc_t = dc + dh_t o (1 - tc^2); dpre_i = dc_t g i(1-i), dpre_f = dc_t c_prev f(1-f),
//             dpre_g = dc_t i (1-g^2), dpre_o = dh_t tc o(1-o); dc <- dc_t f (in place: dc
//             holds dc_t's incoming part on entry and dc_{t-1} on exit). dgates may alias act.
// GRU    fwd: xg [B,3H] = x W_ih^T + b_ih, hg [B,3H] = h W_hh^T + b_hh (kept apart: r scales
//             only the h part of n), r = s(xr + hr), z = s(xz + hz), n = tanh(xn + r hn),
//             h = (1 - z) n + z h_prev = n + z (h_prev - n); save [B,4H] <- (r, z, n, hn).
//        bwd: dh_t = dh + dy; dn = dh_t (1-z) (1-n^2); dz = dh_t (h_prev - n) z(1-z);
//             dr = dn hn r(1-r); dxg = (dr, dz, dn); dhg = (dr, dz, dn r); dh_prev = dh_t z
//             (the caller adds dhg @ W_hh with a beta = 1 GEMM).
// RNN    fwd: h = tanh(pre) or relu(pre) (pre [n] = x W_ih^T + b_ih + h W_hh^T + b_hh);
//        bwd: dpre = (dh + dy) (1 - h^2) or (dh + dy) [h > 0]. relu keeps NaN (as PyTorch).
//
// Variants: *_rows_cpu<T> scalar references (float and double; double is the gradcheck path)
// with std::exp / std::tanh; AVX2/FMA float paths, 8 columns per vector, scalar tail, whose
// sigmoid and tanh are built on ember::cpu::exp256_ps (vexp.h, 1 ulp):
//   sigmoid(x) = 1 / (1 + exp(-x))  (exact division; exp(-x) = inf for x < -88.7 gives 0)
//   tanh(x)    = sign(x) (1 - 2 / (exp(2|x|) + 1)) for |x| >= 0.625, and Cephes' odd minimax
//                polynomial x + x^3 P(x^2) below: the exp form loses all relative accuracy
//                near 0 (1 - 2/(e+1) cancels; tanh(1e-4) would carry a 1e-4 relative error),
//                the polynomial is accurate to ~1 ulp there. Measured in tests/test_rnn.py.
// Threads: rows are cut into pieces claimed from the pool (pool.h) when B*H is large enough to
// pay for waking a worker; each piece is an independent range of rows, so results do not
// depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/common.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/vexp.h"
#include "kernels/kernels.h"

namespace ember {
namespace {

constexpr int64_t kParallelElems = int64_t{1} << 14;  // B*H below this: one thread

template <typename T>
inline T sigm(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// ---- scalar references ----------------------------------------------------------------------
template <typename T>
void lstm_fwd_rows_cpu(const T* gates, const T* c_prev, T* act, T* c, T* h, int64_t H, int64_t r0,
                       int64_t r1) {
  for (int64_t b = r0; b < r1; ++b) {
    const T* gr = gates + b * 4 * H;
    T* ar = act ? act + b * 4 * H : nullptr;
    for (int64_t j = 0; j < H; ++j) {
      const T i = sigm(gr[j]), f = sigm(gr[H + j]), g = std::tanh(gr[2 * H + j]),
              o = sigm(gr[3 * H + j]);
      const T cn = f * c_prev[b * H + j] + i * g;
      c[b * H + j] = cn;
      h[b * H + j] = o * std::tanh(cn);
      if (ar) {
        ar[j] = i;
        ar[H + j] = f;
        ar[2 * H + j] = g;
        ar[3 * H + j] = o;
      }
    }
  }
}

template <typename T>
void lstm_bwd_rows_cpu(const T* act, const T* c_prev, const T* c, const T* dh, const T* dy, T* dc,
                       T* dgates, int64_t H, int64_t r0, int64_t r1) {
  for (int64_t b = r0; b < r1; ++b) {
    const T* ar = act + b * 4 * H;
    T* dr = dgates + b * 4 * H;
    for (int64_t j = 0; j < H; ++j) {
      const int64_t k = b * H + j;
      const T i = ar[j], f = ar[H + j], g = ar[2 * H + j], o = ar[3 * H + j];
      const T tc = std::tanh(c[k]);
      const T dht = dy ? dh[k] + dy[k] : dh[k];
      const T dct = dc[k] + dht * o * (T(1) - tc * tc);
      dr[j] = dct * g * i * (T(1) - i);
      dr[H + j] = dct * c_prev[k] * f * (T(1) - f);
      dr[2 * H + j] = dct * i * (T(1) - g * g);
      dr[3 * H + j] = dht * tc * o * (T(1) - o);
      dc[k] = dct * f;
    }
  }
}

template <typename T>
void gru_fwd_rows_cpu(const T* xg, const T* hg, const T* h_prev, T* h, T* save, int64_t H,
                      int64_t r0, int64_t r1) {
  for (int64_t b = r0; b < r1; ++b) {
    const T* xr = xg + b * 3 * H;
    const T* hr = hg + b * 3 * H;
    T* sr = save ? save + b * 4 * H : nullptr;
    for (int64_t j = 0; j < H; ++j) {
      const T r = sigm(xr[j] + hr[j]), z = sigm(xr[H + j] + hr[H + j]);
      const T hn = hr[2 * H + j];
      const T n = std::tanh(xr[2 * H + j] + r * hn);
      const T hp = h_prev[b * H + j];
      h[b * H + j] = n + z * (hp - n);
      if (sr) {
        sr[j] = r;
        sr[H + j] = z;
        sr[2 * H + j] = n;
        sr[3 * H + j] = hn;
      }
    }
  }
}

template <typename T>
void gru_bwd_rows_cpu(const T* save, const T* h_prev, const T* dh, const T* dy, T* dxg, T* dhg,
                      T* dh_prev, int64_t H, int64_t r0, int64_t r1) {
  for (int64_t b = r0; b < r1; ++b) {
    const T* sr = save + b * 4 * H;
    T* dx = dxg + b * 3 * H;
    T* dhh = dhg + b * 3 * H;
    for (int64_t j = 0; j < H; ++j) {
      const int64_t k = b * H + j;
      const T r = sr[j], z = sr[H + j], n = sr[2 * H + j], hn = sr[3 * H + j];
      const T dht = dy ? dh[k] + dy[k] : dh[k];
      const T dn = dht * (T(1) - z) * (T(1) - n * n);
      const T dz = dht * (h_prev[k] - n) * z * (T(1) - z);
      const T dr = dn * hn * r * (T(1) - r);
      dx[j] = dr;
      dx[H + j] = dz;
      dx[2 * H + j] = dn;
      dhh[j] = dr;
      dhh[H + j] = dz;
      dhh[2 * H + j] = dn * r;
      dh_prev[k] = dht * z;
    }
  }
}

template <typename T>
void rnn_fwd_range_cpu(const T* pre, T* h, bool relu, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const T x = pre[i];
    h[i] = relu ? (x < T(0) ? T(0) : x) : std::tanh(x);
  }
}

template <typename T>
void rnn_bwd_range_cpu(const T* h, const T* dh, const T* dy, T* dpre, bool relu, int64_t i0,
                       int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const T g = dy ? dh[i] + dy[i] : dh[i];
    const T y = h[i];
    dpre[i] = relu ? (y > T(0) ? g : T(0)) : g * (T(1) - y * y);
  }
}

// ---- AVX2 (float) ---------------------------------------------------------------------------
#if EMBER_COMPILED_AVX2
EMBER_AVX2 inline __m256 sigmoid256(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = cpu::exp256_ps(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(one, _mm256_add_ps(one, e));
}

EMBER_AVX2 inline __m256 tanh256(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 ax = _mm256_andnot_ps(sign, x);
  // |x| >= 0.625: 1 - 2 / (exp(2|x|) + 1), sign restored (exp = inf for |x| > 44 gives 1).
  const __m256 e = cpu::exp256_ps(_mm256_add_ps(ax, ax));
  __m256 big = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
  big = _mm256_or_ps(big, _mm256_and_ps(x, sign));
  // |x| < 0.625: Cephes tanhf, x + x^3 P(x^2).
  const __m256 s = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-5.70498872745e-3f);
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(2.06390887954e-2f));
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(-5.37397155531e-2f));
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(1.33314422036e-1f));
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(-3.33332819422e-1f));
  __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, s), x, x);
  small = _mm256_or_ps(_mm256_andnot_ps(sign, small), _mm256_and_ps(x, sign));  // tanh(-0) = -0
  // NaN compares false: takes the exp path, which returns NaN.
  const __m256 use_small = _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ);
  return _mm256_blendv_ps(big, small, use_small);
}

EMBER_AVX2 void lstm_fwd_rows_avx2(const float* gates, const float* c_prev, float* act, float* c,
                                   float* h, int64_t H, int64_t r0, int64_t r1) {
  for (int64_t b = r0; b < r1; ++b) {
    const float* gr = gates + b * 4 * H;
    float* ar = act ? act + b * 4 * H : nullptr;
    const float* cp = c_prev + b * H;
    float* cr = c + b * H;
    float* hr = h + b * H;
    int64_t j = 0;
    for (; j + 8 <= H; j += 8) {
      const __m256 i = sigmoid256(_mm256_loadu_ps(gr + j));
      const __m256 f = sigmoid256(_mm256_loadu_ps(gr + H + j));
      const __m256 g = tanh256(_mm256_loadu_ps(gr + 2 * H + j));
      const __m256 o = sigmoid256(_mm256_loadu_ps(gr + 3 * H + j));
      const __m256 cn = _mm256_fmadd_ps(f, _mm256_loadu_ps(cp + j), _mm256_mul_ps(i, g));
      _mm256_storeu_ps(cr + j, cn);
      _mm256_storeu_ps(hr + j, _mm256_mul_ps(o, tanh256(cn)));
      if (ar) {
        _mm256_storeu_ps(ar + j, i);
        _mm256_storeu_ps(ar + H + j, f);
        _mm256_storeu_ps(ar + 2 * H + j, g);
        _mm256_storeu_ps(ar + 3 * H + j, o);
      }
    }
    if (j < H) {  // tail columns of this row: the scalar reference on a column sub-range
      for (; j < H; ++j) {
        const float i = sigm(gr[j]), f = sigm(gr[H + j]), g = std::tanh(gr[2 * H + j]),
                    o = sigm(gr[3 * H + j]);
        const float cn = f * cp[j] + i * g;
        cr[j] = cn;
        hr[j] = o * std::tanh(cn);
        if (ar) {
          ar[j] = i;
          ar[H + j] = f;
          ar[2 * H + j] = g;
          ar[3 * H + j] = o;
        }
      }
    }
  }
}

EMBER_AVX2 void lstm_bwd_rows_avx2(const float* act, const float* c_prev, const float* c,
                                   const float* dh, const float* dy, float* dc, float* dgates,
                                   int64_t H, int64_t r0, int64_t r1) {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t b = r0; b < r1; ++b) {
    const float* ar = act + b * 4 * H;
    float* dr = dgates + b * 4 * H;
    const int64_t o0 = b * H;
    int64_t j = 0;
    for (; j + 8 <= H; j += 8) {
      const int64_t k = o0 + j;
      const __m256 i = _mm256_loadu_ps(ar + j), f = _mm256_loadu_ps(ar + H + j);
      const __m256 g = _mm256_loadu_ps(ar + 2 * H + j), o = _mm256_loadu_ps(ar + 3 * H + j);
      const __m256 tc = tanh256(_mm256_loadu_ps(c + k));
      __m256 dht = _mm256_loadu_ps(dh + k);
      if (dy) dht = _mm256_add_ps(dht, _mm256_loadu_ps(dy + k));
      const __m256 dct = _mm256_fmadd_ps(_mm256_mul_ps(dht, o), _mm256_fnmadd_ps(tc, tc, one),
                                         _mm256_loadu_ps(dc + k));
      const __m256 di =
          _mm256_mul_ps(_mm256_mul_ps(dct, g), _mm256_mul_ps(i, _mm256_sub_ps(one, i)));
      const __m256 df = _mm256_mul_ps(_mm256_mul_ps(dct, _mm256_loadu_ps(c_prev + k)),
                                      _mm256_mul_ps(f, _mm256_sub_ps(one, f)));
      const __m256 dg = _mm256_mul_ps(_mm256_mul_ps(dct, i), _mm256_fnmadd_ps(g, g, one));
      const __m256 dov =
          _mm256_mul_ps(_mm256_mul_ps(dht, tc), _mm256_mul_ps(o, _mm256_sub_ps(one, o)));
      _mm256_storeu_ps(dr + j, di);
      _mm256_storeu_ps(dr + H + j, df);
      _mm256_storeu_ps(dr + 2 * H + j, dg);
      _mm256_storeu_ps(dr + 3 * H + j, dov);
      _mm256_storeu_ps(dc + k, _mm256_mul_ps(dct, f));
    }
    if (j < H) {
      // Tail: the reference on this row's remaining columns (same formulas).
      for (; j < H; ++j) {
        const int64_t k = o0 + j;
        const float i = ar[j], f = ar[H + j], g = ar[2 * H + j], o = ar[3 * H + j];
        const float tc = std::tanh(c[k]);
        const float dht = dy ? dh[k] + dy[k] : dh[k];
        const float dct = dc[k] + dht * o * (1.0f - tc * tc);
        dr[j] = dct * g * i * (1.0f - i);
        dr[H + j] = dct * c_prev[k] * f * (1.0f - f);
        dr[2 * H + j] = dct * i * (1.0f - g * g);
        dr[3 * H + j] = dht * tc * o * (1.0f - o);
        dc[k] = dct * f;
      }
    }
  }
}

EMBER_AVX2 void gru_fwd_rows_avx2(const float* xg, const float* hg, const float* h_prev, float* h,
                                  float* save, int64_t H, int64_t r0, int64_t r1) {
  for (int64_t b = r0; b < r1; ++b) {
    const float* xr = xg + b * 3 * H;
    const float* hr = hg + b * 3 * H;
    float* sr = save ? save + b * 4 * H : nullptr;
    const float* hp = h_prev + b * H;
    float* ho = h + b * H;
    int64_t j = 0;
    for (; j + 8 <= H; j += 8) {
      const __m256 r =
          sigmoid256(_mm256_add_ps(_mm256_loadu_ps(xr + j), _mm256_loadu_ps(hr + j)));
      const __m256 z =
          sigmoid256(_mm256_add_ps(_mm256_loadu_ps(xr + H + j), _mm256_loadu_ps(hr + H + j)));
      const __m256 hn = _mm256_loadu_ps(hr + 2 * H + j);
      const __m256 n = tanh256(_mm256_fmadd_ps(r, hn, _mm256_loadu_ps(xr + 2 * H + j)));
      _mm256_storeu_ps(ho + j, _mm256_fmadd_ps(z, _mm256_sub_ps(_mm256_loadu_ps(hp + j), n), n));
      if (sr) {
        _mm256_storeu_ps(sr + j, r);
        _mm256_storeu_ps(sr + H + j, z);
        _mm256_storeu_ps(sr + 2 * H + j, n);
        _mm256_storeu_ps(sr + 3 * H + j, hn);
      }
    }
    for (; j < H; ++j) {
      const float r = sigm(xr[j] + hr[j]), z = sigm(xr[H + j] + hr[H + j]);
      const float hn = hr[2 * H + j];
      const float n = std::tanh(xr[2 * H + j] + r * hn);
      ho[j] = n + z * (hp[j] - n);
      if (sr) {
        sr[j] = r;
        sr[H + j] = z;
        sr[2 * H + j] = n;
        sr[3 * H + j] = hn;
      }
    }
  }
}

EMBER_AVX2 void gru_bwd_rows_avx2(const float* save, const float* h_prev, const float* dh,
                                  const float* dy, float* dxg, float* dhg, float* dh_prev,
                                  int64_t H, int64_t r0, int64_t r1) {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t b = r0; b < r1; ++b) {
    const float* sr = save + b * 4 * H;
    float* dx = dxg + b * 3 * H;
    float* dhh = dhg + b * 3 * H;
    const int64_t o0 = b * H;
    int64_t j = 0;
    for (; j + 8 <= H; j += 8) {
      const int64_t k = o0 + j;
      const __m256 r = _mm256_loadu_ps(sr + j), z = _mm256_loadu_ps(sr + H + j);
      const __m256 n = _mm256_loadu_ps(sr + 2 * H + j), hn = _mm256_loadu_ps(sr + 3 * H + j);
      __m256 dht = _mm256_loadu_ps(dh + k);
      if (dy) dht = _mm256_add_ps(dht, _mm256_loadu_ps(dy + k));
      const __m256 dn =
          _mm256_mul_ps(_mm256_mul_ps(dht, _mm256_sub_ps(one, z)), _mm256_fnmadd_ps(n, n, one));
      const __m256 dz = _mm256_mul_ps(
          _mm256_mul_ps(dht, _mm256_sub_ps(_mm256_loadu_ps(h_prev + k), n)),
          _mm256_mul_ps(z, _mm256_sub_ps(one, z)));
      const __m256 dr =
          _mm256_mul_ps(_mm256_mul_ps(dn, hn), _mm256_mul_ps(r, _mm256_sub_ps(one, r)));
      _mm256_storeu_ps(dx + j, dr);
      _mm256_storeu_ps(dx + H + j, dz);
      _mm256_storeu_ps(dx + 2 * H + j, dn);
      _mm256_storeu_ps(dhh + j, dr);
      _mm256_storeu_ps(dhh + H + j, dz);
      _mm256_storeu_ps(dhh + 2 * H + j, _mm256_mul_ps(dn, r));
      _mm256_storeu_ps(dh_prev + k, _mm256_mul_ps(dht, z));
    }
    for (; j < H; ++j) {
      const int64_t k = o0 + j;
      const float r = sr[j], z = sr[H + j], n = sr[2 * H + j], hn = sr[3 * H + j];
      const float dht = dy ? dh[k] + dy[k] : dh[k];
      const float dn = dht * (1.0f - z) * (1.0f - n * n);
      const float dz = dht * (h_prev[k] - n) * z * (1.0f - z);
      const float dr = dn * hn * r * (1.0f - r);
      dx[j] = dr;
      dx[H + j] = dz;
      dx[2 * H + j] = dn;
      dhh[j] = dr;
      dhh[H + j] = dz;
      dhh[2 * H + j] = dn * r;
      dh_prev[k] = dht * z;
    }
  }
}

EMBER_AVX2 void rnn_fwd_range_avx2(const float* pre, float* h, bool relu, int64_t i0, int64_t i1) {
  const __m256 zero = _mm256_setzero_ps();
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 x = _mm256_loadu_ps(pre + i);
    // relu: blend (not max) so NaN passes through
    const __m256 y = relu ? _mm256_blendv_ps(x, zero, _mm256_cmp_ps(x, zero, _CMP_LT_OQ))
                          : tanh256(x);
    _mm256_storeu_ps(h + i, y);
  }
  rnn_fwd_range_cpu(pre, h, relu, i, i1);
}

EMBER_AVX2 void rnn_bwd_range_avx2(const float* h, const float* dh, const float* dy, float* dpre,
                                   bool relu, int64_t i0, int64_t i1) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    __m256 g = _mm256_loadu_ps(dh + i);
    if (dy) g = _mm256_add_ps(g, _mm256_loadu_ps(dy + i));
    const __m256 y = _mm256_loadu_ps(h + i);
    const __m256 d = relu ? _mm256_and_ps(g, _mm256_cmp_ps(y, zero, _CMP_GT_OQ))
                          : _mm256_mul_ps(g, _mm256_fnmadd_ps(y, y, one));
    _mm256_storeu_ps(dpre + i, d);
  }
  rnn_bwd_range_cpu(h, dh, dy, dpre, relu, i, i1);
}
#endif

// Run fn(r0, r1) over row blocks of [0, rows) (cols columns per row), on the pool when the
// problem is large; pieces are fixed by the shape only.
template <typename Fn>
void run_rows(int64_t rows, int64_t cols, Fn&& fn) {
  if (rows <= 0) return;
  const int nth = rows * cols >= kParallelElems ? cpu::get_num_threads() : 1;
  if (nth <= 1 || rows == 1) {
    fn(int64_t{0}, rows);
    return;
  }
  const int64_t pieces = std::min<int64_t>(rows, int64_t{4} * nth);
  cpu::ClaimPool::instance().run(nth, pieces, [&](int64_t p) {
    fn(rows * p / pieces, rows * (p + 1) / pieces);
  });
}

template <typename T>
constexpr bool use_avx2_for() {
  return std::is_same_v<T, float> && EMBER_COMPILED_AVX2;
}

template <typename T>
void lstm_fwd(const T* gates, const T* c_prev, T* act, T* c, T* h, int64_t B, int64_t H) {
  const bool avx2 = cpu::avx2_selected();
  run_rows(B, 4 * H, [&](int64_t r0, int64_t r1) {
#if EMBER_COMPILED_AVX2
    if constexpr (std::is_same_v<T, float>)
      if (avx2) return lstm_fwd_rows_avx2(gates, c_prev, act, c, h, H, r0, r1);
#endif
    (void)avx2;
    lstm_fwd_rows_cpu(gates, c_prev, act, c, h, H, r0, r1);
  });
}

template <typename T>
void lstm_bwd(const T* act, const T* c_prev, const T* c, const T* dh, const T* dy, T* dc, T* dgates,
              int64_t B, int64_t H) {
  const bool avx2 = cpu::avx2_selected();
  run_rows(B, 4 * H, [&](int64_t r0, int64_t r1) {
#if EMBER_COMPILED_AVX2
    if constexpr (std::is_same_v<T, float>)
      if (avx2) return lstm_bwd_rows_avx2(act, c_prev, c, dh, dy, dc, dgates, H, r0, r1);
#endif
    (void)avx2;
    lstm_bwd_rows_cpu(act, c_prev, c, dh, dy, dc, dgates, H, r0, r1);
  });
}

template <typename T>
void gru_fwd(const T* xg, const T* hg, const T* h_prev, T* h, T* save, int64_t B, int64_t H) {
  const bool avx2 = cpu::avx2_selected();
  run_rows(B, 4 * H, [&](int64_t r0, int64_t r1) {
#if EMBER_COMPILED_AVX2
    if constexpr (std::is_same_v<T, float>)
      if (avx2) return gru_fwd_rows_avx2(xg, hg, h_prev, h, save, H, r0, r1);
#endif
    (void)avx2;
    gru_fwd_rows_cpu(xg, hg, h_prev, h, save, H, r0, r1);
  });
}

template <typename T>
void gru_bwd(const T* save, const T* h_prev, const T* dh, const T* dy, T* dxg, T* dhg, T* dh_prev,
             int64_t B, int64_t H) {
  const bool avx2 = cpu::avx2_selected();
  run_rows(B, 4 * H, [&](int64_t r0, int64_t r1) {
#if EMBER_COMPILED_AVX2
    if constexpr (std::is_same_v<T, float>)
      if (avx2) return gru_bwd_rows_avx2(save, h_prev, dh, dy, dxg, dhg, dh_prev, H, r0, r1);
#endif
    (void)avx2;
    gru_bwd_rows_cpu(save, h_prev, dh, dy, dxg, dhg, dh_prev, H, r0, r1);
  });
}

// The element-wise RNN cell is cut into 1024-element "rows" so the same piece logic applies.
template <typename T>
void rnn_fwd(const T* pre, T* h, int64_t n, bool relu) {
  const bool avx2 = cpu::avx2_selected();
  constexpr int64_t kChunk = 1024;
  const int64_t rows = (n + kChunk - 1) / kChunk;
  run_rows(rows, kChunk, [&](int64_t r0, int64_t r1) {
    const int64_t i0 = r0 * kChunk, i1 = std::min(n, r1 * kChunk);
#if EMBER_COMPILED_AVX2
    if constexpr (std::is_same_v<T, float>)
      if (avx2) return rnn_fwd_range_avx2(pre, h, relu, i0, i1);
#endif
    (void)avx2;
    rnn_fwd_range_cpu(pre, h, relu, i0, i1);
  });
}

template <typename T>
void rnn_bwd(const T* h, const T* dh, const T* dy, T* dpre, int64_t n, bool relu) {
  const bool avx2 = cpu::avx2_selected();
  constexpr int64_t kChunk = 1024;
  const int64_t rows = (n + kChunk - 1) / kChunk;
  run_rows(rows, kChunk, [&](int64_t r0, int64_t r1) {
    const int64_t i0 = r0 * kChunk, i1 = std::min(n, r1 * kChunk);
#if EMBER_COMPILED_AVX2
    if constexpr (std::is_same_v<T, float>)
      if (avx2) return rnn_bwd_range_avx2(h, dh, dy, dpre, relu, i0, i1);
#endif
    (void)avx2;
    rnn_bwd_range_cpu(h, dh, dy, dpre, relu, i0, i1);
  });
}

}  // namespace

// ---- entry points -------------------------------------------------------------------------
void lstm_cell_fwd(const float* gates, const float* c_prev, float* act, float* c, float* h,
                   int64_t B, int64_t H) {
  lstm_fwd(gates, c_prev, act, c, h, B, H);
}
void lstm_cell_bwd(const float* act, const float* c_prev, const float* c, const float* dh,
                   const float* dy, float* dc, float* dgates, int64_t B, int64_t H) {
  lstm_bwd(act, c_prev, c, dh, dy, dc, dgates, B, H);
}
void gru_cell_fwd(const float* xg, const float* hg, const float* h_prev, float* h, float* save,
                  int64_t B, int64_t H) {
  gru_fwd(xg, hg, h_prev, h, save, B, H);
}
void gru_cell_bwd(const float* save, const float* h_prev, const float* dh, const float* dy,
                  float* dxg, float* dhg, float* dh_prev, int64_t B, int64_t H) {
  gru_bwd(save, h_prev, dh, dy, dxg, dhg, dh_prev, B, H);
}
void rnn_cell_fwd(const float* pre, float* h, int64_t n, bool relu) { rnn_fwd(pre, h, n, relu); }
void rnn_cell_bwd(const float* h, const float* dh, const float* dy, float* dpre, int64_t n,
                  bool relu) {
  rnn_bwd(h, dh, dy, dpre, n, relu);
}

void lstm_cell_fwd(const double* gates, const double* c_prev, double* act, double* c, double* h,
                   int64_t B, int64_t H) {
  lstm_fwd(gates, c_prev, act, c, h, B, H);
}
void lstm_cell_bwd(const double* act, const double* c_prev, const double* c, const double* dh,
                   const double* dy, double* dc, double* dgates, int64_t B, int64_t H) {
  lstm_bwd(act, c_prev, c, dh, dy, dc, dgates, B, H);
}
void gru_cell_fwd(const double* xg, const double* hg, const double* h_prev, double* h, double* save,
                  int64_t B, int64_t H) {
  gru_fwd(xg, hg, h_prev, h, save, B, H);
}
void gru_cell_bwd(const double* save, const double* h_prev, const double* dh, const double* dy,
                  double* dxg, double* dhg, double* dh_prev, int64_t B, int64_t H) {
  gru_bwd(save, h_prev, dh, dy, dxg, dhg, dh_prev, B, H);
}
void rnn_cell_fwd(const double* pre, double* h, int64_t n, bool relu) { rnn_fwd(pre, h, n, relu); }
void rnn_cell_bwd(const double* h, const double* dh, const double* dy, double* dpre, int64_t n,
                  bool relu) {
  rnn_bwd(h, dh, dy, dpre, n, relu);
}

}  // namespace ember
