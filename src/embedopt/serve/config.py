"""The gateway's configuration: a TOML file read with :mod:`tomllib`, checked up front, secrets never echoed.

Every section is optional; with no file at all :func:`default_config` serves MiniLM and the static model
distilled from it, with a memory+SQLite cache, on 127.0.0.1 with no keys (anonymous access on loopback only).

.. code-block:: toml

    [server]
    host = "127.0.0.1"
    port = 8080
    drain_seconds = 30            # SIGTERM: in-flight requests get this long to finish
    request_timeout_seconds = 30  # a request not answered by then gets 504
    allow_anonymous = false       # default: true only when no [[keys]] are configured

    [cache]
    spec = "memory,sqlite"        # embedopt.cache.open_cache spec; "none" for no cache

    [redis]                       # rate limits and budgets shared by every replica (else in memory)
    url_env = "EMBEDOPT_REDIS_URL"   # or url = "redis://127.0.0.1:6379/0"
    prefix = "embedopt:serve:"

    [models.minilm]
    spec = "minilm"
    price_per_1m_tokens = 0.0     # what tenants are charged (default: the provider's price)

    [models.prod]                 # a Router over routes of one embedding space
    policy = "prefer_self_hosted"
    routes = [{ spec = "st:BAAI/bge-small-en-v1.5" },
              { spec = "openai:...", base_url = "http://tei:8080/v1", api_key_env = "TEI_KEY" }]

    [rerankers.rerank]
    spec = "/models/my-cross-encoder"

    [limits]
    max_inputs = 2048
    max_tokens_per_input = 8192
    max_body_bytes = 8_388_608
    max_rerank_documents = 1000

    [batching]
    max_batch_tokens = 8192       # padded tokens per batch (texts x longest)
    max_batch_texts = 64
    max_wait_ms = 2
    max_queue_texts = 20000       # more pending texts than this: 429 with Retry-After
    workers = 2

    [tenants.team-a]
    requests_per_minute = 600
    tokens_per_minute = 1_000_000
    daily_usd = 5.0
    monthly_usd = 100.0
    models = ["minilm"]           # optional allow-list

    [[keys]]
    sha256 = "…"                  # sha256 hex of the key: `embedopt serve --hash-key`
    tenant = "team-a"
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    from .._extras import require

    tomllib = require("tomli", extra="serve", feature="reading a serve config on Python 3.10")

__all__ = [
    "BatchingConfig",
    "LimitsConfig",
    "ModelConfig",
    "RerankerConfig",
    "RouteConfig",
    "ServeConfig",
    "TenantConfig",
    "default_config",
    "hash_key",
    "load_config",
    "parse_config",
]

TokenMode = Literal["estimate", "tokenizer"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def hash_key(key: str) -> str:
    """The sha256 hex digest stored in the config for an API key (the key itself is never stored)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RouteConfig:
    spec: str
    name: str | None = None
    price_per_1m_tokens: float | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable holding the route's API key (keys never go in the file)."""
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """One served model name: a single provider spec, or a Router over ``routes`` of one embedding space."""

    name: str
    spec: str | None = None
    routes: tuple[RouteConfig, ...] = ()
    policy: str = "prefer_self_hosted"
    daily_usd: float | None = None
    """A Router's own cap on API spend (all tenants together)."""
    monthly_usd: float | None = None
    price_per_1m_tokens: float | None = None
    """What tenants are charged per million tokens the gateway computes for them (default: the provider's)."""
    tokens: TokenMode | None = None
    """How request tokens are counted: ``estimate`` (UTF-8 bytes / 3, no tokenizer: the default for self-hosted
    models) or ``tokenizer`` (the provider's own count: the default for API models)."""
    calibration_texts: str | None = None
    """A file of texts (one a line) to fit int8/uint8 ranges on; default: embedopt's built-in sample."""
    base_url: str | None = None
    api_key_env: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RerankerConfig:
    name: str
    spec: str
    price_per_1m_tokens: float = 0.0
    batch_size: int = 32
    max_length: int | None = None


@dataclass(frozen=True)
class TenantConfig:
    name: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None
    models: tuple[str, ...] | None = None
    """Model and reranker names this tenant may use (``None``: all)."""


@dataclass(frozen=True)
class LimitsConfig:
    max_inputs: int = 2048
    max_tokens_per_input: int = 8192
    max_body_bytes: int = 8 * 1024 * 1024
    max_rerank_documents: int = 1000


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_tokens: int = 8192
    max_batch_texts: int = 64
    max_wait_ms: float = 2.0
    max_queue_texts: int = 20000
    workers: int = 2


