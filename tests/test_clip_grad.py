"""ember.nn.utils.clip_grad_norm_ / clip_grad_value_ (fused norm: _C.grad_norm_reduce)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember import _C
from ember.nn.utils import clip_grad_norm_, clip_grad_value_

SHAPES = [(3, 5), (37,), (2, 3, 4), (1,), (70_001,)]


def params_with_grads(rng, dtype=np.float32, scale=1.0):
    ps = []
    for s in SHAPES:
        p = nn.Parameter(ember.tensor(rng.standard_normal(s).astype(dtype)))
        p.grad = ember.tensor((rng.standard_normal(s) * scale).astype(dtype))
        ps.append(p)
    return ps


def ref_norm(arrays, p):
    flat = np.concatenate([a.astype(np.float64).ravel() for a in arrays])
    if math.isinf(p):
        return np.abs(flat).max()
    return (np.abs(flat) ** p).sum() ** (1 / p)


@pytest.mark.parametrize("norm_type", [2.0, "inf", 1.0, 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm(rng, cpu_path, norm_type, max_norm):
    ps = params_with_grads(rng)
    before = [p.grad.numpy().astype(np.float64) for p in ps]
    total = clip_grad_norm_(ps, max_norm, norm_type)
    ref = ref_norm(before, float(norm_type))
    assert isinstance(total, ember.Tensor) and total.dtype is ember.float32 and total.ndim == 0
    assert total.item() == pytest.approx(ref, rel=1e-6)
    coef = min(max_norm / (ref + 1e-6), 1.0)
    for p, b in zip(ps, before):
        np.testing.assert_allclose(p.grad.numpy(), b * coef, rtol=2e-6, atol=1e-30)


def test_sum_of_squares_kernel_accuracy(rng, cpu_path):
    """Accumulated in double: exact to float64 rounding, far better than a float32 sum."""
    xs = [rng.standard_normal(n).astype(np.float32) * 100 for n in (1, 9, 1_000_003)]
    ref = sum(float(np.sum(x.astype(np.float64) ** 2)) for x in xs)
    assert _C.grad_norm_reduce(xs) == pytest.approx(ref, rel=1e-12)
    assert _C.grad_norm_reduce(xs, inf=True) == max(float(np.abs(x).max()) for x in xs)
    assert _C.grad_norm_reduce([]) == 0.0


@pytest.mark.parametrize("path", ["scalar", "auto"])
def test_threads_agree_bitwise(rng, path):
    # partial sums are per fixed 32K-element piece, combined in piece order on every thread
    # count, so the norm does not depend on how many threads computed it
    xs = [rng.standard_normal(n).astype(np.float32) for n in (500_000, 3, 300_000)]
    old = ember.get_num_threads()
    old_path = ember.backends.cpu.get_cpu_path()
    try:
        ember.backends.cpu.set_cpu_path(path)
        got = []
        for t in (1, 2):
            ember.set_num_threads(t)
            got.append(_C.grad_norm_reduce(xs))
    finally:
        ember.set_num_threads(old)
        ember.backends.cpu.set_cpu_path("scalar" if old_path == "scalar" else "auto")
    assert got[0] == got[1]
    ref = sum(float(np.sum(x.astype(np.float64) ** 2)) for x in xs)
    assert got[0] == pytest.approx(ref, rel=1e-12)


def test_nonfinite(rng):
    ps = params_with_grads(rng)
    ps[4].grad._array[123] = np.nan
    with pytest.raises(RuntimeError, match=r"^\[clip_grad_norm_\] the total norm of order 2.0"):
        clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    assert math.isnan(clip_grad_norm_(ps, 1.0, "inf").item())  # NaN wins the max
    total = clip_grad_norm_(ps, 1.0)  # scaled by NaN anyway, as PyTorch
    assert math.isnan(total.item()) and np.isnan(ps[0].grad.numpy()).all()
    qs = params_with_grads(rng)
    qs[1].grad._array[0] = np.inf
    assert clip_grad_norm_(qs, 1.0).item() == math.inf
    assert not qs[0].grad.numpy().any()  # coefficient 0


def test_no_grads_and_single_tensor(rng):
    p = nn.Parameter(ember.randn(3))
    assert clip_grad_norm_([p], 1.0).item() == 0.0
    p.grad = ember.tensor(np.array([3.0, 4.0, 0.0], np.float64))
    total = clip_grad_norm_(p, 1.0)
    assert total.dtype is ember.float64 and total.item() == 5.0
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8, 0.0], rtol=1e-6)


def test_clip_grad_value(rng):
    ps = params_with_grads(rng, scale=3.0)
    ps[0].grad._array[0, 0] = np.nan
    before = [p.grad.numpy().copy() for p in ps]
    clip_grad_value_(ps, 1.5)
    for p, b in zip(ps, before):
        np.testing.assert_array_equal(p.grad.numpy(), np.clip(b, -1.5, 1.5))


def test_against_torch_if_available(rng):
    torch = pytest.importorskip("torch")
    for norm_type in (2.0, float("inf"), 1.5):
        ps = params_with_grads(rng)
        tps = [torch.nn.Parameter(torch.tensor(p.detach().numpy())) for p in ps]
        for tp, p in zip(tps, ps):
            tp.grad = torch.tensor(p.grad.numpy().copy())
        ours = clip_grad_norm_(ps, 0.7, norm_type).item()
        theirs = torch.nn.utils.clip_grad_norm_(tps, 0.7, norm_type).item()
        assert ours == pytest.approx(theirs, rel=1e-5)
        for p, tp in zip(ps, tps):
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-5, atol=1e-8)
