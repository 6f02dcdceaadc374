"""The provider contract: a provider knows its wire format and nothing else.

A provider is anything with an ``info`` (:class:`ProviderInfo`) and one method,
``embed(texts, input_type, token_counts=None) -> Embedded``: the vectors and the tokens the provider billed
(:class:`Provider`, a Protocol like the cache tier, store and reranker seams). Two capabilities are optional and
found by name: ``aembed`` (the same, natively async) and ``count_tokens`` (the provider's own tokenizer).

Caching, batching, deduplication, Matryoshka truncation, quantization, retries, cost accounting and validation
of what comes back all live in :class:`embedopt.Embedder`, except where ``info`` says the provider does them
itself (a :class:`~embedopt.Router` retries per route and keeps its own ledger).

:class:`BaseProvider` is the convenient way to write one: implement ``_embed(texts, input_type) -> array`` and
``info``; it supplies ``embed``, ``aembed`` (in a worker thread) and an estimating ``count_tokens``.
:class:`FunctionProvider` wraps a plain function.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..fingerprint import Fingerprint, InputType

__all__ = [
    "BaseProvider",
    "Embedded",
    "FunctionProvider",
    "Provider",
    "ProviderEntry",
    "ProviderInfo",
    "ProviderKind",
    "aembed",
    "count_tokens",
    "estimate_tokens",
]

ProviderKind = Literal["api", "self_hosted"]


def estimate_tokens(text: str) -> int:
    """A conservative token count with no tokenizer: one token per 3 UTF-8 bytes, rounded up.

    BPE and WordPiece vocabularies average about 4 bytes a token on English, so this over-counts, which is the
    safe side for request budgets.
    """
    return max(1, math.ceil(len(text.encode("utf-8")) / 3))


@dataclass(frozen=True)
class ProviderInfo:
    """What the core needs to know about a provider. No secrets: it is logged and shown by ``embedopt info``."""

    provider: str
    """Provider family, e.g. ``sentence-transformers``, ``model2vec``, ``openai``."""
    model: str
    """The model's public name (a hub id or a folder name), never a machine-specific path."""
    revision: str
    """The weights' revision: a hub commit, an API model version, or a hash of the weights for local models."""
    dim: int
    """Native output dimension."""
    kind: ProviderKind = "self_hosted"
    max_batch: int = 256
    """Most inputs in one call to :meth:`BaseProvider._embed`."""
    max_tokens: int | None = None
    """Longest input in tokens; longer inputs are truncated by the model, or refused with ``on_overflow='error'``."""
    max_batch_tokens: int | None = None
    """Most tokens in one call, for APIs that cap a request; ``None`` for no cap."""
    price_per_1m_tokens: float = 0.0
    """Marginal price in USD per million input tokens (0 for self-hosted models)."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Text prepended per input type, e.g. E5's ``{"query": "query: ", "document": "passage: "}``."""
    max_concurrency: int = 1
    """How many calls the async path may have in flight at once."""
    retries: bool = False
    """The provider retries transient errors itself (a Router, per route): the Embedder does not retry it again."""
    records_costs: bool = False
    """The provider records its calls in its own ``ledger`` (a Router, per route): the Embedder shares that ledger
    instead of recording the calls a second time."""

    def prompt(self, input_type: InputType) -> str:
        return self.prompts.get(input_type, "")

    def fingerprint(self, input_type: InputType, *, normalize: bool) -> Fingerprint:
        return Fingerprint(
            provider=self.provider,
            model=self.model,
            revision=self.revision,
            input_type=input_type,
            prompt=self.prompt(input_type),
            dim=self.dim,
            normalize=normalize,
        )


class Embedded(NamedTuple):
    """What a provider returns for one call."""

    vectors: np.ndarray
    """Shape (n, dim), in the order of the texts."""
    tokens: int | None
    """Tokens the provider billed for the call, where it reports them; ``None`` when it does not say."""


@runtime_checkable
class Provider(Protocol):
    """Where vectors come from: a description and one method.

    ``texts`` are non-empty, validated and deduplicated; ``token_counts``, when the core counted them (for token
    budgets or limits), are the per-text counts from this provider's ``count_tokens``, passed on so nothing
    counts twice.
    """

    @property
    def info(self) -> ProviderInfo: ...

    def embed(self, texts: list[str], input_type: InputType,
              token_counts: Sequence[int] | None = None) -> Embedded: ...


async def aembed(provider: Provider, texts: list[str], input_type: InputType,
                 token_counts: Sequence[int] | None = None) -> Embedded:
    """``provider.aembed`` where it has one (a native async client), else ``embed`` in a worker thread."""
    native = getattr(provider, "aembed", None)
    if native is not None:
        result: Embedded = await native(texts, input_type, token_counts)
        return result
    return await asyncio.to_thread(provider.embed, texts, input_type, token_counts)


