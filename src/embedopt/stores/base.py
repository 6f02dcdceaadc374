"""What the retrieval pipeline needs of a store."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..fingerprint import Fingerprint
from .flat import Rescore, SearchResult

__all__ = ["VectorStore"]


@runtime_checkable
class VectorStore(Protocol):
    """A store of one embedding space: :class:`~embedopt.stores.QuantizedIndex` or
    :class:`~embedopt.stores.QdrantStore`."""

    fingerprint: Fingerprint
    dim: int

    def __len__(self) -> int: ...

    def add(self, ids: Any, vectors: Any, payloads: list[dict[str, Any]] | None = None) -> None: ...

    def delete(self, ids: Any) -> int: ...

    def get_payloads(self, ids: list[str]) -> list[dict[str, Any]]: ...

    def search(self, queries: Any, k: int = 10, *, oversample: float = 4.0,
               rescore: Rescore = "int8") -> SearchResult: ...
