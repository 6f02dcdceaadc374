"""``EmbedOptRerank``: a LlamaIndex node postprocessor over embedopt's rerankers."""

from __future__ import annotations

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field

from embedopt.errors import ConfigError
from embedopt.rerank import Reranker, RerankResult

__all__ = ["EmbedOptRerank"]

dispatcher = get_dispatcher(__name__)


class EmbedOptRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with a cross-encoder or Voyage and keep the best ``top_n``.

    Returns new ``NodeWithScore`` objects with the reranker's score; the input list and its nodes are never
    changed. Emits ``ReRankStartEvent`` / ``ReRankEndEvent``.
    """

    reranker: Reranker = Field(description="An embedopt reranker (CrossEncoderReranker, VoyageReranker, ...).")
    top_n: int = Field(default=3, ge=1, description="Nodes kept.")

    @classmethod
    def class_name(cls) -> str:
        return "EmbedOptRerank"

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> list[str]:
        if query_bundle is None:
            raise ConfigError("EmbedOptRerank needs the query: call postprocess_nodes(nodes, query_str=...)")
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n,
                                          model_name=getattr(self.reranker, "name", type(self.reranker).__name__)))
        return [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]

    def _finish(self, nodes: list[NodeWithScore], ranked: list[RerankResult]) -> list[NodeWithScore]:
        out = [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in ranked]
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    @dispatcher.span
    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        texts = self._start(nodes, query_bundle)
        if not nodes:
            return self._finish(nodes, [])
        assert query_bundle is not None
        return self._finish(nodes, self.reranker.rank(query_bundle.query_str, texts, top_n=self.top_n))

    @dispatcher.span
    async def _apostprocess_nodes(self, nodes: list[NodeWithScore],
                                  query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        texts = self._start(nodes, query_bundle)
        if not nodes:
            return self._finish(nodes, [])
        assert query_bundle is not None
        return self._finish(nodes, await self.reranker.arank(query_bundle.query_str, texts, top_n=self.top_n))
