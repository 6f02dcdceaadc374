"""The one way embedopt opens a SQLite file: WAL journal (readers never block the writer), a bounded wait for
another process's write lock, autocommit so each statement or explicit transaction is its own unit; or read-only,
for files this process may not write."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
from pathlib import Path
from urllib.parse import quote

__all__ = ["BUSY", "CANNOT_WRITE", "Identity", "connect", "discard_stale_journal", "error_code", "identity",
           "journal_identity"]

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


#: The byte of a WAL file's -shm that every connection holds a shared lock on while it uses the file (SQLite's
#: "DMS" slot, unix VFS).
_SHM_DMS = 128
_JOURNAL = ("-wal", "-shm")

Identity = tuple[int, int]
"""A file's (device, inode)."""


def identity(path: str | os.PathLike[str]) -> Identity | None:
    """The (device, inode) of the file at ``path``, or ``None`` when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def journal_identity(path: str | os.PathLike[str]) -> tuple[Identity | None, Identity | None]:
    """The identities of ``path``'s ``-wal`` and ``-shm`` files, taken while a connection has them open."""
    target = os.fspath(path)
    return identity(target + "-wal"), identity(target + "-shm")


def discard_stale_journal(path: str | os.PathLike[str], stale: tuple[Identity | None, Identity | None]) -> bool:
    """After the database file at ``path`` was deleted or replaced under an open connection (now closed): delete
    its old ``-wal`` and ``-shm`` (``stale``, from :func:`journal_identity`) when no connection of any process
    still uses them. Returns whether the file at ``path`` may be opened now: ``False`` while the old journal is
    still in use.

    SQLite finds a WAL by name only and leaves one whose database was moved: the next connection would replay
    the old file's pages onto the new one, or share the old file's wal-index. The probe is an open file
    description lock on the -shm's DMS byte, which conflicts with other processes' SQLite locks (Linux only;
    elsewhere the journal is left as it is and the file opened). Call it only when no connection of this process
    has that -shm open: closing the probe's descriptor would release that connection's record locks."""
    import fcntl

    target = os.fspath(path)
    old = [suffix for suffix, ident in zip(_JOURNAL, stale, strict=True)
           if ident is not None and identity(target + suffix) == ident]
    setlk = getattr(fcntl, "F_OFD_SETLK", None)
    if "-shm" not in old or setlk is None:
        return True  # the journal at that name is a new file's (or none, or nothing can tell)
    try:
        fd = os.open(target + "-shm", os.O_RDWR)
    except OSError:
        return False
    try:
        try:  # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks)
            fcntl.fcntl(fd, setlk, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS, 1, 0))
        except OSError:
            return False  # a connection still uses the old journal
        for suffix in old:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target + suffix)
        return True
    finally:
        os.close(fd)
