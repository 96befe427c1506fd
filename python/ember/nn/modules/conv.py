"""Convolution layers: ``Conv1d`` and ``Conv2d`` (on the CPU conv2d kernels)."""

from __future__ import annotations

import math

from ... import creation
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..parameter import Parameter
from .module import Module


def _ntuple(v, n: int, name: str, cls: str) -> tuple:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,) * n
    if isinstance(v, (tuple, list)) and len(v) == n and all(isinstance(e, int) for e in v):
        return tuple(v)
    raise ValueError(f"[{cls}] {name} must be an int or a tuple of {n} ints, got {v!r}")


class _ConvNd(Module):
    _nd = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        cls, nd = type(self).__name__, self._nd
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"[{cls}] {name} must be a positive int, got {v!r}")
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"[{cls}] groups must be a positive int, got {groups!r}")
        if in_channels % groups != 0:
            raise ValueError(f"[{cls}] in_channels ({in_channels}) must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError(f"[{cls}] out_channels ({out_channels}) must be divisible by groups")
        if padding_mode != "zeros":
            if padding_mode in ("reflect", "replicate", "circular"):
                raise NotImplementedError(
                    f"[{cls}] padding_mode={padding_mode!r} is not implemented yet; only "
                    "'zeros' is supported"
                )
            raise ValueError(
                f"[{cls}] padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', "
                f"got {padding_mode!r}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _ntuple(kernel_size, nd, "kernel_size", cls)
        self.stride = _ntuple(stride, nd, "stride", cls)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"[{cls}] padding must be 'same', 'valid', an int or a tuple, got {padding!r}"
                )
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(
                    f"[{cls}] padding='same' is not supported for strided convolutions"
                )
            self.padding = padding
        else:
            self.padding = _ntuple(padding, nd, "padding", cls)
        self.dilation = _ntuple(dilation, nd, "dilation", cls)
        if any(k < 1 for k in self.kernel_size) or any(s < 1 for s in self.stride):
            raise ValueError(f"[{cls}] kernel_size and stride must be positive")
        self.groups = groups
        self.padding_mode = padding_mode
        self.weight = Parameter(
            creation.empty(
                out_channels, in_channels // groups, *self.kernel_size, device=device, dtype=dtype
            )
        )
        if bias:
            self.bias = Parameter(creation.empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)) for the weight (= U(-1/sqrt(fan_in),
        1/sqrt(fan_in))), the bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        fan_in = in_channels/groups * prod(kernel_size)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        s += f", stride={self.stride}"
        zeros = (0,) * self._nd
        if self.padding != zeros:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s


class Conv2d(_ConvNd):
    """2-D convolution layer (PyTorch's signature): input [N, C_in, H, W] -> [N, C_out, OH, OW].

    ``weight`` [out_channels, in_channels/groups, kH, kW], ``bias`` [out_channels] (or None).
    kernel_size, stride, padding, dilation: int or (h, w); padding may be 'same' or 'valid'.
    Only padding_mode='zeros' is implemented: 'reflect', 'replicate' and 'circular' raise
    NotImplementedError. See :func:`ember.nn.functional.conv2d`.
    """

    _nd = 2

    def forward(self, input: Tensor) -> Tensor:
        return F.conv2d(
            input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class Conv1d(_ConvNd):
    """1-D convolution layer (PyTorch's signature): input [N, C_in, L] -> [N, C_out, OL].

    ``weight`` [out_channels, in_channels/groups, kL], ``bias`` [out_channels] (or None).
    Only padding_mode='zeros' is implemented: 'reflect', 'replicate' and 'circular' raise
    NotImplementedError. See :func:`ember.nn.functional.conv1d`.
    """

    _nd = 1

    def forward(self, input: Tensor) -> Tensor:
        return F.conv1d(
            input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
