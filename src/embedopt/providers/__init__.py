"""Providers: where vectors come from. Each knows its wire format and nothing else.

Each provider module declares how a spec string names it (``SPEC``, a :class:`ProviderEntry`); build providers
from spec strings with :func:`embedopt.specs.load_provider`. The modules for sentence-transformers and model2vec
import their libraries only when a provider is made, so ``import embedopt`` stays light (numpy only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    BaseProvider,
    Embedded,
    FunctionProvider,
    Provider,
    ProviderEntry,
    ProviderInfo,
    ProviderKind,
    estimate_tokens,
)

if TYPE_CHECKING:
    from .openai import OpenAIProvider
    from .sentence_transformers import SentenceTransformerProvider
    from .static import StaticProvider
    from .voyage import VoyageProvider

__all__ = [
    "BaseProvider",
    "Embedded",
    "FunctionProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderEntry",
    "ProviderInfo",
    "ProviderKind",
    "SentenceTransformerProvider",
    "StaticProvider",
    "VoyageProvider",
    "estimate_tokens",
]

_LAZY = {"OpenAIProvider": ".openai", "SentenceTransformerProvider": ".sentence_transformers",
         "StaticProvider": ".static", "VoyageProvider": ".voyage"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
