"""LSTM and GRU forward and forward+backward (``ember.nn.LSTM`` / ``GRU``) against PyTorch CPU.

Both models hold the same weights (ember loads torch's state_dict); the correctness gate
compares outputs and input gradients before anything is timed. Matrix work per layer and
direction: the input projection 2*T*B*I*G*H and the recurrent products 2*T*B*H*G*H (G = 4
gates for LSTM, 3 for GRU); the backward does twice the forward's GEMM work, so fwd+bwd counts
3x. GFLOP/s are reported at those counts, and "% peak" against the FMA peak measured in the
same run (one core's AVX-512 or AVX2 FMA-chain rate x threads), so a reader sees how much of
the time is GEMM. Timings: forward under no_grad on both sides (inference), fwd+bwd = forward
with grad + backward of a random upstream gradient; warm-up, median.

    python bench/bench_rnn.py [--threads 1 2] [--repeat 5] [--markdown results.md]
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
from ember import _C  # noqa: E402

try:
    import torch
except ImportError:  # the reference is optional
    torch = None

# (T, B, I, H)
SHAPES = [(64, 32, 128, 256), (128, 64, 256, 512)]
LAYERS = [1, 2]
MODES = ["LSTM", "GRU"]


def flops(mode, T, B, I, H, L):  # noqa: E741
    G = 4 if mode == "LSTM" else 3
    total = 0
    for layer in range(L):
        n_in = I if layer == 0 else H
        total += 2 * T * B * (n_in + H) * G * H
    return total


def make(mode, T, B, I, H, L, seed=0):  # noqa: E741
    torch.manual_seed(seed)
    tm = getattr(torch.nn, mode)(I, H, num_layers=L)
    em = getattr(ember.nn, mode)(I, H, num_layers=L)
    em.load_state_dict({k: ember.from_numpy(v.detach().numpy().copy())
                        for k, v in tm.state_dict().items()})  # fmt: skip
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    g = rng.standard_normal((T, B, H)).astype(np.float32)
    return tm, em, x, g


def check(tm, em, x, g) -> None:
    """Correctness gate: same output and input gradient as PyTorch (float32 rounding)."""
    xt = torch.from_numpy(x).requires_grad_()
    ot = tm(xt)[0]
    ot.backward(torch.from_numpy(g))
    xe = ember.from_numpy(x).requires_grad_()
    oe = em(xe)[0]
    oe.backward(ember.from_numpy(g))
    err_o = np.abs(oe.detach().numpy() - ot.detach().numpy()).max()
    gx_t = xt.grad.numpy()
    err_g = np.abs(xe.grad.numpy() - gx_t).max() / max(np.abs(gx_t).max(), 1e-30)
    assert err_o < 1e-4, f"forward differs from torch by {err_o}"
    assert err_g < 1e-3, f"input gradient differs from torch by {err_g} (relative)"


def cases(tm, em, x, g):
    xe, ge = ember.from_numpy(x), ember.from_numpy(g)
    xeg = ember.from_numpy(x.copy()).requires_grad_()
    xt, gt = torch.from_numpy(x), torch.from_numpy(g)
    xtg = torch.from_numpy(x.copy()).requires_grad_()

    def e_fwd():
        with ember.no_grad():
            em(xe)

    def t_fwd():
        with torch.no_grad():
            tm(xt)

    def e_fb():
        em.zero_grad()
        xeg.grad = None
        em(xeg)[0].backward(ge)

    def t_fb():
        tm.zero_grad()
        xtg.grad = None
        tm(xtg)[0].backward(gt)

    return [("fwd", 1, e_fwd, t_fwd), ("fwd+bwd", 3, e_fb, t_fb)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--markdown", help="also write the report to this file")
    args = ap.parse_args()
    if torch is None:
        sys.exit("bench_rnn needs PyTorch (pip install torch==2.13.0) as the reference")

    caps = ember.backends.cpu.capabilities()
    isa = "avx512" if caps.get("avx512f") else "avx2"
    peak1 = _C._fma_peak_gflops(isa, 0.1)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        f"machine: {machine()}; {os.cpu_count()} logical CPUs",
        f"date: {now}; commit {git_commit()}; ember {ember.__version__}; cpu path "
        f"{caps['selected']}; torch {torch.__version__}",
        "load average (1/5/15 min) at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()),
        f"FMA peak ({isa}, one core, measured now): {peak1:.1f} GFLOP/s",
    ]
    print("\n".join(head) + "\n", flush=True)
    rows = []
    for threads in args.threads:
        ember.set_num_threads(threads)
        torch.set_num_threads(threads)
        for mode in MODES:
            for T, B, I, H in SHAPES:  # noqa: E741
                for L in LAYERS:
                    tm, em, x, g = make(mode, T, B, I, H, L)
                    check(tm, em, x, g)
                    fl = flops(mode, T, B, I, H, L)
                    for name, mult, ours, ref in cases(tm, em, x, g):
                        t_o = median_time(ours, repeat=args.repeat, warmup=1)
                        t_r = median_time(ref, repeat=args.repeat, warmup=1)
                        gf = mult * fl / t_o / 1e9
                        rows.append([
                            threads, mode, f"T{T} B{B} I{I} H{H}", L, name,
                            f"{t_o * 1e3:.1f}", f"{t_r * 1e3:.1f}", f"{t_r / t_o:.2f}x",
                            f"{gf:.0f}", f"{mult * fl / t_r / 1e9:.0f}",
                            f"{100 * gf / (peak1 * threads):.0f}%",
                        ])  # fmt: skip
                        print(" | ".join(map(str, rows[-1])), flush=True)
    tab = table(
        rows,
        ["threads", "mode", "shape", "layers", "case", "ours ms", "torch ms", "speedup",
         "ours GFLOP/s", "torch GFLOP/s", "ours % peak"],
    )  # fmt: skip
    tail = "load average (1/5/15 min) at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    print("\n" + tab + "\n\n" + tail)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# RNN (LSTM / GRU) CPU benchmark\n\n")
            f.write("\n".join(f"- {h}" for h in head) + f"\n- {tail}\n\n")
            f.write("Command: `python bench/bench_rnn.py --markdown <this file>`\n\n")
            f.write(tab + "\n")


if __name__ == "__main__":
    main()
