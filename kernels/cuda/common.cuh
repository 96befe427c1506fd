// common.cuh -- shared by the CUDA kernels: error plumbing, launch geometry, vector loads.
//
// Kernels and launchers never throw: a launcher returns the cudaError_t as int (0 = success)
// and csrc/ turns a non-zero code into a Python RuntimeError ("[op] CUDA error: ..."). Launches
// are asynchronous on the caller's stream (cupy's current stream); nothing here synchronises.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// Evaluate a CUDA runtime call; on failure return its error code (as int) from the enclosing
// function. For launchers: EMBER_CUDA_TRY(cudaGetLastError());
#define EMBER_CUDA_TRY(expr)                          \
  do {                                                \
    const cudaError_t ember_err_ = (expr);            \
    if (ember_err_ != cudaSuccess) return static_cast<int>(ember_err_); \
  } while (0)

namespace ember::cuda {

constexpr int kBlock = 256;
// Grid-stride kernels: a few waves of blocks are enough to fill any current GPU (H100: 132
// SMs x 8 blocks of 256); more blocks only add scheduling overhead.
constexpr int64_t kMaxBlocks = 4096;

inline unsigned grid_for(int64_t work_items) {
  int64_t blocks = (work_items + kBlock - 1) / kBlock;
  if (blocks < 1) blocks = 1;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return static_cast<unsigned>(blocks);
}

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// 16-byte vector type per element type (float4 / double2) for 128-bit loads and stores.
template <typename T>
struct Vec16;
template <>
struct Vec16<float> {
  using type = float4;
  static constexpr int width = 4;
};
template <>
struct Vec16<double> {
  using type = double2;
  static constexpr int width = 2;
};

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

}  // namespace ember::cuda
