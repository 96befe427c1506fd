"""A small CNN on Fashion-MNIST with ember: two conv + batch-norm + ReLU + max-pool stages and
a two-layer classifier head.

    python examples/cnn_fashion.py [--epochs 10] [--batch-size 128] [--lr 0.05]
        [--checkpoint cnn.ckpt [--resume]] [--patience 3] [--subset N] [--root DIR]

Holds out 10 % of the training images for early stopping, saves a checkpoint after every
epoch, and prints the test accuracy of the best epoch's weights. Needs the Fashion-MNIST IDX
files (Debian's dataset-fashion-mnist package, or --root; a missing file ends the run with the
dataset's message and exit status 2) and tqdm: pip install "ember[examples]".
"""

from __future__ import annotations

import argparse
import sys
import time

from _train import accuracy, add_common_args, add_fashion_args, classify_loss, fashion_loaders, fit

import ember
from ember import nn


def make_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 14x14
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 7x7
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(128, 10),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, epochs=10, batch_size=128, lr=0.05)
    add_fashion_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        ember.set_num_threads(args.threads)
    ember.manual_seed(args.seed)
    try:
        train, val, test = fashion_loaders(args)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    model = make_cnn()
    opt = ember.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = ember.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    print(
        f"Fashion-MNIST: {len(train.dataset)} train / {len(val.dataset)} validation / "
        f"{len(test.dataset)} test images; model:\n{model}"
    )
    t0 = time.perf_counter()
    fit(model, opt, train, val, classify_loss, args, scheduler=sched)
    _, acc = accuracy(model, test, args.max_steps)
    print(f"test accuracy {100 * acc:.2f}%  (total {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
