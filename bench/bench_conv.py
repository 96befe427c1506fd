"""2-D convolution forward and forward+backward against PyTorch CPU (torch.nn.functional.conv2d).

Per shape and thread count (ember.set_num_threads / torch.set_num_threads, same run, same
process): a correctness gate first (ember vs a float64 computation through torch, or skipped
when torch is absent), then the median of repeats after warm-up of

* fwd: ``F.conv2d`` under no_grad (output allocated per call, as in a model), both libraries;
* fwd (warm out): ``_C.conv2d_fwd`` into a preallocated output (the kernel alone, no page
  faults of a fresh output; DESIGN.md section 3);
* fwd+bwd: ``F.conv2d`` + ``backward`` through each library's autograd (input, weight and
  bias gradients).

GFLOP/s counts 2*N*O*OH*OW*C/G*KH*KW per forward and 3x that for fwd+bwd; % peak is against
the FMA peak measured in the same run (_C._fma_peak_gflops, x threads). Shared machines make
the numbers indicative only.

    python bench/bench_conv.py [--threads 1 2] [--repeat 10] [--only 0 3] [--markdown out.md]
    python bench/bench_conv.py --threads 1 --clock thread   # CPU time of the calling thread

``--clock thread`` times with the calling thread's CPU time instead of wall time: on a loaded
shared machine it ignores the time the process waits for a core (both libraries run their
1-thread work on the calling thread), so 1-thread ratios stay meaningful; it is refused with
more than one thread (worker threads' time would be missed).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, table  # noqa: E402

import ember  # noqa: E402
import ember.nn.functional as F  # noqa: E402
from ember import _C  # noqa: E402

try:
    import torch
except ImportError:  # the reference is optional
    torch = None

# (name, N, C, H, W, O, k, stride, padding, groups)
SHAPES = [
    ("N32 3->64 32x32 k3 p1", 32, 3, 32, 32, 64, 3, 1, 1, 1),
    ("N32 64->64 32x32 k3 p1", 32, 64, 32, 32, 64, 3, 1, 1, 1),
    ("N16 128->128 16x16 k3 p1", 16, 128, 16, 16, 128, 3, 1, 1, 1),
    ("N8 64->64 56x56 k3 p1", 8, 64, 56, 56, 64, 3, 1, 1, 1),
    ("N8 256->64 56x56 k1", 8, 256, 56, 56, 64, 1, 1, 0, 1),
    ("N16 64->128 32x32 k3 s2 p1", 16, 64, 32, 32, 128, 3, 2, 1, 1),
    ("N64 1->32 28x28 k3 p1", 64, 1, 28, 28, 32, 3, 1, 1, 1),
    ("N64 32->64 14x14 k3 p1", 64, 32, 14, 14, 64, 3, 1, 1, 1),
    ("N32 dw64 56x56 k3 p1", 32, 64, 56, 56, 64, 3, 1, 1, 64),
    # the small ResNet of examples/resnet_fashion.py (width 16, batch 128)
    ("N128 16->16 28x28 k3 p1", 128, 16, 28, 28, 16, 3, 1, 1, 1),
    ("N128 16->32 28x28 k3 s2 p1", 128, 16, 28, 28, 32, 3, 2, 1, 1),
    ("N128 32->32 14x14 k3 p1", 128, 32, 14, 14, 32, 3, 1, 1, 1),
    ("N128 64->64 7x7 k3 p1", 128, 64, 7, 7, 64, 3, 1, 1, 1),
]


CLOCK = time.perf_counter


def median_time(fn, repeat: int = 10, warmup: int = 2) -> float:
    """Median time of fn() over ``repeat`` runs after ``warmup`` runs, on CLOCK."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return float(np.median(times))


def flops(s) -> float:
    _, N, C, H, W, Co, k, st, p, G = s
    OH = (H + 2 * p - k) // st + 1
    OW = (W + 2 * p - k) // st + 1
    return 2.0 * N * Co * OH * OW * (C // G) * k * k


def check(s, x, w, b) -> None:
    """Correctness gate: refuse to time a wrong kernel (float64 torch as the reference)."""
    if torch is None:
        return
    st, p, G = s[7], s[8], s[9]
    xt, wt, bt = (ember.from_numpy(a).requires_grad_() for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, st, p, 1, G)
    g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    y.backward(ember.from_numpy(g))
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, st, p, 1, G)
    ty.backward(torch.tensor(g, dtype=torch.float64))
    for name, a, r in (("y", y.detach(), ty), ("gx", xt.grad, tx.grad), ("gw", wt.grad, tw.grad),
                       ("gb", bt.grad, tb.grad)):  # fmt: skip
        r = r.detach().numpy()
        err = np.abs(a.numpy() - r).max() / max(np.abs(r).max(), 1e-30)
        assert err < 1e-4, f"{s[0]}: {name} is wrong (relative error {err:.2g})"


