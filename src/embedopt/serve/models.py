"""The served models: each an :class:`~embedopt.Embedder` over the shared cache, with its batch queue, its token
counter, its int8 calibrations, and the cache lookup done before anything is queued."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..fingerprint import InputType
from ..matryoshka import truncate
from ..providers.base import estimate_tokens
from ..quantization import Calibration, Precision, quantize
from .batching import BatchQueue
from .config import BatchingConfig, ModelConfig, RerankerConfig

__all__ = ["Lookup", "ServedModel", "ServedReranker", "build_embedder", "build_reranker"]

logger = logging.getLogger("embedopt.serve")


def _provider_options(spec: str, base_url: str | None, api_key_env: str | None,
                      options: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"provider_options": dict(options)}
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise ConfigError(f"api_key_env names {api_key_env!r}, which is not set in the environment")
        kwargs["api_key"] = key
    if base_url:
        kwargs["base_url"] = base_url
    return kwargs


def open_cache(spec: str) -> Any:
    """The shared vector cache from a spec (``embedopt.specs.open_cache``; ``embedopt.cache`` before it)."""
    try:
        from ..specs import open_cache as _open
    except ImportError:  # pragma: no cover - before the spec registry
        from ..cache import open_cache as _open  # type: ignore[attr-defined,no-redef]
    return _open(spec)


def _count_tokens(provider: Any, texts: list[str]) -> list[int]:
    """The provider's own token counts where it has a tokenizer, else estimates."""
    own = getattr(provider, "count_tokens", None)
    counts = own(texts) if own is not None else [estimate_tokens(t) for t in texts]
    return [int(c) for c in counts]


def build_embedder(cfg: ModelConfig, cache: Any) -> Any:
    """The Embedder for one configured model: the only place that turns specs into providers (switch it to
    ``embedopt.specs`` when that registry lands)."""
    from .. import Budget, Embedder, Route, Router

    if cfg.spec is not None:
        return Embedder.from_spec(cfg.spec, cache=cache, show_progress=False,
                                  **_provider_options(cfg.spec, cfg.base_url, cfg.api_key_env, dict(cfg.options)))
    routes = []
    for r in cfg.routes:
        provider = Embedder.from_spec(r.spec, **_provider_options(r.spec, r.base_url, r.api_key_env,
                                                                   dict(r.options))).provider
        routes.append(Route(provider, name=r.name, price_per_1m_tokens=r.price_per_1m_tokens))
    budget = Budget(cfg.daily_usd, cfg.monthly_usd) if cfg.daily_usd is not None or cfg.monthly_usd is not None \
        else None
    router = Router(routes, policy=cfg.policy, budget=budget)  # type: ignore[arg-type]
    return Embedder(router, cache=cache, show_progress=False)


def build_reranker(cfg: RerankerConfig) -> Any:
    from ..rerank import CrossEncoderReranker

    return CrossEncoderReranker(cfg.spec, batch_size=cfg.batch_size, max_length=cfg.max_length)


@dataclass
class Lookup:
    """One request's texts after the cache lookup: the rows found, and futures for the misses."""

    rows: np.ndarray
    """(unique texts, dim) float32; miss rows are filled in by :meth:`ServedModel.wait`."""
    inverse: np.ndarray
    """Request position -> row."""
    misses: list[int]
    futures: list[asyncio.Future[np.ndarray]]
    submitted: list[str]
    """The texts handed to the queue (release them when the request ends)."""

    @property
    def hits(self) -> int:
        return len(self.rows) - len(self.misses)


