"""nn.init.orthogonal_ and trunc_normal_ (the other initialisers are in test_nn.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
from ember.nn import init


@pytest.mark.parametrize("shape", [(7, 7), (12, 5), (4, 9), (6, 2, 3)])
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_orthogonal_is_orthogonal_times_gain(shape, gain):
    ember.manual_seed(3)
    w = ember.empty(*shape, dtype=ember.float64)
    assert init.orthogonal_(w, gain) is w
    m = w.numpy().reshape(shape[0], -1)
    rows, cols = m.shape
    gram = m.T @ m if rows >= cols else m @ m.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(rows, cols)), atol=1e-12)


def test_orthogonal_is_seeded_and_rejects_vectors():
    a, b = ember.empty(5, 3), ember.empty(5, 3)
    ember.manual_seed(11)
    init.orthogonal_(a)
    ember.manual_seed(11)
    init.orthogonal_(b)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match=r"\[orthogonal_\] needs at least 2 dims"):
        init.orthogonal_(ember.empty(4))


def _truncated_moments(mean, std, a, b):
    """Mean and std of N(mean, std^2) truncated to [a, b] (closed form)."""
    al, be = (a - mean) / std, (b - mean) / std
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    z = cdf(be) - cdf(al)
    m = mean + std * (pdf(al) - pdf(be)) / z
    v = std**2 * (1 + (al * pdf(al) - be * pdf(be)) / z - ((pdf(al) - pdf(be)) / z) ** 2)
    return m, math.sqrt(v)


@pytest.mark.parametrize(
    "mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.3, 0.7, -0.5, 2.0), (1.0, 2.0, 0.0, 1.5)]
)
def test_trunc_normal_bounds_and_moments(mean, std, a, b):
    ember.manual_seed(5)
    w = init.trunc_normal_(ember.empty(200_000, dtype=ember.float64), mean, std, a, b)
    x = w.numpy()
    assert x.min() >= a and x.max() <= b
    m, s = _truncated_moments(mean, std, a, b)
    # 200k samples: the standard error of the mean is s / 447, of the std about s / 632
    assert abs(x.mean() - m) < 5 * s / math.sqrt(x.size)
    assert abs(x.std() - s) < 5 * s / math.sqrt(2 * x.size)


def test_trunc_normal_errors():
    with pytest.raises(ValueError, match=r"\[trunc_normal_\] needs std > 0"):
        init.trunc_normal_(ember.empty(3), std=0.0)
    with pytest.raises(ValueError, match=r"\[trunc_normal_\] \[8.0, 9.0\] holds only"):
        init.trunc_normal_(ember.empty(3), a=8.0, b=9.0)
    with pytest.raises(TypeError, match=r"\[trunc_normal_\] needs a floating point"):
        init.trunc_normal_(ember.zeros(3, dtype=ember.int64))


def test_manual_seed_returns_the_default_generator():
    g = ember.manual_seed(21)
    first = ember.randn(4).numpy().copy()
    g.manual_seed(21)  # reseeding the returned object reseeds what ember.randn uses
    np.testing.assert_array_equal(ember.randn(4).numpy(), first)
    assert ember.initial_seed() == 21
    s = ember.seed()
    assert ember.initial_seed() == s
