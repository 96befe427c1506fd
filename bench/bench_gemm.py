"""GEMM benchmark: ember's _C.gemm vs numpy (OpenBLAS) and PyTorch CPU (MKL/oneDNN), same
process, same run, same thread count, float32, C = A @ B into a preallocated (warm) C.

    python bench/bench_gemm.py                 # full table, 1 and 2 threads
    python bench/bench_gemm.py --quick         # a few shapes
    python bench/bench_gemm.py --save          # also write bench/results/gemm-cpu-<date>.md
    python bench/bench_gemm.py --threshold     # 1 vs 2 threads on small GEMMs (kParallelWork)
    python bench/bench_gemm.py --scaling       # 1 vs 2 threads at >= 1024, median and best
    python bench/bench_gemm.py --cold          # fresh output every call (page first-touch)

Each case: correctness gate first (ours vs numpy float32, relative to max|C|; and the float64
error-scaling check on small shapes), then warm-up + median of repeats; on one thread the
libraries are called in turn (ours, numpy, torch, ours, ...) so that a slow spell of a shared
machine hits them alike (on more, each library's spinning workers would slow the next). The
FMA ceiling is measured in the same run by _C._fma_peak_gflops (independent FMA chains,
AVX-512 or AVX2 to match the GEMM path; x threads for the multi-thread ceiling).
numpy's BLAS threads are set with threadpoolctl (pip install ember[bench]); without it each
thread count runs in a subprocess with OPENBLAS_NUM_THREADS set before numpy is imported.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SQUARE = [32, 64, 128, 256, 512, 1024, 2048, 4096]
TRANSFORMER = [(4096, 768, 768), (512, 3072, 768), (512, 768, 3072), (1024, 128, 128)]
QUICK = [(64, 64, 64), (128, 128, 128), (512, 512, 512), (1024, 1024, 1024), (512, 3072, 768)]


def _shapes(quick: bool):
    if quick:
        return QUICK
    return [(n, n, n) for n in SQUARE] + TRANSFORMER


def _repeats(flops: float) -> tuple[int, float]:
    """(repeat, min_time): enough runs for a stable median without minutes per case."""
    if flops >= 5e10:
        return 3, 0.0
    if flops >= 2e9:
        return 7, 0.3
    return 21, 0.3


def run(threads_list, quick: bool, torch_ok: bool = True):
    import numpy as np
    from common import interleaved_median_times, machine, median_time

    import ember
    from ember import _C

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - the subprocess path sets the env var instead
        threadpool_limits = None
    torch = None
    if torch_ok:
        try:
            import torch
        except ImportError:
            torch = None

    caps = _C.cpu_capabilities()
    isa = "avx512" if caps["gemm_path"].startswith("avx512") else "avx2"
    peak1 = max(_C._fma_peak_gflops(isa, 0.05) for _ in range(5))
    # ember's AVX2 kernel too (the path of AVX2-only machines), against the AVX2 FMA peak
    avx2_too = isa == "avx512"
    peak_avx2 = max(_C._fma_peak_gflops("avx2", 0.05) for _ in range(5)) if avx2_too else 0.0
    rng = np.random.default_rng(0)
    rows = []
    gf_1thread = {}
    load0 = os.getloadavg()
    for nth in threads_list:
        _C.set_num_threads(nth)
        if threadpool_limits is not None:
            threadpool_limits(nth)
        if torch is not None:
            torch.set_num_threads(nth)
        for M, N, K in _shapes(quick):
            a = rng.standard_normal((M, K)).astype(np.float32)
            b = rng.standard_normal((K, N)).astype(np.float32)
            a3, b3 = a[None], b[None]
            c = np.empty((1, M, N), np.float32)
            c_np = np.empty((M, N), np.float32)
            # correctness gate: refuse to time a wrong kernel
            _C.gemm(a3, b3, c)
            np.matmul(a, b, out=c_np)
            rel = float(np.max(np.abs(c[0] - c_np)) / max(float(np.max(np.abs(c_np))), 1e-30))
            if not rel < 1e-4:
                raise SystemExit(f"[bench_gemm] WRONG RESULT for {M}x{N}x{K}: rel err {rel:.2e}")
            flops = 2.0 * M * N * K
            rep, mt = _repeats(flops)
            warm = 1 if flops >= 5e10 else 3
            # On one thread ours, numpy and torch are called in turn (interleaved_median_times),
            # so that a slow spell of the shared machine does not land on one library only. Not
            # on more threads: each library's workers keep spinning for a while after its call
            # (OpenBLAS, OpenMP; ours 50 us) and would take the cores from the next library's
            # call (a 2-thread run so interleaved read 1-10 GFLOP/s for numpy and torch at
            # 128^3-256^3 and no 2-thread scaling for ours at 512^3-1024^3).
            fns = [
                lambda a3=a3, b3=b3, c=c: _C.gemm(a3, b3, c),
                lambda a=a, b=b, c=c_np: np.matmul(a, b, out=c),
            ]
            if torch is not None:
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                tc = torch.empty((M, N), dtype=torch.float32)
                fns.append(lambda ta=ta, tb=tb, tc=tc: torch.mm(ta, tb, out=tc))
            if nth == 1:
                ts = interleaved_median_times(fns, rep, warm, mt)
            else:
                ts = [median_time(f, rep, warm, mt) for f in fns]
            t_ours, t_np = ts[0], ts[1]
            t_th = ts[2] if torch is not None else None
            avx2_cols = ["", ""]
            if avx2_too and nth == 1:
                _C._set_no_avx512(True)
                try:
                    t_a2 = median_time(lambda a3=a3, b3=b3, c=c: _C.gemm(a3, b3, c), rep, warm, mt)
                finally:
                    _C._set_no_avx512(False)
                g_a2 = flops / t_a2 / 1e9
                avx2_cols = [f"{g_a2:.1f}", f"{100 * g_a2 / peak_avx2:.0f}%"]
            g_ours, g_np = flops / t_ours / 1e9, flops / t_np / 1e9
            g_th = flops / t_th / 1e9 if t_th else None
            if nth == 1:
                gf_1thread[(M, N, K)] = g_ours
            scaling = (
                f"{g_ours / gf_1thread[(M, N, K)]:.2f}x"
                if nth > 1 and (M, N, K) in gf_1thread
                else ""
            )
            rows.append(
                [
                    f"{M}x{N}x{K}",
                    nth,
                    f"{g_ours:.1f}",
                    f"{g_np:.1f}",
                    f"{g_th:.1f}" if g_th else "-",
                    f"{g_ours / g_np:.2f}",
                    f"{g_ours / g_th:.2f}" if g_th else "-",
                    f"{100 * g_ours / (peak1 * nth):.0f}%",
                    f"{100 * g_np / (peak1 * nth):.0f}%",
                    f"{t_ours * 1e6:.1f}",
                    scaling,
                    *avx2_cols,
                ]
            )
            print(" | ".join(str(v) for v in rows[-1]), flush=True)
    load1 = os.getloadavg()
    info = {
        "machine": machine(),
        "gemm_path": caps["gemm_path"],
        "peak1": peak1,
        "peak_avx2": peak_avx2,
        "isa": isa,
        "numpy": np.__version__,
        "blas_threads": "threadpoolctl" if threadpool_limits else "env",
        "torch": torch.__version__ if torch is not None else "not installed",
        "ember": ember.__version__,
        "load": f"{load0[0]:.2f} before, {load1[0]:.2f} after (1-min load average)",
    }
    return rows, info


HEADER = [
    "M x N x K",
    "threads",
    "ours GF/s",
    "numpy GF/s",
    "torch GF/s",
    "ours/numpy",
    "ours/torch",
    "ours % peak",
    "numpy % peak",
    "ours us",
    "2T/1T",
    "ours AVX2 GF/s",
    "AVX2 % AVX2 peak",
]


def _check_error_rule():
    """DESIGN.md error rule on a few shapes: ours vs float64 <= 2x numpy float32 (+ floor)."""
    import numpy as np

    from ember import _C

    rng = np.random.default_rng(1)
    for M, N, K in [(127, 129, 1000), (300, 64, 4096)]:
        a = rng.standard_normal((1, M, K)).astype(np.float32)
        b = rng.standard_normal((1, K, N)).astype(np.float32)
        c = np.empty((1, M, N), np.float32)
        _C.gemm(a, b, c)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        e_ours = float(np.max(np.abs(c - ref)))
        e_np = float(np.max(np.abs(a @ b - ref)))
        if e_ours > 2 * e_np + 1e-6 * float(np.max(np.abs(ref))):
            raise SystemExit(
                f"[bench_gemm] error rule violated at {M}x{N}x{K}: ours {e_ours:.3g}"
                f" vs numpy {e_np:.3g}"
            )


def threshold():
    """Small GEMMs on 1 vs 2 threads: where does the second thread start to pay?"""
    import numpy as np
    from common import median_time

    from ember import _C

    rng = np.random.default_rng(2)
    print("M x N x K | MACs | 1 thread us | 2 threads us | 2T speed-up")
    for M, N, K in [
        (32, 64, 128),
        (64, 64, 64),
        (64, 64, 128),
        (64, 128, 128),
        (96, 96, 96),
        (128, 128, 128),
        (128, 128, 256),
        (192, 192, 192),
        (256, 256, 256),
        (32, 512, 512),
        (512, 32, 512),
    ]:
        a = rng.standard_normal((1, M, K)).astype(np.float32)
        b = rng.standard_normal((1, K, N)).astype(np.float32)
        c = np.empty((1, M, N), np.float32)
        ts = []
        for n in (1, 2):
            _C.set_num_threads(n)
            ts.append(median_time(lambda a=a, b=b, c=c: _C.gemm(a, b, c), 201, 20))
        print(
            f"{M}x{N}x{K} | {M * N * K:.2e} | {ts[0] * 1e6:.1f} | {ts[1] * 1e6:.1f} | "
            f"{ts[0] / ts[1]:.2f}"
        )
    print(
        "(note: ember's gemm only goes parallel above kParallelWork MACs, so below it both"
        " columns run one thread)"
    )


def scaling():
    """ember 1 vs 2 threads at >= 1024, median and best (min) of 15 runs each, with the CPU
    time the process actually got: on a shared machine the median mostly measures whether
    the second core was free, the best run what the code can do when it is."""
    import resource
    import time

    import numpy as np

    from ember import _C

    rng = np.random.default_rng(3)
    print(
        "M x N x K | 1T median GF/s | 2T median GF/s | median 2T/1T | 1T best | 2T best | "
        "best 2T/1T | 2T cpu/wall"
    )
    for M, N, K in [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 768, 768), (512, 3072, 768)]:
        a = rng.standard_normal((1, M, K)).astype(np.float32)
        b = rng.standard_normal((1, K, N)).astype(np.float32)
        c = np.empty((1, M, N), np.float32)
        res = {}
        for n in (1, 2):
            _C.set_num_threads(n)
            _C.gemm(a, b, c)
            ts = []
            cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for _ in range(15):
                t0 = time.perf_counter()
                _C.gemm(a, b, c)
                ts.append(time.perf_counter() - t0)
            cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
            res[n] = (float(np.median(ts)), min(ts), cpu / (wall1 - wall0))
        f = 2.0 * M * N * K / 1e9
        m1, m2 = f / res[1][0], f / res[2][0]
        b1, b2 = f / res[1][1], f / res[2][1]
        print(
            f"{M}x{N}x{K} | {m1:.1f} | {m2:.1f} | {m2 / m1:.2f}x | {b1:.1f} | {b2:.1f} | "
            f"{b2 / b1:.2f}x | {res[2][2]:.2f}"
        )


def cold():
    """Fresh output every call (first touch of new pages, DESIGN.md section 3), 1 thread:
    ember.ops.gemm(a, b) vs numpy a @ b vs torch.mm(a, b), all allocating their result."""
    import numpy as np
    from common import median_time

    import ember
    from ember import _C

    _C.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None
    rng = np.random.default_rng(4)
    print("M x N x K | ours GF/s (new C) | numpy a@b | torch.mm | ours/numpy | ours/torch")
    for M, N, K in [
        (128, 128, 128),
        (512, 512, 512),
        (1024, 1024, 1024),
        (4096, 768, 768),
        (512, 3072, 768),
    ]:
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        f = 2.0 * M * N * K / 1e9
        rep = 21 if f < 1 else 7
        t1 = median_time(lambda a=a, b=b: ember.ops.gemm(a, b), rep, 2)
        t2 = median_time(lambda a=a, b=b: a @ b, rep, 2)
        t3 = None
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            t3 = median_time(lambda ta=ta, tb=tb: torch.mm(ta, tb), rep, 2)
        th = f"{f / t3:.1f}" if t3 else "-"
        rt = f"{t3 / t1:.2f}" if t3 else "-"
        print(f"{M}x{N}x{K} | {f / t1:.1f} | {f / t2:.1f} | {th} | {t2 / t1:.2f} | {rt}")


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=HERE,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--save", action="store_true", help="write bench/results/gemm-cpu-<date>.md")
    p.add_argument("--threshold", action="store_true", help="1 vs 2 threads on small GEMMs")
    p.add_argument(
        "--scaling",
        action="store_true",
        help="ember 1 vs 2 threads at >= 1024: median, best, CPU time obtained",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="fresh output array every call (page first-touch), 1 thread",
    )
    args = p.parse_args()
    if args.cold:
        cold()
        return
    if args.threshold:
        threshold()
        return
    if args.scaling:
        scaling()
        return
    threads_list = [int(t) for t in args.threads.split(",")]
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        if os.environ.get("_EMBER_BENCH_CHILD") is None and len(threads_list) > 1:
            for n in threads_list:  # one subprocess per thread count, env set before numpy
                env = dict(
                    os.environ,
                    OPENBLAS_NUM_THREADS=str(n),
                    OMP_NUM_THREADS=str(n),
                    MKL_NUM_THREADS=str(n),
                    _EMBER_BENCH_CHILD="1",
                )
                subprocess.run(
                    [sys.executable, __file__, "--threads", str(n)]
                    + (["--quick"] if args.quick else [])
                    + (["--no-torch"] if args.no_torch else []),
                    env=env,
                    check=True,
                )
            return
    _check_error_rule()
    print(" | ".join(HEADER))
    rows, info = run(threads_list, args.quick, not args.no_torch)
    from common import table

    text = table(rows, HEADER)
    meta = "\n".join(f"- {k}: {v}" for k, v in info.items())
    print()
    print(meta)
    print(
        f"- FMA peak (1 core, {info['isa']}): {info['peak1']:.1f} GFLOP/s; "
        "% peak uses peak x threads; AVX2 FMA peak (1 core): "
        f"{info['peak_avx2']:.1f} GFLOP/s"
    )
    print()
    print(text)
    if args.save:
        date = datetime.datetime.now(datetime.timezone.utc)
        out = HERE / "results" / f"gemm-cpu-{date:%Y-%m-%d}.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(
            f"# GEMM, CPU float32 ({date:%Y-%m-%d %H:%M} UTC)\n\n"
            f"Command: `python bench/bench_gemm.py --save` (commit {_git_commit()})\n\n"
            f"{meta}\n- FMA peak (1 core, {info['isa']}, measured in this run): "
            f"{info['peak1']:.1f} GFLOP/s; % peak = GFLOP/s / (peak x threads); AVX2 FMA "
            f"peak {info['peak_avx2']:.1f} GFLOP/s (for ember's AVX2 kernel, 1 thread)\n"
            "- C preallocated (warm); median of repeats after warm-up (1 thread: the libraries' "
            "calls interleaved); ratios > 1 mean ember "
            "is faster; 2T/1T = ember's 2-thread / 1-thread GFLOP/s\n\n"
            f"{text}\n"
        )
        print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
