"""Where embedopt keeps what it builds, and writes that a crash cannot leave half done: a file or a folder
appears whole, or not at all.

Every writer of a file a user or another process reads (CLI outputs, index folders, calibrations, reports,
exported and cached models) goes through :func:`atomic_file`, :func:`atomic_write_text` or :func:`atomic_folder`:
the data is written to a temporary name beside the target and renamed over it once complete, so a kill leaves
the old file (or none) and at most a hidden ``.NAME.*.tmp`` file, never a partial ``NAME``. What is written gets
the permissions the process's umask gives a new file or folder, as ``open`` and ``mkdir`` would.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

__all__ = ["atomic_file", "atomic_folder", "atomic_write_bytes", "atomic_write_text", "cache_dir", "umask"]


def cache_dir() -> Path:
    """Where embedopt keeps what it builds: ``$EMBEDOPT_HOME``, else ``~/.cache/embedopt``."""
    return Path(os.environ.get("EMBEDOPT_HOME") or Path.home() / ".cache" / "embedopt")


def umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), else by setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_beside(target: Path) -> tuple[int, Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600; a plain open() would give what the umask allows
    return fd, Path(name)


@contextmanager
def atomic_file(path: str | os.PathLike[str], mode: Literal["w", "wb"] = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing (``"w"``: UTF-8 text, ``"wb"``: bytes); when the block
    ends without an error it is flushed to disk and renamed over ``path``, otherwise it is removed. Parent folders
    are created."""
    target = Path(path)
    fd, tmp = _temp_beside(target)
    try:
        f: IO[Any] = os.fdopen(fd, "wb") if mode == "wb" else os.fdopen(fd, "w", encoding="utf-8")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, then rename it over ``path``."""
    with atomic_file(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where the system
    or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))


@contextmanager
def atomic_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out`` to fill; when the block ends without an error it replaces
    ``out``, and otherwise it is removed, so an interrupted write never leaves a half-written ``out``.

    An existing ``out`` is swapped with the new folder in one step where the system can (Linux
    ``renameat2(RENAME_EXCHANGE)``) and then removed; elsewhere it is renamed aside first (a kill between the two
    renames leaves it as ``.NAME.old-*`` beside the target). The folder gets the umask's permissions, not the
    private 0700 of ``mkdtemp``."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o777 & ~umask())
    old: Path | None = None
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink() and _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
            return
        if target.exists() or target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            old.rmdir()
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if not target.exists():  # the new folder could not be put in place: put the old one back
                os.replace(old, target)
            elif old.is_symlink() or not old.is_dir():
                old.unlink()
            else:
                shutil.rmtree(old, ignore_errors=True)
