"""Voyage's rerank API (``rerank-2``, ``rerank-2-lite``, ...) through the official voyageai client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._extras import require
from ..providers._api import PerLoop, api_key_from
from ..providers.voyage import voyage_error
from ..retry import RetryPolicy
from .base import RerankResult, check_rank_args

__all__ = ["VoyageReranker"]


class VoyageReranker:
    """Rerank with Voyage AI. The key defaults to ``$VOYAGE_API_KEY`` and never appears in a repr, log or error;
    transient errors (429 with Retry-After, 5xx, timeouts) are retried by the core's :class:`RetryPolicy`.

    Args:
        model: a Voyage rerank model.
        api_key: defaults to ``$VOYAGE_API_KEY``.
        base_url: another endpoint (a proxy, or a test server), e.g. ``http://127.0.0.1:8000/v1``.
        truncation: let Voyage truncate over-long pairs (else it refuses them).
    """

    def __init__(self, model: str = "rerank-2", *, api_key: str | None = None, base_url: str | None = None,
                 truncation: bool = True, timeout: float = 30.0, retry: RetryPolicy | None = None) -> None:
        require("voyageai", extra="voyage", feature="VoyageReranker")
        self._key = api_key_from(api_key, "VOYAGE_API_KEY", required=True, provider="Voyage")
        self.name = model
        self.model = model
        self.base_url = base_url
        self.truncation = truncation
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.total_tokens = 0
        self._client: Any = None
        self._aclients = PerLoop(self._make_async)

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"VoyageReranker(model={self.model!r}{where})"

    def _make_async(self) -> Any:
        import voyageai

        return voyageai.AsyncClient(api_key=self._key, max_retries=0, timeout=self.timeout, base_url=self.base_url)

    def _parse(self, result: Any) -> list[RerankResult]:
        try:
            self.total_tokens += int(result.total_tokens)
            return [RerankResult(int(r.index), float(r.relevance_score)) for r in result.results]
        except (AttributeError, TypeError, ValueError) as exc:
            raise voyage_error(exc, self.model, self._key) from None

    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankResult]:
        query, docs, top_n = check_rank_args(query, documents, top_n)
        if not docs:
            return []
        if self._client is None:
            import voyageai

            self._client = voyageai.Client(api_key=self._key, max_retries=0, timeout=self.timeout,
                                           base_url=self.base_url)

        def call() -> Any:
            try:
                return self._client.rerank(query, docs, model=self.model, top_k=top_n, truncation=self.truncation)
            except Exception as exc:
                raise voyage_error(exc, self.model, self._key) from None

        return self._parse(self.retry.call(call))

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankResult]:
        query, docs, top_n = check_rank_args(query, documents, top_n)
        if not docs:
            return []

        async def call() -> Any:
            try:
                return await self._aclients.get().rerank(query, docs, model=self.model, top_k=top_n,
                                                         truncation=self.truncation)
            except Exception as exc:
                raise voyage_error(exc, self.model, self._key) from None

        return self._parse(await self.retry.acall(call))
