// conv2d.cpp -- 2-D convolution on the CPU (NCHW): forward, backward-data, backward-weight and
// bias gradient, with stride, asymmetric zero padding, dilation and groups.
//
// Shapes (Conv2dDims): x [N, C, H, W], w [O, C/G, KH, KW], b [O], y [N, O, OH, OW], all
// C-contiguous. y[n, o, oh, ow] = b[o] + sum_{c, i, j} w[o, c, i, j] *
// x[n, g*C/G + c, oh*sh - ph + i*dh, ow*sw - pw + j*dw] (zero outside the image), g = o / (O/G).
// ph / pw are the top / left padding; the bottom / right padding is implied by OH / OW (the
// caller computes them), which is how "same" with an even kernel pads one more on the far side.
//
// Variants:
//  * conv2d_*_cpu<T>   scalar reference (float and double; double is the gradcheck path): one
//                      output element per loop nest, accumulated in double. Backward-data is a
//                      gather (each gx element sums its own contributions), so it needs no
//                      zeroing and no float scatter-adds.
//  * fast float path (AVX2/FMA, and AVX-512 inside the GEMM) built on our packed GEMM
//    (gemm_serial: one matrix on the calling thread, with an output row stride). Work is cut
//    into tiles of whole output rows, or of columns of one row when a single unfolded row is
//    already over the cap (long 1-D signals), bounded by kColCap floats of workspace per
//    thread, reused across calls: never the whole unfolded tensor.
//      shifted slab (stride 1, C/G >= 32): the input rows of a tile are copied into a
//                  zero-padded slab of row width Wp = OW + (KW-1)*dw; tap (i, j) then reads
//                  the slab at the constant offset i*dh*Wp + j*dw (a plain strided view, no
//                  im2col). All taps go into ONE implicit GEMM with K (or N) = KK*Cg, whose B
//                  panels are packed straight from the slab (gemm.cpp: gemm_serial_gather /
//                  gemm_serial_colptr), so the micro-kernel sums all taps in registers.
//                  Forward: y_tile[Og, rows*OW] = W[Og, KK*Cg] @ B, B(tap*Cg + c, n) = slab
//                  channel c shifted by the tap at output pixel n (the gather skips the Wp - OW
//                  padding columns: nothing is computed and dropped). Weight gradient:
//                  gW[Og, KK*Cg] += gy_wide[Og, rows*Wp] @ B, column tap*Cg + c of B a pointer
//                  into the slab (gy widened to Wp with zero columns). Input gradient, for
//                  C/G >= 64 and padding <= (K-1)*dilation: the forward of gy with the kernel
//                  flipped and transposed and padding (K-1)*dilation - p (bwd_data_as_fwd);
//                  otherwise (C/G 32..63) one GEMM per tap, slab += W_tap^T @ gy_wide, then
//                  the slab is added into gx (maps up to 32x32; im2col above).
//      im2col (the rest): forward y_tile[Og, T] = W_g[Og, K] @ col[K, T], K = Cg*KH*KW,
//                  T = rows*OW; 1x1 stride-1 unpadded convolutions use x[n, g] itself as col.
//                  Input gradient col = W^T @ gy_tile, then col2im adds it into gx. Weight
//                  gradient gW_g += gy_tile @ col^T over all tiles of all images.
//      Forward results go to a contiguous [Og, T] tile and are copied (+ bias) into y.
//      Input-gradient pieces own (image, group, block of input channels): no two pieces
//      write the same gx element, and batch-1 problems still get several pieces. Weight-
//      gradient pieces each accumulate a whole gW (one per thread piece), summed at the end.
//      direct (AVX-512, < 64 input channels per group or maps up to 16x16): no packing of
//                  the input at all (strides > 1 split the input into phase planes first, see
//                  DirectGeo; not for the channel-vector tiles below, which broadcast single
//                  floats from the plain padded input). The forward computes the output over the
//                  slab's "wide" pixel index n = row*Wp + col, for which tap (i, j) of channel
//                  c is the slab at n + c*cs + i*dh*Wp + j*dw: a 12 x 32 (or 8 x 48) register
//                  tile of output channels x wide pixels loads its B vectors straight from the
//                  slab (direct_tile512); the Wp - OW extra columns are dropped while the tile
//                  is compacted (vcompressps) into y. The input gradient is the same kernel on
//                  gy with the flipped, transposed weights. The weight gradient with more than
//                  8 input channels per group (any map whose padded image fits kColCap)
//                  transposes the input into a channels-last slab and vectorises over input
//                  channels (bwd_weight_chanvec): R output channels x TT taps x 16-32 input
//                  channels of accumulators over the real output pixels, gy broadcast from its
//                  own rows. CPUs without AVX-512 run it on AVX2 from 4 input channels
//                  (bwd_weight_chanvec<false>: 2 output channels x 3-6 taps x 8-16 input
//                  channels; not where its sums exceed 2 MiB). With up to 8 (stems) the
//                  AVX-512 path stacks several images' padded frames into one slab and
//                  accumulates gW[o][c][tap] along the stacked pixels in vector lanes
//                  (wgrad_tile512), masked to real output pixels. See the measurements at
//                  each function.
//                  With >= 32 output channels per group on maps up to 256 pixels the
//                  forward / input gradient tiles are instead 6-8 output pixels x 16-64
//                  output channels (fwd_chanvec<true>): the weights are the vector operand,
//                  each pixel's input a broadcast, so no padding column is computed, and border
//                  pixels, grouped by the taps that land inside the image, skip the taps that
//                  would read the zero padding (tap_groups). CPUs without AVX-512 run this
//                  forward on AVX2 too (fwd_chanvec<false>: 6 pixels x 16 channels), and
//                  there also on larger maps from 16 output channels, before Winograd at up to
//                  16 input channels, and for the stride-1 input gradient (use_chanvec_avx2,
//                  chanvec_before_wino).
//                  The input gradient at strides > 1 (>= 8 input channels per group) splits
//                  gx into its sh x sw phases, each a stride-1 correlation of gy with the taps
//                  that reach it, run by the same tiles (bwd_data_phased; also on AVX2).
//      Winograd    (3x3, stride 1, dilation 1, padding <= 2, >= 16 input and output channels
//                  per group; maps under 64 pixels only from 64 input channels; AVX-512, and
//                  on CPUs without it on AVX2: fwd_wino_avx2, bwd_weight_wino<false>):
//                  F(2x2, 3x3) forward, and the input gradient as the forward of gy with the
//                  flipped, transposed kernel (fwd_wino512): 16 GEMMs over the channels, one
//                  per position of the 4x4 transformed tile, on the direct kernel's register
//                  tiles, for 2.25x fewer multiplies than the direct sum. The weight gradient
//                  (bwd_weight_wino; up to 256 x 256 channels per group; on AVX2 not 16 x 16
//                  channels over 1024 pixels) is its adjoint: 16 GEMMs over the tiles.
//                  Inf / NaN, which the transforms would spread over whole tiles, skip them:
//                  weights, and x or gy in the weight gradient, send the call to the direct
//                  paths; a forward task whose input holds one computes its rows with the
//                  scalar reference.
//      plane       (1-3 input channels, no groups, stride 1: stems such as MNIST's 1 -> 32
//                  3x3): vectors along the output rows of the padded planes, each input
//                  vector shared by 2 output channels' FMAs (fwd_plane; AVX-512 up to 9 taps
//                  in all, AVX2 up to 3 channels of 2..9 taps).
//      depthwise   (groups == C == O) with stride 1 has its own direct AVX2 loops: the plane is
//                  copied into a zero-padded per-thread buffer, then each row of outputs is
//                  KH*KW FMAs of shifted unaligned loads per 8 outputs (GEMM with M = 1,
//                  K = 9 would waste most of its register tile). Backward-data is the same
//                  loop on the padded gradient with the flipped kernel; backward-weight
//                  accumulates the 9 tap dot products in one pass.
//    Threads: each entry point cuts the work into independent pieces claimed from
//    cpu::ClaimPool (pool.h); every piece runs gemm_serial on its own thread (calling the
//    threaded gemm() from a pool worker would nest the pool).
//
// Decisions and the measurements behind them (1 thread, thread CPU time, median of 7-9, on a
// shared 2-core Xeon with AVX-512 whose FMA peak measured 160-185 GFLOP/s; N=32 64->64 32x32
// 3x3 unless said otherwise; indicative, the machine was loaded):
//  * shifted GEMMs over im2col where they apply (C/G >= 32, stride 1): forward 64->64 32x32
//    36 -> 26 ms, 128->128 16x16 17 -> 13 ms, 64->64 56x56 29 -> 23 ms; weight gradient 5-10%
//    faster; input gradient see bwd_data_fast (faster up to 32x32 maps, slower at 56x56).
//    Below 32 input channels per group the per-tap GEMMs have too small a K.
//  * one implicit GEMM over all taps (K = KK*Cg, B packed from the slab by a gather) over one
//    GEMM per tap (B = the strided slab view, packed per tap; C read and written per tap; the
//    output Wp wide). Best/median of alternated runs, 1 thread, --clock thread: forward
//    (warm output) 64->64 32x32 27.0 -> 24.4 ms, 56x56 24.7 -> 19.9 ms, 128->128 16x16
//    12.5 -> 11.3 ms, N=64 32->64 14x14 8.0 -> 6.6 ms. The weight gradient as one GEMM
//    (gy packed once, not per tap): fwd+bwd -5..10%. The input gradient as a forward of gy:
//    bwd-data alone 31 -> 26 ms (32x32), 25 -> 21 ms (56x56; was im2col), 14 -> 12.4 ms
//    (16x16), but 7.8 -> 9.0 ms for 32 input channels (M = 32), hence C/G >= 64.
//  * several images per slab and GEMM when a whole image has < kMinCols = 768 output pixels:
//    N=64 32->64 14x14 forward 7.1 -> 6.4 ms (2 alternated runs each); 128->128 16x16 (3
//    images per GEMM, capped by kColCap) unchanged at 12.2-12.5 ms.
//  * explicit im2col tile + GEMM, not implicit GEMM, where the slab does not apply. An implicit version (the GEMM calling
//    back for its B panels, built from x one im2col row at a time in L1) was tried: 36-37 ms
//    vs 35-36 ms explicit, and 9.9 vs 9.0 ms for N=64 32->64 14x14, so it was dropped. Where
//    the time goes: the GEMM alone on the tiles 25 ms (95 GFLOP/s, what gemm() reaches on the
//    same [64 x 352 x 576] shape: with M = 64 output channels every packed B element is used
//    only 64 times), im2col alone 6 ms, both 36 ms (~67 GFLOP/s, ~40% of peak).
//  * tile cap kColCap = 256K floats (1 MiB, about the L2): 64K / 256K / 1M / 4M floats gave
//    42-48 / 35-36 / 35-37 / 36-37 ms.
//  * GEMM into a contiguous [Og, T] tile and copy (+ bias) out: 34-35 vs 36 ms writing y in
//    place (y's row stride is 4 KiB for 32x32 maps); pointwise convolutions without a bias on
//    maps whose size is not a multiple of 256 write y in place (4-6% faster; fwd_fast).
//  * backward-data transposes W once per call (GEMM A packing then vectorised): 72 -> 83
//    GFLOP/s; 1x1 backward-data stays at ~45 GFLOP/s (K = Og = 64: little work per C element).
//  * depthwise 3x3, N=32 C=64 56x56: forward 7.7 -> 6.5 ms with a row of outputs in registers;
//    weight gradient 12.6 -> 9.5 ms with the fused 9-tap pass. These are memory-bound.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/common.h"
#include "kernels/cpu/pool.h"
#include "kernels/kernels.h"

namespace ember {
namespace {

constexpr int64_t kColCap = 256 * 1024;

struct Geo {
  int64_t Cg, Og, KK, K, HW, OHW;
  explicit Geo(const Conv2dDims& d)
      : Cg(d.C / d.G),
        Og(d.O / d.G),
        KK(d.KH * d.KW),
        K(d.C / d.G * d.KH * d.KW),
        HW(d.H * d.W),
        OHW(d.OH * d.OW) {}
};

inline int nthreads_for(double flops) {
  return flops > 2e6 ? cpu::get_num_threads() : 1;
}

// ---- scalar reference ------------------------------------------------------------------------
// Output rows [oh0, oh1) of channel o of image n (all rows by default).
template <typename T>
void fwd_ref(const T* x, const T* w, const T* b, T* y, const Conv2dDims& d, int64_t n,
             int64_t o, int64_t oh0 = 0, int64_t oh1 = -1) {
  const Geo q(d);
  const int64_t g = o / q.Og;
  const T* xn = x + (n * d.C + g * q.Cg) * q.HW;
  const T* wo = w + o * q.K;
  T* yo = y + (n * d.O + o) * q.OHW;
  for (int64_t oh = oh0; oh < (oh1 < 0 ? d.OH : oh1); ++oh)
    for (int64_t ow = 0; ow < d.OW; ++ow) {
      double acc = b ? static_cast<double>(b[o]) : 0.0;
      for (int64_t c = 0; c < q.Cg; ++c)
        for (int64_t i = 0; i < d.KH; ++i) {
          const int64_t ih = oh * d.sh - d.ph + i * d.dh;
          if (ih < 0 || ih >= d.H) continue;
          for (int64_t j = 0; j < d.KW; ++j) {
            const int64_t iw = ow * d.sw - d.pw + j * d.dw;
            if (iw < 0 || iw >= d.W) continue;
            acc += static_cast<double>(xn[(c * d.H + ih) * d.W + iw]) *
                   static_cast<double>(wo[(c * d.KH + i) * d.KW + j]);
          }
        }
      yo[oh * d.OW + ow] = static_cast<T>(acc);
    }
}

template <typename T>
void bwd_data_ref(const T* gy, const T* w, T* gx, const Conv2dDims& d, int64_t n, int64_t c) {
  const Geo q(d);
  const int64_t g = c / q.Cg, cl = c - g * q.Cg;
  T* gxc = gx + (n * d.C + c) * q.HW;
  for (int64_t ih = 0; ih < d.H; ++ih)
    for (int64_t iw = 0; iw < d.W; ++iw) {
      double acc = 0.0;
      for (int64_t ol = 0; ol < q.Og; ++ol) {
        const int64_t o = g * q.Og + ol;
        const T* gyo = gy + (n * d.O + o) * q.OHW;
        const T* wo = w + (o * q.Cg + cl) * q.KK;
        for (int64_t i = 0; i < d.KH; ++i) {
          const int64_t th = ih + d.ph - i * d.dh;
          if (th < 0 || th % d.sh != 0 || th / d.sh >= d.OH) continue;
          const int64_t oh = th / d.sh;
          for (int64_t j = 0; j < d.KW; ++j) {
            const int64_t tw = iw + d.pw - j * d.dw;
            if (tw < 0 || tw % d.sw != 0 || tw / d.sw >= d.OW) continue;
            acc += static_cast<double>(gyo[oh * d.OW + tw / d.sw]) *
                   static_cast<double>(wo[i * d.KW + j]);
          }
        }
      }
      gxc[ih * d.W + iw] = static_cast<T>(acc);
    }
}

template <typename T>
void bwd_weight_ref(const T* gy, const T* x, T* gw, const Conv2dDims& d, int64_t o) {
  const Geo q(d);
  const int64_t g = o / q.Og;
  for (int64_t c = 0; c < q.Cg; ++c)
    for (int64_t i = 0; i < d.KH; ++i)
      for (int64_t j = 0; j < d.KW; ++j) {
        double acc = 0.0;
        for (int64_t n = 0; n < d.N; ++n) {
          const T* gyo = gy + (n * d.O + o) * q.OHW;
          const T* xc = x + (n * d.C + g * q.Cg + c) * q.HW;
          for (int64_t oh = 0; oh < d.OH; ++oh) {
            const int64_t ih = oh * d.sh - d.ph + i * d.dh;
            if (ih < 0 || ih >= d.H) continue;
            for (int64_t ow = 0; ow < d.OW; ++ow) {
              const int64_t iw = ow * d.sw - d.pw + j * d.dw;
              if (iw < 0 || iw >= d.W) continue;
              acc += static_cast<double>(gyo[oh * d.OW + ow]) *
                     static_cast<double>(xc[ih * d.W + iw]);
            }
          }
        }
        gw[(o * q.Cg + c) * q.KK + i * d.KW + j] = static_cast<T>(acc);
      }
}

template <typename T>
void bias_ref(const T* gy, T* gb, const Conv2dDims& d, int64_t o) {
  const int64_t OHW = d.OH * d.OW;
  double acc = 0.0;
  for (int64_t n = 0; n < d.N; ++n) {
    const T* p = gy + (n * d.O + o) * OHW;
    for (int64_t s = 0; s < OHW; ++s) acc += static_cast<double>(p[s]);
  }
  gb[o] = static_cast<T>(acc);
}

double conv_flops(const Conv2dDims& d) {
  return 2.0 * d.N * d.O * d.OH * d.OW * static_cast<double>(d.C / std::max<int64_t>(d.G, 1)) *
         d.KH * d.KW;
}

// ---- per-thread workspace ----------------------------------------------------------------------
// Grows to the largest size seen and is reused by every later call on that thread (pool
// threads persist), so steady-state calls allocate nothing. A request that cannot be met
// throws cpu::AllocError (a std::bad_alloc: MemoryError in Python). Thrown inside a pool
// piece, the pool rethrows it on the calling thread (pool.h); an earlier version returned
// null and the pieces returned early, leaving part of the output unwritten without an error.
std::atomic<int64_t> g_ws_limit{0};  // test hook: requests above this many bytes fail (0: off)

struct Workspace {
  float* p = nullptr;
  size_t cap = 0;
  Workspace() = default;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() { std::free(p); }
  float* get(size_t n) {
    n = std::max<size_t>(n, 16);  // never hand out a null buffer for an empty request
    const size_t bytes = (n * sizeof(float) + 63) & ~size_t{63};
    const int64_t limit = g_ws_limit.load(std::memory_order_relaxed);
    if (limit > 0 && bytes > static_cast<size_t>(limit))
      throw cpu::AllocError("conv2d", bytes);
    if (n > cap) {
      std::free(p);
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      cap = p ? n : 0;
      if (!p) throw cpu::AllocError("conv2d", bytes);
    }
    return p;
  }
};
thread_local Workspace tl_col;      // im2col tiles / padded planes (pool threads and caller)
thread_local Workspace tl_partial;  // the caller's per-piece weight-gradient accumulators

// Output columns [lo, hi) whose input column iw = ow*s - p + j*dl lies in [0, W).
inline void valid_range(int64_t OW, int64_t W, int64_t s, int64_t p, int64_t off,
                        int64_t* lo, int64_t* hi) {
  const int64_t a = p - off;  // ow*s >= a
  const int64_t b = W - 1 + p - off;  // ow*s <= b
  *lo = a <= 0 ? 0 : (a + s - 1) / s;
  *hi = b < 0 ? 0 : std::min(OW, b / s + 1);
  if (*hi < *lo) *hi = *lo;
}

// Rows of output per tile so that rows*OW*krows floats stay under the cap, balanced.
inline int64_t tile_rows(int64_t OH, int64_t OW, int64_t krows) {
  int64_t r = std::max<int64_t>(1, kColCap / std::max<int64_t>(1, krows * OW));
  r = std::min(r, OH);
  const int64_t nt = (OH + r - 1) / r;
  return (OH + nt - 1) / nt;
}

// A tile of output positions of one image: whole rows [oh0, oh0 + rows), or, when one row of
// the unfolded input is already over the cap (long 1-D signals), a column range [ow0, ow0 +
// cols) of one row. Either way its T = rows*cols positions are contiguous in the output plane,
// starting at off.
struct Tile {
  int64_t oh0, rows, ow0, cols, off, T;
};

struct TilePlan {
  int64_t R = 1, CW = 1, nr = 1, nc = 1;
  int64_t count() const { return nr * nc; }
  Tile at(int64_t t, int64_t OH, int64_t OW) const {
    Tile tl;
    const int64_t tr = t / nc, tc = t % nc;
    tl.oh0 = tr * R;
    tl.rows = std::min(R, OH - tl.oh0);
    tl.ow0 = tc * CW;
    tl.cols = std::min(CW, OW - tl.ow0);
    tl.off = tl.oh0 * OW + tl.ow0;
    tl.T = tl.rows * tl.cols;
    return tl;
  }
};

// Tiles with krows unfolded rows (floats per output position) under kColCap floats.
inline TilePlan plan_tiles(int64_t OH, int64_t OW, int64_t krows) {
  TilePlan p;
  krows = std::max<int64_t>(1, krows);
  if (krows * OW <= kColCap) {
    p.R = tile_rows(OH, OW, krows);
    p.CW = OW;
  } else {
    const int64_t cw = std::min(OW, std::max<int64_t>(1, kColCap / krows));
    p.nc = (OW + cw - 1) / cw;
    p.CW = (OW + p.nc - 1) / p.nc;
  }
  p.nr = (OH + p.R - 1) / p.R;
  return p;
}

#if EMBER_COMPILED_AVX2
using cpu::tail_mask;

EMBER_AVX2 void add_row(float* dst, const float* src, int64_t n) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    _mm256_storeu_ps(dst + k, _mm256_add_ps(_mm256_loadu_ps(dst + k), _mm256_loadu_ps(src + k)));
  for (; k < n; ++k) dst[k] += src[k];
}

EMBER_AVX2 void copy_bias_row(float* dst, const float* src, int64_t n, float bias) {
  const __m256 vb = _mm256_set1_ps(bias);
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, _mm256_add_ps(_mm256_loadu_ps(src + k), vb));
  for (; k < n; ++k) dst[k] = src[k] + bias;
}

EMBER_AVX2 inline void copy_floats(float* dst, const float* src, int64_t n) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, _mm256_loadu_ps(src + k));
  if (k < n) cpu::store_first(dst + k, _mm256_maskload_ps(src + k, tail_mask(n - k)), n - k);
}

EMBER_AVX2 inline void zero_floats(float* dst, int64_t n) {
  const __m256 z = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, z);
  if (k < n) cpu::store_first(dst + k, z, n - k);
}

// col[(c*KH + i)*KW + j][(oh - oh0)*cols + ow - ow0] over the tile, for the Cg channels at xg
// (x[n, g*Cg]).
EMBER_AVX2 void im2col_tile(const float* xg, const Conv2dDims& d, int64_t cg, const Tile& tl,
                            float* col) {
  const int64_t HW = d.H * d.W, e = tl.ow0 + tl.cols;
  for (int64_t c = 0; c < cg; ++c)
    for (int64_t i = 0; i < d.KH; ++i)
      for (int64_t j = 0; j < d.KW; ++j) {
        float* dst = col + ((c * d.KH + i) * d.KW + j) * tl.T - tl.ow0;  // dst[ow]
        int64_t lo, hi;
        valid_range(d.OW, d.W, d.sw, d.pw, j * d.dw, &lo, &hi);
        const int64_t a = std::clamp(lo, tl.ow0, e), b = std::clamp(hi, a, e);
        for (int64_t r = 0; r < tl.rows; ++r, dst += tl.cols) {
          const int64_t ih = (tl.oh0 + r) * d.sh - d.ph + i * d.dh;
          if (ih < 0 || ih >= d.H || a >= b) {
            zero_floats(dst + tl.ow0, tl.cols);
            continue;
          }
          const float* src = xg + c * HW + ih * d.W - d.pw + j * d.dw;  // src[ow * sw]
          zero_floats(dst + tl.ow0, a - tl.ow0);
          if (d.sw == 1) {
            copy_floats(dst + a, src + a, b - a);
          } else if (d.sw == 2) {
            // even elements of 16 loaded floats, while all 16 stay inside the x row
            int64_t ow = a;
            const int64_t iw0 = j * d.dw - d.pw;  // input column of output column ow: 2*ow + iw0
            for (; ow + 8 <= b && 2 * ow + iw0 + 15 <= d.W - 1; ow += 8) {
              const __m256 ev = _mm256_shuffle_ps(_mm256_loadu_ps(src + 2 * ow),
                                                  _mm256_loadu_ps(src + 2 * ow + 8), 0x88);
              _mm256_storeu_ps(dst + ow, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                             _mm256_castps_pd(ev), 0xD8)));
            }
            for (; ow < b; ++ow) dst[ow] = src[2 * ow];
          } else {
            for (int64_t ow = a; ow < b; ++ow) dst[ow] = src[ow * d.sw];
          }
          zero_floats(dst + b, e - b);
        }
      }
}

// gx[c0 + c] += col2im(col) over the tile, for cc channels at gxg (gx[n, g*Cg]).
void col2im_tile(const float* col, const Conv2dDims& d, int64_t c0, int64_t cc, const Tile& tl,
                 float* gxg) {
  const int64_t HW = d.H * d.W, e = tl.ow0 + tl.cols;
  for (int64_t c = 0; c < cc; ++c)
    for (int64_t i = 0; i < d.KH; ++i)
      for (int64_t j = 0; j < d.KW; ++j) {
        const float* src = col + ((c * d.KH + i) * d.KW + j) * tl.T - tl.ow0;  // src[ow]
        int64_t lo, hi;
        valid_range(d.OW, d.W, d.sw, d.pw, j * d.dw, &lo, &hi);
        const int64_t a = std::clamp(lo, tl.ow0, e), b = std::clamp(hi, a, e);
        if (a >= b) continue;
        for (int64_t r = 0; r < tl.rows; ++r, src += tl.cols) {
          const int64_t ih = (tl.oh0 + r) * d.sh - d.ph + i * d.dh;
          if (ih < 0 || ih >= d.H) continue;
          float* dst = gxg + (c0 + c) * HW + ih * d.W - d.pw + j * d.dw;
          if (d.sw == 1)
            add_row(dst + a, src + a, b - a);
          else
            for (int64_t ow = a; ow < b; ++ow) dst[ow * d.sw] += src[ow];
        }
      }
}

bool is_pointwise(const Conv2dDims& d) {
  return d.KH == 1 && d.KW == 1 && d.sh == 1 && d.sw == 1 && d.ph == 0 && d.pw == 0 &&
         d.OH == d.H && d.OW == d.W;
}

// P[r][c] = src[r - offh][c - offw] (0 outside [0, SH) x [0, SW)) for PH rows of width PW.
EMBER_AVX2 void pad_plane_rows(const float* src, int64_t SH, int64_t SW, int64_t offh,
                               int64_t offw, int64_t PH, int64_t PW, float* P) {
  const int64_t lo = std::clamp<int64_t>(offw, 0, PW), hi = std::clamp<int64_t>(offw + SW, 0, PW);
  for (int64_t r = 0; r < PH; ++r) {
    float* dst = P + r * PW;
    const int64_t sr = r - offh;
    if (sr < 0 || sr >= SH) {
      zero_floats(dst, PW);
      continue;
    }
    zero_floats(dst, lo);
    copy_floats(dst + lo, src + sr * SW + (lo - offw), hi - lo);
    zero_floats(dst + hi, PW - hi);
  }
}

// ---- GEMM-based fast paths ----------------------------------------------------------------------
// Stride-1 convolution without im2col ("shifted slab"): with the input tile copied into a
// zero-padded slab of row width Wp = OW + (KW-1)*dw, tap (i, j) reads the slab at the constant
// offset i*dh*Wp + j*dw (see fwd_shifted_wt). Below kShiftMinC channels per group the per-tap
// K blocks are too short (the per-tap gradient GEMMs; measured with the per-tap forward).
constexpr int64_t kShiftMinC = 32;

bool use_shifted(const Conv2dDims& d) {
  const int64_t Wp = d.OW + (d.KW - 1) * d.dw, eh = (d.KH - 1) * d.dh;
  const int64_t Cg = d.C / d.G, Og = d.O / d.G;
  return d.sh == 1 && d.sw == 1 && Cg >= kShiftMinC && d.KH * d.KW > 1 &&
         (Cg * (1 + eh) + Og) * Wp <= kColCap;  // one output row's slab fits the cap
}

// gy rows [oh0, oh0 + rows) of Og channels as [Og, rows*Wp], each row zero-padded from OW to
// Wp: the row layout of the slab, so the shifted GEMMs can use it as is (the zero columns add
// nothing).
EMBER_AVX2 void widen_rows(const float* gyg, int64_t OHW, int64_t OW, int64_t oh0, int64_t rows,
                           int64_t Og, int64_t Wp, float* out) {
  for (int64_t o = 0; o < Og; ++o)
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = out + (o * rows + r) * Wp;
      copy_floats(dst, gyg + o * OHW + (oh0 + r) * OW, OW);
      zero_floats(dst + OW, Wp - OW);
    }
}

// Rows per slab tile: slab (Cg x (rows + eh) x Wp) + an [Og, rows*Wp] tile <= kColCap.
int64_t shifted_rows(const Conv2dDims& d, int64_t Wp, int64_t eh) {
  const int64_t Cg = d.C / d.G, Og = d.O / d.G;
  int64_t R = std::max<int64_t>(1, (kColCap / Wp - Cg * eh) / (Cg + Og));
  R = std::min(R, d.OH);
  const int64_t nt = (d.OH + R - 1) / R;
  return (d.OH + nt - 1) / nt;
}

// Slab of Cg channels for output rows [oh0, oh0 + rows): channel c at ws + c*cs.
void build_slab(const float* xg, const Conv2dDims& d, int64_t Cg, int64_t oh0, int64_t sr,
                int64_t Wp, int64_t cs, float* ws) {
  for (int64_t c = 0; c < Cg; ++c) {
    pad_plane_rows(xg + c * d.H * d.W, d.H, d.W, d.ph - oh0, d.pw, sr, Wp, ws + c * cs);
    zero_floats(ws + c * cs + sr * Wp, cs - sr * Wp);
  }
}

// Per-thread index arrays of the gathered (implicit-GEMM) operand of fwd_shifted.
thread_local std::vector<const float*> tl_brow;
thread_local std::vector<int64_t> tl_bcol;

// Forward as ONE GEMM per slab tile with the taps concatenated along K: y_tile[Og, rows*OW] =
// W[Og, KK*Cg] @ B, B(tap*Cg + c, n) = slab[c][off(tap) + (n / OW)*Wp + n % OW]. B is never
// materialised: the GEMM packs its panels straight from the slab (gemm_serial_gather), so the
// micro-kernel accumulates all taps in registers (C is written once per K block, not read and
// written once per tap), and the Wp - OW padding columns are never computed.
// wt: the weights as [G][Og][KK][Cg] (row o of group g is the GEMM's A row, k = tap*Cg + c
// matching B's row order).
// Small maps (a whole image per slab tile with fewer than kMinCols output pixels): several
// images share one slab and one GEMM (their slabs follow each other; the gather's column
// offsets jump between them), so N is large enough to amortise packing A and the edge panels.
constexpr int64_t kMinCols = 768;

