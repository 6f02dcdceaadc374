"""SQLite tier: the embedded default persistent cache. WAL mode, safe for several processes, TTL."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .._files import cache_dir
from .._sqlite import connect
from ..errors import CacheError, ConfigError, CorruptEntry, EmbedOptError
from .base import KEY_PREFIX, TierCounters, TierEntry, key_fingerprint
from .entry import decode_vector, encode_vector

__all__ = ["SQLiteTier", "default_sqlite_path"]

_SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS embedopt_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vectors_expires ON vectors(expires) WHERE expires IS NOT NULL;
INSERT OR IGNORE INTO embedopt_meta VALUES ('schema', '1');
"""
#: Keys per ``IN (...)`` lookup; well under SQLite's variable limit (999 on old builds, 32766 since 3.32).
_CHUNK = 500
#: Expired rows are swept after this many writes (reads already treat them as misses).
_SWEEP_EVERY = 5000


def default_sqlite_path() -> Path:
    """``$EMBEDOPT_HOME/vectors.sqlite3`` (``~/.cache/embedopt`` when the variable is unset)."""
    return cache_dir() / "vectors.sqlite3"


class SQLiteTier:
    """Vectors in one SQLite file, shared safely by threads and processes.

    WAL journal: readers never block the writer and the writer never blocks readers; writers queue on SQLite's
    lock for up to ``timeout`` seconds. Each write is one transaction, so a crash keeps every batch written
    before it. Entries carry an expiry time (wall clock, so every process agrees); an expired entry is a miss.

    Args:
        path: the database file (created with its folder); default ``$EMBEDOPT_HOME/vectors.sqlite3``.
        ttl: default lifetime in seconds of entries written without one (``None``: forever).
        timeout: seconds to wait for another process's write lock before the call fails.
    """

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str] | None = None, *, ttl: float | None = None,
                 timeout: float = 30.0) -> None:
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"ttl must be > 0 seconds or None, got {ttl}")
        self.path = Path(path) if path is not None else default_sqlite_path()
        if self.path.is_dir():
            raise ConfigError(f"SQLite cache path {self.path} is a folder; give a file name such as vectors.sqlite3")
        self.ttl = ttl
        self.timeout = timeout
        self.counters = TierCounters()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._writes = 0

    # ------------------------------------------------------------------------------------------- connection
    def _connect(self) -> sqlite3.Connection:
        """The connection of this process, opened on first use (a forked child opens its own)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        conn = connect(self.path, timeout=self.timeout, schema=_SCHEMA)
        try:
            (schema,) = conn.execute("SELECT value FROM embedopt_meta WHERE name='schema'").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        if schema != _SCHEMA_VERSION:
            conn.close()
            raise ConfigError(f"{self.path} has cache schema {schema}, this embedopt uses {_SCHEMA_VERSION}; "
                              "point the cache at a new file or clear it with `embedopt cache clear`")
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connect()
            except EmbedOptError:
                self.counters.error()
                raise
            except (sqlite3.Error, OSError) as exc:
                self.counters.error()
                raise CacheError(f"SQLite cache {self.path} failed: {type(exc).__name__}: {exc}. Check that the "
                                 "folder is writable and the disk not full; `embedopt cache clear` starts afresh.",
                                 tier=self.name) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------------------------------ CacheTier
    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(keys)
        if not keys:
            return out
        where: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        unique = list(where)
        now = time.time()
        hits = corrupt = nbytes = 0
        with self._db() as db:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT key, value, expires FROM vectors WHERE key IN ({marks})", chunk)
                for key, value, expires in rows:
                    if expires is not None and expires <= now:
                        continue
                    try:
                        vec = decode_vector(value)
                    except CorruptEntry:
                        corrupt += 1
                        continue
                    nbytes += vec.nbytes
                    for i in where[key]:
                        out[i] = vec
                        hits += 1
        self.counters.read(hits, len(keys) - hits, nbytes, corrupt)
        return out

    def set_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None:
        if not items:
            return
        ttl = self.ttl if ttl is None else ttl
        expires = time.time() + ttl if ttl is not None else None
        rows = [(key, encode_vector(vec), expires) for key, vec in items]
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO vectors (key, value, expires) VALUES (?, ?, ?)", rows)
                self._writes += len(rows)
                if self._writes >= _SWEEP_EVERY:
                    self._writes = 0
                    db.execute("DELETE FROM vectors WHERE expires IS NOT NULL AND expires <= ?", (time.time(),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self.counters.wrote(sum(len(r[1]) for r in rows))

    def delete(self, keys: Sequence[str]) -> int:
        removed = 0
        with self._db() as db:
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start:start + _CHUNK])
                cur = db.execute(f"DELETE FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                removed += cur.rowcount
        return removed

    def stats(self) -> dict[str, int]:
        return self.counters.as_dict()

    async def aget_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        return await asyncio.to_thread(self.get_many, keys)

    async def aset_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None:
        await asyncio.to_thread(self.set_many, items, ttl)

    # ----------------------------------------------------------------------------------------- maintenance
    def clear(self, fingerprint: str | None = None) -> int:
        """Delete every entry, or those whose fingerprint id starts with ``fingerprint``; returns how many."""
        with self._db() as db:
            if fingerprint is None:
                return db.execute("DELETE FROM vectors").rowcount
            pattern = KEY_PREFIX + fingerprint.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            return db.execute("DELETE FROM vectors WHERE key LIKE ? ESCAPE '\\'", (pattern,)).rowcount

    def purge_expired(self) -> int:
        with self._db() as db:
            return db.execute("DELETE FROM vectors WHERE expires IS NOT NULL AND expires <= ?",
                              (time.time(),)).rowcount

    def usage(self) -> dict[str, int]:
        """Entries and stored bytes (keys and values), expired entries included until they are swept."""
        with self._db() as db:
            n, size = db.execute("SELECT count(*), coalesce(sum(length(key) + length(value)), 0) FROM vectors"
                                 ).fetchone()
        return {"entries": int(n), "bytes": int(size)}

    def usage_by_fingerprint(self) -> dict[str, int]:
        """Entries per fingerprint id: which models and input types the cache holds."""
        with self._db() as db:
            rows = db.execute("SELECT substr(key, 1, length(key) - 65), count(*) FROM vectors GROUP BY 1").fetchall()
        return {key_fingerprint(prefix + ":" + "0" * 64): int(n) for prefix, n in rows}

    def __repr__(self) -> str:
        return f"SQLiteTier(path={str(self.path)!r}, ttl={self.ttl})"


def _build(part: str, ttl: float | None) -> SQLiteTier:
    _, _, path = part.partition(":")
    return SQLiteTier(path or None, ttl=ttl)


SPEC = TierEntry(schemes=("sqlite",), build=_build,
                 summary="one SQLite file, shared by threads and processes ($EMBEDOPT_HOME/vectors.sqlite3 default)",
                 example="sqlite:/var/cache/vectors.sqlite3")