def time_case(s, x, w, b, nth, repeat, rng):
    """(ours fwd, ours fwd into a warm output, torch fwd, ours fwd+bwd, torch fwd+bwd) in s."""
    st, p, G = s[7], s[8], s[9]
    ember.set_num_threads(nth)
    ex, ew, eb = (ember.from_numpy(a) for a in (x, w, b))
    exg, ewg, ebg = (ember.from_numpy(a).requires_grad_() for a in (x, w, b))

    def e_fwd():
        with ember.no_grad():
            F.conv2d(ex, ew, eb, st, p, 1, G)

    y = F.conv2d(ex, ew, eb, st, p, 1, G).numpy()
    g = ember.from_numpy(rng.standard_normal(y.shape).astype(np.float32))
    out = np.empty_like(y)

    def e_kernel():
        _C.conv2d_fwd(x, w, b, out, (st, st), (p, p, p, p), (1, 1), G)

    def e_fb():
        exg.grad = ewg.grad = ebg.grad = None
        F.conv2d(exg, ewg, ebg, st, p, 1, G).backward(g)

    res = [median_time(f, repeat=repeat, warmup=2) for f in (e_fwd, e_kernel)]
    te_fb = median_time(e_fb, repeat=repeat, warmup=2)
    tt_f = tt_fb = float("nan")
    if torch is not None:
        torch.set_num_threads(nth)
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
        txg, twg, tbg = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
        tg = torch.from_numpy(g.numpy())

        def t_fwd():
            with torch.no_grad():
                torch.nn.functional.conv2d(tx, tw, tb, st, p, 1, G)

        def t_fb():
            txg.grad = twg.grad = tbg.grad = None
            torch.nn.functional.conv2d(txg, twg, tbg, st, p, 1, G).backward(tg)

        tt_f = median_time(t_fwd, repeat=repeat, warmup=2)
        tt_fb = median_time(t_fb, repeat=repeat, warmup=2)
    return res[0], res[1], tt_f, te_fb, tt_fb


def run(threads_list, repeat, only):
    caps = _C.cpu_capabilities()
    isa = "avx512" if caps["gemm_path"].startswith("avx512") else "avx2"
    peak1 = max(_C._fma_peak_gflops(isa, 0.05) for _ in range(5))
    rng = np.random.default_rng(0)
    rows = []
    for idx, s in enumerate(SHAPES):
        if only and idx not in only:
            continue
        name, N, C, H, W, Co, k, st, p, G = s
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = rng.standard_normal((Co, C // G, k, k)) / np.sqrt(C // G * k * k)
        w = w.astype(np.float32)
        b = rng.standard_normal(Co).astype(np.float32)
        check(s, x, w, b)
        fl = flops(s)
        for nth in threads_list:
            te_f, te_k, tt_f, te_fb, tt_fb = time_case(s, x, w, b, nth, repeat, rng)
            pk = peak1 * nth
            rows.append([
                name, nth,
                f"{te_f * 1e3:.2f}", f"{te_k * 1e3:.2f}", f"{tt_f * 1e3:.2f}",
                f"{fl / te_k / 1e9:.0f}", f"{100 * fl / te_k / 1e9 / pk:.0f}%",
                f"{tt_f / te_f:.2f}x",
                f"{te_fb * 1e3:.2f}", f"{tt_fb * 1e3:.2f}",
                f"{3 * fl / te_fb / 1e9:.0f}", f"{100 * 3 * fl / te_fb / 1e9 / pk:.0f}%",
                f"{tt_fb / te_fb:.2f}x",
            ])  # fmt: skip
            print(" | ".join(str(v) for v in rows[-1]), flush=True)
    header = ["shape", "thr", "fwd ms", "fwd warm-out ms", "torch fwd ms", "GFLOP/s (warm)",
              "% peak", "torch/ours fwd", "fwd+bwd ms", "torch fwd+bwd ms", "GFLOP/s",
              "% peak", "torch/ours fwd+bwd"]  # fmt: skip
    return peak1, isa, table(rows, header)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--only", type=int, nargs="*", default=[], help="shape indices to run")
    ap.add_argument("--markdown", help="write the table to this file")
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall")
    args = ap.parse_args()
    if args.clock == "thread":
        if args.threads != [1]:
            ap.error("--clock thread needs --threads 1")
        global CLOCK
        CLOCK = time.thread_time
    peak1, isa, tab = run(args.threads, args.repeat, set(args.only))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()  # fmt: skip
    except OSError:
        commit = "?"
    head = (
        f"conv2d, {datetime.date.today()}, commit {commit}, {machine()}\n"
        f"FMA peak ({isa}, 1 thread): {peak1:.0f} GFLOP/s; torch "
        f"{torch.__version__ if torch else 'absent'}; load {os.getloadavg()[0]:.1f}; clock "
        f"{args.clock}\n"
    )
    print(head)
    print(tab)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(head + "\n" + tab + "\n")


if __name__ == "__main__":
    main()
