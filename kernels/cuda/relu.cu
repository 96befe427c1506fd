// relu.cu -- element-wise ReLU forward and backward on the GPU.
//
// fwd: y = x < 0 ? 0 : x (NaN propagates); bwd: gx = x > 0 ? gy : 0 (NaN x gives 0).
// Same semantics as kernels/cpu/relu.cpp. Contiguous buffers of n elements; y may be x,
// gx may be gy or x (each element is read before it is written by the same thread).
//
// One grid-stride kernel per direction and dtype: when every pointer is 16-byte aligned the
// body moves float4/double2 (one 128-bit transaction per thread per step, the way to reach
// HBM bandwidth on a memory-bound op) and the last n % width elements are done by the first
// threads of the grid; otherwise (an offset view) every element goes through the scalar loop.
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/kernels.h"

namespace ember::cuda {
namespace {

template <typename T>
__device__ __forceinline__ T relu_val(T v) {
  return v < T(0) ? T(0) : v;
}
template <typename T>
__device__ __forceinline__ T relu_grad(T g, T v) {
  return v > T(0) ? g : T(0);
}

template <typename T, bool kVec>
__global__ void relu_fwd_kernel(const T* x, T* y, int64_t n) {
  using V = typename Vec16<T>::type;
  constexpr int W = Vec16<T>::width;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if (kVec) {
    const int64_t nv = n / W;
    for (int64_t i = tid; i < nv; i += stride) {
      V v = reinterpret_cast<const V*>(x)[i];
      T* e = reinterpret_cast<T*>(&v);
#pragma unroll
      for (int j = 0; j < W; ++j) e[j] = relu_val(e[j]);
      reinterpret_cast<V*>(y)[i] = v;
    }
    done = nv * W;
  }
  for (int64_t i = done + tid; i < n; i += stride) y[i] = relu_val(x[i]);
}

template <typename T, bool kVec>
__global__ void relu_bwd_kernel(const T* gy, const T* x, T* gx, int64_t n) {
  using V = typename Vec16<T>::type;
  constexpr int W = Vec16<T>::width;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if (kVec) {
    const int64_t nv = n / W;
    for (int64_t i = tid; i < nv; i += stride) {
      V g = reinterpret_cast<const V*>(gy)[i];
      const V v = reinterpret_cast<const V*>(x)[i];
      T* ge = reinterpret_cast<T*>(&g);
      const T* ve = reinterpret_cast<const T*>(&v);
#pragma unroll
      for (int j = 0; j < W; ++j) ge[j] = relu_grad(ge[j], ve[j]);
      reinterpret_cast<V*>(gx)[i] = g;
    }
    done = nv * W;
  }
  for (int64_t i = done + tid; i < n; i += stride) gx[i] = relu_grad(gy[i], x[i]);
}

template <typename T>
int launch_fwd(const T* x, T* y, int64_t n, void* stream) {
  if (n <= 0) return 0;
  const bool vec = aligned16(x) && aligned16(y);
  const unsigned grid = grid_for(vec ? (n + Vec16<T>::width - 1) / Vec16<T>::width : n);
  if (vec)
    relu_fwd_kernel<T, true><<<grid, kBlock, 0, as_stream(stream)>>>(x, y, n);
  else
    relu_fwd_kernel<T, false><<<grid, kBlock, 0, as_stream(stream)>>>(x, y, n);
  EMBER_CUDA_TRY(cudaGetLastError());
  return 0;
}

template <typename T>
int launch_bwd(const T* gy, const T* x, T* gx, int64_t n, void* stream) {
  if (n <= 0) return 0;
  const bool vec = aligned16(gy) && aligned16(x) && aligned16(gx);
  const unsigned grid = grid_for(vec ? (n + Vec16<T>::width - 1) / Vec16<T>::width : n);
  if (vec)
    relu_bwd_kernel<T, true><<<grid, kBlock, 0, as_stream(stream)>>>(gy, x, gx, n);
  else
    relu_bwd_kernel<T, false><<<grid, kBlock, 0, as_stream(stream)>>>(gy, x, gx, n);
  EMBER_CUDA_TRY(cudaGetLastError());
  return 0;
}

}  // namespace

int relu_fwd_cuda(const float* x, float* y, int64_t n, void* s) { return launch_fwd(x, y, n, s); }
int relu_fwd_cuda(const double* x, double* y, int64_t n, void* s) {
  return launch_fwd(x, y, n, s);
}
int relu_bwd_cuda(const float* gy, const float* x, float* gx, int64_t n, void* s) {
  return launch_bwd(gy, x, gx, n, s);
}
int relu_bwd_cuda(const double* gy, const double* x, double* gx, int64_t n, void* s) {
  return launch_bwd(gy, x, gx, n, s);
}

}  // namespace ember::cuda
