"""``EmbedOptEmbeddings``: LangChain's ``Embeddings`` on embedopt's ``Embedder``."""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict

from embedopt.config import EmbedderFields
from embedopt.errors import ConfigError

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
    accepted for ``model_name``; ``encode_kwargs`` and ``cache_folder`` mean what they mean in
    ``HuggingFaceEmbeddings``, so swapping that class for this one keeps its arguments.
    """

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def wrap(cls, embeddings: Embeddings, *, native_dim: int | None = None, **fields: Any) -> EmbedOptEmbeddings:
        """Put embedopt's cache (and Matryoshka, quantization, batching) around an ``Embeddings`` you already use:
        ``EmbedOptEmbeddings.wrap(OpenAIEmbeddings(model="text-embedding-3-small"), cache="memory,sqlite")``.

        Vectors are cached under a fingerprint of the wrapped class and its model fields (model, dimensions,
        endpoint; never a key or a timeout), queries and documents apart, so changing the model is a new cache
        space and a query never gets a document's vector. ``native_dim`` is the model's output dimension when its
        fields do not say it (``dimensions``, ``size``, a catalogued model name); ``fields`` are the Embedder
        options (``cache``, ``dim``, ``precision``, ``normalize``, ``on_overflow``, ``show_progress``)."""
        if isinstance(embeddings, EmbedOptEmbeddings):
            raise ConfigError("that is already an EmbedOptEmbeddings; use it as it is")
        if not isinstance(embeddings, Embeddings):
            raise ConfigError(f"wrap() takes a LangChain Embeddings, got {type(embeddings).__name__}")
        return cls._wrapping(embeddings, embeddings.embed_documents, embeddings.embed_query,
                             aembed_documents=embeddings.aembed_documents, aembed_query=embeddings.aembed_query,
                             native_dim=native_dim, fields=fields)

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
