"""``ember.optim.SGD``: stochastic gradient descent with momentum, dampening, Nesterov
momentum, weight decay and maximize, with PyTorch's exact update rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import _C
from .._device import xp_of
from ..autograd.grad_mode import no_grad
from ..tensor import Tensor
from . import _fused
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

    CPU parameters are updated in place by one fused kernel call per group and dtype
    (``_C.sgd_step``: one pass over param, grad and momentum buffer); a parameter whose array
    is not C-contiguous, writeable float32/float64 raises instead of being silently copied.
    CUDA parameters use the array-level ``sgd_update_``. ``state[p]["momentum_buffer"]`` is
    kept when ``momentum != 0``. ``foreach`` and ``fused`` are accepted for PyTorch
    compatibility and ignored (the CPU path is always fused).
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
                cpu = [p for p in group["params"] if isinstance(p._array, np.ndarray)]
                if cpu:
                    self._step_fused({**group, "params": cpu})
                other = [p for p in group["params"] if not isinstance(p._array, np.ndarray)]
                if other:
                    self._step_arrays({**group, "params": other})
        return loss

    def _step_fused(self, group: dict[str, Any]) -> None:
        """One ``_C.sgd_step`` per (dtype, first step or not) bucket of the group."""
        momentum = group["momentum"]
        items = _fused.params_with_grad("SGD", group)
        first = lambda p: momentum != 0 and "momentum_buffer" not in self.state[p]  # noqa: E731
        for (_, is_first), its in _fused.buckets(items, first).items():
            ps = [p for p, _ in its]
            bufs = None
            if momentum != 0:  # first step: fresh buffers the kernel sets to the gradient
                bufs = [
                    np.empty_like(p._array) if is_first else self.state[p]["momentum_buffer"]._array
                    for p in ps
                ]
            _C.sgd_step(
                _fused.arrays(ps),
                [g for _, g in its],
                bufs,
                lr=float(group["lr"]),
                momentum=float(momentum),
                dampening=float(group["dampening"]),
                weight_decay=float(group["weight_decay"]),
                nesterov=bool(group["nesterov"]),
                maximize=bool(group["maximize"]),
                first=bool(is_first),
            )
            if momentum != 0 and is_first:
                for p, b in zip(ps, bufs):
                    self.state[p]["momentum_buffer"] = Tensor._wrap(b)
            _fused.bump(ps)

    def _step_arrays(self, group: dict[str, Any]) -> None:
        """Array-level update (CUDA parameters), one parameter at a time."""
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
                if "momentum_buffer" not in state or state["momentum_buffer"]._array is not buf:
                    state["momentum_buffer"] = Tensor._wrap(buf)
            elif not state:
                del self.state[p]  # PyTorch keeps no state without momentum
