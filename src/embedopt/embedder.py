"""The pipeline every adapter calls: validate → dedupe → cache lookup → batch the misses → provider → check →
normalize → cache write-back (per batch) → restore order → Matryoshka truncation → quantization."""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import numbers
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np

from .batching import Batch, dedupe, plan_batches, progress_bar, run_async
from .cache.base import CacheTier, cache_key
from .cache.memory import MemoryTier
from .cache.tiered import TieredCache
from .codec import Codec
from .costs import CostLedger
from .errors import ConfigError, EmbedOptError, InputError, ProviderError
from .fingerprint import INPUT_TYPES, Fingerprint, InputType
from .matryoshka import l2_normalize
from .providers.base import Embedded, Provider, aembed, count_tokens, estimate_tokens
from .quantization import Calibration, Precision
from .retry import RetryPolicy

__all__ = ["EmbedStats", "Embedder"]

logger = logging.getLogger(__name__)

OnOverflow = Literal["truncate", "error"]
#: Above this many texts, the async path moves CPU work (hashing, normalizing) off the event loop.
_OFFLOAD_AT = 2048
#: How far from 1 the norm of a cached vector may be where the Embedder normalizes (float32 rounding is ~1e-7).
_UNIT_TOLERANCE = 1e-3
_PROGRESS = {"query": "embed queries", "document": "embed documents"}


@dataclass
class EmbedStats:
    """Counters since the Embedder was made; read them for cache hit rates and provider load."""

    requested: int = 0
    """Texts asked for, duplicates included."""
    unique: int = 0
    cache_hits: int = 0
    computed: int = 0
    """Texts the provider embedded."""
    provider_calls: int = 0
    tokens: int = 0
    """Tokens sent to the provider: as it billed them where it reports usage, else counted or estimated."""
    cache_errors: int = 0
    cache_rejected: int = 0
    """Cached vectors refused on a hit (wrong size, NaN, not unit length where ``normalize=True``): recomputed
    and overwritten."""
    shared: int = 0
    """Texts another concurrent call was already computing; this call waited for its vector instead."""


def _progress_desc(job: _Job) -> str:
    """The bar's label: its total is the texts left to compute, after duplicates and cached ones are set aside."""
    asked, unique = len(job.inverse), len(job.unique)
    parts = [f"{asked - unique:,} duplicates"] if asked > unique else []
    if unique > len(job.todo):
        parts.append(f"{unique - len(job.todo):,} cached")
    detail = f" (of {asked:,} texts: {', '.join(parts)} set aside)" if parts else ""
    return _PROGRESS[job.input_type] + detail


@dataclass
class _Job:
    input_type: InputType
    fingerprint: Fingerprint
    unique: list[str]
    inverse: np.ndarray
    first_position: list[int]
    keys: list[str] | None
    out: np.ndarray
    todo: list[int] = field(default_factory=list)
    flights: dict[int, Future[np.ndarray | None]] = field(default_factory=dict)
    """Texts this call is computing for any concurrent call that asks for them too."""
    counts: dict[int, int] = field(default_factory=dict)
    """Token counts of the texts to compute, by position in ``unique``, when they were counted (token budgets,
    limits): passed on to the provider and the ledger, so nothing counts twice."""


#: A lone UTF-16 surrogate (what ``json.loads('"\\ud800"')`` makes): not encodable as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _validate_texts(texts: Any) -> list[str]:
    """The texts as a list, or an InputError naming the first unusable one (not a str, empty, a lone surrogate).

    Lone surrogates are refused rather than replaced: a replacement would send and cache a text other than the
    one given, and two different broken texts would share one vector."""
    if isinstance(texts, (str, bytes)):
        raise InputError(
            "expected a list of texts but got a single string; wrap it in a list, or use embed_query for one query"
        )
    try:
        items = list(texts)
    except TypeError:
        raise InputError(f"expected a list of texts, got {type(texts).__name__}") from None
    for i, t in enumerate(items):
        if t is None:
            raise InputError(f"text #{i} is None; remove it or replace it with a string before embedding", i)
        if not isinstance(t, str):
            raise InputError(f"text #{i} is a {type(t).__name__}, not a str; convert it to text first", i)
        if not t.strip():
            raise InputError(f"text #{i} is empty or only whitespace; drop it before embedding (nothing to embed)", i)
        bad = _SURROGATE.search(t)
        if bad is not None:
            raise InputError(
                f"text #{i} holds a lone surrogate (U+{ord(bad.group()):04X}) at character {bad.start()}: it is not "
                "valid Unicode, so it can be neither sent, hashed for the cache key nor stored. It usually comes from "
                "text decoded badly upstream (a JSON \\ud800 escape of half a character, or surrogateescape); fix "
                "the decoding, or replace it: text.encode('utf-8', 'replace').decode('utf-8')", i)
    return items


