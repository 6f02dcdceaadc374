"""Qdrant as the store: versioned collections behind an alias, binary or scalar quantization with oversampling
and rescoring, Matryoshka prefixes as named vectors searched with prefetch, payload filters, and (``sparse=True``)
BM25 as Qdrant sparse vectors with the IDF modifier, fused with the dense search server-side (prefetch + RRF/DBSF).

Works against a server or cluster (``url=``) and in qdrant-client's local mode (``location=":memory:"`` or
``path=``). **Local mode is a brute-force float search: it ignores quantization, oversampling and rescoring**
(qdrant-client warns so itself); use it for tests and small data, a server for the memory savings.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from .._extras import require
from ..errors import ConfigError, DimensionError, InputError
from ..fingerprint import Fingerprint
from ..matryoshka import truncate
from .base import Record, Rescore, SearchResult, as_ids, check_counts, check_vectors
from .filters import Filter, parse_filter, to_qdrant
from .quantization_config import HnswConfig, QuantizationConfig

__all__ = ["QdrantStore"]

Quantization = Literal["binary", "scalar", "none"] | QuantizationConfig
_ID_KEY = "_embedopt_id"
_NS = uuid.UUID("6f1d8a52-9c51-4c1e-9a8e-6f1c2b7d0e11")
_BATCH = 256
_SPARSE = "bm25"


def _term_index(term: str) -> int:
    """A term's sparse dimension: a stable 32-bit hash (no vocabulary to keep in step between clients)."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")


def _point_id(id_: str) -> str:
    """Qdrant takes unsigned ints or UUIDs as point ids: a str id maps to a stable UUID; it is kept in the payload."""
    return str(uuid.uuid5(_NS, id_))