void fwd_shifted_wt(const float* x, const float* wt, const float* b, float* y,
                    const Conv2dDims& d) {
  const Geo q(d);
  const int64_t Wp = d.OW + (d.KW - 1) * d.dw, eh = (d.KH - 1) * d.dh;
  const int64_t R = shifted_rows(d, Wp, eh), nt = (d.OH + R - 1) / R;
  const int nth = nthreads_for(conv_flops(d));
  int64_t ni = 1;  // images per piece
  if (nt == 1 && q.OHW < kMinCols) {
    const int64_t cs1 = ((d.OH + eh) * Wp + (d.KW - 1) * d.dw + 15) / 16 * 16;
    const int64_t fit = std::max<int64_t>(1, kColCap / (q.Cg * cs1 + q.Og * q.OHW));
    ni = std::min({(kMinCols + q.OHW - 1) / q.OHW, fit,
                   std::max<int64_t>(1, d.N * d.G / (2 * nth))});
  }
  const int64_t nb = (d.N + ni - 1) / ni;  // image batches
  const int64_t pieces = nb * d.G * nt;
  cpu::ClaimPool::instance().run(nth, pieces, [&](int64_t p) {
    const int64_t nbi = p / (d.G * nt), g = (p / nt) % d.G, t = p % nt;
    const int64_t n0 = nbi * ni, nn = std::min(ni, d.N - n0);
    const int64_t oh0 = t * R, rows = std::min(R, d.OH - oh0), T = rows * d.OW, NT = nn * T;
    const int64_t sr = rows + eh;
    const int64_t cs = (sr * Wp + (d.KW - 1) * d.dw + 15) / 16 * 16, is = q.Cg * cs;
    float* ws = tl_col.get(static_cast<size_t>(nn * is + q.Og * NT));
    std::vector<const float*>& brow = tl_brow;
    std::vector<int64_t>& bcol = tl_bcol;
    brow.resize(static_cast<size_t>(q.K));
    bcol.resize(static_cast<size_t>(NT));
    for (int64_t m = 0; m < nn; ++m)
      build_slab(x + ((n0 + m) * d.C + g * q.Cg) * q.HW, d, q.Cg, oh0, sr, Wp, cs, ws + m * is);
    for (int64_t i = 0; i < d.KH; ++i)
      for (int64_t j = 0; j < d.KW; ++j) {
        const float* base = ws + i * d.dh * Wp + j * d.dw;
        const int64_t tap = i * d.KW + j;
        for (int64_t c = 0; c < q.Cg; ++c) brow[tap * q.Cg + c] = base + c * cs;
      }
    for (int64_t m = 0; m < nn; ++m)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t ow = 0; ow < d.OW; ++ow) bcol[m * T + r * d.OW + ow] = m * is + r * Wp + ow;
    float* ct = ws + nn * is;
    gemm_serial_gather(wt + g * q.Og * q.K, q.K, brow.data(), bcol.data(), ct, NT, q.Og, NT,
                       q.K, 1.0f, 0.0f);
    for (int64_t m = 0; m < nn; ++m) {
      float* yc = y + ((n0 + m) * d.O + g * q.Og) * q.OHW + oh0 * d.OW;
      for (int64_t o = 0; o < q.Og; ++o)
        copy_bias_row(yc + o * q.OHW, ct + o * NT + m * T, T, b ? b[g * q.Og + o] : 0.0f);
    }
  });
}

void fwd_shifted(const float* x, const float* w, const float* b, float* y, const Conv2dDims& d) {
  const Geo q(d);
  float* wt = tl_partial.get(static_cast<size_t>(d.G * q.KK * q.Og * q.Cg));
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t o = 0; o < q.Og; ++o)
      for (int64_t c = 0; c < q.Cg; ++c)
        for (int64_t t = 0; t < q.KK; ++t)
          wt[((g * q.Og + o) * q.KK + t) * q.Cg + c] = w[((g * q.Og + o) * q.Cg + c) * q.KK + t];
  fwd_shifted_wt(x, wt, b, y, d);
}

// Stride-1 input gradient as a forward convolution: gx[c, ih, iw] = sum_{o, i, j} w[o, c, i, j]
// * gy[o, ih + ph - i*dh, iw + pw - j*dw] is the forward of gy (Og input channels per group)
// with the kernel flipped and transposed and padding (KH-1)*dh - ph / (KW-1)*dw - pw, output
// H x W. So it runs on fwd_shifted_wt's implicit GEMM (all taps in registers, no per-tap
// read-modify-write of a slab, no add-back into gx).
Conv2dDims bwd_data_as_fwd_dims(const Conv2dDims& d) {
  Conv2dDims e = d;
  e.C = d.O;
  e.H = d.OH;
  e.W = d.OW;
  e.O = d.C;
  e.OH = d.H;
  e.OW = d.W;
  e.ph = (d.KH - 1) * d.dh - d.ph;
  e.pw = (d.KW - 1) * d.dw - d.pw;
  return e;
}

// True where bwd_data_as_fwd_dims is a valid forward: stride 1, padding within the kernel.
bool flips_to_fwd(const Conv2dDims& d) {
  return d.sh == 1 && d.sw == 1 && d.ph <= (d.KH - 1) * d.dh && d.pw <= (d.KW - 1) * d.dw;
}

// Cg >= 64: the forward's M is Cg; with M = 32 (N=64 32->64 14x14) it lost to the per-tap
// shifted GEMMs (9.0 vs 7.8 ms, best of 3 alternated runs, 1 thread).
bool bwd_data_as_fwd_ok(const Conv2dDims& d) {
  return d.C / d.G >= 64 && flips_to_fwd(d) && use_shifted(bwd_data_as_fwd_dims(d));
}

void bwd_data_as_fwd(const float* gy, const float* w, float* gx, const Conv2dDims& d) {
  const Geo q(d);
  const Conv2dDims e = bwd_data_as_fwd_dims(d);
  // wt[g][c][t][o] = w[g*Og + o][c][KK-1-t]: [G][Og'][KK][Cg'] of the forward with Og' = Cg
  // output and Cg' = Og input channels, taps flipped.
  float* wt = tl_partial.get(static_cast<size_t>(d.G * q.KK * q.Og * q.Cg));
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t o = 0; o < q.Og; ++o)
      for (int64_t c = 0; c < q.Cg; ++c)
        for (int64_t t = 0; t < q.KK; ++t)
          wt[((g * q.Cg + c) * q.KK + t) * q.Og + o] =
              w[((g * q.Og + o) * q.Cg + c) * q.KK + (q.KK - 1 - t)];
  fwd_shifted_wt(gy, wt, nullptr, gx, e);
}

// ---- direct AVX-512 convolution, stride 1 ----------------------------------------------------
// The implicit GEMMs above still pack B (the shifted slab) into panels, and with few output
// channels (M = Og of 16-64) every packed element is used by only one to five micro-kernel
// calls, so packing costs about as much as the FMAs. Here nothing of the input is packed: the
// output is computed over the "wide" pixel index n = r*Wp + ow (ow < Wp, the slab's row
// width), for which tap (i, j) of channel c reads the slab at the constant offset
// koff(c, i, j) = c*cs + i*dh*Wp + j*dw: the 32 wide outputs of a tile read 32 consecutive
// slab floats, two unaligned zmm loads straight from the slab (L1/L2). The register tile is
// 12 output channels x 32 wide pixels (24 zmm accumulators, as the GEMM's micro-kernel) or
// 8 x 48 (direct_use_8x48); the weights are packed once per call as [G][Og/MRB][K][MRB]
// (K = Cg*KH*KW in w's own order, c outer, so consecutive k re-read the same lines). The
// Wp - OW columns of each wide row are computed and dropped when a channel block's wide
// outputs are compacted (+ bias) into y: (KW-1)*dw of Wp, 2/16 of the work at 14x14 and 3x3,
// 2/30 at 28x28.
// R rows (output channels, of a 12- or 8-row packed weight block: MRB floats per k) x NV*16
// wide outputs; R*NV <= 24 accumulators.
template <int R, int NV, int MRB>
EMBER_AVX512 void direct_tile512(int64_t K, const float* A, const float* slab,
                                 const int64_t* koff, float* out, int64_t ldo) {
  static_assert(R <= 12 && NV <= 3 && R * NV <= 24 && R <= MRB);
#define EMBER_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define EMBER_DECL(i) __m512 r##i##a = _mm512_setzero_ps(), r##i##b = r##i##a, r##i##c = r##i##a;
#define EMBER_FMA(i)                                                   \
  if constexpr ((i) < R) {                                             \
    const __m512 av = _mm512_set1_ps(A[i]);                            \
    r##i##a = _mm512_fmadd_ps(av, b0, r##i##a);                        \
    if constexpr (NV > 1) r##i##b = _mm512_fmadd_ps(av, b1, r##i##b);  \
    if constexpr (NV > 2) r##i##c = _mm512_fmadd_ps(av, b2, r##i##c);  \
  }
#define EMBER_OUT(i)                                                          \
  if constexpr ((i) < R) {                                                    \
    _mm512_storeu_ps(out + (i) * ldo, r##i##a);                               \
    if constexpr (NV > 1) _mm512_storeu_ps(out + (i) * ldo + 16, r##i##b);    \
    if constexpr (NV > 2) _mm512_storeu_ps(out + (i) * ldo + 32, r##i##c);    \
  }
  EMBER_ROWS(EMBER_DECL)
  for (int64_t k = 0; k < K; ++k) {
    const float* bk = slab + koff[k];
    const __m512 b0 = _mm512_loadu_ps(bk);
    const __m512 b1 = NV > 1 ? _mm512_loadu_ps(bk + 16) : b0;
    const __m512 b2 = NV > 2 ? _mm512_loadu_ps(bk + 32) : b0;
    EMBER_ROWS(EMBER_FMA)
    A += MRB;
  }
  EMBER_ROWS(EMBER_OUT)
#undef EMBER_OUT
#undef EMBER_FMA
#undef EMBER_DECL
#undef EMBER_ROWS
}

// y[r*OW + ow] = wide[r*Wp + ow] + bias for ow < OW, over the P = rows*Wp wide outputs of
// one channel: each 16-lane vector's valid lanes (masks[v]) are packed together (vcompressps)
// and stored contiguously, so y is written in one sequential stream (copying row by row cost
// a third of the forward at 14x14, rows of 14 floats).
EMBER_AVX512 void compact_row512(const float* wide, int64_t P, const __mmask16* masks,
                                 float bias, float* y) {
  const __m512 bv = _mm512_set1_ps(bias);
  for (int64_t v = 0; v * 16 < P; ++v) {
    const __mmask16 m = masks[v];
    const int cnt = __builtin_popcount(m);
    const __m512 t = _mm512_add_ps(_mm512_loadu_ps(wide + v * 16), bv);
    _mm512_mask_storeu_ps(y, __mmask16((1u << cnt) - 1), _mm512_maskz_compress_ps(m, t));
    y += cnt;
  }
}

// Where it beats the implicit GEMMs (best of 3 alternated runs, 1 thread, forward / input
// gradient): always below 64 input channels per group (N=128 16->16 28x28 14.0 -> 6.3 ms,
// 32->32 14x14 8.1 -> 5.1, 32->64 14x14 12.1 -> 9.7) and on small maps (64->64 7x7 6.4 -> 5.6,
// 128->128 16x16 12.3 -> 11.2); with 64 channels on 32x32 / 56x56 maps the packed GEMM's
// L1-sized B panels win by 5-8% (25.0 vs 26.4, 20.1 vs 21.8 ms), since each 32-pixel tile of
// the direct kernel walks 64 channels x 3 rows of the slab from L2. Stride 2 (phase planes,
// against im2col; min of 5, 1 thread, on a machine whose other core was busy): N=128 16->32
// 28x28 8.8 -> 5.4-5.9 ms, 32->64 14x14 9.1 -> 5.6-6.2 ms.
bool use_direct512(const Conv2dDims& d) {
  return cpu::avx512_selected() && d.KH * d.KW > 1 && (d.C / d.G < 64 || d.OH * d.OW <= 256);
}

// Strides: the padded input is split into sh x sw phase planes, plane (pr, pc) holding the
// input rows r*sh + pr and columns s*sw + pc, so that tap (i, j) of an output (oh, ow) is
// plane ((i*dh) % sh, (j*dw) % sw) at row oh + (i*dh) / sh, column ow + (j*dw) / sw: a
// stride-1 access again, and the same kernel runs with K = Cg*KH*KW (no zero taps). Stride 1
// is the single plane (0, 0), the slab of the stride-1 paths.
struct DirectGeo {
  int64_t Wp, ea, planes;  // slab row width, extra rows beyond the outputs', planes per channel
  explicit DirectGeo(const Conv2dDims& d)
      : Wp(d.OW + (d.KW - 1) * d.dw / d.sw), ea((d.KH - 1) * d.dh / d.sh), planes(d.sh * d.sw) {}
  // Offset of tap (i, j) of channel c, for plane stride cs.
  int64_t koff(const Conv2dDims& d, int64_t c, int64_t i, int64_t j, int64_t cs) const {
    const int64_t plane = (c * d.sh + (i * d.dh) % d.sh) * d.sw + (j * d.dw) % d.sw;
    return plane * cs + (i * d.dh / d.sh) * Wp + j * d.dw / d.sw;
  }
};

// Output rows per slab tile: the slab (Cg*planes x (rows + ea + 1) x Wp) and one block's wide
// outputs (<= 12 x rows x Wp) within kColCap floats.
int64_t direct_rows(const Conv2dDims& d, const DirectGeo& dg) {
  const int64_t Cp = d.C / d.G * dg.planes;
  int64_t R = std::max<int64_t>(1, (kColCap / dg.Wp - Cp * (dg.ea + 1)) / (Cp + 12));
  R = std::min(R, d.OH);
  const int64_t nt = (d.OH + R - 1) / R;
  return (d.OH + nt - 1) / nt;
}

// Phase planes of Cg channels for output rows [oh0, oh0 + sr - ea): plane (c, pr, pc) at
// ws + ((c*sh + pr)*sw + pc)*cs, sr rows of Wp, zeros outside the image and after the rows.
// Positions [lo, hi) of [0, Wp) of phase-plane column pc (input column s*sw + pc - pw) that
// lie inside the image's columns.
inline void plane_cols(const Conv2dDims& d, int64_t pc, int64_t Wp, int64_t* lo, int64_t* hi) {
  valid_range(Wp, d.W, d.sw, d.pw, pc, lo, hi);
  *lo = std::min(*lo, Wp);
  *hi = std::min(*hi, Wp);
}

// Lanes k of a 16-float vector with lo <= k < hi.
inline __mmask16 lane_range(int64_t lo, int64_t hi) {
  auto below = [](int64_t k) { return k >= 16 ? 0xFFFFu : k <= 0 ? 0u : (1u << k) - 1; };
  return __mmask16(below(hi) & ~below(lo));
}

// build_slab for the AVX-512 direct paths: the Cg planes are zeroed whole, then each image row
// that lands in the slab is one masked load and store per 16 columns, instead of build_slab's
// three helper calls per row (zeros, copy, zeros). N=128 64->64 7x7 forward (7-float rows),
// 1 thread on the Zen 4 machine, old and new builds alternated: 4.94 -> 4.61 ms; 32->32 14x14
// and 16->16 28x28 1-2% faster.
EMBER_AVX512 void build_slab512(const float* xg, const Conv2dDims& d, int64_t Cg, int64_t oh0,
                                int64_t sr, int64_t Wp, int64_t cs, float* ws) {
  const __m512 z = _mm512_setzero_ps();
  const int64_t total = Cg * cs;
  int64_t i = 0;
  for (; i + 16 <= total; i += 16) _mm512_storeu_ps(ws + i, z);
  if (i < total) _mm512_mask_storeu_ps(ws + i, lane_range(0, total - i), z);
  // Slab row r is image row oh0 - ph + r; slab column col is image column col - pw.
  const int64_t r0 = std::max<int64_t>(0, d.ph - oh0), r1 = std::min(sr, d.H + d.ph - oh0);
  const int64_t c0 = std::max<int64_t>(0, d.pw), c1 = std::min(Wp, d.W + d.pw);
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t r = r0; r < r1; ++r) {
      const float* src = xg + c * d.H * d.W + (oh0 - d.ph + r) * d.W + (c0 - d.pw);
      float* dst = ws + c * cs + r * Wp + c0;
      for (int64_t j = 0; j < c1 - c0; j += 16) {
        const __mmask16 m = lane_range(0, c1 - c0 - j);
        _mm512_mask_storeu_ps(dst + j, m, _mm512_maskz_loadu_ps(m, src + j));
      }
    }
}

// build_phase_slab for sw == 2: both column planes of an input row come from one pair of
// masked loads (32 floats: even lanes to plane pc = 0, odd lanes to pc = 1), and the lane
// masks, which depend on the column block only, are computed once per column block of a
// channel's row phase, not per row. Per row and plane (the loop of build_phase_slab) the
// masks and the second load made the slab half of a strided small-map forward (N=128
// 32->64 14x14).
EMBER_AVX512 void build_phase_slab_s2(const float* xg, const Conv2dDims& d, int64_t Cg,
                                      int64_t oh0, int64_t sr, int64_t Wp, int64_t cs,
                                      float* ws, bool zero_tail) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                         30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512 z = _mm512_setzero_ps();
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t pr = 0; pr < d.sh; ++pr) {
      float* P0 = ws + (c * d.sh + pr) * 2 * cs;  // plane (pr, 0); (pr, 1) follows at + cs
      for (int64_t s0 = 0; s0 < Wp; s0 += 16) {
        const int64_t base = 2 * s0 - d.pw;  // input column of lane 0 of the 32-float window
        const __mmask16 ma = lane_range(-base, d.W - base);
        const __mmask16 mb = lane_range(-base - 16, d.W - base - 16);
        const __mmask16 ms = lane_range(0, Wp - s0);
        for (int64_t r = 0; r < sr; ++r) {
          float* dst = P0 + r * Wp + s0;
          const int64_t ir = (oh0 + r) * d.sh + pr - d.ph;
          __m512 va = z, vb = z;
          if (ir >= 0 && ir < d.H) {
            // Lanes outside [0, W) are masked off: the pointers are formed for the masked
            // loads alone, nothing before or after the row is read.
            const float* row = xg + (c * d.H + ir) * d.W;
            if (ma) va = _mm512_maskz_loadu_ps(ma, row + base);
            if (mb) vb = _mm512_maskz_loadu_ps(mb, row + base + 16);
          }
          _mm512_mask_storeu_ps(dst, ms, _mm512_permutex2var_ps(va, even, vb));
          _mm512_mask_storeu_ps(dst + cs, ms, _mm512_permutex2var_ps(va, odd, vb));
        }
      }
      if (zero_tail) {
        zero_floats(P0 + sr * Wp, cs - sr * Wp);
        zero_floats(P0 + cs + sr * Wp, cs - sr * Wp);
      }
    }
}

EMBER_AVX512 void build_phase_slab(const float* xg, const Conv2dDims& d, int64_t Cg,
                                   int64_t oh0, int64_t sr, int64_t Wp, int64_t cs, float* ws,
                                   bool zero_tail = true) {
  if (d.sw == 2) {
    build_phase_slab_s2(xg, d, Cg, oh0, sr, Wp, cs, ws, zero_tail);
    return;
  }
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t pr = 0; pr < d.sh; ++pr)
      for (int64_t pc = 0; pc < d.sw; ++pc) {
        float* P = ws + ((c * d.sh + pr) * d.sw + pc) * cs;
        const int64_t c0 = pc - d.pw;  // input column of s = 0
        int64_t s_lo, s_hi;
        plane_cols(d, pc, Wp, &s_lo, &s_hi);
        for (int64_t r = 0; r < sr; ++r) {
          float* dst = P + r * Wp;
          const int64_t ir = (oh0 + r) * d.sh + pr - d.ph;
          if (ir < 0 || ir >= d.H) {
            zero_floats(dst, Wp);
            continue;
          }
          const float* row = xg + (c * d.H + ir) * d.W;
          zero_floats(dst, s_lo);
          for (int64_t s = s_lo; s < s_hi; ++s) dst[s] = row[s * d.sw + c0];
          zero_floats(dst + s_hi, Wp - s_hi);
        }
        if (zero_tail) zero_floats(P + sr * Wp, cs - sr * Wp);
      }
}

thread_local std::vector<int64_t> tl_koff;

// koff[k] for k = (c*KH + i)*KW + j, w's own order: the slab offset of tap (i, j) of channel
// c, for plane stride cs (in this thread's tl_koff).
const std::vector<int64_t>& direct_koffs(const Conv2dDims& d, const DirectGeo& dg, int64_t cs) {
  const int64_t Cg = d.C / d.G, KK = d.KH * d.KW;
  std::vector<int64_t>& koff = tl_koff;
  koff.resize(static_cast<size_t>(Cg * KK));
  // Channel c adds c*planes*cs to channel 0's offsets: DirectGeo::koff's four 64-bit divisions
  // once per tap, not per entry (per entry, for every task, they cost 8-15% of a small-map
  // forward: N=128 32->32 14x14 6.2 -> 5.3 ms, 64->64 7x7 5.3 -> 4.9 ms).
  for (int64_t i = 0; i < d.KH; ++i)
    for (int64_t j = 0; j < d.KW; ++j) koff[size_t(i * d.KW + j)] = dg.koff(d, 0, i, j, cs);
  for (int64_t c = 1; c < Cg; ++c)
    for (int64_t t = 0; t < KK; ++t)
      koff[size_t(c * KK + t)] = koff[size_t(t)] + c * dg.planes * cs;
  return koff;
}
thread_local std::vector<__mmask16> tl_masks;

// Register-tile shape: 12 channels x 32 wide outputs, or 8 x 48. The 8 x 48 tile leaves no
// 4-row edge block where Og is a multiple of 8 but not of 12 (16, 32, 64, ...) but rounds the
// wide outputs up to 48: pick the one with fewer computed (rounded) outputs, counting a 4-row
// edge block at 1.5x (its 8 or 12 accumulators keep fewer FMAs in flight).
bool direct_use_8x48(int64_t Og, int64_t P) {
  auto cost = [&](int64_t mrb, int64_t w) {
    double rows = 0;
    for (int64_t o = 0; o < Og; o += mrb) {
      const int64_t r = std::min(mrb, Og - o);
      rows += r <= 4 ? 6.0 : r <= 8 ? 8.0 : 12.0;
    }
    return rows * double((P + w - 1) / w * w);
  };
  return cost(8, 48) < cost(12, 32);
}

template <int MRB, int NV>
void fwd_direct512_with(const float* x, const float* w, const float* b, float* y,
                        const Conv2dDims& d, const float* A, int64_t R) {
  constexpr int64_t TW = 16 * NV;  // wide outputs per tile
  const Geo q(d);
  const int64_t nob = (q.Og + MRB - 1) / MRB;
  const DirectGeo dg(d);
  const int64_t Wp = dg.Wp, nt = (d.OH + R - 1) / R;
  cpu::ClaimPool::instance().run(nthreads_for(conv_flops(d)), d.N * d.G * nt, [&](int64_t p) {
    const int64_t n = p / (d.G * nt), g = (p / nt) % d.G, t = p % nt;
    const int64_t oh0 = t * R, rows = std::min(R, d.OH - oh0), sr = rows + dg.ea;
    const int64_t P = rows * Wp, Pp = (P + TW - 1) / TW * TW;  // wide outputs, whole tiles
    // Per plane: sr rows, then zeros for the last tile's reads past the end (up to TW - 1
    // + (KW-1)*dw/sw floats beyond the last row).
    const int64_t cs = (sr * Wp + Wp - d.OW + TW + 15) / 16 * 16;
    const int64_t nplanes = q.Cg * dg.planes;
    float* ws = tl_col.get(static_cast<size_t>(nplanes * cs + MRB * Pp));
    float* out = ws + nplanes * cs;  // one block's wide outputs, [MRB][Pp]
    const float* xg = x + (n * d.C + g * q.Cg) * q.HW;
    if (dg.planes == 1)
      build_slab512(xg, d, q.Cg, oh0, sr, Wp, cs, ws);
    else
      build_phase_slab(xg, d, q.Cg, oh0, sr, Wp, cs, ws);
    const std::vector<int64_t>& koff = direct_koffs(d, dg, cs);
    // Valid lanes (ow < OW, n < P) of each 16-wide vector of the wide outputs.
    std::vector<__mmask16>& masks = tl_masks;
    masks.resize(static_cast<size_t>((P + 15) / 16));
    for (int64_t v = 0, nn = 0, col = 0; v < int64_t(masks.size()); ++v) {
      unsigned m = 0;
      for (int64_t l = 0; l < 16; ++l, ++nn) {  // col = nn % Wp, stepped (no division)
        if (nn < P && col < d.OW) m |= 1u << l;
        if (++col == Wp) col = 0;
      }
      masks[size_t(v)] = __mmask16(m);
    }
    float* yc = y + (n * d.O + g * q.Og) * q.OHW + oh0 * d.OW;
    // Channel block outer: its packed weights (K x MRB floats) stay in L1 while the tiles
    // sweep the slab (tiles outer, re-reading the weights per tile, was 10-30% slower).
    for (int64_t ob = 0; ob < nob; ++ob) {
      const float* Ab = A + (g * nob + ob) * q.K * MRB;
      const int64_t mr = std::min<int64_t>(MRB, q.Og - ob * MRB);
      for (int64_t n0 = 0; n0 < P; n0 += TW) {
        const float* sl = ws + n0;
        if (mr <= 4)
          direct_tile512<4, NV, MRB>(q.K, Ab, sl, koff.data(), out + n0, Pp);
        else if (MRB == 12 && mr <= 8)
          direct_tile512<8, NV, MRB>(q.K, Ab, sl, koff.data(), out + n0, Pp);
        else
          direct_tile512<MRB, NV, MRB>(q.K, Ab, sl, koff.data(), out + n0, Pp);
      }
      for (int64_t r = 0; r < mr; ++r) {
        const int64_t o = ob * MRB + r;
        compact_row512(out + r * Pp, P, masks.data(), b ? b[g * q.Og + o] : 0.0f,
                       yc + o * q.OHW);
      }
    }
  });
}

// Transposes the 16 x 16 block r[0..15] in place (r[i] lane j -> r[j] lane i).
EMBER_AVX512 inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), e = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}

