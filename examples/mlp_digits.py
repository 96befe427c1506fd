"""Train a 64-128-64-10 ReLU MLP on scikit-learn's handwritten digits with ember.

    python examples/mlp_digits.py [--epochs 30] [--batch-size 32] [--lr 0.1] [--seed 0]

This is the project's main job, ``python -m ember``: the code lives in
``python/ember/__main__.py`` (so that it ships with the package) and reads top to bottom as
an example: ``load_digits_split`` (stratified 80/20 split, pixels scaled to [0, 1]),
``make_mlp`` (``nn.Sequential`` of ``nn.Linear`` + ``nn.ReLU``), ``train_epoch`` (forward,
``cross_entropy``, ``zero_grad``, ``backward``, ``SGD.step``) and ``evaluate``. Import those
pieces to build your own loop:

    from ember.__main__ import load_digits_split, make_mlp, train_epoch, evaluate

Needs scikit-learn: ``pip install "ember[examples]"``.
"""

import sys

from ember.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
