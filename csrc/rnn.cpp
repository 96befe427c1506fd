// rnn.cpp -- _C.lstm_cell_fwd/bwd, gru_cell_fwd/bwd, rnn_cell_fwd/bwd (numpy, CPU): one time
// step of the recurrent layers' gate math (kernels/cpu/rnn.cpp has the formulas).
//
// lstm_cell_fwd(gates [B,4H], c_prev [B,H], act [B,4H] | None, c [B,H], h [B,H])
// lstm_cell_bwd(act [B,4H], c_prev, c, dh, dy | None, dc (in/out), dgates [B,4H])
// gru_cell_fwd(xg [B,3H], hg [B,3H], h_prev [B,H], h [B,H], save [B,4H] | None)
// gru_cell_bwd(save [B,4H], h_prev, dh, dy | None, dxg [B,3H], dhg [B,3H], dh_prev [B,H])
// rnn_cell_fwd(pre [B,H], h [B,H], nonlinearity)      nonlinearity: "tanh" or "relu"
// rnn_cell_bwd(h, dh, dy | None, dpre, nonlinearity)
// All arrays 2-D, the same float dtype (float32 / float64), C-contiguous and aligned; outputs
// writeable. An output may not overlap an input, except the in-place pairs the kernels allow:
// act may be the very same array as gates, dgates as act, h as pre, dpre as dh.
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

struct Arg {
  py::array a;
  const char* name;
  bool out;
  bool present;
};

struct Call {
  const char* op;
  std::vector<Arg> args;
  ember::DType dt = ember::DType::f32;
  int64_t B = -1, H = -1;

  // Adds an argument [B, mult*H]; the first array fixes dtype, the first [B,H] one fixes H.
  void add(const py::object& obj, const char* name, int64_t mult, bool out, bool nullable) {
    if (obj.is_none()) {
      EMBER_CHECK_VALUE(nullable, op, name, " must be an array, got None");
      args.push_back({py::array(), name, out, false});
      return;
    }
    py::array a = ember::as_ndarray(obj, op, name);
    if (args.empty() || !args[0].present) {
      dt = ember::require_float(a, op, name);
    } else {
      EMBER_CHECK_TYPE(ember::dtype_of(a) == dt, op, name, " has dtype ", ember::dtype_str(a),
                       " but ", args[0].name, " has ", ember::dtype_str(args[0].a));
    }
    EMBER_CHECK_VALUE(a.ndim() == 2, op, name, " must be 2-D [B, ", mult, "*H], got shape ",
                      ember::shape_str(a));
    if (B < 0) B = a.shape(0);
    EMBER_CHECK_VALUE(a.shape(0) == B, op, name, " has ", a.shape(0), " rows but ",
                      args[0].name, " has ", B);
    EMBER_CHECK_VALUE(a.shape(1) % mult == 0, op, name, " has ", a.shape(1),
                      " columns, not a multiple of ", mult);
    if (H < 0) H = a.shape(1) / mult;
    EMBER_CHECK_VALUE(a.shape(1) == mult * H, op, name, " must have shape [", B, ", ", mult * H,
                      "] (", mult, "*H, H = ", H, "), got ", ember::shape_str(a));
    ember::require_c_contiguous(a, op, name);
    ember::require_aligned(a, op, name);
    if (out) ember::require_writeable(a, op, name);
    args.push_back({a, name, out, true});
  }

  // No output overlaps another argument, except the listed (output, input) in-place pairs,
  // which must then be the very same array.
  void check_overlaps(std::initializer_list<std::pair<int, int>> same_ok) {
    for (size_t i = 0; i < args.size(); ++i) {
      if (!args[i].out || !args[i].present) continue;
      for (size_t j = 0; j < args.size(); ++j) {
        if (i == j || !args[j].present) continue;
        if (args[j].out && j < i) continue;  // output pairs checked once
        bool allowed = false;
        for (const auto& p : same_ok)
          allowed |= (size_t(p.first) == i && size_t(p.second) == j);
        if (allowed && args[i].a.data() == args[j].a.data()) continue;
        EMBER_CHECK_VALUE(!ember::overlaps(args[i].a, args[j].a), op, args[i].name, " overlaps ",
                          args[j].name,
                          allowed ? " (in place is allowed only on the very same array)" : "");
      }
    }
  }

