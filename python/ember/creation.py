"""Tensor creation: ``tensor``, ``as_tensor``, ``from_numpy``, ``zeros``/``ones``/``full``/
``empty``/``arange``/``linspace``/``eye``, the random ones, and the ``*_like`` forms."""

from __future__ import annotations

import numpy as np

from . import _dtype as D
from . import random as R
from ._device import device_of, move, to_device
from ._utils import size_args
from .tensor import Tensor


def _to_array(data, dtype, device, op, copy=True):
    """Any array-like -> an array of a supported dtype on the requested device."""
    dt = None if dtype is None else D.to_dtype(dtype)
    if isinstance(data, Tensor):
        arr = data._array
    elif isinstance(data, np.ndarray) or hasattr(data, "__cuda_array_interface__"):
        arr = data
    elif isinstance(data, np.generic):  # a numpy scalar keeps its dtype, as a 0-d array would
        arr = np.asarray(data)
    else:
        try:
            arr = np.asarray(data)
        except ValueError as e:
            raise ValueError(f"[{op}] can't build a tensor from this data: {e}") from None
        if arr.dtype == object:
            raise ValueError(f"[{op}] can't build a tensor from ragged or non-numeric data")
        if dt is None:
            # Python numbers follow PyTorch: floats -> the default dtype, ints -> int64
            if arr.dtype.kind == "f":
                arr = arr.astype(D.np_dtype(D.get_default_dtype()))
            elif arr.dtype.kind in "iu":
                arr = arr.astype(np.int64)
    if dt is not None:
        nd = D.np_dtype(dt)
        if arr.dtype != nd:
            arr, copy = arr.astype(nd), False
    elif arr.dtype not in D._FROM_NP:
        raise TypeError(f"[{op}] numpy dtype {arr.dtype} is not supported by ember")
    dev = to_device(device) if device is not None else device_of(arr)
    if dev != device_of(arr):
        if dev.type == "cuda":
            from ._device import cupy_module

            cupy_module()
        arr, copy = move(arr, dev), False
    if copy and (
        isinstance(data, (Tensor, np.ndarray)) or hasattr(data, "__cuda_array_interface__")
    ):
        arr = arr.copy()
    return arr


def _finish(arr, requires_grad):
    t = Tensor._wrap(arr)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (nested lists, scalars, arrays, tensors).

    Python floats give ``float32`` (the default dtype), ints ``int64``, bools ``bool``; numpy
    arrays keep their dtype (as PyTorch)."""
    return _finish(_to_array(data, dtype, device, "tensor"), requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like ``tensor`` but shares memory with an array of the right dtype and device."""
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    return Tensor._wrap(_to_array(data, dtype, device, "as_tensor", copy=False))


