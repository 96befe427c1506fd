"""``ember.nn``: Modules, Parameters, layers, losses, ``functional`` and ``init``, with
PyTorch's names (``import ember.nn as nn`` reads like ``import torch.nn as nn``)."""

from . import functional, init, utils
from .modules import *  # noqa: F403  (every layer; the list lives in modules/__init__.py)
from .modules import __all__ as _modules_all
from .parameter import Parameter

__all__ = [*_modules_all, "Parameter", "functional", "init", "utils"]
