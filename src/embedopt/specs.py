"""One registry of spec strings: which provider and model a model spec names, which tiers a cache spec names.

Model specs (``embedopt info -m SPEC``, ``Embedder.from_spec(SPEC)``, the adapters' ``model``)::

    minilm, default          all-MiniLM-L6-v2 (the packaged copy when installed)
    st:NAME_OR_FOLDER        any sentence-transformers model
    static:FOLDER_OR_ID      a model2vec model; static:distill[:SOURCE] distils one once and caches it
    openai:MODEL             OpenAI, or an OpenAI-compatible server with base_url=     key: $OPENAI_API_KEY
    voyage:MODEL             Voyage AI                                                key: $VOYAGE_API_KEY
    a folder                 claimed by the provider whose files it holds, else sentence-transformers

Cache specs are comma-separated tiers, fastest first: ``memory[:SIZE]``, ``sqlite[:PATH]``, ``redis://...``,
``rediss://...``, ``unix://...``; ``default`` is ``memory,sqlite``.

Each provider and tier declares its own entry (``SPEC`` in its module); this module finds them, so a new
provider is one new module (or an ``embedopt.providers`` entry point in another package). Parsing never builds
anything: :func:`parse_model` and :func:`parse_cache` only read the text (and look at a folder's files), so a
typo fails before any model loads and ``static:distill`` distils only when a provider is built. Options are
checked against what the provider accepts, and an unknown one is refused with the list of valid ones.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import pkgutil
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from . import cache as _cache_package
from . import providers as _provider_package
from .cache.base import CacheTier, TierEntry
from .cache.tiered import TieredCache
from .errors import ConfigError
from .providers.base import Provider, ProviderEntry

__all__ = [
    "CacheSpec",
    "ModelSpec",
    "cache_entries",
    "load_provider",
    "local_model",
    "open_cache",
    "option_names",
    "parse_cache",
    "parse_model",
    "provider_entries",
    "shared_provider",
]

#: Third-party providers register a :class:`~embedopt.providers.ProviderEntry` under this entry-point group.
ENTRY_POINT_GROUP = "embedopt.providers"


def _declared(package: Any, kind: type) -> list[Any]:
    """The ``SPEC`` of every public module of ``package`` (modules import their heavy libraries lazily)."""
    found = []
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("_"):
            continue
        spec = getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "SPEC", None)
        if isinstance(spec, kind):
            found.append(spec)
    return found


@functools.cache
def provider_entries() -> dict[str, ProviderEntry]:
    """Every provider a spec can name, by prefix: embedopt's own and those of installed plugins."""
    entries = {e.prefix: e for e in _declared(_provider_package, ProviderEntry)}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        entry = point.load()
        if not isinstance(entry, ProviderEntry):
            raise ConfigError(f"entry point {point.name!r} in {ENTRY_POINT_GROUP} is not a ProviderEntry")
        entries.setdefault(entry.prefix, entry)
    return entries


@functools.cache
def cache_entries() -> dict[str, TierEntry]:
    """Every cache tier a spec can name, by scheme."""
    return {scheme: e for e in _declared(_cache_package, TierEntry) for scheme in e.schemes}


def _prefixes() -> str:
    entries = provider_entries()
    aliases = [a for e in entries.values() for a in e.aliases]
    return ", ".join([f"{p}:" for p in entries] + aliases + ["a folder"])


# --------------------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: the provider entry, and what it is handed (a hub id, a folder, an API model)."""

    text: str
    entry: ProviderEntry
    name: str

    @property
    def prefix(self) -> str:
        return self.entry.prefix

    @property
    def key_env(self) -> str | None:
        """The environment variable the provider reads its API key from (``None``: it takes no key)."""
        return self.entry.key_env

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Refuse options the provider does not take, naming the ones it does."""
        valid = option_names(self.entry)
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                              f"for {self.prefix}: models; valid options: {', '.join(valid)}")


def option_names(entry: ProviderEntry) -> list[str]:
    """The keyword options ``entry``'s provider accepts (its constructor's parameters after the model)."""
    params = list(inspect.signature(entry.options).parameters.values())
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [p.name for p in named[1:]]


def parse_model(spec: str | os.PathLike[str]) -> ModelSpec:
    """Read a model spec without building anything (see the module docstring for the forms)."""
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"a model spec is a string such as 'minilm' or 'openai:text-embedding-3-small', "
                          f"got {type(spec).__name__}")
    text = os.fspath(spec).strip()
    if not text:
        raise ConfigError(f"the model spec is empty; use one of: {_prefixes()}")
    entries = provider_entries()
    for entry in entries.values():
        if text in entry.aliases:
            return ModelSpec(text, entry, entry.aliases[text])
    prefix, colon, rest = text.partition(":")
    if colon and prefix in entries and not os.path.exists(text):
        if not rest.strip():
            raise ConfigError(f"{text!r} names no model after the colon; for example {entries[prefix].example}")
        return ModelSpec(text, entries[prefix], rest.strip())
    if ":" in text.split("/")[0] and not os.path.exists(text):
        raise ConfigError(f"unknown provider prefix {prefix + ':'!r} in {text!r}; use one of: {_prefixes()}")
    for entry in entries.values():
        if entry.claims is not None and entry.claims(text):
            return ModelSpec(text, entry, text)
    fallback = next(e for e in entries.values() if e.fallback)
    return ModelSpec(text, fallback, text)


def load_provider(spec: str | os.PathLike[str] | ModelSpec = "minilm", **options: Any) -> Provider:
    """Build the provider a spec names; ``options`` go to it (``device``, ``api_key``, ``base_url``, ...)."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_model(spec)
    parsed.check_options(options)
    return parsed.entry.build(parsed.name, **options)


