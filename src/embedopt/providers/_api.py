"""What the HTTP API providers share: key handling, error mapping, per-event-loop async clients, decoding."""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import logging
import os
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, ProviderError
from .base import BaseProvider, ProviderInfo

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class _Redactor(logging.Filter):
    """Scrubs known API keys from records of the HTTP client libraries' loggers (a server may echo a bad key
    in its error message, and the voyageai client logs that message)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            clean = message
            for secret in self.secrets:
                clean = redact(clean, secret)
            if clean != message:
                record.msg, record.args = clean, None
        return True


_REDACTOR = _Redactor()
_CLIENT_LOGGERS = ("voyage", "openai", "openai._base_client", "httpx", "httpcore.http11", "httpcore.connection")


def api_key_from(explicit: str | None, env: str, *, required: bool, provider: str) -> str | None:
    key = explicit if explicit is not None else os.environ.get(env)
    if required and not key:
        raise ConfigError(f"{provider} needs an API key: pass api_key=... or set ${env}")
    if key:
        if not _REDACTOR.secrets:  # installed when the first key is seen, not at import
            for name in _CLIENT_LOGGERS:
                logging.getLogger(name).addFilter(_REDACTOR)
        _REDACTOR.secrets.add(key)
    return key or None


def redact(text: str, secret: str | None) -> str:
    """``text`` with the secret (and any 12+ character piece of it) replaced by ``***``."""
    if not secret:
        return text
    text = text.replace(secret, "***")
    for size in (24, 16, 12):
        for start in range(0, max(0, len(secret) - size + 1), 4):
            piece = secret[start:start + size]
            if len(piece) == size and piece in text:
                text = text.replace(piece, "***")
    return text


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or ``retry-after-ms``."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return float(lower["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def api_error(provider: str, model: str, *, status: int | None, message: str, secret: str | None,
              retry_after: float | None = None, retryable: bool | None = None) -> ProviderError:
    if retryable is None:
        retryable = status is None or status in RETRYABLE_STATUS
    what = f"HTTP {status}" if status is not None else "no HTTP answer"
    advice = {401: " Check the API key.", 403: " Check the key's permissions.", 404: " Check the model name and base_url.",
              400: " The request was refused as sent (an input too long? a wrong parameter?)."}.get(status or 0, "")
    return ProviderError(redact(f"{provider} model {model} failed ({what}): {message}.{advice}", secret),
                         provider=provider, model=model, status=status, retryable=retryable,
                         retry_after=retry_after)


def decode_embeddings(items: Sequence[Any], n: int, dim: int | None, *, provider: str, model: str) -> np.ndarray:
    """Rows from an API answer: base64 little-endian float32 strings or lists of floats, in ``index`` order."""
    if len(items) != n:
        raise ProviderError(f"{provider} model {model} returned {len(items)} embeddings for {n} inputs "
                            "(malformed answer)", provider=provider, model=model, retryable=True)
    rows = []
    for item in items:
        try:
            if isinstance(item, str):
                row = np.frombuffer(base64.b64decode(item, validate=True), dtype="<f4")
            else:
                row = np.asarray(item, dtype=np.float32)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise ProviderError(f"{provider} model {model} returned an embedding that does not decode ({exc}); "
                                "malformed answer", provider=provider, model=model, retryable=True) from exc
        if row.ndim != 1 or (dim is not None and row.shape[0] != dim):
            raise ProviderError(f"{provider} model {model} returned a vector of shape {row.shape}, expected "
                                f"({dim},) (malformed answer, or a dimensions setting the server ignored)",
                                provider=provider, model=model, retryable=True)
        rows.append(row)
    return np.stack(rows).astype(np.float32, copy=False)


class APIProvider(BaseProvider):
    """What the HTTP API providers share: their ProviderInfo and a repr without secrets. Subclasses set
    ``model``, ``base_url`` and ``_info``, and implement ``embed``/``aembed`` (they learn the billed tokens)."""

    model: str
    base_url: str | None
    _info: ProviderInfo

    @property
    def info(self) -> ProviderInfo:
        return self._info

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"{type(self).__name__}(model={self.model!r}, dim={self._info.dim}{where})"


class PerLoop:
    """One async client per running event loop (an HTTP client's connections belong to the loop that made them)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def get(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._make()
            self._clients[loop] = client
        return client