// ---- direct forward vectorised over output channels (small maps) ------------------------
// The wide-pixel kernel above computes OH x Wp outputs per channel and rounds them up to its
// 32- or 48-wide tiles: at 7x7 with a 3x3 kernel 64 of every 49 useful (68% with the 12-row
// channel edge of Og = 64). Here a register tile is R output pixels x NV*16 output channels:
// per k (channel c, tap (i, j)) NV weight vectors (packed [G][K][Ogp], Ogp = Og rounded up to
// 16) and R broadcasts of the slab at pixel r's own offset + koff[k]. A pixel is any entry of
// a list of slab offsets, so the tiles run over the real output pixels of several images
// back to back: nothing computed is dropped. The results land pixel-major in a small buffer
// ([pixels][Ogp]) that is transposed (+ bias) into y.
template <int R, int NV>
EMBER_AVX512 void chanvec_tile512(int64_t K, const float* W, const int64_t* wrow,
                                  const float* slab, const int64_t* pix, const int64_t* koff,
                                  float* out, const int64_t* orow, int64_t ldo) {
  static_assert(R >= 1 && NV >= 1 && R * NV <= 24);
  __m512 acc[R][NV];
  const float* s[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    s[r] = slab + pix[r];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < K; ++k) {
    const int64_t o = koff[k];
    const float* wk = W + wrow[k];
    __m512 wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = _mm512_load_ps(wk + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 xb = _mm512_set1_ps(s[r][o]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(wv[v], xb, acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + orow[r] * ldo + 16 * v, acc[r][v]);
}

// A tile of r pixels (1..8, r * NV <= 24) x NV vectors, with both known at compile time.
template <int NV, int R = 8>
void chanvec_tile_r(int r, int64_t K, const float* W, const int64_t* wrow, const float* slab,
                    const int64_t* pix, const int64_t* koff, float* out, const int64_t* orow,
                    int64_t ldo) {
  if constexpr (R >= 1) {
    if constexpr (R * NV <= 24) {
      if (r == R) {
        chanvec_tile512<R, NV>(K, W, wrow, slab, pix, koff, out, orow, ldo);
        return;
      }
    }
    chanvec_tile_r<NV, R - 1>(r, K, W, wrow, slab, pix, koff, out, orow, ldo);
  }
}

// Where it beats the wide-pixel kernel (1 thread, best of 2x5 alternated runs, forward /
// input gradient ms): 64->64 7x7 N=128 7.1 -> 4.9 / 7.3 -> 4.9, 128->128 7x7 N=32
// 6.4 -> 4.7 / 6.5 -> 5.0, 128->128 16x16 N=32 26.2 -> 23.6 / 26.5 -> 23.8, 16->32 8x8 N=128
// 1.7 -> 1.1 / 2.2 -> 1.6; strided 32->64 14x14 s2 N=128 6.2 -> 4.4, 16->32 28x28 s2 5.7 ->
// 4.9, 64->128 14x14 s2 16.8 -> 13.4; 32->64 14x14 N=128 10.3 -> 9.9. Not with fewer than 32
// output channels (a tile of 16 channels does one FMA per broadcast: 16->16 28x28 7.4 ->
// 8.1), nor on large maps, where the wide kernel's waste is small (3->64 32x32 2.5 -> 3.2).
// 32 output channels on 101-256-pixel maps at stride 1 split the machines: on the Xeon the
// two kernels tied on 32->32 14x14 and the wide one won the 32->64 14x14 input gradient (32
// outputs of 64 channels, 11.6 vs 12.1 ms); on the Zen 4 EPYC (2026-12-07, alternated runs)
// channel vectors won N=128 32->32 14x14 5.3 -> 4.9 ms (fwd+bwd 15.9 -> 15.2), 64->32 14x14
// 10.5 -> 9.5 ms and N=64 32->32 16x16 3.26 -> 3.0 ms, so they take those maps too.
bool use_chanvec512(const Conv2dDims& d) {
  const int64_t Og = d.O / d.G, OHW = d.OH * d.OW;
  return Og >= 32 && OHW <= 256;
}

// The AVX2 twin (fwd_chanvec<false>), on CPUs without AVX-512: see chanvec_tile256. There the
// alternatives are Winograd and the GEMM paths (no wide-pixel direct kernel), so it also takes
// larger maps and from 16 output channels on, while its [K][Ogp] weights (streamed once per
// 6-pixel tile) fit in half a 1 MiB L2. 1 thread, Zen 4 with AVX-512 off, builds alternated,
// ms, forward: N=64 1->32 28x28 1.25 -> 1.03, N=128 1->16 28x28 1.46 -> 0.80, N=32 3->64 32x32
// 1.81 -> 1.63, N=8 3->64 224x224 7x7 stride 2 24.0 -> 21.9, N=32 16->32 28x28 5x5 14.0 ->
// 8.0, N=8 64->64 56x56 5x5 54.1 -> 50.8, N=128 16->16 7x7 (Winograd before) 1.24 -> 0.36;
// input gradient N=16 32->32 28x28 5x5 9.8 -> 5.9. Beyond the weight limit it lost: N=4
// 128->128 28x28 5x5 (1.6 MB of weights) 27.0 vs 34.6; with 8 output channels it ran even or
// lost (input gradient of N=16 8->16 56x56, 2.00 vs 2.28). A task holds one image's padded
// input and its [pixels][Ogp] results at least, so the map is bounded too: both within
// 4 * kColCap floats (N=8 3->64 224x224 7x7 stride 2: 0.96M), larger maps stay on the tiles of
// the GEMM paths.
bool use_chanvec_avx2(const Conv2dDims& d) {
  const int64_t K = d.C / d.G * d.KH * d.KW, Ogp = (d.O / d.G + 7) / 8 * 8;
  const int64_t slab = d.C / d.G * ((d.OH - 1) * d.sh + (d.KH - 1) * d.dh + 1) *
                       ((d.OW - 1) * d.sw + (d.KW - 1) * d.dw + 1);
  return cpu::avx2_selected() && !cpu::avx512_selected() && d.KH * d.KW > 1 &&
         (use_chanvec512(d) || (d.O / d.G >= 16 && K * Ogp <= (int64_t(1) << 17) &&
                                slab + d.OH * d.OW * Ogp <= 4 * kColCap));
}

thread_local std::vector<int64_t> tl_pix, tl_orow;

// out[orow[p]][0, Ogp) = sum_k W[wrow[k] + (0, Ogp)] * slab[pix[p] + koff[k]] for the P
// pixels of pix (weight rows of Ogp floats at the offsets wrow, out rows of Ogp floats): the
// tile loop of the channel-vectorised kernel. wrow lets a pixel group take a subset of the
// rows (tap groups in fwd_chanvec), orow put its results in the image's raster order.
void chanvec_run(int64_t K, const float* W, const int64_t* wrow, int64_t Ogp, const float* slab,
                 const int64_t* pix, int64_t P, const int64_t* koff, float* out,
                 const int64_t* orow) {
  // Channel block outer (its K x 64 weights, 147 KB at K = 576, stream from L2 in k order);
  // the slab (Cg x sr x Wp per image) stays in L1/L2 across the pixel tiles.
  for (int64_t o0 = 0; o0 < Ogp; o0 += 64) {
    const int nv = static_cast<int>(std::min<int64_t>(4, (Ogp - o0) / 16));
    // Pixels per tile: 6 x 4 vectors or 8 x 3 / 8 x 2 / 8 x 1 (8 pixels beat 12 with one or
    // two vectors, 6.0 vs 6.7 ms on 32->32 14x14: 12 broadcasts per k outrun the loads).
    const int64_t R = std::min(8, 24 / nv);
    for (int64_t t = 0; t < P; t += R) {
      const int r = static_cast<int>(std::min(R, P - t));
      const int64_t* rows = orow + t;
      float* ot = out + o0;
      const int64_t* pt = pix + t;
      if (nv == 4)
        chanvec_tile_r<4>(r, K, W + o0, wrow, slab, pt, koff, ot, rows, Ogp);
      else if (nv == 3)
        chanvec_tile_r<3>(r, K, W + o0, wrow, slab, pt, koff, ot, rows, Ogp);
      else if (nv == 2)
        chanvec_tile_r<2>(r, K, W + o0, wrow, slab, pt, koff, ot, rows, Ogp);
      else
        chanvec_tile_r<1>(r, K, W + o0, wrow, slab, pt, koff, ot, rows, Ogp);
    }
  }
}

// dst[o*ldd + p] = src[p*lds + o] + bias[o] (bias null: 0) for p < P, o < Og, by 16 x 16
// blocks transposed in registers (src rows must hold Og rounded up to 16 floats). The scalar
// loop it replaced, which read src at a stride of lds floats per element, took 8% of the
// channel-vector forward; 1 thread, Zen 4, builds interleaved in one process, best of 8:
// N=16 64->128 32x32 stride 2 6.14 -> 5.89 ms, N=128 16->32 28x28 s2 2.85 -> 2.62 ms,
// N=128 32->64 14x14 s2 2.39 -> 2.32 ms.
EMBER_AVX512 void transpose_bias512(const float* src, int64_t lds, int64_t P, int64_t Og,
                                    const float* bias, float* dst, int64_t ldd) {
  const __m512 z = _mm512_setzero_ps();
  for (int64_t o0 = 0; o0 < Og; o0 += 16) {
    const int64_t no = std::min<int64_t>(16, Og - o0);
    for (int64_t p0 = 0; p0 < P; p0 += 16) {
      const int64_t np = std::min<int64_t>(16, P - p0);
      __m512 v[16];
      for (int64_t i = 0; i < 16; ++i)
        v[i] = i < np ? _mm512_loadu_ps(src + (p0 + i) * lds + o0) : z;
      transpose16x16(v);
      const __mmask16 m = lane_range(0, np);
      for (int64_t j = 0; j < no; ++j) {
        const __m512 bj = _mm512_set1_ps(bias ? bias[o0 + j] : 0.0f);
        _mm512_mask_storeu_ps(dst + (o0 + j) * ldd + p0, m, _mm512_add_ps(v[j], bj));
      }
    }
  }
}

// Output pixels grouped by the taps that read inside the image (input row oh*sh - ph + i*dh in
// [0, H), likewise the column): each group's k loop leaves out the taps that would only read
// the zero padding. With a 3x3 kernel and padding 1 that is 18% of the (pixel, tap) pairs of a
// 7x7 map and 9% of a 14x14 one. Groups are keyed by the valid-row and valid-column tap masks.
// oneDNN's brgemm convolution skips them too, which is how it ran the 7x7 layer above our
// measured FMA peak. 1 thread, Zen 4, old and new builds alternated (3 rounds): N=128 64->64
// 7x7 forward 4.86 -> 4.31 ms (fwd+bwd 14.4 -> 13.3, the input gradient runs here too),
// 32->32 14x14 5.35 -> 5.17 ms, N=32 128->128 16x16 23.1 -> 22.2 ms.
// The channel-vector forward's slab of one image: its zero-padded input planes, rows Hs =
// (OH-1)*sh + (KH-1)*dh + 1 of Ws = (OW-1)*sw + (KW-1)*dw + 1 floats (build_slab512), plane
// stride cs. Output pixel (oh, ow) reads it at oh*sh*Ws + ow*sw plus tap (i, j) of channel c at
// c*cs + i*dh*Ws + j*dw: the kernel broadcasts one float per pixel and tap, so strides need no
// phase planes (DirectGeo), whose de-interleaving build cost more than this plain copy (1
// thread, Zen 4, interleaved, best of 8, two runs: N=16 64->128 32x32 stride 2 5.98 / 5.89 ->
// 5.73 / 5.67 ms, N=128 16->32 28x28 s2 3.06 / 3.00 -> 2.96 / 2.90 ms). Stride 1: the same
// slab as DirectGeo's single plane.
struct ChanGeo {
  int64_t Hs, Ws, cs;
  explicit ChanGeo(const Conv2dDims& d)
      : Hs((d.OH - 1) * d.sh + (d.KH - 1) * d.dh + 1),
        Ws((d.OW - 1) * d.sw + (d.KW - 1) * d.dw + 1),
        cs((Hs * Ws + 15) / 16 * 16) {}
  int64_t pixel(const Conv2dDims& d, int64_t oh, int64_t ow) const {
    return oh * d.sh * Ws + ow * d.sw;
  }
  // koff[c*KK + i*KW + j], w's own order.
  std::vector<int64_t> koffs(const Conv2dDims& d) const {
    const int64_t KK = d.KH * d.KW;
    std::vector<int64_t> k(static_cast<size_t>(d.C / d.G * KK));
    for (size_t e = 0; e < k.size(); ++e) {
      const int64_t c = int64_t(e) / KK, t = int64_t(e) % KK;
      k[e] = c * cs + (t / d.KW) * d.dh * Ws + (t % d.KW) * d.dw;
    }
    return k;
  }
};

struct TapGroup {
  std::vector<int64_t> koff, wrow;  // per k: slab offset, weight row offset (floats)
  std::vector<int64_t> rel, pos;    // per pixel: slab offset in its image, oh*OW + ow
};

std::vector<TapGroup> tap_groups(const Conv2dDims& d, const ChanGeo& sg, int64_t Ogp,
                                 int64_t images) {
  const int64_t Cg = d.C / d.G, KK = d.KH * d.KW;
  const bool masks = d.KH <= 32 && d.KW <= 32;  // else one group, all taps
  auto valid = [](int64_t o, int64_t s, int64_t p, int64_t dl, int64_t K, int64_t n) {
    uint32_t m = 0;
    for (int64_t i = 0; i < K; ++i) {
      const int64_t at = o * s - p + i * dl;
      if (at >= 0 && at < n) m |= uint32_t{1} << i;
    }
    return m;
  };
  const uint64_t all = ~uint64_t{0};  // the key of "every tap"
  // Pixels by key (valid-row mask << 32 | valid-column mask).
  std::vector<uint64_t> keys;
  std::vector<TapGroup> groups;
  for (int64_t oh = 0; oh < d.OH; ++oh) {
    const uint32_t rm = masks ? valid(oh, d.sh, d.ph, d.dh, d.KH, d.H) : ~uint32_t{0};
    for (int64_t ow = 0; ow < d.OW; ++ow) {
      const uint32_t cm = masks ? valid(ow, d.sw, d.pw, d.dw, d.KW, d.W) : ~uint32_t{0};
      const bool full = !masks || (rm == (uint64_t{1} << d.KH) - 1 &&
                                   cm == (uint64_t{1} << d.KW) - 1);
      const uint64_t key = full ? all : uint64_t{rm} << 32 | cm;
      const size_t gi = std::find(keys.begin(), keys.end(), key) - keys.begin();
      if (gi == keys.size()) {
        keys.push_back(key);
        groups.emplace_back();
      }
      groups[gi].rel.push_back(sg.pixel(d, oh, ow));
      groups[gi].pos.push_back(oh * d.OW + ow);
    }
  }
  // A group with fewer than kMinGroup pixels per task (the corners) would run as tiles of a
  // few pixels, whose few accumulators cannot hide the FMA latency: its pixels join the group
  // with every tap (created if no pixel has all taps), where the padding taps read zeros.
  // Without this, N=128 32->32 14x14 (one image per task: 1-pixel corner groups) gained
  // nothing (5.18 -> 5.13 ms). The tap lists are built for the kept groups only.
  constexpr int64_t kMinGroup = 8;
  const std::vector<int64_t> base = sg.koffs(d);  // [Cg][KK]
  std::vector<TapGroup> kept;
  TapGroup rest;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    TapGroup& gr = groups[gi];
    if (keys[gi] != all && int64_t(gr.rel.size()) * images >= kMinGroup) {
      const uint32_t rm = uint32_t(keys[gi] >> 32), cm = uint32_t(keys[gi]);
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t i = 0; i < d.KH; ++i)
          for (int64_t j = 0; j < d.KW; ++j) {
            if (!((rm >> i & 1) && (cm >> j & 1))) continue;
            const int64_t k = c * KK + i * d.KW + j;
            gr.koff.push_back(base[size_t(k)]);
            gr.wrow.push_back(k * Ogp);
          }
      kept.push_back(std::move(gr));
      continue;
    }
    rest.rel.insert(rest.rel.end(), gr.rel.begin(), gr.rel.end());
    rest.pos.insert(rest.pos.end(), gr.pos.begin(), gr.pos.end());
  }
  if (!rest.rel.empty()) {
    for (int64_t k = 0; k < Cg * KK; ++k) {
      rest.koff.push_back(base[size_t(k)]);
      rest.wrow.push_back(k * Ogp);
    }
    kept.push_back(std::move(rest));
  }
  return kept;
}

// ---- the channel-vector forward on AVX2 (CPUs without AVX-512) ----------------------------
// The same tiles on 8-lane vectors: R pixels x NV vectors of 8 output channels, R*NV <= 12
// accumulators (of 16 ymm registers), per k NV weight loads and R broadcasts. add: the tile
// is one block of k (chanvec_run256), out already holds the sum over the blocks before it.
template <int R, int NV>
EMBER_AVX2 void chanvec_tile256(int64_t K, const float* W, const int64_t* wrow,
                                const float* slab, const int64_t* pix, const int64_t* koff,
                                float* out, const int64_t* orow, int64_t ldo, bool add) {
  static_assert(R >= 1 && NV >= 1 && R * NV <= 12);
  __m256 acc[R][NV];
  const float* s[R];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    s[r] = slab + pix[r];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < K; ++k) {
    const int64_t o = koff[k];
    const float* wk = W + wrow[k];
    __m256 wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = _mm256_loadu_ps(wk + 8 * v);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m256 xb = _mm256_broadcast_ss(s[r] + o);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(wv[v], xb, acc[r][v]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* dst = out + orow[r] * ldo + 8 * v;
      _mm256_storeu_ps(dst, add ? _mm256_add_ps(_mm256_loadu_ps(dst), acc[r][v]) : acc[r][v]);
    }
}

template <int NV, int R = 12>
void chanvec_tile256_r(int r, int64_t K, const float* W, const int64_t* wrow, const float* slab,
                       const int64_t* pix, const int64_t* koff, float* out, const int64_t* orow,
                       int64_t ldo, bool add) {
  if constexpr (R >= 1) {
    if constexpr (R * NV <= 12) {
      if (r == R) {
        chanvec_tile256<R, NV>(K, W, wrow, slab, pix, koff, out, orow, ldo, add);
        return;
      }
    }
    chanvec_tile256_r<NV, R - 1>(r, K, W, wrow, slab, pix, koff, out, orow, ldo, add);
  }
}

// chanvec_run on the AVX2 tiles (Ogp a multiple of 8, orow required): blocks of 16 output
// channels as 6 pixels x 2 vectors (a last block of 8 as 12 x 1), per k 2 weight loads and 6
// broadcasts for 12 FMAs. Blocks of 32 channels as 3 pixels x 4 vectors (the AVX-512 kernel's
// shape, scaled down) ran up to 2x slower, with or without the k blocks below; 4 x 3 was even
// with 6 x 2; 12 x 1 throughout was in between. 1 thread, Zen 4 with AVX-512 off, ms, 3 x 4 /
// 6 x 2 / 12 x 1 (the im2col paths it replaces): N=16 64->128 32x32 s2 12.3 / 6.9 / 10.6
// (7.1), N=128 16->32 28x28 s2 5.1 / 3.0 / 4.5 (5.2), 32->64 14x14 s2 4.6 / 2.4 / 3.7 (5.2),
// N=32 32->64 14x14 5x5 11.7 / 5.8 / 8.5 (7.6), N=128 8->32 14x14 2.2 / 1.2 / 1.8 (2.3),
// N=64 3->32 16x16 0.55 / 0.37 / 0.52 (0.55).
// k in blocks of kChanvecKBytes of weights per channel block (192 k at 16 channels), each
// block over all the pixel tiles before the next: the block's weights stay in L1 across the
// tiles instead of streaming from L2 once per tile (K = 576: 36 KB, over the 32 KB L1), at
// the cost of one load-add-store of the tile's sums per extra block. Builds alternated, 1
// thread, AVX-512 off, ms: N=16 64->128 32x32 s2 6.94 -> 6.31 (8 / 16 / 24 KB: 6.36 / 6.44
// / 6.56), N=16 128->256 16x16 s2 7.49 -> 6.60, N=32 64->128 14x14 s2 2.48 -> 2.32; shapes
// with K <= 192 are unchanged (one block) and N=32 32->64 14x14 5x5 (K = 800) ran even. The
// AVX-512 tiles (chanvec_run, 6 x 4 at 256 bytes per k) did not gain from 12-48 KB blocks.
constexpr int64_t kChanvecKBytes = 12 * 1024;

void chanvec_run256(int64_t K, const float* W, const int64_t* wrow, int64_t Ogp,
                    const float* slab, const int64_t* pix, int64_t P, const int64_t* koff,
                    float* out, const int64_t* orow) {
  for (int64_t o0 = 0; o0 < Ogp; o0 += 16) {
    const bool two = Ogp - o0 >= 16;
    const int64_t R = two ? 6 : 12;
    const int64_t KB = kChanvecKBytes / (two ? 64 : 32);  // weight bytes per k: 32 per vector
    const float* wo = W + o0;
    // k0 = 0 runs even when K = 0 (pixels whose taps all fall in the padding): it stores 0.
    for (int64_t k0 = 0; k0 == 0 || k0 < K; k0 += KB) {
      const int64_t kc = std::min(KB, K - k0);
      const int64_t *wr = wrow + k0, *ko = koff + k0;
      const bool add = k0 > 0;
      for (int64_t t = 0; t < P; t += R) {
        const int r = static_cast<int>(std::min(R, P - t));
        if (two)
          chanvec_tile256_r<2>(r, kc, wo, wr, slab, pix + t, ko, out + o0, orow + t, Ogp, add);
        else
          chanvec_tile256_r<1>(r, kc, wo, wr, slab, pix + t, ko, out + o0, orow + t, Ogp, add);
      }
    }
  }
}

// v[i][j] <-> v[j][i]: 2x2 blocks (32-bit unpacks), 4x4 (64-bit), then the 128-bit halves.
EMBER_AVX2 inline void transpose8x8(__m256 v[8]) {
  __m256 t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    const __m256d a = _mm256_castps_pd(t[4 * i]), b = _mm256_castps_pd(t[4 * i + 1]);
    const __m256d c = _mm256_castps_pd(t[4 * i + 2]), e = _mm256_castps_pd(t[4 * i + 3]);
    t[4 * i + 0] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, c));
    t[4 * i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, c));
    t[4 * i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(b, e));
    t[4 * i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(b, e));
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_permute2f128_ps(t[i], t[i + 4], 0x20);
    v[i + 4] = _mm256_permute2f128_ps(t[i], t[i + 4], 0x31);
  }
}

// transpose_bias512 on 8 x 8 blocks (src rows hold Og rounded up to 8 floats). Full blocks
// take a branch-free path: the generic one's per-row partial stores (store_first) took a
// quarter of the N=32 3->64 32x32 forward, whose [1024][64] result per image is all full
// blocks.
EMBER_AVX2 void transpose_bias256(const float* src, int64_t lds, int64_t P, int64_t Og,
                                  const float* bias, float* dst, int64_t ldd) {
  const __m256 z = _mm256_setzero_ps();
  for (int64_t o0 = 0; o0 < Og; o0 += 8) {
    const int64_t no = std::min<int64_t>(8, Og - o0);
    __m256 bv[8];
    for (int64_t j = 0; j < 8; ++j)
      bv[j] = bias && j < no ? _mm256_set1_ps(bias[o0 + j]) : z;
    float* d = dst + o0 * ldd;
    int64_t p0 = 0;
    if (no == 8) {
      for (; p0 + 8 <= P; p0 += 8) {
        __m256 v[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(src + (p0 + i) * lds + o0);
        transpose8x8(v);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) _mm256_storeu_ps(d + j * ldd + p0, _mm256_add_ps(v[j], bv[j]));
      }
    }
    for (; p0 < P; p0 += 8) {
      const int64_t np = std::min<int64_t>(8, P - p0);
      __m256 v[8];
      for (int64_t i = 0; i < 8; ++i)
        v[i] = i < np ? _mm256_loadu_ps(src + (p0 + i) * lds + o0) : z;
      transpose8x8(v);
      for (int64_t j = 0; j < no; ++j)
        cpu::store_first(d + j * ldd + p0, _mm256_add_ps(v[j], bv[j]), np);
    }
  }
}

// w in its own layout [G*Og][Cg][KH][KW]; y = conv(x, w) + b (use_direct512 geometry, or
// use_chanvec_avx2: W512 false runs the AVX2 twins of the tiles, slab build and transpose).
template <bool W512>
void fwd_chanvec(const float* x, const float* w, const float* b, float* y, const Conv2dDims& d) {
  constexpr int64_t L = W512 ? 16 : 8;  // lanes
  const Geo q(d);
  const ChanGeo sg(d);
  const int64_t Ogp = (q.Og + L - 1) / L * L, OHW = q.OHW;
  // Weights as [G][K][Ogp], zero-padded channels.
  float* Wp = tl_partial.get(static_cast<size_t>(d.G * q.K * Ogp));
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t k = 0; k < q.K; ++k)
      for (int64_t o = 0; o < Ogp; ++o)
        Wp[(g * q.K + k) * Ogp + o] = o < q.Og ? w[(g * q.Og + o) * q.K + k] : 0.0f;
  // Images per task: about 192 output pixels, so the pixel edge tile is a small share.
  const int64_t IB = std::clamp<int64_t>(192 / std::max<int64_t>(OHW, 1), 1, d.N);
  const int64_t nib = (d.N + IB - 1) / IB;
  const int64_t frame = q.Cg * sg.cs;
  const std::vector<TapGroup> groups = tap_groups(d, sg, Ogp, IB);
  cpu::ClaimPool::instance().run(nthreads_for(conv_flops(d)), nib * d.G, [&](int64_t p) {
    const int64_t n0 = (p / d.G) * IB, g = p % d.G, ni = std::min(IB, d.N - n0);
    const int64_t P = ni * OHW;
    float* ws = tl_col.get(static_cast<size_t>(ni * frame + P * Ogp));
    float* out = ws + ni * frame;  // [ni][OHW][Ogp], each image's pixels in raster order
    for (int64_t m = 0; m < ni; ++m) {
      const float* xg = x + ((n0 + m) * d.C + g * q.Cg) * q.HW;
      if constexpr (W512)
        build_slab512(xg, d, q.Cg, 0, sg.Hs, sg.Ws, sg.cs, ws + m * frame);
      else
        build_slab(xg, d, q.Cg, 0, sg.Hs, sg.Ws, sg.cs, ws + m * frame);
    }
    std::vector<int64_t>& pix = tl_pix;
    std::vector<int64_t>& orow = tl_orow;
    pix.resize(static_cast<size_t>(P));
    orow.resize(static_cast<size_t>(P));
    int64_t row = 0;  // first pixel of the group in pix
    for (const TapGroup& gr : groups) {
      const int64_t np = int64_t(gr.rel.size());
      for (int64_t m = 0; m < ni; ++m)
        for (int64_t t = 0; t < np; ++t) {
          pix[size_t(row + m * np + t)] = m * frame + gr.rel[t];
          orow[size_t(row + m * np + t)] = m * OHW + gr.pos[t];
        }
      const int64_t K = int64_t(gr.koff.size());
      if constexpr (W512)
        chanvec_run(K, Wp + g * q.K * Ogp, gr.wrow.data(), Ogp, ws, pix.data() + row, ni * np,
                    gr.koff.data(), out, orow.data() + row);
      else
        chanvec_run256(K, Wp + g * q.K * Ogp, gr.wrow.data(), Ogp, ws, pix.data() + row, ni * np,
                       gr.koff.data(), out, orow.data() + row);
      row += ni * np;
    }
    // out [ni][OHW][Ogp], in raster order -> y[n][g*Og + o] (+ bias).
    for (int64_t m = 0; m < ni; ++m) {
      const float* src = out + m * OHW * Ogp;
      const float* bg = b ? b + g * q.Og : nullptr;
      float* dst = y + ((n0 + m) * d.O + g * q.Og) * OHW;
      if constexpr (W512)
        transpose_bias512(src, Ogp, OHW, q.Og, bg, dst, OHW);
      else
        transpose_bias256(src, Ogp, OHW, q.Og, bg, dst, OHW);
    }
  });
}

// ---- forward of 1-3 input channels along output rows (stems: MNIST's 1 -> 32 3x3, RGB) --------
// With one input channel the other kernels have almost nothing to sum per output: the direct
// tile's K is the KH*KW taps (9), so its compaction and stores outweigh its FMAs (45% of the
// FMA peak at N=64 1->32 28x28, PyTorch's oneDNN about the same). Here the vector runs along
// an output row instead, over a zero-padded plane, and each input vector, loaded once per tap
// at a constant offset, feeds 2 output channels' FMAs. AVX-512 (plane_pair512): the 2 x KK
// weights stay broadcast in registers for the whole image, a block of 4 row vectors (16
// pixels, consecutive across rows: a cursor) keeps 8 FMA chains, the last vector of a row is
// stored masked, and blocks past the last vector repeat it (stored twice, same values). AVX2
// (plane_pair256): 18 weights and 8 accumulators do not fit 16 registers, so the weights are
// broadcast from memory per tap, and a block is 4 vectors of one row (8 pixels each), so a
// tap's loads sit at constant displacements from one pointer (a first AVX2 version with a
// base offset per vector spent more on that bookkeeping than on its FMAs: 0.86-0.90 ms).
// The extra lanes of a row's last vector read the next row or the zeroed slack past the
// plane and are dropped. Stride 1, no groups, any dilation, 2..9 taps per input channel; 2 or
// 3 input channels (RGB stems) sum over stacked planes, a tap being (channel, kernel
// position): on AVX-512 up to 9 taps in all (the weights' registers), on AVX2 up to 3
// channels. N=64 1->32 28x28, 1 thread: AVX-512 0.55-0.57 -> 0.36-0.39 ms (PyTorch 0.56-0.81
// in the same runs), AVX2 0.67-0.77 ms (channel-vector tiles) -> 0.53 ms; AVX2, builds
// alternated: N=32 3->64 32x32 1.71 -> 1.57 ms, N=128 3->16 32x32 1.92 -> 1.72, N=8 2->16
// 64x64 0.39 -> 0.26 (AVX-512, 2x2 kernel: 0.19 -> 0.14).
bool use_plane(const Conv2dDims& d) {
  const int64_t KK = d.KH * d.KW, T = d.C * KK;
  if (!cpu::avx2_selected() || d.G != 1 || d.sh != 1 || d.sw != 1 || KK < 2 || KK > 9)
    return false;
  return cpu::avx512_selected() ? T <= 9 : d.C <= 3;
}

// The next NQ of the OH x nv row vectors of an output map (vector v of row oh; a cursor, no
// divisions: they cost as much as the FMAs here), repeating the last one past the end.
struct PlaneVec {
  int64_t src, dst;  // offset in the padded plane (row stride Ws), in the output (stride OW)
  bool last;         // last vector of its row (masked store)
};

template <int NQ>
struct PlaneCursor {
  int64_t oh = 0, v = 0, q = 0;
  void next(PlaneVec* pv, int64_t nv, int64_t nq, int64_t L, int64_t Ws, int64_t OW) {
    for (int u = 0; u < NQ; ++u) {
      pv[u] = {oh * Ws + v * L, oh * OW + v * L, v == nv - 1};
      if (q + 1 < nq) {
        ++q;
        if (++v == nv) {
          v = 0;
          ++oh;
        }
      }
    }
  }
};

// Output channels o and o + 1 (w0, w1: their KK weights; y0, y1: their maps) of one image.
template <int KK>
EMBER_AVX512 void plane_pair512(const float* P, int64_t Ws, const int64_t* off, const float* w0,
                                const float* w1, float b0, float b1, float* y0, float* y1,
                                int64_t OH, int64_t OW) {
  constexpr int NQ = 4;
  __m512 wa[KK], wb[KK];
  for (int t = 0; t < KK; ++t) {
    wa[t] = _mm512_set1_ps(w0[t]);
    wb[t] = _mm512_set1_ps(w1[t]);
  }
  const int64_t nv = (OW + 15) / 16, nq = OH * nv;
  const __mmask16 tail = OW % 16 ? __mmask16((1u << (OW % 16)) - 1) : __mmask16(0xFFFF);
  PlaneCursor<NQ> cur;
  for (int64_t q0 = 0; q0 < nq; q0 += NQ) {
    PlaneVec pv[NQ];
    cur.next(pv, nv, nq, 16, Ws, OW);
    __m512 a[NQ], c[NQ];
    for (int u = 0; u < NQ; ++u) {
      a[u] = _mm512_set1_ps(b0);
      c[u] = _mm512_set1_ps(b1);
    }
    // One vector's taps after the other (its base pointer plus the KK offsets, all in
    // registers; the FMA chains of the NQ vectors overlap out of order).
    for (int u = 0; u < NQ; ++u) {
      const float* base = P + pv[u].src;
      for (int t = 0; t < KK; ++t) {
        const __m512 xv = _mm512_loadu_ps(base + off[t]);
        a[u] = _mm512_fmadd_ps(wa[t], xv, a[u]);
        c[u] = _mm512_fmadd_ps(wb[t], xv, c[u]);
      }
    }
    for (int u = 0; u < NQ; ++u) {
      const __mmask16 m = pv[u].last ? tail : __mmask16(0xFFFF);
      _mm512_mask_storeu_ps(y0 + pv[u].dst, m, a[u]);
      _mm512_mask_storeu_ps(y1 + pv[u].dst, m, c[u]);
    }
  }
}

