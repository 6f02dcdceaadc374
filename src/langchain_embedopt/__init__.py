"""LangChain adapters for embedopt: the core does the work, these classes translate types.

* :class:`EmbedOptEmbeddings`: a drop-in ``Embeddings`` (replaces OpenAIEmbeddings, HuggingFaceEmbeddings,
  VoyageAIEmbeddings) with embedopt's cache, batching, routing, Matryoshka and quantization.
* :class:`EmbedOptRetriever`: a ``BaseRetriever`` over embedopt's two-stage retrieval pipeline.
* :class:`EmbedOptVectorStore`: a ``VectorStore`` (filters, MMR, delete, get_by_ids, the indexing API) on
  embedopt's embedded index, Qdrant's engine in-process, or a Qdrant server.
* :class:`EmbedOptReranker`: a ``BaseDocumentCompressor`` for ``ContextualCompressionRetriever``.
* :class:`EmbedOptSemanticCache`: a ``BaseCache`` for ``set_llm_cache``, answering by meaning.
"""

from __future__ import annotations

from embedopt._extras import require

require("langchain_core", extra="langchain", feature="langchain_embedopt", package="langchain-core")

from .cache import EmbedOptSemanticCache  # noqa: E402
from .embeddings import EmbedOptEmbeddings  # noqa: E402
from .rerank import EmbedOptReranker  # noqa: E402
from .retrievers import EmbedOptRetriever  # noqa: E402
from .vectorstores import EmbedOptVectorStore  # noqa: E402

__all__ = ["EmbedOptEmbeddings", "EmbedOptReranker", "EmbedOptRetriever", "EmbedOptSemanticCache",
           "EmbedOptVectorStore"]
