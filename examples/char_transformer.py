"""A character-level Transformer language model trained with ember on Python's own standard
library source (always on disk, so it runs offline).

    python examples/char_transformer.py [--epochs 4] [--batch-size 32] [--lr 1e-3]
        [--chars 1000000] [--context 128] [--d-model 128] [--layers 2] [--heads 4]
        [--checkpoint lm.ckpt [--resume]] [--patience 2]

The corpus is the first ``--chars`` characters of the sorted ``*.py`` files next to ``os.py``
(non-ASCII characters become ``?``); 90 % trains, the last 10 % validates. The model is a
token + learned position embedding, a stack of pre-norm causal ``nn.TransformerEncoderLayer``
blocks on the fused attention kernel, a final ``LayerNorm`` and a linear head. It reports
the validation loss in bits per character, stops early when it stops improving, saves a
checkpoint after every epoch, and prints a sample continuation at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from _train import add_common_args, fit

import ember
from ember import nn
from ember.tensor import Tensor
from ember.utils.data import DataLoader, Dataset


def load_corpus(n_chars: int) -> str:
    """The first n_chars characters of the standard library's sorted *.py files, ASCII only."""
    parts, total = [], 0
    for path in sorted(Path(os.__file__).parent.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if total >= n_chars:
            break
    text = "".join(parts)[:n_chars]
    return "".join(c if c == "\n" or 32 <= ord(c) < 127 else "?" for c in text)


class CharWindows(Dataset):
    """Non-overlapping windows of ``context`` characters: sample i is (codes[i*T : i*T+T],
    codes[i*T+1 : i*T+T+1]) — the input and the next character at every position."""

    def __init__(self, codes: np.ndarray, context: int) -> None:
        self.codes = codes
        self.context = context
        self.n = (len(codes) - 1) // context

    def __len__(self) -> int:
        return self.n

    def get_batch(self, indices: np.ndarray) -> list[Tensor]:
        starts = np.asarray(indices, dtype=np.int64)[:, None] * self.context
        pos = starts + np.arange(self.context)
        return [Tensor._wrap(self.codes[pos]), Tensor._wrap(self.codes[pos + 1])]

    def __getitem__(self, i: int):
        x, y = self.get_batch(np.array([i]))
        return x[0], y[0]


class CharTransformer(nn.Module):
    def __init__(
        self, vocab: int, context: int, d_model: int, heads: int, layers: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        block = nn.TransformerEncoderLayer(
            d_model,
            heads,
            4 * d_model,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, layers)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, idx: Tensor) -> Tensor:
        """idx int64 [B, T] -> next-character logits [B, T, vocab]."""
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(ember.arange(t))
        x = self.blocks(x, is_causal=True)
        return self.head(self.norm(x))


def lm_loss(model, batch):
    x, y = batch
    logits = model(x)
    v = logits.shape[-1]
    loss = nn.functional.cross_entropy(logits.reshape(-1, v), y.reshape(-1))
    correct = int((logits.detach().argmax(-1) == y).sum().item())
    return loss, correct, y.numel()


def bits_per_char(model, loader, max_steps=None):
    """(mean loss in nats, bits per character) over ``loader``."""
    model.eval()
    total, n = 0.0, 0
    with ember.no_grad():
        for step, (x, y) in enumerate(loader):
            if max_steps is not None and step >= max_steps:
                break
            logits = model(x)
            v = logits.shape[-1]
            total += nn.functional.cross_entropy(
                logits.reshape(-1, v), y.reshape(-1), reduction="sum"
            ).item()
            n += y.numel()
    nats = total / max(n, 1)
    return nats, nats / math.log(2)


def sample(model, stoi, itos, prompt: str, n: int, context: int, temperature: float, seed: int):
    """Continue ``prompt`` by n characters, sampling from the model's softmax."""
    rng = np.random.default_rng(seed)
    codes = [stoi.get(c, stoi["?"]) for c in prompt]
    model.eval()
    with ember.no_grad():
        for _ in range(n):
            x = ember.tensor(np.array([codes[-context:]], dtype=np.int64))
            logits = model(x)[0, -1].numpy().astype(np.float64) / temperature
            p = np.exp(logits - logits.max())
            codes.append(int(rng.choice(len(p), p=p / p.sum())))
    return "".join(itos[c] for c in codes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, epochs=4, batch_size=32, lr=1e-3)
    parser.add_argument("--chars", type=int, default=1_000_000, help="corpus size")
    parser.add_argument("--context", type=int, default=128, help="characters per window")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.set_defaults(patience=2)
    args = parser.parse_args(argv)
    if args.threads:
        ember.set_num_threads(args.threads)
    ember.manual_seed(args.seed)

    text = load_corpus(args.chars)
    itos = sorted(set(text) | {"?"})
    stoi = {c: i for i, c in enumerate(itos)}
    codes = np.array([stoi[c] for c in text], dtype=np.int64)
    split = int(0.9 * len(codes))
    train_ds = CharWindows(codes[:split], args.context)
    val_ds = CharWindows(codes[split:], args.context)
    gen = ember.Generator(args.seed)
    train = DataLoader(
        train_ds, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=gen
    )
    val = DataLoader(val_ds, batch_size=64)

    model = CharTransformer(len(itos), args.context, args.d_model, args.heads, args.layers)
    opt = ember.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"corpus: {len(text)} characters, vocabulary {len(itos)}; {len(train_ds)} training "
        f"windows of {args.context}; model with {n_params} parameters"
    )
    t0 = time.perf_counter()
    result = fit(
        model, opt, train, val, lm_loss, args, evaluate=bits_per_char, higher_is_better=False
    )
    print(
        f"best validation: {result['best']:.3f} bits/char  (total {time.perf_counter() - t0:.1f} s)"
    )
    print("sample:\n" + sample(model, stoi, itos, "def ", 200, args.context, 0.8, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
