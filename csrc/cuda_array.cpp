// cuda_array.cpp -- __cuda_array_interface__ parsing (see cuda_array.h).
#include "csrc/cuda_array.h"

#include <pybind11/pybind11.h>

#include "csrc/check.h"

namespace py = pybind11;

namespace ember {

namespace {

py::object item(const py::dict& d, const char* key, const char* op, const char* name) {
  if (!d.contains(key))
    type_error(op, name, "'s __cuda_array_interface__ has no '", key, "' entry");
  return d[key];
}

std::vector<int64_t> int_tuple(const py::object& o) {
  std::vector<int64_t> v;
  for (const py::handle& e : py::reinterpret_borrow<py::tuple>(o)) v.push_back(e.cast<int64_t>());
  return v;
}

}  // namespace

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

CudaArray cuda_array(const py::handle& obj, const char* op, const char* name) {
  EMBER_CHECK_TYPE(py::hasattr(obj, "__cuda_array_interface__"), op, name,
                   " must expose __cuda_array_interface__ (e.g. a cupy array), got ",
                   type_name(obj));
  const py::object iface = obj.attr("__cuda_array_interface__");
  EMBER_CHECK_TYPE(py::isinstance<py::dict>(iface), op, name,
                   ".__cuda_array_interface__ is not a dict");
  const auto d = py::reinterpret_borrow<py::dict>(iface);

  CudaArray r;
  std::vector<int64_t> strides;
  bool has_strides = false;
  try {
    const py::object shape = item(d, "shape", op, name);
    const py::object data = item(d, "data", op, name);
    const py::object typestr = item(d, "typestr", op, name);
    if (!py::isinstance<py::tuple>(shape) || !py::isinstance<py::tuple>(data) ||
        py::len(data) != 2 || !py::isinstance<py::str>(typestr))
      throw py::cast_error("bad entry types");
    r.shape = int_tuple(shape);
    const auto data_t = py::reinterpret_borrow<py::tuple>(data);
    r.ptr = reinterpret_cast<void*>(
        static_cast<std::uintptr_t>(data_t[0].cast<unsigned long long>()));
    r.readonly = data_t[1].cast<bool>();
    r.typestr = typestr.cast<std::string>();
    if (d.contains("strides") && !d["strides"].is_none()) {
      if (!py::isinstance<py::tuple>(d["strides"])) throw py::cast_error("bad strides");
      strides = int_tuple(d["strides"]);
      has_strides = true;
    }
  } catch (const py::cast_error&) {
    type_error(op, name, " has a malformed __cuda_array_interface__");
  }

  if (r.typestr == "<f4" || r.typestr == "=f4") {
    r.dtype = DType::f32;
    r.itemsize = 4;
  } else if (r.typestr == "<f8" || r.typestr == "=f8") {
    r.dtype = DType::f64;
    r.itemsize = 8;
  } else {
    type_error(op, name, " has typestr '", r.typestr, "'; expected '<f4' (float32) or '<f8' (float64)");
  }

  r.size = 1;
  for (int64_t s : r.shape) {
    EMBER_CHECK_VALUE(s >= 0, op, name, " has a negative dimension in shape ", shape_str(r.shape));
    EMBER_CHECK_VALUE(!__builtin_mul_overflow(r.size, s, &r.size) &&
                          r.size <= (int64_t{1} << 62) / r.itemsize,
                      op, name, " has an impossibly large shape ", shape_str(r.shape));
  }
  EMBER_CHECK_VALUE(!d.contains("mask") || d["mask"].is_none(), op, name,
                    " is a masked array (not supported)");
  if (has_strides && r.size > 0) {
    EMBER_CHECK_VALUE(strides.size() == r.shape.size(), op, name, " has ", strides.size(),
                      " strides for ", r.shape.size(), " dimensions");
    int64_t expect = r.itemsize;
    for (size_t i = r.shape.size(); i-- > 0;) {
      EMBER_CHECK_VALUE(r.shape[i] == 1 || strides[i] == expect, op, name,
                        " must be C-contiguous (shape ", shape_str(r.shape), ", strides ",
                        shape_str(strides), ")");
      expect *= r.shape[i];
    }
  }
  EMBER_CHECK_VALUE(r.size == 0 || r.ptr != nullptr, op, name, " has a null data pointer");
  EMBER_CHECK_VALUE(reinterpret_cast<std::uintptr_t>(r.ptr) % r.itemsize == 0, op, name,
                    " is not aligned to its itemsize (", r.itemsize, " bytes)");
  return r;
}

void* cuda_stream(const py::handle& obj, const char* op) {
  py::object h = py::reinterpret_borrow<py::object>(obj);
  if (!PyLong_Check(h.ptr()) && py::hasattr(h, "ptr")) h = h.attr("ptr");
  EMBER_CHECK_TYPE(PyLong_Check(h.ptr()) && !PyBool_Check(h.ptr()), op,
                   "stream must be an int cudaStream_t handle (e.g. "
                   "cupy.cuda.get_current_stream().ptr), got ",
                   type_name(obj));
  const unsigned long long v = PyLong_AsUnsignedLongLong(h.ptr());
  if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
    PyErr_Clear();
    value_error(op, "stream handle ", py::str(h).cast<std::string>(), " is out of range");
  }
  return reinterpret_cast<void*>(static_cast<std::uintptr_t>(v));
}

bool overlaps(const CudaArray& x, const CudaArray& y) {
  if (x.size == 0 || y.size == 0) return false;
  const auto xl = reinterpret_cast<std::uintptr_t>(x.ptr), yl = reinterpret_cast<std::uintptr_t>(y.ptr);
  const std::uintptr_t xh = xl + static_cast<std::uintptr_t>(x.size * x.itemsize);
  const std::uintptr_t yh = yl + static_cast<std::uintptr_t>(y.size * y.itemsize);
  return xl < yh && yl < xh;
}

}  // namespace ember
