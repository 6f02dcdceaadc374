"""``EmbedOptEmbedding``: LlamaIndex's ``BaseEmbedding`` on embedopt's ``Embedder``."""

from __future__ import annotations

from typing import Any, Literal

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field, PrivateAttr, SecretStr, model_validator

from embedopt import Embedder

__all__ = ["EmbedOptEmbedding"]

class EmbedOptEmbedding(BaseEmbedding):
    """Embeddings through embedopt, for ``Settings.embed_model`` or ``VectorStoreIndex(embed_model=...)``.

    Unlike LlamaIndex's ``embeddings_cache`` (keyed on the text alone), embedopt's cache keys on the model's
    fingerprint and the input type: a query and a document of the same text, or two models, never share a
    vector. Async batches go to the core as one call per ``embed_batch_size`` batch, not one per text.
    """

    model_name: str = Field(default="sentence-transformers/all-MiniLM-L6-v2",
                            description="A provider spec: a sentence-transformers hub id or folder, 'minilm', "
                                        "'static:distill', 'static:FOLDER', 'openai:MODEL' or 'voyage:MODEL'.")
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False,
                                      description="API key for openai:/voyage: models; when None the provider "
                                                  "reads OPENAI_API_KEY / VOYAGE_API_KEY. Never logged or emitted.")
    base_url: str | None = Field(default=None, description="Another endpoint for an API model.")
    cache: str | None = Field(default="memory", description="Cache tiers, fastest first ('memory,sqlite', "
                                                             "'memory,redis://host:6379/0,sqlite'), or None.")
    dim: int | None = Field(default=None, description="Matryoshka dimension of the vectors (default: native).")
    precision: Literal["float32", "float16", "int8"] = Field(
        default="float32", description="Precision of the values returned; int8 needs calibration_path.")
    calibration_path: str | None = Field(default=None, description="An int8 calibration file.")
    normalize: bool = Field(default=True, description="Unit-length vectors.")
    model_kwargs: dict[str, Any] = Field(default_factory=dict,
                                         description="Passed to the provider (device, batch_size, timeout, ...).")
    embedder: Embedder | None = Field(default=None, exclude=True,
                                      description="A ready core Embedder (over a Router, say); overrides the rest.")

    embed_batch_size: int = Field(default=100, gt=0, le=2048,
                                  description="Texts per call to the core (which sorts and batches them again "
                                              "within the model's own limits).")

    _embedder: Embedder = PrivateAttr()

    @classmethod
    def class_name(cls) -> str:
        return "EmbedOptEmbedding"

    @model_validator(mode="after")
    def _build(self) -> EmbedOptEmbedding:
        if self.embedder is not None:
            self._embedder = self.embedder
            return self
        self._embedder = Embedder.from_spec(
            self.model_name, api_key=self.api_key.get_secret_value() if self.api_key is not None else None,
            base_url=self.base_url, provider_options=self.model_kwargs, calibration_path=self.calibration_path,
            cache=self.cache, dim=self.dim, precision=self.precision, normalize=self.normalize, show_progress=False)
        return self

    @property
    def core(self) -> Embedder:
        """The embedopt ``Embedder`` underneath (stats, ledger, fingerprints, cache)."""
        return self._embedder

    def to_payload(self) -> dict[str, Any]:
        return {**super().to_payload(), "fingerprint": self._embedder.fingerprint("document").id,
                "dim": self._embedder.dim}

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embedder.embed_query(query).astype("float64").tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._embedder.aembed_query(query)).astype("float64").tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embedder.embed_documents(texts).astype("float64").tolist() if texts else []

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        return (await self._embedder.aembed_documents(texts)).astype("float64").tolist()
