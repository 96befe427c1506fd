// gemm.cpp -- _C.gemm: validate numpy operands, then call the batched strided CPU kernel.
//
// gemm(a, b, c, alpha=1.0, beta=0.0):  c = alpha * a @ b + beta * c, in place in c.
//   a: [Ba, M, K], b: [Bb, K, N], c: [B, M, N]; Ba, Bb in {B, 1} (pass np.broadcast_to views).
//   a and b may have any strides (0, negative, transposed views: read, never copied);
//   c must be C-contiguous, writeable, of the same dtype and not overlap a or b.
//   beta == 0: c's old contents are ignored (NaN does not leak).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "csrc/array.h"
#include "csrc/check.h"
#include "csrc/registry.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace {

void gemm_py(const py::object& a_obj, const py::object& b_obj, const py::object& c_obj,
             double alpha, double beta) {
  const char* op = "gemm";
  const py::array a = ember::as_ndarray(a_obj, op, "a");
  const py::array b = ember::as_ndarray(b_obj, op, "b");
  const py::array c = ember::as_ndarray(c_obj, op, "c");

  EMBER_CHECK_VALUE(a.ndim() == 3, op, "a must be 3-D [B, M, K], got shape ",
                    ember::shape_str(a));
  EMBER_CHECK_VALUE(b.ndim() == 3, op, "b must be 3-D [B, K, N], got shape ",
                    ember::shape_str(b));
  EMBER_CHECK_VALUE(c.ndim() == 3, op, "c must be 3-D [B, M, N], got shape ",
                    ember::shape_str(c));

  const ember::DType dt = ember::require_float(a, op, "a");
  EMBER_CHECK_TYPE(ember::dtype_of(b) == dt && ember::dtype_of(c) == dt, op,
                   "dtypes differ or are unsupported: a is ", ember::dtype_str(a), ", b is ",
                   ember::dtype_str(b), ", c is ", ember::dtype_str(c),
                   " (all must be float32 or all float64)");

  const int64_t Ba = a.shape(0), M = a.shape(1), K = a.shape(2);
  const int64_t Bb = b.shape(0), Kb = b.shape(1), N = b.shape(2);
  const int64_t B = c.shape(0);
  EMBER_CHECK_VALUE(Kb == K, op, "a is [B,M,K]=", ember::shape_str(a), " but b is [B,K,N]=",
                    ember::shape_str(b), ": inner dimensions ", K, " and ", Kb, " differ");
  EMBER_CHECK_VALUE(c.shape(1) == M && c.shape(2) == N, op, "c has shape ", ember::shape_str(c),
                    " but a @ b is [B, ", M, ", ", N, "]");
  EMBER_CHECK_VALUE((Ba == B || Ba == 1) && (Bb == B || Bb == 1), op,
                    "batch mismatch: a has batch ", Ba, ", b has ", Bb, ", c has ", B,
                    " (a and b must each match c or be 1)");

  ember::require_c_contiguous(c, op, "output c");
  ember::require_writeable(c, op, "output c");

  ember::GemmDims d{};
  d.B = B;
  d.M = M;
  d.N = N;
  d.K = K;
  d.sab = ember::elem_stride(a, 0, op, "a");
  d.sam = ember::elem_stride(a, 1, op, "a");
  d.sak = ember::elem_stride(a, 2, op, "a");
  d.sbb = ember::elem_stride(b, 0, op, "b");
  d.sbk = ember::elem_stride(b, 1, op, "b");
  d.sbn = ember::elem_stride(b, 2, op, "b");

  ember::require_aligned(a, op, "a");
  ember::require_aligned(b, op, "b");
  ember::require_aligned(c, op, "output c");
  EMBER_CHECK_VALUE(!ember::overlaps(c, a) && !ember::overlaps(c, b), op,
                    "output c overlaps an input");

  if (B * M * N == 0) return;
  const void* ap = a.data();
  const void* bp = b.data();
  void* cp = const_cast<void*>(c.data());
  // No Python object may be touched from here on (pybind11 asserts this in debug builds).
  py::gil_scoped_release nogil;
  if (dt == ember::DType::f32) {
    ember::gemm(static_cast<const float*>(ap), static_cast<const float*>(bp),
                static_cast<float*>(cp), d, static_cast<float>(alpha), static_cast<float>(beta));
  } else {
    ember::gemm(static_cast<const double*>(ap), static_cast<const double*>(bp),
                static_cast<double*>(cp), d, alpha, beta);
  }
}

}  // namespace

EMBER_BIND(gemm) {
  m.def("gemm", &gemm_py, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("alpha") = 1.0,
        py::arg("beta") = 0.0,
        "c = alpha * a @ b + beta * c (in place). a: [Ba,M,K], b: [Bb,K,N], c: [B,M,N] "
        "C-contiguous; Ba, Bb in {B, 1}; float32 or float64; any strides for a and b.");
}
