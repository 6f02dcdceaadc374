"""RedisTier against a real redis-server of the test's own (Debian's package) on a free loopback port."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from embedopt import CacheError, ConfigError
from embedopt.cache import CacheTier, RedisTier, cache_key
from embedopt.fingerprint import Fingerprint

from .redis_server import RedisServer, make_tls_files
from .test_sqlite_cache import vec_for

FP = Fingerprint("fake", "fake-hash", "r1", "document", None, 8, True)


def test_round_trip_pipelined_in_chunks(redis_server):
    tier = RedisTier(redis_server.url)
    assert isinstance(tier, CacheTier)
    keys = [cache_key(FP, f"text {i}") for i in range(2300)]  # more than one MGET / pipeline chunk
    tier.set_many([(k, vec_for(k)) for k in keys[:2000]])
    got = tier.get_many(keys)
    assert sum(g is not None for g in got) == 2000 and all(g is None for g in got[2000:])
    np.testing.assert_array_equal(got[1999], vec_for(keys[1999]))
    raw = redis_server.client().get(keys[0])
    assert raw[:2] == b"EV" and len(raw) == 8 + 8 + 32 + 4  # the codec's bytes (key tag too), no pickle or JSON
    s = tier.stats()
    assert (s["hits"], s["misses"], s["errors"]) == (2000, 300, 0)
    assert tier.usage() == {"entries": 2000, "bytes": 2000 * 52}


def test_ttl_and_prefix_isolation(redis_server):
    a = RedisTier(redis_server.url, prefix="app-a:", ttl=60)
    b = RedisTier(redis_server.url, prefix="app-b:")
    a.set_many([("k", vec_for("k"))])
    a.set_many([("short", vec_for("short"))], ttl=0.05)
    assert b.get_many(["k"]) == [None]
    client = redis_server.client()
    assert 0 < client.pttl("app-a:k") <= 60_000
    time.sleep(0.15)
    assert a.get_many(["short"]) == [None] and a.get_many(["k"])[0] is not None
    assert b.clear() == 0 and a.delete(["k"]) == 1


def test_clear_by_fingerprint_escapes_glob_characters(redis_server):
    tier = RedisTier(redis_server.url)
    other = Fingerprint("fake", "other[model]", "r1", "document", None, 8, True)
    tier.set_many([(cache_key(fp, t), vec_for(t)) for fp in (FP, other) for t in "xyz"])
    assert tier.clear(other.id) == 3
    assert tier.usage()["entries"] == 3


def test_password_from_url_and_never_in_repr(tmp_path, caplog):
    server = RedisServer(tmp_path, password="s3cret-pass").start()
    try:
        tier = RedisTier(server.url)
        tier.set_many([("k", vec_for("k"))])
        assert tier.get_many(["k"])[0] is not None
        assert "s3cret-pass" not in repr(tier) and "s3cret-pass" not in tier.url and "***" in tier.url
        wrong = RedisTier(server.url.replace("s3cret-pass", "wrong"))
        with caplog.at_level(logging.DEBUG), pytest.raises(CacheError) as info:
            wrong.get_many(["k"])
        assert "wrong" not in str(info.value) and "s3cret-pass" not in caplog.text
    finally:
        server.kill()


def test_rediss_tls(tmp_path):
    tls = make_tls_files(tmp_path)
    server = RedisServer(tmp_path, tls=tls).start()
    try:
        tier = RedisTier(server.url, ssl_ca_certs=str(tls["ca"]))
        tier.set_many([("k", vec_for("k"))])
        np.testing.assert_array_equal(tier.get_many(["k"])[0], vec_for("k"))
        plain = RedisTier(server.url.replace("rediss://", "redis://"))
        with pytest.raises(CacheError, match="TLS"):
            plain.get_many(["k"])
    finally:
        server.kill()


def test_corrupt_value_is_a_miss(redis_server):
    tier = RedisTier(redis_server.url)
    redis_server.client().set("k", b"\x80\x04not-a-vector")
    assert tier.get_many(["k"]) == [None] and tier.stats()["corrupt"] == 1


def test_bad_url_is_refused():
    with pytest.raises(ConfigError, match="redis://"):
        RedisTier("http://user:pw@localhost:6379")


def test_constructing_touches_no_network():
    tier = RedisTier("redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert tier._client is None
    with pytest.raises(CacheError, match=r"redis://127.0.0.1:1/0 failed: ConnectionError.*Is the server running"):
        tier.get_many(["k"])
    assert tier.stats()["errors"] == 1


async def test_async_twins_across_event_loops(redis_server):
    tier = RedisTier(redis_server.url)
    await tier.aset_many([("a", vec_for("a"))], ttl=30)
    got = await tier.aget_many(["a", "b"])
    np.testing.assert_array_equal(got[0], vec_for("a"))
    assert got[1] is None

    def other_loop() -> list:
        return asyncio.run(tier.aget_many(["a"]))  # a client is bound to its loop; a new loop gets its own

    assert (await asyncio.to_thread(other_loop))[0] is not None
    await tier.aclose()
