"""Softmax, log-softmax, cross-entropy and layer-norm (kernels/cpu/softmax.cpp, layernorm.cpp)
forward and forward+backward against PyTorch CPU, as a share of measured memory bandwidth.

All four are memory-bound at these sizes. Compulsory bytes per float32 element of the input
(per-row values such as the saved statistics, and the [n] weight vectors, are not counted):

* softmax / log_softmax: fwd reads x, writes y (8 B); bwd reads y, grad_out, writes grad_in
  (12 B); fwd+bwd 20 B.
* cross_entropy (class-index targets, reduction 'mean'): fwd reads the logits once (4 B: the
  fused kernel writes only a loss and two statistics per row); bwd reads the logits, writes
  grad_in (8 B); fwd+bwd 12 B.
* layer_norm (affine): fwd reads x, writes y (8 B); bwd reads x, grad_out, writes grad_in
  (12 B); fwd+bwd 20 B.

Ceiling: the STREAM triad a = b + 3c (``_C._triad_seconds``, threaded like our kernels, 12 B
counted per element, write-allocate not counted), measured in this run on the same thread
count with the same total bytes as the case, so a case whose working set fits in the 33 MiB L3
is compared against an L3-resident triad (the "in cache" column says which). Our kernels write
with ordinary stores too (their write-allocate is not counted either).

Compute ceiling: softmax, log-softmax and cross-entropy take one vectorised exp
(``exp512_ps`` / ``exp256_le88_ps``, kernels/cpu/vexp.h) per element per pass that needs one
(see EXPS); its rate is measured in the same run (``_C._exp_avx512`` or ``_exp_avx2_le88``,
whichever the kernels use, on an L2-resident buffer, 1 thread), and the "exp share" column
says how much of the kernel time the exps alone account for.

Two levels are timed, both median of ``--repeat`` calls after warm-up, ember and PyTorch in
the same process with the same thread count:

* ours kernel: the ``_C`` calls into warm, preallocated outputs (the kernel's own speed);
* api: ``ember.nn.functional`` (+ ``backward``) against ``torch.nn.functional`` (+
  ``backward``), both allocating their outputs per call; "speedup" is torch api / ours api.

    python bench/bench_softmax.py [--threads 1 2] [--repeat 10] [--markdown results.md]
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

L3_BYTES = 33 << 20
CASES = [
    ("softmax", (4096, 1024)),
    ("softmax", (8192, 4096)),
    ("log_softmax", (4096, 1024)),
    ("log_softmax", (8192, 4096)),
    ("cross_entropy", (4096, 1024)),
    ("cross_entropy", (512, 32000)),
    ("layer_norm", (8192, 768)),
    ("layer_norm", (4096, 4096)),
]
EXPS = {  # (fwd, fwd+bwd) exps per element in our kernels
    "softmax": (1, 1),
    "log_softmax": (1, 2),
    "cross_entropy": (1, 2),
    "layer_norm": (0, 0),
}
BYTES = {  # (fwd, fwd+bwd) bytes per element
    "softmax": (8, 20),
    "log_softmax": (8, 20),
    "cross_entropy": (4, 12),
    "layer_norm": (8, 20),
}


def _softmax64(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def check(op, x, t, w, b, g) -> None:
    """Correctness gate (first 64 rows against float64 numpy): refuse to time a wrong kernel."""
    r = slice(0, 64)
    x64, g64 = x[r].astype(np.float64), g[r].astype(np.float64)
    if op in ("softmax", "log_softmax"):
        log = op == "log_softmax"
        y = np.full_like(x, np.nan)
        _C.softmax_fwd(x, log, y)
        p = _softmax64(x64)
        ref = np.log(p) if log else p
        assert np.abs(y[r] - ref).max() < 1e-5 * max(1.0, np.abs(ref).max()), f"{op} fwd wrong"
        gx = np.full_like(x, np.nan)
        _C.softmax_bwd(y, g, log, gx)
        if log:
            ref_g = g64 - p * g64.sum(1, keepdims=True)
        else:
            ref_g = p * (g64 - (g64 * p).sum(1, keepdims=True))
        assert np.abs(gx[r] - ref_g).max() < 1e-5 * np.abs(ref_g).max(), f"{op} bwd wrong"
    elif op == "cross_entropy":
        loss = np.full(x.shape[0], np.nan, np.float32)
        st = np.full((x.shape[0], 2), np.nan, np.float32)
        _C.cross_entropy_fwd(x, t, None, -100, 0.0, loss, st)
        p = _softmax64(x64)
        ref = -np.log(p[np.arange(64), t[r]])
        assert np.abs(loss[r] - ref).max() < 1e-5 * max(1.0, np.abs(ref).max()), "ce fwd wrong"
        gx = np.full_like(x, np.nan)
        _C.cross_entropy_bwd(x, t, None, st, np.ones(x.shape[0], np.float32), -100, 0.0, gx)
        p[np.arange(64), t[r]] -= 1
        assert np.abs(gx[r] - p).max() < 1e-5, "ce bwd wrong"
    else:
        y = np.full_like(x, np.nan)
        m, s = np.empty(x.shape[0], np.float32), np.empty(x.shape[0], np.float32)
        _C.layernorm_fwd(x, x.shape[1], w, b, 1e-5, False, y, m, s)
        mu, var = x64.mean(1, keepdims=True), x64.var(1, keepdims=True)
        xh = (x64 - mu) / np.sqrt(var + 1e-5)
        assert np.abs(y[r] - (xh * w + b)).max() < 1e-4, "layer_norm fwd wrong"
        gx = np.full_like(x, np.nan)
        _C.layernorm_bwd(g, x, x.shape[1], m, s, w, False, gx, None, None)
        gh = g64 * w
        rstd = 1 / np.sqrt(var + 1e-5)
        ref_g = rstd * (gh - gh.mean(1, keepdims=True) - xh * (gh * xh).mean(1, keepdims=True))
        assert np.abs(gx[r] - ref_g).max() < 1e-4 * np.abs(ref_g).max(), "layer_norm bwd wrong"


def kernel_calls(op, x, t, w, b, g):
    """(fwd, fwd+bwd) closures calling our _C kernels into warm outputs."""
    y, gx = np.empty_like(x), np.empty_like(x)
    rows, n = x.shape
    if op in ("softmax", "log_softmax"):
        log = op == "log_softmax"

        def fwd():
            _C.softmax_fwd(x, log, y)

        def fb():
            _C.softmax_fwd(x, log, y)
            _C.softmax_bwd(y, g, log, gx)

    elif op == "cross_entropy":
        loss, st = np.empty(rows, np.float32), np.empty((rows, 2), np.float32)
        grow = np.full(rows, 1.0 / rows, np.float32)

        def fwd():
            _C.cross_entropy_fwd(x, t, None, -100, 0.0, loss, st)

        def fb():
            _C.cross_entropy_fwd(x, t, None, -100, 0.0, loss, st)
            _C.cross_entropy_bwd(x, t, None, st, grow, -100, 0.0, gx)

    else:
        m, s = np.empty(rows, np.float32), np.empty(rows, np.float32)
        gw, gb = np.empty(n, np.float32), np.empty(n, np.float32)

        def fwd():
            _C.layernorm_fwd(x, n, w, b, 1e-5, False, y, m, s)

        def fb():
            _C.layernorm_fwd(x, n, w, b, 1e-5, False, y, m, s)
            _C.layernorm_bwd(g, x, n, m, s, w, False, gx, gw, gb)

    for f in (fwd, fb):
        f()  # first touch of the outputs outside the timing
    return fwd, fb


def api_calls(op, x, t, w, b, g):
    """(ours fwd, ours fwd+bwd, torch fwd, torch fwd+bwd) through the autograd layers."""
    n = x.shape[1]
    xe, te, ge = ember.from_numpy(x), ember.from_numpy(t), ember.from_numpy(g)
    we, be = ember.from_numpy(w).requires_grad_(), ember.from_numpy(b).requires_grad_()
    xg = ember.from_numpy(x).requires_grad_()
    e_fn = {
        "softmax": lambda a: F.softmax(a, 1),
        "log_softmax": lambda a: F.log_softmax(a, 1),
        "cross_entropy": lambda a: F.cross_entropy(a, te),
        "layer_norm": lambda a: F.layer_norm(a, n, we, be),
    }[op]

    def o_fwd():
        with ember.no_grad():
            e_fn(xe)

    def o_fb():
        xg.grad = we.grad = be.grad = None
        out = e_fn(xg)
        out.backward(None if op == "cross_entropy" else ge)

    t_fwd = t_fb = None
    if torch is not None:
        tf = torch.nn.functional
        xt, tt, gt = torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(g)
        wt, bt = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
        xtg = torch.from_numpy(x.copy()).requires_grad_()
        t_fn = {
            "softmax": lambda a: tf.softmax(a, 1),
            "log_softmax": lambda a: tf.log_softmax(a, 1),
            "cross_entropy": lambda a: tf.cross_entropy(a, tt),
            "layer_norm": lambda a: tf.layer_norm(a, (n,), wt, bt),
        }[op]

        def t_fwd():
            with torch.no_grad():
                t_fn(xt)

        def t_fb():
            xtg.grad = wt.grad = bt.grad = None
            out = t_fn(xtg)
            out.backward(None if op == "cross_entropy" else gt)

    return o_fwd, o_fb, t_fwd, t_fb


def triad_gbs(total_bytes: int) -> float:
    n = max(total_bytes // 12, 1 << 16)
    a, b, c = np.ones(n, np.float32), np.ones(n, np.float32), np.full(n, 0.5, np.float32)
    return 12 * n / _C._triad_seconds(a, b, c, 10) / 1e9


def exp_rate() -> float:
    """Single-thread rate (G exps/s) of the exp the kernels use (AVX-512 where the kernels take
    that path, else AVX2), on an L2-resident buffer: the compute ceiling of the exp-bound passes
    (0 when AVX2 is unavailable)."""
    x = np.random.default_rng(0).uniform(-10, 10, 1 << 16).astype(np.float32)
    y = np.empty_like(x)
    caps = _C.cpu_capabilities()
    fn = _C._exp_avx512 if caps["gemm_path"].startswith("avx512") else _C._exp_avx2_le88
    try:
        return x.size / median_time(lambda: fn(x, y), repeat=50) / 1e9
    except RuntimeError:
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--ops", nargs="+", default=list(BYTES))
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
    rate = exp_rate()
    isa = "AVX-512" if _C.cpu_capabilities()["gemm_path"].startswith("avx512") else "AVX2"
    head.append(f"{isa} exp rate (1 thread, L2-resident): {rate:.2f} G/s")
    print("\n".join(head) + "\n", flush=True)
    rows = []
    for threads in args.threads:
        ember.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        for op, shape in CASES:
            if op not in args.ops:
                continue
            rng = np.random.default_rng(0)
            x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
            g = rng.standard_normal(shape).astype(np.float32)
            t = rng.integers(0, shape[1], shape[0])
            w = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32)
            b = rng.standard_normal(shape[1]).astype(np.float32)
            check(op, x, t, w, b, g)
            k_fwd, k_fb = kernel_calls(op, x, t, w, b, g)
            o_fwd, o_fb, t_fwd, t_fb = api_calls(op, x, t, w, b, g)
            for level, bpe, nexp, kern, ours, ref in (
                ("fwd", BYTES[op][0], EXPS[op][0], k_fwd, o_fwd, t_fwd),
                ("fwd+bwd", BYTES[op][1], EXPS[op][1], k_fb, o_fb, t_fb),
            ):
                nbytes = bpe * x.size
                ceil = triad_gbs(nbytes)
                tk = median_time(kern, repeat=args.repeat)
                to = median_time(ours, repeat=args.repeat)
                tr = median_time(ref, repeat=args.repeat) if ref is not None else None
                gbs = nbytes / tk / 1e9
                t_exp = nexp * x.size / (rate * 1e9 * threads) if rate else 0.0
                rows.append(
                    [
                        threads,
                        op,
                        "x".join(map(str, shape)),
                        level,
                        "yes" if nbytes <= L3_BYTES else "no",
                        f"{tk * 1e3:.2f}",
                        f"{gbs:.1f}",
                        f"{ceil:.1f}",
                        f"{100 * gbs / ceil:.0f}%",
                        f"{100 * t_exp / tk:.0f}%" if nexp else "-",
                        f"{to * 1e3:.2f}",
                        "-" if tr is None else f"{tr * 1e3:.2f}",
                        "-" if tr is None else f"{tr / to:.2f}x",
                        "-" if tr is None else f"{tr / tk:.2f}x",
                    ]
                )
                print(" | ".join(map(str, rows[-1])), flush=True)
    tab = table(
        rows,
        [
            "threads",
            "op",
            "shape",
            "pass",
            "in L3",
            "ours kernel ms",
            "GB/s",
            "triad GB/s",
            "% triad",
            "exp share",
            "ours api ms",
            "torch api ms",
            "speedup api",
            "speedup kernel",
        ],
    )
    tail = "load average (1/5/15 min) at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    print("\n" + tab + "\n\n" + tail)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# softmax / cross-entropy / layer-norm CPU benchmark\n\n")
            f.write("\n".join(f"- {h}" for h in head) + f"\n- {tail}\n\n")
            f.write("Command: `python bench/bench_softmax.py --markdown <this file>`\n\n")
            f.write(
                "GB/s at the compulsory byte count (see the module docstring); % triad: of the"
                " triad bandwidth at the same total bytes and thread count, this run. speedup"
                " api = torch api ms / ours api ms (both allocate outputs per call); speedup"
                " kernel = torch api ms / ours kernel ms. exp share: the time the kernel's exps"
                " alone take at the measured exp rate (x threads) over the kernel time; near"
                " 100% means the pass is bound by exp throughput, not memory.\n\n"
            )
            f.write(tab + "\n")


if __name__ == "__main__":
    main()
