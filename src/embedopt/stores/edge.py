"""Qdrant's engine in-process: a store on ``qdrant-edge-py`` (HNSW, binary 1/1.5/2-bit, int8 scalar and product
quantization with oversampling and rescoring, payload filters, a write-ahead log, persistence on disk).

Unlike qdrant-client's local mode (a brute-force float search that ignores quantization), this is the engine a
Qdrant server runs, so the quantization settings are in effect. It has no background optimizer: the HNSW graph
and the quantized codes of large segments are built by :meth:`EdgeStore.optimize`, which the store runs before a
search when more than ``optimize_after`` points were written since the last one (or call it after a bulk load).

A root folder holds the versions of one logical store, as :class:`~embedopt.stores.QdrantStore` keeps collections
behind an alias::

    ROOT/LIVE.json             {"live": "<version>", "previous": ...}: the version applications query
    ROOT/<version>.json        the fingerprint, dim and settings that version was built with
    ROOT/<version>/            the qdrant-edge shard (segments, WAL)

``<version>`` is ``{space}_d{dim}``. Opening a store for another embedding space than the live one is refused
unless ``activate=False`` (build the new version beside the live one), then :meth:`EdgeStore.activate` cuts over.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._extras import require
from .._files import atomic_write_text
from ..errors import ConfigError, DimensionError
from ..fingerprint import Fingerprint
from .base import Record, Rescore, SearchResult, as_ids, check_counts, check_vectors
from .filters import Filter, parse_filter, to_qdrant
from .qdrant import _ID_KEY, _point_id, _user_payload
from .quantization_config import HnswConfig, QuantizationConfig

__all__ = ["EdgeStore"]

log = logging.getLogger("embedopt.stores")
_FORMAT = "embedopt.edge-store/1"
_BATCH = 1024
_BOOLS = "_embedopt_bools"  # string mirrors of bool payload values: qdrant-edge-py 0.9 matches True as 1


def _bool_mirror(value: Any) -> Any:
    """The bools inside ``value`` as "true"/"false", in the same nesting (None where there are none)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        out = {k: m for k, m in ((k, _bool_mirror(v)) for k, v in value.items()) if m is not None}
        return out or None
    if isinstance(value, list):
        items = [m for m in (_bool_mirror(v) for v in value) if isinstance(m, str)]
        return items or None
    return None


def _stored(payload: dict[str, Any] | None, id_: str) -> dict[str, Any]:
    out = {**(payload or {}), _ID_KEY: id_}
    mirror = _bool_mirror(payload or {})
    if mirror:
        out[_BOOLS] = mirror
    return out


def _user(payload: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in _user_payload(payload).items() if k != _BOOLS}


def _edge_filter(where: Filter | None, qe: Any) -> Any:
    node = parse_filter(where)
    return None if node is None else to_qdrant(node, qe, edge=True, bool_key=lambda key: f"{_BOOLS}.{key}")


