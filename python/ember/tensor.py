"""``ember.Tensor``: a numpy (CPU) or cupy (CUDA) array plus autograd bookkeeping.

The array is the storage: ``numpy()``, ``__array__`` and ``__dlpack__`` hand it out without a
copy. ``_version`` is a one-element list shared by a tensor and its views; in-place ops bump it
so that autograd can refuse to use a saved tensor that changed after it was saved.
"""

from __future__ import annotations

import numpy as np

from . import _dtype as D
from ._device import device_of
from .autograd.grad_mode import is_grad_enabled


class Tensor:
    __slots__ = (
        "_array",
        "_version",
        "requires_grad",
        "grad",
        "grad_fn",
        "_output_nr",
        "__weakref__",
    )
    __array_priority__ = 1000  # numpy defers to our reflected operators (ndarray + Tensor)

    def __init__(self, data=None, requires_grad: bool = False):
        """``Tensor(data)``: prefer ``ember.tensor(data)``. Arrays keep their dtype; lists and
        scalars become int64 / the default float dtype, as ``ember.tensor`` does."""
        from .creation import _to_array

        arr = _to_array(() if data is None else data, None, None, "Tensor")
        Tensor._init(self, arr, [0])
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _init(t, arr, version):
        t._array = arr
        t._version = version
        t.requires_grad = False
        t.grad = None
        t.grad_fn = None
        t._output_nr = 0

    @classmethod
    def _wrap(cls, arr, version=None):
        """Fast internal constructor around an array (no copy, no checks)."""
        if isinstance(arr, np.generic):
            arr = np.asarray(arr)
        t = object.__new__(Tensor)
        Tensor._init(t, arr, [0] if version is None else version)
        return t

    def _bump_version(self) -> None:
        self._version[0] += 1

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple:
        return self._array.shape

    @property
    def ndim(self) -> int:
        return self._array.ndim

    @property
    def dtype(self) -> D.dtype:
        return D._FROM_NP[self._array.dtype]

    @property
    def device(self):
        return device_of(self._array)

    @property
    def is_cuda(self) -> bool:
        return not isinstance(self._array, np.ndarray)

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def data(self) -> Tensor:
        """A tensor sharing this one's storage, outside autograd (prefer ``detach()``)."""
        return Tensor._wrap(self._array, self._version)

    @data.setter
    def data(self, value: Tensor) -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"[data] expected a Tensor, got {type(value).__name__}")
        self._array = value._array
        self._bump_version()

    @property
    def T(self) -> Tensor:
        return self.permute(*range(self.ndim - 1, -1, -1))

    @property
    def mT(self) -> Tensor:
        return self.transpose(-2, -1)

    def size(self, dim=None):
        if dim is None:
            return self.shape
        from ._utils import norm_dim

        return self.shape[norm_dim(dim, self.ndim, "size")]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return int(self._array.size)

    nelement = numel

    def element_size(self) -> int:
        return self._array.itemsize

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def is_contiguous(self) -> bool:
        return bool(self._array.flags.c_contiguous)

    def stride(self, dim=None):
        st = tuple(s // self._array.itemsize for s in self._array.strides)
        return st if dim is None else st[dim]

    def get_device(self) -> int:
        return -1 if not self.is_cuda else self.device.index

    # -------------------------------------------------------------- conversions
    def item(self):
        if self.numel() != 1:
            raise ValueError(
                f"[item] only one-element tensors can be converted, got shape {self.shape}"
            )
        return self._array.reshape(-1)[0].item()

    def tolist(self):
        return self._host().tolist()

    def _host(self):
        return self._array if isinstance(self._array, np.ndarray) else self._array.get()

    def numpy(self, force: bool = False) -> np.ndarray:
        """The numpy array behind a CPU tensor (shared memory, no copy)."""
        if self.requires_grad and not force:
            raise RuntimeError(
                "[numpy] can't call numpy() on a tensor that requires grad; use "
                "tensor.detach().numpy()"
            )
        if self.is_cuda:
            if force:
                return self._array.get()
            raise TypeError("[numpy] can't convert a CUDA tensor to numpy; use .cpu() first")
        return self._array

    def __array__(self, dtype=None, copy=None):
        arr = self.numpy()
        if dtype is not None and arr.dtype != dtype:
            return arr.astype(dtype)
        return arr.copy() if copy else arr

    def __dlpack__(self, stream=None, **kwargs):
        if self.requires_grad:
            raise RuntimeError(
                "[__dlpack__] can't export a tensor that requires grad; detach() it first"
            )
        if self.is_cuda:
            return self._array.__dlpack__(stream=stream, **kwargs)
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()

    def to(self, *args, **kwargs) -> Tensor:
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(other)``; keywords too.
        Returns ``self`` when nothing changes (unless ``copy=True``)."""
        from ._device import device as Device
        from ._device import to_device

        dtype, dev = kwargs.pop("dtype", None), kwargs.pop("device", None)
        copy = kwargs.pop("copy", False)
        kwargs.pop("non_blocking", None)
        if kwargs:
            raise TypeError(f"[to] unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, Tensor):
                dtype, dev = a.dtype, a.device
            elif isinstance(a, D.dtype) or a in (float, int, bool) or isinstance(a, np.dtype):
                dtype = a
            elif isinstance(a, (str, Device)):
                dev = a
            else:
                raise TypeError(f"[to] can't interpret argument {a!r}")
        dtype = None if dtype is None else D.to_dtype(dtype)
        dev = None if dev is None else to_device(dev)
        if dev is not None and dev.type == "cuda":
            from ._device import cupy_module

            cupy_module()  # RuntimeError "[cuda] CUDA is not available: ..." when it is not
        same_dtype = dtype is None or dtype is self.dtype
        same_dev = dev is None or dev == self.device
        if same_dtype and same_dev and not copy:
            return self
        from ._ops.convert import to_copy

        return to_copy(self, None if same_dtype else dtype, None if same_dev else dev, copy)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, device=None) -> Tensor:
        return self.to(
            "cuda" if device is None else (f"cuda:{device}" if isinstance(device, int) else device)
        )

    def type(self, dtype=None):
        if dtype is None:
            return f"ember.{self.dtype.name}"
        return self.to(dtype)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    def float(self) -> Tensor:
        return self.to(D.float32)

    def double(self) -> Tensor:
        return self.to(D.float64)

    def half(self) -> Tensor:
        return self.to(D.float16)

    def long(self) -> Tensor:
        return self.to(D.int64)

    def int(self) -> Tensor:
        return self.to(D.int32)

    def bool(self) -> Tensor:
        return self.to(D.bool_)

    # ---------------------------------------------------------------- autograd
    def detach(self) -> Tensor:
        return Tensor._wrap(self._array, self._version)

    def detach_(self) -> Tensor:
        self.grad_fn = None
        self.requires_grad = False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and not self.dtype.is_floating_point:
            raise RuntimeError(
                "[requires_grad_] only floating point tensors can require gradients, "
                f"got {self.dtype}"
            )
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError(
                "[requires_grad_] can't turn off requires_grad of a non-leaf tensor; use detach()"
            )
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` for this non-leaf tensor in the next backward."""
        import weakref

        if self.grad_fn is None:
            return
        node = self.grad_fn
        if node._retained is None:
            node._retained = {}
        node._retained[self._output_nr] = weakref.ref(self)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None) -> None:
        """Accumulate d(self)/d(leaf) into each leaf's ``.grad`` (``gradient`` needed unless
        self has one element)."""
        from .autograd import backward

        if inputs is not None:
            raise NotImplementedError(
                "[backward] inputs= is not supported; use ember.autograd.grad"
            )
        backward(self, gradient, retain_graph, create_graph)

    # ------------------------------------------------------------------ dunder
    def __repr__(self) -> str:
        arr = self._host()
        prefix = "tensor("
        if arr.size == 0:
            body = f"[], size={arr.shape}" if arr.ndim > 1 else "[]"
        else:
            body = np.array2string(
                arr,
                separator=", ",
                prefix=prefix,
                threshold=1000,
                edgeitems=3,
                precision=4,
                floatmode="fixed",
            )
        extras = []
        if self.is_cuda:
            extras.append(f"device='{self.device}'")
        if self.dtype not in (D.float32, D.int64, D.bool_):
            extras.append(f"dtype={self.dtype!r}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return prefix + body + "".join(", " + e for e in extras) + ")"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        if self.numel() == 1 and spec:
            return format(self.item(), spec)
        return repr(self)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("[len] len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("[iter] iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise RuntimeError(
                f"[bool] the truth value of a tensor with {self.numel()} elements is ambiguous"
            )
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.is_floating_point or self.numel() != 1:
            raise TypeError(
                "[index] only integer tensors of a single element can be converted to an index"
            )
        return int(self.item())

    __hash__ = object.__hash__

    def __getitem__(self, idx):
        return _ops.getitem(self, idx)

    def __setitem__(self, idx, value):
        _ops.setitem(self, idx, value)

    # arithmetic (reflected forms swap the operands)
    def __add__(self, o):
        return _ops.add(self, o)

    def __radd__(self, o):
        return _ops.add(o, self)

    def __sub__(self, o):
        return _ops.sub(self, o)

    def __rsub__(self, o):
        return _ops.sub(o, self)

    def __mul__(self, o):
        return _ops.mul(self, o)

    def __rmul__(self, o):
        return _ops.mul(o, self)

    def __truediv__(self, o):
        return _ops.div(self, o)

    def __rtruediv__(self, o):
        return _ops.div(o, self)

    def __floordiv__(self, o):
        return _ops.floor_divide(self, o)

    def __rfloordiv__(self, o):
        return _ops.floor_divide(o, self)

    def __mod__(self, o):
        return _ops.remainder(self, o)

    def __pow__(self, o):
        return _ops.pow(self, o)

    def __rpow__(self, o):
        return _ops.pow(o, self)

    def __matmul__(self, o):
        return _ops.matmul(self, o)

    def __rmatmul__(self, o):
        from .creation import tensor

        return _ops.matmul(tensor(o) if not isinstance(o, Tensor) else o, self)

    def __neg__(self):
        return _ops.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops.abs(self)

    def __invert__(self):
        if self.dtype is D.bool_:
            return _ops.logical_not(self)
        return _ops.bitwise_not(self)

    def __and__(self, o):
        return _ops.bitwise_and(self, o)

    def __or__(self, o):
        return _ops.bitwise_or(self, o)

    def __xor__(self, o):
        return _ops.bitwise_xor(self, o)

    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def __eq__(self, o):
        return _ops.eq(self, o)

    def __ne__(self, o):
        return _ops.ne(self, o)

    def __lt__(self, o):
        return _ops.lt(self, o)

    def __le__(self, o):
        return _ops.le(self, o)

    def __gt__(self, o):
        return _ops.gt(self, o)

    def __ge__(self, o):
        return _ops.ge(self, o)

    # Augmented assignment: in place when autograd is not involved; when it is (PyTorch would
    # record an in-place op), ember computes out of place and rebinds the name instead, which
    # gives the same result for the usual `x += residual` in model code.
    def _inplace_or_new(self, o, inplace, outofplace):
        if is_grad_enabled() and (
            self.requires_grad or (isinstance(o, Tensor) and o.requires_grad)
        ):
            return outofplace(self, o)
        return inplace(o)

    def __iadd__(self, o):
        return self._inplace_or_new(o, self.add_, _ops.add)

    def __isub__(self, o):
        return self._inplace_or_new(o, self.sub_, _ops.sub)

    def __imul__(self, o):
        return self._inplace_or_new(o, self.mul_, _ops.mul)

    def __itruediv__(self, o):
        return self._inplace_or_new(o, self.div_, _ops.div)

    # -------------------------------------------------------------- in-place ops
    def _check_inplace(self, op):
        if is_grad_enabled() and self.requires_grad:
            kind = "a leaf tensor" if self.grad_fn is None else "a tensor in the graph"
            raise RuntimeError(
                f"[{op}] in-place operation on {kind} that requires grad; wrap it in "
                "ember.no_grad() (e.g. for parameter updates)"
            )
        if hasattr(self._array, "flags") and not self._array.flags.writeable:
            raise ValueError(
                f"[{op}] the tensor is read-only (an expanded view?); clone() it first"
            )

    def _inplace(self, op, fn, other=None):
        from ._ops._common import as_operand, broadcast_shape, check_device, shape_of

        self._check_inplace(op)
        if other is not None:
            other = as_operand(other, op)
            check_device(op, self, other)
            if broadcast_shape(op, self.shape, shape_of(other)) != self.shape:
                raise ValueError(
                    f"[{op}] shape {shape_of(other)} can't be broadcast into {self.shape}"
                )
            other = other._array if isinstance(other, Tensor) else other
        try:
            fn(self._array, other)
        except TypeError as e:  # numpy's UFuncTypeError (a casting failure) is a TypeError
            raise TypeError(f"[{op}] {e}") from None
        self._bump_version()
        return self

    def add_(self, other, *, alpha=1):
        def f(a, b):
            xp = _xp(a)
            xp.add(a, b if alpha == 1 else alpha * b, out=a, casting="same_kind")

        return self._inplace("add_", f, other)

    def sub_(self, other, *, alpha=1):
        def f(a, b):
            _xp(a).subtract(a, b if alpha == 1 else alpha * b, out=a, casting="same_kind")

        return self._inplace("sub_", f, other)

    def mul_(self, other):
        return self._inplace(
            "mul_", lambda a, b: _xp(a).multiply(a, b, out=a, casting="same_kind"), other
        )

    def div_(self, other):
        return self._inplace(
            "div_", lambda a, b: _xp(a).true_divide(a, b, out=a, casting="same_kind"), other
        )

    def pow_(self, other):
        return self._inplace(
            "pow_", lambda a, b: _xp(a).power(a, b, out=a, casting="same_kind"), other
        )

    def clamp_(self, min=None, max=None):  # noqa: A002
        def f(a, _):
            if min is not None:
                _xp(a).maximum(a, min, out=a, casting="same_kind")
            if max is not None:
                _xp(a).minimum(a, max, out=a, casting="same_kind")

        return self._inplace("clamp_", f)

    def zero_(self):
        return self._inplace("zero_", lambda a, _: a.fill(0))

    def fill_(self, value):
        v = value.item() if isinstance(value, Tensor) else value
        return self._inplace("fill_", lambda a, _: a.fill(v))

    def copy_(self, src):
        """Copy ``src`` (broadcast, cast, and moved across devices as needed) into self."""
        if not isinstance(src, Tensor):
            from .creation import tensor

            src = tensor(src)
        self._check_inplace("copy_")
        from ._ops._common import broadcast_shape

        if broadcast_shape("copy_", self.shape, src.shape) != self.shape:
            raise ValueError(f"[copy_] shape {src.shape} can't be broadcast into {self.shape}")
        from ._device import move

        s = move(src._array, self.device)
        _xp(self._array).copyto(self._array, s.astype(self._array.dtype, copy=False))
        self._bump_version()
        return self

    def uniform_(self, a: float = 0.0, b: float = 1.0):
        from .random import _uniform

        return self.copy_(Tensor._wrap(_uniform(self.shape, a, b, self._array.dtype, self.device)))

    def normal_(self, mean: float = 0.0, std: float = 1.0):
        from .random import _normal

        return self.copy_(
            Tensor._wrap(_normal(self.shape, mean, std, self._array.dtype, self.device))
        )


def _xp(a):
    from ._device import xp_of

    return xp_of(a)


def _zero_grads(params, set_to_none: bool) -> None:
    """``zero_grad`` for Module and Optimizer: drop each ``.grad``, or zero it in place (as a
    plain tensor outside any graph) when ``set_to_none`` is False."""
    for p in params:
        if p.grad is None:
            continue
        if set_to_none:
            p.grad = None
        else:
            p.grad.grad_fn = None
            p.grad.requires_grad = False
            p.grad.zero_()


def _root_grad(t, g, op):
    """The seed gradient of a backward root, as an array."""
    if not isinstance(t, Tensor):
        raise TypeError(f"[{op}] expected Tensors, got {type(t).__name__}")
    if not t.requires_grad:
        raise RuntimeError(f"[{op}] the tensor does not require grad and has no grad_fn")
    if g is None:
        if t.numel() != 1:
            raise RuntimeError(
                f"[{op}] grad can be implicitly created only for scalar outputs (shape {t.shape}); "
                "pass gradient=..."
            )
        return _xp(t._array).ones(t.shape, t._array.dtype)
    if not isinstance(g, Tensor):
        from .creation import tensor

        g = tensor(g)
    if g.shape != t.shape:
        raise ValueError(f"[{op}] gradient has shape {g.shape} but the tensor has shape {t.shape}")
    if g.device != t.device:
        raise RuntimeError(f"[{op}] gradient is on {g.device} but the tensor is on {t.device}")
    return g._array.astype(t._array.dtype, copy=False)


from . import _ops  # noqa: E402  (the ops import Tensor from this module)
