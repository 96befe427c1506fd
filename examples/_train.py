"""The training loop the example scripts share: tqdm progress, per-epoch loss/accuracy/time,
early stopping on a validation split, and a checkpoint after every epoch that ``--resume``
continues from.

    from _train import fit, add_common_args
    history = fit(model, optimizer, train_loader, val_loader, loss_fn, args)

A checkpoint (``ember.save``, safetensors + JSON, never pickle) holds the model, optimizer and
scheduler state, the epoch, the best validation score so far and the epochs since it, and the
best weights; training restores the best weights when it stops early or ends.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

import ember
from ember import nn


def add_common_args(parser: argparse.ArgumentParser, *, epochs: int, batch_size: int, lr: float):
    """The options every example takes."""
    parser.add_argument("--epochs", type=int, default=epochs, help="default %(default)s")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="default %(default)s")
    parser.add_argument("--lr", type=float, default=lr, help="default %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="default %(default)s")
    parser.add_argument(
        "--patience",
        type=int,
        default=3,
        help="stop after this many epochs without a better validation score (default 3)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file written after every epoch (default: none)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from --checkpoint if it exists"
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop each epoch after this many batches (smoke tests)",
    )
    parser.add_argument("--threads", type=int, default=None, help="ember.set_num_threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def accuracy(model: nn.Module, loader, max_steps: int | None = None) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of a classifier over ``loader``."""
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    with ember.no_grad():
        for step, (x, y) in enumerate(loader):
            if max_steps is not None and step >= max_steps:
                break
            logits = model(x)
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum().item())
            total += len(y)
    return loss_sum / max(total, 1), correct / max(total, 1)


def _save(path: str, model, optimizer, scheduler, epoch: int, best, bad: int, best_state) -> None:
    ckpt = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "best": best,
        "bad_epochs": bad,
        "best_model": best_state,
    }
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    ember.save(ckpt, path)


def fit(
    model: nn.Module,
    optimizer: ember.optim.Optimizer,
    train_loader,
    val_loader,
    loss_fn: Callable,
    args: argparse.Namespace,
    *,
    scheduler=None,
    evaluate: Callable | None = None,
    higher_is_better: bool = True,
    clip_grad_norm: float | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train for ``args.epochs`` epochs with early stopping on ``evaluate(model, loader,
    max_steps) -> (val_loss, score)`` (default: classification accuracy). ``loss_fn(model,
    batch) -> (loss, n_correct, n_predictions)``. ``clip_grad_norm``: when given, every step
    scales the gradients to at most this total 2-norm (``nn.utils.clip_grad_norm_``, between
    ``loss.backward()`` and ``optimizer.step()``). Returns the history and the best score."""
    evaluate = evaluate or accuracy
    start, best, bad, best_state = 1, None, 0, None
    if args.resume and args.checkpoint and os.path.exists(args.checkpoint):
        ckpt = ember.load(args.checkpoint)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and "scheduler" in ckpt:
            scheduler.load_state_dict(ckpt["scheduler"])
        start, best, bad = ckpt["epoch"] + 1, ckpt["best"], ckpt["bad_epochs"]
        best_state = ckpt["best_model"]
        log(f"resumed from {args.checkpoint} after epoch {ckpt['epoch']} (best {best})")
    elif args.resume:
        log(f"--resume: no checkpoint at {args.checkpoint}; starting from epoch 1")
    history = []
    for epoch in range(start, args.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        n_batches = len(train_loader)
        if args.max_steps is not None:
            n_batches = min(n_batches, args.max_steps)
        bar = tqdm(
            total=n_batches, desc=f"epoch {epoch}/{args.epochs}", disable=args.quiet, leave=False
        )
        loss_sum, seen, correct = 0.0, 0, 0
        for step, batch in enumerate(train_loader):
            if step >= n_batches:
                break
            loss, n_correct, n = loss_fn(model, batch)
            optimizer.zero_grad()
            loss.backward()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            loss_sum += loss.item() * n
            seen += n
            correct += n_correct
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        bar.close()
        if scheduler is not None:
            scheduler.step()
        train_s = time.perf_counter() - t0
        val_loss, score = evaluate(model, val_loader, args.max_steps)
        improved = best is None or (score > best if higher_is_better else score < best)
        if improved:
            best, bad = score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        rec = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "val_loss": val_loss,
            "val_score": score,
            "epoch_s": train_s,
        }
        history.append(rec)
        log(
            f"epoch {epoch:3d}  train loss {rec['train_loss']:.4f}  train acc "
            f"{100 * rec['train_acc']:6.2f}%  val loss {val_loss:.4f}  val {score:.4f}  "
            f"{train_s:7.2f} s/epoch"
        )
        if args.checkpoint:
            _save(args.checkpoint, model, optimizer, scheduler, epoch, best, bad, best_state)
        if bad >= args.patience:
            log(f"early stop: no better validation score for {bad} epochs")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"history": history, "best": best}


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random (train, validation) split of range(n)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return order[n_val:], order[:n_val]


def add_fashion_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        default=None,
        help="directory with the Fashion-MNIST IDX files (default: where Debian's "
        "dataset-fashion-mnist package installs them)",
    )
    parser.add_argument(
        "--subset", type=int, default=None, help="train on the first N training images only"
    )


def fashion_loaders(args, train_transform=None):
    """(train, validation, test) DataLoaders over Fashion-MNIST: 10 % of the training images
    (seeded) are held out for early stopping; images are [B, 1, 28, 28] in [0, 1],
    normalised with the training set's mean and std."""
    from ember import transforms
    from ember.datasets import FashionMNIST
    from ember.utils.data import DataLoader, Subset

    norm = transforms.Normalize(0.2860, 0.3530)
    train_tf = transforms.Compose([train_transform, norm]) if train_transform else norm
    full = FashionMNIST(args.root, train=True, transform=train_tf)
    plain = FashionMNIST(args.root, train=True, transform=norm)
    test = FashionMNIST(args.root, train=False, transform=norm)
    n = len(full) if args.subset is None else min(args.subset, len(full))
    tr_idx, va_idx = split_indices(n, 0.1, args.seed)
    gen = ember.Generator().manual_seed(args.seed)
    train = DataLoader(
        Subset(full, tr_idx), batch_size=args.batch_size, shuffle=True, generator=gen
    )
    val = DataLoader(Subset(plain, va_idx), batch_size=512)
    test = DataLoader(test, batch_size=512)
    return train, val, test


def classify_loss(model, batch):
    """Cross-entropy of a classifier on (x, y), the number it got right, the batch size."""
    x, y = batch
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    return loss, int((logits.detach().argmax(1) == y).sum().item()), len(y)
