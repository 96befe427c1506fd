"""A small ResNet on Fashion-MNIST with ember: a 3x3 stem, three stages of two basic residual
blocks (conv-BN-ReLU-conv-BN plus a skip connection, 1x1 projection where the shape changes),
global average pooling and a linear classifier. Random crops and flips augment the training set.

    python examples/resnet_fashion.py [--epochs 15] [--batch-size 128] [--lr 0.1]
        [--width 16] [--checkpoint resnet.ckpt [--resume]] [--patience 5] [--subset N]
        [--root DIR]

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
from ember import nn, transforms


class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)), as in He et al. (2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = nn.functional.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return nn.functional.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, width: int = 16, blocks: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width)):  # 28x28, 14x14, 7x7
            for b in range(blocks):
                layers.append(BasicBlock(cin, cout, 2 if (b == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.pool(self.layers(self.stem(x)))
        return self.fc(x.flatten(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, epochs=15, batch_size=128, lr=0.1)
    # At lr 0.1 the validation score dips for several epochs before the cosine schedule
    # anneals (2026-12-07: best 91.0% at epoch 5, again better only at epoch 10); patience 3
    # stopped that run after epoch 8 at 90.5% test, the full 15 epochs reach 93.8%.
    parser.set_defaults(patience=5)
    add_fashion_args(parser)
    parser.add_argument("--width", type=int, default=16, help="channels of the first stage")
    args = parser.parse_args(argv)
    if args.threads:
        ember.set_num_threads(args.threads)
    ember.manual_seed(args.seed)
    gen = ember.Generator(args.seed)
    augment = transforms.Compose(
        [
            transforms.RandomCrop(28, padding=2, generator=gen),
            transforms.RandomHorizontalFlip(generator=gen),
        ]
    )
    try:
        train, val, test = fashion_loaders(args, train_transform=augment)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    model = ResNet(args.width)
    opt = ember.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    sched = ember.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"Fashion-MNIST: {len(train.dataset)} train / {len(val.dataset)} validation / "
        f"{len(test.dataset)} test images; ResNet with {n_params} parameters"
    )
    t0 = time.perf_counter()
    fit(model, opt, train, val, classify_loss, args, scheduler=sched)
    _, acc = accuracy(model, test, args.max_steps)
    print(f"test accuracy {100 * acc:.2f}%  (total {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
