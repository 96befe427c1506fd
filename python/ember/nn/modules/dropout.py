"""``Dropout`` and ``Dropout2d``: random zeroing while training, the identity in eval mode."""

from __future__ import annotations

from ...tensor import Tensor
from .. import functional as F
from .module import Module


class _DropoutNd(Module):
    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(
                f"[{type(self).__name__}] dropout probability has to be between 0 and 1, "
                f"but got {p}"
            )
        self.p = p
        self.inplace = inplace

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """In training mode zero each element with probability ``p`` and scale the others by
    1/(1-p) (draws from ember's global generator: ``ember.manual_seed`` repeats them). Any
    shape. In eval mode: the identity. ``inplace`` is accepted and ignored."""

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training)


class Dropout2d(_DropoutNd):
    """In training mode zero whole channels of [N, C, H, W] (or [C, H, W]) with probability
    ``p``, scaling the kept ones by 1/(1-p). In eval mode: the identity."""

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout2d(input, self.p, self.training)
