"""Semantic response cache (MeanCache-style): answer a new question with the response to a similar old one.

An entry is (query embedding, response, metadata). A lookup embeds the new query and returns the most similar
entry's response when cosine similarity >= ``threshold`` — but only among entries with the same query-embedding
fingerprint and exactly the same filter fields (tenant, user, the answering LLM's model, ...). Scopes never mix:
they are separate namespaces, not a post-filter.

Responses and metadata are stored as JSON (no pickle): anything ``json.dumps`` accepts. Serialize richer
objects first (LangChain's ``dumps``, say).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from ._breaker import CircuitBreaker
from .cache.entry import decode_vector, encode_vector
from .cache.redis import glob_escape
from .errors import ConfigError, CorruptEntry, InputError

if TYPE_CHECKING:
    from .embedder import Embedder

__all__ = ["DEFAULT_THRESHOLD", "MemorySemanticBackend", "RedisSemanticBackend", "SemanticCache", "SemanticHit"]

#: Measured with all-MiniLM-L6-v2 by bench/semantic_cache.py on ../shared/datasets/manpages: the lowest threshold
#: whose false-hit rate on the tuning half is <= 1% for unrelated questions and <= 5% for near-miss questions
#: (one word away from a cached one). Held out: 56% of paraphrase-like repeats hit, 0% of unrelated and 4.9% of
#: near-miss questions falsely hit (bench/results/semantic_cache.json has the whole curve; 0.95 gives 28% / 2%).
#: Re-measure for another embedding model.
DEFAULT_THRESHOLD = 0.90

FilterValue = str | int | float | bool | None
T = TypeVar("T")


@dataclass(frozen=True)
class SemanticHit:
    """A cached response and why it was returned."""

    response: Any
    similarity: float
    query: str
    """The cached question whose response this is."""
    metadata: dict[str, Any]
    created: float
    """Unix time the entry was stored."""


@dataclass(frozen=True)
class _Entry:
    id: str
    vector: np.ndarray
    payload: bytes
    """JSON: query, response, metadata, created."""
    expires: float | None


class SemanticBackend(Protocol):
    """Where entries live. ``namespace`` is already scoped by fingerprint and filters."""

    def add(self, namespace: str, entry: _Entry, ttl: float | None) -> None: ...

    def best(self, namespace: str, vector: np.ndarray) -> tuple[float, bytes] | None: ...

    def clear(self, namespace: str | None = None) -> int: ...


class MemorySemanticBackend:
    """Entries in process memory, at most ``max_entries`` per namespace (oldest dropped first)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ConfigError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._spaces: dict[str, OrderedDict[str, _Entry]] = {}
        self._matrix: dict[str, tuple[np.ndarray, list[str]]] = {}
        self._lock = threading.Lock()

    def add(self, namespace: str, entry: _Entry, ttl: float | None) -> None:
        with self._lock:
            space = self._spaces.setdefault(namespace, OrderedDict())
            space.pop(entry.id, None)
            space[entry.id] = entry
            while len(space) > self.max_entries:
                space.popitem(last=False)
            self._matrix.pop(namespace, None)

    def best(self, namespace: str, vector: np.ndarray) -> tuple[float, bytes] | None:
        now = time.time()
        with self._lock:
            space = self._spaces.get(namespace)
            if not space:
                return None
            expired = [k for k, e in space.items() if e.expires is not None and e.expires <= now]
            for k in expired:
                del space[k]
            if expired:
                self._matrix.pop(namespace, None)
            if not space:
                return None
            cached = self._matrix.get(namespace)
            if cached is None:
                ids = list(space)
                cached = (np.stack([space[k].vector for k in ids]), ids)
                self._matrix[namespace] = cached
            matrix, ids = cached
            scores = matrix @ vector
            j = int(np.argmax(scores))
            return float(scores[j]), space[ids[j]].payload

    def clear(self, namespace: str | None = None) -> int:
        with self._lock:
            if namespace is None:
                n = sum(len(s) for s in self._spaces.values())
                self._spaces.clear()
                self._matrix.clear()
                return n
            self._matrix.pop(namespace, None)
            return len(self._spaces.pop(namespace, {}))


