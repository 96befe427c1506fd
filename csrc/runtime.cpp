// runtime.cpp -- capabilities, CPU dispatch override, threads and CUDA queries.
//
// EMBER_NO_AVX2 is read once, when the module is imported; _set_force_scalar changes the
// choice at run time (tests use it to exercise both CPU paths in one process). CUDA queries
// never raise on a machine without a GPU or driver: the static cudart loads libcuda lazily and
// any failure of cudaGetDeviceCount is reported as 0 devices. A process forked after the
// OpenMP pool started runs its kernels single-threaded (see kernels/cpu/common.h).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "csrc/check.h"
#include "csrc/registry.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/pool.h"

#if defined(EMBER_HAS_OPENMP) && defined(__unix__)
#include <pthread.h>
#endif

#ifdef EMBER_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace py = pybind11;

namespace ember {

std::string cuda_error_string(int code) {
#ifdef EMBER_WITH_CUDA
  const auto e = static_cast<cudaError_t>(code);
  return str_cat(cudaGetErrorName(e), ": ", cudaGetErrorString(e));
#else
  return str_cat("CUDA error ", code);
#endif
}

}  // namespace ember

namespace {

bool g_no_avx2_env = false;
bool g_no_avx512_env = false;

bool env_true(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return false;
  std::string s(v);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s == "1" || s == "true" || s == "yes" || s == "on";
}

int max_thread_request() {
#ifdef EMBER_HAS_OPENMP
  return std::max(1024, 4 * omp_get_num_procs());
#else
  return 1024;
#endif
}

py::dict cpu_capabilities() {
  namespace cpu = ember::cpu;
  py::dict d;
  bool avx2 = false, fma = false, avx512f = false;
#if EMBER_COMPILED_AVX2
  __builtin_cpu_init();
  avx2 = __builtin_cpu_supports("avx2");
  fma = __builtin_cpu_supports("fma");
  avx512f = __builtin_cpu_supports("avx512f");
#endif
  d["avx2"] = avx2;
  d["fma"] = fma;
  d["avx512f"] = avx512f;
  d["compiled_avx2"] = cpu::compiled_avx2();
  d["no_avx2_env"] = g_no_avx2_env;
  d["selected"] = cpu::avx2_selected() ? "avx2" : "scalar";
  d["no_avx512_env"] = g_no_avx512_env;
  d["gemm_path"] = ember::gemm_path_name();
  d["openmp"] = cpu::has_openmp();
  d["max_threads"] = cpu::get_num_threads();
  return d;
}

int cuda_device_count() {
#ifdef EMBER_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it so it cannot surface in a later, unrelated check
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

void cuda_synchronize() {
#ifdef EMBER_WITH_CUDA
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = cudaDeviceSynchronize();
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    ember::runtime_error("cuda_synchronize", "CUDA error: ",
                         ember::cuda_error_string(static_cast<int>(err)));
  }
#else
  ember::runtime_error("cuda_synchronize", "ember was built without CUDA");
#endif
}

}  // namespace

EMBER_BIND(runtime) {
  g_no_avx2_env = env_true("EMBER_NO_AVX2");
  ember::cpu::set_force_scalar(g_no_avx2_env);
  g_no_avx512_env = env_true("EMBER_NO_AVX512");
  ember::cpu::set_no_avx512(g_no_avx512_env);
#if defined(EMBER_HAS_OPENMP) && defined(__unix__)
  pthread_atfork(nullptr, nullptr, [] { ember::cpu::on_fork_child(); });
#endif

  m.def("cpu_capabilities", &cpu_capabilities,
        "CPU features, compiled paths and the kernel path selected now (dict).");
  m.def("_set_force_scalar", &ember::cpu::set_force_scalar, py::arg("flag"),
        "Force the scalar CPU kernels (True) or allow AVX2 again (False). For tests.");
  m.def("_force_scalar", &ember::cpu::force_scalar, "Whether the scalar CPU path is forced.");
  m.def("_set_no_avx512", &ember::cpu::set_no_avx512, py::arg("flag"),
        "Disable (True) or allow (False) the AVX-512 kernels (GEMM). For tests; the env var "
        "EMBER_NO_AVX512=1 sets it at import.");
  m.def("_no_avx512", &ember::cpu::no_avx512, "Whether the AVX-512 kernels are disabled.");
  m.def(
      "_pool_throw_test",
      [](int nthreads, long long pieces, long long throw_at) {
        // Each piece sleeps 200 us so the workers join; piece throw_at throws. Returns how
        // many pieces ran to the end (the rest were skipped after the throw).
        std::atomic<long long> done{0};
        py::gil_scoped_release nogil;
        ember::cpu::ClaimPool::instance().run(nthreads, pieces, [&](int64_t p) {
          std::this_thread::sleep_for(std::chrono::microseconds(200));
          if (p == throw_at) throw std::runtime_error("[pool test] piece " + std::to_string(p));
          done.fetch_add(1);
        });
        return done.load();
      },
      py::arg("nthreads"), py::arg("pieces"), py::arg("throw_at"),
      "Run the claim pool with one throwing piece (RuntimeError on the caller). For tests.");
  m.def(
      "set_num_threads",
      [](long long n) {
        const int hi = max_thread_request();
        EMBER_CHECK_VALUE(n >= 1 && n <= hi, "set_num_threads", "n must be in [1, ", hi,
                          "], got ", n);
        ember::cpu::set_num_threads(static_cast<int>(n));
      },
      py::arg("n"), "Number of threads the CPU kernels use (process-wide).");
  m.def("get_num_threads", &ember::cpu::get_num_threads,
        "Threads the CPU kernels use: set_num_threads, else OMP_NUM_THREADS / cores (1 "
        "without OpenMP).");
  m.def(
      "cuda_compiled",
      [] {
#ifdef EMBER_WITH_CUDA
        return true;
#else
        return false;
#endif
      },
      "Whether the CUDA kernels were compiled into this build.");
  m.def("cuda_device_count", &cuda_device_count,
        "Visible CUDA devices; 0 without CUDA support, driver or device. Never raises.");
  m.def("cuda_synchronize", &cuda_synchronize,
        "cudaDeviceSynchronize(); RuntimeError without CUDA or on a CUDA error.");
}