// AVX2: output channels o, o2 (w0, w1: their KK weights; y0, y1: their maps), a block of NV
// consecutive 8-pixel vectors of row oh from vector v0. The weights are broadcast from memory
// per tap (18 weights and 8 accumulators do not fit 16 registers); each input vector feeds
// both channels, and a tap's NV loads sit at constant displacements from one pointer
// (per-vector base offsets cost more than the FMAs). tail: valid lanes of the last vector.
template <int NV>
EMBER_AVX2 void plane_block256(const float* P, int64_t Ws, const int64_t* off, int64_t KK,
                               const float* w0, const float* w1, float b0, float b1, float* y0,
                               float* y1, int64_t OW, int64_t oh, int64_t v0, int64_t tail) {
  __m256 a[NV], c[NV];
#pragma GCC unroll 4
  for (int u = 0; u < NV; ++u) {
    a[u] = _mm256_set1_ps(b0);
    c[u] = _mm256_set1_ps(b1);
  }
  const float* r0 = P + oh * Ws + v0 * 8;
  for (int64_t t = 0; t < KK; ++t) {
    const __m256 wa = _mm256_broadcast_ss(w0 + t), wc = _mm256_broadcast_ss(w1 + t);
    const float* pt = r0 + off[t];
#pragma GCC unroll 4
    for (int u = 0; u < NV; ++u) {
      const __m256 xv = _mm256_loadu_ps(pt + u * 8);
      a[u] = _mm256_fmadd_ps(wa, xv, a[u]);
      c[u] = _mm256_fmadd_ps(wc, xv, c[u]);
    }
  }
  const int64_t o = oh * OW + v0 * 8;
#pragma GCC unroll 4
  for (int u = 0; u + 1 < NV; ++u) {
    _mm256_storeu_ps(y0 + o + u * 8, a[u]);
    _mm256_storeu_ps(y1 + o + u * 8, c[u]);
  }
  cpu::store_first(y0 + o + (NV - 1) * 8, a[NV - 1], tail);
  cpu::store_first(y1 + o + (NV - 1) * 8, c[NV - 1], tail);
}

// AVX2: output channels o, o2 of one image, each row in blocks of 4 vectors and a block of
// the 1-3 left.
EMBER_AVX2 void plane_pair256(const float* P, int64_t Ws, const int64_t* off, int64_t KK,
                              const float* w0, const float* w1, float b0, float b1, float* y0,
                              float* y1, int64_t OH, int64_t OW) {
  const int64_t nv = (OW + 7) / 8, last = OW - (nv - 1) * 8;
  for (int64_t oh = 0; oh < OH; ++oh) {
    int64_t v0 = 0;
    for (; v0 + 4 <= nv; v0 += 4)
      plane_block256<4>(P, Ws, off, KK, w0, w1, b0, b1, y0, y1, OW, oh, v0,
                        v0 + 4 == nv ? last : 8);
    switch (nv - v0) {
      case 1: plane_block256<1>(P, Ws, off, KK, w0, w1, b0, b1, y0, y1, OW, oh, v0, last); break;
      case 2: plane_block256<2>(P, Ws, off, KK, w0, w1, b0, b1, y0, y1, OW, oh, v0, last); break;
      case 3: plane_block256<3>(P, Ws, off, KK, w0, w1, b0, b1, y0, y1, OW, oh, v0, last); break;
      default: break;
    }
  }
}

// All output channels [o0, o1) of one image from its padded plane P.
template <int KK>
void plane_channels(const float* P, int64_t Ws, const int64_t* off, const float* w,
                    const float* b, float* yn, int64_t o0, int64_t o1, const Conv2dDims& d) {
  const int64_t OHW = d.OH * d.OW;
  for (int64_t o = o0; o < o1; o += 2) {
    const int64_t o2 = std::min(o + 1, o1 - 1);  // an odd last channel is computed twice
    plane_pair512<KK>(P, Ws, off, w + o * KK, w + o2 * KK, b ? b[o] : 0.0f, b ? b[o2] : 0.0f,
                      yn + o * OHW, yn + o2 * OHW, d.OH, d.OW);
  }
}

// y = conv(x, w) + b for use_plane(d); w [O][C][KH][KW]: T = C*KH*KW taps, tap c*KK + t at
// offset c*cs + (t / KW)*dh*Ws + (t % KW)*dw of the C stacked padded planes.
void fwd_plane(const float* x, const float* w, const float* b, float* y, const Conv2dDims& d) {
  const bool w512 = cpu::avx512_selected();
  const ChanGeo sg(d);
  const int64_t KK = d.KH * d.KW, T = d.C * KK, L = 16, OHW = d.OH * d.OW;
  int64_t off[27];
  for (int64_t e = 0; e < T; ++e) {
    const int64_t c = e / KK, t = e % KK;
    off[e] = c * sg.cs + (t / d.KW) * d.dh * sg.Ws + (t % d.KW) * d.dw;
  }
  // Pieces: images, each cut into blocks of channel pairs when there are fewer than 4 images
  // per thread, so a single image still uses every thread.
  const int nth = nthreads_for(conv_flops(d));
  const int64_t R = 2, units = (d.O + R - 1) / R;
  const int64_t cb = std::clamp<int64_t>((4 * nth + d.N - 1) / d.N, 1, units);
  cpu::ClaimPool::instance().run(nth, d.N * cb, [&](int64_t p) {
    const int64_t n = p / cb, blk = p % cb;
    const int64_t o0 = std::min(d.O, units * blk / cb * R);
    const int64_t o1 = std::min(d.O, units * (blk + 1) / cb * R);
    // The planes plus a vector of zeroed slack past the last one for the masked lanes of its
    // last row's vectors (an earlier plane's spill reads the next plane: dropped lanes).
    const int64_t plane = sg.Hs * sg.Ws, last = (d.C - 1) * sg.cs;
    float* P = tl_col.get(static_cast<size_t>(last + std::max(sg.cs, plane + L)));
    float* yn = y + n * d.O * OHW;
    const float* xn = x + n * d.C * d.H * d.W;
    if (!w512) {
      build_slab(xn, d, d.C, 0, sg.Hs, sg.Ws, sg.cs, P);
      std::fill(P + last + plane, P + last + plane + L, 0.0f);
      for (int64_t o = o0; o < o1; o += 2) {
        const int64_t o2 = std::min(o + 1, o1 - 1);  // as in plane_channels
        plane_pair256(P, sg.Ws, off, T, w + o * T, w + o2 * T, b ? b[o] : 0.0f,
                      b ? b[o2] : 0.0f, yn + o * OHW, yn + o2 * OHW, d.OH, d.OW);
      }
      return;
    }
    build_slab512(xn, d, d.C, 0, sg.Hs, sg.Ws, sg.cs, P);
    std::fill(P + last + plane, P + last + plane + L, 0.0f);
    switch (T) {
      case 2: plane_channels<2>(P, sg.Ws, off, w, b, yn, o0, o1, d); break;
      case 3: plane_channels<3>(P, sg.Ws, off, w, b, yn, o0, o1, d); break;
      case 4: plane_channels<4>(P, sg.Ws, off, w, b, yn, o0, o1, d); break;
      case 5: plane_channels<5>(P, sg.Ws, off, w, b, yn, o0, o1, d); break;
      case 6: plane_channels<6>(P, sg.Ws, off, w, b, yn, o0, o1, d); break;
      case 7: plane_channels<7>(P, sg.Ws, off, w, b, yn, o0, o1, d); break;
      case 8: plane_channels<8>(P, sg.Ws, off, w, b, yn, o0, o1, d); break;
      default: plane_channels<9>(P, sg.Ws, off, w, b, yn, o0, o1, d); break;
    }
  });
}

// w in its own layout [G*Og][Cg][KH][KW]; y = conv(x, w) + b (use_direct512).
void fwd_direct512(const float* x, const float* w, const float* b, float* y,
                   const Conv2dDims& d) {
  if (use_chanvec512(d)) {
    fwd_chanvec<true>(x, w, b, y, d);
    return;
  }
  const Geo q(d);
  const DirectGeo dg(d);
  const int64_t R = direct_rows(d, dg);
  const bool t8 = direct_use_8x48(q.Og, R * dg.Wp);
  const int64_t MRB = t8 ? 8 : 12;
  // Weights packed per block of MRB output channels: A[g][ob][k][MRB], zero-padded rows.
  const int64_t nob = (q.Og + MRB - 1) / MRB;
  float* A = tl_partial.get(static_cast<size_t>(d.G * nob * q.K * MRB));
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t ob = 0; ob < nob; ++ob) {
      float* Ab = A + (g * nob + ob) * q.K * MRB;
      for (int64_t k = 0; k < q.K; ++k)
        for (int64_t r = 0; r < MRB; ++r) {
          const int64_t o = ob * MRB + r;
          Ab[k * MRB + r] = o < q.Og ? w[(g * q.Og + o) * q.K + k] : 0.0f;
        }
    }
  if (t8)
    fwd_direct512_with<8, 3>(x, w, b, y, d, A, R);
  else
    fwd_direct512_with<12, 2>(x, w, b, y, d, A, R);
}

// ---- Winograd F(2x2, 3x3): stride-1 3x3 forward and input gradient (AVX-512) -------------
// Each 2x2 block of outputs ("tile", at output (2a, 2b)) reads a 4x4 input patch d at input
// (2a - ph, 2b - pw). Per input channel c and output channel o the tile's 2x2 outputs are
// A^T [(G w G^T) .* (B^T d B)] A (Lavin & Gray, 2016), so the products over channels become
// 16 independent GEMMs, one per position xi of the 4x4 transformed tile:
//   M_xi[o][t] = sum_c U_xi[o][c] * V_xi[c][t],  U = G w G^T (once per call), V = B^T d B,
// 16 multiplies per tile, channel pair and 4 outputs instead of 36: 2.25x fewer FLOPs, paid
// for by the transforms (B^T d B: 32 additions per tile and input channel, A^T M A: 24 per
// tile and output channel), which vanish next to the GEMMs only when the channel counts are
// large enough. Accuracy: B and A hold only 0 and +-1 and G +-1/2, so the transforms round
// like a few extra additions (float32 numpy F(2x2,3x3) on 64 channels measured the same RMS
// error as the direct float32 sum, 6.5e-7 vs 6.8e-7; tests/test_conv.py checks every shape
// routed here against the float64 reference like every other path).
// Layout (one task = a run of tile rows of consecutive images of one group): the input rows
// they need as zero-padded planes (build_slab512, row width Wp = 2*TW + 2), V[xi][c][NTp] (xi
// stride ldv, one cache line past Cg * NTp) and one output-channel block's M[xi][mrb][NTp] in
// the thread's workspace (NTp = the task's tiles rounded up to 16; V and M within kWinoCap
// floats, 768 KiB, most of a 1 MiB L2), so the GEMMs run on the direct kernel's 12 x 32 or
// 8 x 32 register tiles (direct_tile512 with K = Cg, B rows V_xi[c], A = U_xi packed per block
// of mrb output channels). Transforms are vectorised over 16 tiles: a tile row's patches are
// stride-2 windows of the plane rows, gathered by two-register permutes (even / odd columns)
// per run of lanes that lie in one tile row ("segments"), and the outputs are interleaved back
// the same way. Task sizes: 128K / 192K / 64K floats gave 14.1 / 13.5 / 14.0 ms on N=32
// 64->64 32x32 (the rest within noise).
constexpr int64_t kWinoCap = 3 * (int64_t{1} << 16);  // floats of V and M per task

struct WinoGeo {
  int64_t TH, TW, Wp, units, upt, ntask, NTp, mrb, nob, ldv;
  // avx2: output-channel blocks of 6 (the 6 x 16 AVX2 register tile of fwd_wino_avx2).
  explicit WinoGeo(const Conv2dDims& d, bool avx2 = false) {
    TH = (d.OH + 1) / 2;
    TW = (d.OW + 1) / 2;
    Wp = 2 * TW + 2;
    units = d.N * TH;  // tile rows of the whole batch (one group)
    const int64_t Cg = d.C / d.G, Og = d.O / d.G;
    // Output-channel blocks of 12 (a 12 x 32 register tile) or, where 12 would leave a block
    // of 4 or 8 and 8 leaves none (16, 32, 64, ...), of 8 (8 x 32).
    mrb = avx2 ? 6 : (Og % 12 != 0 && Og % 8 == 0) ? 8 : 12;
    nob = (Og + mrb - 1) / mrb;
    // Tiles per task: V and one output-channel block's M (16 x (Cg + mrb) floats per tile)
    // within kWinoCap floats; of the tile-row counts that fit, the one computing the fewest
    // padded columns in all (columns are rounded up to 16 per task).
    const int64_t cap = std::max<int64_t>(16, kWinoCap / (16 * (Cg + mrb)));
    const int64_t umax = std::clamp<int64_t>(cap / TW, 1, units);
    int64_t best = -1;
    for (int64_t u = umax; u >= 1 && u * 2 >= umax; --u) {
      const int64_t cost = (units + u - 1) / u * ((u * TW + 15) / 16);
      if (best < 0 || cost < best) {
        best = cost;
        upt = u;
      }
    }
    ntask = (units + upt - 1) / upt;
    NTp = (upt * TW + 15) / 16 * 16;
    // V's stride per xi: one cache line more than its Cg * NTp floats. Cg * NTp * 4 bytes is
    // a multiple of 4 KiB from 64 channels on (NTp is a multiple of 16), and then the 16
    // stores of a channel's transform all mapped to one L1 set. Builds alternated, 1 thread,
    // Zen 4, ms, AVX2 forward: N=32 64->64 32x32 17.1 -> 15.3, N=8 64->64 56x56 13.3 -> 11.7,
    // N=16 128->128 16x16 7.2 -> 6.6, N=128 32->32 14x14 5.2 -> 4.6 (its input gradient 5.3
    // -> 4.5); AVX-512 forward 0-6% (N=32 64->64 32x32 13.2 -> 12.8).
    ldv = Cg * NTp + 16;
  }
};

// Lanes [l0, l0 + n) of a 16-tile vector hold tiles b0.. of one tile row (image m, row a),
// whose first patch starts at float `off` of the task's planes (channel 0).
struct WinoSeg {
  int l0, n;
  int64_t off, m, a, b0;
};

// Where it wins over the direct paths (1 thread, Zen 4, interleaved A/B in one process,
// forward / input gradient ms): N=32 64->64 32x32 24.0 -> 13.3, N=8 64->64 56x56 19.4 -> 10.4,
// N=16 128->128 16x16 10.8 -> 6.0, N=64 32->64 14x14 4.6 -> 3.2, N=8 256->256 14x14 16.3 ->
// 10.0, N=8 512->512 7x7 23.4 -> 20.8, N=128 64->64 7x7 4.0 -> 3.6, N=128 32->32 14x14 4.8 ->
// 3.8, N=128 16->16 28x28 5.6 -> 5.0 (2 threads: 32x32 12.1 -> 6.9, 56x56 9.7 -> 5.3). Kept to
// >= 16 channels per group, where it was measured (at 16 the transforms and slab builds take
// about 60% of the samples in a perf profile, against ~30% at 64), and off on maps under 64
// pixels with fewer than 64 input channels (a 7x7 map's tiles cover 8x8 outputs: N=128
// 32->32 7x7 1.10 -> 1.14 ms, 16->16 7x7 0.40 -> 0.42). Tried without gain: the GEMMs and
// the output transform per 32 tiles, M then in L1 (13.5 -> 13.8 ms on 64->64 32x32).
bool wino_shape(const Conv2dDims& d) {
  return d.KH == 3 && d.KW == 3 && d.sh == 1 && d.sw == 1 && d.dh == 1 && d.dw == 1 &&
         d.ph <= 2 && d.pw <= 2 && d.C / d.G >= 16 && d.O / d.G >= 16 && d.OH >= 2 &&
         d.OW >= 2 && (d.OH * d.OW >= 64 || d.C / d.G >= 64);
}

bool use_wino(const Conv2dDims& d) { return cpu::avx512_selected() && wino_shape(d); }

// The AVX2 forward (fwd_wino_avx2) where AVX-512 is off; see there.
bool use_wino_avx2(const Conv2dDims& d) {
  return cpu::avx2_selected() && !cpu::avx512_selected() && wino_shape(d);
}

// True when x[0, n) has no inf or NaN (x - x is 0 exactly for finite x).
EMBER_AVX2 bool all_finite(const float* x, int64_t n) {
  __m256 bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(v, v), _mm256_setzero_ps(), _CMP_NEQ_UQ));
  }
  bool ok = _mm256_movemask_ps(bad) == 0;
  for (; i < n; ++i) ok = ok && std::isfinite(x[i]);
  return ok;
}

// U[g][xi][ob][c][mrb] = (G w[o][c] G^T)[xi], o = ob*mrb + lane (zero past Og). Vectorised
// over the output channels of a block (9 gathers of the taps per input channel): done in
// scalar double per (o, c) it took a quarter of an N=8 512->512 7x7 forward. Returns whether
// every weight is finite (w * 0 is NaN exactly for inf and NaN), checked in the same pass.
EMBER_AVX512 bool wino_weights(const float* w, const Conv2dDims& d, const WinoGeo& wg,
                               float* U) {
  const int64_t Cg = d.C / d.G, Og = d.O / d.G;
  const __m512i step = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                            11, 0, 0, 0, 0),
                                          _mm512_set1_epi32(int(Cg * 9)));
  const __m512 h = _mm512_set1_ps(0.5f), z = _mm512_setzero_ps();
  __m512 bad = z;
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t ob = 0; ob < wg.nob; ++ob) {
      const int64_t mr = std::min(wg.mrb, Og - ob * wg.mrb);
      const __mmask16 m = lane_range(0, mr), all = lane_range(0, wg.mrb);
      for (int64_t c = 0; c < Cg; ++c) {
        const float* k = w + ((g * Og + ob * wg.mrb) * Cg + c) * 9;
        __m512 kv[9];
        for (int t = 0; t < 9; ++t) {
          kv[t] = _mm512_mask_i32gather_ps(z, m, step, k + t, 4);
          bad = _mm512_fmadd_ps(kv[t], z, bad);
        }
        // t = G k: rows k0, (k0 + k1 + k2) / 2, (k0 - k1 + k2) / 2, k2 (columns j)
        __m512 r[4][3];
        for (int j = 0; j < 3; ++j) {
          const __m512 a = kv[j], b = kv[3 + j], cc = kv[6 + j];
          r[0][j] = a;
          r[1][j] = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(a, b), cc), h);
          r[2][j] = _mm512_mul_ps(_mm512_add_ps(_mm512_sub_ps(a, b), cc), h);
          r[3][j] = cc;
        }
        for (int i = 0; i < 4; ++i) {  // (G k) G^T along the columns
          const __m512 a = r[i][0], b = r[i][1], cc = r[i][2];
          const __m512 u[4] = {a, _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(a, b), cc), h),
                               _mm512_mul_ps(_mm512_add_ps(_mm512_sub_ps(a, b), cc), h), cc};
          for (int j = 0; j < 4; ++j)
            _mm512_mask_storeu_ps(
                U + (((g * 16 + i * 4 + j) * wg.nob + ob) * Cg + c) * wg.mrb, all, u[j]);
        }
      }
    }
  return _mm512_cmp_ps_mask(bad, bad, _CMP_UNORD_Q) == 0;
}

// B^T d B of the 4x4 patches d (16 lanes each: tiles or channels) into v + xi*ldxi, xi =
// 4i + j, B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
EMBER_AVX512 inline void wino_btdb(const __m512 (&d)[4][4], float* v, int64_t ldxi) {
  __m512 t[4][4];  // rows: B^T d
  for (int j = 0; j < 4; ++j) {
    t[0][j] = _mm512_sub_ps(d[0][j], d[2][j]);
    t[1][j] = _mm512_add_ps(d[1][j], d[2][j]);
    t[2][j] = _mm512_sub_ps(d[2][j], d[1][j]);
    t[3][j] = _mm512_sub_ps(d[1][j], d[3][j]);
  }
  for (int i = 0; i < 4; ++i) {  // columns: (B^T d) B
    float* r = v + 4 * i * ldxi;
    _mm512_storeu_ps(r, _mm512_sub_ps(t[i][0], t[i][2]));
    _mm512_storeu_ps(r + ldxi, _mm512_add_ps(t[i][1], t[i][2]));
    _mm512_storeu_ps(r + 2 * ldxi, _mm512_sub_ps(t[i][2], t[i][1]));
    _mm512_storeu_ps(r + 3 * ldxi, _mm512_sub_ps(t[i][1], t[i][3]));
  }
}

// V[xi][c][t0 + lane] for the 16 tiles of one vector: d = the 4x4 patches (rows i, columns
// j), B^T d B.
EMBER_AVX512 void wino_in16(const float* planes, int64_t cs, int64_t Wp, int64_t Cg,
                            const WinoSeg* seg, int nseg, float* V, int64_t NTp,
                            int64_t ldv) {
  const __m512i iota2 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                          28, 30);
  __m512i ie[16], io[16];  // a vector spans up to 16 tile rows (TW = 1)
  __mmask16 mk[16];
  for (int s = 0; s < nseg; ++s) {  // lane l -> column 2*(l - l0) of the segment's window
    ie[s] = _mm512_sub_epi32(iota2, _mm512_set1_epi32(2 * seg[s].l0));
    io[s] = _mm512_add_epi32(ie[s], _mm512_set1_epi32(1));
    mk[s] = __mmask16(((1u << seg[s].n) - 1u) << seg[s].l0);
  }
  for (int64_t c = 0; c < Cg; ++c) {
    __m512 p[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) p[i][j] = _mm512_setzero_ps();
    for (int s = 0; s < nseg; ++s) {
      const float* base = planes + c * cs + seg[s].off;
      for (int i = 0; i < 4; ++i) {
        const float* r = base + i * Wp;
        const __m512 lo = _mm512_loadu_ps(r), hi = _mm512_loadu_ps(r + 16);
        const __m512 lo2 = _mm512_loadu_ps(r + 2), hi2 = _mm512_loadu_ps(r + 18);
        p[i][0] = _mm512_mask_mov_ps(p[i][0], mk[s], _mm512_permutex2var_ps(lo, ie[s], hi));
        p[i][1] = _mm512_mask_mov_ps(p[i][1], mk[s], _mm512_permutex2var_ps(lo, io[s], hi));
        p[i][2] = _mm512_mask_mov_ps(p[i][2], mk[s], _mm512_permutex2var_ps(lo2, ie[s], hi2));
        p[i][3] = _mm512_mask_mov_ps(p[i][3], mk[s], _mm512_permutex2var_ps(lo2, io[s], hi2));
      }
    }
    wino_btdb(p, V + c * NTp, ldv);
  }
}

// y for the 16 tiles of one vector: A^T M A (+ bias) per output channel, interleaved back
// into the two output rows of each segment's tile row (columns clipped to OW, rows to OH).
EMBER_AVX512 void wino_out16(const float* M, int64_t NTp, int64_t mrb, int64_t o0, int64_t nout,
                             const WinoSeg* seg, int nseg, const float* bias, float* yg,
                             const Conv2dDims& d) {
  const int64_t OHW = d.OH * d.OW, OC = d.O;
  // interleave: output column q of the segment (q = 2*(l - l0) + jj) takes lane l0 + q/2 of
  // row vector jj; vector h covers columns 16h..16h+15. The permute indices depend on l0
  // only: one table for all calls (built per call, they cost as much as a block's outputs).
  struct Table {
    alignas(64) int32_t v[16][2][16];
    Table() {
      for (int l0 = 0; l0 < 16; ++l0)
        for (int col = 0; col < 32; ++col)
          v[l0][col / 16][col % 16] = (l0 + col / 2) % 16 + (col % 2) * 16;
    }
  };
  static const Table tab;
  __m512i ix[16][2];
  for (int s = 0; s < nseg; ++s)
    for (int h = 0; h < 2; ++h) ix[s][h] = _mm512_load_si512(tab.v[seg[s].l0][h]);
  for (int64_t o = o0; o < o0 + nout; ++o) {  // M[xi][o - o0][NTp]: one block of mrb
    __m512 m[4][4];
    for (int xi = 0; xi < 16; ++xi)
      m[xi / 4][xi % 4] = _mm512_loadu_ps(M + (xi * mrb + o - o0) * NTp);
    // rows: A^T m
    __m512 s0[4], s1[4];
    for (int j = 0; j < 4; ++j) {
      s0[j] = _mm512_add_ps(_mm512_add_ps(m[0][j], m[1][j]), m[2][j]);
      s1[j] = _mm512_sub_ps(_mm512_sub_ps(m[1][j], m[2][j]), m[3][j]);
    }
    const __m512 bv = _mm512_set1_ps(bias ? bias[o] : 0.0f);
    __m512 y[2][2];
    y[0][0] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s0[0], s0[1]), s0[2]), bv);
    y[0][1] = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s0[1], s0[2]), s0[3]), bv);
    y[1][0] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s1[0], s1[1]), s1[2]), bv);
    y[1][1] = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s1[1], s1[2]), s1[3]), bv);
    for (int s = 0; s < nseg; ++s) {
      const int64_t col0 = 2 * seg[s].b0, ncol = std::min<int64_t>(2 * seg[s].n, d.OW - col0);
      for (int ii = 0; ii < 2; ++ii) {
        const int64_t row = 2 * seg[s].a + ii;
        if (row >= d.OH) break;
        float* dst = yg + (seg[s].m * OC + o) * OHW + row * d.OW + col0;
        for (int h = 0; h < 2 && 16 * h < ncol; ++h) {
          const __m512 v = _mm512_permutex2var_ps(y[ii][0], ix[s][h], y[ii][1]);
          _mm512_mask_storeu_ps(dst + 16 * h, lane_range(0, ncol - 16 * h), v);
        }
      }
    }
  }
}

// M[mr rows][ncol] = the packed U block (K x MRB) times V (K rows koff apart), ncol a
// multiple of 16: 32-column register tiles, then a last 16 columns.
// direct_tile512 for an output-channel block of mr <= MRB rows (4, 8 or MRB rows computed).
template <int NV, int MRB>
void wino_tile(int64_t K, int64_t mr, const float* A, const float* V, const int64_t* koff,
               float* M, int64_t ldm) {
  if (mr <= 4)
    direct_tile512<4, NV, MRB>(K, A, V, koff, M, ldm);
  else if (MRB == 12 && mr <= 8)
    direct_tile512<8, NV, MRB>(K, A, V, koff, M, ldm);
  else
    direct_tile512<MRB, NV, MRB>(K, A, V, koff, M, ldm);
}

template <int MRB>
void wino_gemm(int64_t K, int64_t mr, const float* A, const float* V, const int64_t* koff,
               float* M, int64_t ldm, int64_t ncol) {
  const int64_t n32 = ncol / 32 * 32;
  for (int64_t t0 = 0; t0 < n32; t0 += 32) wino_tile<2, MRB>(K, mr, A, V + t0, koff, M + t0, ldm);
  if (ncol > n32) wino_tile<1, MRB>(K, mr, A, V + n32, koff, M + n32, ldm);
}

// One Winograd forward task's input (tile rows [u0, u1) of group g): per image touched, its
// planes at ws + (n - n0)*frame, built by build(xg, first, rows, dst) for its tile rows
// [first, first + rows), and a0[n - n0] = first. An inf or NaN would spread over the whole
// transformed tile (inf - inf in B^T d B, then A^T M A): a task whose planes hold one
// computes its outputs directly instead (fwd_ref) and this returns false, so a non-finite
// input reaches only the outputs that read it, as on every other path.
template <class Build>
bool wino_task_planes(const float* x, const float* w, const float* b, float* y,
                      const Conv2dDims& d, const WinoGeo& wg, int64_t g, int64_t u0, int64_t u1,
                      int64_t frame, float* ws, std::vector<int64_t>& a0, Build&& build) {
  const int64_t Cg = d.C / d.G, Og = d.O / d.G, HW = d.H * d.W;
  const int64_t n0 = u0 / wg.TH, n1 = (u1 - 1) / wg.TH + 1;  // images touched
  a0.assign(static_cast<size_t>(n1 - n0), 0);
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t ua = std::max(u0, n * wg.TH), ub = std::min(u1, (n + 1) * wg.TH);
    a0[size_t(n - n0)] = ua - n * wg.TH;
    build(x + (n * d.C + g * Cg) * HW, ua - n * wg.TH, ub - ua, ws + (n - n0) * frame);
  }
  if (all_finite(ws, (n1 - n0) * frame)) return true;
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t ua = std::max(u0, n * wg.TH), ub = std::min(u1, (n + 1) * wg.TH);
    const int64_t r0 = 2 * (ua - n * wg.TH), r1 = std::min(d.OH, 2 * (ub - n * wg.TH));
    for (int64_t o = g * Og; o < (g + 1) * Og; ++o) fwd_ref<float>(x, w, b, y, d, n, o, r0, r1);
  }
  return false;
}

// y = conv(x, w) + b for use_wino(d); w in its own layout [G*Og][Cg][3][3]. Returns false,
// y untouched, when w holds an inf or NaN (the caller takes the direct paths; see below).
bool fwd_wino512(const float* x, const float* w, const float* b, float* y, const Conv2dDims& d) {
  const Geo q(d);
  const WinoGeo wg(d);
  const int64_t Cg = q.Cg, Og = q.Og, NTp = wg.NTp, nob = wg.nob;
  float* U = tl_partial.get(static_cast<size_t>(d.G * 16 * nob * Cg * wg.mrb));
  if (!wino_weights(w, d, wg, U)) return false;
  std::vector<int64_t> koffv(static_cast<size_t>(Cg));
  for (int64_t c = 0; c < Cg; ++c) koffv[size_t(c)] = c * NTp;
  const int64_t* koff = koffv.data();
  const int64_t ntask = wg.ntask;
  cpu::ClaimPool::instance().run(nthreads_for(conv_flops(d)), ntask * d.G, [&](int64_t p) {
    const int64_t g = p % d.G, u0 = (p / d.G) * wg.upt, u1 = std::min(wg.units, u0 + wg.upt);
    const int64_t n0 = u0 / wg.TH, n1 = (u1 - 1) / wg.TH + 1;  // images touched
    // Plane frames, one per image touched: the input rows of its tile rows [a0, a1).
    const int64_t srmax = 2 * std::min(wg.upt, wg.TH) + 2;
    const int64_t cs = (srmax * wg.Wp + 48 + 15) / 16 * 16;  // + the 34-float reads' slack
    const int64_t frame = Cg * cs;
    float* ws =
        tl_col.get(static_cast<size_t>((n1 - n0) * frame + 16 * (wg.ldv + wg.mrb * NTp)));
    float* V = ws + (n1 - n0) * frame;
    float* M = V + 16 * wg.ldv;
    std::vector<int64_t> a0;
    if (!wino_task_planes(x, w, b, y, d, wg, g, u0, u1, frame, ws, a0,
                          [&](const float* xg, int64_t first, int64_t rows, float* dst) {
                            build_slab512(xg, d, Cg, 2 * first, 2 * rows + 2, wg.Wp, cs, dst);
                          }))
      return;
    // Segments of each 16-tile vector.
    const int64_t ntile = (u1 - u0) * wg.TW, nvec = (ntile + 15) / 16;
    std::vector<WinoSeg> segs;
    std::vector<int> sbeg(static_cast<size_t>(nvec + 1));
    for (int64_t v = 0; v < nvec; ++v) {
      sbeg[size_t(v)] = int(segs.size());
      for (int64_t t = v * 16; t < std::min(ntile, v * 16 + 16);) {
        const int64_t u = u0 + t / wg.TW, b0 = t % wg.TW;
        const int64_t n = u / wg.TH, a = u % wg.TH;
        const int64_t cnt = std::min({wg.TW - b0, v * 16 + 16 - t, ntile - t});
        const int64_t off =
            (n - n0) * frame + 2 * (a - a0[size_t(n - n0)]) * wg.Wp + 2 * b0;
        segs.push_back({int(t - v * 16), int(cnt), off, n, a, b0});
        t += cnt;
      }
    }
    sbeg[size_t(nvec)] = int(segs.size());
    for (int64_t v = 0; v < nvec; ++v)
      wino_in16(ws, cs, wg.Wp, Cg, segs.data() + sbeg[size_t(v)],
                sbeg[size_t(v) + 1] - sbeg[size_t(v)], V + v * 16, NTp, wg.ldv);
    const int64_t ncol = nvec * 16;  // the GEMMs' columns: lanes past ntile hold zero tiles
    float* yg = y + g * Og * q.OHW;
    // Per block of mrb output channels: its 16 GEMMs into M, then its outputs.
    for (int64_t ob = 0; ob < nob; ++ob) {
      const int64_t mr = std::min(wg.mrb, Og - ob * wg.mrb);
      for (int xi = 0; xi < 16; ++xi) {
        const float* A = U + ((g * 16 + xi) * nob + ob) * Cg * wg.mrb;
        if (wg.mrb == 8)
          wino_gemm<8>(Cg, mr, A, V + xi * wg.ldv, koff, M + xi * 8 * NTp, NTp, ncol);
        else
          wino_gemm<12>(Cg, mr, A, V + xi * wg.ldv, koff, M + xi * 12 * NTp, NTp, ncol);
      }
      for (int64_t v = 0; v < nvec; ++v)
        wino_out16(M + v * 16, NTp, wg.mrb, ob * wg.mrb, mr, segs.data() + sbeg[size_t(v)],
                   sbeg[size_t(v) + 1] - sbeg[size_t(v)], b ? b + g * Og : nullptr, yg, d);
    }
  });
  return true;
}

