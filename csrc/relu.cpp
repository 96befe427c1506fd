// relu.cpp -- _C.relu_fwd / relu_bwd (numpy, CPU) and relu_fwd_cuda / relu_bwd_cuda (cupy).
//
// relu_fwd(x, out):               out = relu(x)
// relu_bwd(grad_out, x, grad_in): grad_in = grad_out where x > 0 else 0
// Same shape, same dtype (float32/float64), all C-contiguous; outputs writeable. An output may
// be the very same array as an input (in place) but must not partially overlap one.
// The *_cuda variants take objects exposing __cuda_array_interface__ plus the stream to launch
// on; they exist in every build and raise RuntimeError when ember was built without CUDA.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "csrc/array.h"
#include "csrc/check.h"
#include "csrc/cuda_array.h"
#include "csrc/registry.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace {

constexpr const char* kOp = "relu";

py::array input(const py::object& obj, const char* name) {
  py::array a = ember::as_ndarray(obj, kOp, name);
  ember::require_float(a, kOp, name);
  return a;
}

void same_layout(const py::array& ref, const char* ref_name, const py::array& a,
                 const char* name) {
  ember::require_same_layout(ref, ref_name, a, kOp, name);
}

void contiguous_aligned(const py::array& a, const char* name) {
  ember::require_c_contiguous(a, kOp, name);
  ember::require_aligned(a, kOp, name);
}

void no_partial_overlap(const py::array& out, const char* out_name, const py::array& in,
                        const char* in_name) {
  EMBER_CHECK_VALUE(out.data() == in.data() || !ember::overlaps(out, in), kOp, out_name,
                    " partially overlaps ", in_name,
                    " (in place is allowed only on the very same array)");
}

void relu_fwd_py(const py::object& x_obj, const py::object& out_obj) {
  const py::array x = input(x_obj, "x");
  const py::array out = ember::as_ndarray(out_obj, kOp, "out");
  same_layout(x, "x", out, "out");
  contiguous_aligned(x, "x");
  contiguous_aligned(out, "out");
  ember::require_writeable(out, kOp, "out");
  no_partial_overlap(out, "out", x, "x");

  const int64_t n = x.size();
  if (n == 0) return;
  const bool f32 = ember::dtype_of(x) == ember::DType::f32;  // touches Python objects: before
  const void* xp = x.data();                                  // the GIL is released
  void* y = const_cast<void*>(out.data());
  py::gil_scoped_release nogil;
  if (f32)
    ember::relu_fwd(static_cast<const float*>(xp), static_cast<float*>(y), n);
  else
    ember::relu_fwd(static_cast<const double*>(xp), static_cast<double*>(y), n);
}

void relu_bwd_py(const py::object& gy_obj, const py::object& x_obj, const py::object& gx_obj) {
  const py::array gy = input(gy_obj, "grad_out");
  const py::array x = ember::as_ndarray(x_obj, kOp, "x");
  const py::array gx = ember::as_ndarray(gx_obj, kOp, "grad_in");
  same_layout(gy, "grad_out", x, "x");
  same_layout(gy, "grad_out", gx, "grad_in");
  contiguous_aligned(gy, "grad_out");
  contiguous_aligned(x, "x");
  contiguous_aligned(gx, "grad_in");
  ember::require_writeable(gx, kOp, "grad_in");
  no_partial_overlap(gx, "grad_in", gy, "grad_out");
  no_partial_overlap(gx, "grad_in", x, "x");

  const int64_t n = x.size();
  if (n == 0) return;
  const bool f32 = ember::dtype_of(x) == ember::DType::f32;
  const void* gyp = gy.data();
  const void* xp = x.data();
  void* g = const_cast<void*>(gx.data());
  py::gil_scoped_release nogil;
  if (f32)
    ember::relu_bwd(static_cast<const float*>(gyp), static_cast<const float*>(xp),
                    static_cast<float*>(g), n);
  else
    ember::relu_bwd(static_cast<const double*>(gyp), static_cast<const double*>(xp),
                    static_cast<double*>(g), n);
}

// ---- CUDA ---------------------------------------------------------------------------------
#ifdef EMBER_WITH_CUDA
void same_layout(const ember::CudaArray& ref, const char* ref_name, const ember::CudaArray& a,
                 const char* name) {
  EMBER_CHECK_TYPE(a.dtype == ref.dtype, kOp, name, " has typestr '", a.typestr, "' but ",
                   ref_name, " has '", ref.typestr, "'");
  EMBER_CHECK_VALUE(a.shape == ref.shape, kOp, name, " has shape ", ember::shape_str(a.shape),
                    " but ", ref_name, " has ", ember::shape_str(ref.shape));
}

