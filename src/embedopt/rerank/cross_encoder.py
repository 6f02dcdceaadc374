"""A sentence-transformers CrossEncoder as the second stage: any hub id or folder, batched and length-sorted."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._extras import require
from ..errors import ConfigError, ModelLoadError
from ..providers._local import model_lock, packaged_hint, resolve_model
from .base import RerankResult, check_rank_args

__all__ = ["CrossEncoderReranker"]


class CrossEncoderReranker:
    """Rerank with a cross-encoder (``cross-encoder/ms-marco-MiniLM-L6-v2``, ``BAAI/bge-reranker-base``, a folder).

    sentence-transformers' ``predict`` sorts the pairs by length before batching and restores the order; pairs
    longer than ``max_length`` tokens are truncated. No trained cross-encoder ships in a package, so offline this
    needs a folder: ``embedopt train-reranker`` (``make reranker``) trains one from the packaged MiniLM weights.

    Args:
        model: a hub id, a folder, or a loaded ``sentence_transformers.CrossEncoder``.
        max_length: tokens per (query, document) pair; default the model's own limit.
        batch_size: pairs per forward pass.
        device: ``cpu``, ``cuda``, ...; ``None`` lets sentence-transformers choose.
    """

    def __init__(self, model: Any, *, max_length: int | None = None, batch_size: int = 32,
                 device: str | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        st = require("sentence_transformers", extra="local", feature="CrossEncoderReranker",
                     package="sentence-transformers")
        if isinstance(model, st.CrossEncoder):
            self._model = model
            self.name = str(getattr(model.model_card_data, "model_id", None) or type(model).__name__)
        elif isinstance(model, (str, os.PathLike)):
            resolved = resolve_model(model)
            self.name = resolved.name
            try:
                self._model = st.CrossEncoder(resolved.location, device=device, max_length=max_length)
            except Exception as exc:
                raise ModelLoadError(
                    f"could not load cross-encoder {os.fspath(model)!r}: {type(exc).__name__}: {exc}. Pass a local "
                    "folder (offline, `embedopt train-reranker` makes one) or a hub id this machine can fetch."
                    + packaged_hint(os.fspath(model))) from exc
        else:
            raise ConfigError(f"model must be a hub id, a folder or a CrossEncoder, got {type(model).__name__}")
        if max_length is not None:
            self._model.max_seq_length = max_length
        self.batch_size = batch_size
        self._lock = model_lock(self._model)

    @property
    def max_length(self) -> int | None:
        return getattr(self._model, "max_seq_length", None)

    def __repr__(self) -> str:
        return f"CrossEncoderReranker({self.name!r}, max_length={self.max_length}, batch_size={self.batch_size})"

    def scores(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """The raw score of each (query, document) pair, in the documents' order."""
        query, docs, _ = check_rank_args(query, documents, None)
        if not docs:
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            out = self._model.predict([(query, d) for d in docs], batch_size=self.batch_size,
                                      show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32).reshape(len(docs))

    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankResult]:
        query, docs, top_n = check_rank_args(query, documents, top_n)
        s = self.scores(query, docs)
        order = np.argsort(-s, kind="stable")[:top_n]
        return [RerankResult(int(i), float(s[i])) for i in order]

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankResult]:
        return await asyncio.to_thread(self.rank, query, documents, top_n)
