// optim.cpp -- _C.sgd_step / adam_step / rmsprop_step / adagrad_step (multi-tensor, in place),
// _C.grad_norm_reduce (sum of squares / max-abs over a list) and the bandwidth probes
// _C._triad_seconds / _C._rmw4_seconds used by bench/bench_optim.py.
//
// Each *_step takes Python lists of numpy arrays: params[i], grads[i] and the state lists
// (same length, or None for an unused state) describe tensor i. All arrays of one call share
// one dtype (float32 or float64); within tensor i all have params[i].size elements. Params
// and state buffers are updated in place, so they must be C-contiguous, aligned, writeable and
// must not overlap each other or the grad (TypeError for dtype, ValueError otherwise). Grads
// are only read but must be C-contiguous too (the Python layer makes them so first).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "csrc/array.h"
#include "csrc/check.h"
#include "csrc/registry.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace {

// Checked pointers of one call: column c of `ptrs` holds list c's array for every tensor.
struct Lists {
  ember::DType dt = ember::DType::other;
  std::vector<int64_t> n;
  std::vector<std::vector<void*>> ptrs;  // [list][tensor]
};

// lists[0] = params (written), lists[1] = grads (read), lists[2..] = state (written or None).
Lists check_lists(const char* op, const std::vector<py::object>& lists,
                  const std::vector<const char*>& names) {
  Lists out;
  const py::list params = py::reinterpret_borrow<py::list>(lists[0]);
  const size_t count = py::len(params);
  std::vector<std::vector<py::array>> arrs(lists.size());
  for (size_t c = 0; c < lists.size(); ++c) {
    out.ptrs.emplace_back();
    if (lists[c].is_none()) {
      EMBER_CHECK_VALUE(c >= 2, op, names[c], " must be a list of arrays, got None");
      continue;
    }
    EMBER_CHECK_TYPE(py::isinstance<py::list>(lists[c]), op, names[c],
                     " must be a list of numpy arrays, got ", ember::type_name(lists[c]));
    const py::list l = py::reinterpret_borrow<py::list>(lists[c]);
    EMBER_CHECK_VALUE(py::len(l) == count, op, names[c], " has ", py::len(l), " arrays but ",
                      names[0], " has ", count);
    for (size_t t = 0; t < count; ++t) {
      const std::string nm = std::string(names[c]) + "[" + std::to_string(t) + "]";
      py::array a = ember::as_ndarray(l[t], op, nm.c_str());
      const ember::DType dt = ember::require_float(a, op, nm.c_str());
      if (c == 0 && t == 0) out.dt = dt;
      EMBER_CHECK_TYPE(dt == out.dt, op, nm, " has dtype ", ember::dtype_str(a), " but ",
                       names[0], "[0] has ", ember::dtype_str(arrs[0].empty() ? a : arrs[0][0]));
      if (c > 0)
        EMBER_CHECK_VALUE(a.size() == arrs[0][t].size(), op, nm, " has ", a.size(),
                          " elements but ", names[0], "[", t, "] has ", arrs[0][t].size());
      ember::require_c_contiguous(a, op, nm.c_str());
      ember::require_aligned(a, op, nm.c_str());
      if (c != 1) ember::require_writeable(a, op, nm.c_str());
      arrs[c].push_back(a);
    }
  }
  // Written buffers of a tensor must not overlap each other or its grad (all distinct memory).
  for (size_t t = 0; t < count; ++t)
    for (size_t c = 0; c < lists.size(); ++c)
      for (size_t d = c + 1; d < lists.size(); ++d) {
        if (arrs[c].empty() || arrs[d].empty()) continue;
        EMBER_CHECK_VALUE(!ember::overlaps(arrs[c][t], arrs[d][t]), op, names[c], "[", t,
                          "] overlaps ", names[d], "[", t, "]");
      }
  out.n.resize(count);
  for (size_t t = 0; t < count; ++t) out.n[t] = arrs[0][t].size();
  for (size_t c = 0; c < lists.size(); ++c)
    for (const py::array& a : arrs[c]) out.ptrs[c].push_back(const_cast<void*>(a.data()));
  return out;
}

template <typename T>
ember::OptimList<T> view(const Lists& l) {
  auto col = [&](size_t c) -> T* const* {
    if (c >= l.ptrs.size() || l.ptrs[c].empty()) return nullptr;
    return reinterpret_cast<T* const*>(l.ptrs[c].data());
  };
  ember::OptimList<T> o;
  o.count = static_cast<int64_t>(l.n.size());
  o.n = l.n.data();
  o.param = col(0);
  o.grad = const_cast<const T* const*>(col(1));
  o.s0 = col(2);
  o.s1 = col(3);
  o.s2 = col(4);
  return o;
}