class ServedModel:
    """One configured model name, loaded."""

    def __init__(self, cfg: ModelConfig, embedder: Any, batching: BatchingConfig) -> None:
        from ..cache import cache_key

        self.name = cfg.name
        self.cfg = cfg
        self.embedder = embedder
        info = embedder.provider.info
        self.dim: int = embedder.native_dim
        self.max_tokens: int | None = info.max_tokens
        self.price: float = cfg.price_per_1m_tokens if cfg.price_per_1m_tokens is not None \
            else float(info.price_per_1m_tokens)
        self.token_mode = cfg.tokens or ("tokenizer" if info.kind == "api" else "estimate")
        self.cache = embedder.cache
        self._fingerprints = {t: embedder.fingerprint(t) for t in ("query", "document")}
        self._key = cache_key
        cap = info.max_tokens or 512
        self.queue = BatchQueue(
            cfg.name, self._compute, length=lambda t: min(estimate_tokens(t), cap) + 2,
            max_batch_tokens=batching.max_batch_tokens, max_batch_texts=batching.max_batch_texts,
            max_wait=batching.max_wait_ms / 1000.0, max_queue_texts=batching.max_queue_texts,
            workers=batching.workers)
        # Every batch of this model runs on one thread, as Infinity's model worker does: torch's OpenMP team then
        # stays with that thread. Handing batches to whichever thread of a pool is free (asyncio.to_thread) makes
        # a team per thread, and their spinning workers cost 3x the CPU per batch on a busy machine (measured).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"embedopt-model-{cfg.name}")
        self._calibrations: dict[int, Calibration] = {}
        self._calibration_lock = asyncio.Lock()
        self.lookups = 0
        self.hits = 0
        self.cache_errors = 0

    async def _compute(self, texts: list[str], input_type: InputType) -> np.ndarray:
        """One batch through the core (cache write-back, checks), always on this model's own thread."""
        loop = asyncio.get_running_loop()
        vectors: np.ndarray = await loop.run_in_executor(self._thread, self.embedder.embed_full, texts, input_type)
        return vectors

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------------- tokens
    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as this model bills them (see ``ModelConfig.tokens``)."""
        if self.token_mode == "estimate":
            return [estimate_tokens(t) for t in texts]
        return await asyncio.to_thread(_count_tokens, self.embedder.provider, list(texts))

    async def exact_tokens(self, texts: Sequence[str]) -> list[int]:
        return await asyncio.to_thread(_count_tokens, self.embedder.provider, list(texts))

    # -------------------------------------------------------------------------------------------- embed
    async def lookup(self, texts: list[str], input_type: InputType) -> Lookup:
        """Cache lookup, then the queue for the misses (identical texts once). Await :meth:`wait` for the
        vectors, and always ``queue.release(lookup.submitted, input_type)`` when the request ends."""
        index: dict[str, int] = {}
        inverse = np.empty(len(texts), dtype=np.intp)
        unique: list[str] = []
        for pos, t in enumerate(texts):
            j = index.get(t)
            if j is None:
                j = index[t] = len(unique)
                unique.append(t)
            inverse[pos] = j
        rows = np.empty((len(unique), self.dim), dtype=np.float32)
        found: list[np.ndarray | None] = [None] * len(unique)
        if self.cache is not None:
            fp = self._fingerprints[input_type]
            try:
                found = await self.cache.aget_many([self._key(fp, t) for t in unique])
            except Exception as exc:  # a cache outage never fails a request
                self.cache_errors += 1
                logger.warning("cache read failed for model %r (%s); computing instead", self.name,
                               type(exc).__name__)
                found = [None] * len(unique)
        misses: list[int] = []
        got: list[int] = []
        for i, vec in enumerate(found):
            (got if vec is not None and vec.shape == (self.dim,) else misses).append(i)
        if got:
            block = np.stack([found[i] for i in got])  # type: ignore[misc]
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():  # a damaged entry is a miss: recomputed, and the write-back replaces it
                misses = sorted(misses + [i for i, ok in zip(got, finite, strict=True) if not ok])
                got = [i for i, ok in zip(got, finite, strict=True) if ok]
                block = block[finite]
            if len(got) == len(rows):
                rows = block
            else:
                rows[got] = block
        self.lookups += len(unique)
        self.hits += len(unique) - len(misses)
        submitted = [unique[i] for i in misses]
        futures = self.queue.submit(submitted, input_type) if submitted else []
        return Lookup(rows, inverse, misses, futures, submitted)

    async def wait(self, lookup: Lookup) -> np.ndarray:
        """Vectors in request order once every missed text is computed."""
        if lookup.futures:
            done = await asyncio.gather(*lookup.futures)
            for i, vec in zip(lookup.misses, done, strict=True):
                lookup.rows[i] = vec
        return lookup.rows[lookup.inverse]

    # ------------------------------------------------------------------------------------------- derive
    async def calibration(self, dim: int) -> Calibration:
        """int8/uint8 ranges at ``dim``, fitted once per dim on the calibration texts (document vectors)."""
        cal = self._calibrations.get(dim)
        if cal is not None:
            return cal
        async with self._calibration_lock:
            cal = self._calibrations.get(dim)
            if cal is None:
                texts = calibration_texts(self.cfg.calibration_texts)
                full = await self._compute(texts, "document")
                vectors = truncate(full, dim) if dim < self.dim else full
                cal = Calibration.fit(vectors, fingerprint_id=self._fingerprints["document"].id)
                self._calibrations[dim] = cal
        return cal

    async def derive(self, full: np.ndarray, dim: int | None, precision: Precision) -> np.ndarray:
        """Truncate (Matryoshka, renormalized) and quantize full vectors, as the Embedder does."""
        dim = dim or self.dim
        v = truncate(full, dim) if dim < self.dim else full
        if precision in ("int8", "uint8"):
            return quantize(v, precision, calibration=await self.calibration(dim))
        return quantize(v, precision)


class ServedReranker:
    def __init__(self, cfg: RerankerConfig, reranker: Any) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.reranker = reranker
        self.price = cfg.price_per_1m_tokens
        self.max_length: int | None = getattr(reranker, "max_length", None)


# ---------------------------------------------------------------------------------------------- calibration
def calibration_texts(path: str | None) -> list[str]:
    """Texts to fit int8 ranges on: a file (one text a line) or the built-in sample."""
    if path is None:
        from ._calibration import TEXTS

        return list(TEXTS)
    try:
        with open(path, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
    except OSError as exc:
        raise ConfigError(f"cannot read calibration_texts {path!r}: {exc.strerror or exc}") from None
    if len(texts) < 32:
        raise InputError(f"calibration_texts {path!r} has {len(texts)} texts; int8 ranges need at least 32")
    return texts
