"""Smoke tests of the example scripts: they run end to end on tiny data, write their
checkpoints and resume from them."""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import ember

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")  # fmt: skip


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_idx(path, arr):
    arr = np.ascontiguousarray(arr, np.uint8)
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, arr.ndim]))
        f.write(struct.pack(f">{arr.ndim}I", *arr.shape))
        f.write(arr.tobytes())


def _fake_fashion_mnist(root, n_train=120, n_test=40, seed=0):
    """IDX files in Fashion-MNIST's layout whose class is visible (a bright row per class), so
    a few steps of training already beat chance."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 28, 28))
        x[np.arange(n), 2 * y + 3, :] = 255
        _write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte"), x)
        _write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte"), y)


def _run_and_resume(mod, data_root, tmp_path, capsys, subset):
    ckdir = tmp_path / "ck"
    base = ["--data-root", str(data_root), "--checkpoint-dir", str(ckdir), "--batch-size", "16",
            "--hidden", "16", "--no-bar", "--patience", "5", "--test-subset", "40"]  # fmt: skip
    if subset is not None:
        base += ["--subset", str(subset)]
    assert mod.main(base + ["--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "epoch   1/1" in out and "test accuracy" in out
    assert (ckdir / "last.safetensors").is_file() and (ckdir / "best.safetensors").is_file()
    ck = ember.load(ckdir / "last.safetensors")
    assert ck["epoch"] == 1 and set(ck) >= {"model", "optimizer", "best_val_acc", "bad"}
    assert "lstm.weight_ih_l0" in ck["model"]
    w1 = ck["model"]["lstm.weight_hh_l0"].numpy().copy()
    # resume: continues at epoch 2, from the saved weights
    assert mod.main(base + ["--epochs", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "epoch   2/2" in out and "epoch   1/" not in out
    ck2 = ember.load(ckdir / "last.safetensors")
    assert ck2["epoch"] == 2
    assert not np.array_equal(ck2["model"]["lstm.weight_hh_l0"].numpy(), w1)
    return out


def test_lstm_classifier_on_tiny_synthetic_data(tmp_path, capsys):
    """Runs everywhere: a tiny Fashion-MNIST-shaped IDX set written to a temp dir."""
    data = tmp_path / "data"
    data.mkdir()
    _fake_fashion_mnist(data)
    mod = _load("lstm_classifier")
    _run_and_resume(mod, data, tmp_path, capsys, subset=None)


def test_lstm_classifier_on_fashion_mnist(tmp_path, capsys):
    root = ember.datasets.FASHION_MNIST_DIR
    present = all(
        any(
            os.path.isfile(os.path.join(d, f + ext))
            for d in (root, os.path.join(root, "FashionMNIST", "raw"))
            for ext in ("", ".gz")
        )  # fmt: skip
        for f in FILES
    )
    if not present:
        pytest.skip(f"Fashion-MNIST files not found in {root} (Debian's dataset-fashion-mnist)")
    mod = _load("lstm_classifier")
    _run_and_resume(mod, root, tmp_path, capsys, subset=200)


def test_lstm_classifier_missing_data_fails_clearly(tmp_path, capsys):
    mod = _load("lstm_classifier")
    rc = mod.main(["--data-root", str(tmp_path), "--checkpoint-dir", str(tmp_path / "ck"),
                   "--no-bar"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "[FashionMNIST] train-images-idx3-ubyte(.gz) not found" in err


def test_lstm_classifier_resume_without_checkpoint(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    _fake_fashion_mnist(data, 30, 10)
    mod = _load("lstm_classifier")
    rc = mod.main(["--data-root", str(data), "--checkpoint-dir", str(tmp_path / "none"),
                   "--resume", "--no-bar"])  # fmt: skip
    assert rc == 2
    assert "no checkpoint" in capsys.readouterr().err


# ---- the examples built on examples/_train.py (MLP, CNN, ResNet, character Transformer) -----


@pytest.fixture
def fake_fashion(tmp_path):
    root = tmp_path / "fashion"
    root.mkdir()
    _fake_fashion_mnist(root, 64, 32)
    return root


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in list(sys.modules):
        if name in ("_train", "cnn_fashion", "resnet_fashion", "char_transformer", "mlp_digits"):
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


def test_mlp_digits_example_trains_checkpoints_and_resumes(examples_on_path, tmp_path, capsys):
    pytest.importorskip("sklearn")  # the digits data; in the test extra
    import mlp_digits

    ckpt = tmp_path / "mlp.ckpt"
    argv = ["--max-steps", "3", "--quiet", "--checkpoint", str(ckpt)]
    first, _ = _run_twice(mlp_digits.main, argv, ckpt, capsys)
    assert "digits: 1294 train / 144 validation / 359 test samples" in first
    assert "best_model" in ember.load(ckpt)


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
