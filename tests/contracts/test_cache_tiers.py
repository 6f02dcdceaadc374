"""The cache-tier contract, run over every tier (real SQLite and Redis): one line in ``TIERS`` gives a new tier
the whole suite."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from embedopt.cache import CacheTier, MemoryTier, RedisTier, SQLiteTier, TieredCache, cache_key
from embedopt.fingerprint import Fingerprint

FP = Fingerprint("test", "contract", "r1", "document", "", 8, True)
OTHER = Fingerprint("test", "contract", "r2", "document", "", 8, True)


def _redis(tmp_path: Path) -> CacheTier:
    return RedisTier("redis://127.0.0.1:6379/0", prefix=f"contract-{uuid.uuid4().hex[:8]}:")


#: Every tier the suite runs over: name -> factory(tmp_path). One line per implementation.
TIERS: dict[str, Callable[[Path], CacheTier]] = {
    "memory": lambda tmp: MemoryTier(),
    "sqlite": lambda tmp: SQLiteTier(tmp / "c.sqlite3"),
    "redis": _redis,
    "tiered": lambda tmp: TieredCache([MemoryTier(), SQLiteTier(tmp / "t.sqlite3")]),
}


@pytest.fixture(params=sorted(TIERS))
def tier(request: pytest.FixtureRequest, tmp_path: Path):
    t = TIERS[request.param](tmp_path)
    yield t
    t.clear()


def _items(fp: Fingerprint, n: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(cache_key(fp, f"text {i}"), rng.standard_normal(8).astype(np.float32)) for i in range(n)]


def test_it_is_a_tier_and_a_miss_is_none(tier):
    assert isinstance(tier, CacheTier) and tier.name
    assert tier.get_many([cache_key(FP, "never stored")]) == [None]
    assert tier.get_many([]) == []


def test_round_trip_is_bit_exact_and_in_key_order(tier):
    items = _items(FP, 5)
    tier.set_many(items)
    keys = [*[k for k, _ in items][::-1], "embedopt:v1:absent:0"]
    found = tier.get_many(keys)
    assert found[-1] is None
    for (_, vec), got in zip(items[::-1], found[:-1], strict=True):
        assert got is not None and got.dtype == np.float32
        np.testing.assert_array_equal(got, vec)


def test_delete_usage_and_clear_by_fingerprint(tier):
    tier.set_many(_items(FP, 3) + _items(OTHER, 2, seed=1))
    assert tier.usage()["entries"] == 5 and tier.usage()["bytes"] > 0
    assert tier.usage_by_fingerprint() == {FP.id: 3, OTHER.id: 2}
    assert tier.delete([_items(FP, 1)[0][0]]) == 1
    assert tier.clear(OTHER.id) == 2
    assert tier.usage_by_fingerprint() == {FP.id: 2}
    assert tier.clear() == 2 and tier.usage()["entries"] == 0


def test_ttl_expires_entries(tier):
    items = _items(FP, 2)
    tier.set_many(items, ttl=0.2)
    assert all(v is not None for v in tier.get_many([k for k, _ in items]))
    time.sleep(0.35)
    assert tier.get_many([k for k, _ in items]) == [None, None]


def test_async_twins_see_the_same_entries(tier):
    items = _items(FP, 4)

    async def run() -> list[np.ndarray | None]:
        await tier.aset_many(items)
        return await tier.aget_many([k for k, _ in items])

    for (_, vec), got in zip(items, asyncio.run(run()), strict=True):
        np.testing.assert_array_equal(got, vec)


def test_stats_count_hits_and_misses(tier):
    tier.set_many(_items(FP, 2))
    tier.get_many([k for k, _ in _items(FP, 2)] + ["embedopt:v1:absent:1"])
    stats = tier.stats()
    assert stats["hits"] >= 2 and stats["misses"] >= 1 and stats.get("errors", 0) == 0
