"""``ember.nn``: Modules, Parameters, layers, losses, ``functional`` and ``init``, with
PyTorch's names (``import ember.nn as nn`` reads like ``import torch.nn as nn``)."""

from . import functional, init
from .modules import (
    CrossEntropyLoss,
    Flatten,
    Identity,
    Linear,
    Module,
    ModuleList,
    MSELoss,
    NLLLoss,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from .parameter import Parameter

__all__ = [
    "CrossEntropyLoss",
    "Flatten",
    "Identity",
    "Linear",
    "MSELoss",
    "Module",
    "ModuleList",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "functional",
    "init",
]