def local_model(spec: str | os.PathLike[str]) -> tuple[str, str]:
    """A local model spec's provider prefix (``st``, ``static``, ...) and the folder or hub id to load, for tools
    that load the weights themselves; ``static:distill`` distils (once, cached) here."""
    parsed = parse_model(spec)
    if parsed.entry.locate is None:
        raise ConfigError(f"{parsed.text!r} is not a model with local weights; use st:..., static:... or a folder")
    return parsed.prefix, parsed.entry.locate(parsed.name)


_SHARED: dict[tuple[str, str, int | None, str], Provider] = {}
_SHARED_LOCK = threading.Lock()


def shared_provider(spec: str | os.PathLike[str] | ModelSpec, **options: Any) -> Provider:
    """:func:`load_provider`, but a provider that loads weights into this process is loaded once per spec and
    options and shared (a folder rewritten in place, a model trained again into it, is loaded anew)."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_model(spec)
    if not parsed.entry.shared:
        return load_provider(parsed, **options)
    parsed.check_options(options)
    stamp = os.stat(parsed.name).st_mtime_ns if os.path.isdir(parsed.name) else None
    key = (parsed.prefix, parsed.name, stamp, repr(sorted(options.items())))
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = parsed.entry.build(parsed.name, **options)
        return _SHARED[key]


# ---------------------------------------------------------------------------------------------------- caches
@dataclass(frozen=True)
class CacheSpec:
    """One tier of a parsed cache spec."""

    text: str
    entry: TierEntry

    def build(self, ttl: float | None = None) -> CacheTier:
        return self.entry.build(self.text, ttl)


_PLAIN_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,30}")


def _scheme(part: str) -> str:
    return part.split(":", 1)[0].strip().lower()


def parse_cache(spec: str) -> list[CacheSpec]:
    """Read a cache spec without connecting to anything; an unknown tier is refused without echoing the spec
    (it may hold a password)."""
    if not isinstance(spec, str):
        raise ConfigError(f"a cache spec is a string such as 'memory,sqlite', got {type(spec).__name__}")
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if parts == ["default"]:
        parts = ["memory", "sqlite"]
    entries = cache_entries()
    examples = ", ".join(dict.fromkeys(e.example for e in entries.values()))
    if not parts:
        raise ConfigError(f"empty cache spec; use comma-separated tiers, fastest first, such as {examples}")
    out = []
    for part in parts:
        entry = entries.get(_scheme(part))
        if entry is None:
            scheme = _scheme(part)
            # a comma in a password splits the spec, and its second half comes here: never echo such a piece
            url_like = part.strip().lower().startswith(scheme + "://")
            shown = repr(scheme) if _PLAIN_SCHEME.fullmatch(scheme) and ("@" not in part or url_like) else \
                "(not shown: it may hold a password; a ',' in a password must be percent-encoded as %2C)"
            raise ConfigError(f"unknown cache tier {shown}; use tiers such as {examples} "
                              f"(schemes: {', '.join(entries)})")
        out.append(CacheSpec(part, entry))
    return out


def open_cache(spec: str, *, ttl: float | None = None) -> TieredCache:
    """The tiers of a cache spec, fastest first, as one :class:`~embedopt.cache.TieredCache`. ``ttl`` is the
    persistent tiers' default lifetime in seconds. Example: ``open_cache("memory,redis://localhost:6379/0,sqlite")``."""
    return TieredCache([part.build(ttl) for part in parse_cache(spec)])
