// layernorm.cpp -- _C.layernorm_fwd / layernorm_bwd (numpy, CPU): layer norm and RMS norm
// over the trailing `n` elements of each row.
//
// layernorm_fwd(x, n, weight, bias, eps, rms, out, mean, rstd)
//     x: float32/float64, C-contiguous, x.size a multiple of n (rows = x.size / n);
//     weight, bias: n elements each or None (rms: bias must be None); out: x's shape;
//     mean (None for rms), rstd: [rows]. Writes out, mean and rstd.
// layernorm_bwd(grad_out, x, n, mean, rstd, weight, rms, grad_in, grad_weight, grad_bias)
//     grad_in (x's shape), grad_weight, grad_bias ([n]) may each be None (not computed).
// All arrays of x's dtype, C-contiguous; outputs writeable and not overlapping any input.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "csrc/array.h"
#include "csrc/check.h"
#include "csrc/registry.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace {

const char* op_name(bool rms) { return rms ? "rms_norm" : "layer_norm"; }

py::array checked(const py::object& obj, const py::array& x, const char* op, const char* name,
                  int64_t size, bool write) {
  py::array a = ember::as_ndarray(obj, op, name);
  EMBER_CHECK_TYPE(ember::dtype_of(a) == ember::dtype_of(x), op, name, " has dtype ",
                   ember::dtype_str(a), " but the input has ", ember::dtype_str(x));
  EMBER_CHECK_VALUE(static_cast<int64_t>(a.size()) == size, op, name, " must have ", size,
                    " elements, got shape ", ember::shape_str(a));
  ember::require_c_contiguous(a, op, name);
  ember::require_aligned(a, op, name);
  if (write) ember::require_writeable(a, op, name);
  return a;
}

const void* opt(const py::object& obj, const py::array& x, const char* op, const char* name,
                int64_t size, bool write, std::vector<py::array>* keep) {
  if (obj.is_none()) return nullptr;
  py::array a = checked(obj, x, op, name, size, write);
  keep->push_back(a);
  return a.data();
}

void no_overlap(const char* op, const std::vector<py::array>& outs,
                const std::vector<py::array>& ins) {
  for (size_t i = 0; i < outs.size(); ++i) {
    for (const py::array& in : ins)
      EMBER_CHECK_VALUE(!ember::overlaps(outs[i], in), op, "an output overlaps an input");
    for (size_t j = i + 1; j < outs.size(); ++j)
      EMBER_CHECK_VALUE(!ember::overlaps(outs[i], outs[j]), op, "outputs overlap each other");
  }
}

int64_t rows_of(const py::array& x, int64_t n, const char* op) {
  ember::require_float(x, op, "input");
  ember::require_c_contiguous(x, op, "input");
  ember::require_aligned(x, op, "input");
  EMBER_CHECK_VALUE(n >= 0 && (n == 0 ? x.size() == 0 : x.size() % n == 0), op,
                    "normalized size ", n, " does not divide the input of shape ",
                    ember::shape_str(x));
  return n ? static_cast<int64_t>(x.size()) / n : 0;
}

void fwd_py(const py::object& x_obj, int64_t n, const py::object& w_obj,
            const py::object& b_obj, double eps, bool rms, const py::object& out_obj,
            const py::object& mean_obj, const py::object& rstd_obj) {
  const char* op = op_name(rms);
  const py::array x = ember::as_ndarray(x_obj, op, "input");
  const int64_t rows = rows_of(x, n, op);
  const py::array out = ember::as_ndarray(out_obj, op, "out");
  ember::require_same_layout(x, "input", out, op, "out");
  ember::require_c_contiguous(out, op, "out");
  ember::require_aligned(out, op, "out");
  ember::require_writeable(out, op, "out");
  EMBER_CHECK_VALUE(!rms || b_obj.is_none(), op, "RMS norm takes no bias");
  EMBER_CHECK_VALUE(rms || !mean_obj.is_none(), op, "mean must be an array for layer norm");
  std::vector<py::array> ins{x}, outs{out};
  const void* w = opt(w_obj, x, op, "weight", n, false, &ins);
  const void* b = opt(b_obj, x, op, "bias", n, false, &ins);
  void* mean = const_cast<void*>(opt(rms ? py::none() : mean_obj, x, op, "mean", rows, true,
                                     &outs));
  const py::array rstd_a = checked(rstd_obj, x, op, "rstd", rows, true);
  outs.push_back(rstd_a);
  void* rstd = const_cast<void*>(rstd_a.data());
  no_overlap(op, outs, ins);
  if (rows == 0 || n == 0) return;
  const void* xp = x.data();
  void* y = const_cast<void*>(out.data());
  const bool f32 = ember::dtype_of(x) == ember::DType::f32;  // touches Python: before the
  py::gil_scoped_release nogil;                               // GIL is released
  if (f32)
    ember::layernorm_fwd(static_cast<const float*>(xp), static_cast<float*>(y), rows, n,
                         static_cast<const float*>(w), static_cast<const float*>(b), eps, rms,
                         static_cast<float*>(mean), static_cast<float*>(rstd));
  else
    ember::layernorm_fwd(static_cast<const double*>(xp), static_cast<double*>(y), rows, n,
                         static_cast<const double*>(w), static_cast<const double*>(b), eps, rms,
                         static_cast<double*>(mean), static_cast<double*>(rstd));
}

