"""``ember.utils.data``: datasets, batching and splitting, shaped like ``torch.utils.data``.

    ds = TensorDataset(x, y)                      # x: [N, ...], y: [N]
    train, val = random_split(ds, [0.8, 0.2], generator=ember.Generator().manual_seed(0))
    for xb, yb in DataLoader(train, batch_size=64, shuffle=True):
        ...                                       # xb: [64, ...], yb: [64]

Fast path: a dataset that defines ``get_batch(indices)`` (``indices``: an int64 numpy array
[B]) returns a whole collated batch at once. ``TensorDataset`` does it with one fancy index
per tensor, ``Subset`` forwards it to its dataset, ``ember.datasets.FashionMNIST`` has it too.
``DataLoader`` uses it whenever no ``collate_fn`` is given, so array-backed data is batched
without a per-sample Python loop. Other datasets go sample by sample through ``collate_fn``
(``default_collate`` by default), as in PyTorch.

Differences from PyTorch: loading is single-process (``num_workers``, ``pin_memory`` and
``persistent_workers`` are accepted for portability and ignored); there are no samplers.
"""

from __future__ import annotations

import collections.abc as abc
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import random as _random
from .._device import xp_of
from ..tensor import Tensor

__all__ = [
    "DataLoader",
    "Dataset",
    "Subset",
    "TensorDataset",
    "default_collate",
    "random_split",
]


class Dataset:
    """A map-style dataset: ``__getitem__(i)`` returns sample ``i``, ``__len__`` the count.

    Subclasses may add ``get_batch(indices) -> batch`` (``indices``: int64 numpy array [B])
    returning what ``default_collate`` would make of ``[self[i] for i in indices]``; the
    ``DataLoader`` then fetches each batch with one call."""

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"[{type(self).__name__}] datasets implement __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"[{type(self).__name__}] datasets implement __len__")


def _take(arr, indices: np.ndarray):
    """``arr[indices]`` along the first dim for a numpy or cupy array (a copy)."""
    if isinstance(arr, np.ndarray):
        return arr[indices]
    return arr[xp_of(arr).asarray(indices)]


class TensorDataset(Dataset):
    """Samples are the i-th rows of tensors sharing their first dim: ``ds[i]`` is
    ``(t0[i], t1[i], ...)``. Each tensor: [N, ...]. numpy arrays are accepted and wrapped
    (without a copy)."""

    def __init__(self, *tensors: Tensor | np.ndarray) -> None:
        if not tensors:
            raise ValueError("[TensorDataset] needs at least one tensor")
        wrapped = []
        for i, t in enumerate(tensors):
            if isinstance(t, np.ndarray):
                t = Tensor._wrap(t)
            if not isinstance(t, Tensor):
                raise TypeError(
                    f"[TensorDataset] argument {i} must be a Tensor or numpy array, got "
                    f"{type(t).__name__}"
                )
            if t.ndim == 0:
                raise ValueError(f"[TensorDataset] argument {i} is 0-d; tensors need a first dim")
            wrapped.append(t)
        n = wrapped[0].shape[0]
        for i, t in enumerate(wrapped):
            if t.shape[0] != n:
                raise ValueError(
                    f"[TensorDataset] size mismatch between tensors: tensor 0 has {n} rows, "
                    f"tensor {i} has {t.shape[0]}"
                )
        self.tensors: tuple[Tensor, ...] = tuple(wrapped)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def get_batch(self, indices: np.ndarray) -> list[Tensor]:
        """``[t[indices] for t in tensors]`` (copies, outside autograd): [B, ...] each."""
        return [Tensor._wrap(_take(t._array, indices)) for t in self.tensors]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices`` (in that order): ``Subset(ds, idx)[i]`` is
    ``ds[idx[i]]``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = indices
        self._idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self._idx.size and (self._idx.min() < 0 or self._idx.max() >= len(dataset)):
            raise ValueError(
                f"[Subset] indices must lie in [0, {len(dataset)}), got "
                f"[{self._idx.min()}, {self._idx.max()}]"
            )

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, (list, tuple, np.ndarray)):
            return [self.dataset[int(self._idx[i])] for i in index]
        return self.dataset[int(self._idx[index])]

    def __len__(self) -> int:
        return int(self._idx.size)

    def __getattr__(self, name: str) -> Any:
        # get_batch exists exactly when the wrapped dataset has one.
        if name == "get_batch" and hasattr(self.dataset, "get_batch"):
            return lambda indices: self.dataset.get_batch(self._idx[indices])
        raise AttributeError(f"'{type(self).__name__}' object has no attribute {name!r}")


def _lengths(n: int, lengths: Sequence[int | float]) -> list[int]:
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths):
        if any(not 0.0 <= x <= 1.0 for x in lengths) or not math.isclose(sum(lengths), 1.0):
            raise ValueError(
                f"[random_split] fractions must lie in [0, 1] and sum to 1, got {lengths}"
            )
        counts = [math.floor(n * x) for x in lengths]
        for i in range(n - sum(counts)):  # the remainder, round-robin (as PyTorch)
            counts[i % len(counts)] += 1
        return counts
    for x in lengths:
        if not isinstance(x, (int, np.integer)) or isinstance(x, bool) or x < 0:
            raise TypeError(
                f"[random_split] lengths must be non-negative ints or floats summing to 1, "
                f"got {lengths}"
            )
    if sum(lengths) != n:
        raise ValueError(
            f"[random_split] sum of input lengths ({sum(lengths)}) does not equal the length "
            f"of the input dataset ({n})"
        )
    return [int(x) for x in lengths]


