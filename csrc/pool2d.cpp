// pool2d.cpp -- _C.maxpool2d_* / avgpool2d_* / adaptive_*pool2d_* (numpy, CPU).
//
// maxpool2d_fwd(x, kH, kW, sH, sW, pH, pW, dH, dW, ceil_mode, out, indices)  indices: or None
// maxpool2d_bwd(grad_out, indices, grad_in)             (also adaptive max pool's backward)
// avgpool2d_fwd(x, kH, kW, sH, sW, pH, pW, ceil_mode, count_include_pad, divisor, out)
// avgpool2d_bwd(grad_out, kH, kW, sH, sW, pH, pW, ceil_mode, count_include_pad, divisor,
//               grad_in)          divisor: 0 = no override (PyTorch refuses 0 itself)
// adaptive_avgpool2d_fwd(x, out) / adaptive_avgpool2d_bwd(grad_out, grad_in)
// adaptive_maxpool2d_fwd(x, out, indices)
// x, grad_in: float32/float64 [N, C, H, W]; out, grad_out: [N, C, OH, OW] of the same dtype;
// indices: int64 of out's shape. All C-contiguous; outputs writeable and not overlapping an
// input. The window parameters are checked with PyTorch's rules (kernel, stride, dilation > 0,
// 0 <= padding <= kernel / 2) and out's shape must be the output size they give (ceil_mode:
// the last window must start inside the input or the left padding), which must be >= 1.
// Values of `indices` given to the backward are not trusted: out-of-plane ones are skipped.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "csrc/array.h"
#include "csrc/check.h"
#include "csrc/registry.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace {

struct Nchw {
  int64_t N = 0, C = 0, H = 0, W = 0;
  bool f32 = true;
};

Nchw activation(const py::array& a, const char* op, const char* name) {
  ember::require_float(a, op, name);
  EMBER_CHECK_VALUE(a.ndim() == 4, op, name, " must be 4-D [N, C, H, W], got shape ",
                    ember::shape_str(a));
  ember::require_c_contiguous(a, op, name);
  ember::require_aligned(a, op, name);
  Nchw d;
  d.N = a.shape(0);
  d.C = a.shape(1);
  d.H = a.shape(2);
  d.W = a.shape(3);
  d.f32 = ember::dtype_of(a) == ember::DType::f32;
  return d;
}

// An output / second operand of shape [N, C, h, w] with ref's dtype.
py::array companion(const py::object& obj, const py::array& ref, const char* ref_name,
                    const Nchw& d, int64_t h, int64_t w, const char* op, const char* name,
                    bool write) {
  py::array a = ember::as_ndarray(obj, op, name);
  EMBER_CHECK_TYPE(ember::dtype_of(a) == ember::dtype_of(ref), op, name, " has dtype ",
                   ember::dtype_str(a), " but ", ref_name, " has ", ember::dtype_str(ref));
  EMBER_CHECK_VALUE(a.ndim() == 4 && a.shape(0) == d.N && a.shape(1) == d.C &&
                        a.shape(2) == h && a.shape(3) == w,
                    op, name, " must have shape [", d.N, ", ", d.C, ", ", h, ", ", w,
                    "], got ", ember::shape_str(a));
  ember::require_c_contiguous(a, op, name);
  ember::require_aligned(a, op, name);
  if (write) ember::require_writeable(a, op, name);
  return a;
}

py::array index_array(const py::object& obj, const py::array& like, const char* op,
                      const char* name, bool write) {
  py::array a = ember::as_ndarray(obj, op, name);
  const py::dtype dt = a.dtype();
  EMBER_CHECK_TYPE(dt.kind() == 'i' && dt.itemsize() == 8 && dt.byteorder() != '>', op, name,
                   " must be int64, got ", ember::dtype_str(a));
  bool same = a.ndim() == like.ndim();
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == like.shape(i);
  EMBER_CHECK_VALUE(same, op, name, " has shape ", ember::shape_str(a),
                    " but the pooled output has ", ember::shape_str(like));
  ember::require_c_contiguous(a, op, name);
  ember::require_aligned(a, op, name);
  if (write) ember::require_writeable(a, op, name);
  return a;
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

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// PyTorch's pooling_output_shape.
int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil) {
  int64_t o = floor_div(in + 2 * p - d * (k - 1) - 1 + (ceil ? s - 1 : 0), s) + 1;
  if (ceil && (o - 1) * s >= in + p) --o;
  return o;
}

