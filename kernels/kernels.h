// kernels.h -- the index of every kernel entry point, grouped by op.
//
// Plain C++ types only (pointers, int64 sizes, element strides): no pybind11, no Python, no
// exceptions. Validation is the caller's job (csrc/); kernels assume valid arguments.
// Naming: <op>_<fwd|bwd>_<cpu|avx2|cuda>; the suffix-less name is the CPU entry point that
// picks the AVX2 or scalar variant at run time and spreads the work over threads.
#pragma once

#include <cstdint>

namespace ember {

// CPU runtime (ISA dispatch, force-scalar flag, thread count) lives inline in
// kernels/cpu/common.h: cpu_supports_avx2_fma, compiled_avx2, set_force_scalar, force_scalar,
// avx2_selected, has_openmp, set_num_threads, get_num_threads.

// ---- gemm (kernels/cpu/gemm.cpp) -----------------------------------------------------------
// c[b] = alpha * a[b] @ b[b] + beta * c[b] for b < B, with a[b]: [M, K], b[b]: [K, N].
// a and b are addressed through element strides (any sign, 0 = broadcast); c is
// C-contiguous [B, M, N]. beta == 0 means c is write-only (NaN in c does not leak).
struct GemmDims {
  int64_t B, M, N, K;
  int64_t sab, sam, sak;  // a strides (elements): batch, row, inner
  int64_t sbb, sbk, sbn;  // b strides (elements): batch, inner, column
};

// Fused epilogue, applied after alpha/beta: c = act(alpha * a @ b + beta * c + bias[n]).
// bias (may be null) has N elements, one per output column (Linear's bias).
enum class GemmAct : int { none = 0, relu = 1, gelu = 2, gelu_tanh = 3 };
// Which float kernel gemm() runs now: 0 scalar, 1 AVX2/FMA (6x16), 2 AVX-512 (12x32).
int gemm_path();
const char* gemm_path_name();

template <typename T>
void gemm_cpu(const T* a, const T* b, T* c, const GemmDims& d, T alpha, T beta,
              const T* bias = nullptr, GemmAct act = GemmAct::none);
void gemm(const float* a, const float* b, float* c, const GemmDims& d, float alpha, float beta,
          const float* bias = nullptr, GemmAct act = GemmAct::none);
void gemm(const double* a, const double* b, double* c, const GemmDims& d, double alpha,
          double beta, const double* bias = nullptr, GemmAct act = GemmAct::none);
// One matrix, on the calling thread only, with a row stride ldc for c (c[m*ldc + n]):
// c = alpha * a @ b + beta * c through the packed AVX2 / AVX-512 kernels, for kernels that
// thread themselves over independent pieces (convolution tiles) and must not nest the pool.
// Float only; returns false (nothing done) when the SIMD path is off (gemm_path() == 0) or K
// is 0, and the caller runs its own fallback.
bool gemm_serial(const float* a, int64_t sam, int64_t sak, const float* b, int64_t sbk,
                 int64_t sbn, float* c, int64_t ldc, int64_t M, int64_t N, int64_t K,
                 float alpha, float beta);
// The same with a gathered B (implicit GEMM): B(k, n) = brow[k][bcol[n]]; a row-major [M, K]
// with row stride lda. bcol should come in runs of consecutive offsets (packing copies runs).
bool gemm_serial_gather(const float* a, int64_t lda, const float* const* brow,
                        const int64_t* bcol, float* c, int64_t ldc, int64_t M, int64_t N,
                        int64_t K, float alpha, float beta);
// And with B given by column pointers: B(k, n) = bcolp[n][k]; a row-major [M, K], row stride lda.
bool gemm_serial_colptr(const float* a, int64_t lda, const float* const* bcolp, float* c,
                        int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha, float beta);

// ---- FMA peak probe (kernels/cpu/peak.cpp) -------------------------------------------------
// Single-thread GFLOP/s of independent FMA chains; isa 0 = AVX2 (ymm), 1 = AVX-512 (zmm).
// Returns 0 when the CPU lacks the ISA.
double fma_peak_gflops(int isa, double seconds);

// ---- vectorised exp (kernels/cpu/vexp.h, vexp.cpp) ------------------------------------------
// y = exp256_ps(x) elementwise (the AVX2 exp the softmax/attention kernels inline), for tests
// that measure its error. Returns false (nothing written) when the CPU or build lacks AVX2.
bool exp_avx2(const float* x, float* y, int64_t n, bool le88 = false);  // le88: exp256_le88_ps
bool exp_avx512(const float* x, float* y, int64_t n);  // exp512_ps; false without AVX-512F

// ---- relu (kernels/cpu/relu.cpp, kernels/cuda/relu.cu) -------------------------------------
// fwd: y = x < 0 ? 0 : x (NaN propagates).  bwd: gx = x > 0 ? gy : 0 (NaN x gives 0).
// All buffers contiguous, n elements; y may alias x, gx may alias gy or x.
template <typename T>
void relu_fwd_cpu(const T* x, T* y, int64_t n);
template <typename T>
void relu_bwd_cpu(const T* gy, const T* x, T* gx, int64_t n);
void relu_fwd_avx2(const float* x, float* y, int64_t n);
void relu_fwd_avx2(const double* x, double* y, int64_t n);
void relu_bwd_avx2(const float* gy, const float* x, float* gx, int64_t n);
void relu_bwd_avx2(const double* gy, const double* x, double* gx, int64_t n);
void relu_fwd(const float* x, float* y, int64_t n);
void relu_fwd(const double* x, double* y, int64_t n);
void relu_bwd(const float* gy, const float* x, float* gx, int64_t n);
void relu_bwd(const double* gy, const double* x, double* gx, int64_t n);

// ---- optimizers and grad-norm reductions (kernels/cpu/optim.cpp) --------------------------
// One call updates a list of `count` tensors in place, each contiguous with n[t] elements;
// param[t], grad[t] and the state buffers s0..s2 of tensor t all have n[t] elements and do not
// overlap. Step-dependent scalars come precomputed in double. Meaning of s0, s1, s2:
//   SGD: s0 momentum buffer (null when momentum == 0; `first` writes buf = g)
//   Adam/AdamW: s0 exp_avg, s1 exp_avg_sq, s2 max_exp_avg_sq (null unless amsgrad)
//   RMSprop: s0 square_avg, s1 grad_avg (null unless centered), s2 momentum buffer (or null)
//   Adagrad: s0 sum
template <typename T>
struct OptimList {
  int64_t count = 0;
  const int64_t* n = nullptr;
  T* const* param = nullptr;
  const T* const* grad = nullptr;
  T* const* s0 = nullptr;
  T* const* s1 = nullptr;
  T* const* s2 = nullptr;
};
struct SgdArgs {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize;
};
struct AdamArgs {
  double lr, beta1, beta2, eps, weight_decay;
  double bc1, bc2;  // 1 - beta1^step, 1 - beta2^step
  bool decoupled, amsgrad, maximize;
};
struct RmspropArgs {
  double lr, alpha, eps, weight_decay, momentum;
  bool centered, maximize;
};
struct AdagradArgs {
  double clr, eps, weight_decay;  // clr = lr / (1 + (step - 1) * lr_decay)
  bool maximize;
};
// Scalar references over one contiguous range (float and double).
template <typename T>
void sgd_cpu(T* p, const T* grad, T* buf, int64_t n, const SgdArgs& a, bool first);
template <typename T>
void adam_cpu(T* p, const T* grad, T* m, T* v, T* vmax, int64_t n, const AdamArgs& a);
template <typename T>
void rmsprop_cpu(T* p, const T* grad, T* sq, T* gavg, T* buf, int64_t n, const RmspropArgs& a);
template <typename T>
void adagrad_cpu(T* p, const T* grad, T* sum, int64_t n, const AdagradArgs& a);
// List entry points: AVX2 (float) or scalar at run time, threaded over pieces of the list.
template <typename T>
void sgd_step(const OptimList<T>& l, const SgdArgs& a, bool first);
template <typename T>
void adam_step(const OptimList<T>& l, const AdamArgs& a);
template <typename T>
void rmsprop_step(const OptimList<T>& l, const RmspropArgs& a);
template <typename T>
void adagrad_step(const OptimList<T>& l, const AdagradArgs& a);
// sum of x^2 in double over all tensors (inf = false) or max |x| (inf = true; NaN wins).
template <typename T>
double norm_reduce(const T* const* x, const int64_t* n, int64_t count, bool inf);
// Median seconds of `reps` runs of a[i] = b[i] + 3 c[i] (bandwidth probe for bench_optim).
double triad_seconds(float* a, const float* b, const float* c, int64_t n, int reps);
// Median seconds of a += d, b += d, c += d (Adam's 4-read/3-write pattern, 28 B/element).
double rmw4_seconds(float* a, float* b, float* c, const float* d, int64_t n, int reps);

// ---- batch-norm (kernels/cpu/batchnorm.cpp) ------------------------------------------------
// x, y, g, gx: C-contiguous [N, C, S]; per-channel vectors [C], same dtype. w, b may be null
// (affine=False: w = 1, b = 0). Training forward writes the batch mean, biased var and
// invstd = 1/sqrt(var + eps) per channel (requires N*S >= 1; the caller refuses N*S == 1).
// Eval forward normalises with rmean / rvar. Backward: gx (null: skipped), gw = sum(g*xhat),
// gb = sum(g) (each may be null); `train` selects the batch-statistics gradient (mean and
// invstd are the saved batch ones) or the eval one (gx = g*invstd*w; mean/invstd from the
// running stats).
void batchnorm_fwd_train(const float* x, float* y, int64_t N, int64_t C, int64_t S,
                         const float* w, const float* b, double eps, float* mean, float* var,
                         float* invstd);
void batchnorm_fwd_train(const double* x, double* y, int64_t N, int64_t C, int64_t S,
                         const double* w, const double* b, double eps, double* mean, double* var,
                         double* invstd);
void batchnorm_fwd_eval(const float* x, float* y, int64_t N, int64_t C, int64_t S,
                        const float* rmean, const float* rvar, const float* w, const float* b,
                        double eps);
void batchnorm_fwd_eval(const double* x, double* y, int64_t N, int64_t C, int64_t S,
                        const double* rmean, const double* rvar, const double* w,
                        const double* b, double eps);
void batchnorm_bwd(const float* g, const float* x, int64_t N, int64_t C, int64_t S,
                   const float* mean, const float* invstd, const float* w, bool train, float* gx,
                   float* gw, float* gb);
void batchnorm_bwd(const double* g, const double* x, int64_t N, int64_t C, int64_t S,
                   const double* mean, const double* invstd, const double* w, bool train,
                   double* gx, double* gw, double* gb);

// ---- conv2d (kernels/cpu/conv2d.cpp) -------------------------------------------------------
// NCHW, all buffers C-contiguous: x [N, C, H, W], w [O, C/G, KH, KW], b [O] (may be null),
// y [N, O, OH, OW]. y[n,o,oh,ow] = b[o] + sum_{c,i,j} w[o,c,i,j] x[n, g*C/G + c, oh*sh - ph +
// i*dh, ow*sw - pw + j*dw] (zero outside), g = o / (O/G). ph / pw are the top / left padding;
// the bottom / right padding is implied by OH / OW. Requires G >= 1, C % G == 0, O % G == 0,
// strides and dilations >= 1, ph, pw >= 0 (the caller validates). Every output element is
// written (gx included: elements no window touches get 0). bwd_weight: gw and gb may be null.
struct Conv2dDims {
  int64_t N, C, H, W;
  int64_t O, KH, KW;
  int64_t OH, OW;
  int64_t sh, sw, ph, pw, dh, dw;
  int64_t G;
};
template <typename T>
void conv2d_fwd_cpu(const T* x, const T* w, const T* b, T* y, const Conv2dDims& d);
template <typename T>
void conv2d_bwd_data_cpu(const T* gy, const T* w, T* gx, const Conv2dDims& d);
template <typename T>
void conv2d_bwd_weight_cpu(const T* gy, const T* x, T* gw, T* gb, const Conv2dDims& d);
// Test hook: workspace requests above `bytes` fail as if the allocation had failed (the
// kernels then throw std::bad_alloc naming conv2d); 0 turns it off.
void conv2d_set_workspace_limit(int64_t bytes);
void conv2d_fwd(const float* x, const float* w, const float* b, float* y, const Conv2dDims& d);
void conv2d_fwd(const double* x, const double* w, const double* b, double* y,
                const Conv2dDims& d);
void conv2d_bwd_data(const float* gy, const float* w, float* gx, const Conv2dDims& d);
void conv2d_bwd_data(const double* gy, const double* w, double* gx, const Conv2dDims& d);
void conv2d_bwd_weight(const float* gy, const float* x, float* gw, float* gb,
                       const Conv2dDims& d);
void conv2d_bwd_weight(const double* gy, const double* x, double* gw, double* gb,
                       const Conv2dDims& d);

// ---- softmax, log-softmax, cross-entropy (kernels/cpu/softmax.cpp) ------------------------
// x, y, g, gx: C-contiguous [rows, n], over the last dim. log selects log-softmax.
// fwd: y = softmax(x) or log_softmax(x). bwd takes the forward output y: softmax
// gx = y * (g - sum(g * y)); log-softmax gx = g - exp(y) * sum(g). A row holding +inf or NaN,
// or only -inf, gives NaN (as PyTorch).
void softmax_fwd(const float* x, float* y, int64_t rows, int64_t n, bool log);
void softmax_fwd(const double* x, double* y, int64_t rows, int64_t n, bool log);
void softmax_bwd(const float* y, const float* g, float* gx, int64_t rows, int64_t n, bool log);
void softmax_bwd(const double* y, const double* g, double* gx, int64_t rows, int64_t n,
                 bool log);
// Cross-entropy of logits x [N, C] with class targets [N] (each in [0, C) or ignore_index:
// the caller checks), class weights w [C] (null: 1), label smoothing in [0, 1]. fwd writes the
// per-row loss [N] (0 for ignored rows) and stats [N, 2] = (row max, log-sum-exp - max).
// bwd: gx = grow[r] * d loss_r / d x_r from x and stats (ignored rows: 0).
void cross_entropy_fwd(const float* x, const int64_t* target, const float* w, int64_t N,
                       int64_t C, int64_t ignore_index, double smoothing, float* loss,
                       float* stats);
void cross_entropy_fwd(const double* x, const int64_t* target, const double* w, int64_t N,
                       int64_t C, int64_t ignore_index, double smoothing, double* loss,
                       double* stats);
void cross_entropy_bwd(const float* x, const int64_t* target, const float* w, const float* stats,
                       const float* grow, int64_t N, int64_t C, int64_t ignore_index,
                       double smoothing, float* gx);
void cross_entropy_bwd(const double* x, const int64_t* target, const double* w,
                       const double* stats, const double* grow, int64_t N, int64_t C,
                       int64_t ignore_index, double smoothing, double* gx);

// ---- layer norm and RMS norm (kernels/cpu/layernorm.cpp) -----------------------------------
// x, y, g, gx: C-contiguous [rows, n] (n = the product of normalized_shape); w, b, gw, gb: [n]
// (w, b null: 1, 0). fwd writes mean [rows] (layer norm; ignored and may be null for rms) and
// rstd [rows] = 1/sqrt(var + eps) (rms: 1/sqrt(mean(x^2) + eps)). bwd: gx (may be null),
// gw = sum over rows of g * xhat, gb = sum of g (each may be null).
void layernorm_fwd(const float* x, float* y, int64_t rows, int64_t n, const float* w,
                   const float* b, double eps, bool rms, float* mean, float* rstd);
void layernorm_fwd(const double* x, double* y, int64_t rows, int64_t n, const double* w,
                   const double* b, double eps, bool rms, double* mean, double* rstd);
void layernorm_bwd(const float* g, const float* x, int64_t rows, int64_t n, const float* mean,
                   const float* rstd, const float* w, bool rms, float* gx, float* gw, float* gb);
void layernorm_bwd(const double* g, const double* x, int64_t rows, int64_t n,
                   const double* mean, const double* rstd, const double* w, bool rms,
                   double* gx, double* gw, double* gb);

// ---- recurrent cells (kernels/cpu/rnn.cpp) --------------------------------------------------
// One time step's gate math, fused; the GEMMs around it are the caller's. All buffers
// C-contiguous, rows of B; gate order as PyTorch (LSTM i, f, g, o; GRU r, z, n). See rnn.cpp.
// LSTM fwd: gates [B,4H] pre-activations (all projections and biases summed), c_prev [B,H] ->
//   c, h [B,H]; act [B,4H] <- (i, f, g, o) activations (may alias gates; null: not saved).
// LSTM bwd: dh [B,H] (recurrent grad), dy [B,H] (output grad, may be null), dc [B,H] in/out
//   (dc_t in, dc_{t-1} out) -> dgates [B,4H] pre-activation grads (may alias act).
// GRU fwd: xg [B,3H] = x W_ih^T + b_ih, hg [B,3H] = h W_hh^T + b_hh, h_prev -> h;
//   save [B,4H] <- (r, z, n, hn) (null: not saved).
// GRU bwd: -> dxg [B,3H] (grad of xg), dhg [B,3H] (grad of hg), dh_prev [B,H] = (dh+dy) z
//   (the W_hh part is the caller's GEMM).
// RNN fwd: h = tanh(pre) / relu(pre) over n elements; bwd: dpre = (dh + dy) * act'(h).
void lstm_cell_fwd(const float* gates, const float* c_prev, float* act, float* c, float* h,
                   int64_t B, int64_t H);
void lstm_cell_fwd(const double* gates, const double* c_prev, double* act, double* c, double* h,
                   int64_t B, int64_t H);
void lstm_cell_bwd(const float* act, const float* c_prev, const float* c, const float* dh,
                   const float* dy, float* dc, float* dgates, int64_t B, int64_t H);
void lstm_cell_bwd(const double* act, const double* c_prev, const double* c, const double* dh,
                   const double* dy, double* dc, double* dgates, int64_t B, int64_t H);
void gru_cell_fwd(const float* xg, const float* hg, const float* h_prev, float* h, float* save,
                  int64_t B, int64_t H);
void gru_cell_fwd(const double* xg, const double* hg, const double* h_prev, double* h,
                  double* save, int64_t B, int64_t H);
void gru_cell_bwd(const float* save, const float* h_prev, const float* dh, const float* dy,
                  float* dxg, float* dhg, float* dh_prev, int64_t B, int64_t H);
void gru_cell_bwd(const double* save, const double* h_prev, const double* dh, const double* dy,
                  double* dxg, double* dhg, double* dh_prev, int64_t B, int64_t H);
void rnn_cell_fwd(const float* pre, float* h, int64_t n, bool relu);
void rnn_cell_fwd(const double* pre, double* h, int64_t n, bool relu);
void rnn_cell_bwd(const float* h, const float* dh, const float* dy, float* dpre, int64_t n,
                  bool relu);
void rnn_cell_bwd(const double* h, const double* dh, const double* dy, double* dpre, int64_t n,
                  bool relu);
// ---- pooling (kernels/cpu/pool2d.cpp) -----------------------------------------------------
// NCHW C-contiguous, seen as NC planes of [H, W] -> [OH, OW] (the caller computes OH, OW with
// PyTorch's rules incl. ceil_mode). Max pool: y and the argmax idx (flat h*W + w within the
// plane, int64; -1 for a window with no in-bounds element). Backwards write all of gx.
struct Pool2dDims {
  int64_t NC, H, W, OH, OW;
  int64_t kH, kW, sH, sW, pH, pW, dH, dW;  // kernel, stride, padding, dilation (1 for avg)
};
void maxpool2d_fwd(const float* x, float* y, int64_t* idx, const Pool2dDims& d);
void maxpool2d_fwd(const double* x, double* y, int64_t* idx, const Pool2dDims& d);
// gx[p, idx[p, o]] += g[p, o] over NC planes of in_plane (input) / out_plane (output) elements.
void maxpool2d_bwd(const float* g, const int64_t* idx, float* gx, int64_t NC, int64_t in_plane,
                   int64_t out_plane);
void maxpool2d_bwd(const double* g, const int64_t* idx, double* gx, int64_t NC, int64_t in_plane,
                   int64_t out_plane);
// divisor_override == 0: none (any other value, even negative, divides as PyTorch's).
void avgpool2d_fwd(const float* x, float* y, const Pool2dDims& d, bool count_include_pad,
                   int64_t divisor_override);
void avgpool2d_fwd(const double* x, double* y, const Pool2dDims& d, bool count_include_pad,
                   int64_t divisor_override);
void avgpool2d_bwd(const float* g, float* gx, const Pool2dDims& d, bool count_include_pad,
                   int64_t divisor_override);
void avgpool2d_bwd(const double* g, double* gx, const Pool2dDims& d, bool count_include_pad,
                   int64_t divisor_override);
// Adaptive windows [floor(i*H/OH), ceil((i+1)*H/OH)); OH = OW = 1 is the global average.
void adaptive_avgpool2d_fwd(const float* x, float* y, int64_t NC, int64_t H, int64_t W,
                            int64_t OH, int64_t OW);
void adaptive_avgpool2d_fwd(const double* x, double* y, int64_t NC, int64_t H, int64_t W,
                            int64_t OH, int64_t OW);
void adaptive_avgpool2d_bwd(const float* g, float* gx, int64_t NC, int64_t H, int64_t W,
                            int64_t OH, int64_t OW);
void adaptive_avgpool2d_bwd(const double* g, double* gx, int64_t NC, int64_t H, int64_t W,
                            int64_t OH, int64_t OW);
// Backward: maxpool2d_bwd with the returned idx.
void adaptive_maxpool2d_fwd(const float* x, float* y, int64_t* idx, int64_t NC, int64_t H,
                            int64_t W, int64_t OH, int64_t OW);
void adaptive_maxpool2d_fwd(const double* x, double* y, int64_t* idx, int64_t NC, int64_t H,
                            int64_t W, int64_t OH, int64_t OW);

// ---- scaled-dot-product attention (kernels/cpu/attention.cpp) -------------------------------
// q [N, Lq, D], k [N, Lk, D], v [N, Lk, Dv], out [N, Lq, Dv], all C-contiguous; lse [N, Lq, 2]
// the rows' log-sum-exp as hi + lo (written by fwd, read by bwd).
// s = scale * q k^T + mask; causal: query i sees keys j <= i (top-left). mask (may be null) is
// additive, batch n at mask + ((n / mask_div) % mask_mod) * mask_bs, row i at + i * mask_rs.
// Fully-masked rows: out = 0, lse hi = +inf, zero gradients (PyTorch gives NaN; we differ).
// Backward writes every element of gq [N, Lq, D], gk [N, Lk, D], gv [N, Lk, Dv].
struct AttnDims {
  int64_t N, Lq, Lk, D, Dv;
  double scale;
  bool causal;
  int64_t mask_div = 1, mask_mod = 1, mask_bs = 0, mask_rs = 0;
};
template <typename T>
void attention_fwd_cpu(const T* q, const T* k, const T* v, T* out, T* lse, const AttnDims& d,
                       const T* mask);
template <typename T>
void attention_bwd_cpu(const T* q, const T* k, const T* v, const T* out, const T* lse,
                       const T* gout, T* gq, T* gk, T* gv, const AttnDims& d, const T* mask);
void attention_fwd(const float* q, const float* k, const float* v, float* out, float* lse,
                   const AttnDims& d, const float* mask);
void attention_fwd(const double* q, const double* k, const double* v, double* out, double* lse,
                   const AttnDims& d, const double* mask);
void attention_bwd(const float* q, const float* k, const float* v, const float* out,
                   const float* lse, const float* gout, float* gq, float* gk, float* gv,
                   const AttnDims& d, const float* mask);
void attention_bwd(const double* q, const double* k, const double* v, const double* out,
                   const double* lse, const double* gout, double* gq, double* gk, double* gv,
                   const AttnDims& d, const double* mask);

// ---- CUDA launchers (kernels/cuda/*.cu; only with EMBER_WITH_CUDA) -------------------------
// Launch on `stream` (a cudaStream_t passed as void*) and return the cudaError_t as int
// (0 = success); they never throw and never synchronise.
namespace cuda {
int relu_fwd_cuda(const float* x, float* y, int64_t n, void* stream);
int relu_fwd_cuda(const double* x, double* y, int64_t n, void* stream);
int relu_bwd_cuda(const float* gy, const float* x, float* gx, int64_t n, void* stream);
int relu_bwd_cuda(const double* gy, const double* x, double* gx, int64_t n, void* stream);
}  // namespace cuda

}  // namespace ember
