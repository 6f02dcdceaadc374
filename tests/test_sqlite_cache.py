"""SQLiteTier: the embedded persistent tier (real SQLite files, several real processes)."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import time

import numpy as np
import pytest

from embedopt import ConfigError
from embedopt.cache import CacheTier, SQLiteTier, cache_key, decode_vector
from embedopt.fingerprint import Fingerprint

FP = Fingerprint("fake", "fake-hash", "r1", "document", None, 8, True)


def vec_for(key: str, dim: int = 8) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def test_round_trip_missing_and_duplicate_keys(tmp_path):
    tier = SQLiteTier(tmp_path / "c.sqlite3")
    assert isinstance(tier, CacheTier)
    tier.set_many([("a", vec_for("a")), ("b", vec_for("b"))])
    got = tier.get_many(["b", "zzz", "a", "b"])
    assert got[1] is None
    np.testing.assert_array_equal(got[0], vec_for("b"))
    np.testing.assert_array_equal(got[2], vec_for("a"))
    np.testing.assert_array_equal(got[3], vec_for("b"))
    s = tier.stats()
    assert (s["hits"], s["misses"], s["errors"]) == (3, 1, 0)
    # header, key tag, 8 floats, checksum; duplicates are read once
    assert s["bytes_written"] == 2 * (8 + 8 + 32 + 4) and s["bytes_read"] == 2 * 32


def test_wal_mode_and_persistence_across_instances(tmp_path):
    path = tmp_path / "sub" / "c.sqlite3"
    SQLiteTier(path).set_many([("k", vec_for("k"))])
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    np.testing.assert_array_equal(SQLiteTier(path).get_many(["k"])[0], vec_for("k"))


def test_lookups_larger_than_one_in_clause(tmp_path):
    """Regression guard: lookups are chunked so more keys than SQLite's variable limit still work."""
    tier = SQLiteTier(tmp_path / "c.sqlite3")
    keys = [f"k{i}" for i in range(2500)]
    tier.set_many([(k, vec_for(k)) for k in keys[::2]])
    got = tier.get_many(keys)
    assert [g is not None for g in got] == [i % 2 == 0 for i in range(2500)]
    np.testing.assert_array_equal(got[1234], vec_for("k1234"))


def test_ttl_expires_entries(tmp_path):
    tier = SQLiteTier(tmp_path / "c.sqlite3", ttl=60)
    tier.set_many([("short", vec_for("short"))], ttl=0.05)
    tier.set_many([("default", vec_for("default"))])
    time.sleep(0.1)
    assert tier.get_many(["short", "default"])[0] is None
    assert tier.get_many(["default"])[0] is not None
    assert tier.purge_expired() == 1 and tier.usage()["entries"] == 1


def test_delete_clear_by_fingerprint_and_usage(tmp_path):
    tier = SQLiteTier(tmp_path / "c.sqlite3")
    q = Fingerprint("fake", "fake-hash", "r1", "query", None, 8, True)
    other = Fingerprint("fake", "other_model", "r1", "document", None, 8, True)
    items = [(cache_key(fp, t), vec_for(t)) for fp in (FP, q, other) for t in ("x", "y")]
    tier.set_many(items)
    assert tier.usage_by_fingerprint() == {FP.id: 2, q.id: 2, other.id: 2}
    assert tier.delete([items[0][0], "nope"]) == 1
    assert tier.clear(other.id) == 2  # '_' in the id is matched literally, not as a wildcard
    assert tier.clear("fake.fake-hash.query") == 2
    assert tier.usage()["entries"] == 1
    assert tier.clear() == 1 and tier.usage() == {"entries": 0, "bytes": 0}


def test_corrupt_row_is_a_miss_and_is_overwritten(tmp_path):
    path = tmp_path / "c.sqlite3"
    tier = SQLiteTier(path)
    tier.set_many([("a", vec_for("a")), ("b", vec_for("b"))])
    with sqlite3.connect(path) as db:
        raw = db.execute("SELECT value FROM vectors WHERE key='a'").fetchone()[0]
        db.execute("UPDATE vectors SET value=? WHERE key='a'", (raw[:-1] + bytes([raw[-1] ^ 1]),))
        db.execute("UPDATE vectors SET value=? WHERE key='b'", (b"\x80\x04pickle?",))
    assert tier.get_many(["a", "b"]) == [None, None]
    assert tier.stats()["corrupt"] == 2
    tier.set_many([("a", vec_for("a"))])
    np.testing.assert_array_equal(tier.get_many(["a"])[0], vec_for("a"))


def test_other_schema_is_refused_with_advice(tmp_path):
    path = tmp_path / "c.sqlite3"
    SQLiteTier(path).set_many([("a", vec_for("a"))])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE embedopt_meta SET value='99' WHERE name='schema'")
    with pytest.raises(ConfigError, match="embedopt cache clear"):
        SQLiteTier(path).get_many(["a"])


def test_a_folder_is_not_a_cache_file(tmp_path):
    with pytest.raises(ConfigError, match="folder"):
        SQLiteTier(tmp_path)


async def test_async_twins(tmp_path):
    tier = SQLiteTier(tmp_path / "c.sqlite3")
    await tier.aset_many([("a", vec_for("a"))])
    got = await tier.aget_many(["a", "b"])
    np.testing.assert_array_equal(got[0], vec_for("a"))
    assert got[1] is None


# ------------------------------------------------------------------------------------------ several processes
def _worker(path: str, seed: int, rounds: int, queue) -> None:  # runs in a child process
    rng = np.random.default_rng(seed)
    tier = SQLiteTier(path, timeout=60)
    keys = [f"shared-{i}" for i in range(300)]
    report = {"writes": 0, "reads": 0, "hits": 0, "wrong": 0, "error": None}
    try:
        for _ in range(rounds):
            batch = [keys[i] for i in rng.choice(len(keys), 20, replace=False)]
            tier.set_many([(k, vec_for(k)) for k in batch])
            report["writes"] += len(batch)
            look = [keys[i] for i in rng.choice(len(keys), 50, replace=False)]
            for k, v in zip(look, tier.get_many(look), strict=True):
                report["reads"] += 1
                if v is not None:
                    report["hits"] += 1
                    report["wrong"] += int(not np.array_equal(v, vec_for(k)))
    except Exception as exc:  # reported to the parent, which fails the test
        report["error"] = f"{type(exc).__name__}: {exc}"
    queue.put(report)


def test_four_processes_share_one_file(tmp_path):
    path = tmp_path / "shared.sqlite3"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(path), seed, 400, queue)) for seed in range(4)]
    for p in procs:
        p.start()
    reports = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert [r["error"] for r in reports] == [None] * 4
    assert sum(r["wrong"] for r in reports) == 0
    assert sum(r["writes"] for r in reports) == 4 * 400 * 20 and sum(r["hits"] for r in reports) > 0
    # every row in the file decodes and holds the vector of its key
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT key, value FROM vectors").fetchall()
    assert len(rows) == 300
    for key, value in rows:
        np.testing.assert_array_equal(decode_vector(value), vec_for(key))
