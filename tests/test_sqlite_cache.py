"""SQLiteTier: the embedded persistent tier (real SQLite files, several real processes)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from embedopt import ConfigError, Embedder
from embedopt.cache import CacheTier, SQLiteTier, TieredCache, cache_key, decode_vector
from embedopt.cli import main
from embedopt.fingerprint import Fingerprint
from embedopt.providers import FunctionProvider
from embedopt.specs import open_cache

from .conftest import hash_vectors

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


def _embedder(cache: object) -> Embedder:
    return Embedder(FunctionProvider(lambda t, k: hash_vectors(t, k), dim=16, model="fake-hash"), cache=cache)


# --------------------------------------------------------------------------------------- malformed rows (#4)
@pytest.mark.parametrize(("column", "sql_value"), [
    ("value", "'a TEXT value'"), ("value", "3.25"), ("value", "9223372036854775807"), ("value", "x'00'"),
    ("value", "zeroblob(100000)"), ("expires", "'tomorrow'"), ("expires", "x'01'"),
])
def test_a_malformed_row_is_a_counted_miss_and_the_write_back_replaces_it(tmp_path, column, sql_value):
    """Regression (issue 17): a row holding a TEXT, REAL or huge INTEGER value, or a TEXT expiry, raised
    TypeError or MemoryError (``bytes()`` of a huge integer) instead of CorruptEntry; the breaker opened, later
    requests skipped the tier, and the write-back that would have replaced the row was skipped with it."""
    tier = SQLiteTier(tmp_path / "c.sqlite3")
    cache = TieredCache([tier])
    e = _embedder(cache)
    texts = ["alpha", "beta"]
    first = e.embed(texts)
    key = cache_key(e.fingerprint("document"), "alpha")
    with sqlite3.connect(tier.path) as db:
        db.execute(f"UPDATE vectors SET {column} = {sql_value} WHERE key = ?", (key,))
    np.testing.assert_array_equal(e.embed(texts), first)
    report = cache.tier_stats()["sqlite"]
    assert (report["corrupt"], report["errors"], report["state"], report["trips"]) == (1, 0, "closed", 0)
    assert (e.stats.cache_hits, e.stats.computed) == (1, 3)
    np.testing.assert_array_equal(e.embed(texts), first)  # healed: all hits now
    assert (e.stats.cache_hits, e.stats.computed) == (3, 3)
    with sqlite3.connect(tier.path) as db:
        value, expires = db.execute("SELECT value, expires FROM vectors WHERE key = ?", (key,)).fetchone()
    assert expires is None
    np.testing.assert_array_equal(decode_vector(value, key=key), first[0])


def test_values_swapped_between_keys_are_refused(tmp_path):
    """Regression (issue 17): the checksum covered the value but not its key, so two same-size values swapped
    between rows were served, each as the other text's vector."""
    tier = SQLiteTier(tmp_path / "c.sqlite3")
    e = _embedder(tier)
    first = e.embed(["alpha", "beta"])
    ka, kb = (cache_key(e.fingerprint("document"), t) for t in ("alpha", "beta"))
    with sqlite3.connect(tier.path) as db:
        va, vb = (db.execute("SELECT value FROM vectors WHERE key = ?", (k,)).fetchone()[0] for k in (ka, kb))
        db.execute("UPDATE vectors SET value = ? WHERE key = ?", (vb, ka))
        db.execute("UPDATE vectors SET value = ? WHERE key = ?", (va, kb))
    assert tier.get_many([ka, kb]) == [None, None] and tier.stats()["corrupt"] == 2
    np.testing.assert_array_equal(e.embed(["alpha", "beta"]), first)
    assert e.stats.cache_hits == 0 and e.stats.computed == 4


