"""Batch-norm training forward and forward+backward (``_C.batchnorm_*``) against PyTorch CPU.

Memory-bound: the training forward reads x and writes y (8 B per float32 element at the
floor), the backward reads x and grad_out and writes grad_in (12 B); forward+backward is 20 B.
The table reports GB/s at those floor byte counts and the share of the copy bandwidth measured
in the same run at the same buffer size. Two levels are timed:

* kernel: our ``_C`` calls into warm, preallocated outputs vs ``torch.ops.aten``'s
  ``native_batch_norm`` / ``native_batch_norm_backward`` (which allocate their outputs);
* api: ``ember.nn.functional.batch_norm`` (+ ``backward``) vs ``torch.nn.functional.batch_norm``
  (+ ``backward``), both through their autograd layers, outputs allocated per call.

    python bench/bench_batchnorm.py [--threads 1 2] [--markdown results.md]
    python bench/bench_batchnorm.py --api-overhead   # api fwd+bwd: engine copy vs move, malloc
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import copy_bandwidth, git_commit, machine, median_time, table  # noqa: E402

import ember  # noqa: E402
import ember.nn.functional as F  # noqa: E402
from ember import _C  # noqa: E402

# The three NCHW shapes, then an MLP's [N, C] activations (BatchNorm1d).
SHAPES = [(32, 64, 32, 32), (64, 256, 14, 14), (8, 64, 56, 56), (512, 1024)]
EPS = 1e-5

try:
    import torch
except ImportError:  # the reference is optional
    torch = None


def check(x, w, b, g) -> None:
    """Correctness gate against float64 numpy: refuse to time a wrong kernel."""
    C = x.shape[1]
    ax = (0,) + tuple(range(2, x.ndim))
    bc = (C,) + (1,) * (x.ndim - 2)  # [C] -> broadcastable against x
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    mean, var = x64.mean(ax), x64.var(ax)
    inv = 1 / np.sqrt(var + EPS)
    xh = (x64 - mean.reshape(bc)) * inv.reshape(bc)
    ref_y = xh * w.reshape(bc) + b.reshape(bc)
    y = np.full_like(x, np.nan)
    m, v, i = (np.empty(C, np.float32) for _ in range(3))
    _C.batchnorm_fwd_train(x, w, b, EPS, y, m, v, i)
    assert np.abs(y - ref_y).max() < 1e-4, "batchnorm_fwd_train is wrong"
    gm, gxm = g64.mean(ax, keepdims=True), (g64 * xh).mean(ax, keepdims=True)
    ref_gx = (inv * w).reshape(bc) * (g64 - gm - xh * gxm)
    gx, gw, gb = np.full_like(x, np.nan), np.empty(C, np.float32), np.empty(C, np.float32)
    _C.batchnorm_bwd(g, x, m, i, w, True, gx, gw, gb)
    assert np.abs(gx - ref_gx).max() < 1e-4 * np.abs(ref_gx).max(), "batchnorm_bwd is wrong"


def cases(x, w, b, g):
    """(name, floor bytes per element, ours, torch or None)."""
    C = x.shape[1]
    y, gx = np.empty_like(x), np.empty_like(x)
    m, v, i, gw, gb = (np.empty(C, np.float32) for _ in range(5))

    def k_fwd():
        _C.batchnorm_fwd_train(x, w, b, EPS, y, m, v, i)

    def k_fwdbwd():
        _C.batchnorm_fwd_train(x, w, b, EPS, y, m, v, i)
        _C.batchnorm_bwd(g, x, m, i, w, True, gx, gw, gb)

    xe, we, be, ge = (ember.from_numpy(a) for a in (x, w, b, g))
    rme, rve = ember.zeros(C), ember.ones(C)
    we.requires_grad_()
    be.requires_grad_()
    xg = ember.from_numpy(x).requires_grad_()

    def a_fwd():
        F.batch_norm(xe, rme, rve, we, be, training=True)

    def a_fwdbwd():
        xg.grad = we.grad = be.grad = None
        F.batch_norm(xg, rme, rve, we, be, training=True).backward(ge)

    t_k_fwd = t_k_fb = t_a_fwd = t_a_fb = None
    if torch is not None:
        xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, w, b, g))
        rmt, rvt = torch.zeros(C), torch.ones(C)
        aten = torch.ops.aten

        def t_k_fwd():
            aten.native_batch_norm(xt, wt, bt, rmt, rvt, True, 0.1, EPS)

        def t_k_fb():
            _, sm, si = aten.native_batch_norm(xt, wt, bt, rmt, rvt, True, 0.1, EPS)
            aten.native_batch_norm_backward(
                gt, xt, wt, rmt, rvt, sm, si, True, EPS, [True, True, True]
            )

        wtg, btg = wt.clone().requires_grad_(), bt.clone().requires_grad_()
        xtg = xt.clone().requires_grad_()

        def t_a_fwd():
            with torch.no_grad():
                torch.nn.functional.batch_norm(xt, rmt, rvt, wt, bt, training=True)

        def t_a_fb():
            xtg.grad = wtg.grad = btg.grad = None
            torch.nn.functional.batch_norm(xtg, rmt, rvt, wtg, btg, training=True).backward(gt)

    return [
        ("kernel fwd", 8, k_fwd, t_k_fwd),
        ("kernel fwd+bwd", 20, k_fwdbwd, t_k_fb),
        ("api fwd", 8, a_fwd, t_a_fwd),
        ("api fwd+bwd", 20, a_fwdbwd, t_a_fb),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--markdown", help="also write the report to this file")
    args = ap.parse_args()

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        f"machine: {machine()}; {os.cpu_count()} logical CPUs",
        f"date: {now}; commit {git_commit()}; ember {ember.__version__}; cpu path "
        f"{ember.backends.cpu.capabilities()['selected']}; torch "
        f"{torch.__version__ if torch is not None else 'not installed'}",
        "load average (1/5/15 min) at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()),
        f"DRAM copy bandwidth: {copy_bandwidth():.1f} GB/s (numpy copyto, 256 MiB, warm)",
    ]
    print("\n".join(head) + "\n", flush=True)
    rows = []
    for threads in args.threads:
        ember.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        for shape in SHAPES:
            rng = np.random.default_rng(0)
            x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
            g = rng.standard_normal(shape).astype(np.float32)
            C = shape[1]
            w = rng.uniform(0.5, 1.5, C).astype(np.float32)
            b = rng.standard_normal(C).astype(np.float32)
            check(x, w, b, g)
            bw = copy_bandwidth(x.nbytes)  # the ceiling at this working-set size
            for name, bpe, ours, ref in cases(x, w, b, g):
                t_ours = median_time(ours, repeat=args.repeat)
                t_ref = median_time(ref, repeat=args.repeat) if ref is not None else None
                gbs = bpe * x.size / t_ours / 1e9
                rows.append(
                    [
                        threads,
                        "x".join(map(str, shape)),
                        name,
                        f"{t_ours * 1e3:.3f}",
                        "-" if t_ref is None else f"{t_ref * 1e3:.3f}",
                        "-" if t_ref is None else f"{t_ref / t_ours:.2f}x",
                        f"{gbs:.1f}",
                        "-" if t_ref is None else f"{bpe * x.size / t_ref / 1e9:.1f}",
                        f"{100 * gbs / bw:.0f}%",
                    ]
                )
                print(" | ".join(map(str, rows[-1])), flush=True)
    tab = table(
        rows,
        [
            "threads",
            "shape",
            "case",
            "ours ms",
            "torch ms",
            "speedup",
            "ours GB/s",
            "torch GB/s",
            "ours % copy",
        ],
    )
    tail = "load average (1/5/15 min) at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    print("\n" + tab + "\n\n" + tail)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# batch-norm CPU benchmark\n\n")
            f.write("\n".join(f"- {h}" for h in head) + f"\n- {tail}\n\n")
            f.write("Command: `python bench/bench_batchnorm.py --markdown <this file>`\n\n")
            f.write(
                "GB/s at the floor byte count (fwd 8 B/elem: read x, write y; fwd+bwd 20 B/elem:"
                " + read x, grad_out, write grad_in). % copy: of numpy copy bandwidth at the same"
                " buffer size, measured in this run by one numpy thread (2-thread rows can exceed"
                " 100%). api fwd+bwd: grads are reset to None every call; the engine moves each"
                " fresh gradient into .grad (no copy) and freed pages are kept for reuse"
                " (ember.backends.cpu.keep_freed_memory); see --api-overhead.\n\n"
            )
            f.write(tab + "\n")


def api_overhead(threads, rounds: int = 4, reps: int = 8) -> None:
    """``--api-overhead``: where api fwd+bwd time goes beyond the kernels. Interleaved rounds
    (so machine load hits every variant alike), min and median over rounds x reps calls:
    kernel fwd+bwd on warm buffers; api with the old engine (copy each first gradient into
    .grad) and glibc's default malloc policy; api with the move; api with the move and
    keep_freed_memory (ember's default)."""
    import time

    import ember.autograd.engine as E

    move_acc = E._accumulate_leaf

    def copy_acc(t, g, fresh=False):
        return move_acc(t, g, False)

    def times(fn):
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    rows = []
    variants = [("copy, glibc default", copy_acc, False), ("move, glibc default", move_acc, False),
                ("move, keep freed (default)", move_acc, True)]  # fmt: skip
    try:
        for th in threads:
            ember.set_num_threads(th)
            for shape in SHAPES:
                rng = np.random.default_rng(0)
                C = shape[1]
                x = rng.standard_normal(shape, dtype=np.float32)
                g = rng.standard_normal(shape, dtype=np.float32)
                w = rng.uniform(0.5, 1.5, C).astype(np.float32)
                b = rng.standard_normal(C).astype(np.float32)
                k_fb = cases(x, w, b, g)[1][2]
                xg, we, be = (ember.from_numpy(a).requires_grad_() for a in (x, w, b))
                ge, rm, rv = ember.from_numpy(g), ember.zeros(C), ember.ones(C)

                def a_fb(xg=xg, we=we, be=be, ge=ge, rm=rm, rv=rv):
                    xg.grad = we.grad = be.grad = None
                    F.batch_norm(xg, rm, rv, we, be, training=True).backward(ge)

                res = {"kernel fwd+bwd": []} | {v[0]: [] for v in variants}
                for _ in range(rounds):
                    res["kernel fwd+bwd"] += times(k_fb)
                    for name, acc, keep in variants:
                        E._accumulate_leaf = acc
                        ember.backends.cpu.keep_freed_memory(keep)
                        a_fb()
                        a_fb()
                        res[name] += times(a_fb)
                for name, ts in res.items():
                    rows.append([th, "x".join(map(str, shape)), name,
                                 f"{min(ts) * 1e3:.2f}", f"{np.median(ts) * 1e3:.2f}"])  # fmt: skip
                    print(" | ".join(map(str, rows[-1])), flush=True)
    finally:
        E._accumulate_leaf = move_acc
        ember.backends.cpu.keep_freed_memory(True)
    print("\n" + table(rows, ["threads", "shape", "variant", "min ms", "median ms"]))


if __name__ == "__main__":
    if "--api-overhead" in sys.argv:
        api_overhead([1, 2])
    else:
        main()
