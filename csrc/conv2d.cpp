// conv2d.cpp -- _C.conv2d_fwd / conv2d_bwd_data / conv2d_bwd_weight (numpy, CPU).
//
// conv2d_fwd(x, weight, bias, out, stride, padding, dilation, groups)
// conv2d_bwd_data(grad_out, weight, grad_in, stride, padding, dilation, groups)
// conv2d_bwd_weight(grad_out, x, grad_weight, grad_bias, kernel_size, stride, padding,
//                   dilation, groups)          grad_weight / grad_bias may be None
// x / grad_in [N, C, H, W], weight / grad_weight [O, C/groups, KH, KW], bias / grad_bias [O],
// out / grad_out [N, O, OH, OW]; float32 or float64 (all the same), C-contiguous, aligned.
// stride and dilation are (h, w) pairs >= 1; padding is (top, bottom, left, right) >= 0 (the
// asymmetric form is what "same" needs for even kernels). OH = (H + top + bottom -
// dilation_h*(KH-1) - 1) / stride_h + 1 must be >= 1, likewise OW. Outputs must be writeable
// and must not overlap an input.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <tuple>
#include <utility>
#include <vector>

#include "csrc/array.h"
#include "csrc/check.h"
#include "csrc/registry.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace {

constexpr const char* kOp = "conv2d";

using Pair = std::pair<int64_t, int64_t>;
using Quad = std::tuple<int64_t, int64_t, int64_t, int64_t>;

py::array array4(const py::object& obj, const char* name) {
  py::array a = ember::as_ndarray(obj, kOp, name);
  ember::require_float(a, kOp, name);
  EMBER_CHECK_VALUE(a.ndim() == 4, kOp, name, " must be 4-D, got shape ", ember::shape_str(a));
  ember::require_c_contiguous(a, kOp, name);
  ember::require_aligned(a, kOp, name);
  return a;
}

void same_dtype(const py::array& ref, const char* ref_name, const py::array& a, const char* name) {
  EMBER_CHECK_TYPE(ember::dtype_of(a) == ember::dtype_of(ref), kOp, name, " has dtype ",
                   ember::dtype_str(a), " but ", ref_name, " has ", ember::dtype_str(ref));
}

// Geometry from the input shape, the weight shape and the parameters; validates all of them.
ember::Conv2dDims geometry(const int64_t* in, const int64_t* wt, const Pair& stride,
                           const Quad& pad, const Pair& dil, int64_t groups) {
  ember::Conv2dDims d{};
  d.N = in[0], d.C = in[1], d.H = in[2], d.W = in[3];
  d.O = wt[0], d.KH = wt[2], d.KW = wt[3];
  d.sh = stride.first, d.sw = stride.second, d.dh = dil.first, d.dw = dil.second;
  const auto [pt, pb, pl, pr] = pad;
  d.ph = pt, d.pw = pl, d.G = groups;
  EMBER_CHECK_VALUE(groups >= 1, kOp, "groups must be >= 1, got ", groups);
  EMBER_CHECK_VALUE(d.sh >= 1 && d.sw >= 1, kOp, "stride must be >= 1, got (", d.sh, ", ", d.sw, ")");
  EMBER_CHECK_VALUE(d.dh >= 1 && d.dw >= 1, kOp, "dilation must be >= 1, got (", d.dh, ", ", d.dw,
                    ")");
  EMBER_CHECK_VALUE(pt >= 0 && pb >= 0 && pl >= 0 && pr >= 0, kOp,
                    "padding must be non-negative, got (", pt, ", ", pb, ", ", pl, ", ", pr, ")");
  EMBER_CHECK_VALUE(d.C % groups == 0, kOp, "input channels (", d.C,
                    ") must be divisible by groups (", groups, ")");
  EMBER_CHECK_VALUE(d.O % groups == 0, kOp, "output channels (", d.O,
                    ") must be divisible by groups (", groups, ")");
  EMBER_CHECK_VALUE(wt[1] * groups == d.C, kOp, "input has ", d.C, " channels but weight expects ",
                    wt[1] * groups, " (", wt[1], " per group x ", groups, " groups)");
  EMBER_CHECK_VALUE(d.KH >= 1 && d.KW >= 1, kOp, "kernel size must be >= 1, got (", d.KH, ", ",
                    d.KW, ")");
  const int64_t eh = d.dh * (d.KH - 1) + 1, ew = d.dw * (d.KW - 1) + 1;
  const int64_t Hp = d.H + pt + pb, Wp = d.W + pl + pr;
  EMBER_CHECK_VALUE(eh <= Hp && ew <= Wp, kOp, "kernel extent (", eh, ", ", ew,
                    ") is larger than the padded input (", Hp, ", ", Wp, ")");
  d.OH = (Hp - eh) / d.sh + 1;
  d.OW = (Wp - ew) / d.sw + 1;
  return d;
}

