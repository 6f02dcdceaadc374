"""``EmbedOptVectorStore``: a LlamaIndex vector store over embedopt's stores (the embedded QuantizedIndex, Qdrant's
engine in-process, a Qdrant server), with MetadataFilters applied inside the search and persistence through
``StorageContext``."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
from pydantic import PrivateAttr

from embedopt import Embedder
from embedopt.errors import ConfigError
from embedopt.fingerprint import Fingerprint
from embedopt.fusion import RRF, Convex, Fusion, parse_fusion
from embedopt.hybrid import LEXICAL_FOLDER, HybridStore
from embedopt.lexical import LexicalIndex
from embedopt.retrieval import Hit, hybrid_hits, mmr_store, search_hybrid, search_store
from embedopt.stores import QuantizedIndex, Rescore
from embedopt.stores.base import VectorStore as CoreStore

from .embeddings import EmbedOptEmbedding

__all__ = ["EmbedOptVectorStore"]

_FORMAT = "embedopt.llamaindex-vector-store/1"
_OPS = {FilterOperator.EQ: "$eq", FilterOperator.NE: "$ne", FilterOperator.GT: "$gt", FilterOperator.GTE: "$gte",
        FilterOperator.LT: "$lt", FilterOperator.LTE: "$lte", FilterOperator.IN: "$in", FilterOperator.NIN: "$nin",
        FilterOperator.ANY: "$in", FilterOperator.CONTAINS: "$eq"}


def to_where(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex ``MetadataFilters`` (nested, and/or/not) as embedopt's filter dict. A list field matches
    ``CONTAINS``/``ANY`` when any of its items does, ``ALL`` when each value is among its items."""
    if filters is None or not filters.filters:
        return None
    parts: list[dict[str, Any]] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            nested = to_where(f)
            if nested is not None:
                parts.append(nested)
            continue
        assert isinstance(f, MetadataFilter)
        if f.operator in _OPS:
            parts.append({f.key: {_OPS[f.operator]: f.value}})
        elif f.operator == FilterOperator.ALL:
            values = f.value if isinstance(f.value, list) else [f.value]
            parts.append({"$and": [{f.key: {"$eq": v}} for v in values]})
        elif f.operator == FilterOperator.IS_EMPTY:
            parts.append({f.key: {"$exists": False}})
        else:
            raise ConfigError(f"filter operator {f.operator.value!r} is not supported by embedopt's stores; use "
                              f"{', '.join(sorted(o.value for o in _OPS))}, all or is_empty")
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.NOT:  # LlamaIndex: none of the filters match
        return {"$not": {"$or": parts}}
    if len(parts) == 1:
        return parts[0]
    return {"$and": parts} if condition == FilterCondition.AND else {"$or": parts}


def _fingerprint(embed_model: EmbedOptEmbedding | Embedder | BaseEmbedding) -> tuple[Fingerprint, int]:
    if isinstance(embed_model, Embedder):
        return embed_model.fingerprint("document"), embed_model.dim
    if not isinstance(embed_model, EmbedOptEmbedding):
        # the index embeds with this model as it is: the store records that model's raw (unnormalized) space
        embed_model = EmbedOptEmbedding.wrap(embed_model, normalize=False, cache=None)
    return embed_model.core.fingerprint("document"), embed_model.core.dim


class EmbedOptVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store on embedopt's stores; it keeps each node whole (``stores_text``), so a
    ``VectorStoreIndex`` needs no docstore to answer.

    .. code-block:: python

        embed_model = EmbedOptEmbedding()                   # or EmbedOptEmbedding.wrap(OpenAIEmbedding(...))
        vector_store = EmbedOptVectorStore(embed_model=embed_model)
        storage = StorageContext.from_defaults(vector_store=vector_store)
        index = VectorStoreIndex.from_documents(docs, storage_context=storage, embed_model=embed_model)
        index.storage_context.persist("./storage")
        # later
        vector_store = EmbedOptVectorStore.from_persist_dir("./storage")
        storage = StorageContext.from_defaults(vector_store=vector_store, persist_dir="./storage")
        index = load_index_from_storage(storage, embed_model=embed_model)

    Args:
        store: an embedopt store (default: a new ``QuantizedIndex`` of ``embed_model``'s space), or a factory
            ``(fingerprint, dim) -> store`` (``lambda fp, dim: EdgeStore(fp, "./edge", dim=dim)``).
        embed_model: the model the index embeds with: names the embedding space (required without ``store``; with
            one, it must be the store's space).
        oversample, rescore: the store's shortlist size (``k * oversample``) and rescoring.
        enable_hybrid: keep a BM25 index (:class:`~embedopt.lexical.LexicalIndex`) beside the vectors, over the
            same node ids and the text each node was embedded from (``MetadataMode.EMBED``), so that
            ``vector_store_query_mode="hybrid"`` (and ``"text_search"``/``"sparse"``: BM25 alone) can be asked.
        fusion: how a hybrid query fuses when it gives no ``alpha``: ``"rrf"`` (default), ``"rrf:K"``, ``"dbsf"``,
            ``"convex:ALPHA"``. With ``alpha`` (LlamaIndex's: 1 = vectors only, 0 = BM25 only) the fusion is the
            convex combination of min-max normalized scores, the weight ``embedopt eval --fusion`` fits.
        lexical: the BM25 index to keep (default: a new one); a ``HybridStore`` given as ``store`` brings its own.

    A hybrid query (``index.as_retriever(vector_store_query_mode="hybrid", alpha=0.6, sparse_top_k=20,
    similarity_top_k=20, hybrid_top_k=5)``) searches the vectors for ``similarity_top_k`` nodes and BM25 for
    ``sparse_top_k`` (default: the same), both under the query's filters, and returns the best ``hybrid_top_k``
    (default ``similarity_top_k``) fused; similarities are the fused scores.
    """

    stores_text: bool = True
    flat_metadata: bool = False

    _store: CoreStore = PrivateAttr()
    _oversample: float = PrivateAttr(default=4.0)
    _rescore: Rescore = PrivateAttr(default="int8")
    _fusion: Fusion = PrivateAttr(default_factory=RRF)

    def __init__(self, store: CoreStore | Callable[[Fingerprint, int], CoreStore] | None = None, *,
                 embed_model: EmbedOptEmbedding | Embedder | BaseEmbedding | None = None, oversample: float = 4.0,
                 rescore: Rescore = "int8", enable_hybrid: bool = False, fusion: str | Fusion = "rrf",
                 lexical: LexicalIndex | None = None) -> None:
        super().__init__(stores_text=True)
        if store is None or not isinstance(store, CoreStore):
            if embed_model is None:
                raise ConfigError("pass embed_model= (the model the index embeds with) or a ready store=")
            fp, dim = _fingerprint(embed_model)
            store = QuantizedIndex(fp, dim=dim) if store is None else store(fp, dim)
        elif embed_model is not None:
            fp, dim = _fingerprint(embed_model)
            if fp.space_id != store.fingerprint.space_id or dim != store.dim:
                raise ConfigError(f"the store holds {store.dim}-d vectors of {store.fingerprint.id}, the embed model "
                                  f"makes {dim}-d {fp.id}: two embedding spaces never meet")
        if (enable_hybrid or lexical is not None) and not isinstance(store, HybridStore):
            store = HybridStore(store, lexical)
        self._store = store
        self._oversample = oversample
        self._rescore = rescore
        self._fusion = parse_fusion(fusion)

    @classmethod
    def class_name(cls) -> str:
        return "EmbedOptVectorStore"

    @property
    def client(self) -> CoreStore:
        """The embedopt store underneath (a ``HybridStore`` when hybrid is enabled)."""
        return self._store

    @property
    def enable_hybrid(self) -> bool:
        return isinstance(self._store, HybridStore)

    # ------------------------------------------------------------------------------------------- writing
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        if add_kwargs:
            raise ConfigError(f"add() got unexpected arguments {sorted(add_kwargs)}")
        if not nodes:
            return []
        ids = [n.node_id for n in nodes]
        vectors = [n.get_embedding() for n in nodes]
        payloads = [node_to_metadata_dict(n, remove_text=False, flat_metadata=self.flat_metadata) for n in nodes]
        if isinstance(self._store, HybridStore):  # BM25 indexes the text each node was embedded from
            self._store.add(ids, vectors, payloads, texts=[n.get_content(metadata_mode=MetadataMode.EMBED)
                                                           for n in nodes])
        else:
            self._store.add(ids, vectors, payloads)
        return ids

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        if delete_kwargs:
            raise ConfigError(f"delete() got unexpected arguments {sorted(delete_kwargs)}")
        self._store.delete(where={"ref_doc_id": ref_doc_id})

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    def delete_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None,
                     **delete_kwargs: Any) -> None:
        if delete_kwargs:
            raise ConfigError(f"delete_nodes() got unexpected arguments {sorted(delete_kwargs)}")
        self._store.delete(node_ids, where=to_where(filters))

    async def adelete_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None,
                            **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    def clear(self) -> None:
        self._store.clear()

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    # ------------------------------------------------------------------------------------------- reading
    def get_nodes(self, node_ids: list[str] | None = None,
                  filters: MetadataFilters | None = None) -> list[BaseNode]:
        return [metadata_dict_to_node(r.payload) for r in self._store.get(node_ids, where=to_where(filters))]

    async def aget_nodes(self, node_ids: list[str] | None = None,
                         filters: MetadataFilters | None = None) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    def _query_where(self, query: VectorStoreQuery) -> dict[str, Any] | None:
        parts = [w for w in (to_where(query.filters),) if w is not None]
        if query.doc_ids:
            parts.append({"ref_doc_id": {"$in": list(query.doc_ids)}})
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else {"$and": parts}

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nodes nearest ``query.query_embedding`` that match ``query.filters`` (and
        ``doc_ids``, ``node_ids``); ``mode=MMR`` trades similarity for diversity (``mmr_threshold`` is the
        weight of similarity, default 0.5)."""
        lexical_modes = (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.TEXT_SEARCH)
        if query.mode in (VectorStoreQueryMode.HYBRID, *lexical_modes):
            return self._hybrid_query(query)
        if query.query_embedding is None:
            raise ConfigError("this vector store answers embedding queries; set query_embedding")
        k = query.similarity_top_k
        where = self._query_where(query)
        hits: list[Hit]
        if query.node_ids:
            hits = self._among(query.query_embedding, list(query.node_ids), k, where)
        elif query.mode == VectorStoreQueryMode.MMR:
            fetch_k = int(kwargs.get("mmr_prefetch_k") or max(20, 4 * k))
            hits = mmr_store(self._store, query.query_embedding, k, fetch_k=fetch_k,
                             lambda_mult=query.mmr_threshold if query.mmr_threshold is not None else 0.5,
                             where=where, oversample=self._oversample, rescore=self._rescore)
        elif query.mode == VectorStoreQueryMode.DEFAULT:
            hits = search_store(self._store, query.query_embedding, k, where=where, oversample=self._oversample,
                                rescore=self._rescore)
        else:
            raise ConfigError(f"query mode {query.mode.value!r} is not supported; use default, mmr, hybrid, "
                              "sparse or text_search")
        return VectorStoreQueryResult(nodes=[metadata_dict_to_node(h.payload) for h in hits],
                                      similarities=[h.score for h in hits], ids=[h.id for h in hits])

    def _hybrid_query(self, query: VectorStoreQuery) -> VectorStoreQueryResult:
        store = self._store
        if not isinstance(store, HybridStore):
            raise ConfigError(f"query mode {query.mode.value!r} needs the BM25 index: build the vector store with "
                              "enable_hybrid=True")
        if not query.query_str:
            raise ConfigError(f"query mode {query.mode.value!r} needs the query text (query_str)")
        if query.node_ids:
            raise ConfigError(f"query mode {query.mode.value!r} does not take node_ids; filter with filters= or "
                              "doc_ids=")
        where = self._query_where(query)
        if query.mode != VectorStoreQueryMode.HYBRID:  # BM25 alone
            k = query.sparse_top_k or query.similarity_top_k
            found = store.search_lexical(query.query_str, k, where=where)
            ids, scores = found.ids[0], found.scores[0].tolist()
            payloads = store.get_payloads(ids)
            return VectorStoreQueryResult(nodes=[metadata_dict_to_node(p) for p in payloads], similarities=scores,
                                          ids=ids)
        if query.query_embedding is None:
            raise ConfigError("a hybrid query needs query_embedding too (the retriever embeds query_str)")
        fusion = Convex(query.alpha) if query.alpha is not None else self._fusion
        dense_k = query.similarity_top_k
        result, sides = search_hybrid(store, [query.query_embedding], [query.query_str],
                                      query.hybrid_top_k or dense_k, fusion, where=where, dense_k=dense_k,
                                      lexical_k=query.sparse_top_k or dense_k,
                                      oversample=self._oversample, rescore=self._rescore)
        hits = hybrid_hits(result, sides)
        return VectorStoreQueryResult(nodes=[metadata_dict_to_node(h.payload) for h in hits],
                                      similarities=[h.score for h in hits], ids=[h.id for h in hits])

    def _among(self, vector: list[float], node_ids: list[str], k: int, where: dict[str, Any] | None) -> list[Hit]:
        """Exact scores over the given nodes only (their stored vectors)."""
        import numpy as np

        records = self._store.get(node_ids, where=where, with_vectors=True)
        vectors = [r.vector for r in records if r.vector is not None]
        if not vectors:
            return []
        scores = np.stack(vectors) @ np.asarray(vector, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(records[n].id, float(scores[n]), float(scores[n]), None, records[n].payload, None) for n in order]

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    # ------------------------------------------------------------------------------------------- persisting
    def persist(self, persist_path: str, fs: Any = None) -> None:
        """Called by ``StorageContext.persist``: write a small manifest at ``persist_path`` and the index beside it
        (a QuantizedIndex is saved to ``<persist_path minus .json>.embedopt/``; an EdgeStore is flushed in its own
        folder; a Qdrant server keeps its own data)."""
        if fs is not None and getattr(fs, "protocol", "file") not in ("file", ("file", "local")):
            raise ConfigError("EmbedOptVectorStore persists to the local file system only")
        manifest = Path(persist_path)
        manifest.parent.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {"format": _FORMAT, "oversample": self._oversample, "rescore": self._rescore,
                                "fusion": self._fusion.name}
        store = self._store
        if isinstance(store, HybridStore):  # the BM25 index goes into the vectors' folder, as lexical/
            folder = manifest.with_suffix(".embedopt")
            lexical_at = folder / LEXICAL_FOLDER
            inner = store.store
            if isinstance(inner, QuantizedIndex):
                store.save(folder)
            else:
                store.lexical.save(lexical_at)
            meta.update(hybrid=True, lexical=os.path.relpath(lexical_at, manifest.parent))
            store = inner
        if isinstance(store, QuantizedIndex) and meta.get("hybrid"):
            meta.update(kind="quantized-index", folder=manifest.with_suffix(".embedopt").name)
        elif isinstance(store, QuantizedIndex):
            folder = manifest.with_suffix(".embedopt")
            store.save(folder)
            meta.update(kind="quantized-index", folder=folder.name)
        elif type(store).__name__ == "EdgeStore":
            store.flush()  # type: ignore[attr-defined]
            meta.update(kind="edge", path=os.fspath(Path(store.root).resolve()))  # type: ignore[attr-defined]
        else:
            meta.update(kind=type(store).__name__)
        from embedopt._files import atomic_write_text

        atomic_write_text(manifest, json.dumps(meta, indent=1))

    @classmethod
    def from_persist_path(cls, persist_path: str, *, store: CoreStore | None = None) -> EmbedOptVectorStore:
        """The store a manifest written by :meth:`persist` names (a QdrantStore is reopened by you: pass it)."""
        manifest = Path(persist_path)
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{manifest} holds no embedopt vector store manifest ({exc}); persist the "
                              "StorageContext first") from exc
        if meta.get("format") != _FORMAT:
            raise ConfigError(f"{manifest} was not written by EmbedOptVectorStore")
        if isinstance(store, HybridStore):
            store = store.store
        if store is None:
            if meta["kind"] == "quantized-index":
                store = QuantizedIndex.load(manifest.parent / meta["folder"])
            elif meta["kind"] == "edge":
                from embedopt.stores import EdgeStore

                store = EdgeStore.open_live(meta["path"])
            else:
                raise ConfigError(f"{manifest} names a {meta['kind']}, which keeps its own data: reopen it and pass "
                                  "store=")
        lexical = None
        if meta.get("hybrid"):
            lexical = LexicalIndex.load(manifest.parent / meta["lexical"])
        return cls(store, oversample=float(meta["oversample"]), rescore=meta["rescore"],
                   fusion=meta.get("fusion", "rrf"), lexical=lexical)

    @classmethod
    def from_persist_dir(cls, persist_dir: str, namespace: str = "default", *,
                         store: CoreStore | None = None) -> EmbedOptVectorStore:
        """The store ``StorageContext.persist(persist_dir)`` wrote for ``namespace``."""
        from llama_index.core.vector_stores.simple import DEFAULT_PERSIST_FNAME, NAMESPACE_SEP

        return cls.from_persist_path(os.path.join(persist_dir, f"{namespace}{NAMESPACE_SEP}{DEFAULT_PERSIST_FNAME}"),
                                     store=store)
