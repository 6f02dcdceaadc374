"""Where vectors are stored and searched: the embedded :class:`QuantizedIndex` (default), Qdrant's engine
in-process (:class:`EdgeStore`, qdrant-edge) and a Qdrant server (:class:`QdrantStore`). All take the same
metadata filters (:mod:`embedopt.stores.filters`) and Qdrant's two take one :class:`QuantizationConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Record, Rescore, SearchResult, VectorStore
from .filters import Filter
from .flat import QuantizedIndex
from .quantization_config import HnswConfig, QuantizationConfig

if TYPE_CHECKING:
    from .edge import EdgeStore
    from .qdrant import QdrantStore

__all__ = ["EdgeStore", "Filter", "HnswConfig", "QdrantStore", "QuantizationConfig", "QuantizedIndex", "Record",
           "Rescore", "SearchResult", "VectorStore"]


def __getattr__(name: str) -> Any:
    if name == "QdrantStore":  # qdrant-client is an extra: import it only when asked for
        from .qdrant import QdrantStore

        return QdrantStore
    if name == "EdgeStore":  # so is qdrant-edge-py
        from .edge import EdgeStore

        return EdgeStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
