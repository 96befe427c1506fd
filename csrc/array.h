// array.h -- numpy-array checks shared by the CPU dispatch files.
//
// Arrays are taken as py::object and checked here rather than declared as py::array /
// py::array_t parameters: pybind11 would otherwise convert (copy) a list or a wrong dtype
// silently, and a converted output loses the kernel's write. Nothing here copies or casts.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "csrc/check.h"

namespace ember {

namespace py = pybind11;

enum class DType { f32, f64, other };

inline DType dtype_of(const py::array& a) {
  const py::dtype dt = a.dtype();
  const char bo = dt.byteorder();
  // '=' native, '|' not applicable; an explicit '<' or '>' must match the machine.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  const bool native = bo == '=' || bo == '|' || bo == '>';
#else
  const bool native = bo == '=' || bo == '|' || bo == '<';
#endif
  if (dt.kind() != 'f' || !native) return DType::other;
  if (dt.itemsize() == 4) return DType::f32;
  if (dt.itemsize() == 8) return DType::f64;
  return DType::other;
}

inline std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

inline std::string shape_str(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + "]";
}

inline const char* type_name(const py::handle& obj) { return Py_TYPE(obj.ptr())->tp_name; }

// The object as an ndarray (no conversion) or TypeError.
inline py::array as_ndarray(const py::handle& obj, const char* op, const char* name) {
  EMBER_CHECK_TYPE(py::isinstance<py::array>(obj), op, name, " must be a numpy.ndarray, got ",
                   type_name(obj));
  return py::reinterpret_borrow<py::array>(obj);
}

// float32 or float64 with native byte order, else TypeError.
inline DType require_float(const py::array& a, const char* op, const char* name) {
  const DType dt = dtype_of(a);
  EMBER_CHECK_TYPE(dt != DType::other, op, name, " has dtype ", dtype_str(a),
                   "; expected float32 or float64");
  return dt;
}

inline bool is_c_contiguous(const py::array& a) {
  return (a.flags() & py::array::c_style) != 0;
}

inline bool is_aligned(const py::array& a) {
  return (a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0;
}

inline void require_c_contiguous(const py::array& a, const char* op, const char* name) {
  EMBER_CHECK_VALUE(is_c_contiguous(a), op, name, " must be C-contiguous");
}

inline void require_writeable(const py::array& a, const char* op, const char* name) {
  EMBER_CHECK_VALUE(a.writeable(), op, name, " is read-only");
}

// Misaligned element access is undefined behaviour for the kernels (and traps under UBSan);
// numpy only produces it from explicit byte-offset views, so refuse instead of copying.
inline void require_aligned(const py::array& a, const char* op, const char* name) {
  EMBER_CHECK_VALUE(is_aligned(a), op, name, " is not aligned to its itemsize (",
                    a.itemsize(), " bytes)");
}

// `a` must have `ref`'s dtype and shape (an output or a second input of an element-wise op).
inline void require_same_layout(const py::array& ref, const char* ref_name, const py::array& a,
                                const char* op, const char* name) {
  EMBER_CHECK_TYPE(dtype_of(a) == dtype_of(ref), op, name, " has dtype ", dtype_str(a), " but ",
                   ref_name, " has ", dtype_str(ref));
  bool same = a.ndim() == ref.ndim();
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == ref.shape(i);
  EMBER_CHECK_VALUE(same, op, name, " has shape ", shape_str(a), " but ", ref_name, " has ",
                    shape_str(ref));
}

// [lo, hi) bytes an array can touch, numpy-style bounds (exact for contiguous arrays,
// conservative for strided ones). Empty arrays touch nothing.
struct ByteRange {
  std::uintptr_t lo = 0, hi = 0;
  bool empty = true;
};

inline ByteRange byte_range(const py::array& a) {
  ByteRange r;
  if (a.size() == 0) return r;
  std::intptr_t lo = 0, hi = 0;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    const std::intptr_t ext = static_cast<std::intptr_t>(a.shape(i) - 1) * a.strides(i);
    (ext < 0 ? lo : hi) += ext;
  }
  const auto base = reinterpret_cast<std::intptr_t>(a.data());
  r.lo = static_cast<std::uintptr_t>(base + lo);
  r.hi = static_cast<std::uintptr_t>(base + hi + a.itemsize());
  r.empty = false;
  return r;
}

inline bool overlaps(const py::array& x, const py::array& y) {
  const ByteRange a = byte_range(x), b = byte_range(y);
  return !a.empty && !b.empty && a.lo < b.hi && b.lo < a.hi;
}

// Element stride of axis `axis`; size-1 axes get 0 (their stride is never used and numpy
// does not normalise it). ValueError when the byte stride is not a multiple of the itemsize.
inline int64_t elem_stride(const py::array& a, int axis, const char* op, const char* name) {
  if (a.shape(axis) <= 1) return 0;
  const py::ssize_t s = a.strides(axis), isz = a.itemsize();
  EMBER_CHECK_VALUE(s % isz == 0, op, name, " has a byte stride of ", s, " on axis ", axis,
                    ", not a multiple of its itemsize ", isz);
  return static_cast<int64_t>(s / isz);
}

}  // namespace ember