@dataclass(frozen=True)
class ServeConfig:
    models: tuple[ModelConfig, ...]
    rerankers: tuple[RerankerConfig, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8080
    cache: str | None = "memory,sqlite"
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "embedopt:serve:"
    keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    """sha256 hex of a key -> tenant name."""
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)
    allow_anonymous: bool | None = None
    drain_seconds: float = 30.0
    request_timeout_seconds: float = 30.0
    log_level: str = "info"
    access_log: bool = True
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    source: str = "<embedded default>"

    @property
    def anonymous(self) -> bool:
        """Whether requests without a key are served (as the tenant ``anonymous``, with no limits)."""
        return (not self.keys) if self.allow_anonymous is None else self.allow_anonymous

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


def default_config() -> ServeConfig:
    """MiniLM and the static model distilled from it, a memory+SQLite cache, loopback, no keys."""
    return ServeConfig(models=(ModelConfig("minilm", spec="minilm"), ModelConfig("static", spec="static:distill")))


def load_config(path: str | os.PathLike[str] | None) -> ServeConfig:
    """Read a TOML config (``None``: the embedded default)."""
    if path is None:
        return default_config()
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the serve config {os.fspath(path)!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the serve config {os.fspath(path)!r} is not valid TOML: {exc}") from None
    return parse_config(data, source=os.fspath(path))


# ------------------------------------------------------------------------------------------------- parsing
def _keys(table: Mapping[str, Any], where: str, valid: tuple[str, ...]) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(valid)}")


def _typed(table: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any = None,
           *, minimum: float | None = None) -> Any:
    if key not in table:
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"{where}.{key} must be {' or '.join(k.__name__ for k in kinds)}, got a bool")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds):
        raise ConfigError(f"{where}.{key} must be {' or '.join(k.__name__ for k in kinds)}, "
                          f"got {type(value).__name__}")
    if minimum is not None and value < minimum:  # type: ignore[operator]
        raise ConfigError(f"{where}.{key} must be >= {minimum}, got {value}")
    return value


def _name(name: str, where: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"{where} name {name!r} must be 1-128 letters, digits or ._:/- and start with a letter "
                          "or digit")
    return name


def _route(raw: Any, where: str) -> RouteConfig:
    if isinstance(raw, str):
        return RouteConfig(spec=raw)
    _keys(raw, where, ("spec", "name", "price_per_1m_tokens", "base_url", "api_key_env", "options"))
    spec = _typed(raw, "spec", where, str)
    if not spec:
        raise ConfigError(f"{where} needs spec = \"...\" (a provider spec such as 'minilm' or 'openai:MODEL')")
    return RouteConfig(spec=spec, name=_typed(raw, "name", where, str),
                       price_per_1m_tokens=_typed(raw, "price_per_1m_tokens", where, float, minimum=0),
                       base_url=_typed(raw, "base_url", where, str),
                       api_key_env=_typed(raw, "api_key_env", where, str),
                       options=dict(_typed(raw, "options", where, dict, {})))


def _model(name: str, raw: Any) -> ModelConfig:
    where = f"[models.{name}]"
    _keys(raw, where, ("spec", "routes", "policy", "daily_usd", "monthly_usd", "price_per_1m_tokens", "tokens",
                       "calibration_texts", "base_url", "api_key_env", "options"))
    spec = _typed(raw, "spec", where, str)
    routes_raw = _typed(raw, "routes", where, list, [])
    if bool(spec) == bool(routes_raw):
        raise ConfigError(f"{where} needs exactly one of spec = \"...\" or routes = [...]")
    tokens = _typed(raw, "tokens", where, str)
    if tokens not in (None, "estimate", "tokenizer"):
        raise ConfigError(f"{where}.tokens must be 'estimate' or 'tokenizer', got {tokens!r}")
    if routes_raw and ("base_url" in raw or "api_key_env" in raw):
        raise ConfigError(f"{where}: base_url and api_key_env belong to each route of a Router, not to the model")
    return ModelConfig(
        name=_name(name, "model"), spec=spec,
        routes=tuple(_route(r, f"{where}.routes[{i}]") for i, r in enumerate(routes_raw)),
        policy=_typed(raw, "policy", where, str, "prefer_self_hosted"),
        daily_usd=_typed(raw, "daily_usd", where, float, minimum=0),
        monthly_usd=_typed(raw, "monthly_usd", where, float, minimum=0),
        price_per_1m_tokens=_typed(raw, "price_per_1m_tokens", where, float, minimum=0),
        tokens=tokens,
        calibration_texts=_typed(raw, "calibration_texts", where, str),
        base_url=_typed(raw, "base_url", where, str),
        api_key_env=_typed(raw, "api_key_env", where, str),
        options=dict(_typed(raw, "options", where, dict, {})),
    )


