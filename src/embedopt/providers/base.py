"""The provider contract: a provider knows its wire format and nothing else.

Caching, batching, deduplication, Matryoshka truncation, quantization and validation of what comes back all live
in :class:`embedopt.Embedder`. A provider implements :meth:`BaseProvider._embed` (and, where it has a native
async client, :meth:`BaseProvider._aembed`) and describes itself with a :class:`ProviderInfo`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..fingerprint import Fingerprint, InputType

__all__ = ["BaseProvider", "FunctionProvider", "ProviderInfo", "ProviderKind", "estimate_tokens"]

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


class BaseProvider:
    """Subclass and implement :meth:`_embed`; everything else has a working default."""

    @property
    def info(self) -> ProviderInfo:
        raise NotImplementedError

    def _embed(self, texts: list[str], input_type: InputType) -> np.ndarray:
        """Embed ``texts`` (non-empty, validated, deduplicated) and return a float array of shape (n, dim)."""
        raise NotImplementedError

    async def _aembed(self, texts: list[str], input_type: InputType) -> np.ndarray:
        """Async twin of :meth:`_embed`; the default runs it in a worker thread so the event loop never blocks."""
        return await asyncio.to_thread(self._embed, texts, input_type)

    def _embed_with_usage(self, texts: list[str], input_type: InputType) -> tuple[np.ndarray, int | None]:
        """Vectors and the tokens the provider billed (``None`` when it does not say). APIs override this."""
        return self._embed(texts, input_type), None

    async def _aembed_with_usage(self, texts: list[str], input_type: InputType) -> tuple[np.ndarray, int | None]:
        return await self._aembed(texts, input_type), None

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