// ---- Winograd F(2x2, 3x3) on AVX2 (CPUs without AVX-512) ----------------------------------
// The same method, tasks and layouts as fwd_wino512, on 8-lane vectors: a vector holds 8
// tiles of ONE tile row (its last vector a partial one: lanes past the row's tiles are
// computed and not stored), so a patch gather is two even / odd deinterleaves of 16 slab
// floats per row and no tile-row segments are needed; V and M stay dense over the task's
// tiles. The GEMMs run a 6 x 16 register tile (12 ymm accumulators, U packed per block of 6
// output channels, zero rows past Og). The weight transform is scalar (once per call; under
// 1% of the samples at 64 -> 64 channels). Against the im2col / shifted-GEMM paths it
// replaces (1 thread, the Zen 4 machine with AVX-512 turned off, builds interleaved in one
// process, best of 5, forward / input gradient ms): N=32 64->64 32x32 26.4 / 25.6 -> 16.7 /
// 20.4, N=16 128->128 16x16 12.4 / 12.6 -> 7.2 / 7.1, N=8 64->64 56x56 20.4 / 20.4 -> 13.1 /
// 13.1, N=64 32->64 14x14 5.6 / 7.1 -> 4.0 / 4.7, N=128 16->16 28x28 9.8 / 9.1 -> 7.5 / 7.3,
// N=128 32->32 14x14 7.2 / 7.8 -> 5.3 / 5.1, N=128 64->64 7x7 6.2 / 6.3 -> 5.6 / 5.7. In a
// perf profile of the first: GEMMs 45%, input transform 13%, slab build 6%, output 5%. The
// weight gradient has its own AVX2 twin (bwd_weight_wino<false>, use_wino_wgrad_avx2).

// U[g][xi][ob][c][6] = (G w[o][c] G^T)[xi], o = ob*6 + r (zero past Og), in float with the
// AVX-512 path's formulas. Returns whether every weight is finite.
bool wino_weights_avx2(const float* w, const Conv2dDims& d, const WinoGeo& wg, float* U) {
  const int64_t Cg = d.C / d.G, Og = d.O / d.G, mrb = wg.mrb;
  bool finite = true;
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t ob = 0; ob < wg.nob; ++ob)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t r = 0; r < mrb; ++r) {
          const int64_t o = ob * mrb + r;
          float u[4][4] = {};
          if (o < Og) {
            const float* k = w + ((g * Og + o) * Cg + c) * 9;
            float t[4][3];  // G k
            for (int j = 0; j < 3; ++j) {
              const float a = k[j], b = k[3 + j], e = k[6 + j];
              finite = finite && std::isfinite(a) && std::isfinite(b) && std::isfinite(e);
              t[0][j] = a;
              t[1][j] = (a + b + e) * 0.5f;
              t[2][j] = (a - b + e) * 0.5f;
              t[3][j] = e;
            }
            for (int i = 0; i < 4; ++i) {  // (G k) G^T
              const float a = t[i][0], b = t[i][1], e = t[i][2];
              u[i][0] = a;
              u[i][1] = (a + b + e) * 0.5f;
              u[i][2] = (a - b + e) * 0.5f;
              u[i][3] = e;
            }
          }
          for (int xi = 0; xi < 16; ++xi)
            U[(((g * 16 + xi) * wg.nob + ob) * Cg + c) * mrb + r] = u[xi / 4][xi % 4];
        }
  return finite;
}

// Lanes l of the even (2l) and odd (2l + 1) floats of p[0, 16).
EMBER_AVX2 inline void deinterleave8(const float* p, __m256& even, __m256& odd) {
  const __m256 lo = _mm256_loadu_ps(p), hi = _mm256_loadu_ps(p + 8);
  // per 128-bit lane: lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6, then the 64-bit pairs reordered
  const __m256 e = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
  const __m256 o = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
  even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
  odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}

// wino_btdb on 8 lanes, storing the first n of each row (all 8 from n = 8 on).
EMBER_AVX2 inline void wino_btdb256(const __m256 (&d)[4][4], float* v, int64_t ldxi,
                                    int64_t n) {
  __m256 t[4][4];  // rows: B^T d
  for (int j = 0; j < 4; ++j) {
    t[0][j] = _mm256_sub_ps(d[0][j], d[2][j]);
    t[1][j] = _mm256_add_ps(d[1][j], d[2][j]);
    t[2][j] = _mm256_sub_ps(d[2][j], d[1][j]);
    t[3][j] = _mm256_sub_ps(d[1][j], d[3][j]);
  }
  for (int i = 0; i < 4; ++i) {  // columns: (B^T d) B
    float* r = v + 4 * i * ldxi;
    cpu::store_first(r, _mm256_sub_ps(t[i][0], t[i][2]), n);
    cpu::store_first(r + ldxi, _mm256_add_ps(t[i][1], t[i][2]), n);
    cpu::store_first(r + 2 * ldxi, _mm256_sub_ps(t[i][2], t[i][1]), n);
    cpu::store_first(r + 3 * ldxi, _mm256_sub_ps(t[i][1], t[i][3]), n);
  }
}

// V[xi][c][t0 + lane] for lane < n, the tiles b0 .. b0 + n - 1 of one tile row whose first
// patch starts at `patch` (channel 0; channel c at + c*cs): B^T d B as in wino_btdb.
EMBER_AVX2 void wino_in8(const float* patch, int64_t cs, int64_t Wp, int64_t Cg, int64_t n,
                         float* V, int64_t NTp, int64_t ldxi) {
  for (int64_t c = 0; c < Cg; ++c) {
    __m256 p[4][4];
    for (int i = 0; i < 4; ++i) {
      const float* r = patch + c * cs + i * Wp;
      deinterleave8(r, p[i][0], p[i][1]);
      deinterleave8(r + 2, p[i][2], p[i][3]);
    }
    wino_btdb256(p, V + c * NTp, ldxi, n);
  }
}

// M[6][ldm] block: M[r][n0 + (0..15)] = sum_k A[k*6 + r] * V[koff[k] + n0 + (0..15)], 16
// columns at a time (ncol a multiple of 16).
EMBER_AVX2 void wino_gemm_avx2(int64_t K, const float* A, const float* V, const int64_t* koff,
                               float* M, int64_t ldm, int64_t ncol) {
  for (int64_t n0 = 0; n0 < ncol; n0 += 16) {
    __m256 acc[6][2];
    for (int r = 0; r < 6; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const float* a = A;
    for (int64_t k = 0; k < K; ++k, a += 6) {
      const float* bk = V + koff[k] + n0;
      const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
      for (int r = 0; r < 6; ++r) {
        const __m256 av = _mm256_broadcast_ss(a + r);
        acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
      }
    }
    for (int r = 0; r < 6; ++r) {
      _mm256_storeu_ps(M + r * ldm + n0, acc[r][0]);
      _mm256_storeu_ps(M + r * ldm + n0 + 8, acc[r][1]);
    }
  }
}

// y for tiles t0 .. t0 + n - 1 of one tile row (image m, tile row a, first tile b0) and the
// block's nout output channels o0..: A^T M A (+ bias), interleaved into the two output rows
// (columns clipped to OW, rows to OH).
EMBER_AVX2 void wino_out8(const float* M, int64_t NTp, int64_t o0, int64_t nout, int64_t n,
                          int64_t m, int64_t a, int64_t b0, const float* bias, float* yg,
                          const Conv2dDims& d) {
  const int64_t OHW = d.OH * d.OW, col0 = 2 * b0, ncol = std::min<int64_t>(2 * n, d.OW - col0);
  for (int64_t o = o0; o < o0 + nout; ++o) {  // M[xi][o - o0][NTp]: one block of 6
    __m256 mv[4][4];
    for (int xi = 0; xi < 16; ++xi)
      mv[xi / 4][xi % 4] = _mm256_loadu_ps(M + (xi * 6 + o - o0) * NTp);
    __m256 s0[4], s1[4];  // rows: A^T m
    for (int j = 0; j < 4; ++j) {
      s0[j] = _mm256_add_ps(_mm256_add_ps(mv[0][j], mv[1][j]), mv[2][j]);
      s1[j] = _mm256_sub_ps(_mm256_sub_ps(mv[1][j], mv[2][j]), mv[3][j]);
    }
    const __m256 bv = _mm256_set1_ps(bias ? bias[o] : 0.0f);
    __m256 y[2][2];
    y[0][0] = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s0[0], s0[1]), s0[2]), bv);
    y[0][1] = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s0[1], s0[2]), s0[3]), bv);
    y[1][0] = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s1[0], s1[1]), s1[2]), bv);
    y[1][1] = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s1[1], s1[2]), s1[3]), bv);
    for (int ii = 0; ii < 2; ++ii) {
      const int64_t row = 2 * a + ii;
      if (row >= d.OH) break;
      // columns 2l, 2l + 1 of tile l: (y0[0] y1[0] y0[1] y1[1] ...) in two vectors of 8
      const __m256 lo = _mm256_unpacklo_ps(y[ii][0], y[ii][1]);
      const __m256 hi = _mm256_unpackhi_ps(y[ii][0], y[ii][1]);
      float* dst = yg + (m * d.O + o) * OHW + row * d.OW + col0;
      cpu::store_first(dst, _mm256_permute2f128_ps(lo, hi, 0x20), std::min<int64_t>(8, ncol));
      if (ncol > 8) cpu::store_first(dst + 8, _mm256_permute2f128_ps(lo, hi, 0x31), ncol - 8);
    }
  }
}

// y = conv(x, w) + b for use_wino_avx2(d); w in its own layout. Returns false, y untouched,
// when w holds an inf or NaN (as fwd_wino512).
bool fwd_wino_avx2(const float* x, const float* w, const float* b, float* y,
                   const Conv2dDims& d) {
  const Geo q(d);
  const WinoGeo wg(d, /*avx2=*/true);
  const int64_t Cg = q.Cg, Og = q.Og, NTp = wg.NTp, nob = wg.nob;
  float* U = tl_partial.get(static_cast<size_t>(d.G * 16 * nob * Cg * 6));
  if (!wino_weights_avx2(w, d, wg, U)) return false;
  std::vector<int64_t> koffv(static_cast<size_t>(Cg));
  for (int64_t c = 0; c < Cg; ++c) koffv[size_t(c)] = c * NTp;
  const int64_t* koff = koffv.data();
  cpu::ClaimPool::instance().run(nthreads_for(conv_flops(d)), wg.ntask * d.G, [&](int64_t p) {
    const int64_t g = p % d.G, u0 = (p / d.G) * wg.upt, u1 = std::min(wg.units, u0 + wg.upt);
    const int64_t n0 = u0 / wg.TH, n1 = (u1 - 1) / wg.TH + 1;  // images touched
    const int64_t srmax = 2 * std::min(wg.upt, wg.TH) + 2;
    const int64_t cs = (srmax * wg.Wp + 24 + 7) / 8 * 8;  // + the 18-float reads' slack
    const int64_t frame = Cg * cs;
    // (+ 8: wino_out8's loads of a row's last vector read up to 7 floats past M's end)
    float* ws = tl_col.get(static_cast<size_t>((n1 - n0) * frame + 16 * (wg.ldv + 6 * NTp) + 8));
    float* V = ws + (n1 - n0) * frame;
    float* M = V + 16 * wg.ldv;
    std::vector<int64_t> a0;
    if (!wino_task_planes(x, w, b, y, d, wg, g, u0, u1, frame, ws, a0,
                          [&](const float* xg, int64_t first, int64_t rows, float* dst) {
                            build_slab(xg, d, Cg, 2 * first, 2 * rows + 2, wg.Wp, cs, dst);
                          }))
      return;
    // V's columns past the task's tiles (up to NTp) feed GEMM columns that are never read;
    // zeroed so that they hold no stale inf or NaN either.
    const int64_t ntile = (u1 - u0) * wg.TW;
    for (int64_t xi = 0; xi < 16; ++xi)
      for (int64_t c = 0; c < Cg; ++c)
        zero_floats(V + xi * wg.ldv + c * NTp + ntile, NTp - ntile);
    // (unit u, first tile b0, lanes n) for each 8-tile vector of the task
    auto for_vectors = [&](auto&& fn) {
      for (int64_t u = u0; u < u1; ++u)
        for (int64_t b0 = 0; b0 < wg.TW; b0 += 8) fn(u, b0, std::min<int64_t>(8, wg.TW - b0));
    };
    for_vectors([&](int64_t u, int64_t b0, int64_t n) {
      const int64_t img = u / wg.TH, a = u % wg.TH;
      const float* patch =
          ws + (img - n0) * frame + 2 * (a - a0[size_t(img - n0)]) * wg.Wp + 2 * b0;
      wino_in8(patch, cs, wg.Wp, Cg, n, V + (u - u0) * wg.TW + b0, NTp, wg.ldv);
    });
    const int64_t ncol = (ntile + 15) / 16 * 16;
    float* yg = y + g * Og * q.OHW;
    for (int64_t ob = 0; ob < nob; ++ob) {
      const int64_t mr = std::min<int64_t>(6, Og - ob * 6);
      for (int xi = 0; xi < 16; ++xi)
        wino_gemm_avx2(Cg, U + ((g * 16 + xi) * nob + ob) * Cg * 6, V + xi * wg.ldv, koff,
                       M + xi * 6 * NTp, NTp, ncol);
      for_vectors([&](int64_t u, int64_t b0, int64_t n) {
        wino_out8(M + (u - u0) * wg.TW + b0, NTp, ob * 6, mr, n, u / wg.TH, u % wg.TH, b0,
                  b ? b + g * Og : nullptr, yg, d);
      });
    }
  });
  return true;
}

// The stride-1 3x3 Winograd forward of whichever ISA is on (use_wino / use_wino_avx2).
bool wino_ok(const Conv2dDims& d) { return use_wino(d) || use_wino_avx2(d); }

bool fwd_wino(const float* x, const float* w, const float* b, float* y, const Conv2dDims& d) {
  return cpu::avx512_selected() ? fwd_wino512(x, w, b, y, d) : fwd_wino_avx2(x, w, b, y, d);
}

// On AVX2, maps under 64 pixels (whose 2x2 tiles compute up to 30% more outputs: 8x8 for
// 7x7), and any map with up to 16 input channels per group (where Winograd's transforms
// outweigh its GEMMs), run the channel-vector tiles rather than Winograd where both apply,
// with fewer than 96 output channels per group (forward, and the input gradient as the
// forward of gy). 1 thread, Zen 4 with AVX-512 off, builds alternated, ms, Winograd ->
// channel vectors: forward N=128 64->64 7x7 5.2 -> 4.4, N=32 128->64 7x7 2.5 -> 2.2, 80->80
// 1.9 -> 1.7, N=128 16->16 28x28 7.0 -> 5.4, N=32 16->32 32x32 3.6 -> 3.0; input gradient N=128
// 64->64 7x7 5.4 -> 4.6, 16->16 28x28 7.0 -> 5.1. With more output channels the weight rows
// the tiles stream grow and Winograd wins: N=32 64->128 7x7 3.0 vs 3.4, 128->128 4.1 vs 5.1,
// 256->256 14.0 vs 25.0, 512->512 87 vs 122 (96->96 was even); at 8x8, N=32 64->64, too (1.21
// vs 1.27); and from 24 input channels on larger maps (N=16 24->48 28x28 1.85 vs 2.47).
bool chanvec_before_wino(const Conv2dDims& d) {
  return use_chanvec_avx2(d) && (d.OH * d.OW < 64 || d.C / d.G <= 16) && d.O / d.G < 96;
}

void fwd_fast(const float* x, const float* w, const float* b, float* y, const Conv2dDims& d) {
  if (use_plane(d)) {
    fwd_plane(x, w, b, y, d);
    return;
  }
  if (!chanvec_before_wino(d) && wino_ok(d) && fwd_wino(x, w, b, y, d)) return;
  if (use_chanvec_avx2(d)) {
    fwd_chanvec<false>(x, w, b, y, d);
    return;
  }
  if (use_direct512(d)) {
    fwd_direct512(x, w, b, y, d);
    return;
  }
  if (use_shifted(d)) {
    fwd_shifted(x, w, b, y, d);
    return;
  }
  const Geo q(d);
  const bool direct = is_pointwise(d);
  const TilePlan plan = plan_tiles(d.OH, d.OW, q.K);
  const int64_t nt = plan.count();
  const int64_t pieces = d.N * d.G * nt;
  cpu::ClaimPool::instance().run(nthreads_for(conv_flops(d)), pieces, [&](int64_t p) {
    const int64_t n = p / (d.G * nt), g = (p / nt) % d.G;
    const Tile tl = plan.at(p % nt, d.OH, d.OW);
    const int64_t T = tl.T;
    float* yc = y + (n * d.O + g * q.Og) * q.OHW + tl.off;
    const size_t colsz = direct ? 0 : static_cast<size_t>(q.K * T);
    float* ws = tl_col.get(colsz + static_cast<size_t>(q.Og * T));
    const float* src;
    int64_t sbk;
    if (direct) {
      src = x + (n * d.C + g * q.Cg) * q.HW + tl.off;
      sbk = q.HW;
    } else {
      im2col_tile(x + (n * d.C + g * q.Cg) * q.HW, d, q.Cg, tl, ws);
      src = ws;
      sbk = T;
    }
    // GEMM into a contiguous [Og, T] tile, then copy (+ bias) into y: y's row stride OH*OW
    // is often a multiple of 4 KiB (32x32 maps), and a C tile whose rows all map to the same
    // L1 sets thrashes. Without a bias and with a row stride that spreads over the L1 sets (not
    // a multiple of 1 KiB: 56x56, 28x28, 14x14, 7x7 maps), the GEMM writes y itself (pointwise
    // N=8 256->64 56x56, 1 thread: 9.96 -> 9.52 ms; 64->256: 9.60 -> 9.07; AVX2 10.05 -> 9.69).
    if (!b && q.OHW % 256 != 0) {
      gemm_serial(w + g * q.Og * q.K, q.K, 1, src, sbk, 1, yc, q.OHW, q.Og, T, q.K, 1.0f, 0.0f);
      return;
    }
    float* ct = ws + colsz;
    gemm_serial(w + g * q.Og * q.K, q.K, 1, src, sbk, 1, ct, T, q.Og, T, q.K, 1.0f, 0.0f);
    for (int64_t o = 0; o < q.Og; ++o)
      copy_bias_row(yc + o * q.OHW, ct + o * T, T, b ? b[g * q.Og + o] : 0.0f);
  });
}

// gx[c][ih][iw] += S[c][ih - (oh0 - ph)][iw + pw] for the slab rows that are inside the image.
EMBER_AVX2 void add_slab(const float* S, int64_t cs, int64_t cc, int64_t sr, int64_t Wp,
                         const Conv2dDims& d, int64_t oh0, float* gxc) {
  const int64_t r0 = std::max<int64_t>(0, d.ph - oh0), r1 = std::min(sr, d.H + d.ph - oh0);
  for (int64_t c = 0; c < cc; ++c)
    for (int64_t r = r0; r < r1; ++r)
      add_row(gxc + c * d.H * d.W + (oh0 - d.ph + r) * d.W, S + c * cs + r * Wp + d.pw, d.W);
}

// Input gradient with the shifted GEMMs: per tap, S[:, off : off + rows*Wp] += W_tap^T @
// gy_wide, S a zeroed slab in the forward's layout (the zero columns of gy_wide add nothing),
// then the slab's in-image part is added into gx (tiles share eh rows, so gx is accumulated).
// Pieces own (image, group, channel block), so no two write the same gx element.
void bwd_data_shifted(const float* gy, const float* w, float* gx, const Conv2dDims& d) {
  const Geo q(d);
  const int64_t Wp = d.OW + (d.KW - 1) * d.dw, eh = (d.KH - 1) * d.dh;
  const int64_t R = shifted_rows(d, Wp, eh), nt = (d.OH + R - 1) / R;
  const int nth = nthreads_for(conv_flops(d));
  const int64_t units = d.N * d.G;
  const int64_t cb =
      std::min<int64_t>(q.Cg, units >= 2 * nth ? 1 : (2 * nth + units - 1) / units);
  const int64_t cc_max = (q.Cg + cb - 1) / cb;
  // W^T per tap, [G][KK][Cg][Og]: the GEMM's A (rows = input channels) row-major.
  float* wt = tl_partial.get(static_cast<size_t>(d.G * q.KK * q.Cg * q.Og));
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t o = 0; o < q.Og; ++o)
      for (int64_t c = 0; c < q.Cg; ++c)
        for (int64_t t = 0; t < q.KK; ++t)
          wt[((g * q.KK + t) * q.Cg + c) * q.Og + o] = w[((g * q.Og + o) * q.Cg + c) * q.KK + t];
  cpu::ClaimPool::instance().run(nth, units * cb, [&](int64_t p) {
    const int64_t blk = p % cb, ng = p / cb, n = ng / d.G, g = ng % d.G;
    const int64_t c0 = blk * cc_max, cc = std::min(cc_max, q.Cg - c0);
    if (cc <= 0) return;
    float* gxc = gx + (n * d.C + g * q.Cg + c0) * q.HW;
    zero_floats(gxc, cc * q.HW);
    for (int64_t t = 0; t < nt; ++t) {
      const int64_t oh0 = t * R, rows = std::min(R, d.OH - oh0), Tw = rows * Wp;
      const int64_t sr = rows + eh, cs = (sr * Wp + (d.KW - 1) * d.dw + 15) / 16 * 16;
      float* ws = tl_col.get(static_cast<size_t>(cc * cs + q.Og * Tw));
      float* gyw = ws + cc * cs;
      widen_rows(gy + (n * d.O + g * q.Og) * q.OHW, q.OHW, d.OW, oh0, rows, q.Og, Wp, gyw);
      zero_floats(ws, cc * cs);
      for (int64_t i = 0; i < d.KH; ++i)
        for (int64_t j = 0; j < d.KW; ++j) {
          const int64_t tap = i * d.KW + j;
          gemm_serial(wt + ((g * q.KK + tap) * q.Cg + c0) * q.Og, q.Og, 1, gyw, Tw, 1,
                      ws + i * d.dh * Wp + j * d.dw, cs, cc, Tw, q.Og, 1.0f, 1.0f);
        }
      add_slab(ws, cs, cc, sr, Wp, d, oh0, gxc);
    }
  });
}

// Stride-1 input gradient on the direct kernel: the forward of gy with the kernel flipped and
// transposed (bwd_data_as_fwd_dims), for any channel count. w' = [G*Cg][Og][KH][KW] with
// w'[g*Cg + c][o][t] = w[g*Og + o][c][KK-1-t], in its own buffer (fwd_direct512 packs into
// tl_partial).
thread_local Workspace tl_wflip;

// Not for gx of 1 or 2 channels per group (stems): the flipped forward's output channels are
// then 1-2 rows of a 12- or 8-row register tile, and the im2col tiles are faster (1 thread,
// builds alternated, ms: N=64 1->32 28x28 1.44 -> 0.65, 5x5 3.6 -> 1.4, 2->32 1.44 -> 1.01; at
// 3 channels even, 1.48 / 1.49, at 4 the direct kernel wins, 1.59 vs 1.85).
bool bwd_data_direct_ok(const Conv2dDims& d) {
  return d.C / d.G >= 3 && flips_to_fwd(d) && use_direct512(bwd_data_as_fwd_dims(d));
}

// The same on the AVX2 channel-vector tiles (fwd_chanvec<false>) where AVX-512 is off. Where
// Winograd does not apply it replaces the GEMM paths: N=32 32->64 14x14 5x5 10.8 -> 5.8 ms
// (1 thread, Zen 4 with AVX-512 off, builds alternated); for Winograd's shapes see
// chanvec_before_wino.
bool bwd_data_chanvec_avx2_ok(const Conv2dDims& d) {
  return flips_to_fwd(d) && use_chanvec_avx2(bwd_data_as_fwd_dims(d));
}

const float* flipped_weights(const float* w, const Conv2dDims& d) {
  const Geo q(d);
  float* wf = tl_wflip.get(static_cast<size_t>(d.G * q.KK * q.Og * q.Cg));
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t o = 0; o < q.Og; ++o)
      for (int64_t c = 0; c < q.Cg; ++c)
        for (int64_t t = 0; t < q.KK; ++t)
          wf[((g * q.Cg + c) * q.Og + o) * q.KK + t] =
              w[((g * q.Og + o) * q.Cg + c) * q.KK + (q.KK - 1 - t)];
  return wf;
}

void bwd_data_direct512(const float* gy, const float* w, float* gx, const Conv2dDims& d) {
  fwd_direct512(gy, flipped_weights(w, d), nullptr, gx, bwd_data_as_fwd_dims(d));
}

// The stride-1 3x3 input gradient on the Winograd forward (use_wino of the flipped problem).
bool bwd_data_wino_ok(const Conv2dDims& d) {
  if (!flips_to_fwd(d)) return false;
  const Conv2dDims f = bwd_data_as_fwd_dims(d);
  return wino_ok(f) && !chanvec_before_wino(f);
}

// ---- input gradient at strides > 1: phases of gx, each a stride-1 correlation of gy ------
// gx[c][ih][iw] = sum_{o,i,j} w[o][c][i][j] * gy[o][oh][ow] over oh*sh - ph + i*dh = ih (and
// the same for columns). Split gx by phase (a, b) = (ih % sh, iw % sw): in phase (a, b),
// pixel (u, v) = ((ih - a) / sh, (iw - b) / sw) receives tap i only if sh divides
// a + ph - i*dh, from gy row u + di, di = (a + ph - i*dh) / sh (likewise j, dj): a stride-1
// correlation of gy with the phase's own few taps (2x2, 2x1, 1x2 and 1x1 of a 3x3 kernel at
// stride 2), no zero taps and no scatter-add (im2col + GEMM + col2im before: K = Og of 16-64
// made short GEMMs, and col2im added every element back in). Each phase runs the channel-
// vectorised tile loop (chanvec_run): a pixel list of the phase's gx pixels over a block of
// images, broadcasts from a zero-padded gy slab, weight vectors over gx's channels; the
// [pixels][Cgp] results are then written to their gx pixels.
struct GxPhase {
  int64_t a, b, HU, WV;         // phase, its rows and columns of gx
  std::vector<int64_t> di, dj;  // per tap of the phase: gy row / column shift
  std::vector<int64_t> taps;    // per tap: i*KW + j in w
};

