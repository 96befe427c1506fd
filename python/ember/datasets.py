"""``ember.datasets``: datasets available offline, and a validating IDX reader.

* ``digits()``: scikit-learn's bundled 8x8 handwritten digits (1797 samples, 10 classes).
* ``FashionMNIST(root=None, train=True, transform=None)``: the IDX files of Zalando's
  Fashion-MNIST, by default from where Debian's ``dataset-fashion-mnist`` package installs
  them (``/usr/share/datasets/fashion-mnist``). ember never downloads.
* ``read_idx(path)``: the IDX format of (Fashion-)MNIST, plain or gzipped, validated.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .tensor import Tensor
from .utils.data import Dataset, TensorDataset

__all__ = ["FASHION_MNIST_DIR", "FashionMNIST", "digits", "read_idx"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist

# IDX type code -> big-endian numpy dtype (the format stores data most significant byte first)
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CHUNK = 1 << 22


def _read_exact(f, n: int, what: str, path) -> bytes:
    """n bytes from f, read in bounded chunks (n comes from a header: never trust it with one
    allocation); ValueError when the stream ends first."""
    parts, got = [], 0
    while got < n:
        chunk = f.read(min(_CHUNK, n - got))
        if not chunk:
            raise ValueError(
                f"[read_idx] {path}: truncated file: {what} needs {n} bytes, only {got} present"
            )
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def read_idx(path: str | os.PathLike, max_bytes: int = 1 << 32) -> np.ndarray:
    """Read an IDX file (plain, or gzip-compressed: detected from its first bytes) into a
    native-endian numpy array of the dims its header gives (e.g. [60000, 28, 28] uint8).

    The header is 0x00 0x00, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dims, then each dim as a big-endian uint32.
    Raises ``ValueError("[read_idx] ...")`` for a bad magic or type code, a truncated file, or
    bytes after the data; and when the header declares more than ``max_bytes`` of data. Memory
    grows only with data actually present in the file, whatever its header claims."""
    path = os.fspath(path)
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        f = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw
        try:
            return _parse_idx(f, path, max_bytes, None if is_gzip else os.fstat(raw.fileno()))
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise ValueError(f"[read_idx] {path}: corrupt gzip stream ({e})") from None


def _parse_idx(f, path, max_bytes, stat) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4:
        raise ValueError(f"[read_idx] {path}: truncated file: no 4-byte magic number")
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(
            f"[read_idx] {path}: bad magic number {magic.hex()}: an IDX file starts with 0000"
        )
    if magic[2] not in _IDX_TYPES:
        raise ValueError(f"[read_idx] {path}: unknown IDX type code 0x{magic[2]:02x}")
    dtype, ndim = _IDX_TYPES[magic[2]], magic[3]
    if ndim == 0:
        raise ValueError(f"[read_idx] {path}: the header declares 0 dims")
    dims = tuple(
        int(d) for d in np.frombuffer(_read_exact(f, 4 * ndim, "the dims", path), dtype=">u4")
    )
    nbytes = dtype.itemsize
    for d in dims:  # Python ints: no overflow however large the product
        nbytes *= d
    if nbytes > max_bytes:
        raise ValueError(
            f"[read_idx] {path}: the header declares dims {dims} ({nbytes} bytes), more than "
            f"max_bytes={max_bytes}"
        )
    if stat is not None:
        available = stat.st_size - 4 - 4 * ndim
        if available != nbytes:
            kind = "truncated file" if available < nbytes else "extra bytes after the data"
            raise ValueError(
                f"[read_idx] {path}: {kind}: dims {dims} need {nbytes} bytes of data, the file "
                f"holds {available}"
            )
    data = _read_exact(f, nbytes, f"data of dims {dims}", path)
    if f.read(1):
        raise ValueError(
            f"[read_idx] {path}: extra bytes after the data: dims {dims} need {nbytes} bytes"
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


# ------------------------------------------------------------------------ digits
def digits(
    train: bool | None = None,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    images: bool = False,
    as_tensors: bool = True,
) -> TensorDataset | tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as ``TensorDataset(x, y)``, or ``(x, y)`` numpy arrays when
    ``as_tensors=False``. x: float32 pixels scaled to [0, 1], [N, 64] (or [N, 1, 8, 8] with
    ``images=True``); y: int64 class indices [N].

    ``train=None`` gives all 1797 samples; ``True``/``False`` the train/test part of a
    stratified split (each class puts round(test_fraction * its count) samples in the test
    part, chosen by a numpy generator seeded with ``seed``; the same split as
    ``ember.__main__.load_digits_split``)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)  # pixel values are 0..16
    y = d.target.astype(np.int64)
    if train is not None:
        rng = np.random.default_rng(seed)
        is_test = np.zeros(y.size, bool)
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            is_test[idx[: round(test_fraction * idx.size)]] = True
        keep = ~is_test if train else is_test
        x, y = x[keep], y[keep]
    if images:
        x = x.reshape(-1, 1, 8, 8)
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    return TensorDataset(x, y) if as_tensors else (x, y)


# ------------------------------------------------------------------ FashionMNIST
class FashionMNIST(Dataset):
    """Zalando's Fashion-MNIST: 28x28 grey images of 10 clothing classes (60000 train,
    10000 test).

    ``ds[i]`` is ``(image, label)``: a float32 Tensor [1, 28, 28] in [0, 1] and an int;
    ``get_batch(indices)`` gives ``[images [B, 1, 28, 28], labels int64 [B]]`` in one
    gather, so ``DataLoader`` batches without a per-sample loop. ``transform`` is applied to
    the float image batch [B, 1, 28, 28] as a numpy array (use the batched transforms of
    ``ember.transforms``; a single sample goes through as a batch of one), and
    ``target_transform`` to the label array [B]. ``data`` (uint8 [N, 28, 28]) and
    ``targets`` (int64 [N]) hold the raw arrays.

    ``root`` (default ``FASHION_MNIST_DIR``, where Debian's ``dataset-fashion-mnist`` puts the
    files) holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``;
    ``root/FashionMNIST/raw`` (torchvision's layout) is searched too. Differs from
    torchvision: transforms work on batches of arrays, not PIL images; ``download=True`` is
    refused (ember never downloads)."""

    classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        target_transform: Callable[[np.ndarray], np.ndarray] | None = None,
        download: bool = False,
    ) -> None:
        if download:
            raise ValueError(
                "[FashionMNIST] ember never downloads; install Debian's package "
                f"dataset-fashion-mnist (files in {FASHION_MNIST_DIR}) or pass root="
            )
        self.root = Path(FASHION_MNIST_DIR if root is None else root)
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
        prefix = "train" if train else "t10k"
        images = read_idx(self._find(f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(self._find(f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"[FashionMNIST] images must be uint8 [N, H, W], got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"[FashionMNIST] {images.shape[0]} images but labels of shape {labels.shape}"
            )
        if labels.size and labels.max() >= len(self.classes):
            raise ValueError(f"[FashionMNIST] label {labels.max()} out of range [0, 10)")
        self.data = images
        self.targets = labels.astype(np.int64)

    def _find(self, name: str) -> Path:
        dirs = [self.root, self.root / "FashionMNIST" / "raw"]
        for d in dirs:
            for candidate in (d / name, d / (name + ".gz")):
                if candidate.is_file():
                    return candidate
        raise FileNotFoundError(
            f"[FashionMNIST] {name}(.gz) not found in {self.root} (nor in its "
            "FashionMNIST/raw). Install Debian's package dataset-fashion-mnist "
            f"(apt-get install dataset-fashion-mnist puts the files in {FASHION_MNIST_DIR}), "
            "or pass root= the directory holding the IDX files."
        )

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def get_batch(self, indices: np.ndarray) -> list[Tensor]:
        """``[images float32 [B, 1, 28, 28], labels int64 [B]]`` for ``indices`` [B]."""
        x = self.data[indices][:, None].astype(np.float32) * np.float32(1 / 255)
        y = self.targets[indices]
        if self.transform is not None:
            x = np.asarray(self.transform(x))
        if self.target_transform is not None:
            y = np.asarray(self.target_transform(y))
        return [Tensor._wrap(np.ascontiguousarray(x)), Tensor._wrap(np.ascontiguousarray(y))]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"[FashionMNIST] index {index} out of range for {n} samples")
        x, y = self.get_batch(np.array([index % n]))
        return x[0], y._array[0].item()

    def __repr__(self) -> str:
        split = "Train" if self.train else "Test"
        return f"Dataset FashionMNIST\n    Number of datapoints: {len(self)}\n    Split: {split}"
