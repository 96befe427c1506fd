"""Pooling (``_C.maxpool2d_*``, ``avgpool2d_*``, ``adaptive_avgpool2d_*``) against PyTorch CPU.

Memory-bound. Floor bytes per call, float32: forward reads the input (4 B per input element)
and writes the output (4 B) plus, for max pooling, the int64 argmax (8 B per output element);
backward reads grad_out (4 B, + 8 B of indices for max) and writes grad_in (4 B per input
element). GB/s are at those floor counts; "% triad" compares them with ``a = b + 3c``
(``_C._triad_seconds``, counted as 12 B per element) measured in the same run, on the same
thread count, at the input's size. Two levels are timed:

* kernel: our ``_C`` calls into warm, preallocated outputs vs ``torch.ops.aten``
  (``max_pool2d_with_indices`` / ``avg_pool2d`` / ``_adaptive_avg_pool2d`` and their
  backwards, which allocate their outputs);
* api: ``ember.nn.functional`` (+ ``backward``) vs ``torch.nn.functional`` (+ ``backward``),
  both through autograd, outputs allocated per call (fresh pages: see DESIGN.md section 3).

    python bench/bench_pool.py [--threads 1 2] [--repeat 10] [--markdown results.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import git_commit, machine, median_time, table  # noqa: E402

import ember  # noqa: E402
import ember.nn.functional as F  # noqa: E402
from ember import _C  # noqa: E402

try:
    import torch
except ImportError:  # the reference is optional
    torch = None

# (name, input shape, op, kwargs): ResNet's stem max pool and a VGG-style 2x2 one, an average
# pool and the global average pools at the end of ResNet-18 / ResNet-50.
CASES = [
    ("max 3/2/1", (32, 64, 112, 112), "max", dict(kernel_size=3, stride=2, padding=1)),
    ("max 2/2", (32, 64, 56, 56), "max", dict(kernel_size=2, stride=2)),
    ("avg 2/2", (32, 64, 56, 56), "avg", dict(kernel_size=2, stride=2)),
    ("avg 3/1/1", (32, 64, 28, 28), "avg", dict(kernel_size=3, stride=1, padding=1)),
    ("global avg", (32, 512, 7, 7), "gap", {}),
    ("global avg", (32, 2048, 7, 7), "gap", {}),
]


def out_shape(shape, op, kw):
    if op == "gap":
        return shape[:2] + (1, 1)
    k, s, p = kw["kernel_size"], kw.get("stride", kw["kernel_size"]), kw.get("padding", 0)
    return shape[:2] + tuple((n + 2 * p - k) // s + 1 for n in shape[2:])


def floor_bytes(shape, oshape, op):
    n_in, n_out = int(np.prod(shape)), int(np.prod(oshape))
    idx = 8 * n_out if op == "max" else 0
    fwd = 4 * n_in + 4 * n_out + idx
    bwd = 4 * n_out + idx + 4 * n_in
    return fwd, fwd + bwd


def ember_api(op, x, kw):
    if op == "max":
        return F.max_pool2d(x, **kw)
    if op == "avg":
        return F.avg_pool2d(x, **kw)
    return F.adaptive_avg_pool2d(x, 1)


def torch_api(op, x, kw):
    tf = torch.nn.functional
    if op == "max":
        return tf.max_pool2d(x, **kw)
    if op == "avg":
        return tf.avg_pool2d(x, **kw)
    return tf.adaptive_avg_pool2d(x, 1)


def kernels(op, x, kw, g):
    """Our fwd and fwd+bwd on warm outputs, and the gate's outputs."""
    oshape = g.shape
    y = np.empty(oshape, np.float32)
    idx = np.empty(oshape, np.int64)
    gx = np.empty_like(x)
    if op == "max":
        k, s, p = kw["kernel_size"], kw.get("stride", kw["kernel_size"]), kw.get("padding", 0)
        fwd = lambda: _C.maxpool2d_fwd(x, k, k, s, s, p, p, 1, 1, False, y, idx)  # noqa: E731
        bwd = lambda: _C.maxpool2d_bwd(g, idx, gx)  # noqa: E731
    elif op == "avg":
        k, s, p = kw["kernel_size"], kw.get("stride", kw["kernel_size"]), kw.get("padding", 0)
        fwd = lambda: _C.avgpool2d_fwd(x, k, k, s, s, p, p, False, True, 0, y)  # noqa: E731
        bwd = lambda: _C.avgpool2d_bwd(g, k, k, s, s, p, p, False, True, 0, gx)  # noqa: E731
    else:
        fwd = lambda: _C.adaptive_avgpool2d_fwd(x, y)  # noqa: E731
        bwd = lambda: _C.adaptive_avgpool2d_bwd(g, gx)  # noqa: E731

    def fb():
        fwd()
        bwd()

    return fwd, fb, y, gx


def torch_kernels(op, xt, kw, gt):
    aten = torch.ops.aten
    k, s, p = kw.get("kernel_size"), kw.get("stride", kw.get("kernel_size")), kw.get("padding", 0)
    if op == "max":

        def fwd():
            return aten.max_pool2d_with_indices(xt, [k, k], [s, s], [p, p], [1, 1], False)

        def fb():
            y, i = fwd()
            aten.max_pool2d_with_indices_backward(gt, xt, [k, k], [s, s], [p, p], [1, 1], False, i)

    elif op == "avg":

        def fwd():
            return aten.avg_pool2d(xt, [k, k], [s, s], [p, p], False, True, None)

        def fb():
            fwd()
            aten.avg_pool2d_backward(gt, xt, [k, k], [s, s], [p, p], False, True, None)

    else:

        def fwd():
            return aten._adaptive_avg_pool2d(xt, [1, 1])

        def fb():
            fwd()
            aten._adaptive_avg_pool2d_backward(gt, xt)

    return fwd, fb


