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

// ---- FMA peak probe (kernels/cpu/peak.cpp) -------------------------------------------------
// Single-thread GFLOP/s of independent FMA chains; isa 0 = AVX2 (ymm), 1 = AVX-512 (zmm).
// Returns 0 when the CPU lacks the ISA.
double fma_peak_gflops(int isa, double seconds);

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
