"""Reverse-mode automatic differentiation: Function, grad mode, backward, grad, gradcheck."""

from __future__ import annotations

from .function import Function, Node
from .grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from .gradcheck import GradcheckError, gradcheck

FunctionCtx = Node


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False):
    """Accumulate gradients of ``tensors`` (a tensor or a sequence) into the leaves' ``.grad``."""
    from ..tensor import Tensor, _root_grad
    from .engine import run_backward

    if create_graph:
        raise NotImplementedError(
            "[backward] create_graph=True (higher-order gradients) is not supported"
        )
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if grad_tensors is None or isinstance(grad_tensors, Tensor):
        grad_tensors = [grad_tensors] * len(tensors) if grad_tensors is None else [grad_tensors]
    groots = [_root_grad(t, g, "backward") for t, g in zip(tensors, grad_tensors)]
    run_backward(tensors, groots, retain_graph=bool(retain_graph))


def grad(
    outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False
):
    """Return d(outputs)/d(inputs) as a tuple of tensors, without touching ``.grad``."""
    from ..tensor import Tensor, _root_grad
    from .engine import run_backward

    if create_graph:
        raise NotImplementedError(
            "[grad] create_graph=True (higher-order gradients) is not supported"
        )
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"[grad] input {i} does not require grad")
    groots = [_root_grad(t, g, "grad") for t, g in zip(outputs, grad_outputs)]
    res = run_backward(outputs, groots, retain_graph=bool(retain_graph), capture=inputs)
    out = []
    for i, g in enumerate(res):
        if g is None and not allow_unused:
            raise RuntimeError(
                f"[grad] input {i} was not used in the graph (pass allow_unused=True)"
            )
        out.append(None if g is None else Tensor._wrap(g))
    return tuple(out)


__all__ = [
    "Function",
    "FunctionCtx",
    "GradcheckError",
    "backward",
    "enable_grad",
    "grad",
    "gradcheck",
    "inference_mode",
    "is_grad_enabled",
    "no_grad",
    "set_grad_enabled",
]