// W512: the AVX-512 tiles (chanvec_run), else the AVX2 ones (chanvec_run256, gx's channels
// padded to 8).
template <bool W512>
void bwd_data_phased(const float* gy, const float* w, float* gx, const Conv2dDims& d) {
  constexpr int64_t L = W512 ? 16 : 8;  // lanes
  const Geo q(d);
  const int64_t Cgp = (q.Cg + L - 1) / L * L;
  std::vector<GxPhase> phases;
  int64_t dmin_h = 0, dmax_h = 0, dmin_w = 0, dmax_w = 0, hu_max = 0, wv_max = 0;
  for (int64_t a = 0; a < d.sh; ++a)
    for (int64_t b = 0; b < d.sw; ++b) {
      GxPhase ph{a, b, (d.H - a + d.sh - 1) / d.sh, (d.W - b + d.sw - 1) / d.sw, {}, {}, {}};
      for (int64_t i = 0; i < d.KH; ++i) {
        const int64_t ti = a + d.ph - i * d.dh;
        if (((ti % d.sh) + d.sh) % d.sh) continue;
        for (int64_t j = 0; j < d.KW; ++j) {
          const int64_t tj = b + d.pw - j * d.dw;
          if (((tj % d.sw) + d.sw) % d.sw) continue;
          ph.di.push_back(ti / d.sh);
          ph.dj.push_back(tj / d.sw);
          ph.taps.push_back(i * d.KW + j);
          dmin_h = std::min(dmin_h, ti / d.sh), dmax_h = std::max(dmax_h, ti / d.sh);
          dmin_w = std::min(dmin_w, tj / d.sw), dmax_w = std::max(dmax_w, tj / d.sw);
        }
      }
      hu_max = std::max(hu_max, ph.HU), wv_max = std::max(wv_max, ph.WV);
      phases.push_back(std::move(ph));
    }
  // gy slab of one image: Og planes of SR x Wp, gy at row PT and column PL, zeros around,
  // covering every row u + di and column v + dj a phase reads.
  const int64_t PT = -dmin_h, PL = -dmin_w;
  const int64_t SR = std::max(hu_max + dmax_h, d.OH) + PT;
  const int64_t Wp = std::max(wv_max + dmax_w, d.OW) + PL;
  const int64_t cs = SR * Wp, frame = q.Og * cs;
  // Phase weights, [G][phase][Og*T][Cgp] (k = o*T + t), zero lanes past Cg.
  std::vector<int64_t> woff(phases.size() + 1, 0);
  for (size_t f = 0; f < phases.size(); ++f)
    woff[f + 1] = woff[f] + q.Og * int64_t(phases[f].taps.size()) * Cgp;
  float* wp = tl_wflip.get(static_cast<size_t>(d.G * woff.back()));
  for (int64_t g = 0; g < d.G; ++g)
    for (size_t f = 0; f < phases.size(); ++f) {
      const std::vector<int64_t>& taps = phases[f].taps;
      const int64_t T = int64_t(taps.size());
      float* wf = wp + g * woff.back() + woff[f];
      for (int64_t o = 0; o < q.Og; ++o)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t c = 0; c < Cgp; ++c)
            wf[(o * T + t) * Cgp + c] =
                c < q.Cg ? w[((g * q.Og + o) * q.Cg + c) * q.KK + taps[size_t(t)]] : 0.0f;
    }
  // Weight rows of a phase are consecutive: row k at k*Cgp (every phase uses a prefix).
  std::vector<int64_t> wrow(static_cast<size_t>(q.Og * q.KK));
  for (size_t k = 0; k < wrow.size(); ++k) wrow[k] = int64_t(k) * Cgp;
  // Images per task: about 192 gx pixels per phase.
  const int64_t IB = std::clamp<int64_t>(192 / std::max<int64_t>(hu_max * wv_max, 1), 1, d.N);
  const int64_t nib = (d.N + IB - 1) / IB;
  cpu::ClaimPool::instance().run(nthreads_for(conv_flops(d)), nib * d.G, [&](int64_t p) {
    const int64_t n0 = (p / d.G) * IB, g = p % d.G, ni = std::min(IB, d.N - n0);
    const int64_t Pmax = ni * hu_max * wv_max;
    float* ws = tl_col.get(static_cast<size_t>(ni * frame + Pmax * Cgp));
    float* out = ws + ni * frame;  // [pixels][Cgp]
    for (int64_t m = 0; m < ni; ++m)
      for (int64_t o = 0; o < q.Og; ++o)
        pad_plane_rows(gy + ((n0 + m) * d.O + g * q.Og + o) * q.OHW, d.OH, d.OW, PT, PL, SR, Wp,
                       ws + m * frame + o * cs);
    std::vector<int64_t>& pix = tl_pix;
    std::vector<int64_t>& orow = tl_orow;
    std::vector<int64_t>& koff = tl_koff;
    for (size_t f = 0; f < phases.size(); ++f) {
      const GxPhase& ph = phases[f];
      const int64_t T = int64_t(ph.taps.size()), P = ni * ph.HU * ph.WV;
      float* gxg = gx + (n0 * d.C + g * q.Cg) * q.HW + ph.a * d.W + ph.b;
      if (P == 0) continue;
      if (T == 0) {  // no tap reaches this phase (stride > kernel extent): zeros
        for (int64_t m = 0; m < ni; ++m)
          for (int64_t c = 0; c < q.Cg; ++c)
            for (int64_t u = 0; u < ph.HU; ++u)
              for (int64_t v = 0; v < ph.WV; ++v)
                gxg[(m * d.C + c) * q.HW + u * d.sh * d.W + v * d.sw] = 0.0f;
        continue;
      }
      koff.resize(static_cast<size_t>(q.Og * T));
      for (int64_t o = 0; o < q.Og; ++o)
        for (int64_t t = 0; t < T; ++t)
          koff[size_t(o * T + t)] = o * cs + (ph.di[size_t(t)] + PT) * Wp + ph.dj[size_t(t)] + PL;
      pix.resize(static_cast<size_t>(P));
      for (int64_t m = 0, k = 0; m < ni; ++m)
        for (int64_t u = 0; u < ph.HU; ++u)
          for (int64_t v = 0; v < ph.WV; ++v) pix[size_t(k++)] = m * frame + u * Wp + v;
      orow.resize(static_cast<size_t>(P));  // results in pixel order
      for (int64_t k = 0; k < P; ++k) orow[size_t(k)] = k;
      const float* wf = wp + g * woff.back() + woff[f];
      if constexpr (W512)
        chanvec_run(q.Og * T, wf, wrow.data(), Cgp, ws, pix.data(), P, koff.data(), out,
                    orow.data());
      else
        chanvec_run256(q.Og * T, wf, wrow.data(), Cgp, ws, pix.data(), P, koff.data(), out,
                       orow.data());
      // [pixels][Cgp] -> gx[n][g*Cg + c][u*sh + a][v*sw + b].
      for (int64_t m = 0; m < ni; ++m)
        for (int64_t c = 0; c < q.Cg; ++c) {
          const float* src = out + m * ph.HU * ph.WV * Cgp + c;
          float* dst = gxg + (m * d.C + c) * q.HW;
          for (int64_t u = 0; u < ph.HU; ++u)
            for (int64_t v = 0; v < ph.WV; ++v)
              dst[u * d.sh * d.W + v * d.sw] = src[(u * ph.WV + v) * Cgp];
        }
    }
  });
}

// Against im2col + GEMM + col2im (1 thread, best of 2 alternated runs, ms): N=128 16->32 28x28
// 3x3 stride 2 9.6 -> 5.6, 32->64 14x14 7.5 -> 3.8, N=16 64->128 32x32 9.2 -> 7.3, N=32
// 64->64 28x28 11.2 -> 6.7, N=128 8->16 28x28 4.1 -> 2.9; but 3->16 0.95 -> 1.45 (gx of 3
// channels fills 3 of 16 lanes), hence 8 channels per group and up. A task holds one image's
// padded gy and one phase's results at least: bounded by kColCap like the other tiles (larger
// maps take the im2col tiles).
bool phased_fits(const Conv2dDims& d, int64_t L) {
  const int64_t Cgp = (d.C / d.G + L - 1) / L * L;
  const int64_t gy_img = d.O / d.G * (d.OH + d.KH * d.dh) * (d.OW + d.KW * d.dw);
  const int64_t phase = (d.H + d.sh - 1) / d.sh * ((d.W + d.sw - 1) / d.sw) * Cgp;
  return d.sh * d.sw > 1 && d.KH * d.KW > 1 && gy_img + phase <= kColCap;
}

bool use_bwd_data_phased(const Conv2dDims& d) {
  return cpu::avx512_selected() && d.C / d.G >= 8 && phased_fits(d, 16);
}

// The AVX2 twin (bwd_data_phased<false>) where AVX-512 is off. Against the im2col paths, 1
// thread, Zen 4 with AVX-512 off, builds alternated, ms: N=128 16->32 28x28 3x3 stride 2 5.5
// -> 3.7, 8->16 2.0 -> 1.6; N=64 32->64 28x28 7.6 -> 5.9; N=32 64->64 28x28 7.5 -> 6.1, 16->32
// 5x5 3.4 -> 1.9; N=16 64->128 32x32 7.6 -> 7.4. At 4 channels it lost (N=128 4->16 1.0 vs
// 1.4), as on AVX-512.
bool use_bwd_data_phased_avx2(const Conv2dDims& d) {
  return cpu::avx2_selected() && !cpu::avx512_selected() && d.C / d.G >= 8 &&
         phased_fits(d, 8);
}

void bwd_data_fast(const float* gy, const float* w, float* gx, const Conv2dDims& d) {
  if (bwd_data_wino_ok(d) &&
      fwd_wino(gy, flipped_weights(w, d), nullptr, gx, bwd_data_as_fwd_dims(d)))
    return;
  if (use_bwd_data_phased(d)) {
    bwd_data_phased<true>(gy, w, gx, d);
    return;
  }
  if (use_bwd_data_phased_avx2(d)) {
    bwd_data_phased<false>(gy, w, gx, d);
    return;
  }
  if (bwd_data_direct_ok(d)) {
    bwd_data_direct512(gy, w, gx, d);
    return;
  }
  if (bwd_data_chanvec_avx2_ok(d)) {
    fwd_chanvec<false>(gy, flipped_weights(w, d), nullptr, gx, bwd_data_as_fwd_dims(d));
    return;
  }
  // Measured (1 thread): shifted 30 / 6.7 / 12 ms vs im2col 33 / 8 / 14.5 ms on 64->64 32x32,
  // 32->64 14x14, 128->128 16x16, but 24.5 vs 21 ms on 64->64 56x56 (each of the 9 GEMMs
  // re-packs the whole gy tile): shifted only for maps up to 32x32.
  if (bwd_data_as_fwd_ok(d)) {
    bwd_data_as_fwd(gy, w, gx, d);
    return;
  }
  if (use_shifted(d) && d.OH * d.OW <= 1024) {
    bwd_data_shifted(gy, w, gx, d);
    return;
  }
  const Geo q(d);
  const bool direct = is_pointwise(d);
  const int nth = nthreads_for(conv_flops(d));
  // Channel blocks: enough pieces for the threads even at batch 1.
  const int64_t units = d.N * d.G;
  const int64_t cb = direct ? 1 : std::min<int64_t>(q.Cg, units >= 2 * nth ? 1 : (2 * nth + units - 1) / units);
  const int64_t cc_max = (q.Cg + cb - 1) / cb;
  const TilePlan plan = plan_tiles(d.OH, d.OW, direct ? q.Cg : cc_max * q.KK);
  const int64_t nt = plan.count();
  // Pointwise: tiles are independent pieces too (each writes its own gx columns).
  const int64_t tp = direct ? nt : 1;
  const int64_t pieces = units * cb * tp;
  // W^T per group, [G][K][Og], made once per call: the GEMM's A is W_g^T, and packing it from
  // W itself reads it transposed (a strided scalar loop per tile); from W^T it is the
  // vectorised row-major packing.
  float* wt = tl_partial.get(static_cast<size_t>(d.G * q.K * q.Og));
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t o = 0; o < q.Og; ++o)
      for (int64_t m = 0; m < q.K; ++m)
        wt[(g * q.K + m) * q.Og + o] = w[(g * q.Og + o) * q.K + m];
  cpu::ClaimPool::instance().run(nth, pieces, [&](int64_t p) {
    const int64_t t_piece = p % tp, u = p / tp;
    const int64_t blk = u % cb, ng = u / cb, n = ng / d.G, g = ng % d.G;
    const int64_t c0 = blk * cc_max, cc = std::min(cc_max, q.Cg - c0);
    if (cc <= 0) return;
    const float* wg = wt + (g * q.K + c0 * q.KK) * q.Og;  // a(m, k) = W^T[c0*KK + m][k]
    float* gxg = gx + (n * d.C + g * q.Cg) * q.HW;
    const float* gyg = gy + (n * d.O + g * q.Og) * q.OHW;
    if (direct) {
      // Through a contiguous tile, then copied into gx: 13.5 vs 18 ms writing gx in place for
      // N=8 256->64 56x56 (1 thread), as for the forward's output tile.
      const Tile tl = plan.at(t_piece, d.OH, d.OW);
      float* ct = tl_col.get(static_cast<size_t>(cc * tl.T));
      gemm_serial(wg, q.Og, 1, gyg + tl.off, q.OHW, 1, ct, tl.T, cc, tl.T, q.Og, 1.0f, 0.0f);
      for (int64_t c = 0; c < cc; ++c)
        copy_floats(gxg + (c0 + c) * q.HW + tl.off, ct + c * tl.T, tl.T);
      return;
    }
    std::memset(gxg + c0 * q.HW, 0, sizeof(float) * cc * q.HW);
    for (int64_t t = 0; t < nt; ++t) {
      const Tile tl = plan.at(t, d.OH, d.OW);
      float* col = tl_col.get(static_cast<size_t>(cc * q.KK * tl.T));
      gemm_serial(wg, q.Og, 1, gyg + tl.off, q.OHW, 1, col, tl.T, cc * q.KK, tl.T, q.Og, 1.0f,
                  0.0f);
      col2im_tile(col, d, c0, cc, tl, gxg);
    }
  });
}

// Units [0, units) split into at most nth contiguous pieces, one per thread; each piece
// accumulates fn(u, acc) into its own zeroed accumulator of asize floats (tl_partial), and the
// pieces' sums are added in piece order, so the result does not depend on which thread ran
// which piece. Returns the sum (asize floats).
template <typename Fn>
float* sum_over_pieces(int nth, int64_t units, int64_t asize, Fn&& fn) {
  const int64_t pieces = std::min<int64_t>(nth, units);
  float* accs = tl_partial.get(static_cast<size_t>(pieces * asize));
  cpu::ClaimPool::instance().run(nth, pieces, [&](int64_t p) {
    float* acc = accs + p * asize;
    zero_floats(acc, asize);
    int64_t u0, u1;
    cpu::split_range(units, 1, static_cast<int>(p), static_cast<int>(pieces), &u0, &u1);
    for (int64_t u = u0; u < u1; ++u) fn(u, acc);
  });
  for (int64_t p = 1; p < pieces; ++p) add_row(accs, accs + p * asize, asize);
  return accs;
}

// Weight gradient with the shifted GEMMs of fwd_shifted: per tap, gW_tap[Og, Cg] += gy_wide
// [Og, rows*Wp] @ slab_view^T, accumulated tap-major per piece, then reduced and transposed
// into gw's [O, Cg, KH, KW] layout.
void bwd_weight_shifted(const float* gy, const float* x, float* gw, const Conv2dDims& d) {
  const Geo q(d);
  const int64_t Wp = d.OW + (d.KW - 1) * d.dw, eh = (d.KH - 1) * d.dh;
  const int64_t R = shifted_rows(d, Wp, eh), nt = (d.OH + R - 1) / R;
  const int64_t units = d.N * d.G * nt;
  const int64_t asize = d.G * q.KK * q.Og * q.Cg;
  const float* accs = sum_over_pieces(nthreads_for(conv_flops(d)), units, asize,
                                      [&](int64_t u, float* acc) {
    const int64_t n = u / (d.G * nt), g = (u / nt) % d.G, t = u % nt;
    const int64_t oh0 = t * R, rows = std::min(R, d.OH - oh0), Tw = rows * Wp;
    const int64_t sr = rows + eh, cs = (sr * Wp + (d.KW - 1) * d.dw + 15) / 16 * 16;
    float* ws = tl_col.get(static_cast<size_t>(q.Cg * cs + q.Og * Tw));
    build_slab(x + (n * d.C + g * q.Cg) * q.HW, d, q.Cg, oh0, sr, Wp, cs, ws);
    float* gyw = ws + q.Cg * cs;
    widen_rows(gy + (n * d.O + g * q.Og) * q.OHW, q.OHW, d.OW, oh0, rows, q.Og, Wp, gyw);
    // One GEMM for all taps: gW[Og, KK*Cg] += gy_wide @ B, column tap*Cg + c of B being
    // channel c of the slab shifted by the tap (packed straight from the slab; gy_wide is
    // packed once, not once per tap).
    std::vector<const float*>& bp = tl_brow;
    bp.resize(static_cast<size_t>(q.K));
    for (int64_t i = 0; i < d.KH; ++i)
      for (int64_t j = 0; j < d.KW; ++j) {
        const float* base = ws + i * d.dh * Wp + j * d.dw;
        const int64_t tap = i * d.KW + j;
        for (int64_t c = 0; c < q.Cg; ++c) bp[tap * q.Cg + c] = base + c * cs;
      }
    gemm_serial_colptr(gyw, Tw, bp.data(), acc + g * q.Og * q.K, q.K, q.Og, q.K, Tw, 1.0f,
                       1.0f);
  });
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t o = 0; o < q.Og; ++o)
      for (int64_t tap = 0; tap < q.KK; ++tap)
        for (int64_t c = 0; c < q.Cg; ++c)
          gw[((g * q.Og + o) * q.Cg + c) * q.KK + tap] = accs[((g * q.Og + o) * q.KK + tap) * q.Cg + c];
}

// AVX-512 weight gradient for up to 8 input channels per group (stems; bwd_weight_chanvec
// below takes more), maps whose padded image (Cg + Og channels) fits kColCap, and for what
// the channels-last slab does not fit: the images of a piece are stacked into one tall slab,
// each image's padded frame of sr = OH + eh rows after the previous one, and gy is widened
// into the same layout with zero rows where the stack's wide output rows are not an image's
// output row (the last eh rows of each frame) and zero columns past OW. Then
// gW[o][c][tap] += sum_n gy_stack[o][n] * slab[c][n + off(tap)] over the ~kStackCols wide
// pixels of the stack, by wgrad_tile512 (no GEMM and no packing: with M = Og of 16-64 the
// packed operands of the GEMM forms were each used by only 16-64 FMAs, and per-image GEMMs
// on 7x7-28x28 maps re-read the gW tile per image). Best of 3 alternated runs, 1 thread,
// against the per-image shifted GEMM / im2col paths: N=128 16->16 28x28 16.1 -> 6.5 ms,
// 32->32 14x14 6.5 -> 6.0, 32->64 14x14 12.0 -> 11.2; with 64 or more channels the GEMM
// forms were faster (64->64 7x7 7.0 vs 7.9 ms, 128->128 16x16 12.0 vs 14.9 ms). These were
// measured before bwd_weight_chanvec, which is now faster from 9 input channels on; on the
// stems this kernel still wins over it (N=128 1->16 28x28 1.3 ms, 3->16 2.4 vs 4.6 ms,
// 8->16 4.4 vs 4.9 ms).
constexpr int64_t kStackCols = 4096;

bool use_wgrad_stacked(const Conv2dDims& d) {
  const DirectGeo dg(d);
  const int64_t frame = (d.OH + dg.ea) * dg.Wp;
  return cpu::avx512_selected() && d.C / d.G < 64 && d.KH * d.KW > 1 && d.KH * d.KW <= 9 &&
         (d.C / d.G * dg.planes + d.O / d.G) * (frame + dg.Wp) <= kColCap;
}

// The stacked weight gradient's kernel: for R output channels and the T = KH*KW taps of one
// input channel, R*T vector accumulators run along the stacked pixels, each step loading R
// rows of gy and T shifted slab vectors straight from memory; the 16 lanes are summed once
// at the end. R = 3, T = 9 is 27 accumulators + 3 gy vectors.
template <int R, int T>
EMBER_AVX512 void wgrad_tile512(const float* gyw, int64_t ldg, const float* sl,
                                const int64_t* toff, const __mmask16* valid, int64_t L,
                                float* out, int64_t ldo) {
  __m512 acc[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 9
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t n = 0; n < L; n += 16) {
    // Only the lanes of real output pixels accumulate: the others have gy = 0, but their
    // shifted slab values may be an inf of the input that no real output reads (0 * inf).
    const __mmask16 k = valid[n / 16];
    __m512 gv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) gv[r] = _mm512_loadu_ps(gyw + r * ldg + n);
#pragma GCC unroll 9
    for (int t = 0; t < T; ++t) {
      __m512 sv = _mm512_loadu_ps(sl + toff[t] + n);
      // Keep the shifted vector in a register: without this GCC folds the load into each of
      // the R FMAs (27 split-line loads per step instead of 9), 59 -> 94 GFLOP/s alone.
      __asm__("" : "+v"(sv));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_mask3_fmadd_ps(gv[r], sv, acc[r][t], k);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 9
    for (int t = 0; t < T; ++t) out[r * ldo + t] += _mm512_reduce_add_ps(acc[r][t]);
}

template <int T>
EMBER_AVX512 void wgrad_rows512(int64_t R, const float* gyw, int64_t ldg, const float* sl,
                                const int64_t* toff, const __mmask16* valid, int64_t L,
                                float* out, int64_t ldo) {
  if (R == 3)
    wgrad_tile512<3, T>(gyw, ldg, sl, toff, valid, L, out, ldo);
  else if (R == 2)
    wgrad_tile512<2, T>(gyw, ldg, sl, toff, valid, L, out, ldo);
  else
    wgrad_tile512<1, T>(gyw, ldg, sl, toff, valid, L, out, ldo);
}

// acc[o][c][tap] (gw's layout, one group) += sum over the stack; L a multiple of 16. Channel c
// of the stack at ws + c*ccs, tap t at toff[t] from there.
void wgrad_direct512(const float* gyw, const float* ws, int64_t ccs, const int64_t* toff,
                     const Conv2dDims& d, const __mmask16* valid, int64_t L, float* acc) {
  const Geo q(d);
  // Blocks of 3 output channels; a remainder of 4 as 2 + 2 (a 1-row block does 9 FMAs per
  // 10 loads, as slow as a 3-row one).
  for (int64_t o0 = 0, R; o0 < q.Og; o0 += R) {
    const int64_t rem = q.Og - o0;
    R = rem == 4 || rem == 2 ? 2 : std::min<int64_t>(3, rem);
    for (int64_t c = 0; c < q.Cg; ++c) {
      const float* g0 = gyw + o0 * L;
      const float* sl = ws + c * ccs;
      float* out = acc + (o0 * q.Cg + c) * q.KK;
      const int64_t ldo = q.Cg * q.KK;
      switch (q.KK) {
        case 9: wgrad_rows512<9>(R, g0, L, sl, toff, valid, L, out, ldo); break;
        case 8: wgrad_rows512<8>(R, g0, L, sl, toff, valid, L, out, ldo); break;
        case 7: wgrad_rows512<7>(R, g0, L, sl, toff, valid, L, out, ldo); break;
        case 6: wgrad_rows512<6>(R, g0, L, sl, toff, valid, L, out, ldo); break;
        case 5: wgrad_rows512<5>(R, g0, L, sl, toff, valid, L, out, ldo); break;
        case 4: wgrad_rows512<4>(R, g0, L, sl, toff, valid, L, out, ldo); break;
        case 3: wgrad_rows512<3>(R, g0, L, sl, toff, valid, L, out, ldo); break;
        default: wgrad_rows512<2>(R, g0, L, sl, toff, valid, L, out, ldo); break;
      }
    }
  }
}

void bwd_weight_stacked(const float* gy, const float* x, float* gw, const Conv2dDims& d) {
  const Geo q(d);
  const DirectGeo dg(d);  // strides: phase planes, as in the direct forward
  const int64_t Wp = dg.Wp, ea = dg.ea, sr = d.OH + ea, planes = dg.planes;
  const int64_t frame = sr * Wp;  // wide pixels per image
  const int nth = nthreads_for(conv_flops(d));
  // Images per stack: ~kStackCols wide pixels, within kColCap, and at least one stack per
  // thread.
  const int64_t chans = q.Cg * planes + q.Og;
  const int64_t fit = std::max<int64_t>(1, (kColCap - chans * Wp) / (chans * frame));
  const int64_t per_thread = (d.N + nth - 1) / nth;
  const int64_t ni = std::clamp<int64_t>(kStackCols / frame, 1, std::min(fit, per_thread));
  const int64_t units = ((d.N + ni - 1) / ni) * d.G;  // (image group, group)
  const int64_t asize = d.G * q.KK * q.Og * q.Cg;
  const float* accs = sum_over_pieces(nth, units, asize, [&](int64_t u, float* acc) {
    const int64_t n0 = (u / d.G) * ni, g = u % d.G, nn = std::min(ni, d.N - n0);
    // L: the stack's wide pixels, rounded up to whole vectors for the direct kernel (gy
    // is zero past nn frames).
    const int64_t L = (nn * frame + 15) / 16 * 16;
    // Per plane: the nn frames, then zeros for the shifted reads past the last one.
    const int64_t cs = (L + ea * Wp + Wp - d.OW + 15) / 16 * 16;
    float* ws = tl_col.get(static_cast<size_t>(q.Cg * planes * cs + q.Og * L));
    float* gyw = ws + q.Cg * planes * cs;
    for (int64_t m = 0; m < nn; ++m) {
      const float* xg = x + ((n0 + m) * d.C + g * q.Cg) * q.HW;
      if (planes == 1) {
        for (int64_t c = 0; c < q.Cg; ++c)
          pad_plane_rows(xg + c * q.HW, d.H, d.W, d.ph, d.pw, sr, Wp, ws + c * cs + m * frame);
      } else {
        build_phase_slab(xg, d, q.Cg, 0, sr, Wp, cs, ws + m * frame, /*zero_tail=*/false);
      }
    }
    for (int64_t pl = 0; pl < q.Cg * planes; ++pl)
      zero_floats(ws + pl * cs + nn * frame, cs - nn * frame);
    for (int64_t o = 0; o < q.Og; ++o) {
      for (int64_t m = 0; m < nn; ++m) {
        float* dst = gyw + o * L + m * frame;
        widen_rows(gy + ((n0 + m) * d.O + g * q.Og + o) * q.OHW, q.OHW, d.OW, 0, d.OH, 1, Wp,
                   dst);
        zero_floats(dst + d.OH * Wp, ea * Wp);
      }
      zero_floats(gyw + o * L + nn * frame, L - nn * frame);
    }
    int64_t toff[9];  // tap offsets from channel c's first plane
    for (int64_t i = 0; i < d.KH; ++i)
      for (int64_t j = 0; j < d.KW; ++j) toff[i * d.KW + j] = dg.koff(d, 0, i, j, cs);
    std::vector<__mmask16>& valid = tl_masks;
    valid.resize(static_cast<size_t>(L / 16));
    // Position v*16 + l is column col of row row of frame fr (stepped, no division: 64-bit
    // divisions per position cost more than the kernel on a 1-channel stem).
    for (int64_t v = 0, fr = 0, row = 0, col = 0; v < L / 16; ++v) {
      unsigned m = 0;
      for (int64_t l = 0; l < 16; ++l) {
        if (fr < nn && row < d.OH && col < d.OW) m |= 1u << l;
        if (++col == Wp) {
          col = 0;
          if (++row == sr) row = 0, ++fr;
        }
      }
      valid[size_t(v)] = __mmask16(m);
    }
    wgrad_direct512(gyw, ws, planes * cs, toff, d, valid.data(), L, acc + g * q.Og * q.K);
  });
  if (accs) copy_floats(gw, accs, asize);
}

// ---- weight gradient vectorised over input channels ---------------------------------------
// gW[o][c][tap] = sum over the real output pixels p of gy[o][p] * x_slab[c][p + off(tap)].
// The stacked kernel above runs its vectors along the pixels (unaligned shifted loads, a lane
// sum per accumulator, zero-masked padding columns); here the input is first transposed into
// a channels-last slab S[pixel][Cgp] (Cgp = Cg rounded up to 16, zero lanes and zero padding
// pixels), so that one tap of one pixel is one aligned vector of 16 input channels. A register
// tile is R output channels x TT taps x NV channel vectors: per output pixel R broadcasts of
// gy (straight from gy's NCHW rows, no copy) and TT*NV slab vectors feed R*TT*NV FMAs, and the
// accumulators run over all the pixels of a block of images before they are added to a
// tap-major [Og][KK][Cgp] sum. Only real output pixels are visited, so an inf in the input
// that no output reads stays out of the sums, as in the reference.

// The positions of a channels-last slab (build_cl_slab) that lie outside the image: zeros.
void zero_cl_outside(const Conv2dDims& d, int64_t Cgp, int64_t sr, int64_t Wp, float* S) {
  const int64_t frame = sr * Wp;
  for (int64_t pr = 0; pr < d.sh; ++pr)
    for (int64_t pc = 0; pc < d.sw; ++pc) {
      float* P = S + (pr * d.sw + pc) * frame * Cgp;
      int64_t s_lo, s_hi;
      plane_cols(d, pc, Wp, &s_lo, &s_hi);
      for (int64_t r = 0; r < sr; ++r) {
        const int64_t ih = r * d.sh + pr - d.ph;
        const bool in = ih >= 0 && ih < d.H;
        for (int64_t s = 0; s < Wp; ++s)
          if (!in || s < s_lo || s >= s_hi)
            std::memset(P + (r * Wp + s) * Cgp, 0, sizeof(float) * Cgp);
      }
    }
}

// One image's channels-last slab: plane (pr, pc) of the phase split (DirectGeo; one plane at
// stride 1) at S + plane*frame*Cgp, position (r, s) of a plane (r < sr, s < Wp) the Cgp
// floats of padded input pixel (r*sh + pr, s*sw + pc). Zeros outside the image and in the
// lanes c >= Cg.
EMBER_AVX512 void build_cl_slab(const float* xg, const Conv2dDims& d, int64_t Cg, int64_t Cgp,
                                int64_t sr, int64_t Wp, float* S) {
  const __m512 z = _mm512_setzero_ps();
  zero_cl_outside(d, Cgp, sr, Wp, S);
  // The image, in blocks of 16 channels x 16 columns of one row, transposed in registers.
  for (int64_t c0 = 0; c0 < Cgp; c0 += 16) {
    const int64_t nc = std::min<int64_t>(16, Cg - c0);
    for (int64_t ih = 0; ih < d.H; ++ih) {
      const int64_t rp = ih + d.ph, pr = rp % d.sh, r = rp / d.sh;
      if (r >= sr) break;
      for (int64_t iw0 = 0; iw0 < d.W; iw0 += 16) {
        const int64_t nw = std::min<int64_t>(16, d.W - iw0);
        const __mmask16 m = __mmask16((1u << nw) - 1);
        __m512 v[16];
        for (int64_t c = 0; c < 16; ++c)
          v[c] = c < nc ? _mm512_maskz_loadu_ps(m, xg + ((c0 + c) * d.H + ih) * d.W + iw0) : z;
        transpose16x16(v);
        // Padded column cp = iw0 + pw + l: plane column pc = cp % sw, position s = cp / sw,
        // stepped without a division per pixel (a 64-bit division cost more than the rest).
        int64_t pc = (iw0 + d.pw) % d.sw, s = (iw0 + d.pw) / d.sw;
        for (int64_t l = 0; l < nw && s < Wp; ++l) {
          _mm512_store_ps(S + (((pr * d.sw + pc) * sr + r) * Wp + s) * Cgp + c0, v[l]);
          if (++pc == d.sw) pc = 0, ++s;
        }
      }
    }
  }
}

// One pass of the kernel: output rows [oh0, oh1) of ni images; image m's gy rows of this
// group at gyb[m], its slab at slab + m*fs (rows of Wp pixels of Cgp floats), tap t at toff[t]
// floats from a pixel's own position.
struct WgradPass {
  const Conv2dDims& d;
  const float* const* gyb;
  const float* slab;
  const int64_t* toff;
  int64_t ni, oh0, oh1, fs, Wp, Cgp;
};

// out[r*ldo + t*Cgp + 16*v] += sum over the pass's output pixels of gy[o0 + r][pixel] *
// S[pixel + toff[t] + 16*v]: R output channels x TT taps x NV vectors of 16 input channels.
template <int R, int TT, int NV>
EMBER_AVX512 void wgrad_cl_tile(const WgradPass& ps, int64_t o0, const int64_t* toff,
                                const float* slab, float* out, int64_t ldo) {
  static_assert(R * TT * NV <= 24);
  const Conv2dDims& d = ps.d;
  const int64_t OHW = d.OH * d.OW, Cgp = ps.Cgp;
  __m512 acc[R][TT][NV];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 6
    for (int t = 0; t < TT; ++t)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][t][v] = _mm512_setzero_ps();
  for (int64_t m = 0; m < ps.ni; ++m) {
    const float* g = ps.gyb[m] + o0 * OHW + ps.oh0 * d.OW;
    for (int64_t oh = ps.oh0; oh < ps.oh1; ++oh) {
      const float* sp = slab + m * ps.fs + oh * ps.Wp * Cgp;
      for (int64_t ow = 0; ow < d.OW; ++ow, ++g, sp += Cgp) {
        __m512 gv[R];
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) gv[r] = _mm512_set1_ps(g[r * OHW]);
#pragma GCC unroll 6
        for (int t = 0; t < TT; ++t)
#pragma GCC unroll 2
          for (int v = 0; v < NV; ++v) {
            __m512 xv = _mm512_load_ps(sp + toff[t] + 16 * v);
            __asm__("" : "+v"(xv));  // one load, not one folded into each of the R FMAs
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) acc[r][t][v] = _mm512_fmadd_ps(gv[r], xv, acc[r][t][v]);
          }
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 6
    for (int t = 0; t < TT; ++t)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        float* o = out + r * ldo + t * Cgp + 16 * v;
        _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), acc[r][t][v]));
      }
}