class QdrantStore:
    """One embedding space in a Qdrant collection.

    The physical collection is ``{collection}__{space}`` (``space`` from the fingerprint and dim) and the alias
    ``collection`` names the live version. Opening a store whose alias points at another model's collection is
    refused, unless ``activate=False`` (build a new version beside the live one, then :meth:`activate` it).

    Args:
        fingerprint: the document fingerprint of the vectors.
        collection: the alias applications query.
        client: a ``QdrantClient``; else one is made from ``url``/``api_key`` (server) or ``location``/``path``
            (local mode).
        dim: stored dimension (a Matryoshka truncation); default the model's.
        quantization: ``binary`` (32x smaller, rescored from the originals), ``scalar`` (int8), ``none``, or a
            :class:`~embedopt.stores.QuantizationConfig` (1.5/2-bit binary, product quantization, oversampling):
            the same object :class:`~embedopt.stores.EdgeStore` takes, so moving from the embedded engine to a
            server keeps the settings.
        hnsw: the HNSW graph settings (default: the server's).
        matryoshka_dims: prefixes stored as named vectors ``mrl{d}``; ``search(..., funnel=d)`` shortlists on one
            and rescores with the full vector, in one ``query_points`` call with prefetch.
        activate: point the alias at this version when it is created (default), or leave the live one alone.
        sparse: also keep each point's text as a BM25 sparse vector ``bm25`` (Qdrant computes the IDF itself:
            ``Modifier.IDF``), for :meth:`search_lexical` and :meth:`search_fused`; the text is read from
            ``payload[text_key]``. Term weights are BM25's ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl /
            avgdl))`` with a fixed ``avgdl`` (Qdrant keeps no length statistics; fastembed's Bm25 does the same),
            terms from :class:`~embedopt.lexical.Tokenizer`, hashed to 32-bit dimensions.
        text_key, k1, b, avgdl: see ``sparse``.
    """

    def __init__(self, fingerprint: Fingerprint, *, collection: str, client: Any = None, url: str | None = None,
                 api_key: str | None = None, location: str | None = None, path: str | None = None,
                 dim: int | None = None, quantization: Quantization = "binary",
                 matryoshka_dims: Sequence[int] = (), on_disk: bool = True, activate: bool = True,
                 hnsw: HnswConfig | None = None, sparse: bool = False, text_key: str = "text", k1: float = 1.2,
                 b: float = 0.75, avgdl: float = 256.0) -> None:
        qc = require("qdrant_client", extra="qdrant", feature="QdrantStore", package="qdrant-client")
        from qdrant_client import models

        self._m = models
        self.config = QuantizationConfig.of(quantization)
        self.hnsw = hnsw
        self.fingerprint = fingerprint
        self.dim = fingerprint.dim if dim is None else int(dim)
        if not 0 < self.dim <= fingerprint.dim:
            raise DimensionError(f"dim must be between 1 and the model's {fingerprint.dim}, got {self.dim}")
        self.sparse, self.text_key, self._bm25 = bool(sparse), text_key, (float(k1), float(b), float(avgdl))
        self._tokenizer: Any = None
        if self.sparse:
            from ..lexical import Tokenizer

            self._tokenizer = Tokenizer()
        self.matryoshka_dims = tuple(sorted({int(d) for d in matryoshka_dims}))
        if any(not 0 < d < self.dim for d in self.matryoshka_dims):
            raise DimensionError(f"matryoshka_dims must lie below the stored dim {self.dim}: {matryoshka_dims}")
        self.quantization = self.config.label
        if client is None:
            if url is not None:
                client = qc.QdrantClient(url=url, api_key=api_key)
            else:
                client = qc.QdrantClient(location=location or (None if path else ":memory:"), path=path)
        self.client = client
        self.local = type(getattr(client, "_client", None)).__name__.startswith("QdrantLocal")
        self.alias = collection
        self.name = f"{collection}__{fingerprint.space_id[:12]}_d{self.dim}"
        self._meta = {"embedopt": "qdrant-store/1", "fingerprint": json.dumps(fingerprint.to_dict()),
                      "dim": self.dim, "quantization": self.quantization,
                      "matryoshka_dims": list(self.matryoshka_dims)}
        if self.sparse:
            self._meta["sparse"] = {"k1": k1, "b": b, "avgdl": avgdl, "tokenizer": self._tokenizer.to_dict()}
        if not client.collection_exists(self.name):
            self._create(on_disk)
        else:
            self._check_existing()
        live = self.live_collection()
        if live is None and activate:
            self.activate()
        elif live is not None and live != self.name and activate:
            other = self._fingerprint_of(live)
            raise ConfigError(
                f"alias {collection!r} serves {live} ({other}), not this model ({fingerprint.id}); vectors of two "
                "spaces never meet. Build the new version with activate=False and cut over with activate() "
                "(or `embedopt migrate`)")

    # ------------------------------------------------------------------------------------------- versions
    def _create(self, on_disk: bool) -> None:
        m = self._m
        vectors = {"full": m.VectorParams(size=self.dim, distance=m.Distance.DOT, on_disk=on_disk,
                                          quantization_config=self.config.to_qdrant(m))}
        for d in self.matryoshka_dims:
            vectors[f"mrl{d}"] = m.VectorParams(size=d, distance=m.Distance.DOT)
        sparse = {_SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)} if self.sparse else None
        self.client.create_collection(self.name, vectors_config=vectors, metadata=self._meta,
                                      sparse_vectors_config=sparse,
                                      hnsw_config=self.hnsw.to_qdrant(m) if self.hnsw is not None else None)

    def _fingerprint_of(self, name: str) -> str:
        meta = self.client.get_collection(name).config.metadata or {}
        try:
            return str(json.loads(meta["fingerprint"])["id"])
        except (KeyError, TypeError, ValueError):
            return "a collection embedopt did not create"

    def _check_existing(self) -> None:
        meta = self.client.get_collection(self.name).config.metadata or {}
        if meta.get("fingerprint") != self._meta["fingerprint"] or meta.get("dim") != self.dim:
            raise ConfigError(f"collection {self.name} holds {self._fingerprint_of(self.name)}, not "
                              f"{self.fingerprint.id} at dim {self.dim}; use another collection name")
        if list(meta.get("matryoshka_dims") or []) != list(self.matryoshka_dims) \
                or meta.get("quantization") != self.quantization or meta.get("sparse") != self._meta.get("sparse"):
            raise ConfigError(f"collection {self.name} was built with quantization={meta.get('quantization')!r}, "
                              f"matryoshka_dims={meta.get('matryoshka_dims')}, sparse={meta.get('sparse')}; open it "
                              "with the same settings")

    def live_collection(self) -> str | None:
        """The collection the alias points at now (None when there is no alias yet)."""
        for a in self.client.get_aliases().aliases:
            if a.alias_name == self.alias:
                return str(a.collection_name)
        return None

    def activate(self) -> str | None:
        """Point the alias at this version in one atomic operation; returns the version it pointed at before."""
        m = self._m
        before = self.live_collection()
        ops: list[Any] = []
        if before is not None:
            ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=self.alias)))
        ops.append(m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name=self.name,
                                                                     alias_name=self.alias)))
        self.client.update_collection_aliases(change_aliases_operations=ops)
        return before

    def __repr__(self) -> str:
        where = "local mode" if self.local else "server"
        return (f"QdrantStore({self.alias!r} -> {self.name}, {self.fingerprint.id}, dim={self.dim}, "
                f"quantization={self.quantization!r}, {where})")

    def __len__(self) -> int:
        return int(self.client.count(self.name, exact=True).count)

    # ------------------------------------------------------------------------------------------- write
    def _check(self, vectors: Any) -> np.ndarray:
        return check_vectors(vectors, self.dim, f"collection {self.name} holds {self.dim}-d vectors of "
                                                f"{self.fingerprint.id}")

    def add(self, ids: Any, vectors: Any, payloads: list[dict[str, Any]] | None = None) -> None:
        """Upsert vectors under ``ids`` (an id already present is replaced)."""
        id_list = as_ids(ids)
        v = self._check(vectors)
        check_counts(id_list, v, payloads)
        m = self._m
        prefixes = {d: truncate(v, d) for d in self.matryoshka_dims}
        sparse: list[dict[str, Any]] = [{} for _ in id_list]
        if self.sparse:
            texts = [(p or {}).get(self.text_key) for p in (payloads or [{}] * len(v))]
            bad = next((n for n, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:
                raise InputError(f"payload #{bad} has no text under {self.text_key!r} for the sparse BM25 vector; "
                                 "nothing was added", bad)
            sparse = [{_SPARSE: self._doc_sparse(t)} for t in texts if isinstance(t, str)]
        points = [m.PointStruct(id=_point_id(i), payload={**(p or {}), _ID_KEY: i},
                                vector={"full": v[n].tolist(), **{f"mrl{d}": pv[n].tolist()
                                                                  for d, pv in prefixes.items()}, **sparse[n]})
                  for n, (i, p) in enumerate(zip(id_list, payloads or [{}] * len(v), strict=True))]
        for at in range(0, len(points), _BATCH):
            self.client.upsert(self.name, points=points[at: at + _BATCH], wait=True)

    def delete(self, ids: Any = None, *, where: Filter | None = None) -> int:
        """Delete ``ids``, or the points matching ``where`` (both: the ids that match); returns how many."""
        if ids is None and parse_filter(where) is None:
            raise ConfigError("delete() needs ids or where=; clear() deletes everything")
        present = [r.id for r in self.get(ids, where=where)]
        if present:
            self.client.delete(self.name, points_selector=self._m.PointIdsList(points=[_point_id(i) for i in present]),
                               wait=True)
        return len(present)

    def clear(self) -> None:
        self.client.delete(self.name, points_selector=self._m.FilterSelector(filter=self._m.Filter()), wait=True)

    def get_payloads(self, ids: list[str]) -> list[dict[str, Any]]:
        found = {r.id: r.payload for r in self.get(ids)}
        return [found.get(i, {}) for i in ids]

    def get(self, ids: Any = None, *, where: Filter | None = None, with_vectors: bool = False,
            limit: int | None = None) -> list[Record]:
        """The points of ``ids`` that exist, in the order asked, or those matching ``where`` (at most ``limit``)."""
        flt = self._filter(where)
        vectors: Any = ["full"] if with_vectors else False
        if ids is not None:
            id_list = as_ids(ids)
            point_ids: list[Any] = [_point_id(i) for i in dict.fromkeys(id_list)]
            if flt is None:
                points = self.client.retrieve(self.name, ids=point_ids, with_payload=True, with_vectors=vectors)
            else:  # the ids that also match the filter
                points = self.client.scroll(self.name, limit=max(1, len(point_ids)), with_payload=True,
                                            with_vectors=vectors, scroll_filter=self._m.Filter(
                                                must=[flt, self._m.HasIdCondition(has_id=point_ids)]))[0]
            by_id = {str(p.payload[_ID_KEY]): p for p in points}
            points = [by_id[i] for i in dict.fromkeys(id_list) if i in by_id]
        else:
            points, offset = [], None
            while limit is None or len(points) < limit:
                page, offset = self.client.scroll(self.name, scroll_filter=flt, limit=min(_BATCH, limit or _BATCH),
                                                  offset=offset, with_payload=True, with_vectors=vectors)
                points.extend(page)
                if offset is None:
                    break
            points = points[:limit]
        return [Record(str(p.payload[_ID_KEY]), _user_payload(p.payload),
                       np.asarray(_full(p.vector), dtype=np.float32) if with_vectors else None) for p in points]

    # ------------------------------------------------------------------------------------------- search
    def _filter(self, where: Filter | None) -> Any:
        node = parse_filter(where)
        return None if node is None else to_qdrant(node, self._m)

    def search(self, queries: Any, k: int = 10, *, oversample: float = 4.0, rescore: Rescore = "int8",
               where: Filter | None = None, funnel: int | None = None) -> SearchResult:
        """Top ``k`` per query. ``rescore`` other than ``"none"`` asks Qdrant to rescore the quantized shortlist
        (``oversample`` x k) with the original vectors; ``where`` is a metadata filter
        (:mod:`embedopt.stores.filters`) Qdrant applies during the search; ``funnel=d`` shortlists on the
        ``mrl{d}`` prefix first."""
        q = self._check(queries)
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive int, got {k!r}")
        if funnel is not None and funnel not in self.matryoshka_dims:
            raise ConfigError(f"funnel={funnel} needs matryoshka_dims to include it (have {self.matryoshka_dims})")
        m = self._m
        limit = max(k, math.ceil(k * oversample))
        params = self.config.search_params(m, oversample=oversample, rescore=rescore != "none",
                                           hnsw_ef=self.hnsw.ef if self.hnsw is not None else None)
        flt = self._filter(where)
        requests = []
        for row in q:
            prefetch = None
            if funnel is not None:
                prefetch = m.Prefetch(query=truncate(row, funnel).tolist(), using=f"mrl{funnel}", limit=limit,
                                      filter=flt)
            requests.append(m.QueryRequest(query=row.tolist(), using="full", limit=k, filter=flt, params=params,
                                           prefetch=prefetch, with_payload=True))
        started = time.perf_counter()
        with warnings.catch_warnings():
            if self.local:  # local mode says once per call that it ignores search_params; the class docstring says so
                warnings.filterwarnings("ignore", message="Local mode performs exact")
            answers = self.client.query_batch_points(self.name, requests=requests)
        ids = [[str(p.payload[_ID_KEY]) for p in a.points] for a in answers]
        scores = [np.asarray([p.score for p in a.points], dtype=np.float32) for a in answers]
        payloads = [[_user_payload(p.payload) for p in a.points] for a in answers]
        return SearchResult(ids, scores, limit, {"search": (time.perf_counter() - started) * 1e3}, payloads)


    # ------------------------------------------------------------------------------------------- sparse (BM25)
    def _terms(self, text: str) -> dict[int, int]:
        counts: dict[int, int] = {}
        for t in self._tokenizer(text):
            h = _term_index(t)
            counts[h] = counts.get(h, 0) + 1
        return counts

    def _doc_sparse(self, text: str) -> Any:
        k1, b, avgdl = self._bm25
        counts = self._terms(text)
        dl = sum(counts.values())
        norm = k1 * (1 - b + b * dl / avgdl)
        return self._m.SparseVector(indices=list(counts), values=[tf * (k1 + 1) / (tf + norm)
                                                                  for tf in counts.values()])

    def _query_sparse(self, text: str) -> Any:
        counts = self._terms(text)
        return self._m.SparseVector(indices=list(counts), values=[float(c) for c in counts.values()])

    def _need_sparse(self) -> None:
        if not self.sparse:
            raise ConfigError(f"collection {self.name} keeps no BM25 sparse vectors: create the store with "
                              "sparse=True (a new collection), or wrap it in embedopt.hybrid.HybridStore")

    def _answer(self, requests: list[Any]) -> tuple[SearchResult, float]:
        started = time.perf_counter()
        with warnings.catch_warnings():
            if self.local:
                warnings.filterwarnings("ignore", message="Local mode performs exact")
            answers = self.client.query_batch_points(self.name, requests=requests)
        ids = [[str(p.payload[_ID_KEY]) for p in a.points] for a in answers]
        scores = [np.asarray([p.score for p in a.points], dtype=np.float32) for a in answers]
        payloads = [[_user_payload(p.payload) for p in a.points] for a in answers]
        ms = (time.perf_counter() - started) * 1e3
        return SearchResult(ids, scores, 0, {"search": ms}, payloads), ms

    def search_lexical(self, queries: str | Sequence[str], k: int = 10, *,
                       where: Filter | None = None) -> SearchResult:
        """BM25 alone: the sparse vectors scored by Qdrant (IDF from its own counts), filtered by ``where``."""
        self._need_sparse()
        texts = [queries] if isinstance(queries, str) else list(queries)
        flt = self._filter(where)
        m = self._m
        return self._answer([m.QueryRequest(query=self._query_sparse(t), using=_SPARSE, limit=k, filter=flt,
                                            with_payload=True) for t in texts])[0]

    def search_fused(self, queries: Any, texts: Sequence[str], k: int = 10, *, fusion: str = "rrf",
                     candidates: int = 50, where: Filter | None = None, oversample: float = 4.0,
                     rescore: Rescore = "int8") -> SearchResult:
        """Hybrid search in one call per query, fused by Qdrant: the dense search and BM25 each prefetch
        ``candidates`` points under the same filter, then ``fusion`` (``"rrf"``, ``"rrf:K"`` or ``"dbsf"``; a
        convex combination is not a Qdrant fusion: fuse client-side with ``embedopt.retrieval.search_hybrid``)."""
        self._need_sparse()
        q = self._check(queries)
        if isinstance(texts, str) or len(texts) != len(q):
            raise InputError(f"{len(q)} query vectors need as many query texts, got {texts!r:.60}")
        m = self._m
        head, _, arg = fusion.lower().partition(":")
        if head == "rrf":
            fq: Any = m.RrfQuery(rrf=m.Rrf(k=int(arg) if arg else 60))
        elif head == "dbsf" and not arg:
            fq = m.FusionQuery(fusion=m.Fusion.DBSF)
        else:
            raise ConfigError(f"Qdrant fuses with rrf, rrf:K or dbsf, not {fusion!r}; fuse a convex combination "
                              "client-side (Retriever(..., fusion='convex:ALPHA') over the store)")
        params = self.config.search_params(m, oversample=oversample, rescore=rescore != "none",
                                           hnsw_ef=self.hnsw.ef if self.hnsw is not None else None)
        flt = self._filter(where)
        requests = [m.QueryRequest(prefetch=[
            m.Prefetch(query=row.tolist(), using="full", limit=candidates, filter=flt, params=params),
            m.Prefetch(query=self._query_sparse(t), using=_SPARSE, limit=candidates, filter=flt)],
            query=fq, limit=k, with_payload=True) for row, t in zip(q, texts, strict=True)]
        return self._answer(requests)[0]


def _full(vector: Any) -> Any:
    """The ``full`` vector of a point (named vectors come back as a dict)."""
    return vector["full"] if isinstance(vector, Mapping) else vector


def _user_payload(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """A point's payload without the key embedopt keeps its id under."""
    return {k: v for k, v in (payload or {}).items() if k != _ID_KEY}
