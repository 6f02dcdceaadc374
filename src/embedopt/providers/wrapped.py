"""Any embeddings object of another library as a provider, so it gets embedopt's cache, batching, Matryoshka and
quantization: a pair of callables (documents, query; optionally their async twins) and a description of the model
behind them, from which the fingerprint is built.

The framework adapters (``EmbedOptEmbeddings.wrap`` for LangChain, ``EmbedOptEmbedding.wrap`` for LlamaIndex) only
hand over their object's methods; :func:`describe` reads its model fields, the same way for both.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..catalog import card
from ..errors import ConfigError
from ..fingerprint import InputType
from .base import BaseProvider, Embedded, ProviderInfo

__all__ = ["WrappedProvider", "describe"]

_SECRET = re.compile(r"key|token|secret|passw|credential|auth|cookie|signature", re.IGNORECASE)
#: Fields that change how a request is made, never the vectors: left out of the fingerprint.
_OPERATIONAL = frozenset({
    "batch_size", "chunk_size", "embed_batch_size", "max_retries", "retry_min_seconds", "retry_max_seconds",
    "request_timeout", "timeout", "show_progress_bar", "show_progress", "num_workers", "callback_manager",
    "callbacks", "verbose", "http_client", "http_async_client", "client", "async_client", "aclient",
    "default_headers", "default_query", "headers", "openai_proxy", "proxy", "organization", "openai_organization",
    "reuse_client", "max_concurrency", "skip_empty", "check_embedding_ctx_length", "tiktoken_model_name",
    "retry_on", "additional_kwargs"})
_MODEL_FIELDS = ("model", "model_name", "model_id", "deployment", "azure_deployment")
_DIM_FIELDS = ("dimensions", "dimension", "dim", "size", "embed_dim", "embedding_dim", "output_dimensionality",
               "embedding_size")
_URL = re.compile(r"url|endpoint|api_base|host", re.IGNORECASE)


def _plain(value: Any) -> bool:
    """JSON scalars and lists/dicts of them: what may describe a model."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and not _SECRET.search(k) and _plain(v) for k, v in value.items())
    return False


def _public_url(url: str) -> str:
    """A URL without user, password, query or fragment (where credentials hide)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def describe(obj: Any) -> tuple[str, dict[str, Any]]:
    """``obj``'s class (``module.Class``) and the fields that say which vectors it makes: its pydantic fields
    (or attributes) that are plain values, without secrets (anything named like a key or token, any
    ``SecretStr``), clients, callbacks or settings that only change how requests are made (timeouts, retries,
    batch sizes). URLs keep scheme, host and path only."""
    cls = type(obj)
    owner = f"{cls.__module__}.{cls.__qualname__}"
    dump = getattr(obj, "model_dump", None)
    raw: Mapping[str, Any]
    if callable(dump):
        names = list(getattr(cls, "model_fields", {}) or {})
        raw = {n: getattr(obj, n, None) for n in names}
    else:
        raw = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    fields: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _OPERATIONAL or _SECRET.search(name) or not _plain(value):
            continue
        if isinstance(value, str) and _URL.search(name):
            value = _public_url(value)
        fields[name] = value
    return owner, fields


def _model_name(fields: Mapping[str, Any], owner: str) -> str:
    for name in _MODEL_FIELDS:
        if isinstance(fields.get(name), str) and fields[name]:
            return str(fields[name])
    return owner.rsplit(".", 1)[-1]


def native_dim(fields: Mapping[str, Any], model: str) -> int | None:
    """The output dimension the fields state (``dimensions``, ``size``, ``embed_dim``, ...), else the
    catalog's for the model name, else ``None``."""
    for name in _DIM_FIELDS:
        value = fields.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    known = card(model)
    return known.dim if known is not None else None


class WrappedProvider(BaseProvider):
    """A provider over another library's embeddings methods.

    Args:
        embed_documents: ``texts -> vectors`` for documents.
        embed_query: ``text -> vector`` for one query (queries and documents are cached apart).
        owner: the wrapped class, ``module.Class``: part of the fingerprint.
        fields: what identifies the model (see :func:`describe`); hashed into the fingerprint's revision, so a
            change of model, dimensions or endpoint is another embedding space.
        dim: the model's output dimension; default from ``fields`` (``dimensions``, ``size``, ...) or the catalog.
            No call is ever made to learn it.
        aembed_documents, aembed_query: native async twins (else the sync ones run in a worker thread).
        max_batch: most texts handed to ``embed_documents`` at once.
    """

    def __init__(self, embed_documents: Callable[[list[str]], Sequence[Sequence[float]]],
                 embed_query: Callable[[str], Sequence[float]], *, owner: str, fields: Mapping[str, Any],
                 dim: int | None = None,
                 aembed_documents: Callable[[list[str]], Awaitable[Sequence[Sequence[float]]]] | None = None,
                 aembed_query: Callable[[str], Awaitable[Sequence[float]]] | None = None,
                 max_batch: int = 256) -> None:
        model = _model_name(fields, owner)
        found = dim if dim is not None else native_dim(fields, model)
        if found is None:
            raise ConfigError(f"cannot tell the output dimension of {owner} ({model}) from its fields; pass "
                              "native_dim=N (embedopt never makes a paid call just to learn it)")
        blob = json.dumps({"owner": owner, "fields": dict(fields)}, sort_keys=True, default=str)
        known = card(model)  # a catalogued API model: its price, so the ledger counts what the cache saved
        self._info = ProviderInfo(
            provider=f"wrapped-{re.sub(r'[^A-Za-z0-9_]+', '_', owner.rsplit('.', 1)[-1])}", model=model,
            revision=hashlib.sha256(blob.encode()).hexdigest()[:16], dim=int(found),
            kind=known.kind if known is not None else "api", max_batch=max_batch,
            max_tokens=known.max_tokens if known is not None else None,
            price_per_1m_tokens=known.price_per_1m_tokens if known is not None else 0.0,
            max_concurrency=4 if aembed_documents is not None else 1)
        self.owner = owner
        self.fields = dict(fields)
        self._documents, self._query = embed_documents, embed_query
        self._adocuments, self._aquery = aembed_documents, aembed_query

    @property
    def info(self) -> ProviderInfo:
        return self._info

    def _embed(self, texts: list[str], input_type: InputType) -> np.ndarray:
        if input_type == "query":
            return np.asarray([self._query(t) for t in texts], dtype=np.float32)
        return np.asarray(self._documents(texts), dtype=np.float32)

    async def aembed(self, texts: list[str], input_type: InputType,
                     token_counts: Sequence[int] | None = None) -> Embedded:
        if input_type == "query" and self._aquery is not None:
            aquery = self._aquery
            rows = await asyncio.gather(*(aquery(t) for t in texts))
            return Embedded(np.asarray(rows, dtype=np.float32), None)
        if input_type == "document" and self._adocuments is not None:
            return Embedded(np.asarray(await self._adocuments(texts), dtype=np.float32), None)
        return await super().aembed(texts, input_type, token_counts)

    def __repr__(self) -> str:
        return f"WrappedProvider({self.owner}, model={self._info.model!r}, dim={self._info.dim})"
