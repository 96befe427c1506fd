"""ember: a deep-learning framework whose hot paths are kernels of its own (AVX2/FMA on the
CPU, CUDA on Hopper GPUs), with a PyTorch-shaped Python API.

    import ember
    x = ember.randn(4, 3, requires_grad=True)
    (x @ x.T).relu().sum().backward()
"""

from __future__ import annotations

try:
    from . import _C
except ImportError as _e:  # pragma: no cover - only a broken install gets here
    raise ImportError(
        f"ember's compiled module ember._C could not be loaded ({_e}). Reinstall with "
        "`pip install .` from the source tree."
    ) from _e

from . import _dtype, autograd, backends, cuda, datasets, nn, ops, optim, transforms, utils
from ._device import device
from ._dtype import (
    bfloat16,
    double,
    dtype,
    float16,
    float32,
    float64,
    get_default_dtype,
    half,
    int8,
    int16,
    int32,
    int64,
    long,
    set_default_dtype,
    short,
    uint8,
)
from ._dtype import bool_ as bool  # noqa: A001  (ember.bool, as torch.bool)
from ._dtype import float as float  # noqa: A001
from ._dtype import int as int  # noqa: A001
from ._ops import *  # the op functions (add, exp, sum, matmul, cat ...)
from ._ops import (
    _METHODS,
    rsqrt,
    square,
)
from .autograd import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from .creation import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randint_like,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from .random import Generator, initial_seed, manual_seed, seed
from .serialization import load, save
from .tensor import Tensor

__version__ = "0.1.0"

if __import__("os").environ.get("EMBER_KEEP_FREED_MEMORY", "1") != "0":
    backends.cpu.keep_freed_memory(True)  # warm pages for steady-state steps (see there)


def set_num_threads(n: int) -> None:
    """Threads used by ember's CPU kernels (OpenMP; default: OMP_NUM_THREADS or all cores)."""
    _C.set_num_threads(n)


def get_num_threads() -> int:
    return _C.get_num_threads()


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def numel(input: Tensor) -> int:
    return input.numel()


def is_floating_point(input: Tensor) -> bool:
    return input.dtype.is_floating_point


del _METHODS
