"""``ember.optim.Adam`` and ``AdamW`` with PyTorch's update rule, on the fused CPU kernel."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import _C
from ..tensor import Tensor
from . import _fused
from .optimizer import Optimizer


def _check_common(name: str, lr: float, eps: float, betas, weight_decay: float) -> None:
    if not 0.0 <= lr:
        raise ValueError(f"[{name}] invalid learning rate: {lr}")
    if not 0.0 <= eps:
        raise ValueError(f"[{name}] invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"[{name}] invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"[{name}] invalid beta parameter at index 1: {betas[1]}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"[{name}] invalid weight_decay value: {weight_decay}")


class Adam(Optimizer):
    """Adam (Kingma & Ba), as ``torch.optim.Adam``; ``decoupled_weight_decay=True`` is AdamW.

    Per parameter with gradient ``g`` at step ``t`` (PyTorch's rule, eps outside the root)::

        g = -g if maximize;  Adam: g += weight_decay * p;  AdamW: p *= 1 - lr * weight_decay
        m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v) (amsgrad, used instead of v below)
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    State per parameter: ``step`` (a float, as PyTorch's scalar step), ``exp_avg``,
    ``exp_avg_sq`` and ``max_exp_avg_sq`` (amsgrad). CPU float32/float64 parameters are updated
    in place by one fused kernel call per group (one pass over param, grad and state);
    ``foreach``, ``fused``, ``capturable`` and ``differentiable`` are accepted and ignored.
    """

    _name = "Adam"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        _check_common(self._name, lr, eps, betas, weight_decay)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _step_group(self, group: dict[str, Any]) -> None:
        items = _fused.params_with_grad(self._name, group)
        amsgrad = bool(group["amsgrad"])
        for p, _ in items:
            st = self.state[p]
            if not st:
                st["step"] = 0.0
                st["exp_avg"] = _fused.zeros_state(p)
                st["exp_avg_sq"] = _fused.zeros_state(p)
                if amsgrad:
                    st["max_exp_avg_sq"] = _fused.zeros_state(p)
            elif amsgrad and "max_exp_avg_sq" not in st:
                st["max_exp_avg_sq"] = _fused.zeros_state(p)
        beta1, beta2 = group["betas"]
        for (_, step), its in _fused.buckets(items, lambda p: self.state[p]["step"]).items():
            ps = [p for p, _ in its]
            sts = [self.state[p] for p in ps]
            t = float(step) + 1
            _C.adam_step(
                _fused.arrays(ps),
                [g for _, g in its],
                [s["exp_avg"]._array for s in sts],
                [s["exp_avg_sq"]._array for s in sts],
                [s["max_exp_avg_sq"]._array for s in sts] if amsgrad else None,
                lr=float(group["lr"]),
                beta1=float(beta1),
                beta2=float(beta2),
                eps=float(group["eps"]),
                weight_decay=float(group["weight_decay"]),
                bias_correction1=1 - float(beta1) ** t,
                bias_correction2=1 - float(beta2) ** t,
                decoupled=bool(group["decoupled_weight_decay"]),
                amsgrad=amsgrad,
                maximize=bool(group["maximize"]),
            )
            for s in sts:
                s["step"] = t
            _fused.bump(ps)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter), as ``torch.optim.AdamW``: Adam with decoupled weight decay
    ``p *= 1 - lr * weight_decay`` (default ``weight_decay=1e-2``) before the Adam update."""

    _name = "AdamW"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
        )
