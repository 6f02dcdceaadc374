"""``EmbedOptEmbeddings``: LangChain's ``Embeddings`` on embedopt's ``Embedder``."""

from __future__ import annotations

import os
from typing import Any, Literal

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from embedopt import Embedder

__all__ = ["EmbedOptEmbeddings"]

_KEY_ENV = {"openai:": "OPENAI_API_KEY", "voyage:": "VOYAGE_API_KEY"}


class EmbedOptEmbeddings(BaseModel, Embeddings):
    """Embeddings through embedopt: cached under a fingerprint of the model (queries and documents apart),
    length-sorted batches, Matryoshka truncation, optional routing between API and self-hosted models.

    Swap it in for ``OpenAIEmbeddings`` / ``HuggingFaceEmbeddings`` / ``VoyageAIEmbeddings``:

    .. code-block:: python

        from langchain_embedopt import EmbedOptEmbeddings

        embeddings = EmbedOptEmbeddings()                                    # all-MiniLM-L6-v2, offline
        embeddings = EmbedOptEmbeddings(model="openai:text-embedding-3-small", cache="memory,sqlite")
        embeddings = EmbedOptEmbeddings(model="voyage:voyage-3", dim=512)
        embeddings = EmbedOptEmbeddings(embedder=Embedder(router))           # a core Embedder (a Router, ...)
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, populate_by_name=True,
                              protected_namespaces=())

    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    """A provider spec: a sentence-transformers hub id or folder, ``minilm``, ``static:distill``,
    ``static:FOLDER``, ``openai:MODEL`` or ``voyage:MODEL``."""
    api_key: SecretStr | None = Field(default=None, alias="api_key")
    """API key for ``openai:``/``voyage:`` models; read from ``OPENAI_API_KEY`` / ``VOYAGE_API_KEY`` when not given.
    Never shown in a repr, a log, or a cache key."""
    base_url: str | None = None
    """Another endpoint for an API model: an OpenAI-compatible server, a proxy."""
    cache: str | None = "memory"
    """Cache tiers, fastest first: ``"memory"``, ``"memory,sqlite"``, ``"memory,redis://host:6379/0,sqlite"``;
    ``None`` for none."""
    dim: int | None = None
    """Matryoshka dimension of the vectors returned (default: the model's)."""
    precision: Literal["float32", "float16", "int8"] = "float32"
    """Precision of the values returned (still Python floats): ``float16`` rounds them, ``int8`` returns the
    calibrated codes (needs ``calibration_path``). Binary codes belong in the store (Qdrant's binary
    quantization, embedopt's QuantizedIndex), not in a float vector."""
    calibration_path: str | None = None
    """An int8 calibration saved with ``Calibration.save``."""
    normalize: bool = True
    """Unit-length vectors (cosine similarity becomes a dot product)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Passed to the provider: ``device``, ``batch_size``, ``dimensions``, ``timeout``, ..."""
    show_progress: bool = False
    """A progress bar for long calls."""
    embedder: Embedder | None = Field(default=None, exclude=True)
    """A ready core ``Embedder`` (over a ``Router``, say); when given, the fields above other than this are unused."""

    _embedder: Embedder = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _key_from_env(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("api_key") is None:
            model = str(values.get("model") or "")
            for prefix, env in _KEY_ENV.items():
                if model.startswith(prefix) and os.environ.get(env):
                    values = {**values, "api_key": os.environ[env]}
        return values

    @model_validator(mode="after")
    def _build(self) -> EmbedOptEmbeddings:
        if self.embedder is not None:
            self._embedder = self.embedder
            return self
        self._embedder = Embedder.from_spec(
            self.model, api_key=self.api_key.get_secret_value() if self.api_key is not None else None,
            base_url=self.base_url, provider_options=self.model_kwargs, calibration_path=self.calibration_path,
            cache=self.cache, dim=self.dim, precision=self.precision, normalize=self.normalize,
            show_progress=self.show_progress)
        return self

    @property
    def core(self) -> Embedder:
        """The embedopt ``Embedder`` underneath (stats, ledger, fingerprints, cache)."""
        return self._embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self._embedder.embed_documents(texts).astype("float64").tolist()

    def embed_query(self, text: str) -> list[float]:
        return self._embedder.embed_query(text).astype("float64").tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return (await self._embedder.aembed_documents(texts)).astype("float64").tolist()

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._embedder.aembed_query(text)).astype("float64").tolist()
