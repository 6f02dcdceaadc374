"""The one way embedopt opens a SQLite file: WAL journal (readers never block the writer), a bounded wait for
another process's write lock, autocommit so each statement or explicit transaction is its own unit."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = ["connect"]


def connect(path: str | os.PathLike[str], *, timeout: float = 30.0, schema: str | None = None) -> sqlite3.Connection:
    """Open ``path`` (creating its folder) in WAL mode, shareable between threads (callers hold their own lock)
    and safe for several processes; ``schema`` is run once (``CREATE TABLE IF NOT EXISTS ...``).
    ``":memory:"`` opens a private in-memory database."""
    target = os.fspath(path)
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
