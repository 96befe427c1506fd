// batchnorm.cpp -- _C.batchnorm_fwd_train / batchnorm_fwd_eval / batchnorm_bwd (numpy, CPU).
//
// batchnorm_fwd_train(x, weight, bias, eps, out, mean, var, invstd)
//     out = (x - mean) * invstd * weight + bias with the batch statistics per channel; writes
//     mean, var (biased) and invstd [C]. Refuses N*S == 1 (PyTorch's message).
// batchnorm_fwd_eval(x, running_mean, running_var, weight, bias, eps, out)
// batchnorm_bwd(grad_out, x, mean, invstd, weight, train, grad_in, grad_weight, grad_bias)
//     grad_in / grad_weight / grad_bias may be None (not computed).
// x, out, grad_out, grad_in: float32/float64, ndim >= 2, C = shape[1], C-contiguous, all the
// same shape. Per-channel arrays: 1-D of C elements, same dtype, C-contiguous. weight / bias
// may be None. Outputs must be writeable and must not overlap any input.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "csrc/array.h"
#include "csrc/check.h"
#include "csrc/registry.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace {

constexpr const char* kOp = "batch_norm";

struct Dims {
  int64_t N = 0, C = 0, S = 1;
  bool f32 = true;
};

Dims activation(const py::array& x, const char* name) {
  ember::require_float(x, kOp, name);
  EMBER_CHECK_VALUE(x.ndim() >= 2, kOp, name, " must have at least 2 dims [N, C, ...], got shape ",
                    ember::shape_str(x));
  ember::require_c_contiguous(x, kOp, name);
  ember::require_aligned(x, kOp, name);
  Dims d;
  d.N = x.shape(0);
  d.C = x.shape(1);
  for (py::ssize_t i = 2; i < x.ndim(); ++i) d.S *= x.shape(i);
  d.f32 = ember::dtype_of(x) == ember::DType::f32;
  return d;
}

void same_as(const py::array& ref, const char* ref_name, const py::array& a, const char* name) {
  ember::require_same_layout(ref, ref_name, a, kOp, name);
  ember::require_c_contiguous(a, kOp, name);
  ember::require_aligned(a, kOp, name);
}

// A per-channel array (or nullptr for None when allowed).
const void* channel_vec(const py::object& obj, const py::array& x, const Dims& d,
                        const char* name, bool allow_none, bool write,
                        std::vector<py::array>* keep) {
  if (obj.is_none()) {
    EMBER_CHECK_VALUE(allow_none, kOp, name, " must be an array, got None");
    return nullptr;
  }
  py::array a = ember::as_ndarray(obj, kOp, name);
  EMBER_CHECK_TYPE(ember::dtype_of(a) == ember::dtype_of(x), kOp, name, " has dtype ",
                   ember::dtype_str(a), " but the input has ", ember::dtype_str(x));
  EMBER_CHECK_VALUE(a.ndim() == 1 && a.shape(0) == d.C, kOp, name, " must have shape [", d.C,
                    "] (one value per channel), got ", ember::shape_str(a));
  ember::require_c_contiguous(a, kOp, name);
  ember::require_aligned(a, kOp, name);
  if (write) ember::require_writeable(a, kOp, name);
  keep->push_back(a);
  return a.data();
}

void no_overlap(const py::array& out, const char* out_name, const std::vector<py::array>& ins) {
  for (const py::array& in : ins)
    EMBER_CHECK_VALUE(!ember::overlaps(out, in), kOp, out_name, " overlaps an input");
}

void fwd_train_py(const py::object& x_obj, const py::object& w_obj, const py::object& b_obj,
                  double eps, const py::object& out_obj, const py::object& mean_obj,
                  const py::object& var_obj, const py::object& inv_obj) {
  const py::array x = ember::as_ndarray(x_obj, kOp, "input");
  const Dims d = activation(x, "input");
  const py::array out = ember::as_ndarray(out_obj, kOp, "out");
  same_as(x, "input", out, "out");
  ember::require_writeable(out, kOp, "out");
  const int64_t n = d.N * d.S;
  EMBER_CHECK_VALUE(n > 1, kOp, "expected more than 1 value per channel when training, got input of shape ",
                    ember::shape_str(x));
  std::vector<py::array> ins{x}, outs;
  const void* w = channel_vec(w_obj, x, d, "weight", true, false, &ins);
  const void* b = channel_vec(b_obj, x, d, "bias", true, false, &ins);
  void* mean = const_cast<void*>(channel_vec(mean_obj, x, d, "mean", false, true, &outs));
  void* var = const_cast<void*>(channel_vec(var_obj, x, d, "var", false, true, &outs));
  void* inv = const_cast<void*>(channel_vec(inv_obj, x, d, "invstd", false, true, &outs));
  no_overlap(out, "out", ins);
  for (const py::array& o : outs) no_overlap(o, "a statistics output", ins);
  EMBER_CHECK_VALUE(!ember::overlaps(outs[0], outs[1]) && !ember::overlaps(outs[0], outs[2]) &&
                        !ember::overlaps(outs[1], outs[2]) && !ember::overlaps(out, outs[0]) &&
                        !ember::overlaps(out, outs[1]) && !ember::overlaps(out, outs[2]),
                    kOp, "outputs overlap each other");
  if (d.C == 0) return;
  const void* xp = x.data();
  void* y = const_cast<void*>(out.data());
  py::gil_scoped_release nogil;
  if (d.f32)
    ember::batchnorm_fwd_train(static_cast<const float*>(xp), static_cast<float*>(y), d.N, d.C,
                               d.S, static_cast<const float*>(w), static_cast<const float*>(b),
                               eps, static_cast<float*>(mean), static_cast<float*>(var),
                               static_cast<float*>(inv));
  else
    ember::batchnorm_fwd_train(static_cast<const double*>(xp), static_cast<double*>(y), d.N,
                               d.C, d.S, static_cast<const double*>(w),
                               static_cast<const double*>(b), eps, static_cast<double*>(mean),
                               static_cast<double*>(var), static_cast<double*>(inv));
}

