"""What the HTTP API providers share: key handling, error mapping, per-event-loop async clients, decoding."""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import os
import re
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._secrets import redact_url, register, scrub
from ..errors import ConfigError, ProviderError
from .base import BaseProvider, ProviderInfo

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def api_key_from(explicit: str | None, env: str, *, required: bool, provider: str) -> str | None:
    """The API key (given, else from ``$env``), registered with the log scrubber so no record ever shows it."""
    key = explicit if explicit is not None else os.environ.get(env)
    if required and not key:
        raise ConfigError(f"{provider} needs an API key: pass api_key=... or set ${env}")
    register(key or None)
    return key or None


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
              retry_after: float | None = None, retryable: bool | None = None,
              billed_tokens: int | None = None) -> ProviderError:
    if retryable is None:
        retryable = status is None or status in RETRYABLE_STATUS
    what = f"HTTP {status}" if status is not None else "no HTTP answer"
    advice = {401: " Check the API key.", 403: " Check the key's permissions.", 404: " Check the model name and base_url.",
              400: " The request was refused as sent (an input too long? a wrong parameter?)."}.get(status or 0, "")
    return ProviderError(scrub(f"{provider} model {model} failed ({what}): {message}.{advice}", secret),
                         provider=provider, model=model, status=status, retryable=retryable,
                         retry_after=retry_after, billed_tokens=billed_tokens)


def _malformed(provider: str, model: str, what: str, billed: int | None) -> ProviderError:
    return ProviderError(f"{provider} model {model} {what}; nothing from this answer was kept (malformed answer: "
                         "retried)", provider=provider, model=model, retryable=True, billed_tokens=billed)


def in_input_order(indices: Sequence[Any], n: int, *, provider: str, model: str,
                   billed: int | None = None) -> list[int]:
    """Where each input's row is in an answer: the answer's ``index`` fields must be exactly 0..n-1, once each
    (a missing index plus a doubled one would otherwise put one text's vector on another text)."""
    if len(indices) != n:
        raise _malformed(provider, model, f"returned {len(indices)} embeddings for {n} inputs", billed)
    order = [-1] * n
    for position, index in enumerate(indices):
        if type(index) is not int or not 0 <= index < n or order[index] != -1:
            shown = list(indices) if n <= 8 else f"{list(indices)[:8]}..."
            raise _malformed(provider, model, f"answered {n} inputs with indices {shown}, not each of 0..{n - 1} "
                             "once (vectors would land on the wrong texts)", billed)
        order[index] = position
    return order


_VERSION_SUFFIX = re.compile(r"(?i)(-v\d+|-\d{4}-?\d{2}-?\d{2}|:latest)")


def same_model(asked: str, answered: Any) -> bool:
    """Whether an answer's ``model`` names the model that was asked for: the same name (case aside), one of them
    with an organisation (``BAAI/bge-small-en-v1.5`` for ``bge-small-en-v1.5``), or the name plus a version the
    API adds (``text-embedding-ada-002-v2``, ``...-2024-05-13``, ``:latest``). An answer naming no model passes."""
    if answered is None or answered == "":
        return True
    if not isinstance(answered, str):
        return False
    a, b = asked.strip().lower(), answered.strip().lower()
    if "/" in a and "/" not in b:
        a = a.rsplit("/", 1)[1]
    elif "/" in b and "/" not in a:
        b = b.rsplit("/", 1)[1]
    return a == b or (b.startswith(a) and _VERSION_SUFFIX.fullmatch(b[len(a):]) is not None)


def check_model(asked: str, answered: Any, *, provider: str, billed: int | None = None) -> None:
    """Refuse an answer made by another model than the one asked for (its vectors would be cached and indexed
    under this model's fingerprint)."""
    if not same_model(asked, answered):
        raise ProviderError(
            f"{provider} answered a request for model {asked!r} with model {str(answered)[:100]!r}: those are "
            "another model's vectors, so nothing was kept. Check base_url; if the server serves one model whatever "
            "the request names (Hugging Face TEI does), make the provider with check_model=False",
            provider=provider, model=asked, retryable=False, billed_tokens=billed)


def rows_in_order(items: Sequence[Any], indices: Sequence[Any], n: int, *, provider: str, asked: str,
                  answered: Any, check: bool, billed: int | None) -> list[Any]:
    """An answer's rows (one per index) in input order, after checking that the answer is the asked model's
    (unless ``check`` is off) and that it has n rows whose indices are exactly 0..n-1."""
    if check:
        check_model(asked, answered, provider=provider, billed=billed)
    order = in_input_order(indices, n, provider=provider, model=asked, billed=billed)
    return [items[j] for j in order]


def decode_embeddings(items: Sequence[Any], n: int, dim: int | None, *, provider: str, model: str,
                      billed: int | None = None) -> np.ndarray:
    """Rows from an API answer, already in input order: base64 little-endian float32 strings or lists of
    floats, each of ``dim`` values (a cut vector or a missing row is a retryable malformed answer)."""
    if len(items) != n:
        raise _malformed(provider, model, f"returned {len(items)} embeddings for {n} inputs", billed)
    rows = []
    for item in items:
        try:
            if isinstance(item, str):
                row = np.frombuffer(base64.b64decode(item, validate=True), dtype="<f4")
            else:
                row = np.asarray(item, dtype=np.float32)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise _malformed(provider, model, f"returned an embedding that does not decode ({exc})", billed) from exc
        if row.ndim != 1 or (dim is not None and row.shape[0] != dim):
            raise _malformed(provider, model, f"returned a vector of shape {row.shape}, expected ({dim},) (a cut "
                             "answer, or a dimensions setting the server ignored)", billed)
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
        where = f", base_url={redact_url(self.base_url)!r}" if self.base_url else ""
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
