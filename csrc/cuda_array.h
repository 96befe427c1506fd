// cuda_array.h -- read __cuda_array_interface__ (cupy arrays and friends) at the boundary.
//
// Parsing is plain Python-object work (no CUDA headers), so it is compiled in every build.
// Only what the kernels need is accepted: typestr '<f4' / '<f8', C-contiguous (strides None
// or the C-contiguous values), no mask. The interface's optional "stream" entry is not used:
// the caller passes the stream to launch on explicitly.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/array.h"

namespace ember {

struct CudaArray {
  void* ptr = nullptr;
  std::vector<int64_t> shape;
  int64_t size = 0;
  int64_t itemsize = 0;
  DType dtype = DType::other;
  std::string typestr;
  bool readonly = false;
};

// Parse and validate `obj` (argument `name` of op `op`): TypeError when it has no (or a
// malformed) interface or an unsupported typestr, ValueError when it is not C-contiguous,
// masked, or has a null pointer with a non-zero size.
CudaArray cuda_array(const pybind11::handle& obj, const char* op, const char* name);

// A cudaStream_t from an int (or an object with an int .ptr, e.g. cupy.cuda.Stream).
void* cuda_stream(const pybind11::handle& obj, const char* op);

std::string shape_str(const std::vector<int64_t>& shape);

// Ranges [ptr, ptr + size*itemsize) intersect.
bool overlaps(const CudaArray& x, const CudaArray& y);

}  // namespace ember