class Embedder:
    """Embed texts through a provider, with caching, batching, Matryoshka truncation and quantization.

    Args:
        provider: where vectors come from: any :class:`~embedopt.providers.Provider`
            (:class:`~embedopt.providers.SentenceTransformerProvider`, :class:`~embedopt.providers.StaticProvider`,
            :class:`~embedopt.Router`, ...).
        cache: a cache tier or :class:`~embedopt.cache.TieredCache` of full-precision vectors, or a spec for
            :func:`~embedopt.specs.open_cache` (``"memory,sqlite"``, ``"memory,redis://host:6379/0,sqlite"``);
            ``None`` for no cache. A lone Redis or SQLite tier is wrapped in a TieredCache, so an outage is
            skipped with one warning. With a cache, concurrent calls asking for the same text compute it once.
        dim: Matryoshka dimension of the output (``None``: the model's native dimension).
        precision: ``float32``, ``float16``, ``int8``/``uint8`` (needs ``calibration``), ``binary``/``ubinary``.
        normalize: unit-length vectors (recommended: cosine becomes a dot product).
        calibration: int8/uint8 ranges fitted on documents at ``dim`` (see :meth:`calibrate`).
        show_progress: a progress bar for long calls; ``None`` shows one from 1,000 texts.
        on_overflow: inputs longer than the model's token limit are cut by the model (``truncate``) or refused
            with an :class:`~embedopt.errors.InputError` naming them (``error``).
        cache_ttl: seconds an entry written by this Embedder lives (``None``: the tier's default).
        retry: how transient provider errors (429, 5xx, timeouts) are retried; default :class:`RetryPolicy()`.
            A provider that retries itself (``info.retries``: a :class:`~embedopt.Router`, per route) is not
            retried again here.
        ledger: where tokens, requests, dollars and cache savings are recorded: by default the provider's own
            when it keeps one (``info.records_costs``: a Router), else a new one; read it as ``embedder.ledger``.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        cache: CacheTier | str | None = None,
        dim: int | None = None,
        precision: Precision = "float32",
        normalize: bool = True,
        calibration: Calibration | None = None,
        show_progress: bool | None = None,
        on_overflow: OnOverflow = "truncate",
        cache_ttl: float | None = None,
        retry: RetryPolicy | None = None,
        ledger: CostLedger | None = None,
    ) -> None:
        if not isinstance(provider, Provider):
            raise ConfigError(
                f"provider must be an embedopt provider (info and embed()), got {type(provider).__name__}; wrap a "
                "plain function with embedopt.providers.FunctionProvider"
            )
        if on_overflow not in ("truncate", "error"):
            raise ConfigError(f"on_overflow must be 'truncate' or 'error', got {on_overflow!r}")
        if cache_ttl is not None and (isinstance(cache_ttl, bool) or not isinstance(cache_ttl, numbers.Real)
                                      or not 0 < cache_ttl < math.inf):  # refuses NaN and infinity too
            raise ConfigError(f"cache_ttl must be a number of seconds > 0, or None for the tier's default (no "
                              f"expiry unless the tier has one); got {cache_ttl!r}")
        info = provider.info
        self.codec = Codec.for_model(info.dim, dim=dim, normalize=normalize, precision=precision,
                                     calibration=calibration)
        self.provider = provider
        self._spec: tuple[str | os.PathLike[str], dict[str, Any]] | None = None
        """(model spec, provider options) when made by :meth:`from_spec`: a pickle rebuilds the provider from it."""
        self._cache_spec = cache if isinstance(cache, str) else None
        if isinstance(cache, str):
            from .specs import open_cache

            cache = open_cache(cache)
        elif isinstance(cache, CacheTier) and not isinstance(cache, (TieredCache, MemoryTier)):
            cache = TieredCache([cache])  # a lone Redis or SQLite tier gets the circuit breaker too
        elif cache is not None and not isinstance(cache, CacheTier):
            raise ConfigError(f"cache must be a cache tier, a spec such as 'memory,sqlite', or None; got {type(cache).__name__}")
        self.cache: CacheTier | None = cache
        self.show_progress = show_progress
        self.on_overflow: OnOverflow = on_overflow
        self.cache_ttl = cache_ttl
        self.stats = EmbedStats()
        self.retry = RetryPolicy.none() if info.retries else (retry or RetryPolicy())
        own_ledger = getattr(provider, "ledger", None) if info.records_costs else None
        self.ledger: CostLedger = ledger or own_ledger or CostLedger()
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[np.ndarray | None]] = {}
        self.codec.check_calibration(self.fingerprint("document").id)

    # ----------------------------------------------------------------------------------------------- describe
    @property
    def dim(self) -> int:
        """The Matryoshka dimension of the output."""
        return self.codec.dim

    @property
    def precision(self) -> Precision:
        return self.codec.precision

    @property
    def normalize(self) -> bool:
        return self.codec.normalize

    @property
    def calibration(self) -> Calibration | None:
        return self.codec.calibration

    @property
    def native_dim(self) -> int:
        return self.provider.info.dim

    @property
    def bytes_per_vector(self) -> int:
        return self.codec.bytes_per_vector

    def fingerprint(self, input_type: InputType = "document") -> Fingerprint:
        """The fingerprint of the full vectors this Embedder caches for ``input_type``."""
        if input_type not in INPUT_TYPES:
            raise ConfigError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")
        return self.provider.info.fingerprint(input_type, normalize=self.normalize)

    @classmethod
    def from_spec(cls, model: str | os.PathLike[str] = "minilm", *, api_key: str | None = None,
                  base_url: str | None = None, provider_options: dict[str, Any] | None = None,
                  calibration_path: str | None = None, **options: Any) -> Embedder:
        """An Embedder from a model spec (see :mod:`embedopt.specs`): what the CLI and the framework adapters
        build. A local model is loaded once per process and shared by every Embedder asking for the same spec
        and options. ``api_key``/``base_url`` go to providers that take them (``openai:``, ``voyage:``);
        ``provider_options`` to the provider, checked against what it accepts; ``options`` to the Embedder
        (``cache``, ``dim``, ``precision``, ``normalize``, ...)."""
        from .specs import shared_provider

        provider_options = dict(provider_options or {})
        for name, value in (("api_key", api_key), ("base_url", base_url)):
            if value is not None:
                provider_options[name] = value
        provider = shared_provider(model, **provider_options)
        if calibration_path is not None:
            options["calibration"] = Calibration.load(calibration_path)
        embedder = cls(provider, **options)
        embedder._spec = (model, provider_options)
        return embedder

    # --------------------------------------------------------------------------------------- copy and pickle
    def __deepcopy__(self, memo: dict[int, Any]) -> Embedder:
        """A copy that shares the provider, the cache and the ledger (handles on a model, a store and the
        books, as a copied HTTP client shares its server), with its own lock, in-flight table and counters.
        Frameworks copy their components (LangChain, LlamaIndex); copying a model's weights is never wanted."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)  # shallow: the handles are shared (not copy.copy: that pickles)
        twin.stats = copy.copy(self.stats)
        twin._lock = threading.Lock()
        twin._inflight = {}
        memo[id(self)] = twin
        return twin

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as its settings: a provider made from a spec is rebuilt from it (a local model is loaded once
        per process), a cache given as a spec is opened again (a memory tier starts empty); a provider given as
        an object is pickled as that object, and a cache given as an object is refused (ConfigError). Locks and
        calls in flight are not state. A pickle holds the API key the Embedder was given: keep it private."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_inflight")}
        if self._spec is not None:
            state["provider"] = None
        if self._cache_spec is not None:
            state["cache"] = None
        elif self.cache is not None:  # a live tier (connections, files, locks) is not data to pickle
            raise ConfigError(f"this Embedder was given a cache object ({type(self.cache).__name__}), which cannot "
                              "be pickled; give it the cache as a spec (cache='memory,sqlite'): a pickle then "
                              "opens the same tiers again")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._inflight = {}
        if self._spec is not None and self.provider is None:
            from .specs import shared_provider

            model, provider_options = self._spec
            self.provider = shared_provider(model, **provider_options)
        if self._cache_spec is not None and self.cache is None:
            from .specs import open_cache

            self.cache = open_cache(self._cache_spec)

    def __repr__(self) -> str:
        return (f"Embedder(provider={self.provider!r}, dim={self.dim}, precision={self.precision!r}, "
                f"normalize={self.normalize}, cache={type(self.cache).__name__ if self.cache else None})")

    # ---------------------------------------------------------------------------------------------- public API
    def embed(self, texts: Iterable[str], input_type: InputType = "document") -> np.ndarray:
        """Embed ``texts`` as ``input_type``; returns shape (n, dim) in the configured precision."""
        return self._derive(self._full(texts, input_type))

    def embed_documents(self, texts: Iterable[str]) -> np.ndarray:
        return self.embed(texts, "document")

    def embed_query(self, text: str) -> np.ndarray:
        """One query → one vector of shape (dim,)."""
        return self.embed(self._one(text), "query")[0]

    async def aembed(self, texts: Iterable[str], input_type: InputType = "document") -> np.ndarray:
        full = await self._afull(texts, input_type)
        if len(full) >= _OFFLOAD_AT:
            return await asyncio.to_thread(self._derive, full)
        return self._derive(full)

    async def aembed_documents(self, texts: Iterable[str]) -> np.ndarray:
        return await self.aembed(texts, "document")

    async def aembed_query(self, text: str) -> np.ndarray:
        return (await self.aembed(self._one(text), "query"))[0]

    def embed_full(self, texts: Iterable[str], input_type: InputType = "document") -> np.ndarray:
        """Full-dimension float32 vectors (normalized if configured), before truncation and quantization."""
        return self._full(texts, input_type)

    async def aembed_full(self, texts: Iterable[str], input_type: InputType = "document") -> np.ndarray:
        return await self._afull(texts, input_type)

    def calibrate(self, texts: Iterable[str], *, min_samples: int | None = None) -> Calibration:
        """Fit int8/uint8 ranges on a sample of documents, at this Embedder's ``dim``."""
        return self.codec.fit_calibration(self._full(texts, "document"), min_samples=min_samples,
                                          fingerprint_id=self.fingerprint("document").id)

    # ------------------------------------------------------------------------------------------------ pipeline
    @staticmethod
    def _one(text: Any) -> list[str]:
        if not isinstance(text, str):
            raise InputError(f"a query must be a str, got {type(text).__name__}", 0)
        return [text]

    def _derive(self, full: np.ndarray) -> np.ndarray:
        return self.codec.derive(full)

    def _prepare(self, texts: Iterable[str], input_type: InputType) -> _Job:
        fp = self.fingerprint(input_type)
        items = _validate_texts(texts)
        unique, inverse = dedupe(items)
        first = [0] * len(unique)
        for pos in range(len(items) - 1, -1, -1):
            first[int(inverse[pos])] = pos
        keys = [cache_key(fp, t) for t in unique] if self.cache is not None else None
        out = np.empty((len(unique), self.native_dim), dtype=np.float32)
        with self._lock:
            self.stats.requested += len(items)
            self.stats.unique += len(unique)
        return _Job(input_type, fp, unique, inverse, first, keys, out, list(range(len(unique))))

    def _take_hits(self, job: _Job, found: Sequence[np.ndarray | None]) -> None:
        """Keep cached vectors of the right shape and finite values and, when this Embedder normalizes, of unit
        length; anything else is a miss (counted in ``cache_rejected``, recomputed, and overwritten by the
        write-back). An all-zero vector is kept: it is what a model gives a text with no token it knows (the
        static model does), and what normalizing leaves it."""
        dim = self.native_dim
        rows: list[int] = []
        vecs: list[np.ndarray] = []
        todo: list[int] = []
        for i, vec in zip(job.todo, found, strict=True):
            if isinstance(vec, np.ndarray) and vec.shape == (dim,) and vec.dtype.kind == "f":
                rows.append(i)
                vecs.append(vec)
            else:
                todo.append(i)
        rejected = sum(v is not None for v in found) - len(rows)
        if rows:
            block = np.stack(vecs)
            ok = np.isfinite(block).all(axis=1)
            if self.normalize:
                with np.errstate(over="ignore"):  # a damaged entry's norm may overflow: inf, refused
                    norms = np.linalg.norm(np.where(ok[:, None], block, 0), axis=1)
                ok &= (np.abs(norms - 1) <= _UNIT_TOLERANCE) | (norms == 0)
            if not ok.all():
                rejected += int((~ok).sum())
                todo.extend(i for i, good in zip(rows, ok, strict=True) if not good)
                rows = [i for i, good in zip(rows, ok, strict=True) if good]
                block = block[ok]
            job.out[rows] = block
            todo.sort()
        with self._lock:
            self.stats.cache_hits += len(rows)
            self.stats.cache_rejected += rejected
        if rows:  # what the hits would have cost (estimated tokens: counting exactly costs time); free ones too
            self.ledger.record_cache_hits(len(rows), sum(estimate_tokens(job.unique[i]) for i in rows),
                                          self.provider.info.price_per_1m_tokens)
        job.todo = todo

    def _needs_counts(self) -> bool:
        info = self.provider.info
        return (self.on_overflow == "error" and info.max_tokens is not None) or info.max_batch_tokens is not None

    def _count(self, job: _Job) -> None:
        """Count the tokens of the texts to compute, once, when limits or budgets need them."""
        missing = [i for i in job.todo if i not in job.counts]
        if missing and self._needs_counts():
            job.counts.update(zip(missing, count_tokens(self.provider, [job.unique[i] for i in missing]),
                                  strict=True))

    def _plan(self, job: _Job) -> list[Batch]:
        info = self.provider.info
        texts = [job.unique[i] for i in job.todo]
        counts = [job.counts[i] for i in job.todo] if job.counts else None
        if self.on_overflow == "error" and info.max_tokens is not None and counts is not None:
            for j, n in enumerate(counts):
                if n > info.max_tokens:
                    pos = job.first_position[job.todo[j]]
                    raise InputError(
                        f"text #{pos} has {n} tokens, over {info.model}'s limit of {info.max_tokens}; split it into "
                        "chunks, or use on_overflow='truncate' to let the model cut it", pos)
        batches = plan_batches(texts, max_batch=info.max_batch, max_batch_tokens=info.max_batch_tokens,
                               token_counts=counts)
        # plan_batches indexes into `texts`; map back to positions in job.unique.
        return [Batch([job.todo[j] for j in b.indices], b.tokens) for b in batches]

    def _check(self, job: _Job, batch: Batch, result: Embedded) -> np.ndarray:
        """A provider's answer for one batch as an (n, dim) finite array, or a ProviderError (billed: the
        provider answered) saying what is wrong; nothing of a refused batch is cached."""
        info = self.provider.info
        arr = np.asarray(result.vectors, dtype=np.float32)
        n = len(batch.indices)
        billed = result.tokens if result.tokens is not None else self._tokens(job, batch)
        if arr.shape != (n, info.dim):
            raise ProviderError(
                f"{info.provider} model {info.model} returned an array of shape {arr.shape} for {n} texts; "
                f"expected ({n}, {info.dim}). Nothing from this batch was cached.",
                provider=info.provider, model=info.model, billed_tokens=billed)
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            pos = job.first_position[batch.indices[int(np.flatnonzero(~finite)[0])]]
            raise ProviderError(
                f"{info.provider} model {info.model} returned NaN or infinity for text #{pos}; nothing from this "
                "batch was cached (earlier batches were). Check the text and the model (fp16 overflow?).",
                provider=info.provider, model=info.model, billed_tokens=billed)
        return arr

    def _accept(self, job: _Job, batch: Batch, arr: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Store a checked batch in the job, and return the cache items to write."""
        if self.normalize:
            arr = l2_normalize(arr)
        job.out[batch.indices] = arr
        n = len(batch.indices)
        with self._lock:
            self.stats.computed += n
            self.stats.provider_calls += 1
        if job.keys is None:
            return []
        return [(job.keys[i], job.out[i]) for i in batch.indices]

    def _batch_counts(self, job: _Job, batch: Batch) -> list[int] | None:
        return [job.counts[i] for i in batch.indices] if job.counts else None

    def _tokens(self, job: _Job, batch: Batch) -> int:
        """The batch's tokens as counted (or estimated) here, for providers that do not say what they billed."""
        return batch.tokens if job.counts else sum(estimate_tokens(job.unique[i]) for i in batch.indices)

    def _attempt(self, job: _Job, batch: Batch, texts: list[str]) -> tuple[Embedded, np.ndarray]:
        try:
            result = self.provider.embed(texts, job.input_type, self._batch_counts(job, batch))
            return result, self._check(job, batch, result)
        except ProviderError as exc:
            self._rejected(exc)
            raise

    async def _aattempt(self, job: _Job, batch: Batch, texts: list[str]) -> tuple[Embedded, np.ndarray]:
        try:
            result = await aembed(self.provider, texts, job.input_type, self._batch_counts(job, batch))
            return result, self._check(job, batch, result)
        except ProviderError as exc:
            self._rejected(exc)
            raise

    def _call(self, job: _Job, batch: Batch) -> np.ndarray:
        texts = [job.unique[i] for i in batch.indices]
        started = time.monotonic()
        with self._provider_errors():
            result, arr = self.retry.call(partial(self._attempt, job, batch, texts))
        self._bill(job, batch, result.tokens, time.monotonic() - started)
        return arr

    async def _acall(self, job: _Job, batch: Batch) -> np.ndarray:
        texts = [job.unique[i] for i in batch.indices]
        started = time.monotonic()
        with self._provider_errors():
            result, arr = await self.retry.acall(partial(self._aattempt, job, batch, texts))
        self._bill(job, batch, result.tokens, time.monotonic() - started)
        return arr

    def _route(self) -> str:
        info = self.provider.info
        return f"{info.provider}:{info.model}"

    def _bill(self, job: _Job, batch: Batch, used: int | None, seconds: float) -> None:
        """Record a provider call in the ledger (unless the provider records its own calls, per route)."""
        tokens = used if used is not None else self._tokens(job, batch)
        with self._lock:
            self.stats.tokens += tokens
        info = self.provider.info
        if not info.records_costs:
            self.ledger.record(self._route(), kind=info.kind, texts=len(batch.indices),
                               tokens=tokens, price_per_1m_tokens=info.price_per_1m_tokens, seconds=seconds)

    def _rejected(self, exc: ProviderError) -> None:
        """An attempt whose answer was refused: its billed tokens count (unless the provider keeps the books)."""
        info = self.provider.info
        if exc.billed_tokens is not None and not info.records_costs:
            self.ledger.record_rejected(self._route(), kind=info.kind, tokens=exc.billed_tokens,
                                        price_per_1m_tokens=info.price_per_1m_tokens)

    @contextmanager
    def _provider_errors(self) -> Iterator[None]:
        """Map a provider's own exceptions to ProviderError (cause kept); embedopt errors pass through as they are.
        A failed call (after its retries) is recorded in the ledger, unless the provider keeps its own books."""
        info = self.provider.info
        try:
            yield
        except EmbedOptError as exc:
            if isinstance(exc, ProviderError) and not info.records_costs:
                self.ledger.record_failure(self._route(), kind=info.kind)
            raise
        except Exception as exc:
            if not info.records_costs:
                self.ledger.record_failure(self._route(), kind=info.kind)
            raise ProviderError(f"{info.provider} model {info.model} failed: {type(exc).__name__}: {exc}",
                                provider=info.provider, model=info.model) from exc

    def _cache_failed(self, op: str, exc: Exception) -> None:
        with self._lock:
            self.stats.cache_errors += 1
        logger.warning("embedopt cache %s failed (%s: %s); continuing without it for this call",
                       op, type(exc).__name__, exc)

    def _finish(self, job: _Job) -> np.ndarray:
        return job.out[job.inverse]

    # ------------------------------------------------------------------------------------------ single flight
    def _claim(self, job: _Job, *, may_wait: bool) -> list[tuple[int, Future[np.ndarray | None]]]:
        """Split ``job.todo`` into texts this call computes (it registers a flight for each) and texts another
        call is already computing (returned, to wait for). Only with a cache: flights are keyed by cache key."""
        if job.keys is None:
            return []
        waits: list[tuple[int, Future[np.ndarray | None]]] = []
        own: list[int] = []
        with self._lock:
            for i in job.todo:
                key = job.keys[i]
                fut = self._inflight.get(key)
                if fut is None:
                    fut = Future()
                    self._inflight[key] = fut
                    job.flights[i] = fut
                    own.append(i)
                elif may_wait:
                    waits.append((i, fut))
                else:
                    own.append(i)
        job.todo = own
        return waits

    def _land(self, job: _Job, indices: Sequence[int], *, failed: bool = False) -> None:
        """Hand finished vectors to the calls waiting for them (``None`` on failure: they compute it themselves)."""
        if not job.flights or job.keys is None:
            return
        landed = []
        with self._lock:
            for i in indices:
                fut = job.flights.pop(i, None)
                if fut is not None:
                    if self._inflight.get(job.keys[i]) is fut:
                        del self._inflight[job.keys[i]]
                    landed.append((i, fut))
        for i, fut in landed:
            fut.set_result(None if failed else job.out[i])

    def _take_waited(self, job: _Job, results: Sequence[tuple[int, np.ndarray | None]]) -> None:
        """Vectors computed by other calls; what they failed to compute becomes this call's work."""
        job.todo = []
        for i, vec in results:
            if vec is None:
                job.todo.append(i)
            else:
                job.out[i] = vec
        with self._lock:
            self.stats.shared += len(results) - len(job.todo)

    # ------------------------------------------------------------------------------------------------- sync
    def _write_back(self, items: list[tuple[str, np.ndarray]]) -> None:
        if items and self.cache is not None:
            try:
                self.cache.set_many(items, self.cache_ttl)
            except Exception as exc:
                self._cache_failed("write", exc)

    def _compute(self, job: _Job) -> None:
        self._count(job)
        batches = self._plan(job)
        with progress_bar(len(job.todo), enabled=self.show_progress, desc=_progress_desc(job)) as update:
            for batch in batches:
                self._write_back(self._accept(job, batch, self._call(job, batch)))
                self._land(job, batch.indices)
                update(len(batch.indices))

    def _full(self, texts: Iterable[str], input_type: InputType) -> np.ndarray:
        job = self._prepare(texts, input_type)
        if self.cache is not None and job.todo and job.keys is not None:
            try:
                self._take_hits(job, self.cache.get_many(job.keys))
            except Exception as exc:
                self._cache_failed("read", exc)
        if not job.todo:
            return self._finish(job)
        # Inside a running event loop a blocking wait could stall the very task computing the vector.
        waits = self._claim(job, may_wait=not _in_event_loop())
        try:
            if job.todo:
                self._compute(job)
        finally:
            self._land(job, list(job.flights), failed=True)
        if waits:
            self._take_waited(job, [(i, fut.result()) for i, fut in waits])
            if job.todo:
                self._compute(job)
        return self._finish(job)

    # ------------------------------------------------------------------------------------------------ async
    async def _awrite_back(self, items: list[tuple[str, np.ndarray]]) -> None:
        if items and self.cache is not None:
            try:
                await self.cache.aset_many(items, self.cache_ttl)
            except Exception as exc:
                self._cache_failed("write", exc)

    async def _acompute(self, job: _Job) -> None:
        if self._needs_counts():  # a tokenizer is CPU work: never on the event loop
            await asyncio.to_thread(self._count, job)
        batches = self._plan(job)

        async def call(batch: Batch) -> np.ndarray:
            return await self._acall(job, batch)

        with progress_bar(len(job.todo), enabled=self.show_progress, desc=_progress_desc(job)) as update:
            async for batch, raw in run_async(batches, call, max_concurrency=self.provider.info.max_concurrency):
                await self._awrite_back(self._accept(job, batch, raw))
                self._land(job, batch.indices)
                update(len(batch.indices))

    async def _afull(self, texts: Iterable[str], input_type: InputType) -> np.ndarray:
        big = isinstance(texts, (list, tuple)) and len(texts) >= _OFFLOAD_AT
        job = await asyncio.to_thread(self._prepare, texts, input_type) if big else self._prepare(texts, input_type)
        if self.cache is not None and job.todo and job.keys is not None:
            try:
                self._take_hits(job, await self.cache.aget_many(job.keys))
            except Exception as exc:
                self._cache_failed("read", exc)
        if not job.todo:
            return self._finish(job)
        waits = self._claim(job, may_wait=True)
        try:
            if job.todo:
                await self._acompute(job)
        finally:
            self._land(job, list(job.flights), failed=True)
        if waits:
            got = [(i, await asyncio.wrap_future(fut)) for i, fut in waits]
            self._take_waited(job, got)
            if job.todo:
                await self._acompute(job)
        return self._finish(job)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