void bwd_py(const py::object& g_obj, const py::object& x_obj, int64_t n,
            const py::object& mean_obj, const py::object& rstd_obj, const py::object& w_obj,
            bool rms, const py::object& gx_obj, const py::object& gw_obj,
            const py::object& gb_obj) {
  const char* op = op_name(rms);
  const py::array x = ember::as_ndarray(x_obj, op, "input");
  const int64_t rows = rows_of(x, n, op);
  const py::array g = ember::as_ndarray(g_obj, op, "grad_out");
  ember::require_same_layout(x, "input", g, op, "grad_out");
  ember::require_c_contiguous(g, op, "grad_out");
  ember::require_aligned(g, op, "grad_out");
  EMBER_CHECK_VALUE(rms || !mean_obj.is_none(), op, "mean must be an array for layer norm");
  std::vector<py::array> ins{x, g}, outs;
  const void* mean = opt(rms ? py::none() : mean_obj, x, op, "mean", rows, false, &ins);
  const void* rstd = opt(rstd_obj, x, op, "rstd", rows, false, &ins);
  EMBER_CHECK_VALUE(rstd != nullptr, op, "rstd must be an array");
  const void* w = opt(w_obj, x, op, "weight", n, false, &ins);
  void* gx = nullptr;
  if (!gx_obj.is_none()) {
    const py::array a = ember::as_ndarray(gx_obj, op, "grad_in");
    ember::require_same_layout(x, "input", a, op, "grad_in");
    ember::require_c_contiguous(a, op, "grad_in");
    ember::require_aligned(a, op, "grad_in");
    ember::require_writeable(a, op, "grad_in");
    outs.push_back(a);
    gx = const_cast<void*>(a.data());
  }
  void* gw = const_cast<void*>(opt(gw_obj, x, op, "grad_weight", n, true, &outs));
  void* gb = const_cast<void*>(opt(gb_obj, x, op, "grad_bias", n, true, &outs));
  no_overlap(op, outs, ins);
  if (n == 0) return;
  const void* gp = g.data();
  const void* xp = x.data();
  const bool f32 = ember::dtype_of(x) == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::layernorm_bwd(static_cast<const float*>(gp), static_cast<const float*>(xp), rows, n,
                         static_cast<const float*>(mean), static_cast<const float*>(rstd),
                         static_cast<const float*>(w), rms, static_cast<float*>(gx),
                         static_cast<float*>(gw), static_cast<float*>(gb));
  else
    ember::layernorm_bwd(static_cast<const double*>(gp), static_cast<const double*>(xp), rows,
                         n, static_cast<const double*>(mean), static_cast<const double*>(rstd),
                         static_cast<const double*>(w), rms, static_cast<double*>(gx),
                         static_cast<double*>(gw), static_cast<double*>(gb));
}

}  // namespace

EMBER_BIND(layernorm) {
  m.def("layernorm_fwd", &fwd_py, py::arg("x"), py::arg("n"), py::arg("weight"), py::arg("bias"),
        py::arg("eps"), py::arg("rms"), py::arg("out"), py::arg("mean"), py::arg("rstd"),
        "Layer norm (rms=False) or RMS norm over the trailing n elements of each row; writes "
        "out, mean (layer norm) and rstd per row.");
  m.def("layernorm_bwd", &bwd_py, py::arg("grad_out"), py::arg("x"), py::arg("n"),
        py::arg("mean"), py::arg("rstd"), py::arg("weight"), py::arg("rms"), py::arg("grad_in"),
        py::arg("grad_weight"), py::arg("grad_bias"),
        "Layer / RMS norm backward; grad_in, grad_weight, grad_bias may each be None.");
}
