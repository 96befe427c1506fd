"""``ember.optim.SGD``: stochastic gradient descent with momentum, dampening, Nesterov
momentum, weight decay and maximize, with PyTorch's exact update rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._device import xp_of
from ..autograd.grad_mode import no_grad
from ..tensor import Tensor
from .optimizer import Optimizer


def sgd_update_(
    param,
    grad,
    momentum_buffer,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
):
    """One SGD step on arrays, in place on ``param`` (and ``momentum_buffer``).

    PyTorch's rule (torch.optim.SGD)::

        g = -grad if maximize else grad
        g = g + weight_decay * param                  (if weight_decay != 0)
        if momentum != 0:
            buf = g (first step)  or  buf = momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        param -= lr * g

    param, grad, momentum_buffer: arrays of one shape and dtype (numpy or cupy); the buffer
    is None before the first step. Returns the momentum buffer (None without momentum).
    ``grad`` is never written.
    """
    xp = xp_of(param)
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * param
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = g.copy() if g is grad else g
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * g
        g = g + momentum * momentum_buffer if nesterov else momentum_buffer
    xp.subtract(param, lr * g, out=param, casting="same_kind")
    return momentum_buffer if momentum != 0 else None


class SGD(Optimizer):
    """Stochastic gradient descent (optionally with momentum), as ``torch.optim.SGD``.

    Parameters are updated in place under ``no_grad`` (the arrays of the Parameters change,
    the objects stay). ``state[p]["momentum_buffer"]`` is kept when ``momentum != 0``.
    ``foreach`` and ``fused`` are accepted for PyTorch compatibility and ignored.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"[SGD] invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"[SGD] invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"[SGD] invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("[SGD] Nesterov momentum requires a momentum and zero dampening")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None):
        """Update every parameter that has a ``.grad``; returns ``closure()``'s loss if given
        (the closure re-evaluates the model with grad enabled)."""
        loss = self._closure_loss(closure)
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    buf = sgd_update_(
                        p._array,
                        p.grad._array,
                        None if buf is None else buf._array,
                        lr=group["lr"],
                        momentum=group["momentum"],
                        dampening=group["dampening"],
                        weight_decay=group["weight_decay"],
                        nesterov=group["nesterov"],
                        maximize=group["maximize"],
                    )
                    p._bump_version()
                    if buf is not None:
                        if (
                            "momentum_buffer" not in state
                            or state["momentum_buffer"]._array is not buf
                        ):
                            state["momentum_buffer"] = Tensor._wrap(buf)
                    elif not state:
                        del self.state[p]  # PyTorch keeps no state without momentum
        return loss
