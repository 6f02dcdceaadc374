"""Caches of full-precision vectors keyed by fingerprint and text, and a semantic cache of responses.

The memory tier and the tiered cache need nothing extra; :class:`SQLiteTier` needs nothing but Python's sqlite3;
:class:`RedisTier` needs ``pip install "embedopt[redis]"``.
"""

from .base import CacheTier, cache_key
from .codec import CorruptEntry, decode_vector, encode_vector
from .memory import MemoryTier
from .redis import RedisTier
from .semantic import SemanticCache, SemanticHit
from .spec import open_cache
from .sqlite import SQLiteTier
from .tiered import TieredCache

__all__ = [
    "CacheTier",
    "CorruptEntry",
    "MemoryTier",
    "RedisTier",
    "SQLiteTier",
    "SemanticCache",
    "SemanticHit",
    "TieredCache",
    "cache_key",
    "decode_vector",
    "encode_vector",
    "open_cache",
]