def count_tokens(provider: Provider, texts: Sequence[str]) -> list[int]:
    """Token counts with the provider's own tokenizer where it has one, else :func:`estimate_tokens`."""
    own = getattr(provider, "count_tokens", None)
    if own is not None:
        return list(own(texts))
    return [estimate_tokens(t) for t in texts]


@dataclass(frozen=True)
class ProviderEntry:
    """How a spec string names this provider, declared once in the provider's own module as ``SPEC`` and found
    there by :mod:`embedopt.specs` (third-party providers: an ``embedopt.providers`` entry point). Adding a
    provider means adding its module; nothing else lists it."""

    prefix: str
    """The spec prefix before the colon: ``st`` in ``st:NAME``."""
    build: Callable[..., Provider]
    """``build(name, **options)``: the provider for the part after the colon."""
    options: Callable[..., object]
    """The callable whose keyword parameters are the valid options (usually the provider class)."""
    summary: str
    """One line for ``--help`` and the docs."""
    example: str
    key_env: str | None = None
    """The environment variable its API key is read from when none is given."""
    shared: bool = False
    """It loads weights into this process: :meth:`embedopt.Embedder.from_spec` shares one per spec and options."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Whole specs that mean ``prefix:value`` (``minilm`` -> the packaged all-MiniLM-L6-v2)."""
    claims: Callable[[str], bool] | None = None
    """For a spec without a prefix (a folder): whether it is this provider's (a model2vec folder is static)."""
    fallback: bool = False
    """Takes a spec without a prefix that no provider claims (a hub id or a folder: sentence-transformers)."""
    locate: Callable[[str], str] | None = None
    """For a model that loads from local files: the folder or hub id a name stands for, for tools that load the
    weights themselves (fine-tuning); ``static:distill`` distils here, never while parsing."""


class BaseProvider:
    """Subclass, set :attr:`info` and implement :meth:`_embed`; everything else has a working default. API
    providers that learn the billed tokens override :meth:`embed` (and :meth:`aembed`) instead."""

    @property
    def info(self) -> ProviderInfo:
        raise NotImplementedError

    def _embed(self, texts: list[str], input_type: InputType) -> np.ndarray:
        """Embed ``texts`` (non-empty, validated, deduplicated) and return a float array of shape (n, dim)."""
        raise NotImplementedError

    def embed(self, texts: list[str], input_type: InputType,
              token_counts: Sequence[int] | None = None) -> Embedded:
        return Embedded(self._embed(texts, input_type), None)

    async def aembed(self, texts: list[str], input_type: InputType,
                     token_counts: Sequence[int] | None = None) -> Embedded:
        """Async twin of :meth:`embed`; the default runs it in a worker thread so the event loop never blocks."""
        return await asyncio.to_thread(self.embed, texts, input_type, token_counts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts per text, with the provider's own tokenizer where it has one."""
        return [estimate_tokens(t) for t in texts]

    def __repr__(self) -> str:
        info = self.info
        return f"{type(self).__name__}(model={info.model!r}, dim={info.dim}, kind={info.kind!r})"


class FunctionProvider(BaseProvider):
    """Wrap a plain function ``fn(texts, input_type) -> array`` as a provider.

    For tests of plumbing and for adapting an in-house model. ``revision`` should change whenever ``fn`` starts
    producing different vectors; by default it is derived from the function's qualified name.
    """

    def __init__(
        self,
        fn: Callable[[list[str], InputType], np.ndarray | Sequence[Sequence[float]]],
        *,
        dim: int,
        model: str = "function",
        revision: str | None = None,
        kind: ProviderKind = "self_hosted",
        max_batch: int = 256,
        max_tokens: int | None = None,
        max_batch_tokens: int | None = None,
        price_per_1m_tokens: float = 0.0,
        prompts: dict[str, str] | None = None,
    ) -> None:
        self._fn = fn
        qualname = getattr(fn, "__qualname__", type(fn).__name__)
        self._info = ProviderInfo(
            provider="function",
            model=model,
            revision=revision or hashlib.sha256(qualname.encode()).hexdigest()[:16],
            dim=dim,
            kind=kind,
            max_batch=max_batch,
            max_tokens=max_tokens,
            max_batch_tokens=max_batch_tokens,
            price_per_1m_tokens=price_per_1m_tokens,
            prompts=dict(prompts or {}),
        )

    @property
    def info(self) -> ProviderInfo:
        return self._info

    def _embed(self, texts: list[str], input_type: InputType) -> np.ndarray:
        return np.asarray(self._fn(texts, input_type), dtype=np.float32)