void no_partial_overlap(const ember::CudaArray& out, const char* out_name,
                        const ember::CudaArray& in, const char* in_name) {
  EMBER_CHECK_VALUE(out.ptr == in.ptr || !ember::overlaps(out, in), kOp, out_name,
                    " partially overlaps ", in_name,
                    " (in place is allowed only on the very same array)");
}

void check_launch(int err) {
  if (err != 0) ember::runtime_error(kOp, "CUDA error: ", ember::cuda_error_string(err));
}
#endif

void relu_fwd_cuda_py(const py::object& x_obj, const py::object& out_obj,
                      const py::object& stream) {
#ifndef EMBER_WITH_CUDA
  (void)x_obj, (void)out_obj, (void)stream;
  ember::runtime_error(kOp, "ember was built without CUDA");
#else
  const ember::CudaArray x = ember::cuda_array(x_obj, kOp, "x");
  const ember::CudaArray out = ember::cuda_array(out_obj, kOp, "out");
  same_layout(x, "x", out, "out");
  EMBER_CHECK_VALUE(!out.readonly, kOp, "out is read-only");
  no_partial_overlap(out, "out", x, "x");
  void* s = ember::cuda_stream(stream, kOp);
  if (x.size == 0) return;
  int err;
  {
    py::gil_scoped_release nogil;
    if (x.dtype == ember::DType::f32)
      err = ember::cuda::relu_fwd_cuda(static_cast<const float*>(x.ptr),
                                       static_cast<float*>(out.ptr), x.size, s);
    else
      err = ember::cuda::relu_fwd_cuda(static_cast<const double*>(x.ptr),
                                       static_cast<double*>(out.ptr), x.size, s);
  }
  check_launch(err);
#endif
}

void relu_bwd_cuda_py(const py::object& gy_obj, const py::object& x_obj,
                      const py::object& gx_obj, const py::object& stream) {
#ifndef EMBER_WITH_CUDA
  (void)gy_obj, (void)x_obj, (void)gx_obj, (void)stream;
  ember::runtime_error(kOp, "ember was built without CUDA");
#else
  const ember::CudaArray gy = ember::cuda_array(gy_obj, kOp, "grad_out");
  const ember::CudaArray x = ember::cuda_array(x_obj, kOp, "x");
  const ember::CudaArray gx = ember::cuda_array(gx_obj, kOp, "grad_in");
  same_layout(gy, "grad_out", x, "x");
  same_layout(gy, "grad_out", gx, "grad_in");
  EMBER_CHECK_VALUE(!gx.readonly, kOp, "grad_in is read-only");
  no_partial_overlap(gx, "grad_in", gy, "grad_out");
  no_partial_overlap(gx, "grad_in", x, "x");
  void* s = ember::cuda_stream(stream, kOp);
  if (x.size == 0) return;
  int err;
  {
    py::gil_scoped_release nogil;
    if (x.dtype == ember::DType::f32)
      err = ember::cuda::relu_bwd_cuda(static_cast<const float*>(gy.ptr),
                                       static_cast<const float*>(x.ptr),
                                       static_cast<float*>(gx.ptr), x.size, s);
    else
      err = ember::cuda::relu_bwd_cuda(static_cast<const double*>(gy.ptr),
                                       static_cast<const double*>(x.ptr),
                                       static_cast<double*>(gx.ptr), x.size, s);
  }
  check_launch(err);
#endif
}

}  // namespace

EMBER_BIND(relu) {
  m.def("relu_fwd", &relu_fwd_py, py::arg("x"), py::arg("out"),
        "out = relu(x) (NaN propagates). Same shape/dtype, C-contiguous; out may be x.");
  m.def("relu_bwd", &relu_bwd_py, py::arg("grad_out"), py::arg("x"), py::arg("grad_in"),
        "grad_in = grad_out where x > 0 else 0. Same shape/dtype, C-contiguous.");
  m.def("relu_fwd_cuda", &relu_fwd_cuda_py, py::arg("x"), py::arg("out"), py::arg("stream"),
        "CUDA relu forward on __cuda_array_interface__ arrays, launched on `stream` (int).");
  m.def("relu_bwd_cuda", &relu_bwd_cuda_py, py::arg("grad_out"), py::arg("x"),
        py::arg("grad_in"), py::arg("stream"),
        "CUDA relu backward on __cuda_array_interface__ arrays, launched on `stream` (int).");
}
