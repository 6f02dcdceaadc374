"""SQLite tier: the embedded default persistent cache. WAL mode, safe for several processes, TTL."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from .._files import cache_dir
from .._sqlite import (
    BUSY,
    CANNOT_WRITE,
    Identity,
    connect,
    discard_stale_journal,
    error_code,
    identity,
    journal_identity,
)
from ..errors import CacheError, ConfigError, CorruptEntry, EmbedOptError
from .base import KEY_PREFIX, TierCounters, TierEntry, key_fingerprint
from .entry import decode_vector, encode_vector

__all__ = ["SQLiteTier", "default_sqlite_path"]

logger = logging.getLogger("embedopt")

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
#: Rows held back while the file is locked, retried with the next write; older ones are dropped past this.
_QUEUE_MAX = 10_000

_Row = tuple[str, bytes, float | None]


def default_sqlite_path() -> Path:
    """``$EMBEDOPT_HOME/vectors.sqlite3`` (``~/.cache/embedopt`` when the variable is unset)."""
    return cache_dir() / "vectors.sqlite3"


class SQLiteTier:
    """Vectors in one SQLite file, shared safely by threads and processes.

    WAL journal: readers never block the writer and the writer never blocks readers. Each write is one
    transaction, so a crash keeps every batch written before it. Entries carry an expiry time (wall clock, so
    every process agrees); an expired entry is a miss. Each value is checksummed and bound to its key, so a
    damaged row, a row of another type, or a value moved to another key is a miss (counted as ``corrupt``) that
    the next write of that key replaces.

    A request never waits on the file longer than ``lock_timeout``: a write that cannot get the lock in that
    time is queued (``deferred`` in ``stats()``, one warning per spell) and retried with the next write; the
    queue holds up to 10,000 rows and drops the oldest past that (``dropped``). A file this process may not
    write is opened read-only and serves hits; writes to it are skipped (``dropped``, one warning). A file
    deleted or replaced while in use is noticed on the next call and opened afresh (``reopened``), so later
    writes land in the file other processes see.

    Args:
        path: the database file (created with its folder); default ``$EMBEDOPT_HOME/vectors.sqlite3``.
        ttl: default lifetime in seconds of entries written without one (``None``: forever).
        timeout: seconds maintenance calls (``clear``, ``usage``, ``delete``, ``purge_expired``) wait for
            another process's lock before they fail.
        lock_timeout: seconds a lookup or a write-back waits for another process's lock; ``0`` never waits.
        read_only: open the file for reading only, even where it could be written.
    """

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str] | None = None, *, ttl: float | None = None,
                 timeout: float = 30.0, lock_timeout: float = 1.0, read_only: bool = False) -> None:
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"ttl must be > 0 seconds or None, got {ttl}")
        _check_seconds("timeout", timeout, zero=False)
        _check_seconds("lock_timeout", lock_timeout, zero=True)
        self.path = Path(path) if path is not None else default_sqlite_path()
        if os.path.isdir(self.path):
            raise ConfigError(f"SQLite cache path {self.path} is a folder; give a file name such as vectors.sqlite3")
        self.ttl = ttl
        self.timeout = float(timeout)
        self.lock_timeout = float(lock_timeout)
        self.read_only = bool(read_only)
        self.counters = TierCounters()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._identity: Identity | None = None
        self._journal: tuple[Identity | None, Identity | None] = (None, None)
        self._moved = False
        self._key = os.path.abspath(self.path)
        self._wait_ms = -1
        self._writable = not read_only
        self._queue: dict[str, _Row] = {}
        self._writes = 0
        self._deferred = self._dropped = self._reopened = 0
        self._locked_spell = False

    # ------------------------------------------------------------------------------------------- connection
    def _connect(self) -> sqlite3.Connection:
        """The connection of this process, opened on first use (a forked child opens its own) and opened afresh
        when the file was deleted or replaced since."""
        if self._conn is not None and self._pid == os.getpid():
            if self._identity is None or self._identity == identity(self.path):
                return self._conn
            logger.warning("embedopt: SQLite cache %s was deleted or replaced while in use; opening the file now at "
                           "that path (what was written to the old one went with it)", self.path)
            self._reopened += 1
            self._drop_connection()
            self._moved = True
        if self._moved:
            self._reopen_when_safe()
        conn = self._open()
        self._conn, self._pid, self._wait_ms = conn, os.getpid(), int(self.lock_timeout * 1000)
        self._identity, self._journal = identity(self.path), journal_identity(self.path)
        _OPEN.add(self._key, self._identity)
        return conn

    def _reopen_when_safe(self) -> None:
        """Open the new file only once the old file's journal is out of the way: a tier of this process already
        on the new file shows it is; else wait (CacheError, the tier skipped meanwhile) while tiers of this process
        are still on the old file, and while other processes use the old journal."""
        current = identity(self.path)
        new, old = _OPEN.census(self._key, current)
        if not new and (old or not discard_stale_journal(self.path, self._journal)):
            raise CacheError(f"SQLite cache {self.path} was deleted or replaced, and other connections still use the "
                             "old file's journal; it is opened again once they let go of it (each notices on its next "
                             "call to the cache)", tier=self.name)
        self._moved = False

    def _open(self) -> sqlite3.Connection:
        if self._writable and os.path.exists(self.path) and not os.access(self.path, os.W_OK):
            self._now_read_only("this process may not write it")
        if not self._writable:
            conn = connect(self.path, timeout=self.lock_timeout, read_only=True)
        else:
            try:
                conn = connect(self.path, timeout=self.lock_timeout)
            except sqlite3.OperationalError as exc:
                if error_code(exc) not in CANNOT_WRITE or not os.path.exists(self.path):
                    raise
                self._now_read_only(f"{exc}; its folder may not be writable")
                conn = connect(self.path, timeout=self.lock_timeout, read_only=True)
        try:
            schema = self._schema(conn)
        except BaseException:
            conn.close()
            raise
        if schema != _SCHEMA_VERSION:
            conn.close()
            raise ConfigError(f"{self.path} has cache schema {schema!r}, this embedopt uses {_SCHEMA_VERSION}; "
                              "point the cache at a new file or clear it with `embedopt cache clear`")
        return conn

    def _schema(self, conn: sqlite3.Connection) -> object:
        """The file's schema version, creating the tables first where they are missing (a write: only then)."""
        (tables,) = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
                                 "('embedopt_meta', 'vectors')").fetchone()
        if tables < 2 and self._writable:
            conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM embedopt_meta WHERE name='schema'").fetchone()
        return row[0] if row else None

    def _now_read_only(self, why: str) -> None:
        if self._writable:
            self._writable = False
            logger.warning("embedopt: SQLite cache %s cannot be written (%s); serving hits from it and skipping "
                           "writes (counted as `dropped` in its stats)", self.path, why)

    def _drop_connection(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            with suppress(sqlite3.Error):
                self._conn.close()
            _OPEN.remove(self._key, self._identity)
        self._conn, self._identity = None, None

    @contextmanager
    def _db(self, wait: float) -> Iterator[sqlite3.Connection]:
        """The connection, under this tier's lock, waiting at most ``wait`` seconds for another process's lock;
        SQLite and OS errors become a counted CacheError."""
        with self._lock:
            try:
                conn = self._connect()
                ms = int(wait * 1000)
                if ms != self._wait_ms:
                    conn.execute(f"PRAGMA busy_timeout={ms}")
                    self._wait_ms = ms
                yield conn
            except EmbedOptError:
                self.counters.error()
                raise
            except (sqlite3.Error, OSError) as exc:
                self.counters.error()
                raise CacheError(f"SQLite cache {self.path} failed: {type(exc).__name__}: {exc}. Check that the "
                                 "folder is writable and the disk not full; `embedopt cache clear` starts afresh.",
                                 tier=self.name) from exc

    def _absent(self) -> bool:
        """No file and no connection: maintenance calls report an empty cache instead of creating one."""
        with self._lock:
            return self._conn is None and not os.path.exists(self.path)

    def close(self) -> None:
        """Write what is queued (waiting at most ``lock_timeout``) and close the connection."""
        with self._lock:
            if self._queue:
                with suppress(CacheError):
                    self.set_many([])
            self._drop_connection()

    # ------------------------------------------------------------------------------------------ CacheTier
    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(keys)
        if not keys:
            return out
        where: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        now = time.time()
        hits = corrupt = nbytes = 0
        with self._db(self.lock_timeout) as db:
            queued = [self._queue[k] for k in where if k in self._queue]
            unique = [k for k in where if k not in self._queue]
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                queued.extend(db.execute(f"SELECT key, value, expires FROM vectors WHERE key IN ({marks})", chunk))
        for key, value, expires in queued:
            places = where.get(key) if isinstance(key, str) else None
            if places is None:
                continue
            if expires is not None:
                if isinstance(expires, bool) or not isinstance(expires, (int, float)):
                    corrupt += 1  # a row of the wrong type: a miss, replaced by the write-back
                    continue
                if expires <= now:
                    continue
            try:
                vec = decode_vector(value, key=key)
            except CorruptEntry:
                corrupt += 1
                continue
            nbytes += vec.nbytes
            for i in places:
                out[i] = vec
                hits += 1
        self.counters.read(hits, len(keys) - hits, nbytes, corrupt)
        return out

    def set_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None:
        ttl = self.ttl if ttl is None else ttl
        expires = time.time() + ttl if ttl is not None else None
        rows: list[_Row] = [(key, encode_vector(vec, key=key), expires) for key, vec in items]
        with self._lock:
            if not rows and not self._queue:
                return
            if not self._writable:
                self._dropped += len(rows)
                return
            pending = list({**self._queue, **{r[0]: r for r in rows}}.values())
            with self._db(self.lock_timeout) as db:
                failure = self._write(db, pending)
            if failure is None:
                self._queue.clear()
                if self._locked_spell:
                    self._locked_spell = False
                    logger.info("embedopt: SQLite cache %s can be written again; queued writes are stored", self.path)
                self.counters.wrote(sum(len(r[1]) for r in pending))
            elif error_code(failure) in CANNOT_WRITE:
                self._now_read_only(str(failure))
                self._dropped += len(pending)
                self._queue.clear()
            else:
                self._defer(rows, failure)

    def _write(self, db: sqlite3.Connection, rows: list[_Row]) -> sqlite3.OperationalError | None:
        """One transaction; a lock not had within ``lock_timeout`` or a file that cannot be written is returned,
        not raised (the caller queues or drops the rows), anything else raises."""
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO vectors (key, value, expires) VALUES (?, ?, ?)", rows)
                self._writes += len(rows)
                if self._writes >= _SWEEP_EVERY:
                    self._writes = 0
                    db.execute("DELETE FROM vectors WHERE expires IS NOT NULL AND expires <= ?", (time.time(),))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if error_code(exc) in BUSY | CANNOT_WRITE:
                return exc
            raise
        return None

    def _defer(self, rows: list[_Row], exc: BaseException) -> None:
        for row in rows:
            self._queue.pop(row[0], None)
            self._queue[row[0]] = row
        self._deferred += len(rows)
        while len(self._queue) > _QUEUE_MAX:
            self._queue.pop(next(iter(self._queue)))
            self._dropped += 1
        if not self._locked_spell:
            self._locked_spell = True
            logger.warning("embedopt: SQLite cache %s stayed locked by another process for %g s (%s); requests go on, "
                           "and writes are queued (up to %d rows) and retried with the next write", self.path,
                           self.lock_timeout, exc, _QUEUE_MAX)

    def delete(self, keys: Sequence[str]) -> int:
        removed = 0
        with self._lock:
            for k in keys:
                removed += self._queue.pop(k, None) is not None
            if self._absent():
                return removed
            with self._db(self.timeout) as db:
                for start in range(0, len(keys), _CHUNK):
                    chunk = list(keys[start:start + _CHUNK])
                    cur = db.execute(f"DELETE FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                    removed += cur.rowcount
        return removed

    def stats(self) -> dict[str, int]:
        """The common counters plus ``deferred`` (writes queued while the file was locked), ``dropped`` (writes
        never stored: a read-only file, a full queue), ``queued`` (rows waiting now) and ``reopened``."""
        with self._lock:
            extra = {"deferred": self._deferred, "dropped": self._dropped, "queued": len(self._queue),
                     "reopened": self._reopened}
        return {**self.counters.as_dict(), **extra}

    async def aget_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        return await asyncio.to_thread(self.get_many, keys)

    async def aset_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None:
        await asyncio.to_thread(self.set_many, items, ttl)

    # ----------------------------------------------------------------------------------------- maintenance
    def clear(self, fingerprint: str | None = None) -> int:
        """Delete every entry, or those whose fingerprint id starts with ``fingerprint``; returns how many."""
        with self._lock:
            doomed = [k for k in self._queue if fingerprint is None or key_fingerprint(k).startswith(fingerprint)]
            for k in doomed:
                del self._queue[k]
            if self._absent():
                return 0
            with self._db(self.timeout) as db:
                if fingerprint is None:
                    return int(db.execute("DELETE FROM vectors").rowcount)
                pattern = KEY_PREFIX + fingerprint.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                return int(db.execute("DELETE FROM vectors WHERE key LIKE ? ESCAPE '\\'", (pattern,)).rowcount)

    def purge_expired(self) -> int:
        if self._absent():
            return 0
        with self._db(self.timeout) as db:
            return int(db.execute("DELETE FROM vectors WHERE expires IS NOT NULL AND expires <= ?",
                                  (time.time(),)).rowcount)

    def usage(self) -> dict[str, int]:
        """Entries and stored bytes (keys and values), expired entries included until they are swept. A file
        that does not exist is reported empty, and not created."""
        if self._absent():
            return {"entries": 0, "bytes": 0}
        with self._db(self.timeout) as db:
            n, size = db.execute("SELECT count(*), coalesce(sum(length(key) + length(value)), 0) FROM vectors"
                                 ).fetchone()
        return {"entries": int(n), "bytes": int(size)}

    def usage_by_fingerprint(self) -> dict[str, int]:
        """Entries per fingerprint id: which models and input types the cache holds."""
        if self._absent():
            return {}
        with self._db(self.timeout) as db:
            rows = db.execute("SELECT substr(key, 1, length(key) - 65), count(*) FROM vectors GROUP BY 1").fetchall()
        return {key_fingerprint(f"{prefix}:" + "0" * 64): int(n) for prefix, n in rows}

    def __repr__(self) -> str:
        ro = ", read_only=True" if not self._writable else ""
        return f"SQLiteTier(path={str(self.path)!r}, ttl={self.ttl}{ro})"


class _Connections:
    """Which main files (device, inode) this process's SQLite tiers have open, per path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._by_path: dict[str, Counter[Identity | None]] = {}

    def _counts(self, key: str) -> Counter[Identity | None]:
        if self._pid != os.getpid():  # a forked child: its parent's connections are not its own
            self._pid, self._by_path = os.getpid(), {}
        return self._by_path.setdefault(key, Counter())

    def add(self, key: str, ident: Identity | None) -> None:
        with self._lock:
            self._counts(key)[ident] += 1

    def remove(self, key: str, ident: Identity | None) -> None:
        with self._lock:
            counts = self._counts(key)
            if counts[ident] > 0:
                counts[ident] -= 1

    def census(self, key: str, current: Identity | None) -> tuple[int, int]:
        """Connections of this process to the file now at ``key``, and to files that were there before."""
        with self._lock:
            counts = self._counts(key)
            new = counts[current] if current is not None else 0
            return new, sum(n for ident, n in counts.items() if ident != current)


_OPEN = _Connections()
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _check_seconds(label: str, value: object, *, zero: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < math.inf
    if not ok or (value == 0 and not zero):
        raise ConfigError(f"{label} must be a finite number of seconds {'>=' if zero else '>'} 0, got {value!r}")


def _build(part: str, ttl: float | None) -> SQLiteTier:
    """``sqlite[:PATH][?lock_timeout=S&timeout=S&read_only=1]``."""
    _, _, rest = part.partition(":")
    path, _, query = rest.rpartition("?") if "?" in rest else (rest, "", "")
    seconds = {"lock_timeout": 1.0, "timeout": 30.0}
    read_only = False
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "read_only":
            if value.lower() not in _TRUE + _FALSE:
                raise ConfigError(f"read_only must be 1 or 0 (true/false), got {value!r}")
            read_only = value.lower() in _TRUE
        elif name in seconds:
            try:
                seconds[name] = float(value)
            except ValueError:
                raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
        else:
            raise ConfigError(f"unknown SQLite cache option {name!r}; options: lock_timeout, timeout, read_only "
                              "(sqlite:PATH?lock_timeout=0.5&read_only=1)")
    return SQLiteTier(path or None, ttl=ttl, timeout=seconds["timeout"], lock_timeout=seconds["lock_timeout"],
                      read_only=read_only)


SPEC = TierEntry(schemes=("sqlite",), build=_build,
                 summary="one SQLite file, shared by threads and processes ($EMBEDOPT_HOME/vectors.sqlite3 default; "
                         "?lock_timeout=SECONDS, the longest a request waits on another process's lock, 1 by "
                         "default; ?read_only=1)",
                 example="sqlite:/var/cache/vectors.sqlite3")
