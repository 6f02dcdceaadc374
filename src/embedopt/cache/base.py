"""The cache contract shared by every tier, and the key every tier uses."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ..fingerprint import Fingerprint

__all__ = ["KEY_VERSION", "CacheTier", "cache_key"]

KEY_VERSION = "v1"


def cache_key(fingerprint: Fingerprint, text: str) -> str:
    """``embedopt:v1:{fingerprint id}:{sha256(text)}``.

    The fingerprint carries provider, model, weights revision, input type (queries and documents apart), prompt,
    native dim and normalization, so a model update or a query/document swap can never hit another's entry.
    Truncated dims and quantized precisions are not in the key: they are derived from the full vector.
    """
    return f"embedopt:{KEY_VERSION}:{fingerprint.id}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


@runtime_checkable
class CacheTier(Protocol):
    """A store of full-precision vectors by key. Tiers never raise on a miss; a missing key is ``None``."""

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]: ...

    def set_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None: ...

    def delete(self, keys: Sequence[str]) -> int: ...

    def stats(self) -> dict[str, int]: ...

    async def aget_many(self, keys: Sequence[str]) -> list[np.ndarray | None]: ...

    async def aset_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None: ...
