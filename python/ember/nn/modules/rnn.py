"""Recurrent layers: ``RNN``, ``LSTM``, ``GRU`` and the single-step ``RNNCell``, ``LSTMCell``,
``GRUCell``, with PyTorch's constructor arguments, parameter names, initialisation, shapes and
equations (so a PyTorch ``state_dict`` loads as is).

Each layer and direction is one autograd Function over the whole sequence
(``ember._ops.rnn``): one GEMM for the input projections of all steps, one GEMM plus one fused
gate kernel per step, and single GEMMs for the weight gradients. The cells run the same
Functions with a sequence of length 1.

Differs from PyTorch: no ``PackedSequence`` input, no ``proj_size`` (LSTM projections), CPU
only (the kernels are CPU kernels).
"""

from __future__ import annotations

import math

from ... import _ops as ops
from ... import creation
from ..._ops.rnn import GRULayer, LSTMLayer, RNNLayer
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..parameter import Parameter
from .module import Module

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNBase", "RNNCell"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _check_size(op: str, name: str, v) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"[{op}] {name} must be a positive int, got {v!r}")


def _check_float(op: str, x, like: Tensor, name: str = "input") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"[{op}] {name} must be a Tensor, got {type(x).__name__}")
    if x.dtype != like.dtype:
        raise TypeError(f"[{op}] {name} must have the type {like.dtype}, got type {x.dtype}")
    if x.device != like.device or x.device.type != "cpu":
        raise RuntimeError(f"[{op}] only CPU tensors are supported, got {name} on {x.device}")


