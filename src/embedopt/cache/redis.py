"""Redis tier: a shared cache for many processes and machines. redis-py, sync and asyncio, pipelined."""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import numpy as np

from .._extras import require
from .._secrets import redact_url, register, register_url, scrub, secrets_of
from ..errors import CacheError, ConfigError, CorruptEntry, EmbedOptError
from .base import KEY_PREFIX, TierCounters, TierEntry, key_fingerprint
from .entry import decode_vector, encode_vector

__all__ = ["RedisTier", "redact_url"]

#: Keys per MGET / pipeline flush.
_CHUNK = 1000


_F = TypeVar("_F", bound=Callable[..., Any])


def _as_cache_error(method: _F) -> _F:
    """A RedisTier method whose client errors (server down, refused, timed out) raise CacheError."""
    @functools.wraps(method)
    def wrapper(self: RedisTier, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except EmbedOptError:
            raise
        except Exception as exc:
            raise self._failed(exc) from exc
    return cast(_F, wrapper)


def _check_password(url: str) -> None:
    """Refuse a URL whose userinfo holds ``/``, ``?`` or ``#``: URL parsers (redis-py's too) end the host part
    there, so the password would be cut and its pieces taken for a host, a database or a fragment."""
    _, sep, rest = url.partition("://")
    if sep and "@" in rest and any(c in rest[:rest.rfind("@")] for c in "/?#"):
        raise ConfigError(f"the user or password in the Redis URL {redact_url(url)!r} holds '/', '?' or '#', which "
                          "end a URL's host part: percent-encode it (urllib.parse.quote(password, safe='')), or "
                          "pass password=... as an option")


class RedisTier:
    """Vectors in Redis under ``{prefix}embedopt:v1:{fingerprint}:{sha256}``, with TTL.

    Lookups are MGETs and writes are pipelined SETs with expiry, in chunks of 1,000 keys. Connections are made
    on first use (constructing a tier never touches the network). Timeouts are short on purpose: a slow or
    dead Redis must cost an embedding request milliseconds, not seconds; :class:`TieredCache` then skips it.

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://`` for TLS (``?ssl_cert_reqs=none`` and the
            other redis-py URL options work). The password never appears in a repr or a log line.
        prefix: prepended to every key, to share one Redis between applications or tenants. Any characters,
            glob characters included (``app[1]:``, ``tenant-*:``): scans match them literally.
        ttl: default lifetime in seconds of entries written without one (``None``: no expiry).
        timeout: socket connect and read timeout in seconds.
        client: an existing ``redis.Redis`` to use instead of ``url`` (sync calls only, unless ``async_client``).
        async_client: an existing ``redis.asyncio.Redis``.
        **options: further keyword arguments for ``redis.Redis.from_url`` (``ssl_ca_certs``, ``username``, ...).
    """

    name = "redis"

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "", ttl: float | None = None,
                 timeout: float = 0.5, client: Any = None, async_client: Any = None, **options: Any) -> None:
        require("redis", extra="redis", feature="RedisTier")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"Redis URL must start with redis://, rediss:// or unix://, got {redact_url(url)!r}")
        _check_password(url)
        register_url(url)  # the password never shows in a log record, whichever library logs it
        register(options.get("password"))
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"ttl must be > 0 seconds or None, got {ttl}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        self._url = url
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = timeout
        self._options = options
        self._client = client
        self._fixed_async = async_client
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self.counters = TierCounters()

    @property
    def url(self) -> str:
        """The URL with its password redacted."""
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"RedisTier(url={self.url!r}, prefix={self.prefix!r}, ttl={self.ttl})"

    # -------------------------------------------------------------------------------------------- clients
    def _kwargs(self) -> dict[str, Any]:
        return {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout, **self._options}

    @property
    def client(self) -> Any:
        """The sync ``redis.Redis`` (made on first use; one retry on a dropped connection, then fail fast)."""
        if self._client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self._client = redis.Redis.from_url(self._url, retry=Retry(NoBackoff(), 1), **self._kwargs())
        return self._client

    def _aclient(self) -> Any:
        """An asyncio client for the running event loop (a client is bound to the loop that first used it)."""
        if self._fixed_async is not None:
            return self._fixed_async
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            import redis.asyncio as aredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = aredis.Redis.from_url(self._url, retry=Retry(NoBackoff(), 1), **self._kwargs())
            self._async[loop] = client
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the asyncio client of the running loop (clients of loops already closed are dropped)."""
        client = self._async.pop(asyncio.get_running_loop(), None)
        self._async.clear()
        if client is not None:
            await client.aclose()

    def _failed(self, exc: Exception) -> CacheError:
        self.counters.error()
        detail = scrub(f"{type(exc).__name__}: {exc}", *secrets_of(self._url), self._options.get("password"))
        return CacheError(f"Redis cache at {self.url} failed: {detail}. Is the server running and the URL (host, "
                          "port, password, TLS) right?", tier=self.name)

    # ---------------------------------------------------------------------------------------------- codec
    def _decode(self, keys: Sequence[str], values: Sequence[bytes | None]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        corrupt = nbytes = 0
        for key, value in zip(keys, values, strict=True):
            if value is None:
                out.append(None)
                continue
            try:
                vec = decode_vector(value, key=key)
            except CorruptEntry:
                corrupt += 1
                out.append(None)
                continue
            nbytes += vec.nbytes
            out.append(vec)
        hits = sum(v is not None for v in out)
        self.counters.read(hits, len(keys) - hits, nbytes, corrupt)
        return out

    def _encode(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None) -> tuple[list[Any], int | None]:
        ttl = self.ttl if ttl is None else ttl
        px = max(1, int(ttl * 1000)) if ttl is not None else None
        return [(self.prefix + k, encode_vector(v, key=k)) for k, v in items], px

    # ------------------------------------------------------------------------------------------ CacheTier
    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        if not keys:
            return []
        full = [self.prefix + k for k in keys]
        try:
            values: list[bytes | None] = []
            for start in range(0, len(full), _CHUNK):
                values.extend(self.client.mget(full[start:start + _CHUNK]))
        except Exception as exc:
            raise self._failed(exc) from exc
        return self._decode(keys, values)

    def set_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None:
        if not items:
            return
        rows, px = self._encode(items, ttl)
        try:
            for start in range(0, len(rows), _CHUNK):
                pipe = self.client.pipeline(transaction=False)
                for key, value in rows[start:start + _CHUNK]:
                    pipe.set(key, value, px=px)
                pipe.execute()
        except Exception as exc:
            raise self._failed(exc) from exc
        self.counters.wrote(sum(len(v) for _, v in rows))

    @_as_cache_error
    def delete(self, keys: Sequence[str]) -> int:
        full = [self.prefix + k for k in keys]
        removed = 0
        for start in range(0, len(full), _CHUNK):
            removed += int(self.client.delete(*full[start:start + _CHUNK])) if full[start:start + _CHUNK] else 0
        return removed

    def stats(self) -> dict[str, int]:
        return self.counters.as_dict()

    async def aget_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        if not keys:
            return []
        full = [self.prefix + k for k in keys]
        client = self._aclient()
        try:
            values: list[bytes | None] = []
            for start in range(0, len(full), _CHUNK):
                values.extend(await client.mget(full[start:start + _CHUNK]))
        except Exception as exc:
            raise self._failed(exc) from exc
        return self._decode(keys, values)

    async def aset_many(self, items: Sequence[tuple[str, np.ndarray]], ttl: float | None = None) -> None:
        if not items:
            return
        rows, px = self._encode(items, ttl)
        client = self._aclient()
        try:
            for start in range(0, len(rows), _CHUNK):
                async with client.pipeline(transaction=False) as pipe:
                    for key, value in rows[start:start + _CHUNK]:
                        pipe.set(key, value, px=px)
                    await pipe.execute()
        except Exception as exc:
            raise self._failed(exc) from exc
        self.counters.wrote(sum(len(v) for _, v in rows))

    # ----------------------------------------------------------------------------------------- maintenance
    def _scan(self, fingerprint: str | None) -> Any:
        pattern = glob_escape(self.prefix + KEY_PREFIX + (fingerprint or "")) + "*"
        return self.client.scan_iter(match=pattern, count=1000)

    @_as_cache_error
    def clear(self, fingerprint: str | None = None) -> int:
        """Delete this tier's entries (all, or those whose fingerprint id starts with ``fingerprint``)."""
        removed = 0
        batch: list[bytes] = []
        for key in self._scan(fingerprint):
            batch.append(key)
            if len(batch) >= _CHUNK:
                removed += int(self.client.unlink(*batch))
                batch = []
        if batch:
            removed += int(self.client.unlink(*batch))
        return removed

    @_as_cache_error
    def usage_by_fingerprint(self) -> dict[str, int]:
        """Entries per fingerprint id under this tier's prefix (a SCAN: for reports, not hot paths)."""
        start = len(self.prefix)
        return dict(Counter(key_fingerprint(k.decode()[start:]) for k in self._scan(None)))

    @_as_cache_error
    def usage(self) -> dict[str, int]:
        """Entries under this tier's prefix and their value bytes (a SCAN: use it for reports, not hot paths)."""
        entries = size = 0
        batch: list[bytes] = []

        def flush() -> int:
            pipe = self.client.pipeline(transaction=False)
            for k in batch:
                pipe.strlen(k)
            return sum(int(n) for n in pipe.execute())

        for key in self._scan(None):
            batch.append(key)
            entries += 1
            if len(batch) >= _CHUNK:
                size += flush()
                batch = []
        if batch:
            size += flush()
        return {"entries": entries, "bytes": size}


def glob_escape(text: str) -> str:
    """``text`` as a Redis MATCH pattern that matches only itself (``*``, ``?``, ``[``, ``]``, ``\\`` escaped)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _build(part: str, ttl: float | None) -> RedisTier:
    return RedisTier(part, ttl=ttl)


SPEC = TierEntry(schemes=("redis", "rediss", "unix"), build=_build,
                 summary="a Redis shared by processes and machines (rediss:// for TLS)",
                 example="redis://localhost:6379/0")
