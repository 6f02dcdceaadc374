"""The Embedder's settings as one pydantic model, declared once for every framework adapter.

``EmbedOptEmbeddings`` (LangChain) and ``EmbedOptEmbedding`` (LlamaIndex) both inherit :class:`EmbedderFields`,
so the two take the same fields, validate them the same way, read API keys from the environment the same way
(the variable the model spec's provider names: ``$OPENAI_API_KEY`` for ``openai:``), and build the Embedder the
same way (:meth:`embedopt.Embedder.from_spec`). Only pydantic is needed, which both frameworks bring.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from .codec import check_value_precision
from .embedder import Embedder
from .errors import ConfigError
from .providers._local import DEFAULT_MODEL
from .quantization import Precision
from .specs import parse_model

__all__ = ["EmbedderFields"]


class EmbedderFields(BaseModel):
    """What an adapter needs to build an :class:`~embedopt.Embedder`: a model spec and the Embedder's options,
    or a ready ``embedder`` (then nothing else of these)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True, protected_namespaces=())

    model_name: str = Field(
        default=DEFAULT_MODEL, validation_alias=AliasChoices("model_name", "model"),
        description="A model spec (`embedopt specs` lists them): a sentence-transformers hub id or folder, "
                    "'minilm', 'static:distill', 'static:FOLDER', 'openai:MODEL', 'voyage:MODEL'. Also "
                    "accepted as `model`.")
    api_key: SecretStr | None = Field(
        default=None, exclude=True, repr=False,
        description="API key for models behind an API; read from the provider's variable (OPENAI_API_KEY, "
                    "VOYAGE_API_KEY) when not given. Never shown in a repr, a log, a payload or a cache key.")
    base_url: str | None = Field(default=None, description="Another endpoint for an API model: an "
                                                            "OpenAI-compatible server, a proxy.")
    cache: str | None = Field(default="memory", description="Cache tiers, fastest first: 'memory', "
                                                            "'memory,sqlite', 'memory,redis://host:6379/0,sqlite'; "
                                                            "None for none.")
    dim: int | None = Field(default=None, description="Matryoshka dimension of the vectors (default: the "
                                                      "model's).")
    precision: Precision = Field(
        default="float32", description="Precision of the values returned (still Python floats): float16 rounds "
                                       "them, int8 returns the calibrated codes (needs calibration_path). Binary "
                                       "codes belong in a store, not in a float vector.")
    calibration_path: str | None = Field(default=None, description="An int8 calibration saved with "
                                                                   "Calibration.save.")
    normalize: bool = Field(default=True, description="Unit-length vectors (cosine becomes a dot product).")
    model_kwargs: dict[str, Any] = Field(default_factory=dict,
                                         description="Passed to the provider: device, batch_size, dimensions, "
                                                     "timeout, ... (checked against what it accepts).")
    show_progress: bool = Field(default=False, description="A progress bar for long calls.")
    embedder: Embedder | None = Field(default=None, exclude=True,
                                      description="A ready core Embedder (over a Router, say); then none of the "
                                                  "fields above may be given.")

    _embedder: Embedder = PrivateAttr()

    #: The field names (and aliases) that configure the Embedder, which ``embedder=`` excludes.
    EMBEDDER_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"model_name", "model", "api_key", "base_url", "cache", "dim", "precision", "calibration_path", "normalize",
         "model_kwargs", "show_progress"})

    @field_validator("precision")
    @classmethod
    def _value_precision(cls, value: str) -> str:
        return check_value_precision(value)

    @model_validator(mode="before")
    @classmethod
    def _embedder_alone_and_key_from_env(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        if values.get("embedder") is not None:
            both = sorted(set(values) & cls.EMBEDDER_FIELDS)
            if both:
                raise ConfigError(f"embedder= is a ready Embedder, so {', '.join(both)} would be ignored; pass "
                                  "either embedder= or the fields that build one, not both")
            return values
        if values.get("api_key") is None:
            spec = values.get("model_name", values.get("model", DEFAULT_MODEL))
            env = parse_model(spec).key_env if isinstance(spec, str) else None
            if env and os.environ.get(env):
                values = {**values, "api_key": os.environ[env]}
        return values

    @model_validator(mode="after")
    def _build(self) -> Any:
        if self.embedder is not None:
            self._embedder = self.embedder
            return self
        self._embedder = Embedder.from_spec(
            self.model_name, api_key=self.api_key.get_secret_value() if self.api_key is not None else None,
            base_url=self.base_url, provider_options=self.model_kwargs, calibration_path=self.calibration_path,
            cache=self.cache, dim=self.dim, precision=self.precision, normalize=self.normalize,
            show_progress=self.show_progress)
        return self

    @property
    def core(self) -> Embedder:
        """The embedopt ``Embedder`` underneath (stats, ledger, fingerprints, cache)."""
        return self._embedder
