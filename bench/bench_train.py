"""End-to-end training of the example CNN / ResNet on Fashion-MNIST: ember against the same
model in PyTorch CPU, same data order, same optimizer, same thread count, one process.

    python bench/bench_train.py [--model cnn|resnet] [--epochs 1] [--threads 2]
        [--root DIR] [--subset N] [--batch-size 128]

Reports seconds per training epoch and test accuracy after the given epochs for both. Both
frameworks see the same normalised images in the same shuffled order (no augmentation, so the
comparison is of the framework, not of the data pipeline), SGD with momentum 0.9 and weight
decay 5e-4 at a constant learning rate.

PyTorch runs twice: in its default NCHW memory format (what a DataLoader's collated batches
give) and in channels_last (NHWC), PyTorch's opt-in faster layout for CNNs on the CPU. The
input batch is cloned into the chosen format explicitly: a numpy fancy-indexed batch of
shape (N, 1, H, W) keeps a stride of 4 bytes on its size-1 channel axis, which PyTorch reads
as channels_last, so without the clone PyTorch would silently switch layouts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import ember  # noqa: E402
from ember.datasets import FashionMNIST  # noqa: E402


def load(root, subset):
    tr, te = FashionMNIST(root, train=True), FashionMNIST(root, train=False)
    n = len(tr) if subset is None else subset
    norm = lambda d: ((d.astype(np.float32) / 255 - 0.2860) / 0.3530)[:, None]  # noqa: E731
    return norm(tr.data[:n]), tr.targets[:n], norm(te.data), te.targets


def torch_cnn(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(128, 10),
    )  # fmt: skip


def torch_resnet(torch, width):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    layers, cin = [], width
    for i, cout in enumerate((width, 2 * width, 4 * width)):
        for b in range(2):
            layers.append(Block(cin, cout, 2 if (b == 0 and i > 0) else 1))
            cin = cout
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10),
    )  # fmt: skip


def train(framework, model, opt, step_fn, predict, data, args):
    xtr, ytr, xte, yte = data
    rng = np.random.default_rng(args.seed)
    times = []
    for _ in range(args.epochs):
        order = rng.permutation(len(ytr))
        t0 = time.perf_counter()
        for s in range(0, len(order) - args.batch_size + 1, args.batch_size):
            idx = order[s : s + args.batch_size]
            step_fn(np.ascontiguousarray(xtr[idx]), ytr[idx])
        times.append(time.perf_counter() - t0)
    correct = 0
    for s in range(0, len(yte), 500):
        correct += int((predict(xte[s : s + 500]) == yte[s : s + 500]).sum())
    return min(times), correct / len(yte)


def run_ember(data, args):
    from cnn_fashion import make_cnn
    from resnet_fashion import ResNet

    ember.manual_seed(args.seed)
    model = make_cnn() if args.model == "cnn" else ResNet(args.width)
    opt = ember.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)

    def step(x, y):
        model.train()
        loss = ember.nn.functional.cross_entropy(model(ember.from_numpy(x)), ember.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()

    def predict(x):
        model.eval()
        with ember.no_grad():
            return model(ember.from_numpy(np.ascontiguousarray(x))).argmax(1).numpy()

    return train("ember", model, opt, step, predict, data, args)


def run_torch(data, args, channels_last):
    import torch

    torch.manual_seed(args.seed)
    model = torch_cnn(torch) if args.model == "cnn" else torch_resnet(torch, args.width)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)

    def as_input(x):  # explicit layout: see the module docstring
        return torch.from_numpy(np.ascontiguousarray(x)).clone(memory_format=fmt)

    def step(x, y):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(as_input(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()

    def predict(x):
        model.eval()
        with torch.no_grad():
            return model(as_input(x)).argmax(1).numpy()

    return train("torch", model, opt, step, predict, data, args)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["cnn", "resnet"], default="cnn")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default=None)
    p.add_argument("--subset", type=int, default=None)
    args = p.parse_args(argv)
    ember.set_num_threads(args.threads)
    data = load(args.root, args.subset)
    rows = [("ember", *run_ember(data, args))]
    try:
        import torch

        torch.set_num_threads(args.threads)
        for channels_last in (False, True):
            name = f"PyTorch {torch.__version__} ({'channels_last' if channels_last else 'NCHW'})"
            rows.append((name, *run_torch(data, args, channels_last)))
    except ImportError:
        print("PyTorch not installed: ember only")
    print(
        f"\n{args.model} on Fashion-MNIST, {len(data[1])} training images, batch "
        f"{args.batch_size}, {args.epochs} epoch(s), {args.threads} thread(s)\n"
    )
    print("| framework | s / epoch (best) | test accuracy |\n|---|---|---|")
    for name, sec, acc in rows:
        print(f"| {name} | {sec:.2f} | {100 * acc:.2f}% |")
    for name, sec, _ in rows[1:]:
        print(f"\nember time / {name} time = {rows[0][1] / sec:.2f}", end="")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