void sgd_step_py(const py::object& params, const py::object& grads, const py::object& bufs,
                 double lr, double momentum, double dampening, double weight_decay,
                 bool nesterov, bool maximize, bool first) {
  const char* op = "sgd";
  EMBER_CHECK_VALUE(momentum == 0 || !bufs.is_none(), op,
                    "momentum_buffers is required when momentum != 0");
  const Lists l = check_lists(op, {params, grads, momentum == 0 ? py::none() : bufs},
                              {"params", "grads", "momentum_buffers"});
  if (l.n.empty()) return;
  const ember::SgdArgs a{lr, momentum, dampening, weight_decay, nesterov, maximize};
  py::gil_scoped_release nogil;
  if (l.dt == ember::DType::f32)
    ember::sgd_step(view<float>(l), a, first);
  else
    ember::sgd_step(view<double>(l), a, first);
}

void adam_step_py(const py::object& params, const py::object& grads, const py::object& m,
                  const py::object& v, const py::object& vmax, double lr, double beta1,
                  double beta2, double eps, double weight_decay, double bc1, double bc2,
                  bool decoupled, bool amsgrad, bool maximize) {
  const char* op = "adam";
  EMBER_CHECK_VALUE(!amsgrad || !vmax.is_none(), op,
                    "max_exp_avg_sqs is required when amsgrad is set");
  const Lists l = check_lists(op, {params, grads, m, v, amsgrad ? vmax : py::none()},
                              {"params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"});
  if (l.n.empty()) return;
  const ember::AdamArgs a{lr, beta1, beta2, eps, weight_decay, bc1, bc2,
                          decoupled, amsgrad, maximize};
  py::gil_scoped_release nogil;
  if (l.dt == ember::DType::f32)
    ember::adam_step(view<float>(l), a);
  else
    ember::adam_step(view<double>(l), a);
}

void rmsprop_step_py(const py::object& params, const py::object& grads, const py::object& sq,
                     const py::object& gavg, const py::object& bufs, double lr, double alpha,
                     double eps, double weight_decay, double momentum, bool centered,
                     bool maximize) {
  const char* op = "rmsprop";
  EMBER_CHECK_VALUE(!centered || !gavg.is_none(), op, "grad_avgs is required when centered");
  EMBER_CHECK_VALUE(momentum <= 0 || !bufs.is_none(), op,
                    "momentum_buffers is required when momentum > 0");
  const Lists l = check_lists(
      op, {params, grads, sq, centered ? gavg : py::none(), momentum > 0 ? bufs : py::none()},
      {"params", "grads", "square_avgs", "grad_avgs", "momentum_buffers"});
  if (l.n.empty()) return;
  const ember::RmspropArgs a{lr, alpha, eps, weight_decay, momentum, centered, maximize};
  py::gil_scoped_release nogil;
  if (l.dt == ember::DType::f32)
    ember::rmsprop_step(view<float>(l), a);
  else
    ember::rmsprop_step(view<double>(l), a);
}

void adagrad_step_py(const py::object& params, const py::object& grads, const py::object& sums,
                     double clr, double eps, double weight_decay, bool maximize) {
  const char* op = "adagrad";
  const Lists l = check_lists(op, {params, grads, sums}, {"params", "grads", "state_sums"});
  if (l.n.empty()) return;
  const ember::AdagradArgs a{clr, eps, weight_decay, maximize};
  py::gil_scoped_release nogil;
  if (l.dt == ember::DType::f32)
    ember::adagrad_step(view<float>(l), a);
  else
    ember::adagrad_step(view<double>(l), a);
}

double grad_norm_reduce_py(const py::object& arrays, bool inf) {
  const char* op = "clip_grad_norm_";
  EMBER_CHECK_TYPE(py::isinstance<py::list>(arrays), op, "arrays must be a list");
  const py::list l = py::reinterpret_borrow<py::list>(arrays);
  std::vector<py::array> keep;
  std::vector<const void*> ptr;
  std::vector<int64_t> n;
  ember::DType dt = ember::DType::other;
  for (size_t t = 0; t < py::len(l); ++t) {
    py::array a = ember::as_ndarray(l[t], op, "grad");
    const ember::DType d = ember::require_float(a, op, "grad");
    if (t == 0) dt = d;
    EMBER_CHECK_TYPE(d == dt, op, "all grads of one call must share a dtype");
    ember::require_c_contiguous(a, op, "grad");
    ember::require_aligned(a, op, "grad");
    ptr.push_back(a.data());
    n.push_back(a.size());
    keep.push_back(a);
  }
  if (n.empty()) return 0.0;
  py::gil_scoped_release nogil;
  const int64_t count = static_cast<int64_t>(n.size());
  if (dt == ember::DType::f32)
    return ember::norm_reduce(reinterpret_cast<const float* const*>(ptr.data()), n.data(), count,
                              inf);
  return ember::norm_reduce(reinterpret_cast<const double* const*>(ptr.data()), n.data(), count,
                            inf);
}

