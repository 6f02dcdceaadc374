"""In-process LRU tier bounded by bytes."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, InputError
from .base import TierEntry, key_fingerprint

__all__ = ["MemoryTier", "parse_size"]

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?i?b?)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes from ``512MB``, ``2GB``, ``64k``, ``1000``."""
    m = _SIZE.match(text.strip())
    if not m:
        raise ConfigError(f"cannot read memory size {text!r}; write it like 512MB or 2GB")
    return int(float(m.group(1)) * _UNITS[m.group(2)[:1].lower()])


class MemoryTier:
    """Least-recently-used vectors up to ``max_bytes`` (vector bytes plus key bytes), with optional TTL.

    Thread-safe. Stored arrays are read-only copies, so a caller mutating a returned vector cannot poison it.
    ``stats()`` adds ``stored_bytes``, ``entries`` and ``evictions`` to the common counters.
    """

    name = "memory"

    def __init__(self, max_bytes: int = 256 * 1024 * 1024, *, ttl: float | None = None) -> None:
        if max_bytes < 1:
            raise ConfigError(f"max_bytes must be >= 1, got {max_bytes}")
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"ttl must be > 0 seconds or None, got {ttl}")
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._data: OrderedDict[str, tuple[np.ndarray, float | None]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = self._read = self._written = 0

    @staticmethod
    def _size(key: str, vec: np.ndarray) -> int:
        return vec.nbytes + len(key)

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        now = time.monotonic()
        out: list[np.ndarray | None] = []
        hits = read = 0
        with self._lock:
            data = self._data
            for key in keys:
                entry = data.get(key)
                if entry is None:
                    out.append(None)
                    continue
                if entry[1] is not None and entry[1] <= now:
                    self._drop(key)
                    out.append(None)
                    continue
                data.move_to_end(key)
                out.append(entry[0])
                hits += 1
                read += entry[0].nbytes
            self._hits += hits
            self._misses += len(keys) - hits
            self._read += read
        return out

    def set_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None:
        ttl = self.ttl if ttl is None else ttl
        expires = time.monotonic() + ttl if ttl is not None else None
        arrays = [(key, _frozen(vec)) for key, vec in items]  # all checked before any is stored
        with self._lock:
            for key, arr in arrays:
                size = self._size(key, arr)
                if size > self.max_bytes:
                    continue
                if key in self._data:
                    self._drop(key)
                self._data[key] = (arr, expires)
                self._bytes += size
                self._written += arr.nbytes
                while self._bytes > self.max_bytes:
                    oldest = next(iter(self._data))
                    self._drop(oldest)
                    self._evictions += 1

    def _drop(self, key: str) -> None:
        arr, _ = self._data.pop(key)
        self._bytes -= self._size(key, arr)

    def delete(self, keys: Sequence[str]) -> int:
        with self._lock:
            present = [k for k in keys if k in self._data]
            for k in present:
                self._drop(k)
            return len(present)

    def clear(self, fingerprint: str | None = None) -> int:
        """Drop every entry, or those whose fingerprint id starts with ``fingerprint``; returns how many."""
        with self._lock:
            if fingerprint is None:
                n = len(self._data)
                self._data.clear()
                self._bytes = 0
                return n
            doomed = [k for k in self._data if key_fingerprint(k).startswith(fingerprint)]
            for k in doomed:
                self._drop(k)
            return len(doomed)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self._hits, "misses": self._misses, "errors": 0, "corrupt": 0,
                    "bytes_read": self._read, "bytes_written": self._written,
                    "stored_bytes": self._bytes, "entries": len(self._data), "evictions": self._evictions}

    def usage(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._data), "bytes": self._bytes}

    def usage_by_fingerprint(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(key_fingerprint(k) for k in self._data))

    async def aget_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        return self.get_many(keys)

    async def aset_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None:
        self.set_many(items, ttl)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryTier(max_bytes={self.max_bytes}, entries={len(self._data)})"


def _frozen(vec: np.ndarray) -> np.ndarray:
    """A read-only float32 copy of a 1-d vector; anything else is an InputError."""
    try:
        arr = np.array(vec, dtype=np.float32, copy=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"a cached vector must be a 1-d array of floats, got {type(vec).__name__}") from exc
    if arr.ndim != 1:
        raise InputError(f"a cached vector must be 1-d, got shape {arr.shape}; store one vector per key")
    arr.flags.writeable = False
    return arr


def _build(part: str, ttl: float | None) -> MemoryTier:
    _, _, size = part.partition(":")
    return MemoryTier(parse_size(size)) if size else MemoryTier()


SPEC = TierEntry(schemes=("memory",), build=_build, summary="this process's LRU, bounded by bytes (256MB default)",
                 example="memory:512MB")