// wgrad_cl_tile with r (1..4) output channels and tt (1..6 / 1..3) taps chosen at run time.
template <int NV, int R = 4, int TT = 24 / (4 * NV)>
void wgrad_cl_tile_rt(int r, int tt, const WgradPass& ps, int64_t o0, const int64_t* toff,
                      const float* slab, float* out, int64_t ldo) {
  if constexpr (R >= 1 && TT >= 1) {
    if (r == R && tt == TT)
      wgrad_cl_tile<R, TT, NV>(ps, o0, toff, slab, out, ldo);
    else if (tt < TT)
      wgrad_cl_tile_rt<NV, R, TT - 1>(r, tt, ps, o0, toff, slab, out, ldo);
    else
      wgrad_cl_tile_rt<NV, R - 1, 24 / (4 * NV)>(r, tt, ps, o0, toff, slab, out, ldo);
  }
}

// ---- the same on AVX2 (CPUs without AVX-512): 8-channel vectors ----
// build_cl_slab with Cgp a multiple of 8, in blocks of 8 channels x 8 columns.
EMBER_AVX2 void build_cl_slab256(const float* xg, const Conv2dDims& d, int64_t Cg, int64_t Cgp,
                                 int64_t sr, int64_t Wp, float* S) {
  const __m256 z = _mm256_setzero_ps();
  zero_cl_outside(d, Cgp, sr, Wp, S);
  for (int64_t c0 = 0; c0 < Cgp; c0 += 8) {
    const int64_t nc = std::min<int64_t>(8, Cg - c0);
    for (int64_t ih = 0; ih < d.H; ++ih) {
      const int64_t rp = ih + d.ph, pr = rp % d.sh, r = rp / d.sh;
      if (r >= sr) break;
      for (int64_t iw0 = 0; iw0 < d.W; iw0 += 8) {
        const int64_t nw = std::min<int64_t>(8, d.W - iw0);
        const __m256i m = cpu::tail_mask(nw);  // masked loads are cheap (stores are not)
        __m256 v[8];
        for (int64_t c = 0; c < 8; ++c)
          v[c] = c < nc ? _mm256_maskload_ps(xg + ((c0 + c) * d.H + ih) * d.W + iw0, m) : z;
        transpose8x8(v);
        int64_t pc = (iw0 + d.pw) % d.sw, s = (iw0 + d.pw) / d.sw;
        for (int64_t l = 0; l < nw && s < Wp; ++l) {
          _mm256_storeu_ps(S + (((pr * d.sw + pc) * sr + r) * Wp + s) * Cgp + c0, v[l]);
          if (++pc == d.sw) pc = 0, ++s;
        }
      }
    }
  }
}

// wgrad_cl_tile on 8-lane vectors: R output channels x TT taps x NV vectors of 8 input
// channels, R*TT*NV <= 12 accumulators + R broadcasts + 1 slab vector of 16 ymm registers.
// R = 2 (per pixel 2 broadcasts and 6 loads for 12 FMAs) leaves 6 vectors per output channel
// pair: 9 taps as 3 x 3 at 16 channels (NV = 2), 4 + 5 at 8 (NV = 1).
template <int R, int TT, int NV>
EMBER_AVX2 void wgrad_cl_tile256(const WgradPass& ps, int64_t o0, const int64_t* toff,
                                 const float* slab, float* out, int64_t ldo) {
  static_assert(R * TT * NV <= 12 && R * TT * NV + R < 16);
  const Conv2dDims& d = ps.d;
  const int64_t OHW = d.OH * d.OW, Cgp = ps.Cgp;
  __m256 acc[R][TT][NV];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 6
    for (int t = 0; t < TT; ++t)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][t][v] = _mm256_setzero_ps();
  for (int64_t m = 0; m < ps.ni; ++m) {
    const float* g = ps.gyb[m] + o0 * OHW + ps.oh0 * d.OW;
    for (int64_t oh = ps.oh0; oh < ps.oh1; ++oh) {
      const float* sp = slab + m * ps.fs + oh * ps.Wp * Cgp;
      for (int64_t ow = 0; ow < d.OW; ++ow, ++g, sp += Cgp) {
        __m256 gv[R];
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) gv[r] = _mm256_broadcast_ss(g + r * OHW);
#pragma GCC unroll 6
        for (int t = 0; t < TT; ++t)
#pragma GCC unroll 2
          for (int v = 0; v < NV; ++v) {
            __m256 xv = _mm256_loadu_ps(sp + toff[t] + 8 * v);
            __asm__("" : "+x"(xv));  // one load, not one folded into each of the R FMAs
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) acc[r][t][v] = _mm256_fmadd_ps(gv[r], xv, acc[r][t][v]);
          }
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 6
    for (int t = 0; t < TT; ++t)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        float* o = out + r * ldo + t * Cgp + 8 * v;
        _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), acc[r][t][v]));
      }
}

// wgrad_cl_tile256 with r (1..2) output channels and tt (1..6 / 1..3) taps chosen at run time.
template <int NV, int R = 2, int TT = 6 / NV>
void wgrad_cl_tile256_rt(int r, int tt, const WgradPass& ps, int64_t o0, const int64_t* toff,
                         const float* slab, float* out, int64_t ldo) {
  if constexpr (R >= 1 && TT >= 1) {
    if (r == R && tt == TT)
      wgrad_cl_tile256<R, TT, NV>(ps, o0, toff, slab, out, ldo);
    else if (tt < TT)
      wgrad_cl_tile256_rt<NV, R, TT - 1>(r, tt, ps, o0, toff, slab, out, ldo);
    else
      wgrad_cl_tile256_rt<NV, R - 1, 6 / NV>(r, tt, ps, o0, toff, slab, out, ldo);
  }
}

thread_local std::vector<const float*> tl_gyb;

// Against the stacked kernel (< 64 channels) or the shifted GEMM (>= 64), 1 thread, best of 3
// alternated runs, ms: N=128 16->16 28x28 7.8 -> 5.0, 32->32 14x14 7.3 -> 4.3, 64->64 7x7
// 8.4 -> 4.1, 32->64 14x14 stride 2 6.1 -> 2.7, 16->32 28x28 stride 2 5.7 -> 3.7; N=32
// 64->64 32x32 29.6 -> 18.1 (26.3 -> 16.7 in a faster spell of the machine: 145 GFLOP/s,
// ~85% of the FMA peak), N=8 64->64 56x56 21.4 -> 14.0 (bands of ~512 pixels: 18.1 with
// whole images), N=16 128->128 32x32 49.6 -> 39.0, 512->512 7x7 69.5 -> 56.8 (there the
// [Og][KK][Cgp] sums, 9 MB, no longer stay in cache: blocking over output channels would be
// next); 5x5 and 7x7 kernels (32 and 16 channels, GEMM before) 18.1 -> 9.8, 37.1 -> 12.3.
// With 8 input channels or fewer, half the lanes or more are zero and the stacked kernel
// wins (see there); 10 and 12 channels 5.4 -> 4.9 and 5.8 -> 4.8 ms.
bool use_wgrad_chanvec(const Conv2dDims& d) {
  const int64_t Cg = d.C / d.G, Cgp = (Cg + 15) / 16 * 16;
  const DirectGeo dg(d);
  return cpu::avx512_selected() && d.KH * d.KW > 1 && Cg > 8 &&
         Cgp * dg.planes * (d.OH + dg.ea) * dg.Wp <= kColCap;
}

// The AVX2 twin (bwd_weight_chanvec<false>, wgrad_cl_tile256) where AVX-512 is off. Against
// the shifted-GEMM / im2col paths it replaces, 1 thread, Zen 4 with AVX-512 off, builds
// alternated, ms: N=128 16->16 28x28 10.1 -> 5.8, 32->32 14x14 7.2 -> 5.3, 64->64 7x7 7.4 ->
// 4.9, 16->32 28x28 stride 2 5.6 -> 3.6, 8->32 14x14 2.9 -> 1.6, 4->16 28x28 3.9 -> 2.6; N=64
// 32->64 14x14 6.0 -> 4.9; N=32 64->64 32x32 28.1 -> 23.5; N=16 128->128 16x16 13.9 -> 12.6;
// N=8 192->192 14x14 11.4 -> 10.4. It loses where half the lanes or more are zero at 3
// channels or fewer (N=32 3->64 32x32 2.3 vs 3.0; 3->16 still won, 3.3 vs 2.6), and where
// the [Og][KK][Cgp] sums outgrow the L2 (N=8 256->256 14x14, 2.4 MB: 20.7 vs 22.6; 512->512
// 7x7 27.3 vs 31.7), hence the limit of 2^19 floats (2 MiB).
bool use_wgrad_chanvec_avx2(const Conv2dDims& d) {
  const int64_t Cg = d.C / d.G, Cgp = (Cg + 7) / 8 * 8, KK = d.KH * d.KW;
  const DirectGeo dg(d);
  return cpu::avx2_selected() && !cpu::avx512_selected() && KK > 1 && Cg >= 4 &&
         (d.O / d.G) * KK * Cgp <= (int64_t(1) << 19) &&
         Cgp * dg.planes * (d.OH + dg.ea) * dg.Wp <= kColCap;
}

// W512: the AVX-512 tiles (16-channel vectors, 4 output channels per tile), else the AVX2
// ones (8-channel vectors, 2 output channels per tile).
template <bool W512>
void bwd_weight_chanvec(const float* gy, const float* x, float* gw, const Conv2dDims& d) {
  constexpr int64_t L = W512 ? 16 : 8;     // lanes
  constexpr int64_t RM = W512 ? 4 : 2;     // output channels per tile
  constexpr int64_t ACC = W512 ? 24 : 12;  // accumulators per tile
  const Geo q(d);
  const DirectGeo dg(d);
  const int64_t Cgp = (q.Cg + L - 1) / L * L, Wp = dg.Wp, sr = d.OH + dg.ea;
  const int64_t fs = dg.planes * sr * Wp * Cgp;  // floats per image's slab
  const int nth = nthreads_for(conv_flops(d));
  // Images per block: about 512 output pixels (the accumulators' load and store amortised
  // over them), the slabs within kColCap, at least one block per thread.
  const int64_t per_thread = (d.N + nth - 1) / nth;
  const int64_t ni = std::clamp<int64_t>(std::min(512 / q.OHW, kColCap / fs), 1, per_thread);
  const int64_t units = (d.N + ni - 1) / ni * d.G;
  const int64_t asize = d.G * q.Og * q.KK * Cgp;  // [G][Og][KK][Cgp]
  // Larger maps are done in bands of about as many pixels, so that the slab rows a pass
  // reads (band + KH - 1 rows) stay in L1/L2 across the passes over the band.
  const int64_t band = ni > 1 ? d.OH : std::clamp<int64_t>(512 / d.OW, 1, d.OH);
  // Tap-offset table, floats from a pixel's own position in plane 0.
  std::vector<int64_t> toff(static_cast<size_t>(q.KK));
  for (int64_t i = 0; i < d.KH; ++i)
    for (int64_t j = 0; j < d.KW; ++j)
      toff[size_t(i * d.KW + j)] = dg.koff(d, 0, i, j, sr * Wp) * Cgp;
  const int NV = Cgp % (2 * L) == 0 ? 2 : 1;
  const int64_t ttmax = ACC / (RM * NV), ntb = (q.KK + ttmax - 1) / ttmax;
  // Output rows [rlo[tb], rhi[tb]) of tap block tb: the rows where at least one of its taps
  // reads an image row (input row oh*sh - ph + i*dh in [0, H)); at the others every tap reads
  // the zero padding and the block skips them. With 3-tap blocks (one kernel row each) this
  // leaves out the top / bottom output row for the first / last kernel row: 2 of 21 block-rows
  // at 7x7. N=128 weight gradient, 1 thread on the Zen 4 machine, builds alternated 4 times:
  // 64->64 7x7 4.39 -> 3.94 ms, 32->32 14x14 4.88 -> 4.50 ms (16 channels: 4 + 5 tap blocks
  // span kernel rows and skip nothing).
  std::vector<int64_t> rlo(static_cast<size_t>(ntb), d.OH), rhi(static_cast<size_t>(ntb), 0);
  for (int64_t tb = 0; tb < ntb; ++tb)
    for (int64_t t = tb * q.KK / ntb; t < (tb + 1) * q.KK / ntb; ++t)
      for (int64_t oh = 0; oh < d.OH; ++oh) {
        const int64_t ih = oh * d.sh - d.ph + (t / d.KW) * d.dh;
        if (ih < 0 || ih >= d.H) continue;
        rlo[size_t(tb)] = std::min(rlo[size_t(tb)], oh);
        rhi[size_t(tb)] = std::max(rhi[size_t(tb)], oh + 1);
      }
  const float* accs = sum_over_pieces(nth, units, asize, [&](int64_t u, float* acc) {
    const int64_t n0 = (u / d.G) * ni, g = u % d.G, nn = std::min(ni, d.N - n0);
    float* ws = tl_col.get(static_cast<size_t>(nn * fs));
    std::vector<const float*>& gyb = tl_gyb;
    gyb.resize(static_cast<size_t>(nn));
    for (int64_t m = 0; m < nn; ++m) {
      const float* xg = x + ((n0 + m) * d.C + g * q.Cg) * q.HW;
      if constexpr (W512)
        build_cl_slab(xg, d, q.Cg, Cgp, sr, Wp, ws + m * fs);
      else
        build_cl_slab256(xg, d, q.Cg, Cgp, sr, Wp, ws + m * fs);
      gyb[m] = gy + ((n0 + m) * d.O + g * q.Og) * q.OHW;
    }
    float* ag = acc + g * q.Og * q.KK * Cgp;
    for (int64_t oh0 = 0; oh0 < d.OH; oh0 += band) {
      const WgradPass ps{d, gyb.data(), ws, toff.data(), nn, oh0, std::min(d.OH, oh0 + band),
                         fs, Wp, Cgp};
      for (int64_t c0 = 0; c0 < Cgp; c0 += L * NV)
        for (int64_t o0 = 0; o0 < q.Og; o0 += RM) {
          const int r = static_cast<int>(std::min<int64_t>(RM, q.Og - o0));
          for (int64_t tb = 0; tb < ntb; ++tb) {
            // Balanced tap blocks: 9 taps as 4 + 5 (NV = 1) or 3 x 3 (NV = 2).
            const int64_t t0 = tb * q.KK / ntb, t1 = (tb + 1) * q.KK / ntb;
            const int tt = static_cast<int>(t1 - t0);
            float* out = ag + (o0 * q.KK + t0) * Cgp + c0;
            const int64_t* to = toff.data() + t0;
            WgradPass pb = ps;  // this block's rows of the band
            pb.oh0 = std::max(ps.oh0, rlo[size_t(tb)]);
            pb.oh1 = std::min(ps.oh1, rhi[size_t(tb)]);
            if (pb.oh0 >= pb.oh1) continue;
            if constexpr (W512) {
              if (NV == 2)
                wgrad_cl_tile_rt<2>(r, tt, pb, o0, to, ws + c0, out, q.KK * Cgp);
              else
                wgrad_cl_tile_rt<1>(r, tt, pb, o0, to, ws + c0, out, q.KK * Cgp);
            } else {
              if (NV == 2)
                wgrad_cl_tile256_rt<2>(r, tt, pb, o0, to, ws + c0, out, q.KK * Cgp);
              else
                wgrad_cl_tile256_rt<1>(r, tt, pb, o0, to, ws + c0, out, q.KK * Cgp);
            }
          }
        }
    }
  });
  for (int64_t o = 0; o < d.O; ++o)
    for (int64_t c = 0; c < q.Cg; ++c)
      for (int64_t t = 0; t < q.KK; ++t)
        gw[(o * q.Cg + c) * q.KK + t] = accs[(o * q.KK + t) * Cgp + c];
}

