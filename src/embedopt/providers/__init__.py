"""Providers: where vectors come from. Each knows its wire format and nothing else.

The modules for sentence-transformers and model2vec import their libraries only when a provider is made, so
``import embedopt`` stays light (numpy only).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError
from .base import BaseProvider, FunctionProvider, ProviderInfo, ProviderKind, estimate_tokens

if TYPE_CHECKING:
    from .sentence_transformers import SentenceTransformerProvider
    from .static import StaticProvider

__all__ = [
    "BaseProvider",
    "FunctionProvider",
    "ProviderInfo",
    "ProviderKind",
    "SentenceTransformerProvider",
    "StaticProvider",
    "estimate_tokens",
    "load_provider",
]

_LAZY = {"SentenceTransformerProvider": ".sentence_transformers", "StaticProvider": ".static"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_provider(spec: str | os.PathLike[str] = "minilm", **options: Any) -> BaseProvider:
    """Make a provider from a short spec, as the CLI does.

    * ``minilm`` / ``default``: all-MiniLM-L6-v2 (the packaged copy when installed).
    * ``st:NAME_OR_FOLDER``: any sentence-transformers model.
    * ``static:FOLDER_OR_HUB_ID``: a model2vec model; ``static:distill`` (or ``static:distill:SOURCE``) uses the
      static model distilled from MiniLM (or SOURCE), distilling and caching it on first use.
    * ``openai:MODEL`` / ``voyage:MODEL``: the API providers (``api_key``, ``base_url`` ... as options).
    * anything else: a folder holding a model2vec model is loaded as static, otherwise as sentence-transformers.
    """
    text = os.fspath(spec)
    if text.startswith("openai:"):
        from .openai import OpenAIProvider

        return OpenAIProvider(text[len("openai:"):], **options)
    if text.startswith("voyage:"):
        from .voyage import VoyageProvider

        return VoyageProvider(text[len("voyage:"):], **options)
    from .sentence_transformers import SentenceTransformerProvider
    from .static import StaticProvider

    kind, location = local_model(text)
    if kind == "static":
        return StaticProvider(location, **options)
    return SentenceTransformerProvider(location, **options)


def local_model(spec: str) -> tuple[Literal["sentence-transformers", "static"], str]:
    """What a local model spec names: its kind and what to load (a folder, a hub id or a packaged model's id).
    ``static:distill[:SOURCE]`` distils (once, cached) and names the cached folder."""
    from ._local import DEFAULT_MODEL

    if spec in ("minilm", "default"):
        return "sentence-transformers", DEFAULT_MODEL
    if spec.startswith("st:"):
        return "sentence-transformers", spec[3:]
    if spec.startswith("static:"):
        rest = spec[len("static:"):]
        if rest == "distill" or rest.startswith("distill:"):
            from ..distill import cached_distill

            return "static", str(cached_distill(rest[len("distill:"):] or DEFAULT_MODEL))
        return "static", rest
    if ":" in spec.split("/")[0] and not os.path.exists(spec):
        raise ConfigError(f"unknown provider prefix in {spec!r}; use st:, static:, openai:, voyage:, minilm or a folder")
    if _is_model2vec_folder(spec):
        return "static", spec
    return "sentence-transformers", spec


def _is_model2vec_folder(path: str) -> bool:
    import json

    try:
        with open(os.path.join(path, "config.json")) as f:
            return json.load(f).get("model_type") == "model2vec"
    except (OSError, ValueError, AttributeError):
        return False
