"""Where embedopt keeps what it builds, and writes that a crash cannot leave half done: a file or a folder
appears whole, or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_folder", "atomic_write_text", "cache_dir"]


def cache_dir() -> Path:
    """Where embedopt keeps what it builds: ``$EMBEDOPT_HOME``, else ``~/.cache/embedopt``."""
    return Path(os.environ.get("EMBEDOPT_HOME") or Path.home() / ".cache" / "embedopt")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path`` (atomic on POSIX)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, p)
    return p


@contextmanager
def atomic_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out`` to fill; when the block ends without an error it replaces
    ``out``, and otherwise it is removed, so an interrupted write never leaves a half-written ``out``."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