double triad_py(const py::object& a_obj, const py::object& b_obj, const py::object& c_obj,
                int reps) {
  const char* op = "triad";
  py::array a = ember::as_ndarray(a_obj, op, "a"), b = ember::as_ndarray(b_obj, op, "b"),
            c = ember::as_ndarray(c_obj, op, "c");
  for (const py::array* x : {&a, &b, &c}) {
    EMBER_CHECK_TYPE(ember::dtype_of(*x) == ember::DType::f32, op, "arrays must be float32");
    ember::require_c_contiguous(*x, op, "array");
    EMBER_CHECK_VALUE(x->size() == a.size(), op, "arrays must have one size");
  }
  ember::require_writeable(a, op, "a");
  float* ap = static_cast<float*>(a.mutable_data());
  const float* bp = static_cast<const float*>(b.data());
  const float* cp = static_cast<const float*>(c.data());
  const int64_t n = a.size();
  py::gil_scoped_release nogil;
  return ember::triad_seconds(ap, bp, cp, n, reps);
}

double rmw4_py(const py::object& a_obj, const py::object& b_obj, const py::object& c_obj,
               const py::object& d_obj, int reps) {
  const char* op = "rmw4";
  py::array a = ember::as_ndarray(a_obj, op, "a"), b = ember::as_ndarray(b_obj, op, "b"),
            c = ember::as_ndarray(c_obj, op, "c"), d = ember::as_ndarray(d_obj, op, "d");
  for (const py::array* x : {&a, &b, &c, &d}) {
    EMBER_CHECK_TYPE(ember::dtype_of(*x) == ember::DType::f32, op, "arrays must be float32");
    ember::require_c_contiguous(*x, op, "array");
    EMBER_CHECK_VALUE(x->size() == a.size(), op, "arrays must have one size");
    ember::require_writeable(*x, op, "array");
  }
  float* ap = static_cast<float*>(a.mutable_data());
  float* bp = static_cast<float*>(b.mutable_data());
  float* cp = static_cast<float*>(c.mutable_data());
  const float* dp = static_cast<const float*>(d.data());
  const int64_t n = a.size();
  py::gil_scoped_release nogil;
  return ember::rmw4_seconds(ap, bp, cp, dp, n, reps);
}

}  // namespace

EMBER_BIND(optim) {
  m.def("sgd_step", &sgd_step_py, py::arg("params"), py::arg("grads"),
        py::arg("momentum_buffers"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
        py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"), py::arg("first"),
        "Fused in-place SGD step over lists of arrays (torch.optim.SGD's rule); `first` "
        "initialises the momentum buffers to the gradient.");
  m.def("adam_step", &adam_step_py, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
        py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"), py::arg("lr"), py::arg("beta1"),
        py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("bias_correction1"),
        py::arg("bias_correction2"), py::arg("decoupled"), py::arg("amsgrad"),
        py::arg("maximize"),
        "Fused in-place Adam (decoupled=False) / AdamW (decoupled=True) step over lists.");
  m.def("rmsprop_step", &rmsprop_step_py, py::arg("params"), py::arg("grads"),
        py::arg("square_avgs"), py::arg("grad_avgs"), py::arg("momentum_buffers"), py::arg("lr"),
        py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("momentum"),
        py::arg("centered"), py::arg("maximize"), "Fused in-place RMSprop step over lists.");
  m.def("adagrad_step", &adagrad_step_py, py::arg("params"), py::arg("grads"),
        py::arg("state_sums"), py::arg("clr"), py::arg("eps"), py::arg("weight_decay"),
        py::arg("maximize"), "Fused in-place Adagrad step over lists (clr: decayed lr).");
  m.def("grad_norm_reduce", &grad_norm_reduce_py, py::arg("arrays"), py::arg("inf") = false,
        "Sum of squares (in double) over a list of arrays, or max |x| with inf=True.");
  m.def("_triad_seconds", &triad_py, py::arg("a"), py::arg("b"), py::arg("c"),
        py::arg("reps") = 10, "Median seconds of a = b + 3c (bandwidth probe).");
  m.def("_rmw4_seconds", &rmw4_py, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("d"),
        py::arg("reps") = 10,
        "Median seconds of a += d, b += d, c += d (Adam's memory pattern, 28 B/element).");
}