def random_split(
    dataset: Dataset,
    lengths: Sequence[int | float],
    generator: _random.Generator | None = None,
) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random ``Subset``s of the given lengths (ints
    summing to ``len(dataset)``, or fractions summing to 1; leftover samples from flooring
    go round-robin to the first subsets). ``generator`` defaults to ember's global one."""
    n = len(dataset)
    counts = _lengths(n, lengths)
    perm = _random._gen(generator).permutation(n)
    out, start = [], 0
    for c in counts:
        out.append(Subset(dataset, perm[start : start + c].tolist()))
        start += c
    return out


# ---------------------------------------------------------------------- collate
def _stack_arrays(arrays: list, op: str):
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"[{op}] each element in list of batch should be of equal size, got shapes "
            f"{sorted(shapes)}"
        )
    return xp_of(arrays[0]).stack(arrays)


def default_collate(batch: list) -> Any:
    """Merge a list of samples into a batch, as ``torch.utils.data.default_collate``:
    tensors and numpy arrays [*] -> a Tensor [B, *]; Python floats -> float64 [B], ints ->
    int64 [B], bools -> bool [B]; numpy scalars -> a Tensor [B] of their dtype; strings and
    bytes -> a list; dicts -> a dict of batches; namedtuples -> the namedtuple of batches;
    other sequences (tuples included, as in PyTorch) -> a list of batches per position."""
    op = "default_collate"
    if not isinstance(batch, (list, tuple)) or not batch:
        raise ValueError(f"[{op}] expected a non-empty list of samples")
    elem = batch[0]
    if isinstance(elem, Tensor):
        if any(not isinstance(b, Tensor) for b in batch):
            raise TypeError(f"[{op}] samples mix Tensors and other types")
        return Tensor._wrap(_stack_arrays([b.detach()._array for b in batch], op))
    if isinstance(elem, np.ndarray):
        if elem.dtype.kind in "OUSV":
            raise TypeError(f"[{op}] numpy arrays of dtype {elem.dtype} can't be batched")
        return Tensor._wrap(_stack_arrays([np.asarray(b) for b in batch], op))
    if isinstance(elem, np.generic):
        return Tensor._wrap(np.asarray(batch))
    if isinstance(elem, bool):
        return Tensor._wrap(np.asarray(batch, dtype=np.bool_))
    if isinstance(elem, int):
        return Tensor._wrap(np.asarray(batch, dtype=np.int64))
    if isinstance(elem, float):
        return Tensor._wrap(np.asarray(batch, dtype=np.float64))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, abc.Mapping):
        return {k: default_collate([d[k] for d in batch]) for k in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(list(s)) for s in zip(*batch)))
    if isinstance(elem, abc.Sequence):
        n = len(elem)
        if any(len(b) != n for b in batch):
            raise ValueError(f"[{op}] each element in list of batch should be of equal size")
        return [default_collate(list(s)) for s in zip(*batch)]
    raise TypeError(
        f"[{op}] batch must contain tensors, numpy arrays, numbers, dicts or lists; found "
        f"{type(elem).__name__}"
    )


# -------------------------------------------------------------------- DataLoader
class DataLoader:
    """Iterate over ``dataset`` in batches of ``batch_size`` samples.

    ``shuffle=True`` draws a new permutation at the start of every epoch (every ``iter()``)
    from ``generator`` (an ``ember.Generator``) or, when it is None, from ember's global
    generator (``ember.manual_seed`` makes the order reproducible). ``drop_last`` drops a
    final incomplete batch. ``batch_size=None`` yields single samples, uncollated.
    ``collate_fn`` merges a list of samples into a batch (default: ``default_collate``, or
    the dataset's ``get_batch`` fast path when it has one).

    Single-process: ``num_workers``, ``pin_memory`` and ``persistent_workers`` are accepted
    so PyTorch scripts run unchanged, and ignored."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int | None = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        collate_fn: Callable[[list], Any] | None = None,
        generator: _random.Generator | None = None,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        if batch_size is not None and (
            not isinstance(batch_size, (int, np.integer))
            or isinstance(batch_size, bool)
            or batch_size <= 0
        ):
            raise ValueError(
                f"[DataLoader] batch_size should be a positive integer or None, got {batch_size!r}"
            )
        if generator is not None and not isinstance(generator, _random.Generator):
            raise TypeError(
                f"[DataLoader] generator must be an ember.Generator, got {type(generator).__name__}"
            )
        self.dataset = dataset
        self.batch_size = None if batch_size is None else int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn
        self.generator = generator
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> np.ndarray:
        n = len(self.dataset)
        if self.shuffle:
            return _random._gen(self.generator).permutation(n).astype(np.int64)
        return np.arange(n, dtype=np.int64)

    def __iter__(self) -> Iterator[Any]:
        order = self._order()  # drawn now: each epoch (each iter()) gets a new shuffle
        if self.batch_size is None:
            for i in order:
                yield self.dataset[int(i)]
            return
        fast = getattr(self.dataset, "get_batch", None) if self.collate_fn is None else None
        collate = self.collate_fn or default_collate
        bs = self.batch_size
        stop = len(order) - len(order) % bs if self.drop_last else len(order)
        for start in range(0, stop, bs):
            idx = order[start : start + bs]
            if fast is not None:
                yield fast(idx)
            else:
                yield collate([self.dataset[int(i)] for i in idx])
