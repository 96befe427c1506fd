"""ReLU forward/backward (``_C.relu_fwd/_bwd``) against numpy, as a share of copy bandwidth.

ReLU is memory-bound: forward reads 4 B and writes 4 B per float32 element, backward reads 8 B
and writes 4 B. Its floor is bytes / copy bandwidth, so the table reports GB/s and the
percentage of the copy bandwidth measured in the same run at the same buffer size (a 1M-element
case runs from cache, a 16M one from DRAM, and each is held to its own ceiling). Warm output
buffers (reused across calls, as the Tensor layer should) and cold ones (a fresh np.empty per
call, which pays the first-touch page faults shared/DESIGN.md warns about) are both shown.

    python bench/bench_relu.py [--threads 1 2] [--sizes 100000 1000000 16000000]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import copy_bandwidth, machine, median_time, table  # noqa: E402

import ember  # noqa: E402
from ember import _C  # noqa: E402


def check(n: int) -> None:
    """Correctness gate: refuse to time a wrong kernel."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    out = np.full(n, np.nan, np.float32)
    _C.relu_fwd(x, out)
    assert np.array_equal(out, np.maximum(x, 0)), "relu_fwd is wrong"
    _C.relu_bwd(g, x, out)
    assert np.array_equal(out, np.where(x > 0, g, 0)), "relu_bwd is wrong"


def cases(x, g, out):
    """(name, bytes per element, ours, numpy) for forward warm/cold and backward warm."""
    return [
        ("fwd warm", 8, lambda: _C.relu_fwd(x, out), lambda: np.maximum(x, 0, out=out)),
        ("fwd cold", 8, lambda: _C.relu_fwd(x, np.empty_like(x)), lambda: np.maximum(x, 0)),
        ("bwd warm", 12, lambda: _C.relu_bwd(g, x, out), lambda: np.multiply(g, x > 0, out=out)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 16_000_000])
    args = ap.parse_args()

    print(
        f"machine: {machine()}; ember {ember.__version__}; cpu path "
        f"{ember.backends.cpu.capabilities()['selected']}"
    )
    print(f"DRAM copy bandwidth: {copy_bandwidth():.1f} GB/s (numpy copyto, 256 MiB, warm)\n")
    rows = []
    for threads in args.threads:
        ember.set_num_threads(threads)
        for n in args.sizes:
            check(n)
            rng = np.random.default_rng(0)
            x = rng.standard_normal(n).astype(np.float32)
            g = rng.standard_normal(n).astype(np.float32)
            out = np.empty_like(x)
            bw = copy_bandwidth(x.nbytes)  # the ceiling at this working-set size
            for name, bpe, ours, ref in cases(x, g, out):
                t_ours = median_time(ours)
                t_ref = median_time(ref)
                gbs = bpe * n / t_ours / 1e9
                rows.append(
                    [
                        threads,
                        n,
                        name,
                        f"{t_ours * 1e3:.3f}",
                        f"{t_ref * 1e3:.3f}",
                        f"{t_ref / t_ours:.2f}x",
                        f"{gbs:.1f}",
                        f"{100 * gbs / bw:.0f}%",
                    ]
                )
    print(
        table(
            rows, ["threads", "n", "case", "ours ms", "numpy ms", "speedup", "GB/s", "% copy at n"]
        )
    )
    print("\nnumpy is single-threaded here; compare the threads=1 rows for like with like.")


if __name__ == "__main__":
    main()