// Checks the window parameters against the input and returns the dims (OH, OW filled).
ember::Pool2dDims window(const char* op, const Nchw& x, int64_t kH, int64_t kW, int64_t sH,
                         int64_t sW, int64_t pH, int64_t pW, int64_t dH, int64_t dW,
                         bool ceil) {
  EMBER_CHECK_VALUE(kH > 0 && kW > 0, op, "kernel_size must be positive, got (", kH, ", ", kW,
                    ")");
  EMBER_CHECK_VALUE(sH > 0 && sW > 0, op, "stride must be positive, got (", sH, ", ", sW, ")");
  EMBER_CHECK_VALUE(dH > 0 && dW > 0, op, "dilation must be positive, got (", dH, ", ", dW,
                    ")");
  EMBER_CHECK_VALUE(pH >= 0 && pW >= 0 && pH <= kH / 2 && pW <= kW / 2, op,
                    "padding must be between 0 and half the kernel size, got padding (", pH,
                    ", ", pW, ") for kernel_size (", kH, ", ", kW, ")");
  EMBER_CHECK_VALUE(x.H > 0 && x.W > 0, op, "input has an empty spatial size (", x.H, ", ",
                    x.W, ")");
  ember::Pool2dDims d{x.N * x.C, x.H, x.W, 0, 0, kH, kW, sH, sW, pH, pW, dH, dW};
  d.OH = out_size(x.H, kH, sH, pH, dH, ceil);
  d.OW = out_size(x.W, kW, sW, pW, dW, ceil);
  EMBER_CHECK_VALUE(d.OH >= 1 && d.OW >= 1, op, "input of size (", x.H, ", ", x.W,
                    ") gives an output of size (", d.OH, ", ", d.OW, "): too small for the ",
                    "kernel (", kH, ", ", kW, ") with padding (", pH, ", ", pW,
                    ") and dilation (", dH, ", ", dW, ")");
  return d;
}

void maxpool_fwd_py(const py::object& x_obj, int64_t kH, int64_t kW, int64_t sH, int64_t sW,
                    int64_t pH, int64_t pW, int64_t dH, int64_t dW, bool ceil,
                    const py::object& out_obj, const py::object& idx_obj) {
  const char* op = "max_pool2d";
  const py::array x = ember::as_ndarray(x_obj, op, "input");
  const Nchw n = activation(x, op, "input");
  const ember::Pool2dDims d = window(op, n, kH, kW, sH, sW, pH, pW, dH, dW, ceil);
  const py::array out = companion(out_obj, x, "input", n, d.OH, d.OW, op, "out", true);
  int64_t* ip = nullptr;  // None: no indices (inference)
  if (idx_obj.is_none()) {
    no_overlap(op, {out}, {x});
  } else {
    const py::array idx = index_array(idx_obj, out, op, "indices", true);
    no_overlap(op, {out, idx}, {x});
    ip = static_cast<int64_t*>(const_cast<void*>(idx.data()));
  }
  if (d.NC == 0) return;
  const void* xp = x.data();
  void* yp = const_cast<void*>(out.data());
  py::gil_scoped_release nogil;
  if (n.f32)
    ember::maxpool2d_fwd(static_cast<const float*>(xp), static_cast<float*>(yp), ip, d);
  else
    ember::maxpool2d_fwd(static_cast<const double*>(xp), static_cast<double*>(yp), ip, d);
}

void maxpool_bwd_py(const py::object& g_obj, const py::object& idx_obj,
                    const py::object& gx_obj) {
  const char* op = "max_pool2d";
  const py::array g = ember::as_ndarray(g_obj, op, "grad_out");
  const Nchw ng = activation(g, op, "grad_out");
  const py::array idx = index_array(idx_obj, g, op, "indices", false);
  const py::array gx = ember::as_ndarray(gx_obj, op, "grad_in");
  const Nchw nx = activation(gx, op, "grad_in");
  companion(gx_obj, g, "grad_out", ng, nx.H, nx.W, op, "grad_in", true);
  no_overlap(op, {gx}, {g, idx});
  const int64_t NC = ng.N * ng.C;
  if (NC == 0 || nx.H * nx.W == 0) return;
  const void* gp = g.data();
  void* gxp = const_cast<void*>(gx.data());
  const auto* ip = static_cast<const int64_t*>(idx.data());
  const int64_t in = nx.H * nx.W, outp = ng.H * ng.W;
  py::gil_scoped_release nogil;
  if (ng.f32)
    ember::maxpool2d_bwd(static_cast<const float*>(gp), ip, static_cast<float*>(gxp), NC, in,
                         outp);
  else
    ember::maxpool2d_bwd(static_cast<const double*>(gp), ip, static_cast<double*>(gxp), NC, in,
                         outp);
}

