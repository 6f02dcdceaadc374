"""``EmbedOptRetriever``: LangChain's ``BaseRetriever`` over embedopt's two-stage retrieval pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from embedopt import Embedder
from embedopt.fusion import Fusion
from embedopt.hybrid import HybridStore
from embedopt.rerank import Reranker
from embedopt.retrieval import RetrievalResult, Retriever
from embedopt.stores import QuantizedIndex, Rescore
from embedopt.stores.base import VectorStore

from .embeddings import EmbedOptEmbeddings

__all__ = ["EmbedOptRetriever"]


def _core_embedder(embedding: EmbedOptEmbeddings | Embedder) -> Embedder:
    return embedding.core if isinstance(embedding, EmbedOptEmbeddings) else embedding


class EmbedOptRetriever(BaseRetriever):
    """Binary shortlist → int8/float rescoring → optional cross-encoder rerank → top ``k``, as Documents.

    Each Document keeps its ``id`` and metadata, and adds ``score`` (the final score), ``vector_score``,
    ``rerank_score`` (when reranked), ``lexical_score`` and ``fusion_score`` (hybrid) and ``timings_ms``
    (milliseconds per stage, a dict of its own) to its metadata.
    ``k`` must be a positive int, in the field as in ``invoke(query, k=...)``: ``k=0`` is refused with a
    ConfigError, as the field refuses it, rather than taken for "the default".

    .. code-block:: python

        retriever = EmbedOptRetriever.from_texts(texts, EmbedOptEmbeddings(), ids=ids, k=4)
        retriever.invoke("how do I find a process id?", k=2)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    pipeline: Retriever
    """The core pipeline (embedder, store, reranker, oversampling, rescoring)."""
    k: int = Field(default=4, ge=1)
    """Documents returned; ``invoke(query, k=...)`` overrides it for one call."""

    @classmethod
    def from_texts(cls, texts: Sequence[str], embedding: EmbedOptEmbeddings | Embedder, *,
                   metadatas: Sequence[dict[str, Any]] | None = None, ids: Sequence[str] | None = None,
                   k: int = 4, store: VectorStore | None = None, reranker: Reranker | None = None,
                   oversample: float = 4.0, rescore: Rescore = "int8",
                   rerank_candidates: int | None = None, fusion: str | Fusion | None = None) -> EmbedOptRetriever:
        """Embed ``texts`` into ``store`` (default: an embedded :class:`~embedopt.stores.QuantizedIndex`).
        ``fusion`` (``"rrf"``, ``"dbsf"``, ``"convex:ALPHA"``) makes it hybrid: a BM25 index is kept beside the
        vectors and both result lists are fused before the reranker."""
        embedder = _core_embedder(embedding)
        if store is None:
            store = QuantizedIndex(embedder.fingerprint("document"), dim=embedder.dim)
        if fusion is not None and not isinstance(store, HybridStore):
            store = HybridStore(store)
        pipeline = Retriever(embedder, store, reranker=reranker, k=k, oversample=oversample, rescore=rescore,
                             rerank_candidates=rerank_candidates, fusion=fusion)
        pipeline.add_texts(list(texts), ids=ids, metadatas=metadatas)
        return cls(pipeline=pipeline, k=k)

    def add_texts(self, texts: Sequence[str], metadatas: Sequence[dict[str, Any]] | None = None,
                  ids: Sequence[str] | None = None) -> list[str]:
        return self.pipeline.add_texts(list(texts), ids=ids, metadatas=metadatas)

    def add_documents(self, documents: Sequence[Document]) -> list[str]:
        ids = [d.id for d in documents]
        return self.pipeline.add_texts([d.page_content for d in documents], metadatas=[d.metadata for d in documents],
                                       ids=ids if all(ids) else None)  # type: ignore[arg-type]

    def _documents(self, result: RetrievalResult) -> list[Document]:
        key = self.pipeline.text_key
        docs = []
        for hit in result.hits:
            meta = {k: v for k, v in hit.payload.items() if k != key}
            meta.update(score=hit.score, vector_score=hit.vector_score, timings_ms=dict(result.timings_ms))
            if hit.rerank_score is not None:
                meta["rerank_score"] = hit.rerank_score
            if hit.fusion_score is not None:
                meta.update(lexical_score=hit.lexical_score, fusion_score=hit.fusion_score)
            docs.append(Document(id=hit.id, page_content=hit.text or "", metadata=meta))
        return docs

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None) -> list[Document]:
        return self._documents(self.pipeline.retrieve(query, self.k if k is None else k))

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
                                       k: int | None = None) -> list[Document]:
        return self._documents(await self.pipeline.aretrieve(query, self.k if k is None else k))
