"""Classify Fashion-MNIST with an LSTM trained by ember: each 28x28 image is read as a sequence
of 28 steps (its rows) of 28 pixels.

    python examples/lstm_classifier.py [--epochs 10] [--batch-size 128] [--lr 2e-3]
        [--hidden 128] [--layers 1] [--checkpoint lstm.ckpt [--resume]] [--patience 3]
        [--subset N] [--root DIR] [--threads N] [--quiet]

Model: ``nn.LSTM(28, hidden, num_layers=layers, batch_first=True)``, the last step's hidden
state, then ``nn.Linear(hidden, 10)``; cross-entropy, Adam, gradient norm clipped at 1 every
step. Runs on the examples' shared training loop (``_train.py``): a tqdm bar, the loss,
accuracy and time of every epoch, early stopping on 10 % of the training images (seeded), a
checkpoint after every epoch that ``--resume`` continues from, and the test accuracy of the
best epoch's weights at the end. Needs the Fashion-MNIST IDX files (Debian's
dataset-fashion-mnist package, or --root; a missing file ends the run with the dataset's
message and exit status 2) and tqdm: pip install "ember[examples]".
"""

from __future__ import annotations

import argparse
import sys
import time

from _train import accuracy, add_common_args, add_fashion_args, classify_loss, fashion_loaders, fit

import ember
from ember import nn


class LSTMClassifier(nn.Module):
    """[B, 1, 28, 28] (or [B, 28, 28]) images, rows as time steps -> [B, 10] logits."""

    def __init__(self, hidden: int = 128, num_layers: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(28, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: ember.Tensor) -> ember.Tensor:
        out, _ = self.lstm(x.reshape(x.shape[0], 28, 28))
        return self.head(out[:, -1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, epochs=10, batch_size=128, lr=2e-3)
    add_fashion_args(parser)
    parser.add_argument("--hidden", type=int, default=128, help="LSTM hidden size (default 128)")
    parser.add_argument("--layers", type=int, default=1, help="LSTM layers (default 1)")
    args = parser.parse_args(argv)
    if args.threads:
        ember.set_num_threads(args.threads)
    ember.manual_seed(args.seed)
    try:
        train, val, test = fashion_loaders(args)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    model = LSTMClassifier(args.hidden, args.layers)
    opt = ember.optim.Adam(model.parameters(), lr=args.lr)
    print(
        f"Fashion-MNIST: {len(train.dataset)} train / {len(val.dataset)} validation / "
        f"{len(test.dataset)} test images; model:\n{model}"
    )
    t0 = time.perf_counter()
    result = fit(model, opt, train, val, classify_loss, args, clip_grad_norm=1.0)
    _, acc = accuracy(model, test, args.max_steps)
    best = f" ({100 * result['best']:.2f}% validation)" if result["best"] is not None else ""
    print(
        f"test accuracy {100 * acc:.2f}% with the best validation model{best}  "
        f"(total {time.perf_counter() - t0:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
