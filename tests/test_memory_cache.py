import time

import numpy as np

from embedopt import CacheTier, MemoryTier


def vec(x: float, dim: int = 4) -> np.ndarray:
    return np.full(dim, x, dtype=np.float32)


def test_memory_tier_satisfies_the_protocol():
    assert isinstance(MemoryTier(), CacheTier)


def test_lru_eviction_is_bounded_by_bytes():
    per_entry = 16 + len("k0")
    tier = MemoryTier(max_bytes=3 * per_entry)
    tier.set_many([(f"k{i}", vec(i)) for i in range(3)])
    tier.get_many(["k0"])  # k0 becomes most recent, so k1 is the oldest
    tier.set_many([("k3", vec(3))])
    got = tier.get_many(["k0", "k1", "k2", "k3"])
    assert [g is not None for g in got] == [True, False, True, True]
    assert tier.stats()["stored_bytes"] <= 3 * per_entry and tier.stats()["evictions"] == 1


def test_ttl_expires_entries():
    tier = MemoryTier()
    tier.set_many([("a", vec(1))], ttl=0.05)
    assert tier.get_many(["a"])[0] is not None
    time.sleep(0.08)
    assert tier.get_many(["a"])[0] is None


def test_returned_vectors_cannot_poison_the_cache():
    tier = MemoryTier()
    v = vec(1)
    tier.set_many([("a", v)])
    v[:] = 9  # the caller's array changes; the cached copy does not
    got = tier.get_many(["a"])[0]
    assert got is not None and (got == 1).all() and not got.flags.writeable


def test_delete_and_stats():
    tier = MemoryTier()
    tier.set_many([("a", vec(1)), ("b", vec(2))])
    assert tier.delete(["a", "zzz"]) == 1
    tier.get_many(["a", "b"])
    s = tier.stats()
    assert (s["hits"], s["misses"], s["entries"]) == (1, 1, 1)
