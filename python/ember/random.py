"""ember's random state: one numpy Generator for CPU tensors (and cupy's for CUDA ones),
reset by ``ember.manual_seed``. Nothing draws from numpy's global state."""

from __future__ import annotations

import numpy as np


class Generator:
    """A random generator, passed as ``generator=`` (DataLoader, random_split, rand ...).

    ``ember.manual_seed`` reseeds (and returns) the default one that everything else uses."""

    def __init__(self, seed_value: int | None = None):
        self._rng = np.random.default_rng(seed_value)
        self._seed = seed_value

    def manual_seed(self, s: int) -> Generator:
        self._rng = np.random.default_rng(int(s))
        self._seed = int(s)
        return self

    def initial_seed(self) -> int | None:
        return self._seed

    @property
    def numpy(self) -> np.random.Generator:
        return self._rng


_default = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed every ember generator (CPU, and CUDA when available); returns the default one."""
    seed = int(seed)
    _default.manual_seed(seed)
    from . import cuda

    if cuda.is_available():
        cuda.manual_seed_all(seed)
    return _default


def seed() -> int:
    """Seed ember from a non-deterministic source and return that seed (as ``torch.seed``)."""
    s = int(np.random.SeedSequence().entropy % (1 << 63))
    manual_seed(s)
    return s


def initial_seed() -> int | None:
    return _default.initial_seed()


def default_generator() -> np.random.Generator:
    """The numpy Generator behind the default ember generator."""
    return _default._rng


def _gen(generator):
    return _default._rng if generator is None else generator._rng


def _float_draw(kind, shape, nd, generator):
    rng = _gen(generator)
    if nd in (np.float32, np.float64):
        return rng.random(shape, dtype=nd) if kind == "u" else rng.standard_normal(shape, dtype=nd)
    out = (
        rng.random(shape, dtype=np.float32)
        if kind == "u"
        else rng.standard_normal(shape, dtype=np.float32)
    )
    return out.astype(nd)


def _on_device(arr, dev):
    from ._device import move

    return arr if dev is None or dev.type == "cpu" else move(arr, dev)


def _uniform(shape, a, b, nd, dev, generator=None):
    x = _float_draw("u", shape, nd, generator)
    if a != 0.0 or b != 1.0:
        x = (x * (b - a) + a).astype(nd, copy=False)
    return _on_device(x, dev)


def _normal(shape, mean, std, nd, dev, generator=None):
    x = _float_draw("n", shape, nd, generator)
    if mean != 0.0 or std != 1.0:
        x = (x * std + mean).astype(nd, copy=False)
    return _on_device(x, dev)


def _randint(low, high, shape, nd, dev, generator=None):
    if high <= low:
        raise ValueError(f"[randint] high ({high}) must be greater than low ({low})")
    return _on_device(
        _gen(generator).integers(low, high, size=shape, dtype=np.int64).astype(nd), dev
    )


def _permutation(n, dev, generator=None):
    return _on_device(_gen(generator).permutation(n).astype(np.int64), dev)
