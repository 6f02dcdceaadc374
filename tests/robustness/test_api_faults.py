"""A faulty OpenAI/Voyage server: wrong indices, another model's answer, missing rows, cut vectors, cut bodies,
malformed bodies, 429/5xx and hangs, scripted and drawn by hypothesis, through the official clients.

Every call ends, in bounded time, in either the right vectors for every text or a typed EmbedOptError: never a
raw exception, a hang, a wrong vector, a partial result, or a wrong vector left in the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedopt import Embedder, EmbedOptError, MemoryTier, ProviderError
from embedopt.cache import cache_key
from embedopt.providers._api import same_model
from embedopt.providers.openai import OpenAIProvider
from embedopt.providers.voyage import VoyageProvider
from embedopt.retry import RetryPolicy

from ..api_server import BILLED_FAULTS, FAULTS, FakeEmbeddingAPI, hashed_model

DIM = 16
TIMEOUT = 1.5  # long enough for a loaded 2-core machine to answer; a hang costs this per attempt
#: Three attempts, no waiting: a call meets at most three faults.
RETRY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, max_total=30)
#: Faults a retry cures (the same request answered right the next time).
RETRYABLE = frozenset(FAULTS) - {"foreign_model", "slow"}
TEXTS = ["list directory contents", "copy files", "remove files", "find files", "show a manual page"]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeEmbeddingAPI]:
    api = FakeEmbeddingAPI(hashed_model(DIM), hang_seconds=30).start()
    yield api
    api.stop()


def _provider(kind: str, server: FakeEmbeddingAPI, **options: object) -> OpenAIProvider | VoyageProvider:
    if kind == "openai":
        return OpenAIProvider("m", api_key=server.api_key, base_url=server.url, dim=DIM, timeout=TIMEOUT, **options)
    return VoyageProvider("voyage-3", api_key=server.api_key, base_url=server.url, dim=DIM, timeout=TIMEOUT,
                          **options)


def _expected(kind: str, texts: list[str]) -> np.ndarray:
    model, input_type = ("m", None) if kind == "openai" else ("voyage-3", "document")
    return hashed_model(DIM)(texts, model, input_type)


@pytest.mark.parametrize("kind", ["openai", "voyage"])
def test_a_doubled_and_a_missing_index_is_refused_then_retried(server, kind):
    """Regression: the answer's indices were not checked, so an answer with index 0 twice and no index 2 put
    one text's vector on another text, and the cache kept it. Now it is a retryable ProviderError (the retry
    gets the right answer), and its billed tokens are in the ledger."""
    texts = TEXTS[:3]
    server.script = ["wrong_index"]
    with pytest.raises(ProviderError, match="indices") as info:
        Embedder(_provider(kind, server), cache="memory", retry=RetryPolicy.none()).embed(texts)
    assert info.value.retryable and info.value.billed_tokens
    server.script = ["wrong_index"]
    e = Embedder(_provider(kind, server), cache="memory", retry=RETRY)
    np.testing.assert_allclose(e.embed(texts), _expected(kind, texts), atol=1e-6)
    route = next(iter(e.ledger.routes.values()))
    assert route.rejected == 1 and route.requests == 1


@pytest.mark.parametrize("kind", ["openai", "voyage"])
def test_voyage_and_openai_rows_follow_their_indices(server, kind):
    """Regression: Voyage's client drops each row's index, so when a server sent rows out of order (the test
    server always reverses them) the vectors were swapped between texts. Rows are now put in index order."""
    got = Embedder(_provider(kind, server)).embed(TEXTS)
    np.testing.assert_allclose(got, _expected(kind, TEXTS), atol=1e-6)


@pytest.mark.parametrize("kind", ["openai", "voyage"])
def test_another_models_answer_is_refused_unless_check_model_is_off(server, kind):
    """Regression: the answer's ``model`` was ignored, so vectors from another model of the same dim were cached
    under this model's fingerprint. Refused by default (not retried: the server will answer the same), nothing
    cached; ``check_model=False`` is for servers that name their one model whatever is asked (TEI)."""
    cache = MemoryTier()
    e = Embedder(_provider(kind, server), cache=cache, retry=RETRY)
    server.script = ["foreign_model"]
    with pytest.raises(ProviderError, match="another model") as info:
        e.embed(TEXTS[:2])
    assert not info.value.retryable and info.value.billed_tokens
    assert all(v is None for v in cache.get_many([cache_key(e.fingerprint(), t) for t in TEXTS[:2]]))
    server.script = ["foreign_model"]
    lenient = Embedder(_provider(kind, server, check_model=False), retry=RetryPolicy.none())
    np.testing.assert_allclose(lenient.embed(TEXTS[:2]), _expected(kind, TEXTS[:2]), atol=1e-6)


def test_a_server_naming_its_model_with_an_organisation_or_a_version_is_the_same_model(api_server):
    """A TEI-like server that answers ``BAAI/bge-small-en-v1.5`` to a request for ``bge-small-en-v1.5`` serves the
    model asked for; OpenAI's ``text-embedding-ada-002-v2`` is ada-002. Another organisation's model is not."""
    server = api_server(hashed_model(DIM), answer_model="BAAI/bge-small-en-v1.5")
    provider = OpenAIProvider("bge-small-en-v1.5", api_key=server.api_key, base_url=server.url, dim=DIM)
    assert Embedder(provider).embed(["hello"]).shape == (1, DIM)
    assert same_model("text-embedding-ada-002", "text-embedding-ada-002-v2")
    assert same_model("text-embedding-3-small", "TEXT-EMBEDDING-3-SMALL")
    assert same_model("m", None)  # an answer that names no model: nothing to check
    assert not same_model("BAAI/bge-small-en-v1.5", "other/bge-small-en-v1.5")
    assert not same_model("text-embedding-3-small", "text-embedding-3-large")
    assert not same_model("m", ["m"])


@pytest.mark.parametrize("kind", ["openai", "voyage"])
@pytest.mark.parametrize("fault", ["missing_rows", "wrong_dim", "wrong_count", "cut_body", "bad_base64",
                                   "malformed_json"])
def test_a_truncated_answer_is_never_a_partial_result(server, kind, fault):
    """Fewer rows, vectors cut short, a body cut in the middle: a retryable ProviderError, nothing cached; the
    retry returns every vector."""
    cache = MemoryTier()
    server.script = [fault]
    e = Embedder(_provider(kind, server), cache=cache, retry=RetryPolicy.none())
    with pytest.raises(ProviderError) as info:
        e.embed(TEXTS)
    assert info.value.retryable
    assert cache.stats()["bytes_written"] == 0
    server.script = [fault]
    np.testing.assert_allclose(Embedder(_provider(kind, server), retry=RETRY).embed(TEXTS), _expected(kind, TEXTS),
                               atol=1e-6)


@pytest.mark.parametrize("kind", ["openai", "voyage"])
def test_a_hang_ends_in_a_bounded_timeout(server, kind):
    """A server that accepts the request and never answers: a retryable ProviderError after the provider's
    timeout (sync and async), not a call that waits forever."""
    e = Embedder(_provider(kind, server), retry=RetryPolicy.none())
    for call in (lambda: e.embed(["hello"]), lambda: asyncio.run(e.aembed(["hello"]))):
        server.script = ["hang"]
        started = time.monotonic()
        with pytest.raises(ProviderError) as info:
            call()
        assert info.value.retryable and time.monotonic() - started < TIMEOUT + 5


# ------------------------------------------------------------------------------------------------ hypothesis
_texts = st.lists(st.sampled_from([*TEXTS, "zürich café ☕", "NUL \x00 inside", "x" * 3000]), min_size=1, max_size=6)
_scripts = st.lists(st.sampled_from(sorted(set(FAULTS) - {"slow"})), max_size=3)


@settings(max_examples=40, deadline=20_000, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(["openai", "voyage"]), texts=_texts, script=_scripts, use_async=st.booleans())
def test_any_fault_sequence_gives_the_right_vectors_or_a_typed_error(server, kind, texts, script, use_async):
    """Whatever the server does, in any order: the right vector for every text, or a typed error; nothing wrong
    is cached, nothing takes longer than the retries' timeouts."""
    cache = MemoryTier()
    e = Embedder(_provider(kind, server), cache=cache, retry=RETRY)
    server.script = list(script) + ["ok"] * RETRY.max_attempts
    consumed: list[str] = []  # what each attempt meets: a fault a retry cures, or the end
    for fault in server.script[:RETRY.max_attempts]:
        consumed.append(fault)
        if fault in ("ok", "foreign_model"):
            break
    started = time.monotonic()
    try:
        got = asyncio.run(e.aembed(texts)) if use_async else e.embed(texts)
    except EmbedOptError as exc:
        assert isinstance(exc, ProviderError) and consumed[-1] != "ok", (consumed, exc)
    else:
        assert consumed[-1] == "ok", consumed
        np.testing.assert_allclose(got, _expected(kind, texts), atol=1e-6)
    finally:
        server.script = []
    assert time.monotonic() - started < RETRY.max_attempts * (TIMEOUT + 3)
    expected = dict(zip(texts, _expected(kind, texts), strict=True))
    keys = [cache_key(e.fingerprint(), t) for t in expected]
    for text, vec in zip(expected, cache.get_many(keys), strict=True):
        assert vec is None or np.allclose(vec, expected[text], atol=1e-6), text  # never a wrong vector cached
    routes = list(e.ledger.routes.values())
    assert sum(r.rejected for r in routes) == sum(f in BILLED_FAULTS for f in consumed)  # billed refusals count
    assert sum(r.requests + r.failures for r in routes) == 1  # the call, once: served or failed