class RedisSemanticBackend:
    """Entries in Redis, shared by every process; no Redis module needed (plain hashes and sorted sets).

    Per namespace: a sorted set of entry ids by creation time, and one hash per entry (``v``: vector bytes,
    ``d``: JSON) that expires with its TTL. Entries are immutable, so vectors already seen are kept in a
    local map and each lookup fetches only the new ones; similarity is computed here with numpy.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "", max_entries: int = 10_000,
                 timeout: float = 0.5, client: Any = None, **options: Any) -> None:
        from .cache.redis import RedisTier

        # RedisTier owns URL checks, redaction and client creation; reuse it rather than repeat it.
        self._tier = RedisTier(url, prefix=prefix, timeout=timeout, client=client, **options)
        self.prefix = prefix
        self.max_entries = max_entries
        self._vectors: dict[tuple[str, str], np.ndarray] = {}
        """Vectors already fetched, by (namespace, entry id): one question has one entry id in every scope, and
        scopes of different models hold vectors of different models (and sizes)."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RedisSemanticBackend(url={self._tier.url!r}, prefix={self.prefix!r})"

    def _key(self, namespace: str, suffix: str) -> str:
        return f"{self.prefix}embedopt:sem:v1:{namespace}:{suffix}"

    def add(self, namespace: str, entry: _Entry, ttl: float | None) -> None:
        client = self._tier.client
        index, key = self._key(namespace, "idx"), self._key(namespace, "e:" + entry.id)
        pipe = client.pipeline(transaction=True)
        pipe.hset(key, mapping={"v": encode_vector(entry.vector), "d": entry.payload})
        if ttl is not None:
            pipe.pexpire(key, max(1, int(ttl * 1000)))
        else:
            pipe.persist(key)
        pipe.zadd(index, {entry.id: time.time()})
        pipe.zcard(index)
        size = pipe.execute()[-1]
        if size > self.max_entries:
            dropped = client.zpopmin(index, size - self.max_entries)
            if dropped:
                client.delete(*[self._key(namespace, "e:" + m.decode()) for m, _ in dropped])

    def best(self, namespace: str, vector: np.ndarray) -> tuple[float, bytes] | None:
        client = self._tier.client
        index = self._key(namespace, "idx")
        ids = [m.decode() for m in client.zrange(index, 0, -1)]
        if not ids:
            return None
        with self._lock:
            unknown = [i for i in ids if (namespace, i) not in self._vectors]
        if unknown:
            pipe = client.pipeline(transaction=False)
            for i in unknown:
                pipe.hget(self._key(namespace, "e:" + i), "v")
            fetched = pipe.execute()
            with self._lock:
                if len(self._vectors) > 200_000:
                    self._vectors.clear()
                for i, raw in zip(unknown, fetched, strict=True):
                    if raw is None:
                        continue
                    try:
                        self._vectors[namespace, i] = decode_vector(raw, dim=vector.shape[0])
                    except CorruptEntry:
                        continue
        with self._lock:
            known = [i for i in ids if (namespace, i) in self._vectors]
            if not known:
                return None
            matrix = np.stack([self._vectors[namespace, i] for i in known])
        order = np.argsort(-(matrix @ vector))
        gone: list[str] = []
        try:
            for j in order[:8]:  # the best few, in case the best has just expired
                payload = client.hget(self._key(namespace, "e:" + known[j]), "d")
                if payload is not None:
                    return float(matrix[j] @ vector), bytes(payload)
                gone.append(known[j])
            return None
        finally:
            if gone:
                client.zrem(index, *gone)
                with self._lock:
                    for i in gone:
                        self._vectors.pop((namespace, i), None)

    def clear(self, namespace: str | None = None) -> int:
        client = self._tier.client
        # the prefix may hold glob characters (tenant-*:): escaped, it matches only itself
        scope = self._key(namespace, "") if namespace is not None else f"{self.prefix}embedopt:sem:v1:"
        pattern = glob_escape(scope) + "*"
        keys = list(client.scan_iter(match=pattern, count=1000))
        with self._lock:
            self._vectors.clear()
        removed = sum(1 for k in keys if not k.endswith(b":idx"))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start:start + 1000])
        return removed