def from_numpy(ndarray: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with ``ndarray`` (writes show in both)."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"[from_numpy] expected a numpy.ndarray, got {type(ndarray).__name__}")
    return Tensor._wrap(_to_array(ndarray, None, None, "from_numpy", copy=False))


def _xp_for(dev):
    if dev.type == "cpu":
        return np
    from ._device import cupy_module

    return cupy_module()


def _filled(op, size, fill, dtype, device, requires_grad):
    shape = size_args(size, op)
    dt = D.get_default_dtype() if dtype is None else D.to_dtype(dtype)
    dev = to_device(device)
    xp = _xp_for(dev)
    nd = D.np_dtype(dt)
    if dev.type == "cuda":
        with xp.cuda.Device(dev.index):
            arr = xp.empty(shape, nd) if fill is None else xp.full(shape, fill, nd)
    else:
        arr = np.empty(shape, nd) if fill is None else np.full(shape, fill, nd)
    return _finish(arr, requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled("zeros", size, 0, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled("ones", size, 1, dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled("empty", size, None, dtype, device, requires_grad)


def _scalar_dtype(v):
    if isinstance(v, bool):
        return D.bool_
    if isinstance(v, int):
        return D.int64
    return D.get_default_dtype()


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if dtype is None:
        dtype = _scalar_dtype(fill_value)
    return _filled(
        "full",
        (size,) if isinstance(size, int) else (tuple(size),),
        fill_value,
        dtype,
        device,
        requires_grad,
    )


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("[arange] step must be nonzero")
    vals = [v.item() if isinstance(v, Tensor) else v for v in (start, end, step)]
    if dtype is None:
        dtype = D.int64 if all(isinstance(v, int) for v in vals) else D.get_default_dtype()
    arr = np.arange(*vals, dtype=D.np_dtype(D.to_dtype(dtype)))
    return _finish(_to_array(arr, None, device, "arange", copy=False), requires_grad)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    if steps < 0:
        raise ValueError(f"[linspace] number of steps must be non-negative, got {steps}")
    dt = D.get_default_dtype() if dtype is None else D.to_dtype(dtype)
    arr = np.linspace(start, end, steps).astype(D.np_dtype(dt))
    return _finish(_to_array(arr, None, device, "linspace", copy=False), requires_grad)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt = D.get_default_dtype() if dtype is None else D.to_dtype(dtype)
    arr = np.eye(n, n if m is None else m, dtype=D.np_dtype(dt))
    return _finish(_to_array(arr, None, device, "eye", copy=False), requires_grad)


def _random(op, size, dtype, device, requires_grad, draw):
    shape = size_args(size, op)
    dt = D.get_default_dtype() if dtype is None else D.to_dtype(dtype)
    if not dt.is_floating_point:
        raise TypeError(f"[{op}] needs a floating point dtype, got {dt}")
    return _finish(draw(shape, D.np_dtype(dt), to_device(device)), requires_grad)


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform on [0, 1)."""
    return _random(
        "rand",
        size,
        dtype,
        device,
        requires_grad,
        lambda s, nd, dev: R._uniform(s, 0.0, 1.0, nd, dev, generator),
    )


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal."""
    return _random(
        "randn",
        size,
        dtype,
        device,
        requires_grad,
        lambda s, nd, dev: R._normal(s, 0.0, 1.0, nd, dev, generator),
    )


def randint(
    *args, size=None, generator=None, dtype=None, device=None, requires_grad=False
) -> Tensor:
    """``randint(high, size)`` or ``randint(low, high, size)``: integers in [low, high)."""
    if size is not None:
        args = args + (size,)
    if len(args) == 2:
        low, (high, size) = 0, args
    elif len(args) == 3:
        low, high, size = args
    else:
        raise TypeError("[randint] expected randint(high, size) or randint(low, high, size)")
    shape = size_args((size,), "randint")
    dt = D.int64 if dtype is None else D.to_dtype(dtype)
    return _finish(
        R._randint(int(low), int(high), shape, D.np_dtype(dt), to_device(device), generator),
        requires_grad,
    )


def randperm(n, *, generator=None, dtype=None, device=None) -> Tensor:
    arr = R._permutation(int(n), to_device(device), generator)
    return Tensor._wrap(arr if dtype is None else arr.astype(D.np_dtype(D.to_dtype(dtype))))


def _like(input, dtype, device):
    return (input.dtype if dtype is None else dtype, input.device if device is None else device)


def zeros_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    return zeros(
        input.shape,
        dtype=_like(input, dtype, device)[0],
        device=_like(input, dtype, device)[1],
        requires_grad=requires_grad,
    )


def ones_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt, dev = _like(input, dtype, device)
    return ones(input.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt, dev = _like(input, dtype, device)
    return empty(input.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt, dev = _like(input, dtype, device)
    return full(input.shape, fill_value, dtype=dt, device=dev, requires_grad=requires_grad)


def rand_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt, dev = _like(input, dtype, device)
    return rand(input.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def randn_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt, dev = _like(input, dtype, device)
    return randn(input.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def randint_like(input, low=0, high=None, *, dtype=None, device=None) -> Tensor:
    if high is None:
        low, high = 0, low
    dt, dev = _like(input, dtype, device)
    return randint(low, high, input.shape, dtype=dt, device=dev)