  template <typename T>
  T* p(size_t i) const {
    return args[i].present ? static_cast<T*>(const_cast<void*>(args[i].a.data())) : nullptr;
  }
};

bool parse_nonlinearity(const std::string& s, const char* op) {
  EMBER_CHECK_VALUE(s == "tanh" || s == "relu", op, "nonlinearity must be 'tanh' or 'relu', got '",
                    s, "'");
  return s == "relu";
}

void lstm_fwd_py(const py::object& gates, const py::object& c_prev, const py::object& act,
                 const py::object& c, const py::object& h) {
  Call k{"lstm_cell"};
  k.add(gates, "gates", 4, false, false);
  k.add(c_prev, "c_prev", 1, false, false);
  k.add(act, "act", 4, true, true);
  k.add(c, "c", 1, true, false);
  k.add(h, "h", 1, true, false);
  k.check_overlaps({{2, 0}});
  if (k.B * k.H == 0) return;
  const bool f32 = k.dt == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::lstm_cell_fwd(k.p<float>(0), k.p<float>(1), k.p<float>(2), k.p<float>(3),
                         k.p<float>(4), k.B, k.H);
  else
    ember::lstm_cell_fwd(k.p<double>(0), k.p<double>(1), k.p<double>(2), k.p<double>(3),
                         k.p<double>(4), k.B, k.H);
}

void lstm_bwd_py(const py::object& act, const py::object& c_prev, const py::object& c,
                 const py::object& dh, const py::object& dy, const py::object& dc,
                 const py::object& dgates) {
  Call k{"lstm_cell_backward"};
  k.add(act, "act", 4, false, false);
  k.add(c_prev, "c_prev", 1, false, false);
  k.add(c, "c", 1, false, false);
  k.add(dh, "dh", 1, false, false);
  k.add(dy, "dy", 1, false, true);
  k.add(dc, "dc", 1, true, false);
  k.add(dgates, "dgates", 4, true, false);
  k.check_overlaps({{6, 0}});
  if (k.B * k.H == 0) return;
  const bool f32 = k.dt == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::lstm_cell_bwd(k.p<float>(0), k.p<float>(1), k.p<float>(2), k.p<float>(3),
                         k.p<float>(4), k.p<float>(5), k.p<float>(6), k.B, k.H);
  else
    ember::lstm_cell_bwd(k.p<double>(0), k.p<double>(1), k.p<double>(2), k.p<double>(3),
                         k.p<double>(4), k.p<double>(5), k.p<double>(6), k.B, k.H);
}

void gru_fwd_py(const py::object& xg, const py::object& hg, const py::object& h_prev,
                const py::object& h, const py::object& save) {
  Call k{"gru_cell"};
  k.add(xg, "xg", 3, false, false);
  k.add(hg, "hg", 3, false, false);
  k.add(h_prev, "h_prev", 1, false, false);
  k.add(h, "h", 1, true, false);
  k.add(save, "save", 4, true, true);
  k.check_overlaps({});
  if (k.B * k.H == 0) return;
  const bool f32 = k.dt == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::gru_cell_fwd(k.p<float>(0), k.p<float>(1), k.p<float>(2), k.p<float>(3),
                        k.p<float>(4), k.B, k.H);
  else
    ember::gru_cell_fwd(k.p<double>(0), k.p<double>(1), k.p<double>(2), k.p<double>(3),
                        k.p<double>(4), k.B, k.H);
}

void gru_bwd_py(const py::object& save, const py::object& h_prev, const py::object& dh,
                const py::object& dy, const py::object& dxg, const py::object& dhg,
                const py::object& dh_prev) {
  Call k{"gru_cell_backward"};
  k.add(save, "save", 4, false, false);
  k.add(h_prev, "h_prev", 1, false, false);
  k.add(dh, "dh", 1, false, false);
  k.add(dy, "dy", 1, false, true);
  k.add(dxg, "dxg", 3, true, false);
  k.add(dhg, "dhg", 3, true, false);
  k.add(dh_prev, "dh_prev", 1, true, false);
  k.check_overlaps({});
  if (k.B * k.H == 0) return;
  const bool f32 = k.dt == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::gru_cell_bwd(k.p<float>(0), k.p<float>(1), k.p<float>(2), k.p<float>(3),
                        k.p<float>(4), k.p<float>(5), k.p<float>(6), k.B, k.H);
  else
    ember::gru_cell_bwd(k.p<double>(0), k.p<double>(1), k.p<double>(2), k.p<double>(3),
                        k.p<double>(4), k.p<double>(5), k.p<double>(6), k.B, k.H);
}