void avgpool_fwd_py(const py::object& x_obj, int64_t kH, int64_t kW, int64_t sH, int64_t sW,
                    int64_t pH, int64_t pW, bool ceil, bool include_pad, int64_t div,
                    const py::object& out_obj) {
  const char* op = "avg_pool2d";
  const py::array x = ember::as_ndarray(x_obj, op, "input");
  const Nchw n = activation(x, op, "input");
  const ember::Pool2dDims d = window(op, n, kH, kW, sH, sW, pH, pW, 1, 1, ceil);
  const py::array out = companion(out_obj, x, "input", n, d.OH, d.OW, op, "out", true);
  no_overlap(op, {out}, {x});
  if (d.NC == 0) return;
  const void* xp = x.data();
  void* yp = const_cast<void*>(out.data());
  py::gil_scoped_release nogil;
  if (n.f32)
    ember::avgpool2d_fwd(static_cast<const float*>(xp), static_cast<float*>(yp), d, include_pad,
                         div);
  else
    ember::avgpool2d_fwd(static_cast<const double*>(xp), static_cast<double*>(yp), d,
                         include_pad, div);
}

void avgpool_bwd_py(const py::object& g_obj, int64_t kH, int64_t kW, int64_t sH, int64_t sW,
                    int64_t pH, int64_t pW, bool ceil, bool include_pad, int64_t div,
                    const py::object& gx_obj) {
  const char* op = "avg_pool2d";
  const py::array gx = ember::as_ndarray(gx_obj, op, "grad_in");
  const Nchw n = activation(gx, op, "grad_in");
  ember::require_writeable(gx, op, "grad_in");
  const ember::Pool2dDims d = window(op, n, kH, kW, sH, sW, pH, pW, 1, 1, ceil);
  const py::array g = companion(g_obj, gx, "grad_in", n, d.OH, d.OW, op, "grad_out", false);
  no_overlap(op, {gx}, {g});
  if (d.NC == 0) return;
  const void* gp = g.data();
  void* gxp = const_cast<void*>(gx.data());
  py::gil_scoped_release nogil;
  if (n.f32)
    ember::avgpool2d_bwd(static_cast<const float*>(gp), static_cast<float*>(gxp), d,
                         include_pad, div);
  else
    ember::avgpool2d_bwd(static_cast<const double*>(gp), static_cast<double*>(gxp), d,
                         include_pad, div);
}

// Adaptive: x [N, C, H, W] (H, W >= 1) and out [N, C, OH, OW] (OH, OW >= 1).
void adaptive_dims(const char* op, const Nchw& x, const py::array& out) {
  EMBER_CHECK_VALUE(x.H > 0 && x.W > 0, op, "input has an empty spatial size (", x.H, ", ",
                    x.W, ")");
  EMBER_CHECK_VALUE(out.ndim() == 4 && out.shape(2) > 0 && out.shape(3) > 0, op,
                    "output size must be positive, got ", ember::shape_str(out));
}

void adaptive_avg_fwd_py(const py::object& x_obj, const py::object& out_obj) {
  const char* op = "adaptive_avg_pool2d";
  const py::array x = ember::as_ndarray(x_obj, op, "input");
  const Nchw n = activation(x, op, "input");
  const py::array o = ember::as_ndarray(out_obj, op, "out");
  adaptive_dims(op, n, o);
  const py::array out = companion(out_obj, x, "input", n, o.shape(2), o.shape(3), op, "out",
                                  true);
  no_overlap(op, {out}, {x});
  if (n.N * n.C == 0) return;
  const int64_t OH = o.shape(2), OW = o.shape(3);
  const void* xp = x.data();
  void* yp = const_cast<void*>(out.data());
  py::gil_scoped_release nogil;
  if (n.f32)
    ember::adaptive_avgpool2d_fwd(static_cast<const float*>(xp), static_cast<float*>(yp),
                                  n.N * n.C, n.H, n.W, OH, OW);
  else
    ember::adaptive_avgpool2d_fwd(static_cast<const double*>(xp), static_cast<double*>(yp),
                                  n.N * n.C, n.H, n.W, OH, OW);
}

