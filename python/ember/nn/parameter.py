"""``ember.nn.Parameter``: a tensor that a Module registers as one of its parameters."""

from __future__ import annotations

from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that requires grad (by default) and that Modules register on assignment.

    ``Parameter(data)`` shares ``data``'s array (and version counter): no copy is made, as in
    PyTorch. ``Parameter()`` is an empty float tensor of shape ``(0,)``.
    """

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            from ..creation import empty

            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"[Parameter] expected a Tensor, got {type(data).__name__}")
        Tensor._init(self, data._array, data._version)
        if requires_grad:
            self.requires_grad_(True)  # RuntimeError for integer tensors, as in PyTorch

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    __str__ = __repr__

    def __reduce_ex__(self, protocol):
        return (_rebuild_parameter, (self.detach(), self.requires_grad))

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        p = Parameter(Tensor._wrap(self._array.copy()), self.requires_grad)
        if self.grad is not None:
            p.grad = Tensor._wrap(self.grad._array.copy())
        memo[id(self)] = p
        return p


def _rebuild_parameter(data: Tensor, requires_grad: bool) -> Parameter:
    return Parameter(data, requires_grad)
