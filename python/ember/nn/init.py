"""``ember.nn.init``: in-place weight initialisers, as in ``torch.nn.init``.

All of them write under ``no_grad`` and draw from ember's random state (or ``generator``), so
``ember.manual_seed(s)`` makes a model's initial weights reproducible.
"""

from __future__ import annotations

import math

import numpy as np

from .. import random as R
from ..autograd.grad_mode import no_grad
from ..tensor import Tensor

__all__ = [
    "calculate_gain",
    "constant_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "orthogonal_",
    "trunc_normal_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]


def _check(tensor, op: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"[{op}] expected a Tensor, got {type(tensor).__name__}")


def _fill_random(tensor: Tensor, draw, op: str) -> Tensor:
    _check(tensor, op)
    if not tensor.dtype.is_floating_point:
        raise TypeError(f"[{op}] needs a floating point tensor, got {tensor.dtype}")
    with no_grad():
        return tensor.copy_(Tensor._wrap(draw(tensor.shape, tensor._array.dtype, tensor.device)))


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator=None) -> Tensor:
    """Fill ``tensor`` with values drawn from U(a, b)."""
    if a > b:
        raise ValueError(f"[uniform_] expects a <= b, got a={a}, b={b}")
    return _fill_random(
        tensor, lambda s, nd, dev: R._uniform(s, a, b, nd, dev, generator), "uniform_"
    )


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator=None) -> Tensor:
    """Fill ``tensor`` with values drawn from N(mean, std**2)."""
    if std < 0:
        raise ValueError(f"[normal_] std must be non-negative, got {std}")
    return _fill_random(
        tensor, lambda s, nd, dev: R._normal(s, mean, std, nd, dev, generator), "normal_"
    )


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill ``tensor`` with ``val``."""
    _check(tensor, "constant_")
    with no_grad():
        return tensor.fill_(val)


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table): linear/conv/sigmoid 1,
    tanh 5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + slope**2)) (slope 0.01 by default),
    selu 3/4."""
    linear = (
        "linear",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "sigmoid",
    )
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"[calculate_gain] negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"[calculate_gain] unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """fan_in = size(1) * receptive field, fan_out = size(0) * receptive field (weights are
    [out, in, *kernel])."""
    if tensor.ndim < 2:
        raise ValueError(
            "[init] fan in and fan out can not be computed for tensor with fewer than 2 "
            f"dimensions (got shape {tuple(tensor.shape)})"
        )
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _calculate_correct_fan(tensor: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"[init] mode {mode!r} not supported, use 'fan_in' or 'fan_out'")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out)) if fan_in + fan_out else 0.0
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out)) if fan_in + fan_out else 0.0
    return normal_(tensor, 0.0, std, generator)


def _kaiming_std(tensor, a, mode, nonlinearity):
    fan = _calculate_correct_fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    return gain / math.sqrt(fan) if fan else 0.0


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator=None,
) -> Tensor:
    """U(-b, b) with b = gain * sqrt(3 / fan) (He et al., 2015). ``a`` is the negative slope
    of leaky_relu; ``Linear`` uses ``a=sqrt(5)``, which gives b = 1 / sqrt(fan_in)."""
    if tensor.numel() == 0:
        return tensor  # nothing to fill (PyTorch warns and does the same)
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator=None,
) -> Tensor:
    """N(0, std**2) with std = gain / sqrt(fan) (He et al., 2015)."""
    if tensor.numel() == 0:
        return tensor
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity), generator)


def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator=None,
) -> Tensor:
    """N(mean, std**2) truncated to [a, b] (absolute bounds, as PyTorch).

    Drawn by rejection: out-of-range values are redrawn until none is left, so the result
    follows the truncated distribution exactly. Intervals holding less than 1e-4 of the
    probability mass would need too many redraws and raise instead."""
    _check(tensor, "trunc_normal_")
    if std <= 0 or a >= b:
        raise ValueError(f"[trunc_normal_] needs std > 0 and a < b, got std={std}, a={a}, b={b}")
    mass = 0.5 * (
        math.erf((b - mean) / (std * math.sqrt(2))) - math.erf((a - mean) / (std * math.sqrt(2)))
    )
    if mass < 1e-4:
        raise ValueError(f"[trunc_normal_] [{a}, {b}] holds only {mass:.2e} of N({mean}, {std}**2)")

    def draw(shape, nd, dev):
        rng = R._gen(generator)
        x = rng.normal(mean, std, size=shape)
        bad = (x < a) | (x > b)
        while bad.any():  # each round keeps a fraction `mass` of the redraws
            x[bad] = rng.normal(mean, std, size=int(bad.sum()))
            bad = (x < a) | (x > b)
        return R._on_device(x.astype(nd), dev)

    return _fill_random(tensor, draw, "trunc_normal_")


def orthogonal_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al., 2013), from the QR
    decomposition of a Gaussian matrix with the signs fixed so the distribution is uniform.
    Dims after the first are flattened: rows = size(0), cols = numel / rows."""
    _check(tensor, "orthogonal_")
    if tensor.ndim < 2:
        raise ValueError(f"[orthogonal_] needs at least 2 dims, got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows

    def draw(shape, nd, dev):
        flat = R._gen(generator).standard_normal((rows, cols))
        if rows < cols:
            flat = flat.T
        q, r = np.linalg.qr(flat)
        q *= np.sign(np.diag(r))  # makes Q unique, hence Haar-distributed
        if rows < cols:
            q = q.T
        return R._on_device((gain * q).reshape(shape).astype(nd), dev)

    return _fill_random(tensor, draw, "orthogonal_")
