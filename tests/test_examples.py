"""Smoke tests of the example scripts: a few steps each, on a tiny synthetic Fashion-MNIST
written as real IDX files (the full dataset is not on CI machines), checking that training
runs, writes a checkpoint and resumes from it."""

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytest.importorskip("tqdm")


def _write_idx(path: Path, arr: np.ndarray) -> None:
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


@pytest.fixture
def fake_fashion(tmp_path):
    """64 training and 32 test images whose class is written into their brightness pattern, so
    a few steps of training already move the loss."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 64), ("t10k", 32)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c : 2 * c + 3] = 250
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in list(sys.modules):
        if name in ("_train", "cnn_fashion", "resnet_fashion", "char_transformer"):
            del sys.modules[name]


def _run_twice(main, argv, ckpt: Path, capsys):
    assert main(argv + ["--epochs", "1"]) == 0
    assert ckpt.is_file()
    first = capsys.readouterr().out
    assert "test accuracy" in first or "best validation" in first
    assert main(argv + ["--epochs", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "after epoch 1" in out
    assert "epoch   2" in out
    return first, out


@pytest.mark.parametrize("script", ["cnn_fashion", "resnet_fashion"])
def test_fashion_examples_train_checkpoint_and_resume(
    script, fake_fashion, examples_on_path, tmp_path, capsys
):
    module = __import__(script)
    ckpt = tmp_path / f"{script}.ckpt"
    argv = [
        "--root",
        str(fake_fashion),
        "--batch-size",
        "16",
        "--max-steps",
        "3",
        "--quiet",
        "--checkpoint",
        str(ckpt),
    ]
    if script == "resnet_fashion":
        argv += ["--width", "4"]
    _run_twice(module.main, argv, ckpt, capsys)


def test_char_transformer_trains_checkpoints_and_resumes(examples_on_path, tmp_path, capsys):
    import char_transformer

    ckpt = tmp_path / "lm.ckpt"
    argv = [
        "--chars",
        "20000",
        "--context",
        "32",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--layers",
        "1",
        "--batch-size",
        "8",
        "--max-steps",
        "3",
        "--quiet",
        "--checkpoint",
        str(ckpt),
    ]
    first, _ = _run_twice(char_transformer.main, argv, ckpt, capsys)
    assert "sample:\ndef " in first


def test_fashion_example_reports_missing_data(examples_on_path, tmp_path):
    import cnn_fashion

    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        cnn_fashion.main(["--root", str(tmp_path), "--epochs", "1"])
