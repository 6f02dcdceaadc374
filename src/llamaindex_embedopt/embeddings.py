"""``EmbedOptEmbedding``: LlamaIndex's ``BaseEmbedding`` on embedopt's ``Embedder``."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field

from embedopt.config import EmbedderFields
from embedopt.errors import ConfigError

__all__ = ["EmbedOptEmbedding"]

class EmbedOptEmbedding(EmbedderFields, BaseEmbedding):
    """Embeddings through embedopt, for ``Settings.embed_model`` or ``VectorStoreIndex(embed_model=...)``.

    Unlike LlamaIndex's ``embeddings_cache`` (keyed on the text alone), embedopt's cache keys on the model's
    fingerprint and the input type: a query and a document of the same text, or two models, never share a
    vector. Async batches go to the core as one call per ``embed_batch_size`` batch, not one per text.

    The fields are :class:`embedopt.config.EmbedderFields`' (shared with the LangChain adapter).
    """

    embed_batch_size: int = Field(default=100, gt=0, le=2048,
                                  description="Texts per call to the core (which sorts and batches them again "
                                              "within the model's own limits).")

    @classmethod
    def class_name(cls) -> str:
        return "EmbedOptEmbedding"

    @classmethod
    def wrap(cls, embed_model: BaseEmbedding, *, native_dim: int | None = None, **fields: Any) -> EmbedOptEmbedding:
        """Put embedopt's cache (and Matryoshka, quantization, batching) around a LlamaIndex embedding you already
        use: ``EmbedOptEmbedding.wrap(OpenAIEmbedding(model="text-embedding-3-small"), cache="memory,sqlite")``.
        Cached under a fingerprint of the wrapped class and its model fields (never a key), queries and documents
        apart; ``native_dim`` and ``fields`` as in the LangChain twin ``EmbedOptEmbeddings.wrap``."""
        if isinstance(embed_model, EmbedOptEmbedding):
            raise ConfigError("that is already an EmbedOptEmbedding; use it as it is")
        if not isinstance(embed_model, BaseEmbedding):
            raise ConfigError(f"wrap() takes a LlamaIndex BaseEmbedding, got {type(embed_model).__name__}")
        return cls._wrapping(embed_model, embed_model.get_text_embedding_batch, embed_model.get_query_embedding,
                             aembed_documents=embed_model.aget_text_embedding_batch,
                             aembed_query=embed_model.aget_query_embedding, native_dim=native_dim,
                             fields=fields)

    def to_payload(self) -> dict[str, Any]:
        return {**super().to_payload(), "fingerprint": self._embedder.fingerprint("document").id,
                "dim": self._embedder.dim}

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embedder.embed_query(query).astype("float64").tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._embedder.aembed_query(query)).astype("float64").tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embedder.embed_documents(texts).astype("float64").tolist() if texts else []

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        return (await self._embedder.aembed_documents(texts)).astype("float64").tolist()
