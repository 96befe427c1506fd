"""ember.utils.data, ember.datasets and ember.transforms: batching, determinism, IDX parsing."""

from __future__ import annotations

import collections
import gzip
import os
import struct

import numpy as np
import pytest

import ember
from ember.datasets import FashionMNIST, read_idx
from ember.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip
from ember.utils.data import (
    DataLoader,
    Dataset,
    Subset,
    TensorDataset,
    default_collate,
    random_split,
)


class ListDataset(Dataset):
    """A general (not array-backed) dataset: samples are (x [3] float32, label int)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __getitem__(self, i):
        return ember.from_numpy(self.x[i]), int(self.y[i])

    def __len__(self):
        return len(self.y)


def _xy(rng, n=23):
    return rng.standard_normal((n, 3)).astype(np.float32), rng.integers(-5, 5, n)


def _gen(seed):
    return ember.Generator().manual_seed(seed)


# ------------------------------------------------------------------ TensorDataset
def test_tensor_dataset_items_and_errors(rng):
    x, y = _xy(rng)
    ds = TensorDataset(ember.from_numpy(x), y)
    assert len(ds) == 23
    xi, yi = ds[5]
    np.testing.assert_array_equal(xi.numpy(), x[5])
    assert yi.item() == y[5]
    with pytest.raises(ValueError, match=r"^\[TensorDataset\] size mismatch"):
        TensorDataset(x, y[:-1])
    with pytest.raises(TypeError, match=r"^\[TensorDataset\]"):
        TensorDataset(x, [1, 2])


@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_batches_cover_dataset_in_order(rng, drop_last):
    x, y = _xy(rng)
    dl = DataLoader(TensorDataset(x, y), batch_size=5, drop_last=drop_last)
    batches = list(dl)
    assert len(batches) == len(dl) == (4 if drop_last else 5)
    assert [b[0].shape[0] for b in batches] == ([5] * 4 if drop_last else [5, 5, 5, 5, 3])
    xs = np.concatenate([b[0].numpy() for b in batches])
    ys = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(xs, x[: len(xs)])
    np.testing.assert_array_equal(ys, y[: len(ys)])
    assert batches[0][1].dtype == ember.int64


def test_shuffle_is_a_permutation_new_each_epoch_and_seeded(rng):
    x, y = _xy(rng, 50)
    ds = TensorDataset(x, np.arange(50))
    dl = DataLoader(ds, batch_size=7, shuffle=True, generator=_gen(3))
    e1 = np.concatenate([b[1].numpy() for b in dl])
    e2 = np.concatenate([b[1].numpy() for b in dl])
    assert sorted(e1.tolist()) == list(range(50)) and sorted(e2.tolist()) == list(range(50))
    assert not np.array_equal(e1, e2)  # a new shuffle each epoch
    assert not np.array_equal(e1, np.arange(50))
    dl2 = DataLoader(ds, batch_size=7, shuffle=True, generator=_gen(3))
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in dl2]), e1)
    # the global generator: ember.manual_seed makes the order reproducible
    dl3 = DataLoader(ds, batch_size=7, shuffle=True)
    ember.manual_seed(11)
    g1 = np.concatenate([b[1].numpy() for b in dl3])
    ember.manual_seed(11)
    g2 = np.concatenate([b[1].numpy() for b in dl3])
    np.testing.assert_array_equal(g1, g2)
    # the samples stay paired with their labels
    for xb, yb in DataLoader(ds, batch_size=7, shuffle=True, generator=_gen(4)):
        np.testing.assert_array_equal(xb.numpy(), x[yb.numpy()])


def test_fast_path_matches_per_sample_collate(rng):
    x, y = _xy(rng)
    ds = TensorDataset(x, y)
    fast = list(DataLoader(ds, batch_size=4, shuffle=True, generator=_gen(1)))
    slow = list(
        DataLoader(ds, batch_size=4, shuffle=True, generator=_gen(1), collate_fn=default_collate)
    )
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow):
        assert isinstance(f, list) and isinstance(s, list)
        for a, b in zip(f, s):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_fast_path_uses_get_batch_without_per_sample_getitem(rng):
    x, y = _xy(rng)

    class Counting(TensorDataset):
        calls = 0

        def __getitem__(self, i):
            Counting.calls += 1
            return super().__getitem__(i)

    for _ in DataLoader(Counting(x, y), batch_size=8, shuffle=True):
        pass
    assert Counting.calls == 0


def test_general_dataset_and_custom_collate(rng):
    x, y = _xy(rng)
    ds = ListDataset(x, y)
    xb, yb = next(iter(DataLoader(ds, batch_size=6)))
    np.testing.assert_array_equal(xb.numpy(), x[:6])
    assert yb.dtype == ember.int64 and yb.tolist() == y[:6].tolist()
    got = next(iter(DataLoader(ds, batch_size=3, collate_fn=lambda b: [s[1] for s in b])))
    assert got == y[:3].tolist()
    single = list(DataLoader(ds, batch_size=None))
    assert len(single) == 23 and single[2][1] == y[2]


def test_default_collate_structures(rng):
    a = rng.standard_normal((2, 3))
    Point = collections.namedtuple("Point", "u v")
    batch = [
        {"img": a[0], "n": -3, "w": -0.5, "ok": True, "name": "p", "pt": Point(1, -2.5)},
        {"img": a[1], "n": 4, "w": 1.25, "ok": False, "name": "q", "pt": Point(-7, 3.5)},
    ]
    out = default_collate(batch)
    np.testing.assert_array_equal(out["img"].numpy(), a)
    assert out["n"].dtype == ember.int64 and out["n"].tolist() == [-3, 4]
    assert out["w"].dtype == ember.float64 and out["w"].tolist() == [-0.5, 1.25]
    assert out["ok"].dtype == ember.bool and out["ok"].tolist() == [True, False]
    assert out["name"] == ["p", "q"]
    assert isinstance(out["pt"], Point) and out["pt"].v.tolist() == [-2.5, 3.5]
    assert default_collate([np.float32(-1.5), np.float32(2.5)]).dtype == ember.float32
    with pytest.raises(ValueError, match=r"^\[default_collate\] each element"):
        default_collate([a[0], a[1, :2]])
    with pytest.raises(TypeError, match=r"^\[default_collate\]"):
        default_collate([None, None])


def test_loader_argument_errors(rng):
    x, y = _xy(rng)
    with pytest.raises(ValueError, match=r"^\[DataLoader\] batch_size"):
        DataLoader(TensorDataset(x, y), batch_size=0)
    with pytest.raises(TypeError, match=r"^\[DataLoader\] generator"):
        DataLoader(TensorDataset(x, y), generator=np.random.default_rng(0))


# ---------------------------------------------------------------- random_split
def test_random_split_ints_fractions_and_seed(rng):
    x, y = _xy(rng, 10)
    ds = TensorDataset(x, np.arange(10))
    a, b = random_split(ds, [7, 3], generator=_gen(5))
    idx = sorted(list(a.indices) + list(b.indices))
    assert idx == list(range(10)) and len(a) == 7 and len(b) == 3
    a2, _ = random_split(ds, [7, 3], generator=_gen(5))
    assert list(a2.indices) == list(a.indices)
    parts = random_split(ds, [0.5, 0.3, 0.2], generator=_gen(5))
    assert [len(p) for p in parts] == [5, 3, 2]
    parts = random_split(ds, [1 / 3, 1 / 3, 1 / 3], generator=_gen(5))
    assert [len(p) for p in parts] == [4, 3, 3]  # remainder round-robin, as PyTorch
    # a Subset of an array-backed dataset keeps the fast path and the right samples
    xb, yb = next(iter(DataLoader(a, batch_size=7)))
    np.testing.assert_array_equal(yb.numpy(), np.asarray(a.indices))
    np.testing.assert_array_equal(xb.numpy(), x[np.asarray(a.indices)])
    assert a[0][1].item() == a.indices[0]
    with pytest.raises(ValueError, match=r"^\[random_split\] sum of input lengths"):
        random_split(ds, [7, 4])
    with pytest.raises(ValueError, match=r"^\[random_split\] fractions"):
        random_split(ds, [0.5, 0.6])
    with pytest.raises(ValueError, match=r"^\[Subset\] indices"):
        Subset(ds, [0, 10])


# ------------------------------------------------------------------------ digits
def test_digits_split_and_shapes():
    full = ember.datasets.digits()
    tr = ember.datasets.digits(train=True)
    te = ember.datasets.digits(train=False)
    assert len(full) == 1797 and len(tr) + len(te) == 1797
    assert abs(len(te) - 0.2 * 1797) < 10
    x, y = ember.datasets.digits(train=False, as_tensors=False, images=True)
    assert x.shape == (len(te), 1, 8, 8) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(x.reshape(len(te), 64), te.tensors[0].numpy())
    from ember.__main__ import load_digits_split

    _, _, xt, yt = load_digits_split()
    np.testing.assert_array_equal(yt, te.tensors[1].numpy())


# ---------------------------------------------------------------------- read_idx
def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize(
    "dtype,code",
    [(np.uint8, 8), (np.int8, 9), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D),
     (np.float64, 0x0E)],
)  # fmt: skip
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, rng, dtype, code, gz):
    arr = (rng.standard_normal((3, 5, 4)) * 50).astype(dtype)
    data = _idx_bytes(arr, code)
    p = tmp_path / "a.idx"
    p.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(p)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.shape == (3, 5, 4)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rejects_bad_files(tmp_path, rng, gz):
    arr = rng.integers(0, 255, (4, 6, 5)).astype(np.uint8)
    good = _idx_bytes(arr, 8)
    p = tmp_path / "bad"

    def check(data, pattern):
        p.write_bytes(gzip.compress(data) if gz else data)
        with pytest.raises(ValueError, match=r"^\[read_idx\] .*" + pattern):
            read_idx(p)

    for cut in (0, 2, 3, 5, 12, 16, len(good) - 1):
        check(good[:cut], "truncated")
    check(good + b"\x00", "extra bytes")
    check(b"\x01" + good[1:], "bad magic")
    check(good[:2] + b"\x07" + good[3:], "type code")
    # a header claiming ~2^32 x 2^32 bytes: refused before reading, nothing allocated
    huge = bytes([0, 0, 8, 2]) + struct.pack(">II", 0xFFFFFFFF, 0xFFFFFFFF) + b"\x00" * 8
    check(huge, "max_bytes")
    # a header claiming 1 GiB of data (under max_bytes) in a tiny file: truncated, not allocated
    check(bytes([0, 0, 8, 1]) + struct.pack(">I", 1 << 30) + b"\x01" * 10, "truncated")


def test_read_idx_corrupt_gzip(tmp_path, rng):
    data = bytearray(gzip.compress(_idx_bytes(rng.integers(0, 9, (50, 8)).astype(np.uint8), 8)))
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 1] ^= 0xFF
    p = tmp_path / "c.gz"
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"^\[read_idx\]"):
        read_idx(p)


# ------------------------------------------------------------------ FashionMNIST
def _write_fake_fashion(root, rng, n=12, gz=True, train=True):
    imgs = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    prefix = "train" if train else "t10k"
    for name, arr in (
        (f"{prefix}-images-idx3-ubyte", imgs),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        data = _idx_bytes(arr, 8)
        (root / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return imgs, labels


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_idx_files(tmp_path, rng, gz):
    imgs, labels = _write_fake_fashion(tmp_path, rng, gz=gz, train=False)
    ds = FashionMNIST(root=tmp_path, train=False)
    assert len(ds) == 12
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == ember.float32 and y == labels[3]
    np.testing.assert_allclose(x.numpy()[0], imgs[3] / 255.0, rtol=1e-6)
    xb, yb = next(iter(DataLoader(ds, batch_size=5, shuffle=True, generator=_gen(0))))
    assert xb.shape == (5, 1, 28, 28) and yb.dtype == ember.int64
    for xi, yi in zip(xb.numpy(), yb.numpy()):
        k = int(np.flatnonzero((imgs == np.round(xi[0] * 255)).all(axis=(1, 2)))[0])
        assert labels[k] == yi
    flipped = FashionMNIST(root=tmp_path, train=False, transform=RandomHorizontalFlip(p=1.0))
    np.testing.assert_allclose(flipped[3][0].numpy(), x.numpy()[..., ::-1])


def test_fashion_mnist_missing_names_package_and_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^\[FashionMNIST\].*dataset-fashion-mnist"):
        FashionMNIST(root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="/usr/share/datasets/fashion-mnist"):
        FashionMNIST(root=tmp_path)


@pytest.mark.skipif(
    not os.path.isdir(ember.datasets.FASHION_MNIST_DIR), reason="dataset-fashion-mnist absent"
)
def test_fashion_mnist_debian_package():
    ds = FashionMNIST(train=False)
    assert len(ds) == 10000 and ds.data.shape == (10000, 28, 28)
    assert np.bincount(ds.targets).tolist() == [1000] * 10


# -------------------------------------------------------------------- transforms
def test_random_crop_matches_per_image_reference(rng):
    x = rng.standard_normal((9, 2, 6, 7)).astype(np.float32)
    crop = RandomCrop(5, padding=2, generator=_gen(7))
    out = crop(x)
    assert out.shape == (9, 2, 5, 5)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    r = _gen(7).numpy
    i = r.integers(0, 6, size=9)
    j = r.integers(0, 7, size=9)
    for k in range(9):
        np.testing.assert_array_equal(out[k], padded[k, :, i[k] : i[k] + 5, j[k] : j[k] + 5])
    assert len({(a, b) for a, b in zip(i, j)}) > 1  # images get different offsets
    t = crop(ember.from_numpy(x[0]))  # one image [C, H, W], as a Tensor
    assert isinstance(t, ember.Tensor) and t.shape == (2, 5, 5)
    with pytest.raises(ValueError, match=r"^\[RandomCrop\] crop size"):
        RandomCrop(9)(x)
    with pytest.raises(ValueError, match=r"^\[RandomCrop\] expected"):
        RandomCrop(2)(x[0, 0])


def test_flip_normalize_compose(rng):
    x = rng.standard_normal((40, 3, 4, 5))
    out = RandomHorizontalFlip(0.5, generator=_gen(2))(x)
    flip = _gen(2).numpy.random(40) < 0.5
    np.testing.assert_array_equal(out[flip], x[flip][..., ::-1])
    np.testing.assert_array_equal(out[~flip], x[~flip])
    assert 0 < flip.sum() < 40
    mean, std = [0.3, -0.2, 1.5], [0.7, 2.0, 0.25]
    y = Normalize(mean, std)(x)
    ref = (x - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    both = Compose([RandomHorizontalFlip(1.0), Normalize(mean, std)])(x)
    np.testing.assert_allclose(both, ref[..., ::-1], rtol=1e-12)
    with pytest.raises(ValueError, match=r"^\[Normalize\] mean has 3 values"):
        Normalize(mean, std)(x[:, :2])
    with pytest.raises(ValueError, match=r"^\[Normalize\] std has a zero"):
        Normalize(0.1, 0.0)
    x0 = x.copy()
    RandomCrop(3, padding=1)(x)
    np.testing.assert_array_equal(x, x0)  # inputs are never modified
