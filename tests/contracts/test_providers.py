"""The provider contract, run over every provider: one line in ``PROVIDERS`` gives a new one the whole suite.

A provider is ``info`` plus ``embed(texts, input_type, token_counts) -> Embedded``; ``aembed`` and
``count_tokens`` are optional and reached through :func:`embedopt.providers.base.aembed` / ``count_tokens``.
The API providers talk to a real HTTP server on 127.0.0.1 through their official clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embedopt import Embedder, MemoryTier, Router
from embedopt.providers import Embedded, FunctionProvider, Provider
from embedopt.providers.base import aembed, count_tokens
from embedopt.providers.openai import OpenAIProvider
from embedopt.providers.voyage import VoyageProvider
from embedopt.retry import RetryPolicy

from ..api_server import hashed_model
from ..conftest import hash_vectors

TEXTS = ["list directory contents", "copy files and directories", "the quick brown fox", "zürich café ☕"]
SECRET = "sk-contract-0123456789abcdefghij"


def _function(request: pytest.FixtureRequest) -> Provider:
    return FunctionProvider(lambda t, k: hash_vectors(t, k), dim=16, model="fake-hash")


def _openai(request: pytest.FixtureRequest) -> Provider:
    server = request.getfixturevalue("api_server")(hashed_model(256), api_key=SECRET)
    return OpenAIProvider("text-embedding-3-small", api_key=SECRET, base_url=server.url, dimensions=256, kind="api")


def _voyage(request: pytest.FixtureRequest) -> Provider:
    server = request.getfixturevalue("api_server")(hashed_model(1024), api_key=SECRET)
    return VoyageProvider("voyage-3", api_key=SECRET, base_url=server.url)


def _router(request: pytest.FixtureRequest) -> Provider:
    """A Router over MiniLM here and the same MiniLM behind an OpenAI-compatible server: one space."""
    local = request.getfixturevalue("minilm")
    server = request.getfixturevalue("api_server")(lambda t, model, it: local.embed(t, "document").vectors,
                                                     api_key=SECRET)
    served = OpenAIProvider(local.info.model, api_key=SECRET, base_url=server.url, kind="api",
                            price_per_1m_tokens=0.01, revision=local.info.revision, dim=local.info.dim)
    return Router([served, local], policy="prefer_api")


#: Every provider the suite runs over: name -> factory(request). One line per implementation.
PROVIDERS: dict[str, Callable[[pytest.FixtureRequest], Provider]] = {
    "function": _function,
    "sentence-transformers": lambda request: request.getfixturevalue("minilm"),
    "static": lambda request: request.getfixturevalue("static"),
    "openai": _openai,
    "voyage": _voyage,
    "router": _router,
    "onnx": lambda request: request.getfixturevalue("onnx_fp32"),
}


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> Provider:
    return PROVIDERS[request.param](request)


def test_it_is_a_provider_and_describes_itself(provider):
    assert isinstance(provider, Provider)
    info = provider.info
    assert info.dim > 0 and info.model and info.revision and info.max_batch >= 1
    q, d = info.fingerprint("query", normalize=True), info.fingerprint("document", normalize=True)
    assert q.id != d.id and q.dim == d.dim == info.dim


def test_embed_returns_one_finite_row_per_text_in_order(provider):
    result = provider.embed(list(TEXTS), "document")
    assert isinstance(result, Embedded)
    v = np.asarray(result.vectors, dtype=np.float32)
    assert v.shape == (len(TEXTS), provider.info.dim) and np.isfinite(v).all()
    assert result.tokens is None or (isinstance(result.tokens, int) and result.tokens > 0)
    reversed_ = np.asarray(provider.embed(list(reversed(TEXTS)), "document").vectors, dtype=np.float32)
    np.testing.assert_allclose(reversed_[::-1], v, atol=1e-5)  # row i belongs to text i, whatever the order


def test_async_twin_and_token_counts_agree(provider):
    sync = np.asarray(provider.embed(list(TEXTS), "query").vectors)
    counts = count_tokens(provider, TEXTS)
    assert len(counts) == len(TEXTS) and all(isinstance(n, int) and n > 0 for n in counts)
    passed_on = asyncio.run(aembed(provider, list(TEXTS), "query", counts))  # counts passed on, not recounted
    np.testing.assert_allclose(np.asarray(passed_on.vectors), sync, atol=1e-5)


def test_concurrent_calls_from_threads_give_the_same_vectors(provider):
    alone = np.asarray(provider.embed(list(TEXTS), "document").vectors)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: np.asarray(provider.embed(list(TEXTS), "document").vectors), range(8)))
    for r in results:
        np.testing.assert_allclose(r, alone, atol=1e-5)


def test_under_an_embedder_the_second_call_is_all_cache_hits(provider):
    e = Embedder(provider, cache=MemoryTier(), retry=RetryPolicy(max_attempts=2, base_delay=0.001))
    first = e.embed_documents(TEXTS)
    second = e.embed_documents(TEXTS)
    np.testing.assert_array_equal(first, second)
    assert e.stats.computed == len(TEXTS) and e.stats.cache_hits == len(TEXTS)
    assert e.ledger.to_dict()["routes"], "every provider call is in the ledger"


def test_no_secret_in_repr_or_fingerprint(provider):
    text = repr(provider) + repr(provider.info) + provider.info.fingerprint("document", normalize=True).id
    assert SECRET not in text and SECRET[:12] not in text
