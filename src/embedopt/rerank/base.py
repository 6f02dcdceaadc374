"""The reranker protocol: score (query, document) pairs jointly and keep the best ``top_n``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError, InputError

__all__ = ["RerankResult", "Reranker", "check_rank_args"]


@dataclass(frozen=True)
class RerankResult:
    index: int
    """Position of the document in the list given to ``rank``."""
    score: float
    """The reranker's relevance score (higher is better; its scale depends on the model)."""


@runtime_checkable
class Reranker(Protocol):
    """Anything with ``rank``/``arank``: results sorted best first, at most ``top_n`` of them."""

    name: str

    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankResult]: ...

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankResult]: ...


def check_rank_args(query: Any, documents: Any, top_n: int | None) -> tuple[str, list[str], int]:
    """Validate a rank call; returns (query, documents as a list, top_n resolved)."""
    if not isinstance(query, str) or not query.strip():
        raise InputError("the query must be a non-empty string")
    if isinstance(documents, str):
        raise InputError("documents must be a list of strings, not one string")
    docs = list(documents)
    for n, d in enumerate(docs):
        if not isinstance(d, str):
            raise InputError(f"document #{n} is {type(d).__name__}, not str; pass the documents' text", n)
    if top_n is None:
        top_n = max(1, len(docs))
    if not isinstance(top_n, int) or top_n < 1:
        raise ConfigError(f"top_n must be a positive int or None, got {top_n!r}")
    return query, docs, min(top_n, len(docs))
