"""Classify Fashion-MNIST with an LSTM trained by ember: each 28x28 image is read as a sequence
of 28 steps (its rows) of 28 pixels.

    python examples/lstm_classifier.py [--epochs 10] [--batch-size 128] [--lr 2e-3]
        [--hidden 128] [--patience 3] [--subset N] [--seed 0] [--data-root DIR]
        [--checkpoint-dir DIR] [--resume] [--threads N]

Model: ``nn.LSTM(28, hidden, batch_first=True)``, the last step's hidden state, then
``nn.Linear(hidden, 10)``; cross-entropy, Adam, gradient norm clipped at 1.

Data: ``ember.datasets.FashionMNIST`` (the IDX files of Debian's ``dataset-fashion-mnist``, or
``--data-root``); ember never downloads, and a missing file ends the run with the dataset's
message. 10 % of the training images (seeded) form the validation split; ``--subset N`` trains
on the first N images of a seeded permutation instead of all 60000 (quick runs).

Every epoch shows a tqdm bar, then prints the training loss and accuracy, the validation loss
and accuracy and the epoch time, and saves a checkpoint (``ember.save`` of the model and
optimizer state, the epoch, the best validation accuracy so far and the early-stopping
counter) to ``<checkpoint-dir>/last.safetensors``; the best model so far also goes to
``best.safetensors``. Training stops early when the validation accuracy has not improved for
``--patience`` epochs. ``--resume`` continues from ``last.safetensors`` (same batch order as an
uninterrupted run: epoch e shuffles with seed + e). The run ends with the best model's test
accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import ember
from ember import nn

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm is in the examples extra
    tqdm = None


class LSTMClassifier(nn.Module):
    """[B, 28, 28] images (rows as time steps) -> [B, 10] logits."""

    def __init__(self, hidden: int = 128, num_layers: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(28, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: ember.Tensor) -> ember.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def load_data(root, subset, seed, val_fraction=0.1, test_subset=None):
    """(x_train, y_train, x_val, y_val, x_test, y_test): float32 [N, 28, 28] in [0, 1]."""
    train = ember.datasets.FashionMNIST(root, train=True)
    test = ember.datasets.FashionMNIST(root, train=False)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    if subset is not None:
        order = order[:subset]
    n_val = max(1, round(val_fraction * len(order)))
    val_idx, tr_idx = order[:n_val], order[n_val:]

    def images(ds, idx):
        return ds.data[idx].astype(np.float32) * np.float32(1 / 255)

    te_idx = np.arange(len(test) if test_subset is None else min(test_subset, len(test)))
    return (images(train, tr_idx), train.targets[tr_idx], images(train, val_idx),
            train.targets[val_idx], images(test, te_idx), test.targets[te_idx])  # fmt: skip


def evaluate(model, x, y, batch_size=1000):
    """(mean loss, accuracy) on (x, y), in eval mode without gradients."""
    model.eval()
    loss, correct = 0.0, 0
    with ember.no_grad():
        for s in range(0, len(y), batch_size):
            sl = slice(s, s + batch_size)
            xb, yb = ember.from_numpy(x[sl]), ember.from_numpy(y[sl])
            logits = model(xb)
            loss += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
            correct += int((logits.argmax(1) == yb).sum().item())
    return loss / len(y), correct / len(y)


def train_epoch(model, opt, x, y, batch_size, rng, desc, show_bar=True):
    model.train()
    order = rng.permutation(len(y))
    starts = range(0, len(y), batch_size)
    bar = tqdm(starts, desc=desc, leave=False, disable=not show_bar) if tqdm else starts
    loss_sum, correct, seen = 0.0, 0, 0
    for s in bar:
        idx = order[s : s + batch_size]
        xb, yb = ember.from_numpy(x[idx]), ember.from_numpy(y[idx])
        logits = model(xb)
        loss = nn.functional.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_sum += loss.item() * len(idx)
        correct += int((logits.detach().argmax(1) == yb).sum().item())
        seen += len(idx)
        if tqdm and show_bar:
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.1f}%")
    return loss_sum / seen, correct / seen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    ap.add_argument("--hidden", type=int, default=128, help="LSTM hidden size")
    ap.add_argument("--layers", type=int, default=1, help="LSTM layers")
    ap.add_argument(
        "--patience",
        type=int,
        default=3,
        help="stop after this many epochs without a better validation accuracy",
    )
    ap.add_argument(
        "--subset",
        type=int,
        default=None,
        help="use N of the training images (10%% of them for validation)",
    )
    ap.add_argument("--test-subset", type=int, default=None, help="use N test images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None, help="directory of the Fashion-MNIST IDX files")
    ap.add_argument("--checkpoint-dir", default="checkpoints/lstm_classifier")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-bar", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.patience < 1:
        ap.error("--epochs, --batch-size and --patience must be positive")
    if args.subset is not None and args.subset < 2:
        ap.error("--subset must be at least 2 (one validation image, one training image)")
    if args.threads is not None:
        ember.set_num_threads(args.threads)

    try:
        x_tr, y_tr, x_va, y_va, x_te, y_te = load_data(
            args.data_root, args.subset, args.seed, test_subset=args.test_subset
        )
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"ember {ember.__version__}, {ember.get_num_threads()} threads; Fashion-MNIST: "
          f"{len(y_tr)} train / {len(y_va)} validation / {len(y_te)} test images")  # fmt: skip

    ember.manual_seed(args.seed)
    model = LSTMClassifier(args.hidden, args.layers)
    opt = ember.optim.Adam(model.parameters(), lr=args.lr)
    os.makedirs(args.checkpoint_dir, exist_ok=True)
    last = os.path.join(args.checkpoint_dir, "last.safetensors")
    best_path = os.path.join(args.checkpoint_dir, "best.safetensors")
    start, best_acc, bad = 1, -1.0, 0
    if args.resume:
        if not os.path.exists(last):
            print(f"--resume: no checkpoint at {last}", file=sys.stderr)
            return 2
        ck = ember.load(last)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start, best_acc, bad = int(ck["epoch"]) + 1, float(ck["best_val_acc"]), int(ck["bad"])
        print(f"resumed from {last} after epoch {start - 1} (best val acc "
              f"{100 * best_acc:.2f}%)")  # fmt: skip
    print(model)

    times = []
    for epoch in range(start, args.epochs + 1):
        if bad >= args.patience:
            print(f"early stop: no better validation accuracy for {bad} epochs")
            break
        t0 = time.perf_counter()
        rng = np.random.default_rng(args.seed + epoch)
        tr_loss, tr_acc = train_epoch(model, opt, x_tr, y_tr, args.batch_size, rng,
                                      f"epoch {epoch}", not args.no_bar)  # fmt: skip
        va_loss, va_acc = evaluate(model, x_va, y_va)
        dt = time.perf_counter() - t0
        times.append(dt)
        improved = va_acc > best_acc
        if improved:
            best_acc, bad = va_acc, 0
            ember.save(model.state_dict(), best_path)
        else:
            bad += 1
        ember.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "best_val_acc": best_acc, "bad": bad}, last)  # fmt: skip
        print(f"epoch {epoch:3d}/{args.epochs}  train loss {tr_loss:.4f} acc "
              f"{100 * tr_acc:6.2f}%  val loss {va_loss:.4f} acc {100 * va_acc:6.2f}%"
              f"{' *' if improved else '  '}  {dt:7.1f} s", flush=True)  # fmt: skip
    if os.path.exists(best_path):
        model.load_state_dict(ember.load(best_path))
    te_loss, te_acc = evaluate(model, x_te, y_te)
    mean_t = f", mean epoch time {np.mean(times):.1f} s" if times else ""
    print(f"test accuracy {100 * te_acc:.2f}% (loss {te_loss:.4f}) with the best validation "
          f"model ({100 * best_acc:.2f}% val){mean_t}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