class EdgeStore:
    """One embedding space in a qdrant-edge shard under ``path`` (see the module docstring for the layout).

    Args:
        fingerprint: the document fingerprint of the vectors.
        path: the root folder (created when missing).
        dim: stored dimension (a Matryoshka truncation); default the model's.
        quantization: a :class:`~embedopt.stores.QuantizationConfig` or a short name (``binary``, ``binary-1.5bit``,
            ``binary-2bit``, ``scalar``, ``product``, ``none``); the same object
            :class:`~embedopt.stores.QdrantStore` maps onto a server collection.
        hnsw: the HNSW graph (``ef`` is the search-time beam).
        wal: write updates to a write-ahead log first (durable before :meth:`flush`); fixed at creation.
        vectors_on_disk: keep the original vectors memory-mapped instead of in RAM (the quantized codes stay in
            RAM with ``always_ram``).
        indexing_threshold_kb: segments larger than this get an HNSW graph and quantized codes at
            :meth:`optimize` (the engine's default when ``None``).
        search_threads: threads of the engine's search pool (default: one per CPU).
        optimize_after: before a search, run :meth:`optimize` when at least this many points were written since
            the last one (``None``: only when you call it).
        activate: make this version the live one when the root has none (default), refuse when the live one is
            another space; ``False`` builds it beside the live one.
    """

    def __init__(self, fingerprint: Fingerprint, path: str | os.PathLike[str], *, dim: int | None = None,
                 quantization: QuantizationConfig | str = "binary", hnsw: HnswConfig | None = None,
                 wal: bool = True, vectors_on_disk: bool = False, indexing_threshold_kb: int | None = None,
                 search_threads: int | None = None, optimize_after: int | None = 1000,
                 activate: bool = True) -> None:
        self._qe = require("qdrant_edge", extra="edge", feature="EdgeStore", package="qdrant-edge-py")
        self.fingerprint = fingerprint
        self.dim = fingerprint.dim if dim is None else int(dim)
        if not 0 < self.dim <= fingerprint.dim:
            raise DimensionError(f"dim must be between 1 and the model's {fingerprint.dim}, got {self.dim}")
        self.config = QuantizationConfig.of(quantization)
        self.hnsw = hnsw or HnswConfig()
        self.root = Path(path)
        self.name = f"{fingerprint.space_id[:12]}_d{self.dim}"
        self.optimize_after = optimize_after
        self._written = 0
        self._lock = threading.Lock()
        self._meta = {"format": _FORMAT, "fingerprint": fingerprint.to_dict(), "dim": self.dim,
                      "quantization": self.config.to_dict(), "hnsw": self.hnsw.to_dict(), "wal": wal}
        self.root.mkdir(parents=True, exist_ok=True)
        live = self.live_version()
        if live is not None and live != self.name and activate:
            raise ConfigError(
                f"{self.root} serves {live} ({self._fingerprint_of(live)}), not this model ({fingerprint.id}); "
                "vectors of two spaces never meet. Build the new version with activate=False and cut over with "
                "activate() (or `embedopt migrate`)")
        qe = self._qe
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Dot, on_disk=vectors_on_disk),
            quantization_config=self.config.to_edge(qe), hnsw_config=self.hnsw.to_edge(qe),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb)
            if indexing_threshold_kb is not None else None,
            max_search_threads=search_threads, wal_enabled=wal)
        shard_dir = self.root / self.name
        meta_file = self.root / f"{self.name}.json"
        if meta_file.is_file():
            self._check_existing(json.loads(meta_file.read_text()))
            self.shard = qe.EdgeShard.load(str(shard_dir))
        else:
            self.shard = qe.EdgeShard.create(str(shard_dir), config)
            atomic_write_text(meta_file, json.dumps(self._meta, indent=1))
        if live is None and activate:
            self.activate()

    # ------------------------------------------------------------------------------------------- versions
    def _fingerprint_of(self, version: str) -> str:
        try:
            return str(json.loads((self.root / f"{version}.json").read_text())["fingerprint"]["id"])
        except (OSError, KeyError, TypeError, ValueError):
            return "a shard embedopt did not create"

    def _check_existing(self, meta: dict[str, Any]) -> None:
        if meta.get("format") != _FORMAT or meta.get("fingerprint", {}).get("id") != self.fingerprint.id \
                or meta.get("dim") != self.dim:
            raise ConfigError(f"{self.root / self.name} holds {self._fingerprint_of(self.name)}, not "
                              f"{self.fingerprint.id} at dim {self.dim}; use another path")
        if meta.get("quantization") != self.config.to_dict() or meta.get("hnsw") != self.hnsw.to_dict():
            raise ConfigError(f"{self.root / self.name} was built with quantization {meta.get('quantization')} and "
                              f"hnsw {meta.get('hnsw')}; open it with the same settings, or build another path")

    def live_version(self) -> str | None:
        """The version LIVE.json names (None when there is none yet)."""
        try:
            return str(json.loads((self.root / "LIVE.json").read_text())["live"])
        except FileNotFoundError:
            return None
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"{self.root / 'LIVE.json'} is unreadable ({exc}); restore it or remove it") from exc

    def activate(self) -> str | None:
        """Make this version the live one (one atomic rename of LIVE.json); returns the version live before."""
        before = self.live_version()
        atomic_write_text(self.root / "LIVE.json", json.dumps({"live": self.name, "previous": before,
                                                                "updated": time.time()}))
        return before

    @classmethod
    def open_live(cls, path: str | os.PathLike[str], *, expect: Fingerprint | None = None,
                  **options: Any) -> EdgeStore:
        """The live version under ``path``, opened with the fingerprint and settings it was built with. With
        ``expect`` (the embedder's document fingerprint), a version of another embedding space is refused.
        ``options`` are the runtime ones: ``search_threads``, ``optimize_after``."""
        root = Path(path)
        try:
            live = json.loads((root / "LIVE.json").read_text())["live"]
            meta = json.loads((root / f"{live}.json").read_text())
            fp = Fingerprint.from_dict(meta["fingerprint"])
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{root} holds no live embedopt EdgeStore ({exc}); build one with EdgeStore(...)") \
                from exc
        if expect is not None and expect.space_id != fp.space_id:
            raise ConfigError(f"{root} serves vectors of {fp.id}, not of {expect.id}: another model or settings. "
                              "Build a new version beside it (activate=False) and cut over, or query it with the "
                              "model that built it.")
        return cls(fp, root, dim=int(meta["dim"]), quantization=QuantizationConfig.from_dict(meta["quantization"]),
                   hnsw=HnswConfig(**meta["hnsw"]), wal=bool(meta["wal"]), **options)

    def __repr__(self) -> str:
        return (f"EdgeStore({str(self.root)!r} -> {self.name}, {self.fingerprint.id}, dim={self.dim}, "
                f"quantization={self.config.label!r})")

    def __len__(self) -> int:
        return int(self.shard.count(self._qe.CountRequest(exact=True)))

    def info(self) -> dict[str, int]:
        """Segments, points and how many of them are in an HNSW graph."""
        i = self.shard.info()
        return {"segments": i.segments_count, "points": i.points_count, "indexed_vectors": i.indexed_vectors_count}

    # ------------------------------------------------------------------------------------------- write
    def add(self, ids: Any, vectors: Any, payloads: list[dict[str, Any]] | None = None) -> None:
        """Upsert vectors under ``ids`` (an id already present is replaced); logged to the WAL first."""
        id_list = as_ids(ids)
        v = check_vectors(vectors, self.dim, f"{self.root / self.name} holds {self.dim}-d vectors of "
                                             f"{self.fingerprint.id}")
        check_counts(id_list, v, payloads)
        qe = self._qe
        rows = payloads or [{}] * len(v)
        for at in range(0, len(v), _BATCH):
            points = [qe.Point(_point_id(i), v[n].tolist(), _stored(rows[n], i))
                      for n, i in enumerate(id_list[at: at + _BATCH], start=at)]
            self.shard.update(qe.UpdateOperation.upsert_points(points))
        with self._lock:
            self._written += len(v)

    def optimize(self) -> bool:
        """Build the HNSW graph and quantized codes of segments over the indexing threshold, merge small
        segments (blocking; qdrant-edge has no background optimizer). True when anything changed."""
        with self._lock:
            self._written = 0
        return bool(self.shard.optimize())

    def flush(self) -> None:
        """Write everything to the segments on disk (the WAL already made it durable)."""
        self.shard.flush()

    def close(self) -> None:
        self.shard.close()

    def delete(self, ids: Any = None, *, where: Filter | None = None) -> int:
        """Delete ``ids``, or the points matching ``where`` (both: the ids that match); returns how many."""
        qe = self._qe
        node = parse_filter(where)
        if ids is None and node is None:
            raise ConfigError("delete() needs ids or where=; clear() deletes everything")
        if ids is None:
            flt = _edge_filter(where, qe)
            n = int(self.shard.count(qe.CountRequest(exact=True, filter=flt)))
            self.shard.update(qe.UpdateOperation.delete_points_by_filter(flt))
            return n
        present = [r.id for r in self.get(ids, where=where)]
        if present:
            self.shard.update(qe.UpdateOperation.delete_points([_point_id(i) for i in present]))
        return len(present)

    def clear(self) -> None:
        self.shard.update(self._qe.UpdateOperation.delete_points_by_filter(self._qe.Filter()))

    # ------------------------------------------------------------------------------------------- read
    def get_payloads(self, ids: list[str]) -> list[dict[str, Any]]:
        found = {r.id: r.payload for r in self.get(ids)}
        return [found.get(i, {}) for i in ids]

    def get(self, ids: Any = None, *, where: Filter | None = None, with_vectors: bool = False,
            limit: int | None = None) -> list[Record]:
        """The points of ``ids`` that exist, in the order asked, or those matching ``where`` (at most ``limit``)."""
        qe = self._qe
        flt = _edge_filter(where, qe)
        if ids is not None:
            id_list = list(dict.fromkeys(as_ids(ids)))
            point_ids = [_point_id(i) for i in id_list]
            if flt is None:
                points = self.shard.retrieve(point_ids, True, with_vectors)
            else:
                flt = qe.Filter(must=[flt, qe.HasIdCondition(set(point_ids))])
                points = self.shard.scroll(qe.ScrollRequest(limit=max(1, len(point_ids)), filter=flt,
                                                            with_payload=True, with_vector=with_vectors))[0]
            by_id = {str(p.payload[_ID_KEY]): p for p in points}
            points = [by_id[i] for i in id_list if i in by_id]
        else:
            points, offset = [], None
            while limit is None or len(points) < limit:
                page, offset = self.shard.scroll(qe.ScrollRequest(
                    offset=offset, limit=min(_BATCH, limit or _BATCH), filter=flt, with_payload=True,
                    with_vector=with_vectors))
                points.extend(page)
                if offset is None:
                    break
            points = points[:limit]
        return [Record(str(p.payload[_ID_KEY]), _user(p.payload),
                       np.asarray(p.vector, dtype=np.float32) if with_vectors else None) for p in points]

    def search(self, queries: Any, k: int = 10, *, oversample: float | None = None, rescore: Rescore = "int8",
               where: Filter | None = None, exact: bool = False, ef: int | None = None) -> SearchResult:
        """Top ``k`` per query, by the engine: HNSW (or a scan of small segments) over the quantized codes,
        ``k * oversample`` candidates rescored with the original float vectors unless ``rescore="none"``
        (``int8`` and ``float`` both rescore with the originals here). ``where`` is applied during the graph
        search; ``exact=True`` scans every vector instead (ground truth); ``ef`` overrides the HNSW beam."""
        q = check_vectors(queries, self.dim, f"{self.root / self.name} holds {self.dim}-d vectors of "
                                             f"{self.fingerprint.id}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"k must be a positive int, got {k!r}")
        if oversample is not None and oversample < 1:
            raise ConfigError(f"oversample must be >= 1, got {oversample}")
        if self.optimize_after is not None and self._written >= self.optimize_after:
            log.info("optimizing %s before searching: %d points written since the last optimize()", self.name,
                     self._written)
            self.optimize()
        qe = self._qe
        flt = _edge_filter(where, qe)
        params = self.config.search_params(qe, oversample=oversample, rescore=rescore != "none",
                                           hnsw_ef=ef or self.hnsw.ef, exact=exact)
        requests = [qe.QueryRequest(limit=k, query=qe.Query.Nearest(row.tolist()), filter=flt, params=params,
                                    with_payload=True) for row in q]
        started = time.perf_counter()
        answers = self.shard.query_batch(qe.QueryBatchRequest(requests)) if len(requests) > 1 else \
            [self.shard.query(requests[0])]
        ids = [[str(p.payload[_ID_KEY]) for p in a] for a in answers]
        scores = [np.asarray([p.score for p in a], dtype=np.float32) for a in answers]
        payloads = [[_user(p.payload) for p in a] for a in answers]
        candidates = math.ceil(k * (oversample or self.config.oversample)) if self.config.kind != "none" else k
        return SearchResult(ids, scores, candidates, {"search": (time.perf_counter() - started) * 1e3}, payloads)

