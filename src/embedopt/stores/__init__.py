"""Where vectors are stored and searched: the embedded :class:`QuantizedIndex` (default) and Qdrant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Rescore, SearchResult, VectorStore
from .flat import QuantizedIndex

if TYPE_CHECKING:
    from .qdrant import QdrantStore

__all__ = ["QdrantStore", "QuantizedIndex", "Rescore", "SearchResult", "VectorStore"]


def __getattr__(name: str) -> Any:
    if name == "QdrantStore":  # qdrant-client is an extra: import it only when asked for
        from .qdrant import QdrantStore

        return QdrantStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
