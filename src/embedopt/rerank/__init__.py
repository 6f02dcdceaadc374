"""Second-stage rerankers: a sentence-transformers CrossEncoder, and Voyage's rerank API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Reranker, RerankResult

if TYPE_CHECKING:
    from .cross_encoder import CrossEncoderReranker
    from .voyage import VoyageReranker

__all__ = ["CrossEncoderReranker", "RerankResult", "Reranker", "VoyageReranker"]


def __getattr__(name: str) -> Any:  # each reranker imports its optional dependency only when asked for
    if name == "CrossEncoderReranker":
        from .cross_encoder import CrossEncoderReranker

        return CrossEncoderReranker
    if name == "VoyageReranker":
        from .voyage import VoyageReranker

        return VoyageReranker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