class SemanticCache:
    """Cache responses by the meaning of the question.

    Args:
        embedder: embeds questions as ``query`` (its fingerprint scopes the cache; full-dimension float vectors).
        threshold: cosine similarity at or above which a cached response is returned. The default was measured
            for all-MiniLM-L6-v2 (see :data:`DEFAULT_THRESHOLD`); measure again for another model.
        ttl: default lifetime of an entry in seconds (``None``: until evicted).
        backend: ``"memory"``, a ``redis://`` URL, or a backend object.
        max_entries: per scope, for the built-in backends.
    """

    def __init__(self, embedder: Embedder, *, threshold: float = DEFAULT_THRESHOLD, ttl: float | None = None,
                 backend: str | SemanticBackend = "memory", max_entries: int = 10_000) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"ttl must be > 0 seconds or None, got {ttl}")
        if not embedder.normalize:
            raise ConfigError("the semantic cache compares cosine similarities: use an Embedder with normalize=True")
        self.embedder = embedder
        self.threshold = threshold
        self.ttl = ttl
        if isinstance(backend, str):
            if backend == "memory":
                backend = MemorySemanticBackend(max_entries)
            elif backend.startswith(("redis://", "rediss://", "unix://")):
                backend = RedisSemanticBackend(backend, max_entries=max_entries)
            else:
                raise ConfigError(f"backend must be 'memory', a redis:// URL or a backend object, got {backend!r}")
        self.backend = backend
        self._breaker = CircuitBreaker(f"semantic cache backend {backend!r}",
                                       consequence="lookups miss and stores are dropped until it answers")
        self._lock = threading.Lock()
        self.lookups = self.hits = self.stores = self.errors = 0

    def __repr__(self) -> str:
        return f"SemanticCache(threshold={self.threshold}, ttl={self.ttl}, backend={self.backend!r})"

    # ----------------------------------------------------------------------------------------------- scope
    def namespace(self, filters: Mapping[str, FilterValue] | None = None) -> str:
        """The scope id: the query fingerprint and the exact filter fields, hashed."""
        canon = _canonical_filters(filters)
        fp = self.embedder.fingerprint("query").id
        return hashlib.sha256(f"{fp}\n{canon}".encode()).hexdigest()[:32]

    def _vector(self, query: str) -> np.ndarray:
        return self.embedder.embed_full([query], "query")[0]

    # ------------------------------------------------------------------------------------------------- API
    def lookup(self, query: str, *, filters: Mapping[str, FilterValue] | None = None) -> SemanticHit | None:
        """The cached response to the most similar earlier question in the same scope, or ``None``."""
        namespace = self.namespace(filters)
        vector = self._vector(_check_query(query))
        return self._answer(self._best(namespace, vector))

    def store(self, query: str, response: Any, *, filters: Mapping[str, FilterValue] | None = None,
              metadata: Mapping[str, Any] | None = None, ttl: float | None = None) -> None:
        """Remember ``response`` to ``query`` in the scope of ``filters``; storing a question again replaces it."""
        namespace = self.namespace(filters)
        entry, ttl = self._entry(_check_query(query), response, metadata, ttl, self._vector(query))
        self._add(namespace, entry, ttl)

    async def alookup(self, query: str, *, filters: Mapping[str, FilterValue] | None = None) -> SemanticHit | None:
        namespace = self.namespace(filters)
        vector = (await self.embedder.aembed_full([_check_query(query)], "query"))[0]
        return self._answer(await asyncio.to_thread(self._best, namespace, vector))

    async def astore(self, query: str, response: Any, *, filters: Mapping[str, FilterValue] | None = None,
                     metadata: Mapping[str, Any] | None = None, ttl: float | None = None) -> None:
        namespace = self.namespace(filters)
        vector = (await self.embedder.aembed_full([_check_query(query)], "query"))[0]
        entry, ttl = self._entry(query, response, metadata, ttl, vector)
        await asyncio.to_thread(self._add, namespace, entry, ttl)

    def clear(self, filters: Mapping[str, FilterValue] | None = None, *, everything: bool = False) -> int:
        """Drop the entries of one scope (``filters``), or of every scope with ``everything=True``."""
        return self.backend.clear(None if everything else self.namespace(filters))

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"lookups": self.lookups, "hits": self.hits, "stores": self.stores, "errors": self.errors,
                    "skipped": self._breaker.skipped}

    # --------------------------------------------------------------------------------------------- helpers
    def _guard(self, call: Callable[..., T], *args: Any) -> tuple[bool, T | None]:
        """Run a backend call; a failing backend is a miss (lookups) or a dropped entry (stores), never an error."""
        return self._breaker.guard(partial(call, *args), on_error=self._count_error)

    def _count_error(self, _exc: Exception) -> None:
        with self._lock:
            self.errors += 1

    def _add(self, namespace: str, entry: _Entry, ttl: float | None) -> None:
        ok, _ = self._guard(self.backend.add, namespace, entry, ttl)
        if ok:
            with self._lock:
                self.stores += 1

    def _best(self, namespace: str, vector: np.ndarray) -> tuple[float, bytes] | None:
        return self._guard(self.backend.best, namespace, vector)[1]

    def _entry(self, query: str, response: Any, metadata: Mapping[str, Any] | None, ttl: float | None,
               vector: np.ndarray) -> tuple[_Entry, float | None]:
        ttl = self.ttl if ttl is None else ttl
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"ttl must be > 0 seconds or None, got {ttl}")
        now = time.time()
        try:
            payload = json.dumps({"query": query, "response": response, "metadata": dict(metadata or {}),
                                  "created": now}, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise InputError(f"the response and metadata must be JSON data (str, numbers, lists, dicts): {exc}. "
                             "Serialize richer objects first (LangChain: langchain_core.load.dumps).") from exc
        entry_id = hashlib.sha256(query.encode()).hexdigest()[:32]
        return _Entry(entry_id, vector, payload, now + ttl if ttl is not None else None), ttl

    def _answer(self, best: tuple[float, bytes] | None) -> SemanticHit | None:
        hit = None
        if best is not None and best[0] >= self.threshold:
            try:
                data = json.loads(best[1])
                hit = SemanticHit(data["response"], best[0], data["query"], data.get("metadata", {}),
                                  float(data["created"]))
            except (ValueError, KeyError, TypeError):
                hit = None  # a corrupt entry is a miss
        with self._lock:
            self.lookups += 1
            self.hits += hit is not None
        return hit


def _check_query(query: Any) -> str:
    if not isinstance(query, str) or not query.strip():
        raise InputError("the query must be a non-empty string", 0)
    return query


def _canonical_filters(filters: Mapping[str, FilterValue] | None) -> str:
    if not filters:
        return "{}"
    for k, v in filters.items():
        if not isinstance(k, str):
            raise ConfigError(f"filter names must be strings, got {k!r}")
        if not (v is None or isinstance(v, (str, int, float, bool))):
            raise ConfigError(f"filter {k!r} must be a str, number, bool or None, got {type(v).__name__}")
    return json.dumps(dict(filters), sort_keys=True, separators=(",", ":"))
