"""``ember.transforms``: batched, vectorised image augmentation on [N, C, H, W] arrays.

Every transform takes a numpy array or a CPU ``Tensor`` of shape [N, C, H, W] (or one image
[C, H, W], treated as a batch of one) and returns the same kind and layout; each image of a
batch gets its own random draw, all in a few numpy calls (no per-image loop). Random ones take
``generator=`` (an ``ember.Generator``; default: ember's global generator, so
``ember.manual_seed`` makes them reproducible). They never modify their input.

Differs from torchvision: batches of arrays instead of PIL images or single tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import random as _random
from .tensor import Tensor

__all__ = ["Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip"]


def _unwrap(x, op: str) -> tuple[np.ndarray, bool, bool]:
    """(array [N, C, H, W], was a Tensor, was a single [C, H, W] image)."""
    is_tensor = isinstance(x, Tensor)
    if is_tensor:
        if x.is_cuda:
            raise TypeError(f"[{op}] transforms work on CPU data; call .cpu() first")
        arr = x.detach()._array
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        raise TypeError(f"[{op}] expected a numpy array or Tensor, got {type(x).__name__}")
    if arr.ndim not in (3, 4):
        raise ValueError(f"[{op}] expected [N, C, H, W] or [C, H, W], got shape {arr.shape}")
    single = arr.ndim == 3
    return (arr[None] if single else arr), is_tensor, single


def _wrap(arr: np.ndarray, is_tensor: bool, single: bool):
    arr = arr[0] if single else arr
    return Tensor._wrap(np.ascontiguousarray(arr)) if is_tensor else arr


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}" for t in self.transforms)
        return f"Compose({inner}\n)"


def _pair(v, op: str, name: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    if isinstance(v, Sequence) and len(v) == 2:
        return int(v[0]), int(v[1])
    raise ValueError(f"[{op}] {name} must be an int or a pair, got {v!r}")


class RandomCrop:
    """Crop each image to ``size`` (int: square, or (h, w)) at a random position, after
    padding its borders with ``fill`` by ``padding``: an int (all sides), (left/right,
    top/bottom) or (left, top, right, bottom), as torchvision. [N, C, H, W] -> [N, C, h, w]."""

    def __init__(
        self,
        size: int | Sequence[int],
        padding: int | Sequence[int] | None = None,
        fill: float = 0,
        generator: _random.Generator | None = None,
    ) -> None:
        self.size = _pair(size, "RandomCrop", "size")
        if min(self.size) <= 0:
            raise ValueError(f"[RandomCrop] size must be positive, got {size!r}")
        p = 0 if padding is None else padding
        if isinstance(p, (int, np.integer)):
            p = (int(p),) * 4
        elif isinstance(p, Sequence) and len(p) == 2:
            p = (int(p[0]), int(p[1]), int(p[0]), int(p[1]))
        elif isinstance(p, Sequence) and len(p) == 4:
            p = tuple(int(v) for v in p)
        else:
            raise ValueError(f"[RandomCrop] padding must be an int, 2 or 4 ints, got {padding!r}")
        if min(p) < 0:
            raise ValueError(f"[RandomCrop] padding must be non-negative, got {padding!r}")
        self.padding = p  # (left, top, right, bottom)
        self.fill = fill
        self.generator = generator

    def __call__(self, x):
        arr, is_tensor, single = _unwrap(x, "RandomCrop")
        left, top, right, bottom = self.padding
        if any(self.padding):
            arr = np.pad(
                arr,
                ((0, 0), (0, 0), (top, bottom), (left, right)),
                constant_values=np.asarray(self.fill, arr.dtype),
            )
        n, _, hp, wp = arr.shape
        h, w = self.size
        if h > hp or w > wp:
            raise ValueError(
                f"[RandomCrop] crop size {(h, w)} is larger than the padded image {(hp, wp)}"
            )
        rng = _random._gen(self.generator)
        i = rng.integers(0, hp - h + 1, size=n)
        j = rng.integers(0, wp - w + 1, size=n)
        # windows[n, c, i, j] is the h x w crop at (i, j); one gather picks each image's own.
        windows = sliding_window_view(arr, (h, w), axis=(2, 3))
        return _wrap(windows[np.arange(n), :, i, j], is_tensor, single)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``. [N, C, H, W] -> same."""

    def __init__(self, p: float = 0.5, generator: _random.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"[RandomHorizontalFlip] p must lie in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def __call__(self, x):
        arr, is_tensor, single = _unwrap(x, "RandomHorizontalFlip")
        flip = _random._gen(self.generator).random(arr.shape[0]) < self.p
        out = arr.copy()
        out[flip] = arr[flip][..., ::-1]
        return _wrap(out, is_tensor, single)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """(x - mean[c]) / std[c] per channel. [N, C, H, W] floating -> same."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise ValueError("[Normalize] mean and std must be numbers or 1-d sequences")
        if np.any(self.std == 0):
            raise ValueError(f"[Normalize] std has a zero: {self.std.tolist()}")

    def __call__(self, x):
        arr, is_tensor, single = _unwrap(x, "Normalize")
        if arr.dtype.kind != "f":
            raise TypeError(f"[Normalize] expected a floating input, got {arr.dtype}")
        c = arr.shape[1]
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v.size not in (1, c):
                raise ValueError(
                    f"[Normalize] {name} has {v.size} values but the input has {c} channels"
                )
        mean = self.mean.astype(arr.dtype)[None, :, None, None]
        std = self.std.astype(arr.dtype)[None, :, None, None]
        return _wrap((arr - mean) / std, is_tensor, single)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"
