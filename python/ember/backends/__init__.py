"""Backend introspection: ``ember.backends.cpu``."""

from . import cpu

__all__ = ["cpu"]
