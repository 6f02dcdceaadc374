"""Self-hosted sentence-transformers models: a folder, a packaged copy, or any hub id."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._extras import require
from ..catalog import default_prompts
from ..errors import ConfigError, MissingExtraError, ModelLoadError
from ..fingerprint import InputType
from ._local import (
    DEFAULT_MODEL,
    SharedModelLock,
    digest_bytes,
    model_lock,
    packaged_hint,
    resolve_model,
    tokenizer_bytes,
)
from .base import BaseProvider, ProviderEntry, ProviderInfo

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "openvino"]
_BACKENDS = ("torch", "onnx", "openvino")


class SentenceTransformerProvider(SharedModelLock, BaseProvider):
    """Embed with a sentence-transformers model on this machine.

    Args:
        model: a hub id (``sentence-transformers/all-MiniLM-L6-v2``), a folder, or a loaded
            ``SentenceTransformer``. Hub ids resolve to a packaged copy when one is installed.
        device: ``cpu``, ``cuda``, ``cuda:1``, ``mps``; ``None`` lets sentence-transformers choose.
        fp16: run in half precision; ``None`` means yes on CUDA, no elsewhere.
        query_prompt, document_prompt: text prepended per input type; ``None`` takes the model's own prompts,
            then the family's known prompts (E5's ``"query: "``/``"passage: "``), else none.
        backend: ``torch``; ``onnx`` and ``openvino`` go through sentence-transformers and need ``optimum``.
        batch_size: inner batch size handed to ``encode``.
        max_seq_length: truncate inputs to this many tokens (default: the model's own limit).
        trust_remote_code: allow custom model code (Jina v3, nomic); off by default.
        cache_folder: where a hub model is downloaded (sentence-transformers' and HuggingFaceEmbeddings'
            ``cache_folder``); default the hub's cache.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | SentenceTransformer = DEFAULT_MODEL,
        *,
        device: str | None = None,
        fp16: bool | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        backend: Backend = "torch",
        batch_size: int = 32,
        max_seq_length: int | None = None,
        trust_remote_code: bool = False,
        cache_folder: str | None = None,
    ) -> None:
        if backend not in _BACKENDS:
            raise ConfigError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        st = require("sentence_transformers", extra="local", feature="SentenceTransformerProvider",
                     package="sentence-transformers")
        if isinstance(model, (str, os.PathLike)):
            resolved = resolve_model(model)
            name = resolved.name
            self._model = _load(st, resolved.location, os.fspath(model), device=device, backend=backend,
                                trust_remote_code=trust_remote_code, cache_folder=cache_folder)
        elif isinstance(model, st.SentenceTransformer):
            self._model = model
            name = _name_of_loaded(model)
        else:
            raise ConfigError(f"model must be a hub id, a folder or a SentenceTransformer, got {type(model).__name__}")
        if max_seq_length is not None:
            self._model.max_seq_length = max_seq_length
        on_cuda = str(self._model.device).startswith("cuda")
        if fp16 is None:
            fp16 = on_cuda
        revision = self._weights_digest()  # before any cast: the revision names the weights, not the dtype
        if fp16:
            if not on_cuda:
                logger.warning("fp16 on %s is slow and imprecise; it is meant for CUDA", self._model.device)
            self._model.half()
        self._fp16 = fp16
        self.batch_size = batch_size
        prompts = default_prompts(name)
        own = getattr(self._model, "prompts", None) or {}
        for ours, theirs in (("query", ("query",)), ("document", ("document", "passage", "doc"))):
            for key in theirs:
                if own.get(key):
                    prompts[ours] = own[key]
                    break
        if query_prompt is not None:
            prompts["query"] = query_prompt
        if document_prompt is not None:
            prompts["document"] = document_prompt
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise ModelLoadError(f"model {name!r} does not report its embedding dimension")
        self._lock = model_lock(self._model)
        self._info = ProviderInfo(
            provider="sentence-transformers",
            model=name,
            revision=revision,
            dim=int(dim),
            kind="self_hosted",
            max_batch=max(256, batch_size),
            max_tokens=int(self._model.max_seq_length) if self._model.max_seq_length else None,
            prompts={k: v for k, v in prompts.items() if v},
        )

    @property
    def info(self) -> ProviderInfo:
        return self._info

    @property
    def model(self) -> SentenceTransformer:
        """The underlying ``SentenceTransformer`` (for callers that need more than embeddings)."""
        return self._model

    @property
    def device(self) -> str:
        return str(self._model.device)

    def _weights_digest(self) -> str:
        """Hash of every parameter and buffer, plus the module stack (pooling, max_seq_length, normalize)."""
        import torch

        chunks: list[bytes | memoryview] = [repr(self._model).encode(), f"len={self._model.max_seq_length}".encode()]
        for key, tensor in self._model.state_dict().items():
            chunks.append(key.encode())
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            chunks.append(memoryview(flat.view(torch.uint8).numpy()))
        tok = getattr(self._model, "tokenizer", None)
        backend_tok = getattr(tok, "backend_tokenizer", None)
        if backend_tok is not None:
            chunks.append(tokenizer_bytes(backend_tok))
        return digest_bytes(chunks)

    def _embed(self, texts: list[str], input_type: InputType) -> np.ndarray:
        prompt = self._info.prompt(input_type) or None
        # One call at a time: the Rust tokenizer refuses concurrent use from threads ("Already borrowed"), and
        # torch already spreads one batch over the cores.
        with self._lock:
            out = self._model.encode(
                texts,
                prompt=prompt,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        tokenizer = self._model.tokenizer
        with self._lock:
            encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]


def _name_of_loaded(model: Any) -> str:
    card = getattr(model, "model_card_data", None)
    for attr in ("base_model", "model_id", "model_name"):
        value = getattr(card, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def _load(st: Any, location: str, spec: str, *, device: str | None, backend: str,
          trust_remote_code: bool, cache_folder: str | None = None) -> SentenceTransformer:
    try:
        return st.SentenceTransformer(location, device=device, backend=backend, trust_remote_code=trust_remote_code,
                                      cache_folder=cache_folder)
    except ImportError as exc:  # optimum for onnx/openvino
        raise MissingExtraError("local", getattr(exc, "name", None) or "optimum",
                                f"the {backend} backend of sentence-transformers") from exc
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        where = "the hub is switched off (HF_HUB_OFFLINE)" if offline else "the hub could not provide it"
        raise ModelLoadError(
            f"could not load sentence-transformers model {spec!r}: {type(exc).__name__}: {exc}. "
            f"It is not a folder here and {where}: pass a local folder, or a hub id this machine can fetch."
            + packaged_hint(spec)
        ) from exc


SPEC = ProviderEntry(
    prefix="st", build=SentenceTransformerProvider, options=SentenceTransformerProvider, shared=True,
    locate=str,
    fallback=True, aliases={"minilm": DEFAULT_MODEL, "default": DEFAULT_MODEL},
    summary="any sentence-transformers model: a hub id (packaged copies are used offline) or a folder",
    example="st:sentence-transformers/all-MiniLM-L6-v2")
