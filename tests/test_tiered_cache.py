"""TieredCache: read-through with promotion, write-through, and a circuit breaker per tier (real tiers)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from embedopt import ConfigError
from embedopt.cache import CacheTier, MemoryTier, RedisTier, SQLiteTier, TieredCache
from embedopt.specs import open_cache

from .redis_server import RedisServer
from .test_sqlite_cache import vec_for


def items(*keys: str) -> list[tuple[str, np.ndarray]]:
    return [(k, vec_for(k)) for k in keys]


def test_read_through_promotes_to_faster_tiers(tmp_path):
    memory, sqlite = MemoryTier(), SQLiteTier(tmp_path / "c.sqlite3")
    cache = TieredCache([memory, sqlite])
    assert isinstance(cache, CacheTier)
    sqlite.set_many(items("a", "b"))
    memory.set_many(items("c"))
    got = cache.get_many(["a", "b", "c", "zzz"])
    assert [g is not None for g in got] == [True, True, True, False]
    np.testing.assert_array_equal(got[0], vec_for("a"))
    assert len(memory) == 3  # a and b were promoted
    assert memory.get_many(["a"])[0] is not None
    assert cache.stats()["hits"] == 3 and cache.stats()["misses"] == 1
    per_tier = cache.tier_stats()
    assert per_tier["memory"]["hits"] == 1 + 1 and per_tier["sqlite"]["hits"] == 2
    assert per_tier["sqlite"]["state"] == "closed"


def test_write_through_reaches_every_tier(tmp_path, redis_server):
    tiers = [MemoryTier(), RedisTier(redis_server.url), SQLiteTier(tmp_path / "c.sqlite3")]
    cache = TieredCache(tiers)
    cache.set_many(items("x", "y"), ttl=60)
    for tier in tiers:
        assert all(v is not None for v in tier.get_many(["x", "y"]))
    assert 0 < redis_server.client().pttl("x") <= 60_000
    assert cache.delete(["x"]) == 1 and all(t.get_many(["x"]) == [None] for t in tiers)


def test_a_dead_tier_is_skipped_with_one_warning(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    dead = SQLiteTier(blocker / "c.sqlite3")  # its folder cannot be made: every call fails
    memory = MemoryTier()
    cache = TieredCache([memory, dead], cooldown=60)
    with caplog.at_level(logging.WARNING, logger="embedopt"):
        for i in range(5):
            cache.set_many(items(f"k{i}"))
            assert cache.get_many([f"k{i}", "missing"])[0] is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "sqlite" in warnings[0].getMessage()
    stats = cache.tier_stats()["sqlite"]
    assert stats["state"] == "open" and stats["trips"] == 1 and stats["skipped"] == 9 and stats["errors"] == 1


def test_redis_outage_and_recovery(tmp_path, caplog):
    server = RedisServer(tmp_path).start()
    redis = RedisTier(server.url)
    memory = MemoryTier()
    cache = TieredCache([memory, redis], cooldown=0.1, max_cooldown=0.4)
    cache.set_many(items("before"))
    server.kill()
    with caplog.at_level(logging.INFO, logger="embedopt"):
        cache.set_many(items("during"))          # redis fails: one warning, memory still written
        assert cache.get_many(["during", "nope"])[0] is not None
        assert cache.tier_stats()["redis"]["state"] == "open"
        server.start()
        time.sleep(0.15)
        cache.set_many(items("after"))           # the trial call succeeds: the breaker closes
    assert cache.tier_stats()["redis"]["state"] == "closed"
    assert redis.get_many(["after"])[0] is not None
    levels = [r.levelno for r in caplog.records]
    assert levels.count(logging.WARNING) == 1 and levels.count(logging.INFO) == 1
    server.kill()


async def test_async_path_promotes_and_survives_a_dead_tier(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("")
    memory, sqlite = MemoryTier(), SQLiteTier(tmp_path / "c.sqlite3")
    cache = TieredCache([memory, SQLiteTier(blocker / "x.sqlite3"), sqlite])
    sqlite.set_many(items("a"))
    got = await cache.aget_many(["a", "b"])
    assert got[0] is not None and got[1] is None and len(memory) == 1
    await cache.aset_many(items("c"))
    assert sqlite.get_many(["c"])[0] is not None


def test_open_cache_specs(tmp_path, redis_server):
    cache = open_cache(f"memory:1MB,{redis_server.url},sqlite:{tmp_path / 'v.sqlite3'}", ttl=30)
    assert cache.names == ["memory", "redis", "sqlite"]
    assert cache.tier("memory").max_bytes == 1 << 20
    assert cache.tier("sqlite").ttl == 30
    assert open_cache("default").names == ["memory", "sqlite"]
    with pytest.raises(ConfigError, match="unknown cache tier"):
        open_cache("memcached://x")
    with pytest.raises(ConfigError, match="512MB"):
        open_cache("memory:lots")
    with pytest.raises(ConfigError, match="at least one tier"):
        TieredCache([])


def test_an_embedder_with_a_lone_dead_tier_warns_once(fake_provider, recorder, caplog):
    from embedopt import Embedder

    e = Embedder(fake_provider, cache=RedisTier("redis://127.0.0.1:1/0"))  # nothing listens on port 1
    assert isinstance(e.cache, TieredCache)  # a lone tier gets the circuit breaker
    with caplog.at_level(logging.WARNING, logger="embedopt"):
        for _ in range(3):
            assert e.embed_documents(["a", "b"]).shape == (2, 16)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert len(recorder.calls) == 3 * 1  # max_batch 4: one call per request, nothing cached
