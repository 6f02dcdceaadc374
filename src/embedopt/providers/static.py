"""Static (model2vec) models: a token-embedding table and a mean, hundreds of times faster than a transformer."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._extras import require
from ..errors import ConfigError, ModelLoadError
from ..fingerprint import InputType
from ._distill import cached_distill, distill
from ._local import DEFAULT_MODEL, SharedModelLock, digest_bytes, model_lock, tokenizer_bytes
from .base import BaseProvider, ProviderEntry, ProviderInfo

__all__ = ["SPEC", "StaticProvider", "cached_distill", "distill", "is_model2vec_folder", "static_location"]

if TYPE_CHECKING:
    from model2vec import StaticModel


class StaticProvider(SharedModelLock, BaseProvider):
    """Embed with a model2vec ``StaticModel``.

    Args:
        model: a folder written by ``embedopt distill`` (or ``StaticModel.save_pretrained``), a hub id such as
            ``minishlab/potion-base-8M`` where the hub is reachable, or a loaded ``StaticModel``.
        max_length: truncate inputs to this many tokens (model2vec's default is 512).
        batch_size: inner batch size handed to ``encode``.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | StaticModel,
        *,
        max_length: int | None = 512,
        batch_size: int = 1024,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        m2v = require("model2vec", extra="static", feature="StaticProvider")
        if not isinstance(model, (str, os.PathLike)):
            if not isinstance(model, m2v.StaticModel):
                raise ConfigError(f"model must be a folder, a hub id or a StaticModel, got {type(model).__name__}")
            self._model = model
            name = getattr(model, "base_model_name", None) or "static-model"
        else:
            spec = os.fspath(model)
            path = Path(spec).expanduser()
            name = path.resolve().name if path.is_dir() else spec
            try:
                self._model = m2v.StaticModel.from_pretrained(str(path) if path.is_dir() else spec)
            except Exception as exc:
                raise ModelLoadError(
                    f"could not load static model {spec!r}: {type(exc).__name__}: {exc}. Pass a folder made by "
                    "`embedopt distill` (offline) or a model2vec hub id on a machine that reaches the hub."
                ) from exc
        self.max_length = max_length
        self.batch_size = batch_size
        emb = np.ascontiguousarray(self._model.embedding)
        self._lock = model_lock(self._model)
        self._info = ProviderInfo(
            provider="model2vec",
            model=str(name),
            revision=digest_bytes([emb.data.cast("B"), tokenizer_bytes(self._model.tokenizer),
                                   repr(sorted(self._model.config.items())).encode()]),
            dim=int(self._model.dim),
            kind="self_hosted",
            max_batch=max(4096, batch_size),
            max_tokens=max_length,
        )

    @property
    def info(self) -> ProviderInfo:
        return self._info

    @property
    def model(self) -> StaticModel:
        return self._model

    def _embed(self, texts: list[str], input_type: InputType) -> np.ndarray:
        # One call at a time: the Rust tokenizer refuses concurrent use from threads ("Already borrowed").
        with self._lock:
            out = self._model.encode(texts, show_progress_bar=False, max_length=self.max_length,
                                     batch_size=self.batch_size, use_multiprocessing=False)
        return np.asarray(out, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        with self._lock:
            encoded = self._model.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(enc.ids) for enc in encoded]


def static_location(name: str) -> str:
    """What ``static:NAME`` loads: a folder or a hub id as given; ``distill`` (or ``distill:SOURCE``) the static
    model distilled from all-MiniLM-L6-v2 (or SOURCE), distilling it on first use (about 90 s) and caching it."""
    if name == "distill" or name.startswith("distill:"):
        return str(cached_distill(name[len("distill:"):] or DEFAULT_MODEL))
    return name


def is_model2vec_folder(path: str) -> bool:
    try:
        with open(os.path.join(path, "config.json")) as f:
            return bool(json.load(f).get("model_type") == "model2vec")
    except (OSError, ValueError, AttributeError):
        return False


def _build(name: str, **options: object) -> StaticProvider:
    return StaticProvider(static_location(name), **options)  # type: ignore[arg-type]


SPEC = ProviderEntry(
    prefix="static", build=_build, options=StaticProvider, shared=True, claims=is_model2vec_folder,
    locate=static_location,
    summary="a model2vec static model: a folder, a hub id, or distill[:SOURCE] (distilled once, cached)",
    example="static:distill")
