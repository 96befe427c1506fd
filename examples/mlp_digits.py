"""A 64-128-64-10 ReLU MLP on scikit-learn's handwritten digits with ember, on the shared
training loop of the examples (progress bar, early stopping, checkpoints).

    python examples/mlp_digits.py [--epochs 30] [--batch-size 32] [--lr 0.1] [--patience 5]
        [--checkpoint mlp.ckpt [--resume]] [--seed 0]

The data and the model are the main job's (``python -m ember``, whose code in
``python/ember/__main__.py`` reads top to bottom as a minimal loop): ``load_digits_split``
(stratified 80/20 train/test split, pixels scaled to [0, 1]) and ``make_mlp``. Here 10 % of
the training samples (seeded) are held out for early stopping, a checkpoint is saved after
every epoch, and the test accuracy of the best epoch's weights is printed at the end.
Needs scikit-learn and tqdm: ``pip install "ember[examples]"``.
"""

from __future__ import annotations

import argparse
import sys
import time

from _train import accuracy, add_common_args, classify_loss, fit, split_indices

import ember
from ember.__main__ import load_digits_split, make_mlp
from ember.utils.data import DataLoader, TensorDataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, epochs=30, batch_size=32, lr=0.1)
    # 144 validation samples: one sample is 0.7 %, so allow a few flat epochs.
    parser.set_defaults(patience=5)
    args = parser.parse_args(argv)
    if args.threads:
        ember.set_num_threads(args.threads)
    ember.manual_seed(args.seed)
    x_tr, y_tr, x_te, y_te = load_digits_split(args.seed)
    tr, va = split_indices(len(y_tr), 0.1, args.seed)
    gen = ember.Generator().manual_seed(args.seed)

    def tensors(idx=slice(None), x=x_tr, y=y_tr):
        return TensorDataset(ember.from_numpy(x[idx]), ember.from_numpy(y[idx]))

    train = DataLoader(tensors(tr), batch_size=args.batch_size, shuffle=True, generator=gen)
    val = DataLoader(tensors(va), batch_size=512)
    test = DataLoader(tensors(x=x_te, y=y_te), batch_size=512)
    model = make_mlp()
    opt = ember.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    print(
        f"digits: {len(tr)} train / {len(va)} validation / {len(y_te)} test samples; "
        f"model:\n{model}"
    )
    t0 = time.perf_counter()
    fit(model, opt, train, val, classify_loss, args)
    _, acc = accuracy(model, test, args.max_steps)
    print(f"test accuracy {100 * acc:.2f}%  (total {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
