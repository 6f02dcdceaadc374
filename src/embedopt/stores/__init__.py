"""Where vectors are stored and searched: the embedded :class:`QuantizedIndex` (default) and Qdrant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .flat import QuantizedIndex, Rescore, SearchResult

if TYPE_CHECKING:
    from .qdrant import QdrantStore

__all__ = ["QdrantStore", "QuantizedIndex", "Rescore", "SearchResult"]


def __getattr__(name: str) -> Any:
    if name == "QdrantStore":  # qdrant-client is an extra: import it only when asked for
        from .qdrant import QdrantStore

        return QdrantStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
