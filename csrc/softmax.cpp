// softmax.cpp -- _C.softmax_fwd / softmax_bwd / cross_entropy_fwd / cross_entropy_bwd (numpy,
// CPU). All over the LAST axis of C-contiguous float32/float64 arrays (the Python layer moves
// another dim last first).
//
// softmax_fwd(x, log, out)                 out = softmax(x) or log_softmax(x) (log=True)
// softmax_bwd(y, grad_out, log, grad_in)   y: the forward output
// cross_entropy_fwd(x, target, weight, ignore_index, label_smoothing, loss, stats)
//     x [N, C]; target int64 [N] (each in [0, C) or == ignore_index, else ValueError);
//     weight [C] or None; writes loss [N] (per row, unreduced, 0 for ignored rows) and
//     stats [N, 2] (row max, log-sum-exp minus max): all the backward needs.
// cross_entropy_bwd(x, target, weight, stats, grow, ignore_index, label_smoothing, grad_in)
//     grad_in [N, C] = grow[n] * d loss[n] / d x[n, :] (grow [N]: the upstream gradient of
//     each row's loss, already divided by the 'mean' denominator by the caller).
// Outputs: same dtype as x, C-contiguous, writeable, not overlapping any input.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "csrc/array.h"
#include "csrc/check.h"
#include "csrc/registry.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace {

py::array float_input(const py::object& obj, const char* op, const char* name) {
  py::array a = ember::as_ndarray(obj, op, name);
  ember::require_float(a, op, name);
  ember::require_c_contiguous(a, op, name);
  ember::require_aligned(a, op, name);
  return a;
}

