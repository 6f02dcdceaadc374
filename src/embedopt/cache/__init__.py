"""Caches of full-precision vectors keyed by fingerprint and text: tiers and the tiered cache.

Build tiers from a spec such as ``"memory,sqlite"`` with :func:`embedopt.specs.open_cache`. The memory tier and
the tiered cache need nothing extra; :class:`SQLiteTier` needs nothing but Python's sqlite3;
:class:`RedisTier` needs ``pip install "embedopt[redis]"``.
"""

from .base import CacheTier, cache_key
from .entry import CorruptEntry, decode_vector, encode_vector
from .memory import MemoryTier
from .redis import RedisTier
from .sqlite import SQLiteTier
from .tiered import TieredCache

__all__ = [
    "CacheTier",
    "CorruptEntry",
    "MemoryTier",
    "RedisTier",
    "SQLiteTier",
    "TieredCache",
    "cache_key",
    "decode_vector",
    "encode_vector",
]

