// check.h -- error helpers for the pybind11 boundary.
//
// Every failed check raises a Python exception whose message starts with "[op] ":
//   EMBER_CHECK_VALUE -> ValueError   (shapes, layout, read-only, overlap, ranges)
//   EMBER_CHECK_TYPE  -> TypeError    (wrong dtype, not an array)
//   ember::runtime_error -> RuntimeError (CUDA unavailable or failed)
// The message arguments are only evaluated when the check fails, so checks are free on the
// happy path. Kernels never throw; all validation happens here, before the GIL is released.
#pragma once

#include <pybind11/pybind11.h>

#include <sstream>
#include <stdexcept>
#include <string>

namespace ember {

template <typename... Ts>
std::string str_cat(const Ts&... xs) {
  std::ostringstream os;
  (os << ... << xs);
  return os.str();
}

template <typename... Ts>
[[noreturn]] void value_error(const char* op, const Ts&... xs) {
  throw pybind11::value_error(str_cat("[", op, "] ", xs...));
}

template <typename... Ts>
[[noreturn]] void type_error(const char* op, const Ts&... xs) {
  throw pybind11::type_error(str_cat("[", op, "] ", xs...));
}

template <typename... Ts>
[[noreturn]] void runtime_error(const char* op, const Ts&... xs) {
  throw std::runtime_error(str_cat("[", op, "] ", xs...));  // -> RuntimeError
}

// "cudaErrorNoDevice: no CUDA-capable device is detected" (csrc/runtime.cpp).
std::string cuda_error_string(int code);

}  // namespace ember

#define EMBER_CHECK_VALUE(cond, op, ...)               \
  do {                                                 \
    if (!(cond)) ::ember::value_error(op, __VA_ARGS__); \
  } while (0)

#define EMBER_CHECK_TYPE(cond, op, ...)               \
  do {                                                \
    if (!(cond)) ::ember::type_error(op, __VA_ARGS__); \
  } while (0)