void adaptive_avg_bwd_py(const py::object& g_obj, const py::object& gx_obj) {
  const char* op = "adaptive_avg_pool2d";
  const py::array gx = ember::as_ndarray(gx_obj, op, "grad_in");
  const Nchw n = activation(gx, op, "grad_in");
  ember::require_writeable(gx, op, "grad_in");
  const py::array go = ember::as_ndarray(g_obj, op, "grad_out");
  adaptive_dims(op, n, go);
  const py::array g = companion(g_obj, gx, "grad_in", n, go.shape(2), go.shape(3), op,
                                "grad_out", false);
  no_overlap(op, {gx}, {g});
  if (n.N * n.C == 0) return;
  const int64_t OH = g.shape(2), OW = g.shape(3);
  const void* gp = g.data();
  void* gxp = const_cast<void*>(gx.data());
  py::gil_scoped_release nogil;
  if (n.f32)
    ember::adaptive_avgpool2d_bwd(static_cast<const float*>(gp), static_cast<float*>(gxp),
                                  n.N * n.C, n.H, n.W, OH, OW);
  else
    ember::adaptive_avgpool2d_bwd(static_cast<const double*>(gp), static_cast<double*>(gxp),
                                  n.N * n.C, n.H, n.W, OH, OW);
}

void adaptive_max_fwd_py(const py::object& x_obj, const py::object& out_obj,
                         const py::object& idx_obj) {
  const char* op = "adaptive_max_pool2d";
  const py::array x = ember::as_ndarray(x_obj, op, "input");
  const Nchw n = activation(x, op, "input");
  const py::array o = ember::as_ndarray(out_obj, op, "out");
  adaptive_dims(op, n, o);
  const py::array out = companion(out_obj, x, "input", n, o.shape(2), o.shape(3), op, "out",
                                  true);
  const py::array idx = index_array(idx_obj, out, op, "indices", true);
  no_overlap(op, {out, idx}, {x});
  if (n.N * n.C == 0) return;
  const int64_t OH = o.shape(2), OW = o.shape(3);
  const void* xp = x.data();
  void* yp = const_cast<void*>(out.data());
  auto* ip = static_cast<int64_t*>(const_cast<void*>(idx.data()));
  py::gil_scoped_release nogil;
  if (n.f32)
    ember::adaptive_maxpool2d_fwd(static_cast<const float*>(xp), static_cast<float*>(yp), ip,
                                  n.N * n.C, n.H, n.W, OH, OW);
  else
    ember::adaptive_maxpool2d_fwd(static_cast<const double*>(xp), static_cast<double*>(yp), ip,
                                  n.N * n.C, n.H, n.W, OH, OW);
}

int64_t output_size_py(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil) {
  return out_size(in, k, s, p, d, ceil);
}

}  // namespace

EMBER_BIND(pool2d) {
  m.def("pool_output_size", &output_size_py, py::arg("size"), py::arg("kernel"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"),
        "PyTorch's pooling output size along one dim (may be < 1: the caller rejects it).");
  m.def("maxpool2d_fwd", &maxpool_fwd_py, py::arg("x"), py::arg("kH"), py::arg("kW"),
        py::arg("sH"), py::arg("sW"), py::arg("pH"), py::arg("pW"), py::arg("dH"),
        py::arg("dW"), py::arg("ceil_mode"), py::arg("out"), py::arg("indices"),
        "Max pooling on [N, C, H, W]: out and int64 argmax indices (flat within the plane).");
  m.def("maxpool2d_bwd", &maxpool_bwd_py, py::arg("grad_out"), py::arg("indices"),
        py::arg("grad_in"), "Max pooling backward: grad_in = scatter-add through indices.");
  m.def("avgpool2d_fwd", &avgpool_fwd_py, py::arg("x"), py::arg("kH"), py::arg("kW"),
        py::arg("sH"), py::arg("sW"), py::arg("pH"), py::arg("pW"), py::arg("ceil_mode"),
        py::arg("count_include_pad"), py::arg("divisor"), py::arg("out"),
        "Average pooling on [N, C, H, W] (divisor 0: no divisor_override).");
  m.def("avgpool2d_bwd", &avgpool_bwd_py, py::arg("grad_out"), py::arg("kH"), py::arg("kW"),
        py::arg("sH"), py::arg("sW"), py::arg("pH"), py::arg("pW"), py::arg("ceil_mode"),
        py::arg("count_include_pad"), py::arg("divisor"), py::arg("grad_in"),
        "Average pooling backward.");
  m.def("adaptive_avgpool2d_fwd", &adaptive_avg_fwd_py, py::arg("x"), py::arg("out"),
        "Adaptive average pooling to out's spatial size.");
  m.def("adaptive_avgpool2d_bwd", &adaptive_avg_bwd_py, py::arg("grad_out"), py::arg("grad_in"),
        "Adaptive average pooling backward.");
  m.def("adaptive_maxpool2d_fwd", &adaptive_max_fwd_py, py::arg("x"), py::arg("out"),
        py::arg("indices"), "Adaptive max pooling: out and int64 argmax indices.");
}