def _reranker(name: str, raw: Any) -> RerankerConfig:
    where = f"[rerankers.{name}]"
    _keys(raw, where, ("spec", "price_per_1m_tokens", "batch_size", "max_length"))
    spec = _typed(raw, "spec", where, str)
    if not spec:
        raise ConfigError(f"{where} needs spec = \"...\" (a cross-encoder folder or hub id)")
    return RerankerConfig(name=_name(name, "reranker"), spec=spec,
                          price_per_1m_tokens=_typed(raw, "price_per_1m_tokens", where, float, 0.0, minimum=0),
                          batch_size=_typed(raw, "batch_size", where, int, 32, minimum=1),
                          max_length=_typed(raw, "max_length", where, int, minimum=1))


def _tenant(name: str, raw: Any) -> TenantConfig:
    where = f"[tenants.{name}]"
    _keys(raw, where, ("requests_per_minute", "tokens_per_minute", "daily_usd", "monthly_usd", "models"))
    models = _typed(raw, "models", where, list)
    if models is not None and not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where}.models must be a list of model names")
    return TenantConfig(
        name=_name(name, "tenant"),
        requests_per_minute=_typed(raw, "requests_per_minute", where, int, minimum=1),
        tokens_per_minute=_typed(raw, "tokens_per_minute", where, int, minimum=1),
        daily_usd=_typed(raw, "daily_usd", where, float, minimum=0),
        monthly_usd=_typed(raw, "monthly_usd", where, float, minimum=0),
        models=tuple(models) if models is not None else None)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_config(data: Mapping[str, Any], *, source: str = "<dict>") -> ServeConfig:
    """Check a parsed TOML document and build the config; every problem is a ConfigError naming the key."""
    _keys(data, "the serve config", ("server", "cache", "redis", "models", "rerankers", "limits", "batching",
                                     "tenants", "keys"))
    server = data.get("server", {})
    _keys(server, "[server]", ("host", "port", "drain_seconds", "request_timeout_seconds", "allow_anonymous",
                               "log_level", "access_log"))
    cache = data.get("cache", {})
    _keys(cache, "[cache]", ("spec",))
    cache_spec = _typed(cache, "spec", "[cache]", str, "memory,sqlite")
    redis = data.get("redis", {})
    _keys(redis, "[redis]", ("url", "url_env", "prefix"))
    redis_url = _typed(redis, "url", "[redis]", str)
    url_env = _typed(redis, "url_env", "[redis]", str)
    if redis_url and url_env:
        raise ConfigError("[redis] takes url or url_env, not both")
    if url_env:
        redis_url = os.environ.get(url_env)
        if not redis_url:
            raise ConfigError(f"[redis].url_env names {url_env!r}, which is not set in the environment")

    models_raw = data.get("models")
    models = (tuple(_model(n, m) for n, m in _table(models_raw, "[models]").items()) if models_raw is not None
              else default_config().models)
    if not models:
        raise ConfigError("[models] is empty: configure at least one model, e.g. [models.minilm] spec = \"minilm\"")
    rerankers = tuple(_reranker(n, r) for n, r in _table(data.get("rerankers", {}), "[rerankers]").items())
    clash = {m.name for m in models} & {r.name for r in rerankers}
    if clash:
        raise ConfigError(f"names {sorted(clash)} are used by both a model and a reranker; rename one")
    tenants = {n: _tenant(n, t) for n, t in _table(data.get("tenants", {}), "[tenants]").items()}
    served = {m.name for m in models} | {r.name for r in rerankers}
    for t in tenants.values():
        unknown = sorted(set(t.models or ()) - served)
        if unknown:
            raise ConfigError(f"[tenants.{t.name}].models names {unknown}, which are not configured; "
                              f"served: {sorted(served)}")

    keys: dict[str, str] = {}
    raw_keys = data.get("keys", [])
    if not isinstance(raw_keys, list):
        raise ConfigError("keys must be an array of tables: [[keys]] sha256 = \"...\" tenant = \"...\"")
    for i, k in enumerate(raw_keys):
        where = f"[[keys]] #{i}"
        _keys(k, where, ("sha256", "tenant"))
        digest = _typed(k, "sha256", where, str, "").lower()
        if not _SHA256.match(digest):
            raise ConfigError(f"{where}: sha256 must be the 64-hex-digit sha256 of the key (`embedopt serve "
                              "--hash-key` prints it); keys themselves are never stored in the config")
        tenant = _typed(k, "tenant", where, str)
        if tenant not in tenants:
            raise ConfigError(f"{where}: tenant {tenant!r} has no [tenants.{tenant}] table")
        if digest in keys:
            raise ConfigError(f"{where}: this key hash is listed twice")
        keys[digest] = tenant

    limits_raw = data.get("limits", {})
    _keys(limits_raw, "[limits]", ("max_inputs", "max_tokens_per_input", "max_body_bytes", "max_rerank_documents"))
    d = LimitsConfig()
    limits = LimitsConfig(
        max_inputs=_typed(limits_raw, "max_inputs", "[limits]", int, d.max_inputs, minimum=1),
        max_tokens_per_input=_typed(limits_raw, "max_tokens_per_input", "[limits]", int, d.max_tokens_per_input,
                                    minimum=1),
        max_body_bytes=_typed(limits_raw, "max_body_bytes", "[limits]", int, d.max_body_bytes, minimum=64),
        max_rerank_documents=_typed(limits_raw, "max_rerank_documents", "[limits]", int, d.max_rerank_documents,
                                    minimum=1))
    b_raw = data.get("batching", {})
    _keys(b_raw, "[batching]", ("max_batch_tokens", "max_batch_texts", "max_wait_ms", "max_queue_texts", "workers"))
    b = BatchingConfig()
    batching = BatchingConfig(
        max_batch_tokens=_typed(b_raw, "max_batch_tokens", "[batching]", int, b.max_batch_tokens, minimum=1),
        max_batch_texts=_typed(b_raw, "max_batch_texts", "[batching]", int, b.max_batch_texts, minimum=1),
        max_wait_ms=_typed(b_raw, "max_wait_ms", "[batching]", float, b.max_wait_ms, minimum=0),
        max_queue_texts=_typed(b_raw, "max_queue_texts", "[batching]", int, b.max_queue_texts, minimum=1),
        workers=_typed(b_raw, "workers", "[batching]", int, b.workers, minimum=1))

    log_level = _typed(server, "log_level", "[server]", str, "info").lower()
    if log_level not in ("critical", "error", "warning", "info", "debug"):
        raise ConfigError(f"[server].log_level must be critical, error, warning, info or debug, got {log_level!r}")
    cfg = ServeConfig(
        models=models, rerankers=rerankers,
        host=_typed(server, "host", "[server]", str, "127.0.0.1"),
        port=_typed(server, "port", "[server]", int, 8080, minimum=0),
        cache=None if cache_spec.strip().lower() == "none" else cache_spec,
        redis_url=redis_url, redis_prefix=_typed(redis, "prefix", "[redis]", str, "embedopt:serve:"),
        keys=keys, tenants=tenants,
        allow_anonymous=_typed(server, "allow_anonymous", "[server]", bool),
        drain_seconds=_typed(server, "drain_seconds", "[server]", float, 30.0, minimum=0),
        request_timeout_seconds=_typed(server, "request_timeout_seconds", "[server]", float, 30.0, minimum=0.001),
        log_level=log_level, access_log=_typed(server, "access_log", "[server]", bool, True),
        limits=limits, batching=batching, source=source)
    check_exposure(cfg)
    return cfg


def check_exposure(cfg: ServeConfig) -> None:
    """Refuse to serve anonymously on anything but loopback unless the config says so explicitly."""
    if cfg.port > 65535:
        raise ConfigError(f"port must be <= 65535, got {cfg.port}")
    if not cfg.keys and cfg.allow_anonymous is None and not _is_loopback(cfg.host):
        raise ConfigError(
            f"no [[keys]] are configured and host {cfg.host!r} is not loopback: anyone could use (and spend on) "
            "this gateway. Add [[keys]] (see `embedopt serve --hash-key`), or set [server] allow_anonymous = true")


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table of named entries, got {type(value).__name__}")
    return value
