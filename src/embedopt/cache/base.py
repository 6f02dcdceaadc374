"""The cache contract shared by every tier, the key every tier uses, and the counters every tier reports."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..fingerprint import Fingerprint

__all__ = ["KEY_PREFIX", "KEY_VERSION", "CacheTier", "TierCounters", "TierEntry", "cache_key", "key_fingerprint"]

KEY_VERSION = "v1"
KEY_PREFIX = f"embedopt:{KEY_VERSION}:"


def cache_key(fingerprint: Fingerprint, text: str) -> str:
    """``embedopt:v1:{fingerprint id}:{sha256(text)}``.

    The fingerprint carries provider, model, weights revision, input type (queries and documents apart), prompt,
    native dim and normalization, so a model update or a query/document swap can never hit another's entry.
    Truncated dims and quantized precisions are not in the key: they are derived from the full vector.
    """
    return f"{KEY_PREFIX}{fingerprint.id}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def key_fingerprint(key: str) -> str:
    """The fingerprint id inside a cache key (the key itself if it is not one of ours)."""
    if key.startswith(KEY_PREFIX) and key.count(":") >= 3:
        return key[len(KEY_PREFIX):].rsplit(":", 1)[0]
    return key


@runtime_checkable
class CacheTier(Protocol):
    """A store of full-precision vectors by key. Tiers never raise on a miss; a missing key is ``None``.

    ``stats()`` counts this process's traffic: ``hits``, ``misses``, ``errors``, ``corrupt`` (entries that
    failed their checksum or format check and were treated as misses), ``bytes_read`` and ``bytes_written``.
    ``usage()`` reports what the tier holds (``entries``, ``bytes``) and ``usage_by_fingerprint()`` its entries
    per fingerprint id (which models and input types it holds); either may cost a scan. ``clear()`` deletes every
    entry, or those whose fingerprint id starts with ``fingerprint``, and returns how many.
    """

    name: str

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]: ...

    def set_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None: ...

    def delete(self, keys: Sequence[str]) -> int: ...

    def stats(self) -> dict[str, int]: ...

    def usage(self) -> dict[str, int]: ...

    def usage_by_fingerprint(self) -> dict[str, int]: ...

    def clear(self, fingerprint: str | None = None) -> int: ...

    async def aget_many(self, keys: Sequence[str]) -> list[np.ndarray | None]: ...

    async def aset_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None: ...


class TierCounters:
    """Thread-safe traffic counters shared by the tiers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = self.misses = self.errors = self.corrupt = self.bytes_read = self.bytes_written = 0

    def read(self, hits: int, misses: int, nbytes: int, corrupt: int = 0) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses
            self.bytes_read += nbytes
            self.corrupt += corrupt

    def wrote(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_written += nbytes

    def error(self) -> None:
        with self._lock:
            self.errors += 1

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "errors": self.errors, "corrupt": self.corrupt,
                    "bytes_read": self.bytes_read, "bytes_written": self.bytes_written}


@dataclass(frozen=True)
class TierEntry:
    """How a cache spec names this tier, declared once in the tier's own module as ``SPEC`` and found there by
    :mod:`embedopt.specs`."""

    schemes: tuple[str, ...]
    """What a spec part starts with: ``memory`` in ``memory:512MB``, ``redis`` in ``redis://host:6379/0``."""
    build: Callable[[str, float | None], CacheTier]
    """``build(part, ttl)``: the tier for one comma-separated part of a spec (the whole part, scheme included)."""
    summary: str
    example: str
