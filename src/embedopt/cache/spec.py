"""Build a cache from a short text spec, for the CLI, config files and ``Embedder(cache="...")``."""

from __future__ import annotations

import re

from ..errors import ConfigError
from .base import CacheTier
from .memory import MemoryTier
from .tiered import TieredCache

__all__ = ["open_cache"]

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?i?b?)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(text: str) -> int:
    m = _SIZE.match(text.strip())
    if not m:
        raise ConfigError(f"cannot read memory size {text!r}; write it like 512MB or 2GB")
    return int(float(m.group(1)) * _UNITS[m.group(2)[:1].lower()])


def open_cache(spec: str, *, ttl: float | None = None) -> TieredCache:
    """Tiers from a comma-separated spec, fastest first.

    ``memory`` or ``memory:512MB``; ``sqlite`` (``$EMBEDOPT_HOME/vectors.sqlite3``) or ``sqlite:PATH``;
    ``redis://…`` or ``rediss://…``; ``default`` is ``memory,sqlite``. Example:
    ``open_cache("memory,redis://localhost:6379/0,sqlite")``. ``ttl`` is the persistent tiers' default lifetime.
    """
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if parts == ["default"]:
        parts = ["memory", "sqlite"]
    if not parts:
        raise ConfigError("empty cache spec; use e.g. 'memory,sqlite' or 'memory,redis://localhost:6379/0,sqlite'")
    tiers: list[CacheTier] = []
    for part in parts:
        kind, _, arg = part.partition(":")
        if kind == "memory":
            tiers.append(MemoryTier(_size(arg)) if arg else MemoryTier())
        elif kind == "sqlite":
            from .sqlite import SQLiteTier

            tiers.append(SQLiteTier(arg or None, ttl=ttl))
        elif kind in ("redis", "rediss", "unix"):
            from .redis import RedisTier

            tiers.append(RedisTier(part, ttl=ttl))
        else:
            raise ConfigError(f"unknown cache tier {kind!r} in {spec!r}; use memory[:SIZE], sqlite[:PATH], "
                              "redis://HOST:PORT/DB or rediss://...")
    return TieredCache(tiers)