# ------------------------------------------------------------------------------------------- locked file (#8)
def test_a_locked_file_costs_a_request_at_most_lock_timeout_and_queued_writes_land_later(tmp_path):
    """Regression (issue 17): SQLite's 30 s busy wait sat in the request path: while another process held the
    write lock, each request stalled 30 s on the write-back. Now it waits at most ``lock_timeout``; the rows
    are queued (served from the queue meanwhile), and stored by the first write after the lock is let go."""
    path = tmp_path / "c.sqlite3"
    tier = SQLiteTier(path, lock_timeout=0.2)
    e = _embedder(tier)
    e.embed(["warm"])
    keys = [cache_key(e.fingerprint("document"), t) for t in ("one", "two", "three")]
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        start = time.monotonic()
        out = e.embed(["one", "two", "warm"])
        elapsed = time.monotonic() - start
        np.testing.assert_array_equal(out, hash_vectors(["one", "two", "warm"], "document") /
                                      np.linalg.norm(hash_vectors(["one", "two", "warm"], "document"), axis=1,
                                                     keepdims=True))
        assert elapsed < 10, f"a request waited {elapsed:.1f} s on a locked cache"
        assert e.stats.cache_hits == 1  # WAL: reads go on while another connection writes
        s = tier.stats()
        assert (s["deferred"], s["queued"], s["errors"]) == (2, 2, 0)
        assert all(v is not None for v in tier.get_many(keys[:2]))  # served from the queue
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT count(*) FROM vectors").fetchone()[0] == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    e.embed(["three"])
    assert tier.stats()["queued"] == 0
    found = SQLiteTier(path).get_many(keys)
    assert all(v is not None for v in found)


