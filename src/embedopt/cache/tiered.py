"""Tiers in order, fastest first: read-through with promotion, write-through, a circuit breaker per tier."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from .._breaker import CircuitBreaker
from ..errors import ConfigError
from .base import CacheTier

__all__ = ["TieredCache"]


class TieredCache:
    """Look keys up tier by tier (memory → Redis → SQLite, say) and write to all of them.

    A hit in a slower tier is copied into the faster tiers that missed it (promotion). A tier that raises is
    skipped with one warning and a circuit breaker: it is left alone for ``cooldown`` seconds (doubling while
    it keeps failing, up to ``max_cooldown``) and used again as soon as a trial call succeeds. The cache never
    raises because of a tier; with every tier down it behaves as an empty cache.

    Args:
        tiers: cache tiers, fastest first.
        promote_ttl: lifetime in seconds of promoted copies (``None``: each tier's default).
        cooldown: seconds a failed tier is skipped before a trial call.
        max_cooldown: the longest skip while a tier keeps failing.
    """

    name = "tiered"

    def __init__(self, tiers: Sequence[CacheTier], *, promote_ttl: float | None = None, cooldown: float = 5.0,
                 max_cooldown: float = 60.0) -> None:
        tiers = list(tiers)
        if not tiers:
            raise ConfigError("TieredCache needs at least one tier, fastest first (MemoryTier(), SQLiteTier(), ...)")
        for t in tiers:
            if not isinstance(t, CacheTier):
                raise ConfigError(f"{type(t).__name__} is not a cache tier (get_many, set_many, delete, stats, ...)")
        if cooldown <= 0 or max_cooldown < cooldown:
            raise ConfigError(f"need 0 < cooldown <= max_cooldown, got {cooldown} and {max_cooldown}")
        self.tiers = tiers
        self.promote_ttl = promote_ttl
        self.names = _unique_names(tiers)
        self._breakers = [CircuitBreaker(f"cache tier {n!r}", cooldown, max_cooldown,
                                        consequence="embedding requests go on without it") for n in self.names]
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    def __repr__(self) -> str:
        return f"TieredCache([{', '.join(repr(t) for t in self.tiers)}])"

    def _count(self, out: list[np.ndarray | None]) -> None:
        hits = sum(v is not None for v in out)
        with self._lock:
            self._hits += hits
            self._misses += len(out) - hits

    # ---------------------------------------------------------------------------------------------- reads
    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(keys)
        missing = list(range(len(keys)))
        for level, tier in enumerate(self.tiers):
            if not missing:
                break
            wanted = [keys[i] for i in missing]
            ok, found = self._breakers[level].guard(partial(tier.get_many, wanted))
            if not ok or found is None:
                continue
            missing, promote = _merge(out, missing, found, keys)
            for upper in range(level if promote else 0):
                self._breakers[upper].guard(partial(self.tiers[upper].set_many, promote, self.promote_ttl))
        self._count(out)
        return out

    async def aget_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(keys)
        missing = list(range(len(keys)))
        for level, tier in enumerate(self.tiers):
            if not missing:
                break
            wanted = [keys[i] for i in missing]
            ok, found = await self._breakers[level].aguard(partial(tier.aget_many, wanted))
            if not ok or found is None:
                continue
            missing, promote = _merge(out, missing, found, keys)
            for upper in range(level if promote else 0):
                await self._breakers[upper].aguard(partial(self.tiers[upper].aset_many, promote, self.promote_ttl))
        self._count(out)
        return out

    # --------------------------------------------------------------------------------------------- writes
    def set_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None:
        if not items:
            return
        for level, tier in enumerate(self.tiers):
            self._breakers[level].guard(partial(tier.set_many, items, ttl))

    async def aset_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None:
        if not items:
            return
        for level, tier in enumerate(self.tiers):
            await self._breakers[level].aguard(partial(tier.aset_many, items, ttl))

    def delete(self, keys: Sequence[str]) -> int:
        removed = 0
        for level, tier in enumerate(self.tiers):
            ok, n = self._breakers[level].guard(partial(tier.delete, keys))
            if ok and n is not None:
                removed = max(removed, int(n))
        return removed

    # ---------------------------------------------------------------------------------------------- stats
    def stats(self) -> dict[str, int]:
        """Totals: ``hits`` (found in some tier), ``misses`` (in none), and the tiers' ``errors`` and ``skipped``."""
        with self._lock:
            hits, misses = self._hits, self._misses
        errors = sum(int(t.stats().get("errors", 0)) for t in self.tiers)
        skipped = sum(b.skipped for b in self._breakers)
        return {"hits": hits, "misses": misses, "errors": errors, "skipped": skipped}

    def tier_stats(self) -> dict[str, dict[str, Any]]:
        """Per tier: its own counters plus the breaker's ``state`` (closed/open), ``skipped`` calls and ``trips``."""
        report: dict[str, dict[str, Any]] = {}
        for name, tier, breaker in zip(self.names, self.tiers, self._breakers, strict=True):
            report[name] = {**tier.stats(), "state": breaker.state, "skipped": breaker.skipped,
                            "trips": breaker.trips}
        return report

    def usage(self) -> dict[str, int]:
        """The largest tier's entries and bytes (the tiers hold copies of one another's entries)."""
        return max((t.usage() for t in self.tiers), key=lambda u: u.get("entries", 0))

    def usage_by_fingerprint(self) -> dict[str, int]:
        """Per fingerprint id, the most entries any tier holds."""
        out: dict[str, int] = {}
        for tier in self.tiers:
            for fp, n in tier.usage_by_fingerprint().items():
                out[fp] = max(out.get(fp, 0), n)
        return out

    def clear(self, fingerprint: str | None = None) -> int:
        """Clear every tier (see :meth:`CacheTier.clear`); returns the most entries one tier removed."""
        removed = 0
        for level, tier in enumerate(self.tiers):
            ok, n = self._breakers[level].guard(partial(tier.clear, fingerprint))
            if ok and n is not None:
                removed = max(removed, int(n))
        return removed

    def tier(self, name: str) -> CacheTier:
        """The tier called ``name`` (``memory``, ``redis``, ``sqlite``, ...)."""
        try:
            return self.tiers[self.names.index(name)]
        except ValueError:
            raise ConfigError(f"no tier named {name!r}; tiers: {self.names}") from None


def _merge(out: list[np.ndarray | None], missing: list[int], found: Sequence[np.ndarray | None],
           keys: Sequence[str]) -> tuple[list[int], list[tuple[str, np.ndarray]]]:
    still: list[int] = []
    promote: list[tuple[str, np.ndarray]] = []
    for i, vec in zip(missing, found, strict=True):
        if vec is None:
            still.append(i)
        else:
            out[i] = vec
            promote.append((keys[i], vec))
    return still, promote


def _unique_names(tiers: Sequence[CacheTier]) -> list[str]:
    names: list[str] = []
    for t in tiers:
        base = str(getattr(t, "name", type(t).__name__.lower()))
        name, n = base, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.append(name)
    return names
