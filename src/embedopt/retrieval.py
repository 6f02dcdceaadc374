"""Two-stage retrieval: embed the query → shortlist in the store (oversampled) → rescore → optional rerank → top k.

Hybrid retrieval (a :class:`~embedopt.hybrid.HybridStore` and ``fusion=``): the vector search and BM25 each return
their best ``fusion_candidates`` among the documents matching the filter, :mod:`embedopt.fusion` merges the two
lists (RRF, DBSF or a convex combination with a fitted weight), and the fused list goes on to the reranker or out.

Every result carries its scores and the milliseconds each stage took, so a slow stage is visible per query.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .embedder import Embedder
from .errors import ConfigError, InputError
from .fusion import Fusion, Ranking, parse_fusion
from .hybrid import HybridStore
from .lexical import LexicalResult
from .rerank.base import Reranker, RerankResult
from .stores.base import Rescore, SearchResult, VectorStore
from .stores.filters import Filter

__all__ = ["Hit", "RetrievalResult", "Retriever", "hybrid_hits", "mmr", "mmr_store", "search_hybrid", "search_store"]

_UNSET: Any = object()  # "the retriever's own setting", where None means something else
Sides = list[dict[str, tuple[float | None, float | None]]]
"""Per query of a hybrid search: each fused id's (vector score, BM25 score), None where that side missed it."""


def mmr(query: np.ndarray, vectors: np.ndarray, k: int, lambda_mult: float = 0.5) -> list[int]:
    """Maximal marginal relevance: pick ``k`` rows of ``vectors`` one at a time, each maximizing
    ``lambda_mult * sim(query, row) - (1 - lambda_mult) * max sim(row, picked)`` (cosine). Returns row indices
    in the order picked; ``lambda_mult=1`` is plain similarity order, ``0`` maximal diversity."""
    if not 0.0 <= lambda_mult <= 1.0:
        raise ConfigError(f"lambda_mult must lie in [0, 1], got {lambda_mult}")
    v = np.asarray(vectors, dtype=np.float32)
    if k <= 0 or not len(v):
        return []
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    q = np.asarray(query, dtype=np.float32)
    relevance = unit @ (q / max(float(np.linalg.norm(q)), 1e-12))
    picked = [int(np.argmax(relevance))]
    closest = unit @ unit[picked[0]]  # each row's highest similarity to a picked row
    while len(picked) < min(k, len(v)):
        score = lambda_mult * relevance - (1.0 - lambda_mult) * closest
        score[picked] = -np.inf
        nxt = int(np.argmax(score))
        picked.append(nxt)
        closest = np.maximum(closest, unit @ unit[nxt])
    return picked


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    """The final score: the reranker's when reranked, else the rescored vector similarity."""
    vector_score: float | None
    """The first stage's (rescored) similarity; in a hybrid search ``None`` for a document only BM25 found."""
    rerank_score: float | None
    payload: dict[str, Any]
    text: str | None
    lexical_score: float | None = None
    """In a hybrid search, the document's BM25 score (``None`` when only the vector search found it); the fused
    score is :attr:`score` unless reranked (then :attr:`fusion_score`)."""
    fusion_score: float | None = None
    """In a hybrid search, the fused score."""


@dataclass(frozen=True)
class RetrievalResult:
    query: str
    hits: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    """``embed``, ``search`` (or ``shortlist`` and ``rescore``), ``lexical`` and ``fusion`` (hybrid), ``rerank``
    and ``total``, in milliseconds."""
    candidates: int = 0


