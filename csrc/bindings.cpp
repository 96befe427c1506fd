// bindings.cpp -- the ember._C module.
//
// The functions themselves live in one csrc/<op>.cpp per op (runtime.cpp for capabilities,
// threads and CUDA queries), each registered with EMBER_BIND (registry.h); this file only
// runs the registered binders in a fixed (name) order.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstring>

#include "csrc/registry.h"

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "ember._C: validated entry points into ember's CPU (scalar / AVX2+FMA, OpenMP) and CUDA "
      "kernels. Internal API: call it through the ember package.";
  auto list = ember::binders();
  std::sort(list.begin(), list.end(),
            [](const auto& x, const auto& y) { return std::strcmp(x.first, y.first) < 0; });
  for (const auto& entry : list) entry.second(m);
}
