"""``EmbedOptReranker``: a ``BaseDocumentCompressor`` over embedopt's rerankers."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field

from embedopt.rerank import Reranker, RerankResult

__all__ = ["EmbedOptReranker"]


class EmbedOptReranker(BaseDocumentCompressor):
    """Rerank documents with a cross-encoder or Voyage; returns the best ``top_n`` as copies that keep ``id`` and
    metadata and add ``relevance_score``. Use it in ``ContextualCompressionRetriever``:

    .. code-block:: python

        from embedopt.rerank import CrossEncoderReranker
        compressor = EmbedOptReranker(reranker=CrossEncoderReranker("BAAI/bge-reranker-base"), top_n=3)
        retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    reranker: Reranker
    """An embedopt reranker (``CrossEncoderReranker``, ``VoyageReranker``, or anything with rank/arank)."""
    top_n: int = Field(default=3, ge=1)
    """Documents kept."""

    @staticmethod
    def _copies(documents: Sequence[Document], ranked: list[RerankResult]) -> list[Document]:
        out = []
        for r in ranked:
            d = documents[r.index]
            out.append(Document(id=d.id, page_content=d.page_content,
                                metadata={**d.metadata, "relevance_score": r.score}))
        return out

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        if not documents:
            return []
        ranked = self.reranker.rank(query, [d.page_content for d in documents], top_n=self.top_n)
        return self._copies(documents, ranked)

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Callbacks | None = None) -> Sequence[Document]:
        if not documents:
            return []
        ranked = await self.reranker.arank(query, [d.page_content for d in documents], top_n=self.top_n)
        return self._copies(documents, ranked)
