// attention.cpp -- _C.attention_fwd / attention_bwd (numpy, CPU): flash-style scaled-dot-product
// attention (kernels/cpu/attention.cpp).
//
// attention_fwd(q, k, v, mask, mask_div, scale, causal, out, lse)
// attention_bwd(q, k, v, out, lse, grad_out, mask, mask_div, scale, causal,
//               grad_q, grad_k, grad_v)
// q [N, Lq, D], k [N, Lk, D], v [N, Lk, Dv], out / grad_out [N, Lq, Dv],
// lse [N, Lq, 2] (log-sum-exp as hi + lo),
// grad_q/k/v like q/k/v; float32 or float64 (all the same), C-contiguous, aligned.
// mask: None or an additive [M, Lq or 1, Lk] array of the same dtype; batch n uses mask entry
// (n / mask_div) % M (so [B, 1], [1, H], [B, H] and [1, 1] broadcasts of a [B, H] batch need
// no copy). Outputs must be writeable and must not overlap any input or each other.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "csrc/array.h"
#include "csrc/check.h"
#include "csrc/registry.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace {

constexpr const char* kOp = "scaled_dot_product_attention";

py::array input3(const py::object& obj, const char* name) {
  py::array a = ember::as_ndarray(obj, kOp, name);
  ember::require_float(a, kOp, name);
  EMBER_CHECK_VALUE(a.ndim() == 3, kOp, name, " must be 3-D [N, L, D], got shape ",
                    ember::shape_str(a));
  ember::require_c_contiguous(a, kOp, name);
  ember::require_aligned(a, kOp, name);
  return a;
}

void require_shape(const py::array& a, const char* name, std::vector<int64_t> shape,
                   const py::array& ref) {
  EMBER_CHECK_TYPE(ember::dtype_of(a) == ember::dtype_of(ref), kOp, name, " has dtype ",
                   ember::dtype_str(a), " but query has ", ember::dtype_str(ref));
  bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == shape[i];
  std::string want = "[";
  for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
  EMBER_CHECK_VALUE(same, kOp, name, " must have shape ", want, "], got ",
                    ember::shape_str(a));
  ember::require_c_contiguous(a, kOp, name);
  ember::require_aligned(a, kOp, name);
}

struct Args {
  ember::AttnDims d{};
  std::vector<py::array> ins;
  const void* mask = nullptr;
  bool f32 = true;
};

Args common(const py::object& q_obj, const py::object& k_obj, const py::object& v_obj,
            const py::object& mask_obj, int64_t mask_div, double scale, bool causal) {
  Args a;
  const py::array q = input3(q_obj, "query"), k = input3(k_obj, "key"),
                  v = input3(v_obj, "value");
  a.d.N = q.shape(0);
  a.d.Lq = q.shape(1);
  a.d.D = q.shape(2);
  a.d.Lk = k.shape(1);
  a.d.Dv = v.shape(2);
  require_shape(k, "key", {a.d.N, a.d.Lk, a.d.D}, q);
  require_shape(v, "value", {a.d.N, a.d.Lk, a.d.Dv}, q);
  a.d.scale = scale;
  a.d.causal = causal;
  a.f32 = ember::dtype_of(q) == ember::DType::f32;
  a.ins = {q, k, v};
  if (!mask_obj.is_none()) {
    const py::array m = ember::as_ndarray(mask_obj, kOp, "attn_mask");
    EMBER_CHECK_TYPE(ember::dtype_of(m) == ember::dtype_of(q), kOp, "attn_mask has dtype ",
                     ember::dtype_str(m), " but query has ", ember::dtype_str(q));
    EMBER_CHECK_VALUE(m.ndim() == 3 && m.shape(0) >= 1 &&
                          (m.shape(1) == a.d.Lq || m.shape(1) == 1) && m.shape(2) == a.d.Lk,
                      kOp, "attn_mask must have shape [M, ", a.d.Lq, " or 1, ", a.d.Lk,
                      "], got ", ember::shape_str(m));
    EMBER_CHECK_VALUE(mask_div >= 1, kOp, "mask_div must be >= 1, got ", mask_div);
    ember::require_c_contiguous(m, kOp, "attn_mask");
    ember::require_aligned(m, kOp, "attn_mask");
    a.d.mask_div = mask_div;
    a.d.mask_mod = m.shape(0);
    a.d.mask_bs = m.shape(1) * m.shape(2);
    a.d.mask_rs = m.shape(1) == 1 ? 0 : a.d.Lk;
    a.mask = m.data();
    a.ins.push_back(m);
  }
  return a;
}

void* output(const py::object& obj, const char* name, std::vector<int64_t> shape,
             const py::array& ref, const std::vector<py::array>& ins,
             std::vector<py::array>* outs) {
  const py::array a = ember::as_ndarray(obj, kOp, name);
  require_shape(a, name, std::move(shape), ref);
  ember::require_writeable(a, kOp, name);
  for (const py::array& in : ins)
    EMBER_CHECK_VALUE(!ember::overlaps(a, in), kOp, name, " overlaps an input");
  for (const py::array& o : *outs)
    EMBER_CHECK_VALUE(!ember::overlaps(a, o), kOp, "outputs overlap each other");
  outs->push_back(a);
  return const_cast<void*>(a.data());
}