std::vector<int64_t> dims_of(const py::array& a) {
  std::vector<int64_t> v(static_cast<size_t>(a.ndim()));
  for (py::ssize_t i = 0; i < a.ndim(); ++i) v[static_cast<size_t>(i)] = a.shape(i);
  return v;
}

void check_shape(const py::array& a, const char* name, int64_t s0, int64_t s1, int64_t s2,
                 int64_t s3) {
  EMBER_CHECK_VALUE(a.shape(0) == s0 && a.shape(1) == s1 && a.shape(2) == s2 && a.shape(3) == s3,
                    kOp, name, " must have shape [", s0, ", ", s1, ", ", s2, ", ", s3, "], got ",
                    ember::shape_str(a));
}

const void* vec_or_null(const py::object& obj, const py::array& ref, int64_t O, const char* name,
                        bool write, std::vector<py::array>* keep) {
  if (obj.is_none()) return nullptr;
  py::array a = ember::as_ndarray(obj, kOp, name);
  same_dtype(ref, "input", a, name);
  EMBER_CHECK_VALUE(a.ndim() == 1 && a.shape(0) == O, kOp, name, " must have shape [", O,
                    "], got ", ember::shape_str(a));
  ember::require_c_contiguous(a, kOp, name);
  ember::require_aligned(a, kOp, name);
  if (write) ember::require_writeable(a, kOp, name);
  keep->push_back(a);
  return a.data();
}

void outputs_ok(const std::vector<py::array>& outs, const std::vector<py::array>& ins) {
  for (size_t i = 0; i < outs.size(); ++i) {
    ember::require_writeable(outs[i], kOp, "output");
    for (const py::array& in : ins)
      EMBER_CHECK_VALUE(!ember::overlaps(outs[i], in), kOp, "an output overlaps an input");
    for (size_t j = i + 1; j < outs.size(); ++j)
      EMBER_CHECK_VALUE(!ember::overlaps(outs[i], outs[j]), kOp, "outputs overlap each other");
  }
}

void fwd_py(const py::object& x_obj, const py::object& w_obj, const py::object& b_obj,
            const py::object& y_obj, const Pair& stride, const Quad& pad, const Pair& dil,
            int64_t groups) {
  const py::array x = array4(x_obj, "input"), w = array4(w_obj, "weight");
  same_dtype(x, "input", w, "weight");
  const auto xs = dims_of(x), ws = dims_of(w);
  const ember::Conv2dDims d = geometry(xs.data(), ws.data(), stride, pad, dil, groups);
  std::vector<py::array> ins{x, w}, outs;
  const void* b = vec_or_null(b_obj, x, d.O, "bias", false, &ins);
  const py::array y = array4(y_obj, "out");
  same_dtype(x, "input", y, "out");
  check_shape(y, "out", d.N, d.O, d.OH, d.OW);
  outs.push_back(y);
  outputs_ok(outs, ins);
  const void *xp = x.data(), *wp = w.data();
  void* yp = const_cast<void*>(y.data());
  const bool f32 = ember::dtype_of(x) == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::conv2d_fwd(static_cast<const float*>(xp), static_cast<const float*>(wp),
                      static_cast<const float*>(b), static_cast<float*>(yp), d);
  else
    ember::conv2d_fwd(static_cast<const double*>(xp), static_cast<const double*>(wp),
                      static_cast<const double*>(b), static_cast<double*>(yp), d);
}