class RNNBase(Module):
    """Shared by ``RNN``, ``LSTM`` and ``GRU``: parameters, validation, the layer loop."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        op = type(self).__name__
        _check_size(op, "input_size", input_size)
        _check_size(op, "hidden_size", hidden_size)
        _check_size(op, "num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise ValueError(f"[{op}] dropout must be a number in [0, 1], got {dropout!r}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"[{op}] dropout must be a number in [0, 1], got {dropout}")
        if proj_size != 0:
            raise ValueError(f"[{op}] proj_size is not supported by ember (got {proj_size})")
        self.mode = mode
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers = num_layers
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = 0
        G = _GATES[mode] * hidden_size
        D = 2 if bidirectional else 1
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                self.register_parameter(
                    "weight_ih" + sfx,
                    Parameter(creation.empty(G, n_in, device=device, dtype=dtype)),
                )
                self.register_parameter(
                    "weight_hh" + sfx,
                    Parameter(creation.empty(G, hidden_size, device=device, dtype=dtype)),
                )
                if bias:
                    self.register_parameter(
                        "bias_ih" + sfx, Parameter(creation.empty(G, device=device, dtype=dtype))
                    )
                    self.register_parameter(
                        "bias_hh" + sfx, Parameter(creation.empty(G, device=device, dtype=dtype))
                    )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) (PyTorch)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for PyTorch scripts (ember's weights need no cuDNN-style flat buffer)."""

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """Per layer and direction: [weight_ih, weight_hh, bias_ih, bias_hh] (biases only
        when ``bias``), as in PyTorch."""
        D = 2 if self.bidirectional else 1
        return [
            [p for p in self._layer_params(layer, d) if p is not None]
            for layer in range(self.num_layers)
            for d in range(D)
        ]

    def _layer_params(self, layer: int, d: int):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        get = self._parameters.get
        return (get("weight_ih" + sfx), get("weight_hh" + sfx), get("bias_ih" + sfx),
                get("bias_hh" + sfx))  # fmt: skip

    def _check_hidden(self, op, h, expected, like, name):
        _check_float(op, h, like, name)
        if tuple(h.shape) != expected:
            raise ValueError(f"[{op}] Expected {name} size {expected}, got {list(h.shape)}")

    def forward(self, input: Tensor, hx=None):
        """input [T, B, input_size] ([B, T, input_size] with batch_first, or unbatched
        [T, input_size]); hx: h_0 [num_layers * D, B, hidden_size] ([num_layers * D, H]
        unbatched), for LSTM the pair (h_0, c_0); None means zeros. D = 2 if bidirectional.
        Returns (output [T, B, D * hidden_size] (batch_first: [B, T, ...]), h_n) or for LSTM
        (output, (h_n, c_n)), h_n/c_n shaped like h_0."""
        op = type(self).__name__
        w0 = self.weight_ih_l0
        _check_float(op, input, w0)
        if input.ndim not in (2, 3):
            raise ValueError(
                f"[{op}] expected input of 2 (unbatched) or 3 dims, got shape {list(input.shape)}"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"[{op}] input.size(-1) must be equal to input_size. Expected "
                f"{self.input_size}, got {input.shape[-1]}"
            )
        batched = input.ndim == 3
        if input.shape[1 if batched and self.batch_first else 0] == 0:
            raise ValueError(f"[{op}] expected a sequence length larger than 0")
        x = input if batched else ops.unsqueeze(input, 1)
        if batched and self.batch_first:
            x = ops.transpose(x, 0, 1)
        B = x.shape[1]
        D = 2 if self.bidirectional else 1
        LD, H = self.num_layers * D, self.hidden_size
        lstm = self.mode == "LSTM"
        h0 = c0 = None
        if hx is not None:
            expected = (LD, B, H) if batched else (LD, H)
            if lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise ValueError(f"[{op}] hx must be a tuple (h_0, c_0) for LSTM")
                h0, c0 = hx
                self._check_hidden(op, h0, expected, w0, "hidden[0]")
                self._check_hidden(op, c0, expected, w0, "hidden[1]")
            else:
                if isinstance(hx, (tuple, list)):
                    raise ValueError(f"[{op}] hx must be a Tensor, got {type(hx).__name__}")
                self._check_hidden(op, hx, expected, w0, "hidden")
                h0 = hx
            if not batched:
                h0 = ops.unsqueeze(h0, 1)
                c0 = None if c0 is None else ops.unsqueeze(c0, 1)
        hns, cns = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                wih, whh, bih, bhh = self._layer_params(layer, d)
                hk = None if h0 is None else h0[k]
                rev = d == 1
                if lstm:
                    ck = None if c0 is None else c0[k]
                    o, hn, cn = LSTMLayer.apply(x, hk, ck, wih, whh, bih, bhh, rev)
                    cns.append(cn)
                elif self.mode == "GRU":
                    o, hn = GRULayer.apply(x, hk, wih, whh, bih, bhh, rev)
                else:
                    nl = "tanh" if self.mode == "RNN_TANH" else "relu"
                    o, hn = RNNLayer.apply(x, hk, wih, whh, bih, bhh, rev, nl)
                outs.append(o)
                hns.append(hn)
            x = outs[0] if D == 1 else ops.cat(outs, 2)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        out = x
        h_n = ops.stack(hns, 0)
        c_n = ops.stack(cns, 0) if lstm else None
        if not batched:
            out = ops.squeeze(out, 1)
            h_n = ops.squeeze(h_n, 1)
            c_n = None if c_n is None else ops.squeeze(c_n, 1)
        elif self.batch_first:
            out = ops.transpose(out, 0, 1)
        return (out, (h_n, c_n)) if lstm else (out, h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu with
    ``nonlinearity="relu"``), stacked ``num_layers`` deep. See ``RNNBase.forward`` for shapes."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None,
                 dtype=None) -> None:  # fmt: skip
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"[RNN] Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' "
                             "or 'relu'.")  # fmt: skip
        mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)  # fmt: skip
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