void rnn_fwd_py(const py::object& pre, const py::object& h, const std::string& nl) {
  Call k{"rnn_cell"};
  const bool relu = parse_nonlinearity(nl, k.op);
  k.add(pre, "pre", 1, false, false);
  k.add(h, "h", 1, true, false);
  k.check_overlaps({{1, 0}});
  const int64_t n = k.B * k.H;
  if (n == 0) return;
  const bool f32 = k.dt == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::rnn_cell_fwd(k.p<float>(0), k.p<float>(1), n, relu);
  else
    ember::rnn_cell_fwd(k.p<double>(0), k.p<double>(1), n, relu);
}

void rnn_bwd_py(const py::object& h, const py::object& dh, const py::object& dy,
                const py::object& dpre, const std::string& nl) {
  Call k{"rnn_cell_backward"};
  const bool relu = parse_nonlinearity(nl, k.op);
  k.add(h, "h", 1, false, false);
  k.add(dh, "dh", 1, false, false);
  k.add(dy, "dy", 1, false, true);
  k.add(dpre, "dpre", 1, true, false);
  k.check_overlaps({{3, 1}});
  const int64_t n = k.B * k.H;
  if (n == 0) return;
  const bool f32 = k.dt == ember::DType::f32;
  py::gil_scoped_release nogil;
  if (f32)
    ember::rnn_cell_bwd(k.p<float>(0), k.p<float>(1), k.p<float>(2), k.p<float>(3), n, relu);
  else
    ember::rnn_cell_bwd(k.p<double>(0), k.p<double>(1), k.p<double>(2), k.p<double>(3), n,
                        relu);
}

}  // namespace

EMBER_BIND(rnn) {
  m.def("lstm_cell_fwd", &lstm_fwd_py, py::arg("gates"), py::arg("c_prev"), py::arg("act"),
        py::arg("c"), py::arg("h"),
        "One LSTM step from pre-activation gates [B,4H] (i,f,g,o) and c_prev [B,H]: writes c, "
        "h [B,H] and (unless None) the activations act [B,4H] (may be gates itself).");
  m.def("lstm_cell_bwd", &lstm_bwd_py, py::arg("act"), py::arg("c_prev"), py::arg("c"),
        py::arg("dh"), py::arg("dy"), py::arg("dc"), py::arg("dgates"),
        "LSTM step backward: dgates [B,4H] (may be act itself) from dh + dy (dy may be None); "
        "dc [B,H] is updated in place from dc_t to dc_{t-1}.");
  m.def("gru_cell_fwd", &gru_fwd_py, py::arg("xg"), py::arg("hg"), py::arg("h_prev"),
        py::arg("h"), py::arg("save"),
        "One GRU step from xg = x W_ih^T + b_ih and hg = h W_hh^T + b_hh [B,3H] (r,z,n): writes "
        "h [B,H] and (unless None) save [B,4H] = (r, z, n, hn).");
  m.def("gru_cell_bwd", &gru_bwd_py, py::arg("save"), py::arg("h_prev"), py::arg("dh"),
        py::arg("dy"), py::arg("dxg"), py::arg("dhg"), py::arg("dh_prev"),
        "GRU step backward: dxg, dhg [B,3H] and dh_prev = (dh + dy) * z [B,H] (dy may be "
        "None; the dhg @ W_hh part of dh_prev is the caller's GEMM).");
  m.def("rnn_cell_fwd", &rnn_fwd_py, py::arg("pre"), py::arg("h"), py::arg("nonlinearity"),
        "h = tanh(pre) or relu(pre) ([B,H]; h may be pre itself).");
  m.def("rnn_cell_bwd", &rnn_bwd_py, py::arg("h"), py::arg("dh"), py::arg("dy"),
        py::arg("dpre"), py::arg("nonlinearity"),
        "dpre = (dh + dy) * act'(h) (dy may be None; dpre may be dh itself).");
}
