"""The one way embedopt opens a SQLite file: WAL journal (readers never block the writer), a bounded wait for
another process's write lock, autocommit so each statement or explicit transaction is its own unit; or read-only,
for files this process may not write."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

__all__ = ["BUSY", "CANNOT_WRITE", "connect", "error_code"]

#: Primary result codes: another connection holds the lock (SQLITE_BUSY, SQLITE_LOCKED).
BUSY = frozenset({5, 6})
#: Primary result codes: the file or its folder cannot be written (SQLITE_READONLY, SQLITE_CANTOPEN).
CANNOT_WRITE = frozenset({8, 14})


def error_code(exc: BaseException) -> int:
    """The primary SQLite result code of an error (extended codes folded: SQLITE_BUSY_SNAPSHOT is SQLITE_BUSY),
    or -1 when it carries none."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else -1


def connect(path: str | os.PathLike[str], *, timeout: float = 30.0, schema: str | None = None,
            read_only: bool = False) -> sqlite3.Connection:
    """Open ``path`` (creating its folder) in WAL mode, shareable between threads (callers hold their own lock)
    and safe for several processes; ``schema`` is run once (``CREATE TABLE IF NOT EXISTS ...``).
    ``":memory:"`` opens a private in-memory database.

    ``read_only`` opens an existing file for reading only (nothing is created, no pragma or schema is run). A
    WAL file whose folder does not let this process create the shared-memory file is opened as immutable: what
    other processes write to it later is not seen."""
    target = os.fspath(path)
    if read_only:
        return _connect_read_only(target, timeout)
    if target != ":memory:":
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(target, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        if target != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        if schema:
            conn.executescript(schema)
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _connect_read_only(target: str, timeout: float) -> sqlite3.Connection:
    if not os.path.isfile(target):
        raise sqlite3.OperationalError(f"no such file: {target}")
    base = "file:" + quote(os.path.abspath(target))
    try:
        return _open_uri(base + "?mode=ro", timeout)
    except sqlite3.Error as exc:
        if error_code(exc) not in CANNOT_WRITE:  # not "cannot make the -shm file": a real failure
            raise
    return _open_uri(base + "?immutable=1", timeout)


def _open_uri(uri: str, timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a WAL file needs its -shm file here
    except sqlite3.Error:
        conn.close()
        raise
    return conn
