"""``ember.autograd.Function``: the one way an op enters the graph.

Every built-in op is a Function subclass with static ``forward(ctx, *args)`` and
``backward(ctx, *grad_outputs)``, exactly as in PyTorch. ``Function.apply`` runs forward with
grad mode off and, when any tensor input requires grad, makes ``ctx`` the graph node of the
outputs: ``ctx`` remembers the input tensors (the edges) and the saved tensors.

Saved tensors keep the array and the version counter of the tensor they came from, not the
tensor itself: no reference cycles between an output and its node, and an in-place change
after saving is detected when backward reads them.
"""

from __future__ import annotations

from .grad_mode import is_grad_enabled, no_grad


class _Saved:
    __slots__ = ("array", "version", "expected")

    def __init__(self, t):
        self.array = t._array
        self.version = t._version
        self.expected = t._version[0]


class Node:
    """The ``ctx`` of a Function call, and the graph node of its outputs."""

    def __init__(self, fn_cls):
        self._fn = fn_cls
        self._saved = ()
        self._freed = False
        self._inputs = ()  # per positional arg: the input Tensor if it requires grad, else None
        self._out_meta = ()  # per output: (shape, numpy dtype, array module) to make zero grads
        self._retained = None  # output_nr -> weakref of tensors that called retain_grad()
        self.needs_input_grad = ()
        self.materialize_grads = True

    @property
    def name(self) -> str:
        return self._fn.__name__ + "Backward"

    def __repr__(self) -> str:
        return f"<{self.name}>"

    def save_for_backward(self, *tensors) -> None:
        self._saved = tuple(None if t is None else _Saved(t) for t in tensors)

    @property
    def saved_tensors(self) -> tuple:
        from ..tensor import Tensor

        if self._freed:
            raise RuntimeError(_FREED_MSG.format(self.name))
        out = []
        for i, s in enumerate(self._saved):
            if s is None:
                out.append(None)
                continue
            if s.version[0] != s.expected:
                raise RuntimeError(
                    f"[{self.name}] saved tensor {i} was modified by an in-place operation "
                    f"(version {s.version[0]}, expected {s.expected}); gradients would be wrong"
                )
            out.append(Tensor._wrap(s.array, s.version))
        return tuple(out)

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = bool(value)

    def mark_non_differentiable(self, *tensors) -> None:
        self._non_diff = {id(t) for t in tensors}

    def _release(self) -> None:
        """Free what backward needed (called after a backward without retain_graph)."""
        self._saved = ()
        self._freed = True
        for k in [k for k in self.__dict__ if not k.startswith("_") and k != "needs_input_grad"]:
            del self.__dict__[k]


_FREED_MSG = (
    "[{}] trying to backward through the graph a second time (or to read saved tensors after "
    "they were freed). Pass retain_graph=True to the first backward() to keep the graph."
)


class Function:
    """Base class of differentiable operations (``forward``/``backward`` static methods)."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("[Function] subclasses implement forward(ctx, ...)")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("[Function] subclasses implement backward(ctx, ...)")

    @classmethod
    def apply(cls, *args, **kwargs):
        from ..tensor import Tensor

        ctx = Node(cls)
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        record = any(needs) and is_grad_enabled()
        ctx.needs_input_grad = needs if record else tuple(False for _ in args)
        with no_grad():
            result = cls.forward(ctx, *args, **kwargs)

        single = not isinstance(result, tuple)
        outs = (result,) if single else result
        wrapped = []
        for o in outs:
            if o is None or isinstance(o, (int, float, bool)):
                wrapped.append(o)
                continue
            if not isinstance(o, Tensor):
                o = Tensor._wrap(o)
            elif any(o is a for a in args):
                # An output must be a new tensor: giving an input a grad_fn would cut the graph.
                o = Tensor._wrap(o._array, o._version)
            wrapped.append(o)

        if record:
            ctx._inputs = tuple(a if n else None for a, n in zip(args, needs))
            non_diff = getattr(ctx, "_non_diff", ())
            meta = []
            for i, o in enumerate(wrapped):
                if isinstance(o, Tensor) and o.dtype.is_floating_point and id(o) not in non_diff:
                    o.grad_fn = ctx
                    o._output_nr = i
                    o.requires_grad = True
                    meta.append((o._array.shape, o._array.dtype, o._array))
                else:
                    meta.append(None)
            # keep only shape/dtype and the array's module, not the output array itself
            ctx._out_meta = tuple(None if m is None else (m[0], m[1], type(m[2])) for m in meta)
        else:
            ctx._freed = True  # nothing will ever read it: drop references now
            ctx._saved = ()
        return wrapped[0] if single else tuple(wrapped)
