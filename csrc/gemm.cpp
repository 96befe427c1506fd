// gemm.cpp -- _C.gemm: validate numpy operands, then call the batched strided CPU kernel.
//
// gemm(a, b, c, alpha=1.0, beta=0.0, bias=None, activation="none"):
//   c = act(alpha * a @ b + beta * c + bias), in place in c.
//   a: [Ba, M, K], b: [Bb, K, N], c: [B, M, N]; Ba, Bb in {B, 1} (pass np.broadcast_to views).
//   a and b may have any strides (0, negative, transposed views: read, never copied);
//   c must be C-contiguous, writeable, of the same dtype and not overlap a or b.
//   beta == 0: c's old contents are ignored (NaN does not leak).
//   bias: None or a C-contiguous [N] array of c's dtype (added to every row: Linear's bias).
//   activation: "none", "relu", "gelu" (exact erf) or "gelu_tanh" (tanh approximation).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "csrc/array.h"
#include "csrc/check.h"
#include "csrc/registry.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace {

ember::GemmAct parse_activation(const std::string& s) {
  if (s == "none") return ember::GemmAct::none;
  if (s == "relu") return ember::GemmAct::relu;
  if (s == "gelu") return ember::GemmAct::gelu;
  if (s == "gelu_tanh") return ember::GemmAct::gelu_tanh;
  EMBER_CHECK_VALUE(false, "gemm", "activation must be 'none', 'relu', 'gelu' or 'gelu_tanh', got '",
                    s, "'");
  return ember::GemmAct::none;
}

void gemm_py(const py::object& a_obj, const py::object& b_obj, const py::object& c_obj,
             double alpha, double beta, const py::object& bias_obj,
             const std::string& activation) {
  const char* op = "gemm";
  const ember::GemmAct act = parse_activation(activation);
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

  const void* biasp = nullptr;
  if (!bias_obj.is_none()) {
    const py::array bias = ember::as_ndarray(bias_obj, op, "bias");
    EMBER_CHECK_VALUE(bias.ndim() == 1 && bias.shape(0) == N, op, "bias must have shape [N] = [",
                      N, "], got ", ember::shape_str(bias));
    EMBER_CHECK_TYPE(ember::dtype_of(bias) == dt, op, "bias is ", ember::dtype_str(bias),
                     " but c is ", ember::dtype_str(c));
    ember::require_c_contiguous(bias, op, "bias");
    ember::require_aligned(bias, op, "bias");
    EMBER_CHECK_VALUE(!ember::overlaps(c, bias), op, "output c overlaps bias");
    biasp = bias.data();
  }

  if (B * M * N == 0) return;
  const void* ap = a.data();
  const void* bp = b.data();
  void* cp = const_cast<void*>(c.data());
  // No Python object may be touched from here on (pybind11 asserts this in debug builds).
  py::gil_scoped_release nogil;
  if (dt == ember::DType::f32) {
    ember::gemm(static_cast<const float*>(ap), static_cast<const float*>(bp),
                static_cast<float*>(cp), d, static_cast<float>(alpha), static_cast<float>(beta),
                static_cast<const float*>(biasp), act);
  } else {
    ember::gemm(static_cast<const double*>(ap), static_cast<const double*>(bp),
                static_cast<double*>(cp), d, alpha, beta, static_cast<const double*>(biasp), act);
  }
}

}  // namespace

EMBER_BIND(gemm) {
  m.def("gemm", &gemm_py, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("alpha") = 1.0,
        py::arg("beta") = 0.0, py::arg("bias") = py::none(), py::arg("activation") = "none",
        "c = act(alpha * a @ b + beta * c + bias) (in place). a: [Ba,M,K], b: [Bb,K,N], "
        "c: [B,M,N] C-contiguous; Ba, Bb in {B, 1}; float32 or float64; any strides for a and "
        "b; bias None or [N]; activation 'none', 'relu', 'gelu' (erf) or 'gelu_tanh'.");
  m.def(
      "_fma_peak_gflops",
      [](const std::string& isa, double seconds) {
        EMBER_CHECK_VALUE(isa == "avx2" || isa == "avx512", "fma_peak", "isa must be 'avx2' or "
                          "'avx512', got '", isa, "'");
        py::gil_scoped_release nogil;
        return ember::fma_peak_gflops(isa == "avx512" ? 1 : 0, seconds);
      },
      py::arg("isa") = "avx2", py::arg("seconds") = 0.05,
      "Single-thread GFLOP/s of independent FMA chains (the machine's FMA ceiling for one "
      "core; 0.0 when the CPU lacks the ISA).");
}
