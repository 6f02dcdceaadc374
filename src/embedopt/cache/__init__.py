"""Caches of full-precision vectors keyed by fingerprint and text."""

from .base import CacheTier, cache_key
from .memory import MemoryTier

__all__ = ["CacheTier", "MemoryTier", "cache_key"]
