"""``EmbedOptEmbeddings``: LangChain's ``Embeddings`` on embedopt's ``Embedder``."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict

from embedopt.config import EmbedderFields

__all__ = ["EmbedOptEmbeddings"]


class EmbedOptEmbeddings(EmbedderFields, Embeddings):
    """Embeddings through embedopt: cached under a fingerprint of the model (queries and documents apart),
    length-sorted batches, Matryoshka truncation, optional routing between API and self-hosted models.

    Swap it in for ``OpenAIEmbeddings`` / ``HuggingFaceEmbeddings`` / ``VoyageAIEmbeddings``:

    .. code-block:: python

        from langchain_embedopt import EmbedOptEmbeddings

        embeddings = EmbedOptEmbeddings()                                    # all-MiniLM-L6-v2, offline
        embeddings = EmbedOptEmbeddings(model="openai:text-embedding-3-small", cache="memory,sqlite")
        embeddings = EmbedOptEmbeddings(model="voyage:voyage-3", dim=512)
        embeddings = EmbedOptEmbeddings(embedder=Embedder(router))           # a core Embedder (a Router, ...)

    The fields are :class:`embedopt.config.EmbedderFields`' (shared with the LlamaIndex adapter); ``model`` is
    accepted for ``model_name``.
    """

    model_config = ConfigDict(extra="forbid")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self._embedder.embed_documents(texts).astype("float64").tolist()

    def embed_query(self, text: str) -> list[float]:
        return self._embedder.embed_query(text).astype("float64").tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return (await self._embedder.aembed_documents(texts)).astype("float64").tolist()

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._embedder.aembed_query(text)).astype("float64").tolist()
