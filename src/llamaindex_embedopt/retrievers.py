"""``EmbedOptRetriever``: a LlamaIndex ``BaseRetriever`` over embedopt's two-stage retrieval pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.callbacks import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode

from embedopt import Embedder
from embedopt.fusion import Fusion
from embedopt.hybrid import HybridStore
from embedopt.rerank import Reranker
from embedopt.retrieval import RetrievalResult, Retriever
from embedopt.stores import QuantizedIndex, Rescore
from embedopt.stores.base import VectorStore

from .embeddings import EmbedOptEmbedding

__all__ = ["EmbedOptRetriever"]


class EmbedOptRetriever(BaseRetriever):
    """Binary shortlist → int8/float rescoring → optional rerank → ``similarity_top_k`` nodes.

    Nodes keep their ids and metadata; a node's score is the final score (the reranker's, else the rescored
    similarity), and ``last_timings_ms`` holds the stage timings of the latest query.
    """

    def __init__(self, pipeline: Retriever, *, similarity_top_k: int = 4,
                 callback_manager: CallbackManager | None = None) -> None:
        self.pipeline = pipeline
        self.similarity_top_k = similarity_top_k
        self.last_timings_ms: dict[str, float] = {}
        super().__init__(callback_manager=callback_manager)

    @classmethod
    def from_nodes(cls, nodes: Sequence[BaseNode], embed_model: EmbedOptEmbedding | Embedder, *,
                   similarity_top_k: int = 4, store: VectorStore | None = None, reranker: Reranker | None = None,
                   oversample: float = 4.0, rescore: Rescore = "int8", rerank_candidates: int | None = None,
                   fusion: str | Fusion | None = None) -> EmbedOptRetriever:
        """Embed the nodes' content into ``store`` (default: an embedded QuantizedIndex). ``fusion``
        (``"rrf"``, ``"dbsf"``, ``"convex:ALPHA"``) makes it hybrid: a BM25 index over the same content is kept
        beside the vectors and both result lists are fused before the reranker."""
        embedder = embed_model.core if isinstance(embed_model, EmbedOptEmbedding) else embed_model
        if store is None:
            store = QuantizedIndex(embedder.fingerprint("document"), dim=embedder.dim)
        if fusion is not None and not isinstance(store, HybridStore):
            store = HybridStore(store)
        pipeline = Retriever(embedder, store, reranker=reranker, k=similarity_top_k, oversample=oversample,
                             rescore=rescore, rerank_candidates=rerank_candidates, fusion=fusion)
        pipeline.add_texts([n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes],
                           ids=[n.node_id for n in nodes], metadatas=[dict(n.metadata) for n in nodes])
        return cls(pipeline, similarity_top_k=similarity_top_k)

    def _nodes(self, result: RetrievalResult) -> list[NodeWithScore]:
        self.last_timings_ms = result.timings_ms
        key = self.pipeline.text_key
        out = []
        for hit in result.hits:
            meta: dict[str, Any] = {k: v for k, v in hit.payload.items() if k != key}
            out.append(NodeWithScore(node=TextNode(id_=hit.id, text=hit.text or "", metadata=meta), score=hit.score))
        return out

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(self.pipeline.retrieve(query_bundle.query_str, self.similarity_top_k))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(await self.pipeline.aretrieve(query_bundle.query_str, self.similarity_top_k))
