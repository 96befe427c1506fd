// vexp.cpp -- _C._exp_avx2 / _exp_avx2_le88 / _exp_avx512(x, out): the vectorised exps over float32
// arrays, test hooks for measuring their error (tests/test_vexp.py). RuntimeError when AVX2 (or
// AVX-512F) is not available.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "csrc/array.h"
#include "csrc/check.h"
#include "csrc/registry.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace {

enum class Exp { avx2, avx2_le88, avx512 };

template <Exp V>
void exp_py(const py::object& x_obj, const py::object& out_obj) {
  constexpr bool W512 = V == Exp::avx512;
  const char* kOp = W512 ? "exp_avx512" : V == Exp::avx2_le88 ? "exp_avx2_le88" : "exp_avx2";
  const py::array x = ember::as_ndarray(x_obj, kOp, "x");
  const py::array out = ember::as_ndarray(out_obj, kOp, "out");
  EMBER_CHECK_TYPE(ember::dtype_of(x) == ember::DType::f32, kOp, "x must be float32, got ",
                   ember::dtype_str(x));
  ember::require_same_layout(x, "x", out, kOp, "out");
  ember::require_c_contiguous(x, kOp, "x");
  ember::require_c_contiguous(out, kOp, "out");
  ember::require_writeable(out, kOp, "out");
  EMBER_CHECK_VALUE(!ember::overlaps(out, x), kOp, "out overlaps x");
  const float* xp = static_cast<const float*>(x.data());
  float* yp = static_cast<float*>(const_cast<void*>(out.data()));
  const int64_t n = x.size();
  bool ok;
  {
    py::gil_scoped_release nogil;
    ok = W512 ? ember::exp_avx512(xp, yp, n) : ember::exp_avx2(xp, yp, n, V == Exp::avx2_le88);
  }
  if (!ok) ember::runtime_error(kOp, "this CPU or build has no ", W512 ? "AVX-512F" : "AVX2/FMA");
}

}  // namespace

EMBER_BIND(vexp) {
  m.def("_exp_avx2", &exp_py<Exp::avx2>, py::arg("x"), py::arg("out"),
        "out = the AVX2 vectorised exp of float32 x (test hook for its accuracy).");
  m.def("_exp_avx2_le88", &exp_py<Exp::avx2_le88>, py::arg("x"), py::arg("out"),
        "out = exp256_le88_ps of float32 x: exp for x <= 88.3 (test hook for its accuracy).");
  m.def("_exp_avx512", &exp_py<Exp::avx512>, py::arg("x"), py::arg("out"),
        "out = the AVX-512 vectorised exp of float32 x (test hook for its accuracy).");
}
