// pool.h -- a small claim-based thread pool for kernels that split into a few big pieces (GEMM).
//
// Why not an OpenMP parallel region: on our shared 2-core machines the second core is often
// busy with another process. An OpenMP region then ends in a barrier that waits until the
// scheduler gives the worker a time slice (~3 ms measured), so a 40 us GEMM took 3.4 ms on 2
// threads. Here the calling thread and the workers *claim* pieces from an atomic counter: a
// worker that wakes late finds nothing left and the caller, which did the work itself, only
// ever waits for pieces a running worker has claimed. With the other core idle, the workers
// (spinning briefly after each job, then sleeping on a condition variable) pick up their
// pieces within microseconds and the split is as even as a static one.
//
// Workers are created on first use and live for the process (a leaked singleton: no join at
// exit). A child forked after the pool started runs kernels single-threaded (common.h).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "kernels/cpu/common.h"

namespace ember::cpu {

class ClaimPool {
 public:
  static ClaimPool& instance() {
    static ClaimPool* pool = new ClaimPool();  // leaked on purpose: no join at exit
    return *pool;
  }

  // Run fn(piece) for every piece in [0, n) on the calling thread plus up to nthreads - 1
  // workers. Returns when every piece is done. If fn throws (a workspace that cannot be
  // allocated: std::bad_alloc), the pieces not yet claimed are skipped and the first exception
  // is rethrown here, on the calling thread, once no piece is running: an exception escaping
  // a worker thread would call std::terminate and end the Python process.
  template <typename Fn>
  void run(int nthreads, int64_t n, Fn&& fn) {
    if (nthreads <= 1 || n <= 1) {
      for (int64_t p = 0; p < n; ++p) fn(p);
      return;
    }
    Job job;
    job.n = n;
    job.max_workers = nthreads - 1;
    using F = std::remove_reference_t<Fn>;
    job.call = [](void* f, int64_t p) { (*static_cast<F*>(f))(p); };
    job.fn = const_cast<void*>(static_cast<const void*>(&fn));
    {
      std::lock_guard<std::mutex> lk(mu_);
      ensure_workers(nthreads - 1);
      cur_ = &job;
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work(&job);
    {
      std::lock_guard<std::mutex> lk(mu_);
      cur_ = nullptr;  // no worker can join from here on
    }
    // Workers that joined are running (they took the mutex); wait for their claimed pieces.
    while (job.active.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  struct Job {
    int64_t n = 0;
    int max_workers = 0;
    int joined = 0;  // guarded by mu_
    void (*call)(void*, int64_t) = nullptr;
    void* fn = nullptr;
    std::atomic<int64_t> next{0};
    std::atomic<int> active{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;  // written once, by the thread that set `failed`
  };

  static void work(Job* j) {
    for (;;) {
      const int64_t p = j->next.fetch_add(1, std::memory_order_relaxed);
      if (p >= j->n || j->failed.load(std::memory_order_relaxed)) break;
      try {
        j->call(j->fn, p);
      } catch (...) {
        // Seen by the caller through `active` (release in worker_loop) or its own thread.
        if (!j->failed.exchange(true)) j->error = std::current_exception();
        j->next.store(j->n, std::memory_order_relaxed);  // nothing more is claimed
        break;
      }
    }
  }

  void ensure_workers(int n) {  // mu_ held
    g_pool_started.store(true, std::memory_order_relaxed);
    while (static_cast<int>(workers_) < n) {
      std::thread(&ClaimPool::worker_loop, this).detach();
      ++workers_;
    }
  }

  void worker_loop() {
    uint64_t seen = gen_.load(std::memory_order_acquire);
    for (;;) {
      // Spin ~50 us for the next job (GEMMs often come in bursts), then sleep.
      const auto t_end = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      while (gen_.load(std::memory_order_acquire) == seen &&
             std::chrono::steady_clock::now() < t_end) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
      Job* j = nullptr;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return gen_.load(std::memory_order_relaxed) != seen; });
        seen = gen_.load(std::memory_order_relaxed);
        j = cur_;
        if (!j || j->joined >= j->max_workers) continue;
        ++j->joined;
        j->active.fetch_add(1, std::memory_order_relaxed);
      }
      work(j);
      j->active.fetch_sub(1, std::memory_order_release);  // last touch of *j
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  Job* cur_ = nullptr;
  size_t workers_ = 0;
};

}  // namespace ember::cpu