void fwd_eval_py(const py::object& x_obj, const py::object& rm_obj, const py::object& rv_obj,
                 const py::object& w_obj, const py::object& b_obj, double eps,
                 const py::object& out_obj) {
  const py::array x = ember::as_ndarray(x_obj, kOp, "input");
  const Dims d = activation(x, "input");
  const py::array out = ember::as_ndarray(out_obj, kOp, "out");
  same_as(x, "input", out, "out");
  ember::require_writeable(out, kOp, "out");
  std::vector<py::array> ins{x};
  const void* rm = channel_vec(rm_obj, x, d, "running_mean", false, false, &ins);
  const void* rv = channel_vec(rv_obj, x, d, "running_var", false, false, &ins);
  const void* w = channel_vec(w_obj, x, d, "weight", true, false, &ins);
  const void* b = channel_vec(b_obj, x, d, "bias", true, false, &ins);
  no_overlap(out, "out", ins);
  if (x.size() == 0) return;
  const void* xp = x.data();
  void* y = const_cast<void*>(out.data());
  py::gil_scoped_release nogil;
  if (d.f32)
    ember::batchnorm_fwd_eval(static_cast<const float*>(xp), static_cast<float*>(y), d.N, d.C,
                              d.S, static_cast<const float*>(rm), static_cast<const float*>(rv),
                              static_cast<const float*>(w), static_cast<const float*>(b), eps);
  else
    ember::batchnorm_fwd_eval(static_cast<const double*>(xp), static_cast<double*>(y), d.N, d.C,
                              d.S, static_cast<const double*>(rm),
                              static_cast<const double*>(rv), static_cast<const double*>(w),
                              static_cast<const double*>(b), eps);
}

void bwd_py(const py::object& g_obj, const py::object& x_obj, const py::object& mean_obj,
            const py::object& inv_obj, const py::object& w_obj, bool train,
            const py::object& gx_obj, const py::object& gw_obj, const py::object& gb_obj) {
  const py::array x = ember::as_ndarray(x_obj, kOp, "input");
  const Dims d = activation(x, "input");
  const py::array g = ember::as_ndarray(g_obj, kOp, "grad_out");
  same_as(x, "input", g, "grad_out");
  std::vector<py::array> ins{x, g}, outs;
  const void* mean = channel_vec(mean_obj, x, d, "mean", false, false, &ins);
  const void* inv = channel_vec(inv_obj, x, d, "invstd", false, false, &ins);
  const void* w = channel_vec(w_obj, x, d, "weight", true, false, &ins);
  void* gx = nullptr;
  if (!gx_obj.is_none()) {
    const py::array a = ember::as_ndarray(gx_obj, kOp, "grad_in");
    same_as(x, "input", a, "grad_in");
    ember::require_writeable(a, kOp, "grad_in");
    outs.push_back(a);
    gx = const_cast<void*>(a.data());
  }
  void* gw = const_cast<void*>(channel_vec(gw_obj, x, d, "grad_weight", true, true, &outs));
  void* gb = const_cast<void*>(channel_vec(gb_obj, x, d, "grad_bias", true, true, &outs));
  for (size_t i = 0; i < outs.size(); ++i) {
    no_overlap(outs[i], "a gradient output", ins);
    for (size_t j = i + 1; j < outs.size(); ++j)
      EMBER_CHECK_VALUE(!ember::overlaps(outs[i], outs[j]), kOp, "gradient outputs overlap");
  }
  if (d.C == 0) return;
  const void* gp = g.data();
  const void* xp = x.data();
  py::gil_scoped_release nogil;
  if (d.f32)
    ember::batchnorm_bwd(static_cast<const float*>(gp), static_cast<const float*>(xp), d.N, d.C,
                         d.S, static_cast<const float*>(mean), static_cast<const float*>(inv),
                         static_cast<const float*>(w), train, static_cast<float*>(gx),
                         static_cast<float*>(gw), static_cast<float*>(gb));
  else
    ember::batchnorm_bwd(static_cast<const double*>(gp), static_cast<const double*>(xp), d.N,
                         d.C, d.S, static_cast<const double*>(mean),
                         static_cast<const double*>(inv), static_cast<const double*>(w), train,
                         static_cast<double*>(gx), static_cast<double*>(gw),
                         static_cast<double*>(gb));
}

}  // namespace

EMBER_BIND(batchnorm) {
  m.def("batchnorm_fwd_train", &fwd_train_py, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("eps"), py::arg("out"), py::arg("mean"), py::arg("var"), py::arg("invstd"),
        "Training batch-norm forward on [N, C, *]: out, and per-channel batch mean, biased "
        "var and invstd.");
  m.def("batchnorm_fwd_eval", &fwd_eval_py, py::arg("x"), py::arg("running_mean"),
        py::arg("running_var"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        py::arg("out"), "Eval batch-norm forward on [N, C, *] from running statistics.");
  m.def("batchnorm_bwd", &bwd_py, py::arg("grad_out"), py::arg("x"), py::arg("mean"),
        py::arg("invstd"), py::arg("weight"), py::arg("train"), py::arg("grad_in"),
        py::arg("grad_weight"), py::arg("grad_bias"),
        "Batch-norm backward; any of grad_in / grad_weight / grad_bias may be None.");
}
