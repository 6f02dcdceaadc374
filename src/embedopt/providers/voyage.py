"""Voyage AI embeddings through the official ``voyageai`` client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._extras import require
from .._secrets import register_url, scrub
from ..catalog import API_LIMITS, card
from ..errors import ConfigError, EmbedOptError, ProviderError
from ..fingerprint import InputType
from ..quantization import Precision
from ._api import (
    APIProvider,
    PerLoop,
    api_error,
    api_key_from,
    decode_embeddings,
    parse_retry_after,
    rows_in_order,
)
from .base import Embedded, ProviderEntry, ProviderInfo, ProviderKind

__all__ = ["VOYAGE_DTYPES", "VoyageProvider"]

#: Where the API key comes from when none is given.
KEY_ENV = "VOYAGE_API_KEY"

#: embedopt precision → Voyage ``output_dtype``. Voyage's int8/uint8 are its own scalar quantization; binary and
#: ubinary pack 8 dimensions a byte exactly as embedopt (and sentence-transformers) do.
VOYAGE_DTYPES: dict[str, str] = {"float32": "float", "int8": "int8", "uint8": "uint8", "binary": "binary",
                                 "ubinary": "ubinary"}
_NUMPY = {"int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8}


def voyage_error(exc: Exception, model: str, key: str | None) -> EmbedOptError:
    """A voyageai client exception as an embedopt error (the key scrubbed from the message). An answer that
    does not parse bills nothing here: its usage cannot be read."""
    from voyageai import error as verr

    if isinstance(exc, EmbedOptError):
        return exc
    status = getattr(exc, "http_status", None)
    message = getattr(exc, "user_message", None) or str(exc)
    if isinstance(exc, (verr.Timeout, verr.APIConnectionError, verr.TryAgain)):
        return api_error("voyage", model, status=None, message=f"{type(exc).__name__}: {message}",
                         secret=key)
    if isinstance(exc, verr.VoyageError):
        retryable = None if status not in (None, 200) else True  # a 200 that is not JSON: malformed
        return api_error("voyage", model, status=status if status != 200 else None, message=message,
                         secret=key, retry_after=parse_retry_after(getattr(exc, "headers", None)),
                         retryable=retryable)
    if isinstance(exc, (OSError, TimeoutError)) or type(exc).__module__.split(".")[0] == "aiohttp":
        # the async client's transport errors (a body cut short, a dropped connection) reach us unwrapped
        return api_error("voyage", model, status=None, message=f"connection: {type(exc).__name__}: {message}",
                         secret=key, retryable=True)
    if isinstance(exc, (KeyError, ValueError, TypeError, AttributeError)):
        return api_error("voyage", model, status=None, message=f"malformed answer: {exc}",
                         secret=key, retryable=True)
    return ProviderError(scrub(f"voyage model {model} failed: {type(exc).__name__}: {exc}", key),
                         provider="voyage", model=model)


class VoyageProvider(APIProvider):
    """Embeddings from Voyage AI (``voyage-3``, ``voyage-3-large``, ``voyage-code-3``, ...).

    ``input_type`` is sent as Voyage's ``query``/``document``, so Voyage applies its own prompts. Batches stay
    within the model's limits (1,000 inputs; 120k-320k tokens by model). Token counts are estimated: the client's
    ``tokenize`` downloads a tokenizer from the hub and is never called. Over-long inputs are truncated by Voyage
    (``truncation=True``) unless the Embedder refuses them first (``on_overflow="error"``). The client never
    retries; the core does.

    Args:
        model: a Voyage model name.
        api_key: defaults to ``$VOYAGE_API_KEY``. Never shown in a repr, log or error.
        base_url: another endpoint (a proxy, or a test server), e.g. ``http://127.0.0.1:8000/v1``.
        output_dimension: Matryoshka size the server returns (voyage-3-large / voyage-code-3: 2048, 1024, 512, 256).
        price_per_1m_tokens: USD per million tokens (default: the catalog's).
        timeout: seconds per request (a server that hangs fails after this long with a retryable ProviderError).
        check_model: refuse an answer whose ``model`` is not the model asked for (default), as a proxy that
            answers with another model would put foreign vectors under this model's fingerprint.

    Answers are read through the client's ``voyageai.Embedding`` resource rather than ``Client.embed``, which
    drops each row's ``index`` and the answer's ``model``: rows are put in input order by their indices (which
    must be exactly 0..n-1) and the model is checked.
    """

    def __init__(self, model: str = "voyage-3", *, api_key: str | None = None, base_url: str | None = None,
                 output_dimension: int | None = None, dim: int | None = None, kind: ProviderKind = "api",
                 price_per_1m_tokens: float | None = None, revision: str | None = None, timeout: float = 30.0,
                 max_concurrency: int = 4, check_model: bool = True) -> None:
        require("voyageai", extra="voyage", feature="VoyageProvider")
        self._key = api_key_from(api_key, KEY_ENV, required=True, provider="Voyage")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if base_url is not None:
            register_url(base_url)
        self.check_model = check_model
        entry = card(model)
        if output_dimension is not None and entry is not None and entry.matryoshka_dims \
                and output_dimension not in entry.matryoshka_dims:
            raise ConfigError(f"{model} supports output_dimension in {entry.matryoshka_dims}, got {output_dimension}")
        native = output_dimension or dim or (entry.dim if entry else None)
        if native is None:
            raise ConfigError(f"the catalog does not know {model!r}; pass dim= (its output dimension)")
        self.model = model
        self.base_url = base_url
        self.output_dimension = output_dimension
        self.timeout = timeout
        self._info = ProviderInfo(
            provider="voyage",
            model=model,
            revision=revision or f"voyage:{model}" + (f":dim={output_dimension}" if output_dimension else ""),
            dim=int(native),
            kind=kind,
            max_batch=entry.max_batch if entry else API_LIMITS["voyage"].max_batch,
            max_tokens=entry.max_tokens if entry else None,
            max_batch_tokens=entry.max_batch_tokens if entry else API_LIMITS["voyage"].max_batch_tokens,
            price_per_1m_tokens=float(price_per_1m_tokens if price_per_1m_tokens is not None
                                      else (entry.price_per_1m_tokens if entry else 0.0)),
            max_concurrency=max_concurrency,
        )
        self._client: Any = None
        self._aclients = PerLoop(self._make_async)

    @property
    def client(self) -> Any:
        if self._client is None:
            import voyageai

            self._client = voyageai.Client(api_key=self._key, max_retries=0, timeout=self.timeout,
                                           base_url=self.base_url)
        return self._client

    def _make_async(self) -> Any:
        import voyageai

        return voyageai.AsyncClient(api_key=self._key, max_retries=0, timeout=self.timeout, base_url=self.base_url)

    # ------------------------------------------------------------------------------------------------- wire
    def _kwargs(self, texts: list[str], input_type: InputType, dtype: str = "float") -> dict[str, Any]:
        kwargs = {"input": texts, "model": self.model, "input_type": input_type, "truncation": True,
                  "output_dtype": dtype, "output_dimension": self.output_dimension}
        if dtype == "float":  # base64 rows decoded (and checked) here, so a bad row is a refused, billed answer
            kwargs["encoding_format"] = "base64"
        return kwargs

    def _map(self, exc: Exception) -> EmbedOptError:
        return voyage_error(exc, self.model, self._key)

    def _rows(self, response: Any, texts: list[str]) -> tuple[list[Any], int]:
        """The answer's rows in input order (indices checked, model checked) and the billed tokens."""
        try:
            data = list(response.data)
            indices = [d.get("index") for d in data]
            items = [d["embedding"] for d in data]
            tokens = int(response.usage.total_tokens)
            answered = response.get("model")
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise self._map(exc) from None
        return rows_in_order(items, indices, len(texts), provider="voyage", asked=self.model, answered=answered,
                             check=self.check_model, billed=tokens), tokens

    def _parse(self, response: Any, texts: list[str]) -> Embedded:
        items, tokens = self._rows(response, texts)
        return Embedded(decode_embeddings(items, len(texts), self._info.dim, provider="voyage", model=self.model,
                                          billed=tokens), tokens)

    def _create(self, texts: list[str], input_type: InputType, dtype: str = "float") -> Any:
        import voyageai

        return voyageai.Embedding.create(**self._kwargs(texts, input_type, dtype), **self.client._params)

    def embed(self, texts: list[str], input_type: InputType,
              token_counts: Sequence[int] | None = None) -> Embedded:
        try:
            response = self._create(texts, input_type)
        except Exception as exc:
            raise self._map(exc) from None
        return self._parse(response, texts)

    async def aembed(self, texts: list[str], input_type: InputType,
                     token_counts: Sequence[int] | None = None) -> Embedded:
        import voyageai

        try:
            response = await voyageai.Embedding.acreate(**self._kwargs(texts, input_type),
                                                        **self._aclients.get()._params)
        except Exception as exc:
            raise self._map(exc) from None
        return self._parse(response, texts)

    def embed_quantized(self, texts: list[str], input_type: InputType, precision: Precision) -> np.ndarray:
        """Vectors quantized by Voyage (``output_dtype``), as the embedopt precision of the same layout.

        These are not full-precision vectors, so they bypass the cache; use them to cut transfer and storage when
        Voyage's own quantization is what you want. ``binary``/``ubinary`` pack bits like embedopt does;
        ``int8``/``uint8`` use Voyage's scale, not an embedopt :class:`~embedopt.Calibration`.
        """
        if precision not in VOYAGE_DTYPES or precision == "float32":
            raise ConfigError(f"precision must be one of {sorted(set(VOYAGE_DTYPES) - {'float32'})}, got {precision!r}")
        texts = list(texts)
        try:
            response = self._create(texts, input_type, VOYAGE_DTYPES[precision])
        except Exception as exc:
            raise self._map(exc) from None
        items, _ = self._rows(response, texts)
        try:
            return np.asarray(items, dtype=_NUMPY[precision])
        except (TypeError, ValueError) as exc:
            raise self._map(exc) from None


SPEC = ProviderEntry(
    prefix="voyage", build=VoyageProvider, options=VoyageProvider, key_env=KEY_ENV,
    summary="Voyage AI's embeddings API", example="voyage:voyage-3")