def test_queued_writes_are_capped_and_stored_on_close(tmp_path, monkeypatch):
    """The queue behind a locked file is bounded (the oldest rows are dropped and counted), and close() stores
    what it holds."""
    import embedopt.cache.sqlite as module

    monkeypatch.setattr(module, "_QUEUE_MAX", 3)
    path = tmp_path / "c.sqlite3"
    tier = SQLiteTier(path, lock_timeout=0)
    tier.set_many([("warm", vec_for("warm"))])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for k in ("a", "b", "c", "d", "e"):
            tier.set_many([(k, vec_for(k))])
        s = tier.stats()
        assert (s["deferred"], s["queued"], s["dropped"]) == (5, 3, 2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    tier.close()
    got = SQLiteTier(path).get_many(["a", "b", "c", "d", "e"])
    assert [g is not None for g in got] == [False, False, True, True, True]
    np.testing.assert_array_equal(got[4], vec_for("e"))


def test_a_file_whose_readers_are_locked_out_is_skipped_within_lock_timeout(tmp_path):
    """Regression (issue 17): a file in rollback-journal mode under another process's exclusive lock made the
    first request wait SQLite's 30 s busy timeout before the tier was given up."""
    path = tmp_path / "c.sqlite3"
    writer = SQLiteTier(path)
    writer.set_many([("k", vec_for("k"))])
    writer.close()
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("PRAGMA journal_mode=DELETE")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        e = _embedder(SQLiteTier(path, lock_timeout=0.2))
        start = time.monotonic()
        out = e.embed(["one"])
        assert time.monotonic() - start < 10
        assert out.shape == (1, 16) and e.stats.computed == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_lock_timeout_and_read_only_in_the_spec():
    tier = open_cache("sqlite:/nonexistent-dir/c.sqlite3?lock_timeout=0.25&read_only=1").tiers[0]
    assert isinstance(tier, SQLiteTier)
    assert (str(tier.path), tier.lock_timeout, tier.read_only, tier.timeout) == (
        "/nonexistent-dir/c.sqlite3", 0.25, True, 30.0)
    assert SQLiteTier(None).lock_timeout <= 1.0  # the default keeps a request's wait short
    for bad, match in [("?lock_timeout=-1", "lock_timeout"), ("?lock_timeout=soon", "lock_timeout"),
                       ("?timeout=0", "timeout"), ("?read_only=maybe", "read_only"), ("?busy=1", "lock_timeout")]:
        with pytest.raises(ConfigError, match=match):
            open_cache(f"sqlite:/tmp/c.sqlite3{bad}")


# --------------------------------------------------------------------------------- deleted, replaced (#10)
def test_a_deleted_file_is_noticed_and_later_writes_land_in_the_new_one(tmp_path):
    """Regression (issue 17): after the cache file was deleted while in use, every later write went to the
    unlinked file through the open connection, and was lost without a word."""
    path = tmp_path / "c.sqlite3"
    tier = SQLiteTier(path)
    tier.set_many([("before", vec_for("before"))])
    os.unlink(path)
    tier.set_many([("after", vec_for("after"))])
    assert tier.stats()["reopened"] == 1
    fresh = SQLiteTier(path).get_many(["before", "after"])
    assert fresh[0] is None
    np.testing.assert_array_equal(fresh[1], vec_for("after"))


def test_a_replaced_file_is_noticed_and_used(tmp_path):
    path, other = tmp_path / "c.sqlite3", tmp_path / "other.sqlite3"
    tier = SQLiteTier(path)
    tier.set_many([("old", vec_for("old"))])
    replacement = SQLiteTier(other)
    replacement.set_many([("new", vec_for("new"))])
    replacement.close()
    os.replace(other, path)
    got = tier.get_many(["old", "new"])
    assert got[0] is None and got[1] is not None and tier.stats()["reopened"] == 1
    tier.set_many([("later", vec_for("later"))])
    assert SQLiteTier(path).get_many(["later"])[0] is not None


# ---------------------------------------------------------------------------------------- read-only (#10)
def test_read_only_tier_serves_hits_and_counts_skipped_writes(tmp_path):
    path = tmp_path / "c.sqlite3"
    writer = SQLiteTier(path)
    writer.set_many([("a", vec_for("a"))])
    writer.close()
    tier = SQLiteTier(path, read_only=True)
    np.testing.assert_array_equal(tier.get_many(["a"])[0], vec_for("a"))
    tier.set_many([("b", vec_for("b"))])
    assert tier.stats()["dropped"] == 1 and tier.stats()["errors"] == 0
    assert SQLiteTier(path).get_many(["b"]) == [None]
    assert "read_only=True" in repr(tier)


def _unprivileged(fn, *args) -> dict:
    """Run ``fn(*args)`` in a forked child without root's right to write anything (as ``nobody`` when this
    process is root), and return the dict it returns."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            os.write(write, json.dumps(fn(*args)).encode())
        except BaseException as exc:  # reported to the parent
            os.write(write, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = json.loads(pipe.read() or "{}")
    os.waitpid(pid, 0)
    return report


def _read_only_round(path: str) -> dict:
    tier = SQLiteTier(path)
    got = tier.get_many(["a", "missing"])
    tier.set_many([("b", vec_for("b"))])
    return {"a": got[0].tolist() if got[0] is not None else None, "missing": got[1] is None,
            "stats": tier.stats(), "repr": repr(tier)}


@pytest.mark.parametrize("folder_writable", [True, False])
def test_a_file_this_process_may_not_write_is_opened_read_only_and_serves_hits(tmp_path, folder_writable):
    """Regression (issue 17): a cache file the process could read but not write gave 0 hits: opening it ran
    the schema's INSERT, which failed, and the tier was switched off. It is now opened read-only (immutable
    where the folder does not allow SQLite's shared-memory file) and serves hits; writes are counted as
    dropped."""
    folder = Path(tempfile.mkdtemp(prefix="embedopt-ro-"))  # pytest's tmp_path is root's alone
    path = folder / "c.sqlite3"
    writer = SQLiteTier(path)
    writer.set_many([("a", vec_for("a"))])
    writer.close()
    path.chmod(0o444)
    folder.chmod(0o777 if folder_writable else 0o555)
    try:
        report = _unprivileged(_read_only_round, str(path))
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)
    assert "error" not in report, report
    np.testing.assert_array_equal(np.asarray(report["a"], np.float32), vec_for("a"))
    assert report["missing"] and report["stats"]["dropped"] == 1 and report["stats"]["errors"] == 0
    assert "read_only=True" in report["repr"]


# ----------------------------------------------------------------------------------- stats on a new path (#13)
def test_cache_stats_on_a_path_that_does_not_exist_creates_nothing(tmp_path, capsys):
    """Regression (issue 17): ``embedopt cache stats`` (and clear) on a new path created the folder and an empty
    database file."""
    path = tmp_path / "new" / "c.sqlite3"
    assert main(["cache", "stats", "--cache", f"sqlite:{path}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sqlite"]["entries"] == 0
    assert main(["cache", "clear", "--cache", f"sqlite:{path}"]) == 0
    tier = SQLiteTier(path)
    assert (tier.usage(), tier.usage_by_fingerprint(), tier.purge_expired(), tier.delete(["k"])) == (
        {"entries": 0, "bytes": 0}, {}, 0, 0)
    assert not (tmp_path / "new").exists()


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
