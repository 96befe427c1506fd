"""``ember.optim.Adagrad`` with PyTorch's update rule, on the fused CPU kernel."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import _C
from ..autograd.grad_mode import no_grad
from ..tensor import Tensor
from . import _fused
from .optimizer import Optimizer


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``; at step ``t``::

        g = -g if maximize;  g += weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        sum += g * g;  p -= clr * g / (sqrt(sum) + eps)

    State (created at construction, as PyTorch): ``step`` and ``sum`` (filled with
    ``initial_accumulator_value``). One fused kernel call per group; ``foreach``,
    ``differentiable`` and ``fused`` are accepted and ignored.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"[Adagrad] invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"[Adagrad] invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"[Adagrad] invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(
                f"[Adagrad] invalid initial_accumulator_value value: {initial_accumulator_value}"
            )
        if not 0.0 <= eps:
            raise ValueError(f"[Adagrad] invalid epsilon value: {eps}")
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "maximize": maximize,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> None:
        st = self.state[p]
        if not st:
            st["step"] = 0.0
            st["sum"] = _fused.zeros_state(p, float(group["initial_accumulator_value"]))

    def step(self, closure: Callable[[], Any] | None = None):
        """Update every parameter that has a ``.grad``; returns ``closure()``'s loss if given."""
        loss = self._closure_loss(closure)
        with no_grad():
            for group in self.param_groups:
                items = _fused.params_with_grad("Adagrad", group)
                for p, _ in items:
                    self._init_state(p, group)
                for (_, step), its in _fused.buckets(
                    items, lambda p: self.state[p]["step"]
                ).items():
                    ps = [p for p, _ in its]
                    sts = [self.state[p] for p in ps]
                    t = float(step) + 1
                    _C.adagrad_step(
                        _fused.arrays(ps),
                        [g for _, g in its],
                        [s["sum"]._array for s in sts],
                        clr=float(group["lr"]) / (1 + (t - 1) * float(group["lr_decay"])),
                        eps=float(group["eps"]),
                        weight_decay=float(group["weight_decay"]),
                        maximize=bool(group["maximize"]),
                    )
                    for s in sts:
                        s["step"] = t
                    _fused.bump(ps)
        return loss
