"""Training backends; only the modules in this package import a training library, and only inside functions."""
from .base import Backend

__all__ = ["Backend"]