py::array output(const py::object& obj, const char* op, const char* name) {
  py::array a = ember::as_ndarray(obj, op, name);
  ember::require_c_contiguous(a, op, name);
  ember::require_aligned(a, op, name);
  ember::require_writeable(a, op, name);
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

// [rows, n] view of an array over its last axis (a 0-d array is one row of one element).
void rows_cols(const py::array& a, int64_t* rows, int64_t* n) {
  *n = a.ndim() ? a.shape(a.ndim() - 1) : 1;
  *rows = *n ? static_cast<int64_t>(a.size()) / *n : 0;
}

template <typename T>
const T* ptr(const py::array& a) {
  return static_cast<const T*>(a.data());
}
template <typename T>
T* wptr(const py::array& a) {
  return static_cast<T*>(const_cast<void*>(a.data()));
}

void softmax_fwd_py(const py::object& x_obj, bool log, const py::object& out_obj) {
  const char* op = log ? "log_softmax" : "softmax";
  const py::array x = float_input(x_obj, op, "input");
  const py::array out = output(out_obj, op, "out");
  ember::require_same_layout(x, "input", out, op, "out");
  no_overlap(op, {out}, {x});
  int64_t rows, n;
  rows_cols(x, &rows, &n);
  if (rows == 0 || n == 0) return;
  const bool f32 = ember::dtype_of(x) == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::softmax_fwd(ptr<float>(x), wptr<float>(out), rows, n, log);
  else
    ember::softmax_fwd(ptr<double>(x), wptr<double>(out), rows, n, log);
}

void softmax_bwd_py(const py::object& y_obj, const py::object& g_obj, bool log,
                    const py::object& gx_obj) {
  const char* op = log ? "log_softmax" : "softmax";
  const py::array y = float_input(y_obj, op, "output");
  const py::array g = float_input(g_obj, op, "grad_out");
  ember::require_same_layout(y, "output", g, op, "grad_out");
  const py::array gx = output(gx_obj, op, "grad_in");
  ember::require_same_layout(y, "output", gx, op, "grad_in");
  no_overlap(op, {gx}, {y, g});
  int64_t rows, n;
  rows_cols(y, &rows, &n);
  if (rows == 0 || n == 0) return;
  const bool f32 = ember::dtype_of(y) == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::softmax_bwd(ptr<float>(y), ptr<float>(g), wptr<float>(gx), rows, n, log);
  else
    ember::softmax_bwd(ptr<double>(y), ptr<double>(g), wptr<double>(gx), rows, n, log);
}

constexpr const char* kCE = "cross_entropy";

struct CEArgs {
  py::array x, target;
  py::object weight;  // None or an array
  int64_t N = 0, C = 0;
  bool f32 = true;
};

// Checks logits, targets (dtype, shape, range) and weight; fills `ins` with the input arrays.
CEArgs ce_inputs(const py::object& x_obj, const py::object& t_obj, const py::object& w_obj,
                 int64_t ignore_index, double smoothing, std::vector<py::array>* ins) {
  CEArgs a;
  a.x = float_input(x_obj, kCE, "input");
  EMBER_CHECK_VALUE(a.x.ndim() == 2, kCE, "input must be 2-D [N, C], got shape ",
                    ember::shape_str(a.x));
  a.N = a.x.shape(0);
  a.C = a.x.shape(1);
  a.f32 = ember::dtype_of(a.x) == ember::DType::f32;
  a.target = ember::as_ndarray(t_obj, kCE, "target");
  const py::dtype tdt = a.target.dtype();
  EMBER_CHECK_TYPE(tdt.kind() == 'i' && tdt.itemsize() == 8, kCE,
                   "target must hold int64 class indices, got ", ember::dtype_str(a.target));
  EMBER_CHECK_VALUE(a.target.ndim() == 1 && a.target.shape(0) == a.N, kCE,
                    "target must have shape [", a.N, "] for input of shape ",
                    ember::shape_str(a.x), ", got ", ember::shape_str(a.target));
  ember::require_c_contiguous(a.target, kCE, "target");
  ember::require_aligned(a.target, kCE, "target");
  EMBER_CHECK_VALUE(smoothing >= 0.0 && smoothing <= 1.0, kCE,
                    "label_smoothing must be between 0.0 and 1.0, got ", smoothing);
  const int64_t* t = static_cast<const int64_t*>(a.target.data());
  for (int64_t i = 0; i < a.N; ++i)
    EMBER_CHECK_VALUE(t[i] == ignore_index || (t[i] >= 0 && t[i] < a.C), kCE, "target ", t[i],
                      " is out of range for ", a.C, " classes");
  ins->push_back(a.x);
  ins->push_back(a.target);
  a.weight = w_obj;
  if (!w_obj.is_none()) {
    const py::array w = float_input(w_obj, kCE, "weight");
    EMBER_CHECK_TYPE(ember::dtype_of(w) == ember::dtype_of(a.x), kCE, "weight has dtype ",
                     ember::dtype_str(w), " but the input has ", ember::dtype_str(a.x));
    EMBER_CHECK_VALUE(w.ndim() == 1 && w.shape(0) == a.C, kCE, "weight must have shape [", a.C,
                      "] (one per class), got ", ember::shape_str(w));
    ins->push_back(w);
  }
  return a;
}

const void* weight_ptr(const CEArgs& a) {
  return a.weight.is_none() ? nullptr : py::reinterpret_borrow<py::array>(a.weight).data();
}

void ce_fwd_py(const py::object& x_obj, const py::object& t_obj, const py::object& w_obj,
               int64_t ignore_index, double smoothing, const py::object& loss_obj,
               const py::object& stats_obj) {
  std::vector<py::array> ins;
  const CEArgs a = ce_inputs(x_obj, t_obj, w_obj, ignore_index, smoothing, &ins);
  const py::array loss = output(loss_obj, kCE, "loss");
  const py::array stats = output(stats_obj, kCE, "stats");
  for (const py::array* o : {&loss, &stats})
    EMBER_CHECK_TYPE(ember::dtype_of(*o) == ember::dtype_of(a.x), kCE, "outputs must have the "
                     "input's dtype ", ember::dtype_str(a.x), ", got ", ember::dtype_str(*o));
  EMBER_CHECK_VALUE(loss.ndim() == 1 && loss.shape(0) == a.N, kCE, "loss must have shape [",
                    a.N, "], got ", ember::shape_str(loss));
  EMBER_CHECK_VALUE(stats.ndim() == 2 && stats.shape(0) == a.N && stats.shape(1) == 2, kCE,
                    "stats must have shape [", a.N, ", 2], got ", ember::shape_str(stats));
  no_overlap(kCE, {loss, stats}, ins);
  if (a.N == 0) return;
  EMBER_CHECK_VALUE(a.C > 0, kCE, "input has 0 classes");
  const int64_t* t = static_cast<const int64_t*>(a.target.data());
  const void* w = weight_ptr(a);
  py::gil_scoped_release nogil;
  if (a.f32)
    ember::cross_entropy_fwd(ptr<float>(a.x), t, static_cast<const float*>(w), a.N, a.C,
                             ignore_index, smoothing, wptr<float>(loss), wptr<float>(stats));
  else
    ember::cross_entropy_fwd(ptr<double>(a.x), t, static_cast<const double*>(w), a.N, a.C,
                             ignore_index, smoothing, wptr<double>(loss), wptr<double>(stats));
}

void ce_bwd_py(const py::object& x_obj, const py::object& t_obj, const py::object& w_obj,
               const py::object& stats_obj, const py::object& grow_obj, int64_t ignore_index,
               double smoothing, const py::object& gx_obj) {
  std::vector<py::array> ins;
  const CEArgs a = ce_inputs(x_obj, t_obj, w_obj, ignore_index, smoothing, &ins);
  const py::array stats = float_input(stats_obj, kCE, "stats");
  const py::array grow = float_input(grow_obj, kCE, "grow");
  for (const py::array* o : {&stats, &grow})
    EMBER_CHECK_TYPE(ember::dtype_of(*o) == ember::dtype_of(a.x), kCE, "stats and grow must "
                     "have the input's dtype ", ember::dtype_str(a.x), ", got ",
                     ember::dtype_str(*o));
  EMBER_CHECK_VALUE(stats.ndim() == 2 && stats.shape(0) == a.N && stats.shape(1) == 2, kCE,
                    "stats must have shape [", a.N, ", 2], got ", ember::shape_str(stats));
  EMBER_CHECK_VALUE(grow.ndim() == 1 && grow.shape(0) == a.N, kCE, "grow must have shape [",
                    a.N, "], got ", ember::shape_str(grow));
  ins.push_back(stats);
  ins.push_back(grow);
  const py::array gx = output(gx_obj, kCE, "grad_in");
  ember::require_same_layout(a.x, "input", gx, kCE, "grad_in");
  no_overlap(kCE, {gx}, ins);
  if (a.N == 0 || a.C == 0) return;
  const int64_t* t = static_cast<const int64_t*>(a.target.data());
  const void* w = weight_ptr(a);
  py::gil_scoped_release nogil;
  if (a.f32)
    ember::cross_entropy_bwd(ptr<float>(a.x), t, static_cast<const float*>(w), ptr<float>(stats),
                             ptr<float>(grow), a.N, a.C, ignore_index, smoothing,
                             wptr<float>(gx));
  else
    ember::cross_entropy_bwd(ptr<double>(a.x), t, static_cast<const double*>(w),
                             ptr<double>(stats), ptr<double>(grow), a.N, a.C, ignore_index,
                             smoothing, wptr<double>(gx));
}

}  // namespace

EMBER_BIND(softmax) {
  m.def("softmax_fwd", &softmax_fwd_py, py::arg("x"), py::arg("log"), py::arg("out"),
        "Softmax (log=False) or log-softmax (log=True) over the last axis of x into out.");
  m.def("softmax_bwd", &softmax_bwd_py, py::arg("y"), py::arg("grad_out"), py::arg("log"),
        py::arg("grad_in"), "Softmax / log-softmax backward from the forward output y.");
  m.def("cross_entropy_fwd", &ce_fwd_py, py::arg("x"), py::arg("target"), py::arg("weight"),
        py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("loss"), py::arg("stats"),
        "Cross-entropy of logits [N, C] and int64 targets [N]: per-row loss [N] and the row "
        "statistics [N, 2] (max, log-sum-exp - max) the backward needs.");
  m.def("cross_entropy_bwd", &ce_bwd_py, py::arg("x"), py::arg("target"), py::arg("weight"),
        py::arg("stats"), py::arg("grow"), py::arg("ignore_index"), py::arg("label_smoothing"),
        py::arg("grad_in"),
        "Cross-entropy backward: grad_in[n] = grow[n] * d loss[n] / d x[n] (softmax recomputed "
        "from x and stats).");
}
