"""``ember.utils``: helpers outside the core tensor library (``ember.utils.data``)."""

from . import data

__all__ = ["data"]