class LSTM(RNNBase):
    """LSTM with PyTorch's equations and gate order (i, f, g, o):
    c_t = f c_{t-1} + i g, h_t = o tanh(c_t). ``forward(input, (h_0, c_0))`` returns
    ``(output, (h_n, c_n))``; see ``RNNBase.forward`` for shapes. No ``proj_size``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None,
                 dtype=None) -> None:  # fmt: skip
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)  # fmt: skip


class GRU(RNNBase):
    """GRU with PyTorch's equations (gate order r, z, n):
    n = tanh(W_in x + b_in + r (W_hn h + b_hn)), h' = (1 - z) n + z h.
    See ``RNNBase.forward`` for shapes."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None) -> None:  # fmt: skip
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)  # fmt: skip


class _CellBase(Module):
    def __init__(self, input_size, hidden_size, bias, gates, device, dtype) -> None:
        super().__init__()
        op = type(self).__name__
        _check_size(op, "input_size", input_size)
        _check_size(op, "hidden_size", hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bool(bias)
        G = gates * hidden_size
        self.weight_ih = Parameter(creation.empty(G, input_size, device=device, dtype=dtype))
        self.weight_hh = Parameter(creation.empty(G, hidden_size, device=device, dtype=dtype))
        if bias:
            self.bias_ih = Parameter(creation.empty(G, device=device, dtype=dtype))
            self.bias_hh = Parameter(creation.empty(G, device=device, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _prep(self, input, hx):
        """input [B, I] or [I] -> x [1, B, I]; hx (Tensor, tuple of Tensors or None) -> list of
        [B, H] or None; plus whether the input was batched."""
        op = type(self).__name__
        _check_float(op, input, self.weight_ih)
        if input.ndim not in (1, 2):
            raise ValueError(f"[{op}] Expected input to be 1D or 2D, got {input.ndim}D instead")
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"[{op}] input has inconsistent input_size: got {input.shape[-1]} "
                f"expected {self.input_size}"
            )
        batched = input.ndim == 2
        x = input if batched else ops.unsqueeze(input, 0)
        B = x.shape[0]
        states = []
        for i, h in enumerate(hx if isinstance(hx, (tuple, list)) else (hx,)):
            if h is None:
                states.append(None)
                continue
            _check_float(op, h, self.weight_ih, f"hx[{i}]")
            expected = (B, self.hidden_size) if batched else (self.hidden_size,)
            if tuple(h.shape) != expected:
                raise ValueError(
                    f"[{op}] hidden state {i} has shape {list(h.shape)}, expected {list(expected)}"
                )
            states.append(h if batched else ops.unsqueeze(h, 0))
        return ops.unsqueeze(x, 0), states, batched

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        return s if self.bias else s + ", bias=False"


def _unbatch(h, batched):
    return h if batched else ops.squeeze(h, 0)


class RNNCell(_CellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu). input [B, I] or [I], hx [B, H]
    or [H] (None: zeros) -> h' [B, H] or [H]."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None) -> None:  # fmt: skip
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"[RNNCell] Unknown nonlinearity: {nonlinearity}")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,), batched = self._prep(input, hx)
        _, hn = RNNLayer.apply(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                               False, self.nonlinearity)  # fmt: skip
        return _unbatch(hn, batched)


class LSTMCell(_CellBase):
    """One LSTM step: input [B, I] or [I], hx = (h, c) each [B, H] or [H] (None: zeros) ->
    (h', c')."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None) -> None:  # fmt: skip
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input: Tensor, hx=None):
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise ValueError("[LSTMCell] hx must be a tuple (h, c)")
        x, states, batched = self._prep(input, hx if hx is not None else (None, None))
        _, hn, cn = LSTMLayer.apply(x, states[0], states[1], self.weight_ih, self.weight_hh,
                                    self.bias_ih, self.bias_hh, False)  # fmt: skip
        return _unbatch(hn, batched), _unbatch(cn, batched)


class GRUCell(_CellBase):
    """One GRU step: input [B, I] or [I], hx [B, H] or [H] (None: zeros) -> h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None) -> None:  # fmt: skip
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,), batched = self._prep(input, hx)
        _, hn = GRULayer.apply(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                               False)  # fmt: skip
        return _unbatch(hn, batched)
