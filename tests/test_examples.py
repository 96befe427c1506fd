"""Smoke tests of the example scripts: they run end to end on tiny data, write their
checkpoints and resume from them."""

from __future__ import annotations

import importlib
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


# ---- the examples, all on examples/_train.py (MLP, CNN, ResNet, LSTM, character Transformer)


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
        if name in ("_train", "cnn_fashion", "resnet_fashion", "lstm_classifier",
                    "char_transformer", "mlp_digits"):  # fmt: skip
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


@pytest.mark.parametrize("name", ["cnn_fashion", "resnet_fashion"])
def test_fashion_example_reports_missing_data(examples_on_path, tmp_path, capsys, name):
    """No traceback: the dataset's message on stderr and exit status 2, as the LSTM example."""
    module = importlib.import_module(name)
    assert module.main(["--root", str(tmp_path), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "[FashionMNIST] train-images-idx3-ubyte(.gz) not found" in err
    assert "dataset-fashion-mnist" in err


# ---- the LSTM classifier: Adam with gradient clipping on the shared loop ----------------------


def _lstm_run_and_resume(data_root, tmp_path, capsys, monkeypatch, extra=()):
    """One epoch, then --resume to epoch 2: the checkpoint holds the LSTM's weights, the second
    run starts at epoch 2 from them and changes them; every training step clips at 1.0."""
    import lstm_classifier

    clips = []
    clip = ember.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *a, **kw):
        clips.append(max_norm)
        return clip(parameters, max_norm, *a, **kw)

    monkeypatch.setattr(ember.nn.utils, "clip_grad_norm_", spy)
    ckpt = tmp_path / "lstm.ckpt"
    argv = ["--root", str(data_root), "--batch-size", "16", "--hidden", "16", "--patience", "5",
            "--quiet", "--checkpoint", str(ckpt), *extra]  # fmt: skip
    assert lstm_classifier.main(argv + ["--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "epoch   1  train loss" in out and "test accuracy" in out
    assert "LSTM(28, 16" in out
    ck = ember.load(ckpt)
    assert ck["epoch"] == 1
    assert set(ck) >= {"model", "optimizer", "best", "bad_epochs", "best_model"}
    assert "lstm.weight_ih_l0" in ck["model"] and "head.weight" in ck["model"]
    w1 = ck["model"]["lstm.weight_hh_l0"].numpy().copy()
    steps = len(clips)
    assert steps > 0 and clips == [1.0] * steps
    # resume: continues at epoch 2, from the saved weights, and trains them further
    assert lstm_classifier.main(argv + ["--epochs", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "after epoch 1" in out
    assert "epoch   2  train loss" in out and "epoch   1  train loss" not in out
    assert len(clips) == 2 * steps
    ck2 = ember.load(ckpt)
    assert ck2["epoch"] == 2
    assert not np.array_equal(ck2["model"]["lstm.weight_hh_l0"].numpy(), w1)
    return steps


def test_lstm_classifier_on_tiny_synthetic_data(examples_on_path, tmp_path, capsys, monkeypatch):
    """Runs everywhere: a tiny Fashion-MNIST-shaped IDX set written to a temp dir."""
    data = tmp_path / "data"
    data.mkdir()
    _fake_fashion_mnist(data)  # 120 training images: 108 train (7 batches of 16), 12 validation
    assert _lstm_run_and_resume(data, tmp_path, capsys, monkeypatch) == 7


def test_lstm_classifier_on_fashion_mnist(examples_on_path, tmp_path, capsys, monkeypatch):
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
    extra = ["--subset", "200", "--max-steps", "4"]
    assert _lstm_run_and_resume(root, tmp_path, capsys, monkeypatch, extra) == 4


def test_lstm_classifier_missing_data_fails_clearly(examples_on_path, tmp_path, capsys):
    import lstm_classifier

    rc = lstm_classifier.main(["--root", str(tmp_path), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "[FashionMNIST] train-images-idx3-ubyte(.gz) not found" in err
    assert "dataset-fashion-mnist" in err


def test_lstm_classifier_resume_without_checkpoint(examples_on_path, tmp_path, capsys):
    """--resume with no checkpoint yet says so and trains from epoch 1, writing one."""
    data = tmp_path / "data"
    data.mkdir()
    _fake_fashion_mnist(data, 30, 10)
    import lstm_classifier

    ckpt = tmp_path / "none.ckpt"
    argv = ["--root", str(data), "--hidden", "8", "--epochs", "1", "--quiet", "--checkpoint",
            str(ckpt), "--resume"]  # fmt: skip
    assert lstm_classifier.main(argv) == 0
    out = capsys.readouterr().out
    assert f"--resume: no checkpoint at {ckpt}; starting from epoch 1" in out
    assert "resumed from" not in out and "epoch   1  train loss" in out
    assert ember.load(ckpt)["epoch"] == 1


def test_fit_clips_the_gradient_norm_between_backward_and_step(examples_on_path):
    """_train.fit(clip_grad_norm=c): the SGD step (lr 1) moves the weights by at most c."""
    import argparse

    import _train

    x = ember.from_numpy(np.full((4, 3), 100.0, np.float32))

    def loss_fn(model, batch):
        return model(batch).sum(), 0, len(x)

    def no_eval(model, loader, max_steps):
        return 0.0, 0.0

    args = argparse.Namespace(epochs=1, max_steps=None, quiet=True, resume=False,
                              checkpoint=None, patience=1)  # fmt: skip
    moved = {}
    for clip in (None, 1.0):
        model = ember.nn.Linear(3, 1, bias=False)
        w0 = model.weight.detach().numpy().copy()
        opt = ember.optim.SGD(model.parameters(), lr=1.0)
        _train.fit(model, opt, [x], [], loss_fn, args, evaluate=no_eval,
                   clip_grad_norm=clip, log=lambda s: None)  # fmt: skip
        moved[clip] = float(np.linalg.norm(model.weight.detach().numpy() - w0))
    assert moved[None] == pytest.approx(400 * np.sqrt(3), rel=1e-5)  # unclipped: |grad|
    assert moved[1.0] == pytest.approx(1.0, rel=1e-4)
