"""Fused optimizer steps (Adam, AdamW, SGD-momentum) as a share of measured memory bandwidth,
against PyTorch CPU's fused and foreach optimizers when installed.

An optimizer step is memory-bound: per float32 element Adam/AdamW read param, grad, exp_avg,
exp_avg_sq (16 B) and write param, exp_avg, exp_avg_sq (12 B) = 28 B; SGD with momentum (after
the first step) reads param, grad, buffer and writes param, buffer = 20 B. Ceilings are probes
measured in the same run, on the same thread count and at the same array size:
``a = a + 3 c`` in place ("% triad": reads 8 B, writes 4 B, no write-allocate, in place like the
optimizer); ``a += d; b += d; c += d`` ("% rmw4": Adam's exact pattern, 4 streams read and 3
written in place, 28 B/element, trivial arithmetic), the tighter ceiling: a single core
sustains more bandwidth with more concurrent streams, which is why an optimizer can pass 100%
of the 2-stream triad. The classic out-of-place STREAM triad ``a = b + 3 c`` (12 B counted,
plus a write-allocate read it does not count) is listed for reference.
Times are the median of repeated ``opt.step()`` calls on one parameter of n elements (warm
state: no first-step allocation), ember and PyTorch in the same process.

    python bench/bench_optim.py [--threads 1 2] [--sizes 10000000 50000000] [--save]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import git_commit, machine, median_time, table  # noqa: E402

import ember  # noqa: E402
import ember.nn as nn  # noqa: E402
from ember import _C  # noqa: E402

try:
    import torch
except ImportError:  # the PyTorch columns are left out
    torch = None

BYTES = {"Adam": 28, "AdamW": 28, "SGD-momentum": 20}
KW = {
    "Adam": ("Adam", {"lr": 1e-3}),
    "AdamW": ("AdamW", {"lr": 1e-3, "weight_decay": 1e-2}),
    "SGD-momentum": ("SGD", {"lr": 1e-2, "momentum": 0.9}),
}


def check() -> None:
    """Correctness gate: 3 steps of each optimizer vs a float64 numpy version of its rule."""
    rng = np.random.default_rng(1)
    n = 1003
    p0 = rng.standard_normal(n)
    gs = [rng.standard_normal(n) for _ in range(3)]
    for name, (cls, kw) in KW.items():
        p = nn.Parameter(ember.tensor(p0.astype(np.float32)))
        opt = getattr(ember.optim, cls)([p], **kw)
        r, m, v = p0.copy(), np.zeros(n), np.zeros(n)
        for t, g in enumerate(gs, 1):
            p.grad = ember.tensor(g.astype(np.float32))
            opt.step()
            if cls == "SGD":
                m = g.copy() if t == 1 else 0.9 * m + g
                r = r - kw["lr"] * m
            else:
                if cls == "AdamW":
                    r = r * (1 - kw["lr"] * kw["weight_decay"])
                m = 0.9 * m + 0.1 * g
                v = 0.999 * v + 0.001 * g * g
                denom = np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8
                r = r - kw["lr"] / (1 - 0.9**t) * m / denom
        err = np.abs(p.detach().numpy() - r).max()
        assert err < 1e-5, f"{name} is wrong (max error {err:g})"


def triad_gbs(n: int, in_place: bool) -> float:
    a = np.ones(n, np.float32)
    c = np.full(n, 0.5, np.float32)
    b = a if in_place else np.ones(n, np.float32)
    t = _C._triad_seconds(a, b, c, 10)
    return 12 * n / t / 1e9


def rmw4_gbs(n: int) -> float:
    a, b, c, d = (np.ones(n, np.float32) for _ in range(4))
    return 28 * n / _C._rmw4_seconds(a, b, c, d, 10) / 1e9


def ember_case(name: str, n: int, rng):
    cls, kw = KW[name]
    p = nn.Parameter(ember.tensor(rng.standard_normal(n, dtype=np.float32)))
    p.grad = ember.tensor(rng.standard_normal(n, dtype=np.float32))
    opt = getattr(ember.optim, cls)([p], **kw)
    opt.step()  # state allocated and first-touched outside the timing
    return opt.step


def torch_case(name: str, n: int, mode: str):
    cls, kw = KW[name]
    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn(n)
    opt = getattr(torch.optim, cls)([p], **kw, **{mode: True})
    opt.step()
    return opt.step


def vs_torch(ref: dict, mode: str, t_ours: float) -> str:
    return f"{ref[mode] * 1e3:.1f} ({ref[mode] / t_ours:.2f}x)" if mode in ref else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 50_000_000])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--save", action="store_true", help="write bench/results/optim-cpu-<date>.md")
    args = ap.parse_args()

    check()
    load0 = os.getloadavg()
    head = (
        f"machine: {machine()}; {os.cpu_count()} cores\n"
        f"date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; ember commit "
        f"{git_commit()}; cpu path {ember.backends.cpu.get_cpu_path()}; "
        f"torch {torch.__version__ if torch else 'not installed'}"
    )
    print(head)
    rows = []
    for threads in args.threads:
        ember.set_num_threads(threads)
        if torch:
            torch.set_num_threads(threads)
        for n in args.sizes:
            ip, oop, rmw = triad_gbs(n, True), triad_gbs(n, False), rmw4_gbs(n)
            e = ""
            rows.append([threads, n, "probe: triad a=a+3c", e, f"{ip:.1f}", "100%", e, e, e, e])
            rows.append([threads, n, "probe: rmw4 a,b,c+=d", e, f"{rmw:.1f}", e, "100%", e, e, e])
            rows.append([threads, n, "probe: STREAM a=b+3c", e, f"{oop:.1f}", e, e, e, e, e])
            rng = np.random.default_rng(0)
            for name in KW:
                t_ours = median_time(ember_case(name, n, rng), repeat=args.repeat, warmup=2)
                gbs = BYTES[name] * n / t_ours / 1e9
                ref = {}
                if torch:
                    for mode in ("fused", "foreach"):
                        ref[mode] = median_time(
                            torch_case(name, n, mode), repeat=args.repeat, warmup=2
                        )
                rows.append(
                    [
                        threads,
                        n,
                        name,
                        f"{t_ours * 1e3:.1f}",
                        f"{gbs:.1f}",
                        f"{100 * gbs / ip:.0f}%",
                        f"{100 * gbs / rmw:.0f}%",
                        vs_torch(ref, "fused", t_ours),
                        vs_torch(ref, "foreach", t_ours),
                        f"{100 * BYTES[name] * n / ref['fused'] / 1e9 / rmw:.0f}%" if ref else "-",
                    ]
                )
    load1 = os.getloadavg()
    out = table(
        rows,
        [
            "threads",
            "n (fp32)",
            "case",
            "ember ms",
            "GB/s",
            "% triad",
            "% rmw4",
            "torch fused ms (speedup)",
            "torch foreach ms (speedup)",
            "torch fused % rmw4",
        ],
    )
    load = f"load average (1/5/15 min): before {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
    load += f"after {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}"
    print(out)
    print(load)
    if args.save:
        path = os.path.join(
            os.path.dirname(__file__), "results", f"optim-cpu-{dt.date.today():%Y-%m-%d}.md"
        )
        with open(path, "w") as f:
            f.write("# Fused optimizer steps, CPU\n\n")
            f.write("```\n" + head + "\n" + load + "\n```\n\n")
            f.write("Command: `python bench/bench_optim.py --save`\n\n")
            f.write(out + "\n\n" + __doc__.split("\n\n", 1)[1].split("\n\n    python")[0] + "\n")
        print(f"saved {path}")


if __name__ == "__main__":
    main()
