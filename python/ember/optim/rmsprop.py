"""``ember.optim.RMSprop`` with PyTorch's update rule, on the fused CPU kernel."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import _C
from ..tensor import Tensor
from . import _fused
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``::

        g = -g if maximize;  g += weight_decay * p
        sq = alpha * sq + (1 - alpha) * g * g
        centered: ga = alpha * ga + (1 - alpha) * g;  avg = sqrt(sq - ga * ga) + eps
        else:     avg = sqrt(sq) + eps
        momentum > 0: buf = momentum * buf + g / avg;  p -= lr * buf
        else:         p -= lr * g / avg

    State: ``step``, ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg``
    (centered). One fused kernel call per group; ``foreach``, ``capturable`` and
    ``differentiable`` are accepted and ignored.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"[RMSprop] invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"[RMSprop] invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"[RMSprop] invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"[RMSprop] invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"[RMSprop] invalid alpha value: {alpha}")
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _step_group(self, group: dict[str, Any]) -> None:
        items = _fused.params_with_grad("RMSprop", group)
        momentum, centered = float(group["momentum"]), bool(group["centered"])
        for p, _ in items:
            st = self.state[p]
            if not st:
                st["step"] = 0.0
                st["square_avg"] = _fused.zeros_state(p)
            if momentum > 0 and "momentum_buffer" not in st:
                st["momentum_buffer"] = _fused.zeros_state(p)
            if centered and "grad_avg" not in st:
                st["grad_avg"] = _fused.zeros_state(p)
        for _, its in _fused.buckets(items, lambda p: None).items():
            ps = [p for p, _ in its]
            sts = [self.state[p] for p in ps]
            _C.rmsprop_step(
                _fused.arrays(ps),
                [g for _, g in its],
                [s["square_avg"]._array for s in sts],
                [s["grad_avg"]._array for s in sts] if centered else None,
                [s["momentum_buffer"]._array for s in sts] if momentum > 0 else None,
                lr=float(group["lr"]),
                alpha=float(group["alpha"]),
                eps=float(group["eps"]),
                weight_decay=float(group["weight_decay"]),
                momentum=momentum,
                centered=centered,
                maximize=bool(group["maximize"]),
            )
            for s in sts:
                s["step"] += 1
            _fused.bump(ps)