// ---- Winograd F(2x2, 3x3) weight gradient (AVX-512) ----------------------------------------
// The adjoint of fwd_wino512: with e the 2x2 block of gy at a tile and d its 4x4 input patch,
// dL/dU = (A e A^T) .* (B^T d B) summed over the tiles, and gW = G^T (dL/dU) G. Per position
// xi of the 4x4 transformed tile the sum is a GEMM over the tiles,
//   dU_xi[o][c] += sum_t E_xi[t][o] * V_xi[t][c],  E = A e A^T, V = B^T d B,
// 2.25x fewer multiplies than the direct sum over taps and pixels. Both transforms read
// channels-last slabs of one image (build_cl_slab: x zero-padded, gy zero-extended to
// 2TH x 2TW) and run on 16 channels per vector, so V and E come out [t][channel], the layout
// of the register tiles (wgrad_wino_tile: R output channels, broadcasts of E, x NV*16 input
// channels, vectors of V, accumulated over a block of tiles).
template <int R, int NV>
EMBER_AVX512 void wgrad_wino_tile(int64_t T, const float* E, int64_t lde, const float* V,
                                  int64_t ldv, float* dU, int64_t ldu) {
  static_assert(R >= 1 && NV >= 1 && R * NV <= 24);
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_loadu_ps(dU + r * ldu + 16 * v);
  for (int64_t t = 0; t < T; ++t) {
    const float* et = E + t * lde;
    const float* vt = V + t * ldv;
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(vt + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(et[r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(a, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(dU + r * ldu + 16 * v, acc[r][v]);
}

// wgrad_wino_tile with r (1..8) rows known at compile time.
template <int NV, int R = 8>
void wgrad_wino_tile_r(int r, int64_t T, const float* E, int64_t lde, const float* V,
                       int64_t ldv, float* dU, int64_t ldu) {
  if constexpr (R >= 1) {
    if constexpr (R * NV <= 24) {
      if (r == R) {
        wgrad_wino_tile<R, NV>(T, E, lde, V, ldv, dU, ldu);
        return;
      }
    }
    wgrad_wino_tile_r<NV, R - 1>(r, T, E, lde, V, ldv, dU, ldu);
  }
}

// V[xi][t][Cgp] (xi stride ldxi) of tile (a, b): B^T d B of the patch at slab (2a, 2b).
EMBER_AVX512 void wino_in_cl(const float* S, int64_t Wp, int64_t Cgp, int64_t a, int64_t b,
                             float* V, int64_t ldxi) {
  for (int64_t c0 = 0; c0 < Cgp; c0 += 16) {
    __m512 p[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j)
        p[i][j] = _mm512_load_ps(S + ((2 * a + i) * Wp + 2 * b + j) * Cgp + c0);
    wino_btdb(p, V + c0, ldxi);
  }
}

// E[xi][t][Ogp] (xi stride ldxi) of tile (a, b): A e A^T of the 2x2 gy block at (2a, 2b),
// A = [[1, 0], [1, 1], [1, -1], [0, -1]].
EMBER_AVX512 void wino_gy_cl(const float* S, int64_t Wg, int64_t Ogp, int64_t a, int64_t b,
                             float* E, int64_t ldxi) {
  const __m512 z = _mm512_setzero_ps();
  for (int64_t o0 = 0; o0 < Ogp; o0 += 16) {
    __m512 e[2][2], r[4][2];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        e[i][j] = _mm512_load_ps(S + ((2 * a + i) * Wg + 2 * b + j) * Ogp + o0);
    for (int j = 0; j < 2; ++j) {
      r[0][j] = e[0][j];
      r[1][j] = _mm512_add_ps(e[0][j], e[1][j]);
      r[2][j] = _mm512_sub_ps(e[0][j], e[1][j]);
      r[3][j] = _mm512_sub_ps(z, e[1][j]);
    }
    for (int i = 0; i < 4; ++i) {
      float* v = E + 4 * i * ldxi + o0;
      _mm512_storeu_ps(v, r[i][0]);
      _mm512_storeu_ps(v + ldxi, _mm512_add_ps(r[i][0], r[i][1]));
      _mm512_storeu_ps(v + 2 * ldxi, _mm512_sub_ps(r[i][0], r[i][1]));
      _mm512_storeu_ps(v + 3 * ldxi, _mm512_sub_ps(z, r[i][1]));
    }
  }
}

// gw[o][c] = G^T dU[o][c] G (G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]])
// from dU[g][xi][o][Cgp], 16 input channels per vector (in scalar double per (o, c) this
// serial step took 3 ms of an N=8 256->256 14x14 weight gradient).
EMBER_AVX512 void wino_wgrad_out(const float* dU, const Conv2dDims& d, int64_t Cgp, float* gw) {
  const int64_t Cg = d.C / d.G, Og = d.O / d.G;
  const __m512 h = _mm512_set1_ps(0.5f);
  alignas(64) float k[9][16];
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t o = 0; o < Og; ++o)
      for (int64_t c0 = 0; c0 < Cg; c0 += 16) {
        __m512 u[4][4], t[3][4];
        for (int xi = 0; xi < 16; ++xi)
          u[xi / 4][xi % 4] = _mm512_loadu_ps(dU + ((g * 16 + xi) * Og + o) * Cgp + c0);
        // G^T u: rows u0 + (u1 + u2)/2, (u1 - u2)/2, (u1 + u2)/2 + u3
        for (int j = 0; j < 4; ++j) {
          const __m512 s = _mm512_mul_ps(_mm512_add_ps(u[1][j], u[2][j]), h);
          t[0][j] = _mm512_add_ps(u[0][j], s);
          t[1][j] = _mm512_mul_ps(_mm512_sub_ps(u[1][j], u[2][j]), h);
          t[2][j] = _mm512_add_ps(s, u[3][j]);
        }
        for (int i = 0; i < 3; ++i) {  // (G^T u) G along the columns, the same combinations
          const __m512 s = _mm512_mul_ps(_mm512_add_ps(t[i][1], t[i][2]), h);
          _mm512_store_ps(k[i * 3], _mm512_add_ps(t[i][0], s));
          _mm512_store_ps(k[i * 3 + 1], _mm512_mul_ps(_mm512_sub_ps(t[i][1], t[i][2]), h));
          _mm512_store_ps(k[i * 3 + 2], _mm512_add_ps(s, t[i][3]));
        }
        const int64_t nc = std::min<int64_t>(16, Cg - c0);
        float* dst = gw + ((g * Og + o) * Cg + c0) * 9;
        for (int64_t c = 0; c < nc; ++c)
          for (int tap = 0; tap < 9; ++tap) dst[c * 9 + tap] = k[tap][c];
      }
}

// ---- the Winograd weight gradient on AVX2 (CPUs without AVX-512) ---------------------------
// The same transforms and sums on 8-lane vectors (channels-last slabs from build_cl_slab256,
// channels padded to 8); the register tiles are R output channels x NV vectors of 8 input
// channels, R*NV <= 12 accumulators.
template <int R, int NV>
EMBER_AVX2 void wgrad_wino_tile256(int64_t T, const float* E, int64_t lde, const float* V,
                                   int64_t ldv, float* dU, int64_t ldu) {
  static_assert(R >= 1 && NV >= 1 && R * NV <= 12);
  __m256 acc[R][NV];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_loadu_ps(dU + r * ldu + 8 * v);
  for (int64_t t = 0; t < T; ++t) {
    const float* et = E + t * lde;
    const float* vt = V + t * ldv;
    __m256 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm256_loadu_ps(vt + 8 * v);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(et + r);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(a, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(dU + r * ldu + 8 * v, acc[r][v]);
}

template <int NV, int R = 12>
void wgrad_wino_tile256_r(int r, int64_t T, const float* E, int64_t lde, const float* V,
                          int64_t ldv, float* dU, int64_t ldu) {
  if constexpr (R >= 1) {
    if constexpr (R * NV <= 12) {
      if (r == R) {
        wgrad_wino_tile256<R, NV>(T, E, lde, V, ldv, dU, ldu);
        return;
      }
    }
    wgrad_wino_tile256_r<NV, R - 1>(r, T, E, lde, V, ldv, dU, ldu);
  }
}

// wino_in_cl on 8 channels per vector.
EMBER_AVX2 void wino_in_cl256(const float* S, int64_t Wp, int64_t Cgp, int64_t a, int64_t b,
                              float* V, int64_t ldxi) {
  for (int64_t c0 = 0; c0 < Cgp; c0 += 8) {
    __m256 p[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j)
        p[i][j] = _mm256_loadu_ps(S + ((2 * a + i) * Wp + 2 * b + j) * Cgp + c0);
    wino_btdb256(p, V + c0, ldxi, 8);
  }
}

// wino_gy_cl on 8 channels per vector.
EMBER_AVX2 void wino_gy_cl256(const float* S, int64_t Wg, int64_t Ogp, int64_t a, int64_t b,
                              float* E, int64_t ldxi) {
  const __m256 z = _mm256_setzero_ps();
  for (int64_t o0 = 0; o0 < Ogp; o0 += 8) {
    __m256 e[2][2], r[4][2];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        e[i][j] = _mm256_loadu_ps(S + ((2 * a + i) * Wg + 2 * b + j) * Ogp + o0);
    for (int j = 0; j < 2; ++j) {
      r[0][j] = e[0][j];
      r[1][j] = _mm256_add_ps(e[0][j], e[1][j]);
      r[2][j] = _mm256_sub_ps(e[0][j], e[1][j]);
      r[3][j] = _mm256_sub_ps(z, e[1][j]);
    }
    for (int i = 0; i < 4; ++i) {
      float* v = E + 4 * i * ldxi + o0;
      _mm256_storeu_ps(v, r[i][0]);
      _mm256_storeu_ps(v + ldxi, _mm256_add_ps(r[i][0], r[i][1]));
      _mm256_storeu_ps(v + 2 * ldxi, _mm256_sub_ps(r[i][0], r[i][1]));
      _mm256_storeu_ps(v + 3 * ldxi, _mm256_sub_ps(z, r[i][1]));
    }
  }
}

// wino_wgrad_out on 8 input channels per vector.
EMBER_AVX2 void wino_wgrad_out256(const float* dU, const Conv2dDims& d, int64_t Cgp,
                                  float* gw) {
  const int64_t Cg = d.C / d.G, Og = d.O / d.G;
  const __m256 h = _mm256_set1_ps(0.5f);
  alignas(32) float k[9][8];
  for (int64_t g = 0; g < d.G; ++g)
    for (int64_t o = 0; o < Og; ++o)
      for (int64_t c0 = 0; c0 < Cg; c0 += 8) {
        __m256 u[4][4], t[3][4];
        for (int xi = 0; xi < 16; ++xi)
          u[xi / 4][xi % 4] = _mm256_loadu_ps(dU + ((g * 16 + xi) * Og + o) * Cgp + c0);
        for (int j = 0; j < 4; ++j) {  // G^T u
          const __m256 s = _mm256_mul_ps(_mm256_add_ps(u[1][j], u[2][j]), h);
          t[0][j] = _mm256_add_ps(u[0][j], s);
          t[1][j] = _mm256_mul_ps(_mm256_sub_ps(u[1][j], u[2][j]), h);
          t[2][j] = _mm256_add_ps(s, u[3][j]);
        }
        for (int i = 0; i < 3; ++i) {  // (G^T u) G
          const __m256 s = _mm256_mul_ps(_mm256_add_ps(t[i][1], t[i][2]), h);
          _mm256_store_ps(k[i * 3], _mm256_add_ps(t[i][0], s));
          _mm256_store_ps(k[i * 3 + 1], _mm256_mul_ps(_mm256_sub_ps(t[i][1], t[i][2]), h));
          _mm256_store_ps(k[i * 3 + 2], _mm256_add_ps(s, t[i][3]));
        }
        const int64_t nc = std::min<int64_t>(8, Cg - c0);
        float* dst = gw + ((g * Og + o) * Cg + c0) * 9;
        for (int64_t c = 0; c < nc; ++c)
          for (int tap = 0; tap < 9; ++tap) dst[c * 9 + tap] = k[tap][c];
      }
}

// Where the weight gradient gains (1 thread, Zen 4, interleaved A/B, ms): N=128 16->16
// 28x28 4.8 -> 4.0, 32->32 14x14 4.5 -> 3.3, N=32 64->64 32x32 21.8 -> 14.8, N=8 64->64 56x56
// 16.8 -> 10.9, N=16 128->128 16x16 10.7 -> 7.1, N=8 256->256 14x14 17.1 -> 12.0. Maps under
// 64 pixels (tiles over 8x8 outputs; from 64 channels in wino_shape) ran even (N=128 64->64
// 7x7 4.06 -> 4.00) until V and E got their per-xi pad (below); with it, builds alternated:
// N=128 64->64 7x7 4.0 -> 3.7, N=32 128->128 7x7 4.0 -> 3.4, 256->256 7x7 16.4 -> 13.3, N=64
// 96->96 7x7 4.5 -> 3.8, N=128 64->64 6x6 2.9 -> 2.3. Not with more than 256 x 256 channels
// per group, where the per-thread dU sums (16 Og Cg floats: 16 MiB at 512 x 512) no longer
// stay in cache (N=8 512->512 7x7 19.9 -> 33.6).
bool use_wino_wgrad(const Conv2dDims& d) {
  return use_wino(d) && (d.C / d.G) * (d.O / d.G) <= 256 * 256;
}

// The AVX2 twin (bwd_weight_wino<false>) against the AVX2 channel-vector weight gradient
// it replaces (1 thread, Zen 4 with AVX-512 off, builds alternated, ms): N=32 64->64 32x32
// 23.2 -> 13.7, N=8 64->64 56x56 18.4 -> 14.5, N=16 128->128 16x16 12.5 -> 7.2, N=8 256->256
// 14x14 20.7 -> 11.6, N=64 32->64 14x14 4.9 -> 4.0, N=32 32->32 28x28 5.0 -> 4.0, N=32
// 16->32 32x32 3.2 -> 2.5, N=32 16->64 32x32 6.1 -> 4.5, N=128 64->64 7x7 4.7 -> 3.9, N=32
// 128->128 8x8 6.1 -> 3.5, N=128 16->16 28x28 6.1 -> 5.8. It lost only with 16 x 16
// channels on large maps (N=32 16->16 56x56 5.5 vs 5.7), which stay on the direct kernel.
bool use_wino_wgrad_avx2(const Conv2dDims& d) {
  const int64_t CO = (d.C / d.G) * (d.O / d.G);
  return use_wino_avx2(d) && CO <= 256 * 256 && (CO > 16 * 16 || d.OH * d.OW <= 1024);
}

// gw for use_wino(d) inputs (W512), or use_wino_wgrad_avx2(d) ones (the AVX2 twins); false
// (gw untouched) when x or gy holds an inf or NaN, which the transforms would spread over
// whole tiles: the caller then takes the direct paths.
template <bool W512>
bool bwd_weight_wino(const float* gy, const float* x, float* gw, const Conv2dDims& d) {
  constexpr int64_t L = W512 ? 16 : 8;  // lanes
  const Geo q(d);
  const int64_t Cgp = (q.Cg + L - 1) / L * L, Ogp = (q.Og + L - 1) / L * L;
  const int64_t TH = (d.OH + 1) / 2, TW = (d.OW + 1) / 2, T = TH * TW;
  const int64_t Wp = 2 * TW + 2, sr = 2 * TH + 2, Wg = 2 * TW;
  // Tiles per block: V and E (16 x (Cgp + Ogp) floats per tile) within kWinoCap (+ pads).
  const int64_t TB = std::min(T, std::max<int64_t>(16, kWinoCap / (16 * (Cgp + Ogp))));
  const int64_t xs = sr * Wp * Cgp, gs = 2 * TH * Wg * Ogp;
  // V and E as [16][TB][Cgp] / [16][TB][Ogp] with one cache line (16 floats) more per xi: at
  // TB * (Cgp + Ogp) = kWinoCap / 16 an xi block of square V and E is 24 KiB, a multiple of
  // 4 KiB, so the 16 rows a tile's transform writes all mapped to one L1 set and evicted each
  // other. 1 thread, Zen 4, AVX-512 path, ms: N=32 32->32 28x28 3.71 -> 3.15, N=32 16->32
  // 32x32 2.92 -> 2.44, N=32 16->16 56x56 5.54 -> 4.09, N=8 64->64 56x56 11.3 -> 10.1, N=32
  // 64->64 32x32 14.5 -> 13.5; on the AVX2 path up to 2x (N=32 16->16 56x56 9.9 -> 5.7).
  const int64_t ldv = TB * Cgp + 16, lde = TB * Ogp + 16;
  const int64_t asize = d.G * 16 * q.Og * Cgp;  // dU[g][xi][o][Cgp]
  // gy's frame as an unpadded "image" for build_cl_slab: OH x OW, extended with zeros.
  Conv2dDims e{};
  e.H = d.OH;
  e.W = d.OW;
  e.sh = e.sw = 1;
  // Register tiles: AVX-512 R x NV up to 8 x 3 / 6 x 4, AVX2 6 x 2 (Cg >= 16 in wino_shape).
  const int NV =
      static_cast<int>(W512 ? std::min<int64_t>(4, Cgp / 16) : std::min<int64_t>(2, Cgp / 8));
  const int64_t R = W512 ? std::min(8, 24 / NV) : 12 / NV;
  std::atomic<bool> bad{false};
  const float* accs =
      sum_over_pieces(nthreads_for(conv_flops(d)), d.N * d.G, asize, [&](int64_t u, float* acc) {
        if (bad.load(std::memory_order_relaxed)) return;
        const int64_t n = u / d.G, g = u % d.G;
        float* ws = tl_col.get(static_cast<size_t>(xs + gs + 16 * (ldv + lde)));
        float *Sx = ws, *Sg = ws + xs, *V = Sg + gs, *E = V + 16 * ldv;
        if constexpr (W512) {
          build_cl_slab(x + (n * d.C + g * q.Cg) * q.HW, d, q.Cg, Cgp, sr, Wp, Sx);
          build_cl_slab(gy + (n * d.O + g * q.Og) * q.OHW, e, q.Og, Ogp, 2 * TH, Wg, Sg);
        } else {
          build_cl_slab256(x + (n * d.C + g * q.Cg) * q.HW, d, q.Cg, Cgp, sr, Wp, Sx);
          build_cl_slab256(gy + (n * d.O + g * q.Og) * q.OHW, e, q.Og, Ogp, 2 * TH, Wg, Sg);
        }
        if (!all_finite(ws, xs + gs)) {
          bad.store(true, std::memory_order_relaxed);
          return;
        }
        float* ag = acc + g * 16 * q.Og * Cgp;
        for (int64_t t0 = 0; t0 < T; t0 += TB) {
          const int64_t nt = std::min(TB, T - t0);
          for (int64_t t = 0; t < nt; ++t) {
            const int64_t a = (t0 + t) / TW, b = (t0 + t) % TW;
            if constexpr (W512) {
              wino_in_cl(Sx, Wp, Cgp, a, b, V + t * Cgp, ldv);
              wino_gy_cl(Sg, Wg, Ogp, a, b, E + t * Ogp, lde);
            } else {
              wino_in_cl256(Sx, Wp, Cgp, a, b, V + t * Cgp, ldv);
              wino_gy_cl256(Sg, Wg, Ogp, a, b, E + t * Ogp, lde);
            }
          }
          for (int xi = 0; xi < 16; ++xi) {
            const float* Ex = E + xi * lde;
            const float* Vx = V + xi * ldv;
            float* dU = ag + xi * q.Og * Cgp;
            for (int64_t c0 = 0; c0 < Cgp; c0 += L * NV) {
              const int nv = static_cast<int>(std::min<int64_t>(NV, (Cgp - c0) / L));
              for (int64_t o0 = 0; o0 < q.Og; o0 += R) {
                const int r = static_cast<int>(std::min(R, q.Og - o0));
                float* out = dU + o0 * Cgp + c0;
                if constexpr (!W512) {
                  if (nv == 2)
                    wgrad_wino_tile256_r<2>(r, nt, Ex + o0, Ogp, Vx + c0, Cgp, out, Cgp);
                  else
                    wgrad_wino_tile256_r<1>(r, nt, Ex + o0, Ogp, Vx + c0, Cgp, out, Cgp);
                } else if (nv == 4)
                  wgrad_wino_tile_r<4>(r, nt, Ex + o0, Ogp, Vx + c0, Cgp, out, Cgp);
                else if (nv == 3)
                  wgrad_wino_tile_r<3>(r, nt, Ex + o0, Ogp, Vx + c0, Cgp, out, Cgp);
                else if (nv == 2)
                  wgrad_wino_tile_r<2>(r, nt, Ex + o0, Ogp, Vx + c0, Cgp, out, Cgp);
                else
                  wgrad_wino_tile_r<1>(r, nt, Ex + o0, Ogp, Vx + c0, Cgp, out, Cgp);
              }
            }
          }
        }
      });
  if (bad.load()) return false;
  if constexpr (W512)
    wino_wgrad_out(accs, d, Cgp, gw);
  else
    wino_wgrad_out256(accs, d, Cgp, gw);
  return true;
}

void bwd_weight_fast(const float* gy, const float* x, float* gw, const Conv2dDims& d) {
  if (use_wino_wgrad(d) && bwd_weight_wino<true>(gy, x, gw, d)) return;
  if (use_wino_wgrad_avx2(d) && bwd_weight_wino<false>(gy, x, gw, d)) return;
  if (use_wgrad_chanvec(d)) {
    bwd_weight_chanvec<true>(gy, x, gw, d);
    return;
  }
  if (use_wgrad_chanvec_avx2(d)) {
    bwd_weight_chanvec<false>(gy, x, gw, d);
    return;
  }
  if (use_wgrad_stacked(d)) {
    bwd_weight_stacked(gy, x, gw, d);
    return;
  }
  // The shifted GEMM multiplies the zero columns of gy_wide by slab values no real output
  // reads, so an inf in x would turn every tap's gradient into NaN (0 * inf); such inputs take
  // the im2col path, which reads only what each output reads.
  if (use_shifted(d) && all_finite(x, d.N * d.C * d.H * d.W)) {
    bwd_weight_shifted(gy, x, gw, d);
    return;
  }
  const Geo q(d);
  const bool direct = is_pointwise(d);
  const TilePlan plan = plan_tiles(d.OH, d.OW, q.K);
  const int64_t nt = plan.count();
  const int64_t units = d.N * d.G * nt;
  const int nth = nthreads_for(conv_flops(d));
  const int64_t pieces = std::min<int64_t>(nth, units);
  const int64_t wsize = d.O * q.K;
  float* scratch = nullptr;
  if (pieces > 1) {
    scratch = tl_partial.get(static_cast<size_t>((pieces - 1) * wsize));
  }
  cpu::ClaimPool::instance().run(nth, pieces, [&](int64_t p) {
    float* acc = p == 0 ? gw : scratch + (p - 1) * wsize;
    std::memset(acc, 0, sizeof(float) * wsize);
    int64_t u0, u1;
    cpu::split_range(units, 1, static_cast<int>(p), static_cast<int>(pieces), &u0, &u1);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t n = u / (d.G * nt), g = (u / nt) % d.G;
      const Tile tl = plan.at(u % nt, d.OH, d.OW);
      const int64_t T = tl.T;
      const float* gyt = gy + (n * d.O + g * q.Og) * q.OHW + tl.off;
      const float* src;
      int64_t sbn;
      if (direct) {
        src = x + (n * d.C + g * q.Cg) * q.HW + tl.off;
        sbn = q.HW;
      } else {
        float* col = tl_col.get(static_cast<size_t>(q.K * T));
        im2col_tile(x + (n * d.C + g * q.Cg) * q.HW, d, q.Cg, tl, col);
        src = col;
        sbn = T;
      }
      // b(t, k) = col[k][t]: the transposed operand.
      gemm_serial(gyt, q.OHW, 1, src, 1, sbn, acc + g * q.Og * q.K, q.K, q.Og, q.K, T, 1.0f,
                  1.0f);
    }
  });
  if (pieces > 1) {
    const int64_t chunks = std::min<int64_t>(nth, (wsize + 4095) / 4096);
    cpu::ClaimPool::instance().run(nth, chunks, [&](int64_t p) {
      int64_t lo, hi;
      cpu::split_range(wsize, 16, static_cast<int>(p), static_cast<int>(chunks), &lo, &hi);
      for (int64_t k = 1; k < pieces; ++k)
        if (lo < hi) add_row(gw + lo, scratch + (k - 1) * wsize + lo, hi - lo);
    });
  }
}

// ---- depthwise, stride 1: direct AVX2 loops -------------------------------------------------------
// P[r][c] = src[r - offh][c - offw] (0 outside [0, SH) x [0, SW)), PH x PW with row stride PW,
// plus 16 zero floats of slack so the 8-wide loads of the last row stay inside and see zeros.
void pad_plane(const float* src, int64_t SH, int64_t SW, int64_t offh, int64_t offw,
               int64_t PH, int64_t PW, float* P) {
  for (int64_t r = 0; r < PH; ++r) {
    float* dst = P + r * PW;
    const int64_t sr = r - offh;
    if (sr < 0 || sr >= SH) {
      std::memset(dst, 0, sizeof(float) * PW);
      continue;
    }
    const int64_t lo = std::clamp<int64_t>(offw, 0, PW), hi = std::clamp<int64_t>(offw + SW, 0, PW);
    if (lo > 0) std::memset(dst, 0, sizeof(float) * lo);
    if (hi > lo) std::memcpy(dst + lo, src + sr * SW + (lo - offw), sizeof(float) * (hi - lo));
    if (hi < PW) std::memset(dst + hi, 0, sizeof(float) * (PW - hi));
  }
  std::memset(P + PH * PW, 0, sizeof(float) * 16);
}

// Up to NCH*8 outputs of one row, all in registers: every tap is one broadcast and NCH
// independent FMAs, so the KH*KW-long FMA chains overlap (one 8-wide chain per tap loop was
// latency-bound: 9 taps x 4 cycles per 8 outputs).
template <int NCH>
EMBER_AVX2 void dw_row(const float* P, int64_t PW, const float* k, __m256 vb, float* yr,
                       int64_t n, int64_t KH, int64_t KW, int64_t dh, int64_t dw) {
  __m256 a[NCH];
#pragma GCC unroll 8
  for (int c = 0; c < NCH; ++c) a[c] = vb;
  for (int64_t i = 0; i < KH; ++i) {
    const float* pr = P + i * dh * PW;
    for (int64_t j = 0; j < KW; ++j) {
      const __m256 wv = _mm256_set1_ps(k[i * KW + j]);
      const float* s = pr + j * dw;
#pragma GCC unroll 8
      for (int c = 0; c < NCH; ++c) a[c] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 8 * c), a[c]);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < NCH; ++c) {
    if (8 * c + 8 <= n)
      _mm256_storeu_ps(yr + 8 * c, a[c]);
    else if (8 * c < n)
      cpu::store_first(yr + 8 * c, a[c], n - 8 * c);
  }
}

// y[oh][ow] = bias + sum_{i,j} k[i*KW + j] * P[oh + i*dh][ow + j*dw] for an OH x OW plane.
EMBER_AVX2 void dw_plane(const float* P, int64_t PW, const float* k, float bias, float* y,
                         int64_t OH, int64_t OW, int64_t KH, int64_t KW, int64_t dh, int64_t dw) {
  const __m256 vb = _mm256_set1_ps(bias);
  for (int64_t oh = 0; oh < OH; ++oh) {
    for (int64_t ow = 0; ow < OW; ow += 64) {
      const int64_t n = std::min<int64_t>(64, OW - ow);
      const float* pr = P + oh * PW + ow;
      float* yr = y + oh * OW + ow;
      switch ((n + 7) / 8) {
        case 1: dw_row<1>(pr, PW, k, vb, yr, n, KH, KW, dh, dw); break;
        case 2: dw_row<2>(pr, PW, k, vb, yr, n, KH, KW, dh, dw); break;
        case 3: dw_row<3>(pr, PW, k, vb, yr, n, KH, KW, dh, dw); break;
        case 4: dw_row<4>(pr, PW, k, vb, yr, n, KH, KW, dh, dw); break;
        case 5: dw_row<5>(pr, PW, k, vb, yr, n, KH, KW, dh, dw); break;
        case 6: dw_row<6>(pr, PW, k, vb, yr, n, KH, KW, dh, dw); break;
        case 7: dw_row<7>(pr, PW, k, vb, yr, n, KH, KW, dh, dw); break;
        default: dw_row<8>(pr, PW, k, vb, yr, n, KH, KW, dh, dw); break;
      }
    }
  }
}

// gk[i*KW + j] += sum_{oh, ow} g[oh][ow] * P[oh + i*dh][ow + j*dw] (accumulated in acc, 8 lanes
// per tap, so the caller reduces once per channel).
EMBER_AVX2 void dw_plane_wgrad(const float* P, int64_t PW, const float* g, int64_t OH,
                               int64_t OW, int64_t KH, int64_t KW, int64_t dh, int64_t dw,
                               __m256* acc) {
  for (int64_t i = 0; i < KH; ++i)
    for (int64_t j = 0; j < KW; ++j) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0;
      for (int64_t oh = 0; oh < OH; ++oh) {
        const float* pr = P + (oh + i * dh) * PW + j * dw;
        const float* gr = g + oh * OW;
        int64_t ow = 0;
        for (; ow + 16 <= OW; ow += 16) {
          a0 = _mm256_fmadd_ps(_mm256_loadu_ps(gr + ow), _mm256_loadu_ps(pr + ow), a0);
          a1 = _mm256_fmadd_ps(_mm256_loadu_ps(gr + ow + 8), _mm256_loadu_ps(pr + ow + 8), a1);
        }
        for (; ow < OW; ow += 8) {
          const __m256i m = tail_mask(std::min<int64_t>(8, OW - ow));
          a0 = _mm256_fmadd_ps(_mm256_maskload_ps(gr + ow, m), _mm256_maskload_ps(pr + ow, m), a0);
        }
      }
      acc[i * KW + j] = _mm256_add_ps(acc[i * KW + j], _mm256_add_ps(a0, a1));
    }
}

// The 3x3 case of dw_plane_wgrad in one pass: g is loaded once per 8 outputs for all 9 taps,
// and the 9 accumulators are 9 independent FMA chains (the tap-by-tap loop above has 2).
EMBER_AVX2 void dw_plane_wgrad3x3(const float* P, int64_t PW, const float* g, int64_t OH,
                                  int64_t OW, int64_t dh, int64_t dw, __m256* acc) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
         a7 = a0, a8 = a0;
  for (int64_t oh = 0; oh < OH; ++oh) {
    const float* p0 = P + oh * PW;
    const float* p1 = p0 + dh * PW;
    const float* p2 = p1 + dh * PW;
    const float* gr = g + oh * OW;
    // Full vectors, then the tail with every load masked (a 0 * inf from the next row would
    // otherwise put a NaN into another tap's sum).
    const int64_t OW8 = OW & ~int64_t{7};
    for (int64_t ow = 0; ow < OW; ow += 8) {
      const __m256i m = tail_mask(ow < OW8 ? 8 : OW - ow);
#define EMBER_LD(ptr) (ow < OW8 ? _mm256_loadu_ps(ptr) : _mm256_maskload_ps(ptr, m))
      const __m256 gv = EMBER_LD(gr + ow);
      a0 = _mm256_fmadd_ps(gv, EMBER_LD(p0 + ow), a0);
      a1 = _mm256_fmadd_ps(gv, EMBER_LD(p0 + ow + dw), a1);
      a2 = _mm256_fmadd_ps(gv, EMBER_LD(p0 + ow + 2 * dw), a2);
      a3 = _mm256_fmadd_ps(gv, EMBER_LD(p1 + ow), a3);
      a4 = _mm256_fmadd_ps(gv, EMBER_LD(p1 + ow + dw), a4);
      a5 = _mm256_fmadd_ps(gv, EMBER_LD(p1 + ow + 2 * dw), a5);
      a6 = _mm256_fmadd_ps(gv, EMBER_LD(p2 + ow), a6);
      a7 = _mm256_fmadd_ps(gv, EMBER_LD(p2 + ow + dw), a7);
      a8 = _mm256_fmadd_ps(gv, EMBER_LD(p2 + ow + 2 * dw), a8);
#undef EMBER_LD
    }
  }
  acc[0] = _mm256_add_ps(acc[0], a0);
  acc[1] = _mm256_add_ps(acc[1], a1);
  acc[2] = _mm256_add_ps(acc[2], a2);
  acc[3] = _mm256_add_ps(acc[3], a3);
  acc[4] = _mm256_add_ps(acc[4], a4);
  acc[5] = _mm256_add_ps(acc[5], a5);
  acc[6] = _mm256_add_ps(acc[6], a6);
  acc[7] = _mm256_add_ps(acc[7], a7);
  acc[8] = _mm256_add_ps(acc[8], a8);
}

EMBER_AVX2 float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

bool is_depthwise_direct(const Conv2dDims& d) {
  return d.G == d.C && d.O == d.C && d.sh == 1 && d.sw == 1 && d.KH * d.KW <= 64;
}

void dw_fwd(const float* x, const float* w, const float* b, float* y, const Conv2dDims& d) {
  const int64_t PH = d.OH + (d.KH - 1) * d.dh, PW = d.OW + (d.KW - 1) * d.dw;
  const int64_t HW = d.H * d.W, OHW = d.OH * d.OW, KK = d.KH * d.KW;
  cpu::ClaimPool::instance().run(nthreads_for(conv_flops(d)), d.N * d.C, [&](int64_t p) {
    const int64_t c = p % d.C;
    float* P = tl_col.get(static_cast<size_t>(PH * PW + 16));
    pad_plane(x + p * HW, d.H, d.W, d.ph, d.pw, PH, PW, P);
    dw_plane(P, PW, w + c * KK, b ? b[c] : 0.0f, y + p * OHW, d.OH, d.OW, d.KH, d.KW, d.dh, d.dw);
  });
}

void dw_bwd_data(const float* gy, const float* w, float* gx, const Conv2dDims& d) {
  const int64_t PH = d.H + (d.KH - 1) * d.dh, PW = d.W + (d.KW - 1) * d.dw;
  const int64_t qh = (d.KH - 1) * d.dh - d.ph, qw = (d.KW - 1) * d.dw - d.pw;
  const int64_t HW = d.H * d.W, OHW = d.OH * d.OW, KK = d.KH * d.KW;
  cpu::ClaimPool::instance().run(nthreads_for(conv_flops(d)), d.N * d.C, [&](int64_t p) {
    const int64_t c = p % d.C;
    float* P = tl_col.get(static_cast<size_t>(PH * PW + 16 + KK));
    float* kf = P + PH * PW + 16;
    for (int64_t t = 0; t < KK; ++t) kf[t] = w[c * KK + KK - 1 - t];  // flipped kernel
    pad_plane(gy + p * OHW, d.OH, d.OW, qh, qw, PH, PW, P);
    dw_plane(P, PW, kf, 0.0f, gx + p * HW, d.H, d.W, d.KH, d.KW, d.dh, d.dw);
  });
}

EMBER_AVX2 void dw_wgrad_channel(const float* gy, const float* x, float* gw, const Conv2dDims& d,
                                 int64_t c, float* P) {
  const int64_t PH = d.OH + (d.KH - 1) * d.dh, PW = d.OW + (d.KW - 1) * d.dw;
  const int64_t HW = d.H * d.W, OHW = d.OH * d.OW, KK = d.KH * d.KW;
  __m256 acc[64];
  for (int64_t t = 0; t < KK; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t n = 0; n < d.N; ++n) {
    pad_plane(x + (n * d.C + c) * HW, d.H, d.W, d.ph, d.pw, PH, PW, P);
    if (d.KH == 3 && d.KW == 3)
      dw_plane_wgrad3x3(P, PW, gy + (n * d.C + c) * OHW, d.OH, d.OW, d.dh, d.dw, acc);
    else
      dw_plane_wgrad(P, PW, gy + (n * d.C + c) * OHW, d.OH, d.OW, d.KH, d.KW, d.dh, d.dw, acc);
  }
  for (int64_t t = 0; t < KK; ++t) gw[c * KK + t] = hsum(acc[t]);
}

void dw_bwd_weight(const float* gy, const float* x, float* gw, const Conv2dDims& d) {
  const int64_t PH = d.OH + (d.KH - 1) * d.dh, PW = d.OW + (d.KW - 1) * d.dw;
  cpu::ClaimPool::instance().run(nthreads_for(conv_flops(d)), d.C, [&](int64_t c) {
    float* P = tl_col.get(static_cast<size_t>(PH * PW + 16));
    dw_wgrad_channel(gy, x, gw, d, c, P);
  });
}

// gb[o] for o in [o0, o1): float vector sums per row, accumulated over images in double.
EMBER_AVX2 void bias_rows_avx2(const float* gy, float* gb, const Conv2dDims& d, int64_t o0,
                               int64_t o1) {
  const int64_t OHW = d.OH * d.OW;
  for (int64_t o = o0; o < o1; ++o) {
    double total = 0.0;
    for (int64_t n = 0; n < d.N; ++n) {
      const float* r = gy + (n * d.O + o) * OHW;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0;
      int64_t s = 0;
      for (; s + 16 <= OHW; s += 16) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(r + s));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(r + s + 8));
      }
      double part = hsum(_mm256_add_ps(a0, a1));
      for (; s < OHW; ++s) part += r[s];
      total += part;
    }
    gb[o] = static_cast<float>(total);
  }
}

void bias_grad_avx2(const float* gy, float* gb, const Conv2dDims& d) {
  const int nth = d.N * d.O * d.OH * d.OW > (1 << 16) ? cpu::get_num_threads() : 1;
  const int64_t pieces = std::min<int64_t>(d.O, nth * 4);
  cpu::ClaimPool::instance().run(nth, pieces, [&](int64_t p) {
    int64_t o0, o1;
    cpu::split_range(d.O, 1, static_cast<int>(p), static_cast<int>(pieces), &o0, &o1);
    bias_rows_avx2(gy, gb, d, o0, o1);
  });
}
#endif  // EMBER_COMPILED_AVX2

bool fast_ok() {
#if EMBER_COMPILED_AVX2
  return gemm_path() > 0;
#else
  return false;
#endif
}

int64_t out_numel(const Conv2dDims& d) { return d.N * d.O * d.OH * d.OW; }

}  // namespace

// ---- entry points ------------------------------------------------------------------------------
template <typename T>
void conv2d_fwd_cpu(const T* x, const T* w, const T* b, T* y, const Conv2dDims& d) {
  const int nth = nthreads_for(conv_flops(d));
  cpu::ClaimPool::instance().run(nth, d.N * d.O, [&](int64_t p) {
    fwd_ref<T>(x, w, b, y, d, p / d.O, p % d.O);
  });
}

template <typename T>
void conv2d_bwd_data_cpu(const T* gy, const T* w, T* gx, const Conv2dDims& d) {
  const int nth = nthreads_for(conv_flops(d));
  cpu::ClaimPool::instance().run(nth, d.N * d.C, [&](int64_t p) {
    bwd_data_ref<T>(gy, w, gx, d, p / d.C, p % d.C);
  });
}

template <typename T>
void conv2d_bwd_weight_cpu(const T* gy, const T* x, T* gw, T* gb, const Conv2dDims& d) {
  const int nth = nthreads_for(conv_flops(d));
  if (gw)
    cpu::ClaimPool::instance().run(nth, d.O, [&](int64_t o) { bwd_weight_ref<T>(gy, x, gw, d, o); });
  if (gb)
    cpu::ClaimPool::instance().run(nth, d.O, [&](int64_t o) { bias_ref<T>(gy, gb, d, o); });
}

template void conv2d_fwd_cpu<float>(const float*, const float*, const float*, float*,
                                    const Conv2dDims&);
template void conv2d_fwd_cpu<double>(const double*, const double*, const double*, double*,
                                     const Conv2dDims&);
template void conv2d_bwd_data_cpu<float>(const float*, const float*, float*, const Conv2dDims&);
template void conv2d_bwd_data_cpu<double>(const double*, const double*, double*,
                                          const Conv2dDims&);
template void conv2d_bwd_weight_cpu<float>(const float*, const float*, float*, float*,
                                           const Conv2dDims&);
template void conv2d_bwd_weight_cpu<double>(const double*, const double*, double*, double*,
                                            const Conv2dDims&);

void conv2d_set_workspace_limit(int64_t bytes) {
  g_ws_limit.store(bytes, std::memory_order_relaxed);
}

void conv2d_fwd(const float* x, const float* w, const float* b, float* y, const Conv2dDims& d) {
  if (out_numel(d) == 0) return;
#if EMBER_COMPILED_AVX2
  if (fast_ok()) {
    const int64_t K = d.C / d.G * d.KH * d.KW;
    if (K == 0) {  // no input channels: the output is the bias
      for (int64_t p = 0; p < d.N * d.O; ++p)
        std::fill(y + p * d.OH * d.OW, y + (p + 1) * d.OH * d.OW, b ? b[p % d.O] : 0.0f);
      return;
    }
    if (is_depthwise_direct(d))
      dw_fwd(x, w, b, y, d);
    else
      fwd_fast(x, w, b, y, d);
    return;
  }
#endif
  conv2d_fwd_cpu<float>(x, w, b, y, d);
}

void conv2d_fwd(const double* x, const double* w, const double* b, double* y,
                const Conv2dDims& d) {
  if (out_numel(d) == 0) return;
  conv2d_fwd_cpu<double>(x, w, b, y, d);
}

void conv2d_bwd_data(const float* gy, const float* w, float* gx, const Conv2dDims& d) {
  if (d.N * d.C * d.H * d.W == 0) return;
#if EMBER_COMPILED_AVX2
  if (fast_ok()) {
    if (out_numel(d) == 0 || d.O == 0) {
      std::memset(gx, 0, sizeof(float) * d.N * d.C * d.H * d.W);
      return;
    }
    if (is_depthwise_direct(d))
      dw_bwd_data(gy, w, gx, d);
    else
      bwd_data_fast(gy, w, gx, d);
    return;
  }
#endif
  conv2d_bwd_data_cpu<float>(gy, w, gx, d);
}

void conv2d_bwd_data(const double* gy, const double* w, double* gx, const Conv2dDims& d) {
  if (d.N * d.C * d.H * d.W == 0) return;
  conv2d_bwd_data_cpu<double>(gy, w, gx, d);
}

void conv2d_bwd_weight(const float* gy, const float* x, float* gw, float* gb,
                       const Conv2dDims& d) {
#if EMBER_COMPILED_AVX2
  if (fast_ok()) {
    const int64_t wsize = d.O * (d.C / d.G) * d.KH * d.KW;
    if (gw && wsize > 0) {
      if (out_numel(d) == 0)
        std::memset(gw, 0, sizeof(float) * wsize);
      else if (is_depthwise_direct(d))
        dw_bwd_weight(gy, x, gw, d);
      else
        bwd_weight_fast(gy, x, gw, d);
    }
    if (gb && d.O > 0) {
      if (out_numel(d) == 0)
        std::memset(gb, 0, sizeof(float) * d.O);
      else
        bias_grad_avx2(gy, gb, d);
    }
    return;
  }
#endif
  conv2d_bwd_weight_cpu<float>(gy, x, gw, gb, d);
}

void conv2d_bwd_weight(const double* gy, const double* x, double* gw, double* gb,
                       const Conv2dDims& d) {
  conv2d_bwd_weight_cpu<double>(gy, x, gw, gb, d);
}

}  // namespace ember
