"""``EmbedOptVectorStore``: LangChain's ``VectorStore`` over embedopt's stores and retrieval pipeline."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from embedopt import Embedder
from embedopt.errors import ConfigError
from embedopt.fingerprint import Fingerprint
from embedopt.fusion import Fusion
from embedopt.hybrid import HybridStore
from embedopt.lexical import LexicalIndex
from embedopt.retrieval import _UNSET, Hit, Retriever
from embedopt.stores import QuantizedIndex, Rescore
from embedopt.stores.base import VectorStore as CoreStore
from embedopt.stores.filters import Filter

from .embeddings import EmbedOptEmbeddings

__all__ = ["EmbedOptVectorStore"]


def _core(embedding: Embeddings | Embedder, cache: str | None) -> tuple[Embedder, Embeddings | Embedder]:
    """The core Embedder behind ``embedding``; a plain LangChain ``Embeddings`` is wrapped (its vectors are then
    normalized and cached under a fingerprint of its class and model fields)."""
    if isinstance(embedding, Embedder):
        return embedding, embedding
    if isinstance(embedding, EmbedOptEmbeddings):
        return embedding.core, embedding
    if isinstance(embedding, Embeddings):
        return EmbedOptEmbeddings.wrap(embedding, cache=cache).core, embedding
    raise ConfigError(f"embedding must be a LangChain Embeddings or an embedopt Embedder, got "
                      f"{type(embedding).__name__}")


class EmbedOptVectorStore(VectorStore):
    """A LangChain vector store on embedopt: the embedded :class:`~embedopt.stores.QuantizedIndex` (binary
    shortlist, int8 rescoring) by default, or Qdrant's engine in-process (:class:`~embedopt.stores.EdgeStore`), or a
    Qdrant server (:class:`~embedopt.stores.QdrantStore`).

    .. code-block:: python

        store = EmbedOptVectorStore(EmbedOptEmbeddings())                       # MiniLM, offline
        store = EmbedOptVectorStore(OpenAIEmbeddings(), cache="memory,sqlite")  # any Embeddings, cached
        store.add_documents(docs, ids=ids)
        store.similarity_search("how do I list files?", k=4, filter={"section": {"$in": ["1", "8"]}})

    Filters are dicts (``{"lang": "en", "year": {"$gte": 2020}}``, ``$and``/``$or``/``$not``; see
    :mod:`embedopt.stores.filters`) applied inside the store's search, so a filtered search still returns ``k``
    documents when ``k`` match. Scores are cosine similarities; relevance scores map them to [0, 1].

    **Hybrid search** (``retrieval_mode="hybrid"``): a BM25 index (:class:`~embedopt.lexical.LexicalIndex`) is kept
    beside the vectors over the same ids and page contents, and every search fuses both lists with ``fusion``
    (RRF by default; ``"convex:0.6"`` with a weight fit by ``embedopt eval --fusion``). The filter applies to both
    sides. Per call, ``fusion=`` overrides it (``fusion=None``: vectors only), also through
    ``as_retriever(search_kwargs={"fusion": "dbsf"})``; ``search(query, search_type="hybrid")`` fuses even in the
    default mode when the store keeps a lexical index. Scores are then the fused scores (RRF's are small; the
    convex combination's lie in [0, 1]), and relevance scores are those, clipped to [0, 1]. A
    ``QdrantStore(..., sparse=True, text_key="page_content")`` keeps BM25 in Qdrant itself and is used as it is.

    Args:
        embedding: an ``EmbedOptEmbeddings``, an embedopt ``Embedder``, or any LangChain ``Embeddings`` (wrapped
            with ``EmbedOptEmbeddings.wrap(embedding, cache=cache)``).
        store: an embedopt store of the embedding's document space (default: a new ``QuantizedIndex``), or a
            factory ``(fingerprint, dim) -> store`` for one built once the embedding's space is known:
            ``store=lambda fp, dim: EdgeStore(fp, "./index", dim=dim)``.
        oversample, rescore: the store's shortlist size (``k * oversample``) and rescoring.
        text_key: the payload key holding a document's text (metadata keys sit beside it, so filters read them).
        cache: the vector cache used when ``embedding`` is a plain ``Embeddings``.
        retrieval_mode: ``"dense"`` (default) or ``"hybrid"`` (vectors and BM25, fused).
        fusion: how hybrid search fuses: ``"rrf"`` (default), ``"rrf:K"``, ``"dbsf"``, ``"convex:ALPHA"``.
        lexical: the BM25 index to keep (default: a new ``LexicalIndex``); a ``HybridStore`` given as ``store``
            brings its own.
        fusion_candidates: hits each side returns before fusing.
    """

    def __init__(self, embedding: Embeddings | Embedder,
                 store: CoreStore | Callable[[Fingerprint, int], CoreStore] | None = None, *,
                 oversample: float = 4.0, rescore: Rescore = "int8", text_key: str = "page_content",
                 cache: str | None = "memory", retrieval_mode: Literal["dense", "hybrid"] = "dense",
                 fusion: str | Fusion = "rrf", lexical: LexicalIndex | None = None,
                 fusion_candidates: int = 50) -> None:
        if retrieval_mode not in ("dense", "hybrid"):
            raise ConfigError(f"retrieval_mode must be 'dense' or 'hybrid', got {retrieval_mode!r}")
        embedder, self._embedding = _core(embedding, cache)
        if store is None:
            store = QuantizedIndex(embedder.fingerprint("document"), dim=embedder.dim)
        elif not isinstance(store, CoreStore) and callable(store):
            store = store(embedder.fingerprint("document"), embedder.dim)
        native = bool(getattr(store, "sparse", False))  # QdrantStore(sparse=True, text_key=...): BM25 in Qdrant
        if (retrieval_mode == "hybrid" or lexical is not None) and not isinstance(store, HybridStore) and not native:
            store = HybridStore(store, lexical, text_key=text_key)
        self.retrieval_mode = retrieval_mode
        self._fusion = fusion
        self.pipeline = Retriever(embedder, store, k=4, oversample=oversample, rescore=rescore, text_key=text_key,
                                  fusion=fusion if retrieval_mode == "hybrid" else None,
                                  fusion_candidates=fusion_candidates)

    @property
    def embeddings(self) -> Embeddings | None:
        return self._embedding if isinstance(self._embedding, Embeddings) else None

    @property
    def store(self) -> CoreStore:
        return self.pipeline.store

    def __repr__(self) -> str:
        return f"EmbedOptVectorStore({self.store!r})"

    # ------------------------------------------------------------------------------------------- writing
    @staticmethod
    def _ids(n: int, ids: Sequence[str | None] | None) -> list[str]:
        if ids is None:
            return [str(uuid.uuid4()) for _ in range(n)]
        if len(ids) != n:
            raise ConfigError(f"{n} texts but {len(ids)} ids")
        return [i if i else str(uuid.uuid4()) for i in ids]  # documents without an id get one

    @staticmethod
    def _no_extra(kwargs: dict[str, Any], method: str) -> None:
        if kwargs:
            raise ConfigError(f"{method}() got unexpected arguments {sorted(kwargs)}")

    def _batches(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None,
                 ids: Sequence[str | None] | None, batch_size: int | None,
                 ) -> tuple[list[str], list[tuple[list[str], list[str], list[dict[str, Any]] | None]]]:
        """The ids (given, or new for texts without one) and the batches of (texts, ids, metadatas) to add."""
        text_list = list(texts)
        id_list = self._ids(len(text_list), ids)
        step = batch_size or max(1, len(text_list))
        return id_list, [(text_list[at: at + step], id_list[at: at + step],
                          metadatas[at: at + step] if metadatas is not None else None)
                         for at in range(0, len(text_list), step)]

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                  ids: Sequence[str | None] | None = None, batch_size: int | None = None,
                  **kwargs: Any) -> list[str]:
        """Embed and store ``texts``; an id already present is replaced. Returns the ids."""
        self._no_extra(kwargs, "add_texts")
        id_list, batches = self._batches(texts, metadatas, ids, batch_size)
        for chunk, chunk_ids, metas in batches:
            self.pipeline.add_texts(chunk, ids=chunk_ids, metadatas=metas)
        return id_list

    async def aadd_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                         ids: Sequence[str | None] | None = None, batch_size: int | None = None,
                         **kwargs: Any) -> list[str]:
        self._no_extra(kwargs, "aadd_texts")
        id_list, batches = self._batches(texts, metadatas, ids, batch_size)
        for chunk, chunk_ids, metas in batches:
            await self.pipeline.aadd_texts(chunk, ids=chunk_ids, metadatas=metas)
        return id_list

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete ``ids`` (unknown ids are ignored); ``filter=`` deletes the documents matching a filter;
        neither deletes everything."""
        where = kwargs.pop("filter", None)
        self._no_extra(kwargs, "delete")
        if ids is None and where is None:
            self.store.clear()
        else:
            self.store.delete(ids, where=where)
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        return await asyncio.to_thread(self.delete, ids, **kwargs)

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict[str, Any]] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> EmbedOptVectorStore:
        """A new store holding ``texts``; ``kwargs`` go to the constructor (``store``, ``oversample``, ...)."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict[str, Any]] | None = None,
                          *, ids: list[str] | None = None, **kwargs: Any) -> EmbedOptVectorStore:
        store = cls(embedding, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store

    # ------------------------------------------------------------------------------------------- reading
    def _document(self, id_: str, payload: dict[str, Any]) -> Document:
        key = self.pipeline.text_key
        text = payload.get(key)
        return Document(id=id_, page_content=text if isinstance(text, str) else "",
                        metadata={k: v for k, v in payload.items() if k != key})

    def _scored(self, hits: list[Hit]) -> list[tuple[Document, float]]:
        return [(self._document(h.id, h.payload), h.score) for h in hits]

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [self._document(r.id, r.payload) for r in self.store.get(list(ids))]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return await asyncio.to_thread(self.get_by_ids, ids)

    def similarity_search_with_score(self, query: str, k: int = 4, filter: Filter | None = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """Documents most similar to ``query`` with their cosine similarity (the fused score in hybrid mode),
        best first; ``fusion=`` overrides the store's fusion for this call (``None``: vectors only)."""
        fusion = kwargs.pop("fusion", _UNSET)
        self._no_extra(kwargs, "similarity_search_with_score")
        return self._scored(self.pipeline.retrieve(query, k, where=filter, fusion=fusion).hits)

    async def asimilarity_search_with_score(self, query: str, k: int = 4, filter: Filter | None = None,
                                            **kwargs: Any) -> list[tuple[Document, float]]:
        fusion = kwargs.pop("fusion", _UNSET)
        self._no_extra(kwargs, "asimilarity_search_with_score")
        return self._scored((await self.pipeline.aretrieve(query, k, where=filter, fusion=fusion)).hits)

    def _hybrid_fusion(self, kwargs: dict[str, Any]) -> None:
        if not isinstance(self.store, HybridStore) and not getattr(self.store, "sparse", False):
            raise ConfigError("search_type='hybrid' needs a lexical index: build the store with "
                              "retrieval_mode='hybrid'")
        kwargs.setdefault("fusion", self._fusion)

    def search(self, query: str, search_type: str, **kwargs: Any) -> list[Document]:
        """LangChain's dispatch by ``search_type``, plus ``"hybrid"`` (vectors and BM25 fused)."""
        if search_type == "hybrid":
            self._hybrid_fusion(kwargs)
            return self.similarity_search(query, **kwargs)
        return super().search(query, search_type, **kwargs)

    async def asearch(self, query: str, search_type: str, **kwargs: Any) -> list[Document]:
        if search_type == "hybrid":
            self._hybrid_fusion(kwargs)
            return await self.asimilarity_search(query, **kwargs)
        return await super().asearch(query, search_type, **kwargs)

    def similarity_search(self, query: str, k: int = 4, filter: Filter | None = None,
                          **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, filter: Filter | None = None,
                                 **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4,
                                               filter: Filter | None = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        self._no_extra(kwargs, "similarity_search_with_score_by_vector")
        return self._scored(self.pipeline.search_vector(embedding, k, where=filter))

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: Filter | None = None,
                                    **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    async def asimilarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: Filter | None = None,
                                           **kwargs: Any) -> list[Document]:
        return await asyncio.to_thread(self.similarity_search_by_vector, embedding, k, filter, **kwargs)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Cosine similarity in [-1, 1] -> relevance in [0, 1]; in hybrid mode the fused score, clipped."""
        if self.retrieval_mode == "hybrid":
            return lambda score: min(1.0, max(0.0, score))
        return lambda score: min(1.0, max(0.0, (score + 1.0) / 2.0))

    # ------------------------------------------------------------------------------------------- MMR
    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: Filter | None = None,
                                                **kwargs: Any) -> list[Document]:
        """``k`` documents among the ``fetch_k`` most similar, chosen for similarity and diversity at once
        (``lambda_mult``: 1 = similarity only, 0 = diversity only)."""
        self._no_extra(kwargs, "max_marginal_relevance_search_by_vector")
        hits = self.pipeline.mmr_vector(embedding, k, fetch_k=fetch_k, lambda_mult=lambda_mult, where=filter)
        return [self._document(h.id, h.payload) for h in hits]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: Filter | None = None, **kwargs: Any) -> list[Document]:
        vector = self.pipeline.embedder.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(vector.tolist(), k, fetch_k, lambda_mult, filter,
                                                            **kwargs)

    async def amax_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                       lambda_mult: float = 0.5, filter: Filter | None = None,
                                                       **kwargs: Any) -> list[Document]:
        return await asyncio.to_thread(self.max_marginal_relevance_search_by_vector, embedding, k, fetch_k,
                                       lambda_mult, filter, **kwargs)

    async def amax_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                             lambda_mult: float = 0.5, filter: Filter | None = None,
                                             **kwargs: Any) -> list[Document]:
        vector = await self.pipeline.embedder.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(vector.tolist(), k, fetch_k, lambda_mult,
                                                                   filter, **kwargs)
