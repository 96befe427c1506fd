"""Scaled-dot-product attention (our flash-style CPU kernels) against PyTorch CPU SDPA.

Shapes [B, H, S, D] (S = Lq = Lk), each causal and not, at 1 and 2 threads:
* fwd: ``ember.nn.functional.scaled_dot_product_attention`` vs
  ``torch.nn.functional.scaled_dot_product_attention`` (no autograd recording on either side);
* fwd+bwd: the same with q, k, v requiring grad, then ``backward(g)`` through each library's
  autograd.
FLOPs: 4 B H S^2 D for the forward (Q K^T and P V), the backward counted as 2.5x that (so
fwd+bwd = 3.5x), both halved for causal. The ceiling is the
single-thread FMA peak measured in this run (``_C._fma_peak_gflops``, the ISA our GEMM path
runs: AVX-512 when selected, else AVX2) times the thread count.
Memory: S = 4096 forward in a fresh subprocess per library; the peak-RSS growth
(VmHWM - VmRSS after resetting the high-water mark through /proc/self/clear_refs) over a
first call (output + workspaces) and a second one: an S x S matrix would show as hundreds of
MiB.

    python bench/bench_attention.py [--threads 1 2] [--repeat 5] [--markdown results.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys

# The float64 correctness gates call numpy's BLAS; OpenBLAS's worker threads then busy-wait
# for a while and took the second core from the 2-thread run timed next (ours: 10-12 ms
# forward measured 16 ms). The gates are small: one BLAS thread (read at numpy's import).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from common import git_commit, machine, median_time, table  # noqa: E402

import ember  # noqa: E402
import ember.nn.functional as F  # noqa: E402
from ember import _C  # noqa: E402

SHAPES = [(4, 8, 512, 64), (1, 12, 1024, 64), (8, 8, 128, 64)]

try:
    import torch
except ImportError:  # the reference is optional
    torch = None


def ref_attention(q, k, v, causal):
    """float64 numpy reference for one [S, D] head."""
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    s = q @ k.T / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.tril(np.ones(s.shape, bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def check(q, k, v, causal) -> None:
    """Correctness gate: refuse to time a wrong kernel (first and last head vs float64)."""
    out = F.scaled_dot_product_attention(
        ember.from_numpy(q), ember.from_numpy(k), ember.from_numpy(v), is_causal=causal
    ).numpy()
    for b, h in ((0, 0), (q.shape[0] - 1, q.shape[1] - 1)):
        ref = ref_attention(q[b, h], k[b, h], v[b, h], causal)
        assert np.abs(out[b, h] - ref).max() < 1e-4, "attention forward is wrong"


def check_backward() -> None:
    """Gradient gate on a small problem: float64 kernel path vs numpy VJP."""
    rng = np.random.default_rng(1)
    q, k, v, g = (rng.standard_normal((2, 70, 32)) for _ in range(4))
    for causal in (False, True):
        tq, tk, tv = (ember.from_numpy(a.astype(np.float32)).requires_grad_() for a in (q, k, v))
        F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal).backward(
            ember.from_numpy(g.astype(np.float32))
        )
        s = q @ k.transpose(0, 2, 1) / np.sqrt(32)
        if causal:
            s = np.where(np.tril(np.ones((70, 70), bool)), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        dp = g @ v.transpose(0, 2, 1)
        ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / np.sqrt(32)
        for got, ref in ((tq.grad, ds @ k), (tk.grad, ds.transpose(0, 2, 1) @ q),
                         (tv.grad, p.transpose(0, 2, 1) @ g)):  # fmt: skip
            assert np.abs(got.numpy() - ref).max() < 1e-4, "attention backward is wrong"


def cases(q, k, v, g, causal):
    """(name, ours, torch or None)."""
    qe, ke, ve, ge = (ember.from_numpy(a) for a in (q, k, v, g))
    qg, kg, vg = (ember.from_numpy(a).requires_grad_() for a in (q, k, v))

    def o_fwd():
        F.scaled_dot_product_attention(qe, ke, ve, is_causal=causal)

    def o_fb():
        qg.grad = kg.grad = vg.grad = None
        F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal).backward(ge)

    t_fwd = t_fb = None
    if torch is not None:
        sdpa = torch.nn.functional.scaled_dot_product_attention
        qt, kt, vt, gt = (torch.from_numpy(a) for a in (q, k, v, g))
        qtg, ktg, vtg = (torch.from_numpy(a.copy()).requires_grad_() for a in (q, k, v))

        def t_fwd():
            with torch.no_grad():
                sdpa(qt, kt, vt, is_causal=causal)

        def t_fb():
            qtg.grad = ktg.grad = vtg.grad = None
            sdpa(qtg, ktg, vtg, is_causal=causal).backward(gt)

    return [("fwd", 1.0, o_fwd, t_fwd), ("fwd+bwd", 3.5, o_fb, t_fb)]


_MEM_CHILD = r"""
import sys, numpy as np
lib, B, H, S, D = sys.argv[1], *map(int, sys.argv[2:6])
rng = np.random.default_rng(0)
q, k, v = (np.empty((B, H, S, D), np.float32) for _ in range(3))
for x in (q, k, v):  # drawn in place: no float64 temporaries to raise the peak before the call
    rng.standard_normal(out=x, dtype=np.float32)
