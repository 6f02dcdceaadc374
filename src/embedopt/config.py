"""The Embedder's settings as one pydantic model, declared once for every framework adapter.

``EmbedOptEmbeddings`` (LangChain) and ``EmbedOptEmbedding`` (LlamaIndex) both inherit :class:`EmbedderFields`,
so the two take the same fields, validate them the same way, read API keys from the environment the same way
(the variable the model spec's provider names: ``$OPENAI_API_KEY`` for ``openai:``), and build the Embedder the
same way (:meth:`embedopt.Embedder.from_spec`). Only pydantic is needed, which both frameworks bring.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
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
from .embedder import Embedder, OnOverflow
from .errors import ConfigError
from .providers._local import DEFAULT_MODEL
from .providers.base import Provider
from .providers.wrapped import WrappedProvider, describe
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
    on_overflow: OnOverflow = Field(
        default="truncate", description="Texts over the model's token limit: cut by the model ('truncate'), or "
                                        "refused with an InputError naming them ('error').")
    encode_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="HuggingFaceEmbeddings' name for the encode options: "
                                          "normalize_embeddings (-> normalize), batch_size, show_progress_bar.")
    cache_folder: str | None = Field(default=None, description="Where a sentence-transformers model is downloaded "
                                                               "(HuggingFaceEmbeddings' cache_folder); the vector "
                                                               "cache is `cache`.")
    provider: Provider | None = Field(default=None, exclude=True,
                                      description="A ready provider instead of model_name (what wrap() builds "
                                                  "around another library's embeddings object).")
    embedder: Embedder | None = Field(default=None, exclude=True,
                                      description="A ready core Embedder (over a Router, say); then none of the "
                                                  "fields above may be given.")

    _embedder: Embedder = PrivateAttr()

    #: The field names (and aliases) that configure the Embedder, which ``embedder=`` excludes.
    EMBEDDER_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"model_name", "model", "api_key", "base_url", "cache", "dim", "precision", "calibration_path", "normalize",
         "model_kwargs", "show_progress", "on_overflow", "encode_kwargs", "cache_folder", "provider"})
    #: What builds the model, which ``provider=`` (a ready one) excludes.
    MODEL_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"model_name", "model", "api_key", "base_url", "model_kwargs", "cache_folder"})
    #: HuggingFaceEmbeddings' encode_kwargs that mean the same here, and the field each sets.
    ENCODE_KWARGS: ClassVar[dict[str, str]] = {"normalize_embeddings": "normalize", "batch_size": "batch_size",
                                               "show_progress_bar": "show_progress"}

    @field_validator("precision")
    @classmethod
    def _value_precision(cls, value: str) -> str:
        return check_value_precision(value)

    @model_validator(mode="before")
    @classmethod
    def _embedder_alone_and_key_from_env(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        for ready, excluded, what, alternative in (
                ("embedder", cls.EMBEDDER_FIELDS, "a ready Embedder", "embedder= or the fields that build one"),
                ("provider", cls.MODEL_FIELDS, "a ready model", "provider= (or wrap()) or the fields that name a model")):
            if values.get(ready) is not None:
                both = sorted(set(values) & excluded)
                if both:
                    raise ConfigError(f"{ready}= is {what}, so {', '.join(both)} would be ignored; pass either "
                                      f"{alternative}, not both")
                return values
        if values.get("api_key") is None:
            spec = values.get("model_name", values.get("model", DEFAULT_MODEL))
            env = parse_model(spec).key_env if isinstance(spec, str) else None
            if env and os.environ.get(env):
                values = {**values, "api_key": os.environ[env]}
        return values

    @field_validator("encode_kwargs")
    @classmethod
    def _known_encode_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(cls.ENCODE_KWARGS))
        if unknown:
            raise ConfigError(f"encode_kwargs {unknown} have no meaning here; valid: {sorted(cls.ENCODE_KWARGS)} "
                              "(prompts go in model_kwargs: query_prompt, document_prompt)")
        return value

    @model_validator(mode="after")
    def _build(self) -> Any:
        self._make_embedder()
        return self

    def _make_embedder(self) -> None:
        if self.embedder is not None:
            self._embedder = self.embedder
            return
        enc = self.encode_kwargs
        normalize = bool(enc.get("normalize_embeddings", self.normalize))
        show_progress = bool(enc.get("show_progress_bar", self.show_progress))
        options = dict(cache=self.cache, dim=self.dim, precision=self.precision, normalize=normalize,
                       show_progress=show_progress, on_overflow=self.on_overflow)
        if self.provider is not None:
            from .quantization import Calibration

            calibration = Calibration.load(self.calibration_path) if self.calibration_path else None
            self._embedder = Embedder(self.provider, calibration=calibration, **options)  # type: ignore[arg-type]
            return
        provider_options = dict(self.model_kwargs)
        if "batch_size" in enc:
            provider_options["batch_size"] = enc["batch_size"]
        if self.cache_folder is not None:
            provider_options["cache_folder"] = self.cache_folder
        self._embedder = Embedder.from_spec(
            self.model_name, api_key=self.api_key.get_secret_value() if self.api_key is not None else None,
            base_url=self.base_url, provider_options=provider_options, calibration_path=self.calibration_path,
            **options)

    @classmethod
    def _wrapping(cls, obj: Any, embed_documents: Callable[[list[str]], Sequence[Sequence[float]]],
                  embed_query: Callable[[str], Sequence[float]], *,
                  aembed_documents: Callable[[list[str]], Awaitable[Sequence[Sequence[float]]]] | None,
                  aembed_query: Callable[[str], Awaitable[Sequence[float]]] | None, native_dim: int | None,
                  fields: dict[str, Any]) -> Any:
        """What both adapters' ``wrap()`` do once they have picked ``obj``'s methods: a
        :class:`~embedopt.providers.wrapped.WrappedProvider` fingerprinted from ``obj``'s class and model fields,
        with the Embedder options in ``fields``."""
        owner, described = describe(obj)
        provider = WrappedProvider(embed_documents, embed_query, owner=owner, fields=described, dim=native_dim,
                                   aembed_documents=aembed_documents, aembed_query=aembed_query)
        return cls(provider=provider, **fields)

    @property
    def core(self) -> Embedder:
        """The embedopt ``Embedder`` underneath (stats, ledger, fingerprints, cache)."""
        return self._embedder

    # Frameworks copy and pickle their components. Pickled, an adapter built from fields is its fields (the
    # Embedder is built again on load, sharing this process's copy of a local model); one given ``embedder=``
    # pickles that Embedder (see Embedder.__getstate__). Deep-copied, the Embedder's copy shares the provider,
    # cache and ledger. A pickle holds the API key it was given, as the frameworks' own adapters' pickles do.
    def __getstate__(self) -> dict[Any, Any]:
        state = BaseModel.__getstate__(self)
        private = dict(state.get("__pydantic_private__") or {})
        if self.embedder is None:
            private.pop("_embedder", None)
        state["__pydantic_private__"] = private
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        BaseModel.__setstate__(self, state)
        if "_embedder" not in (self.__pydantic_private__ or {}):
            self._make_embedder()