class Retriever:
    """The retrieval pipeline over one embedder and one store of the same embedding space.

    Args:
        embedder: produces float vectors at the store's dim (``precision="float32"``; the store quantizes).
        store: a :class:`~embedopt.stores.QuantizedIndex` or :class:`~embedopt.stores.QdrantStore`.
        reranker: an optional second stage (:class:`~embedopt.rerank.CrossEncoderReranker`, Voyage).
        k: hits returned.
        oversample: the shortlist keeps ``k * oversample`` candidates for rescoring.
        rescore: ``int8`` (default), ``float`` or ``none``.
        rerank_candidates: how many rescored candidates the reranker sees (default ``2 * k``).
        text_key: the payload field holding a document's text (the reranker reads it).
        fusion: hybrid retrieval over a :class:`~embedopt.hybrid.HybridStore`: ``"rrf"``, ``"rrf:K"``, ``"dbsf"``,
            ``"convex:ALPHA"`` (``ALPHA`` the dense weight; fit it with ``embedopt eval --fusion``) or a
            :class:`~embedopt.fusion.Fusion`. ``None`` (default): the vector search alone. ``retrieve(...,
            fusion=...)`` overrides it for one call.
        fusion_candidates: how many hits each side returns before fusing (at least the hits asked for).
    """

    def __init__(self, embedder: Embedder, store: VectorStore, *, reranker: Reranker | None = None, k: int = 10,
                 oversample: float = 4.0, rescore: Rescore = "int8", rerank_candidates: int | None = None,
                 text_key: str = "text", fusion: str | Fusion | None = None, fusion_candidates: int = 50) -> None:
        if embedder.precision != "float32":
            raise ConfigError(f"the retriever's embedder must output float32 (got precision={embedder.precision!r}); "
                              "the store quantizes, and rescoring needs the float query")
        fp = embedder.fingerprint("document")
        if fp.space_id != store.fingerprint.space_id:
            raise ConfigError(f"the store holds vectors of {store.fingerprint.id}, the embedder makes {fp.id}: two "
                              "embedding spaces never meet. Query with the store's model, or migrate the store.")
        if embedder.dim != store.dim:
            raise ConfigError(f"the store holds {store.dim}-d vectors, the embedder outputs {embedder.dim}-d; "
                              f"use Embedder(..., dim={store.dim})")
        if reranker is not None and not isinstance(reranker, Reranker):
            raise ConfigError(f"reranker must have rank()/arank() (a Reranker), got {type(reranker).__name__}")
        self.embedder = embedder
        self.store = store
        self.reranker = reranker
        self.k = self._check_k(k)
        self.oversample = oversample
        self.rescore: Rescore = rescore
        self.rerank_candidates = rerank_candidates
        self.text_key = text_key
        indexed = getattr(store, "text_key", text_key) if _has_lexical(store) else text_key
        if indexed != text_key:
            raise ConfigError(f"the hybrid store indexes payload[{indexed!r}], the retriever writes the text "
                              f"to payload[{text_key!r}]: give both the same text_key")
        self.fusion = self._check_fusion(fusion)
        if not isinstance(fusion_candidates, int) or isinstance(fusion_candidates, bool) or fusion_candidates < 1:
            raise ConfigError(f"fusion_candidates must be a positive int, got {fusion_candidates!r}")
        self.fusion_candidates = fusion_candidates

    def _check_fusion(self, fusion: Any) -> Fusion | None:
        if fusion is None:
            return None
        if not _has_lexical(self.store):
            raise ConfigError("fusion needs a lexical index beside the vectors: build the retriever on "
                              "HybridStore(store) (embedopt.hybrid) or QdrantStore(..., sparse=True), or leave "
                              "fusion=None")
        return parse_fusion(fusion)

    @staticmethod
    def _check_k(k: Any) -> int:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"k must be a positive int, got {k!r}")
        return k

    def __deepcopy__(self, memo: dict[int, Any]) -> Retriever:
        """A copy with its own settings that shares the embedder, the store and the reranker: handles on a model
        and an index (copying an index would double its memory and split its writes). Frameworks deep-copy
        their retrievers."""
        twin = copy.copy(self)
        memo[id(self)] = twin
        return twin

    def __repr__(self) -> str:
        return (f"Retriever(store={self.store!r}, k={self.k}, oversample={self.oversample}, rescore={self.rescore!r}, "
                f"reranker={self.reranker!r}, fusion={self.fusion.name if self.fusion else None!r})")

    # ------------------------------------------------------------------------------------------- indexing
    def _prepare(self, texts: Iterable[str], ids: Sequence[str] | None,
                 metadatas: Sequence[Mapping[str, Any]] | None) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        text_list = list(texts)
        id_list = list(ids) if ids is not None else [str(uuid.uuid4()) for _ in text_list]
        metas = [dict(m) for m in metadatas] if metadatas is not None else [{} for _ in text_list]
        if not len(text_list) == len(id_list) == len(metas):
            raise InputError(f"{len(text_list)} texts, {len(id_list)} ids and {len(metas)} metadatas must match")
        for n, m in enumerate(metas):
            if self.text_key in m:
                raise InputError(f"metadata #{n} has the key {self.text_key!r}, where the document's text is kept; "
                                 "rename that key, or build the store with another text_key", n)
        payloads = [{**m, self.text_key: t} for m, t in zip(metas, text_list, strict=True)]
        return text_list, id_list, payloads

    def add_texts(self, texts: Iterable[str], ids: Sequence[str] | None = None,
                  metadatas: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
        """Embed documents (through the embedder's cache) and store them with their text; returns the ids."""
        text_list, id_list, payloads = self._prepare(texts, ids, metadatas)
        if text_list:
            self.store.add(id_list, self.embedder.embed_documents(text_list), payloads)
        return id_list

    async def aadd_texts(self, texts: Iterable[str], ids: Sequence[str] | None = None,
                         metadatas: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
        text_list, id_list, payloads = self._prepare(texts, ids, metadatas)
        if text_list:
            vectors = await self.embedder.aembed_documents(text_list)
            await asyncio.to_thread(self.store.add, id_list, vectors, payloads)
        return id_list

    # ------------------------------------------------------------------------------------------- querying
    def _want(self, k: int) -> int:
        return max(k, self.rerank_candidates or 2 * k) if self.reranker is not None else k

    def _first(self, queries: list[str], vectors: np.ndarray, k: int, where: Filter | None,
               fusion: Fusion | None) -> tuple[SearchResult, Sides | None]:
        """The first stage: the vector search, or both searches fused."""
        if fusion is None:
            return self._search(vectors, k, where), None
        return self._hybrid(queries, vectors, k, where, fusion)

    def _hybrid(self, queries: list[str], vectors: np.ndarray, k: int, where: Filter | None,
                fusion: Fusion) -> tuple[SearchResult, Sides]:
        want = self._want(k)
        depth = max(want, self.fusion_candidates)
        return search_hybrid(self.store, vectors, queries, want, fusion, where=where, dense_k=depth, lexical_k=depth,
                             oversample=max(1.0, self.oversample * k / depth), rescore=self.rescore)

    def _search(self, vectors: np.ndarray, k: int, where: Filter | None = None) -> SearchResult:
        want = self._want(k)
        if where is None:  # stores without filters (before they took where=) keep working
            return self.store.search(vectors, want, oversample=max(1.0, self.oversample * k / want),
                                     rescore=self.rescore)
        return self.store.search(vectors, want, oversample=max(1.0, self.oversample * k / want),
                                 rescore=self.rescore, where=where)

    def _candidates(self, found: SearchResult, n: int) -> tuple[list[str], list[float], list[dict[str, Any]]]:
        """Query ``n``'s first-stage ids, scores and payloads (fetched unless the search returned them)."""
        ids = found.ids[n]
        payloads = found.payloads[n] if found.payloads is not None else self.store.get_payloads(ids)
        return ids, [float(s) for s in found.scores[n]], payloads

    def _rerank_inputs(self, payloads: list[dict[str, Any]]) -> list[str]:
        texts = [p.get(self.text_key) for p in payloads]
        missing = [n for n, t in enumerate(texts) if not isinstance(t, str)]
        if missing:
            raise ConfigError(f"{len(missing)} candidates have no text in payload[{self.text_key!r}] to rerank; add "
                              "documents with Retriever.add_texts, or set text_key to the field that holds the text")
        return [t for t in texts if isinstance(t, str)]

    def _result(self, query: str, found: SearchResult, candidates: tuple[list[str], list[float], list[dict[str, Any]]],
                ranked: list[RerankResult] | None, k: int, shared_ms: dict[str, float], share: float,
                payloads_ms: float, rerank_ms: float,
                sides: dict[str, tuple[float | None, float | None]] | None = None) -> RetrievalResult:
        """One query's hits and timings; ``shared_ms`` (embed, search) covered ``1 / share`` queries at once."""
        ids, scores, payloads = candidates
        order: list[tuple[int, float | None]]
        if ranked is None:
            order = [(n, None) for n in range(min(k, len(ids)))]
        else:
            order = [(r.index, r.score) for r in ranked[:k]]
        if sides is None:
            hits = [Hit(ids[n], s if s is not None else scores[n], scores[n], s, payloads[n],
                        payloads[n].get(self.text_key)) for n, s in order]
        else:
            hits = [Hit(ids[n], s if s is not None else scores[n], sides[ids[n]][0], s, payloads[n],
                        payloads[n].get(self.text_key), sides[ids[n]][1], scores[n]) for n, s in order]
        timings = {key: v * share for key, v in {**shared_ms, **found.timings_ms}.items()}
        timings["payloads"] = payloads_ms
        if self.reranker is not None:
            timings["rerank"] = rerank_ms
        timings["total"] = (shared_ms["embed"] + shared_ms["search"]) * share + payloads_ms + rerank_ms
        return RetrievalResult(query, hits, {key: round(v, 3) for key, v in timings.items()}, found.candidates)

    def retrieve(self, query: str, k: int | None = None, *, where: Filter | None = None,
                 fusion: str | Fusion | None = _UNSET) -> RetrievalResult:
        """Top ``k`` documents for ``query``, with scores and per-stage timings; ``where`` filters on the
        payloads during the store's search (:mod:`embedopt.stores.filters`), on both sides of a hybrid search.
        ``fusion`` overrides the retriever's for this call (``None``: the vector search alone)."""
        return self.retrieve_many([query], k, where=where, fusion=fusion)[0]

    def retrieve_many(self, queries: Sequence[str], k: int | None = None, *, where: Filter | None = None,
                      fusion: str | Fusion | None = _UNSET) -> list[RetrievalResult]:
        """Several queries at once: one embedding call and one batched store search."""
        k = self.k if k is None else self._check_k(k)
        how = self.fusion if fusion is _UNSET else self._check_fusion(fusion)
        queries = list(queries)
        started = time.perf_counter()
        vectors = self.embedder.embed(queries, "query")
        embedded = time.perf_counter()
        found, sides = self._first(queries, vectors, k, where, how)
        shared_ms = {"embed": (embedded - started) * 1e3, "search": (time.perf_counter() - embedded) * 1e3}
        out = []
        for n, query in enumerate(queries):
            t0 = time.perf_counter()
            candidates = self._candidates(found, n)
            t1 = time.perf_counter()
            ranked = None
            if self.reranker is not None and candidates[0]:
                ranked = self.reranker.rank(query, self._rerank_inputs(candidates[2]), top_n=k)
            t2 = time.perf_counter()
            out.append(self._result(query, found, candidates, ranked, k, shared_ms, 1.0 / max(1, len(queries)),
                                    (t1 - t0) * 1e3, (t2 - t1) * 1e3, sides[n] if sides is not None else None))
        return out

    async def aretrieve(self, query: str, k: int | None = None, *, where: Filter | None = None,
                        fusion: str | Fusion | None = _UNSET) -> RetrievalResult:
        """Async :meth:`retrieve`, in the same steps: the embedding goes through the async path, the store search
        and the payloads run in a worker thread, the reranker through ``arank``; the event loop never blocks."""
        k = self.k if k is None else self._check_k(k)
        how = self.fusion if fusion is _UNSET else self._check_fusion(fusion)
        started = time.perf_counter()
        vector = await self.embedder.aembed_query(query)
        embedded = time.perf_counter()
        found, sides = await asyncio.to_thread(self._first, [query], vector[None, :], k, where, how)
        shared_ms = {"embed": (embedded - started) * 1e3, "search": (time.perf_counter() - embedded) * 1e3}
        t0 = time.perf_counter()
        candidates = await asyncio.to_thread(self._candidates, found, 0)
        t1 = time.perf_counter()
        ranked = None
        if self.reranker is not None and candidates[0]:
            ranked = await self.reranker.arank(query, self._rerank_inputs(candidates[2]), top_n=k)
        t2 = time.perf_counter()
        return self._result(query, found, candidates, ranked, k, shared_ms, 1.0, (t1 - t0) * 1e3, (t2 - t1) * 1e3,
                            sides[0] if sides is not None else None)

    # ------------------------------------------------------------------------------------------- by vector
    def search_vector(self, vector: Any, k: int | None = None, *, where: Filter | None = None) -> list[Hit]:
        """The first stage alone, for a query vector the caller embedded (no reranking: there is no text)."""
        k = self.k if k is None else self._check_k(k)
        return search_store(self.store, vector, k, where=where, oversample=self.oversample, rescore=self.rescore,
                            text_key=self.text_key)

    def mmr_vector(self, vector: Any, k: int | None = None, *, fetch_k: int = 20, lambda_mult: float = 0.5,
                   where: Filter | None = None) -> list[Hit]:
        """``k`` hits chosen by maximal marginal relevance among the ``fetch_k`` most similar (:func:`mmr_store`)."""
        k = self.k if k is None else self._check_k(k)
        return mmr_store(self.store, vector, k, fetch_k=fetch_k, lambda_mult=lambda_mult, where=where,
                         oversample=self.oversample, rescore=self.rescore, text_key=self.text_key)


def _has_lexical(store: Any) -> bool:
    """A HybridStore, or a store that keeps BM25 itself (QdrantStore with sparse=True)."""
    return isinstance(store, HybridStore) or (callable(getattr(store, "search_lexical", None))
                                              and bool(getattr(store, "sparse", False)))


def search_hybrid(store: VectorStore, vectors: Any, queries: Sequence[str], k: int, fusion: str | Fusion, *,
                  where: Filter | None = None, dense_k: int | None = None, lexical_k: int | None = None,
                  oversample: float = 4.0, rescore: Rescore = "int8") -> tuple[SearchResult, Sides]:
    """Both sides of a hybrid store searched for the same queries (``vectors`` embedded from ``queries``), under
    the same filter, and fused: per query the best ``k`` fused ids, fused scores and payloads, and each id's
    (vector score, BM25 score). Each side returns its best ``dense_k`` / ``lexical_k`` (default ``k``)."""
    how = parse_fusion(fusion)
    if not _has_lexical(store):
        raise ConfigError("hybrid search needs a HybridStore (embedopt.hybrid) or a QdrantStore with sparse=True: "
                          "a lexical index beside the vectors")
    t0 = time.perf_counter()
    dense = store.search(np.asarray(vectors, dtype=np.float32), dense_k or k, oversample=oversample, rescore=rescore,
                         where=where)
    t1 = time.perf_counter()
    lexical: LexicalResult | SearchResult = store.search_lexical(  # type: ignore[attr-defined]
        list(queries), lexical_k or k, where=where)
    t2 = time.perf_counter()
    if len(dense.ids) != len(lexical.ids):
        raise InputError(f"{len(dense.ids)} query vectors and {len(lexical.ids)} query texts: give one of each")
    known: dict[str, dict[str, Any]] = {}
    if dense.payloads is not None:
        for ids, found in zip(dense.ids, dense.payloads, strict=True):
            known.update(zip(ids, found, strict=True))
    fused_ids: list[list[str]] = []
    fused_scores: list[np.ndarray] = []
    sides: Sides = []
    for n in range(len(dense.ids)):
        d, lx = Ranking.from_result(dense, n), Ranking.from_result(lexical, n)
        fused = how.fuse(d, lx, k)
        d_of = dict(zip(d.ids, d.scores.tolist(), strict=True))
        l_of = dict(zip(lx.ids, lx.scores.tolist(), strict=True))
        fused_ids.append(fused.ids)
        fused_scores.append(fused.scores.astype(np.float32))
        sides.append({i: (d_of.get(i), l_of.get(i)) for i in fused.ids})
    t3 = time.perf_counter()
    missing = list(dict.fromkeys(i for ids in fused_ids for i in ids if i not in known))
    if missing:
        known.update(zip(missing, store.get_payloads(missing), strict=True))
    payloads = [[known.get(i, {}) for i in ids] for ids in fused_ids]
    timings = {**dense.timings_ms, "dense": (t1 - t0) * 1e3, "lexical": (t2 - t1) * 1e3, "fusion": (t3 - t2) * 1e3}
    return SearchResult(fused_ids, fused_scores, max(dense_k or k, lexical_k or k), timings, payloads), sides


def hybrid_hits(found: SearchResult, sides: Sides, n: int = 0, *, text_key: str = "text") -> list[Hit]:
    """Query ``n`` of :func:`search_hybrid` as hits (the fused score, and each side's)."""
    return [Hit(i, float(s), sides[n][i][0], None, p, p.get(text_key), sides[n][i][1], float(s))
            for i, s, p in zip(found.ids[n], found.scores[n], found.payloads[n] if found.payloads else [], strict=True)]


def search_store(store: VectorStore, vector: Any, k: int, *, where: Filter | None = None, oversample: float = 4.0,
                 rescore: Rescore = "int8", text_key: str = "text") -> list[Hit]:
    """One query vector's top ``k`` in ``store`` as hits with their payloads (for adapters that receive vectors
    already embedded, as a LlamaIndex vector store does)."""
    found = store.search(np.asarray(vector, dtype=np.float32)[None, :], k, oversample=oversample, rescore=rescore,
                         where=where)
    ids, scores = found.ids[0], [float(s) for s in found.scores[0]]
    payloads = found.payloads[0] if found.payloads is not None else store.get_payloads(ids)
    return [Hit(i, s, s, None, p, p.get(text_key)) for i, s, p in zip(ids, scores, payloads, strict=True)]


def mmr_store(store: VectorStore, vector: Any, k: int, *, fetch_k: int = 20, lambda_mult: float = 0.5,
              where: Filter | None = None, oversample: float = 4.0, rescore: Rescore = "int8",
              text_key: str = "text") -> list[Hit]:
    """``k`` hits chosen by maximal marginal relevance (:func:`mmr`) among the ``fetch_k`` most similar, with
    the stored vectors (decoded) standing for the documents; scores stay the similarities to the query."""
    hits = search_store(store, vector, max(k, fetch_k), where=where, oversample=oversample, rescore=rescore,
                        text_key=text_key)
    if not hits:
        return []
    records = {r.id: r.vector for r in store.get([h.id for h in hits], with_vectors=True) if r.vector is not None}
    hits = [h for h in hits if h.id in records]
    chosen = mmr(np.asarray(vector, dtype=np.float32), np.stack([records[h.id] for h in hits]), k, lambda_mult)
    return [hits[n] for n in chosen]