if lib == "ember":
    import ember, ember.nn.functional as F
    ember.set_num_threads(1)
    a = [ember.from_numpy(x) for x in (q, k, v)]
    run = lambda: F.scaled_dot_product_attention(*a)
else:
    import torch
    torch.set_num_threads(1)
    a = [torch.from_numpy(x) for x in (q, k, v)]
    def run():
        with torch.no_grad():
            return torch.nn.functional.scaled_dot_product_attention(*a)
def status(key):  # kB -> MiB
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith(key)) / 1024.0
def peak_growth(fn):  # resets the high-water mark (Linux clear_refs 5), then VmHWM - VmRSS
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS:")
    out = fn()
    return out, status("VmHWM:") - base
o1, r1 = peak_growth(run)  # first call: output + workspaces + lazy thread pools
del o1
_, r2 = peak_growth(run)  # second call: the freed output's pages may be reused
print(r1, r2)
"""


def peak_rss_growth(lib: str, shape) -> tuple | None:
    """MiB of peak-RSS growth over a first and a second forward call, in a fresh process."""
    cmd = [sys.executable, "-c", _MEM_CHILD, lib, *map(str, shape)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
        return tuple(float(x) for x in out.stdout.strip().splitlines()[-1].split())
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--markdown", help="also write the report to this file")
    args = ap.parse_args()

    caps = ember.backends.cpu.capabilities()
    isa = "avx512" if _C.cpu_capabilities()["gemm_path"].startswith("avx512") else "avx2"
    peak1 = max(_C._fma_peak_gflops(isa, 0.05) for _ in range(5))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        f"machine: {machine()}; {os.cpu_count()} logical CPUs",
        f"date: {now}; commit {git_commit()}; ember {ember.__version__}; cpu path "
        f"{caps['selected']} (tile micro-kernel {isa}); torch "
        f"{torch.__version__ if torch is not None else 'not installed'}",
        "load average (1/5/15 min) at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()),
        f"FMA peak ({isa}, 1 thread, measured now): {peak1:.1f} GFLOP/s",
    ]
    print("\n".join(head) + "\n", flush=True)
    check_backward()
    rows = []
    for threads in args.threads:
        ember.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        for shape in SHAPES:
            B, H, S, D = shape
            rng = np.random.default_rng(0)
            q, k, v, g = (rng.standard_normal(shape).astype(np.float32) for _ in range(4))
            for causal in (False, True):
                check(q, k, v, causal)
                flops = 4 * B * H * S * S * D / (2 if causal else 1)
                for name, mult, ours, ref in cases(q, k, v, g, causal):
                    t_o = median_time(ours, repeat=args.repeat, warmup=2)
                    t_r = median_time(ref, repeat=args.repeat, warmup=2) if ref else None
                    gf = mult * flops / t_o / 1e9
                    rows.append(
                        [
                            threads,
                            "x".join(map(str, shape)),
                            "causal" if causal else "full",
                            name,
                            f"{t_o * 1e3:.2f}",
                            "-" if t_r is None else f"{t_r * 1e3:.2f}",
                            "-" if t_r is None else f"{t_r / t_o:.2f}x",
                            f"{gf:.1f}",
                            "-" if t_r is None else f"{mult * flops / t_r / 1e9:.1f}",
                            f"{100 * gf / (peak1 * threads):.0f}%",
                        ]
                    )
                    print(" | ".join(map(str, rows[-1])), flush=True)
    tab = table(
        rows,
        ["threads", "B x H x S x D", "mask", "case", "ours ms", "torch ms", "speedup",
         "ours GFLOP/s", "torch GFLOP/s", "ours % peak"],
    )  # fmt: skip
    mem_shape = (1, 8, 4096, 64)
    ins = 3 * np.prod(mem_shape) * 4 / 2**20
    s2 = mem_shape[0] * mem_shape[1] * mem_shape[2] ** 2 * 4 / 2**20
    mem = [f"S = 4096 forward, {'x'.join(map(str, mem_shape))}, 1 thread: inputs {ins:.0f} MiB,"
           f" one S x S float32 score matrix per head would be {s2:.0f} MiB in all"]  # fmt: skip
    for lib in ("ember", "torch") if torch is not None else ("ember",):
        growth = peak_rss_growth(lib, mem_shape)
        what = (
            "failed"
            if growth is None
            else (
                f"first call {growth[0]:.1f} MiB (its output: {ins / 3:.0f} MiB), "
                f"second {growth[1]:.1f} MiB"
            )
        )
        mem.append(f"  {lib}: peak RSS growth {what}")  # fmt: skip
    tail = "load average (1/5/15 min) at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    print("\n" + tab + "\n\n" + "\n".join(mem) + "\n\n" + tail)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# attention CPU benchmark\n\n")
            f.write("\n".join(f"- {h}" for h in head) + f"\n- {tail}\n\n")
            f.write("Command: `python bench/bench_attention.py --markdown <this file>`\n\n")
            f.write(tab + "\n\n" + "\n".join(mem) + "\n")


if __name__ == "__main__":
    main()
