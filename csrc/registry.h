// registry.h -- how a csrc/ dispatch file adds its functions to ember._C.
//
//   EMBER_BIND(relu) { m.def("relu_fwd", ...); }
//
// registers a binder that bindings.cpp runs (in name order) when the module is imported, so
// adding an op is one new csrc/<op>.cpp and never an edit to bindings.cpp or the build.
// Registration happens in static initialisers of this one shared object (all sources are
// compiled into the module, none into a static library, so none can be dropped by the linker).
#pragma once

#include <pybind11/pybind11.h>

#include <utility>
#include <vector>

namespace ember {

using BindFn = void (*)(pybind11::module_&);

inline std::vector<std::pair<const char*, BindFn>>& binders() {
  static std::vector<std::pair<const char*, BindFn>> list;
  return list;
}

struct RegisterBinder {
  RegisterBinder(const char* name, BindFn fn) { binders().emplace_back(name, fn); }
};

}  // namespace ember

#define EMBER_BIND(name)                                                          \
  static void ember_bind_##name(pybind11::module_& m);                            \
  static const ::ember::RegisterBinder ember_registered_##name(#name, &ember_bind_##name); \
  static void ember_bind_##name(pybind11::module_& m)