void bwd_data_py(const py::object& g_obj, const py::object& w_obj, const py::object& gx_obj,
                 const Pair& stride, const Quad& pad, const Pair& dil, int64_t groups) {
  const py::array g = array4(g_obj, "grad_out"), w = array4(w_obj, "weight");
  same_dtype(g, "grad_out", w, "weight");
  const py::array gx = array4(gx_obj, "grad_in");
  same_dtype(g, "grad_out", gx, "grad_in");
  const auto xs = dims_of(gx), ws = dims_of(w);
  const ember::Conv2dDims d = geometry(xs.data(), ws.data(), stride, pad, dil, groups);
  check_shape(g, "grad_out", d.N, d.O, d.OH, d.OW);
  outputs_ok({gx}, {g, w});
  const void *gp = g.data(), *wp = w.data();
  void* gxp = const_cast<void*>(gx.data());
  const bool f32 = ember::dtype_of(g) == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::conv2d_bwd_data(static_cast<const float*>(gp), static_cast<const float*>(wp),
                           static_cast<float*>(gxp), d);
  else
    ember::conv2d_bwd_data(static_cast<const double*>(gp), static_cast<const double*>(wp),
                           static_cast<double*>(gxp), d);
}

void bwd_weight_py(const py::object& g_obj, const py::object& x_obj, const py::object& gw_obj,
                   const py::object& gb_obj, const Pair& ksize, const Pair& stride,
                   const Quad& pad, const Pair& dil, int64_t groups) {
  const py::array g = array4(g_obj, "grad_out"), x = array4(x_obj, "input");
  same_dtype(x, "input", g, "grad_out");
  const auto xs = dims_of(x);
  EMBER_CHECK_VALUE(groups >= 1, kOp, "groups must be >= 1, got ", groups);
  const int64_t ws[4] = {g.shape(1), xs[1] / groups, ksize.first, ksize.second};
  const ember::Conv2dDims d = geometry(xs.data(), ws, stride, pad, dil, groups);
  check_shape(g, "grad_out", d.N, d.O, d.OH, d.OW);
  std::vector<py::array> outs;
  void* gw = nullptr;
  if (!gw_obj.is_none()) {
    const py::array a = array4(gw_obj, "grad_weight");
    same_dtype(x, "input", a, "grad_weight");
    check_shape(a, "grad_weight", ws[0], ws[1], ws[2], ws[3]);
    outs.push_back(a);
    gw = const_cast<void*>(a.data());
  }
  std::vector<py::array> keep;
  void* gb = const_cast<void*>(vec_or_null(gb_obj, x, d.O, "grad_bias", true, &keep));
  if (gb) outs.push_back(keep[0]);
  outputs_ok(outs, {g, x});
  const void *gp = g.data(), *xp = x.data();
  const bool f32 = ember::dtype_of(x) == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::conv2d_bwd_weight(static_cast<const float*>(gp), static_cast<const float*>(xp),
                             static_cast<float*>(gw), static_cast<float*>(gb), d);
  else
    ember::conv2d_bwd_weight(static_cast<const double*>(gp), static_cast<const double*>(xp),
                             static_cast<double*>(gw), static_cast<double*>(gb), d);
}

}  // namespace

EMBER_BIND(conv2d) {
  m.def("_set_conv_workspace_limit", &ember::conv2d_set_workspace_limit, py::arg("bytes"),
        "Make conv2d workspace requests above `bytes` fail like a failed allocation "
        "(MemoryError); 0 turns it off. For tests.");
  m.def("conv2d_fwd", &fwd_py, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        "2-D convolution forward, NCHW; padding = (top, bottom, left, right).");
  m.def("conv2d_bwd_data", &bwd_data_py, py::arg("grad_out"), py::arg("weight"),
        py::arg("grad_in"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
        py::arg("groups"), "2-D convolution gradient with respect to the input.");
  m.def("conv2d_bwd_weight", &bwd_weight_py, py::arg("grad_out"), py::arg("x"),
        py::arg("grad_weight"), py::arg("grad_bias"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        "2-D convolution gradients with respect to the weight and the bias (either may be "
        "None).");
}
