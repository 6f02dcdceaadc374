"""LlamaIndex adapters for embedopt: the core does the work, these classes translate types.

* :class:`EmbedOptEmbedding`: a ``BaseEmbedding`` with embedopt's fingerprinted cache, batching and routing.
* :class:`EmbedOptRerank`: a node postprocessor that reranks with a cross-encoder or Voyage.
* :class:`EmbedOptRetriever`: a ``BaseRetriever`` over embedopt's two-stage retrieval pipeline.
* :class:`EmbedOptVectorStore`: a vector store (MetadataFilters, delete by document, StorageContext persistence)
  on embedopt's embedded index, Qdrant's engine in-process, or a Qdrant server.
"""

from __future__ import annotations

from embedopt._extras import require

require("llama_index.core", extra="llamaindex", feature="llamaindex_embedopt", package="llama-index-core")

from .embeddings import EmbedOptEmbedding  # noqa: E402
from .postprocessor import EmbedOptRerank  # noqa: E402
from .retrievers import EmbedOptRetriever  # noqa: E402
from .vector_store import EmbedOptVectorStore  # noqa: E402

__all__ = ["EmbedOptEmbedding", "EmbedOptRerank", "EmbedOptRetriever", "EmbedOptVectorStore"]
