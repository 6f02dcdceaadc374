"""SemanticCache with the real MiniLM model, memory and Redis backends."""

from __future__ import annotations

import logging
import time

import pytest

from embedopt import ConfigError, Embedder, InputError
from embedopt.cache import MemoryTier
from embedopt.semantic_cache import DEFAULT_THRESHOLD, RedisSemanticBackend, SemanticCache

from .redis_server import RedisServer

pytestmark = pytest.mark.slow

QUESTION = "how do I list the files in a directory?"
PARAPHRASE = "how can I list files in a directory"
UNRELATED = "what is the boiling point of water at sea level?"


@pytest.fixture(scope="module")
def embedder(minilm):
    return Embedder(minilm, cache=MemoryTier())


@pytest.fixture(params=["memory", "redis"])
def backend(request, tmp_path):
    if request.param == "memory":
        yield "memory"
        return
    server = RedisServer(tmp_path).start()
    yield RedisSemanticBackend(server.url)
    server.kill()


def test_paraphrase_hits_and_unrelated_misses(embedder, backend):
    cache = SemanticCache(embedder, backend=backend)
    cache.store(QUESTION, {"answer": "use ls", "sources": ["ls.1"]}, metadata={"llm": "gpt-x"})
    hit = cache.lookup(PARAPHRASE)
    assert hit is not None and hit.response == {"answer": "use ls", "sources": ["ls.1"]}
    assert hit.query == QUESTION and hit.metadata == {"llm": "gpt-x"}
    assert DEFAULT_THRESHOLD <= hit.similarity <= 1.0001
    assert cache.lookup(UNRELATED) is None
    assert cache.stats() == {"lookups": 2, "hits": 1, "stores": 1, "errors": 0, "skipped": 0}


def test_filters_are_never_crossed(embedder, backend):
    cache = SemanticCache(embedder, backend=backend)
    cache.store(QUESTION, "tenant a's answer", filters={"tenant": "a", "llm": "model-1"})
    assert cache.lookup(QUESTION, filters={"tenant": "a", "llm": "model-1"}).response == "tenant a's answer"
    assert cache.lookup(QUESTION, filters={"llm": "model-1", "tenant": "a"}) is not None  # order does not matter
    for other in ({"tenant": "b", "llm": "model-1"}, {"tenant": "a", "llm": "model-2"}, {"tenant": "a"}, None,
                  {"tenant": "a", "llm": "model-1", "user": "u1"}):
        assert cache.lookup(QUESTION, filters=other) is None, other


def test_another_embedding_space_never_sees_the_entry(embedder, minilm, backend):
    from embedopt.providers import SentenceTransformerProvider

    prompted = Embedder(SentenceTransformerProvider(minilm.model, query_prompt="query: "))
    SemanticCache(embedder, backend=backend).store(QUESTION, "answer")
    shared_backend = backend if not isinstance(backend, str) else None
    if shared_backend is not None:  # the same Redis, another model: a separate scope
        assert SemanticCache(prompted, backend=shared_backend).lookup(QUESTION) is None
    assert SemanticCache(embedder, backend=backend).namespace() != SemanticCache(prompted).namespace()


def test_ttl(embedder, backend):
    cache = SemanticCache(embedder, backend=backend, ttl=60)
    cache.store(QUESTION, "short-lived", ttl=0.1)
    cache.store(UNRELATED, "long-lived")
    assert cache.lookup(QUESTION) is not None
    time.sleep(0.2)
    assert cache.lookup(QUESTION) is None
    assert cache.lookup(UNRELATED).response == "long-lived"


def test_storing_again_replaces_and_clear_empties(embedder, backend):
    cache = SemanticCache(embedder, backend=backend)
    cache.store(QUESTION, "old")
    cache.store(QUESTION, "new")
    assert cache.lookup(QUESTION).response == "new"
    assert cache.clear() == 1 and cache.lookup(QUESTION) is None


def test_only_json_responses_and_clear_errors(embedder):
    cache = SemanticCache(embedder)
    with pytest.raises(InputError, match="JSON"):
        cache.store(QUESTION, object())
    with pytest.raises(InputError, match="non-empty"):
        cache.lookup("  ")
    with pytest.raises(ConfigError, match="filter"):
        cache.lookup(QUESTION, filters={"tenant": ["a"]})
    with pytest.raises(ConfigError, match="threshold"):
        SemanticCache(embedder, threshold=1.5)
    assert cache.lookup(QUESTION) is None and cache.stats()["stores"] == 0


def test_two_processes_share_a_redis_backend_and_an_outage_is_a_miss(embedder, tmp_path, caplog):
    server = RedisServer(tmp_path).start()
    writer = SemanticCache(embedder, backend=server.url)
    reader = SemanticCache(embedder, backend=RedisSemanticBackend(server.url))
    writer.store(QUESTION, "shared answer")
    assert reader.lookup(PARAPHRASE).response == "shared answer"
    server.kill()
    with caplog.at_level(logging.WARNING, logger="embedopt"):
        assert reader.lookup(PARAPHRASE) is None          # a dead backend is a miss, not an error
        reader.store(UNRELATED, "dropped")                 # and a store is dropped, not raised
        assert reader.lookup(QUESTION) is None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert reader.stats()["errors"] == 1 and reader.stats()["skipped"] == 2


async def test_async_twins(embedder, backend):
    cache = SemanticCache(embedder, backend=backend)
    await cache.astore(QUESTION, "async answer", filters={"user": "u1"})
    hit = await cache.alookup(PARAPHRASE, filters={"user": "u1"})
    assert hit is not None and hit.response == "async answer"
    assert await cache.alookup(PARAPHRASE, filters={"user": "u2"}) is None