void fwd_py(const py::object& q_obj, const py::object& k_obj, const py::object& v_obj,
            const py::object& mask_obj, int64_t mask_div, double scale, bool causal,
            const py::object& out_obj, const py::object& lse_obj) {
  const Args a = common(q_obj, k_obj, v_obj, mask_obj, mask_div, scale, causal);
  const ember::AttnDims& d = a.d;
  std::vector<py::array> outs;
  void* out = output(out_obj, "out", {d.N, d.Lq, d.Dv}, a.ins[0], a.ins, &outs);
  void* lse = output(lse_obj, "lse", {d.N, d.Lq, 2}, a.ins[0], a.ins, &outs);
  if (d.N == 0 || d.Lq == 0) return;
  const void *q = a.ins[0].data(), *k = a.ins[1].data(), *v = a.ins[2].data();
  py::gil_scoped_release nogil;
  if (a.f32)
    ember::attention_fwd(static_cast<const float*>(q), static_cast<const float*>(k),
                         static_cast<const float*>(v), static_cast<float*>(out),
                         static_cast<float*>(lse), d, static_cast<const float*>(a.mask));
  else
    ember::attention_fwd(static_cast<const double*>(q), static_cast<const double*>(k),
                         static_cast<const double*>(v), static_cast<double*>(out),
                         static_cast<double*>(lse), d, static_cast<const double*>(a.mask));
}

void bwd_py(const py::object& q_obj, const py::object& k_obj, const py::object& v_obj,
            const py::object& out_obj, const py::object& lse_obj, const py::object& g_obj,
            const py::object& mask_obj, int64_t mask_div, double scale, bool causal,
            const py::object& gq_obj, const py::object& gk_obj, const py::object& gv_obj) {
  Args a = common(q_obj, k_obj, v_obj, mask_obj, mask_div, scale, causal);
  const ember::AttnDims& d = a.d;
  const py::array ref = a.ins[0];
  const py::array out = ember::as_ndarray(out_obj, kOp, "out");
  require_shape(out, "out", {d.N, d.Lq, d.Dv}, ref);
  const py::array lse = ember::as_ndarray(lse_obj, kOp, "lse");
  require_shape(lse, "lse", {d.N, d.Lq, 2}, ref);
  const py::array g = ember::as_ndarray(g_obj, kOp, "grad_out");
  require_shape(g, "grad_out", {d.N, d.Lq, d.Dv}, ref);
  a.ins.push_back(out);
  a.ins.push_back(lse);
  a.ins.push_back(g);
  std::vector<py::array> outs;
  void* gq = output(gq_obj, "grad_query", {d.N, d.Lq, d.D}, ref, a.ins, &outs);
  void* gk = output(gk_obj, "grad_key", {d.N, d.Lk, d.D}, ref, a.ins, &outs);
  void* gv = output(gv_obj, "grad_value", {d.N, d.Lk, d.Dv}, ref, a.ins, &outs);
  if (d.N == 0) return;
  const void *q = a.ins[0].data(), *k = a.ins[1].data(), *v = a.ins[2].data();
  const void *op = out.data(), *lp = lse.data(), *gp = g.data();
  py::gil_scoped_release nogil;
  if (a.f32)
    ember::attention_bwd(static_cast<const float*>(q), static_cast<const float*>(k),
                         static_cast<const float*>(v), static_cast<const float*>(op),
                         static_cast<const float*>(lp), static_cast<const float*>(gp),
                         static_cast<float*>(gq), static_cast<float*>(gk),
                         static_cast<float*>(gv), d, static_cast<const float*>(a.mask));
  else
    ember::attention_bwd(static_cast<const double*>(q), static_cast<const double*>(k),
                         static_cast<const double*>(v), static_cast<const double*>(op),
                         static_cast<const double*>(lp), static_cast<const double*>(gp),
                         static_cast<double*>(gq), static_cast<double*>(gk),
                         static_cast<double*>(gv), d, static_cast<const double*>(a.mask));
}

}  // namespace

EMBER_BIND(attention) {
  m.def("attention_fwd", &fwd_py, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"),
        py::arg("mask_div"), py::arg("scale"), py::arg("causal"), py::arg("out"),
        py::arg("lse"),
        "Flash-style attention forward on [N, L, D]: out and the rows' log-sum-exp.");
  m.def("attention_bwd", &bwd_py, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
        py::arg("lse"), py::arg("grad_out"), py::arg("mask"), py::arg("mask_div"),
        py::arg("scale"), py::arg("causal"), py::arg("grad_q"), py::arg("grad_k"),
        py::arg("grad_v"),
        "Flash-style attention backward (FlashAttention-2): grad_q, grad_k, grad_v.");
}
