"""``EmbedOptSemanticCache``: LangChain's LLM cache (``set_llm_cache``) on embedopt's semantic cache."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import dumpd, load
from langchain_core.outputs import Generation

from embedopt import Embedder
from embedopt.semantic_cache import DEFAULT_THRESHOLD, SemanticBackend, SemanticCache

from .embeddings import EmbedOptEmbeddings

__all__ = ["EmbedOptSemanticCache"]


class EmbedOptSemanticCache(BaseCache):
    """Answer a prompt from the cache when an earlier prompt *meant* the same (cosine ≥ ``threshold``).

    Each LLM configuration (LangChain's ``llm_string``: model, temperature, ...) is its own scope, so two LLMs
    never share answers. Generations are stored as LangChain's JSON serialization, never pickled.

    .. code-block:: python

        from langchain_core.globals import set_llm_cache
        set_llm_cache(EmbedOptSemanticCache(EmbedOptEmbeddings(), threshold=0.9))

    Args:
        embedding: embeds the prompts (as queries); default ``EmbedOptEmbeddings()`` (MiniLM, offline).
        threshold: cosine similarity at or above which a cached answer is returned (measured for MiniLM).
        ttl: seconds an answer lives.
        backend: ``"memory"`` or a ``redis://`` URL (plain Redis, no modules needed).
    """

    def __init__(self, embedding: EmbedOptEmbeddings | Embedder | None = None, *,
                 threshold: float = DEFAULT_THRESHOLD, ttl: float | None = None,
                 backend: str | SemanticBackend = "memory") -> None:
        if embedding is None:
            embedding = EmbedOptEmbeddings()
        embedder = embedding.core if isinstance(embedding, EmbedOptEmbeddings) else embedding
        self.semantic = SemanticCache(embedder, threshold=threshold, ttl=ttl, backend=backend)

    def __repr__(self) -> str:
        return f"EmbedOptSemanticCache({self.semantic!r})"

    @staticmethod
    def _scope(llm_string: str) -> dict[str, str]:
        return {"llm_string": llm_string}

    @staticmethod
    def _encode(return_val: RETURN_VAL_TYPE) -> str:
        return json.dumps([dumpd(g) for g in return_val])

    @staticmethod
    def _decode(raw: Any) -> list[Generation] | None:
        try:
            return [load(g, allowed_objects="core") for g in json.loads(raw)]
        except (TypeError, ValueError, KeyError):
            return None  # an entry this version cannot read is a miss

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        hit = self.semantic.lookup(prompt, filters=self._scope(llm_string))
        return None if hit is None else self._decode(hit.response)

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        self.semantic.store(prompt, self._encode(return_val), filters=self._scope(llm_string))

    def clear(self, **kwargs: Any) -> None:
        """Drop every cached answer (of every LLM); ``llm_string=...`` drops one LLM's only."""
        if "llm_string" in kwargs:
            self.semantic.clear(self._scope(kwargs["llm_string"]))
        else:
            self.semantic.clear(everything=True)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        hit = await self.semantic.alookup(prompt, filters=self._scope(llm_string))
        return None if hit is None else self._decode(hit.response)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        await self.semantic.astore(prompt, self._encode(return_val), filters=self._scope(llm_string))

    async def aclear(self, **kwargs: Any) -> None:
        import asyncio

        await asyncio.to_thread(self.clear, **kwargs)