def check(op, x, kw, g, y, gx):
    """Correctness gate: our kernels vs PyTorch (bit-exact max values and indices) or vs a
    float64 numpy computation when PyTorch is absent. Refuses to time a wrong kernel."""
    if torch is not None:
        xt = torch.from_numpy(x).requires_grad_()
        yt = torch_api(op, xt, kw)
        yt.backward(torch.from_numpy(g))
        if op == "max":
            assert np.array_equal(y, yt.detach().numpy()), "max_pool2d values are wrong"
        else:
            np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-5, atol=1e-6)
        return
    if op == "gap":
        ref = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
        assert np.abs(y - ref).max() < 1e-5 * np.abs(ref).max(), "adaptive_avg_pool2d is wrong"


def triad_gbs(n: int) -> float:
    a, b, c = np.ones(n, np.float32), np.ones(n, np.float32), np.full(n, 0.5, np.float32)
    return 12 * n / _C._triad_seconds(a, b, c, 10) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--markdown", help="also write the report to this file")
    args = ap.parse_args()

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        f"machine: {machine()}; {os.cpu_count()} logical CPUs",
        f"date: {now}; commit {git_commit()}; ember {ember.__version__}; cpu path "
        f"{ember.backends.cpu.capabilities()['selected']}; torch "
        f"{torch.__version__ if torch is not None else 'not installed'}",
        "load average (1/5/15 min) at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()),
    ]
    print("\n".join(head) + "\n", flush=True)
    rows = []
    for threads in args.threads:
        ember.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        for name, shape, op, kw in CASES:
            rng = np.random.default_rng(0)
            x = rng.standard_normal(shape, dtype=np.float32)
            oshape = out_shape(shape, op, kw)
            g = rng.standard_normal(oshape, dtype=np.float32)
            k_fwd, k_fb, y, gx = kernels(op, x, kw, g)
            k_fb()
            check(op, x, kw, g, y, gx)
            triad = triad_gbs(x.size)
            b_fwd, b_fb = floor_bytes(shape, oshape, op)
            xe, ge = ember.from_numpy(x), ember.from_numpy(g)
            xg = ember.from_numpy(x).requires_grad_()

            def a_fwd(op=op, kw=kw, xe=xe):
                ember_api(op, xe, kw)

            def a_fb(op=op, kw=kw, xg=xg, ge=ge):
                xg.grad = None
                ember_api(op, xg, kw).backward(ge)

            refs = dict.fromkeys(("kernel fwd", "kernel fwd+bwd", "api fwd", "api fwd+bwd"))
            if torch is not None:
                xt, gt = torch.from_numpy(x), torch.from_numpy(g)
                xtg = xt.clone().requires_grad_()
                t_fwd, t_fb = torch_kernels(op, xt, kw, gt)

                def ta_fwd(op=op, kw=kw, xt=xt):
                    with torch.no_grad():
                        torch_api(op, xt, kw)

                def ta_fb(op=op, kw=kw, xtg=xtg, gt=gt):
                    xtg.grad = None
                    torch_api(op, xtg, kw).backward(gt)

                refs = {"kernel fwd": t_fwd, "kernel fwd+bwd": t_fb, "api fwd": ta_fwd,
                        "api fwd+bwd": ta_fb}  # fmt: skip
            ours = {"kernel fwd": k_fwd, "kernel fwd+bwd": k_fb, "api fwd": a_fwd,
                    "api fwd+bwd": a_fb}  # fmt: skip
            for case, fn in ours.items():
                nbytes = b_fb if "bwd" in case else b_fwd
                t_ours = median_time(fn, repeat=args.repeat)
                ref = refs[case]
                t_ref = median_time(ref, repeat=args.repeat) if ref is not None else None
                gbs = nbytes / t_ours / 1e9
                rows.append(
                    [
                        threads,
                        name,
                        "x".join(map(str, shape)),
                        case,
                        f"{t_ours * 1e3:.3f}",
                        "-" if t_ref is None else f"{t_ref * 1e3:.3f}",
                        "-" if t_ref is None else f"{t_ref / t_ours:.2f}x",
                        f"{gbs:.1f}",
                        f"{triad:.1f}",
                        f"{100 * gbs / triad:.0f}%",
                    ]
                )
                print(" | ".join(map(str, rows[-1])), flush=True)
    header = ["threads", "op", "input", "case", "ours ms", "torch ms", "speedup", "ours GB/s",
              "triad GB/s", "% triad"]  # fmt: skip
    tab = table(rows, header)
    tail = "load average (1/5/15 min) at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    print("\n" + tab + "\n\n" + tail)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# pooling CPU benchmark\n\n")
            f.write("\n".join(f"- {h}" for h in head) + f"\n- {tail}\n\n")
            f.write("Command: `python bench/bench_pool.py --markdown <this file>`\n\n")
            f.write(tab + "\n")


if __name__ == "__main__":
    main()
