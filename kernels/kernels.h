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

// ---- FMA peak probe (kernels/cpu/peak.cpp) -------------------------------------------------
// Single-thread GFLOP/s of independent FMA chains; isa 0 = AVX2 (ymm), 1 = AVX-512 (zmm).
// Returns 0 when the CPU lacks the ISA.
double fma_peak_gflops(int isa, double seconds);

// ---- vectorised exp (kernels/cpu/vexp.h, vexp.cpp) ------------------------------------------
// y = exp256_ps(x) elementwise (the AVX2 exp the softmax/attention kernels inline), for tests
// that measure its error. Returns false (nothing written) when the CPU or build lacks AVX2.
bool exp_avx2(const float* x, float* y, int64_t n);

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
void conv2d_fwd(const float* x, const float* w, const float* b, float* y, const Conv2dDims& d);
void conv2d_fwd(const double* x, const double* w, const double* b, double* y,
                const Conv2dDims& d);
void conv2d_bwd_data(const float* gy, const float* w, float* gx, const Conv2dDims& d);
void conv2d_bwd_data(const double* gy, const double* w, double* gx, const Conv2dDims& d);
void conv2d_bwd_weight(const float* gy, const float* x, float* gw, float* gb,
                       const Conv2dDims& d);
void conv2d_bwd_weight(const double* gy, const double* x, double* gw, double* gb,
                       const Conv2dDims& d);

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
