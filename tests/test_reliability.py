"""Regression tests for issue 17's reliability defects in the core: budgets under concurrency, Redis prefixes with
glob characters, the cost ledger's lone-provider path, and input checks, copies and pickles of the Embedder and
the adapters. Real threads, a real HTTP server and real redis-servers on loopback."""

from __future__ import annotations

import copy
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import pytest

from embedopt import (
    BudgetExceededError,
    ConfigError,
    Embedder,
    MemoryTier,
    ProviderError,
    Router,
    SemanticCache,
)
from embedopt.cache import RedisTier, cache_key
from embedopt.costs import Budget, BudgetStore, CostLedger, MemoryBudgetStore
from embedopt.providers import FunctionProvider
from embedopt.providers.openai import OpenAIProvider
from embedopt.retry import RetryPolicy
from embedopt.semantic_cache import RedisSemanticBackend

from .api_server import hashed_model, server_tokens
from .conftest import hash_vectors

DIM = 16


# ---------------------------------------------------------------------------------------------------- budgets
def test_a_daily_cap_holds_exactly_with_16_threads(api_server):
    """Regression: the budget was checked before a call and counted after it, so 16 threads all passed the check
    together: $1.385 was spent on a $1.00 daily cap. Each paid call now reserves its cost first and settles it
    after, so the cap holds exactly, however many threads race for the last dollars."""
    def slow_model(texts: list[str], model: str, input_type: str | None) -> np.ndarray:
        time.sleep(0.05)  # every answer takes 50 ms: the threads' calls overlap
        return hashed_model(DIM)(texts, model, input_type)

    server = api_server(slow_model)
    api = OpenAIProvider("text-embedding-3-small", api_key=server.api_key, base_url=server.url, dimensions=DIM,
                         kind="api", price_per_1m_tokens=10_000.0, timeout=5)  # $0.01 a token
    router = Router([api], budget=Budget(daily_usd=1.00), retry=RetryPolicy.none())
    e = Embedder(router)
    texts = [f"request number {i} about copying files" for i in range(400)]

    def one(text: str) -> str:
        try:
            e.embed([text])
            return "ok"
        except BudgetExceededError:
            return "over budget"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(one, texts))
    billed_usd = server.billed_tokens["text-embedding-3-small"] * 0.01
    one_request = max(server_tokens(t) for t in texts) * 0.01
    assert billed_usd <= 1.00 + 1e-9, billed_usd                     # the server's books: never over the cap
    assert router.ledger.spent() == pytest.approx(billed_usd)           # ours agree with them
    assert 1.00 - one_request < billed_usd                               # and the budget was used, not wasted
    assert outcomes.count("ok") == server.ok_requests["text-embedding-3-small"] and "over budget" in outcomes
    assert router.budget_store.spent() == pytest.approx(billed_usd)
    assert isinstance(router.budget_store, MemoryBudgetStore) and router.budget_store.held() == 0


def test_a_failed_call_releases_its_hold_and_a_billed_refusal_settles_it(api_server):
    """Holds never leak: a call that fails unbilled (HTTP 500) gives its reservation back; one whose answer was
    refused but billed (wrong indices) is charged what the server billed."""
    server = api_server(hashed_model(DIM))
    api = OpenAIProvider("text-embedding-3-small", api_key=server.api_key, base_url=server.url, dimensions=DIM,
                         kind="api", price_per_1m_tokens=10_000.0)
    store = MemoryBudgetStore()
    router = Router([api], budget=Budget(daily_usd=5.0), budget_store=store, retry=RetryPolicy.none())
    server.script = ["500"]
    with pytest.raises(ProviderError):
        router.embed(["copy files"], "document")
    assert store.spent() == 0 and store.held() == 0
    server.script = ["wrong_index"]
    with pytest.raises(ProviderError):
        router.embed(["copy files", "move files"], "document")
    billed = server.billed_tokens["text-embedding-3-small"] * 0.01
    assert billed > 0 and store.spent() == pytest.approx(billed) and store.held() == 0
    assert router.ledger.routes[router.routes[0].name].rejected == 1


def test_the_budget_store_is_a_small_protocol_one_store_can_serve_two_routers():
    """The interface a shared (Redis) store implements: reserve / settle / release / spent, atomic per reserve."""
    store = MemoryBudgetStore(daily_usd={"2026-01-01": 0.5}, monthly_usd={"2026-01": 0.5})
    assert isinstance(store, BudgetStore)
    budget = Budget(daily_usd=0.5, monthly_usd=1.2)
    day1, day2 = (datetime(2026, 1, d, tzinfo=timezone.utc) for d in (1, 2))
    assert store.reserve(budget, 0.01, day1) is None                      # that day's cap is spent
    first = store.reserve(budget, 0.4, day2)
    assert first is not None and store.reserve(budget, 0.2, day2) is None  # 0.4 held + 0.2 > 0.5 a day
    store.settle(first, 0.1)                                               # it cost less than its hold
    assert store.spent(day="2026-01-02") == pytest.approx(0.1)
    second = store.reserve(budget, 0.35, day2)
    assert second is not None
    day3 = datetime(2026, 1, 3, tzinfo=timezone.utc)
    assert store.reserve(budget, 0.3, day3) is None                        # 0.6 + 0.35 held + 0.3 > 1.2 a month
    store.release(second)
    assert store.reserve(budget, 0.3, day3) is not None
    assert store.spent(month="2026-01") == pytest.approx(0.6)
    assert copy.deepcopy(store).spent(day="2026-01-02") == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="budget_store"):
        Router([FunctionProvider(hash_vectors, dim=DIM)], budget_store=object())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- ledger
def test_the_lone_provider_path_records_failures_and_billed_refusals(api_server):
    """Regression: an Embedder over one provider (no Router) recorded no failures, and answers it refused
    (malformed, wrong dim, wrong indices) were not counted although an API bills them (-17.6% tokens)."""
    server = api_server(hashed_model(DIM))
    api = OpenAIProvider("text-embedding-3-small", api_key=server.api_key, base_url=server.url, dimensions=DIM,
                         kind="api")
    e = Embedder(api, retry=RetryPolicy(max_attempts=2, base_delay=0, max_delay=0))
    server.script = ["500", "500"]
    with pytest.raises(ProviderError):
        e.embed(["copy files"])
    server.script = ["wrong_dim", "wrong_index", "wrong_dim"]
    with pytest.raises(ProviderError):
        e.embed(["move files", "list files"])
    server.script = ["missing_rows"]
    e.embed(["find files", "show files"])
    route = e.ledger.routes["openai-compatible:text-embedding-3-small"]
    assert route.failures == 2 and route.rejected == 3 and route.requests == 1
    assert route.tokens == server.billed_tokens["text-embedding-3-small"]
    assert route.usd == pytest.approx(route.tokens * 0.02 / 1e6)


def test_self_hosted_cache_hits_are_counted():
    """Regression: only priced routes counted cache hits, so a self-hosted model's ledger showed 0 hits."""
    e = Embedder(FunctionProvider(hash_vectors, dim=DIM), cache="memory")
    e.embed(["a text", "another"])
    e.embed(["a text", "another", "a third"])
    assert e.ledger.cache_hits == 2 and e.ledger.cache_tokens_saved > 0 and e.ledger.cache_usd_saved == 0


def test_a_provider_answer_of_the_wrong_shape_is_a_rejection_not_a_request():
    """An answer the Embedder refuses (wrong shape, NaN) is billed as a rejection, not counted as a request."""
    e = Embedder(FunctionProvider(lambda t, k: np.ones((len(t), DIM - 1)), dim=DIM, price_per_1m_tokens=1.0))
    with pytest.raises(ProviderError, match="shape"):
        e.embed(["a text"])
    route = e.ledger.routes["function:function"]
    assert route.requests == 0 and route.rejected == 1 and route.failures == 1 and route.tokens > 0


# --------------------------------------------------------------------------------------------- redis prefixes
@pytest.mark.parametrize(("glob", "victim"), [("app[1]:", "app1:"), ("tenant-*:", "tenant-a:"), ("a?:", "ab:"),
                                              ("x\\", "x:")])
def test_glob_characters_in_a_redis_prefix_never_reach_other_tenants(redis_server, glob, victim):
    """Regression: the prefix went into SCAN MATCH patterns unescaped, so prefix="app[1]:" cleared app1:'s keys
    and "tenant-*:" cleared tenant-a's. clear, usage and usage_by_fingerprint now see only their own keys."""
    mine, theirs = RedisTier(redis_server.url, prefix=glob), RedisTier(redis_server.url, prefix=victim)
    fp = Embedder(FunctionProvider(hash_vectors, dim=DIM)).fingerprint()
    theirs.set_many([(cache_key(fp, f"t{i}"), np.ones(DIM, dtype=np.float32)) for i in range(3)])
    mine.set_many([(cache_key(fp, "m"), np.ones(DIM, dtype=np.float32))])
    assert mine.usage()["entries"] == 1 and mine.usage_by_fingerprint() == {fp.id: 1}
    assert mine.clear(fp.id[:6]) == 1 and mine.clear() == 0
    assert theirs.usage()["entries"] == 3


def test_a_glob_prefix_on_the_redis_semantic_backend_keeps_to_itself(redis_server, static):
    """Regression, semantic cache: RedisSemanticBackend(prefix="tenant-*:").clear() deleted tenant-a's answer."""
    embedder = Embedder(static)
    victim = SemanticCache(embedder, backend=RedisSemanticBackend(redis_server.url, prefix="tenant-a:"))
    glob = SemanticCache(embedder, backend=RedisSemanticBackend(redis_server.url, prefix="tenant-*:"))
    victim.store("how do I copy files?", "use cp")
    glob.store("how do I copy files?", "use rsync")
    assert glob.clear(everything=True) == 1
    hit = victim.lookup("how do I copy files?")
    assert hit is not None and hit.response == "use cp"


# ----------------------------------------------------------------------------------------------- input checks
def test_one_redis_semantic_backend_shared_by_two_models_gives_no_false_misses(redis_server):
    """Regression: the backend kept fetched vectors by entry id alone, and one question has one id in every
    scope, so a cache on a second model (another dim) got the first model's vector: an error counted as a miss."""
    backend = RedisSemanticBackend(redis_server.url)
    small = SemanticCache(Embedder(FunctionProvider(lambda t, k: hash_vectors(t, k, 8), dim=8, model="small")),
                          backend=backend, threshold=0.99)
    big = SemanticCache(Embedder(FunctionProvider(lambda t, k: hash_vectors(t, k, 32), dim=32, model="big")),
                        backend=backend, threshold=0.99)
    for cache in (small, big):
        cache.store("how do I copy files?", f"answer from {cache.embedder.provider.info.model}")
    for cache in (small, big, small, big):
        hit = cache.lookup("how do I copy files?")
        assert hit is not None and hit.response == f"answer from {cache.embedder.provider.info.model}"
    assert small.stats()["errors"] == big.stats()["errors"] == 0


# -------------------------------------------------------------------------------------------- copy and pickle
def _round_trips(obj: object) -> list[object]:
    return [copy.deepcopy(obj), pickle.loads(pickle.dumps(obj))]


def test_an_embedder_deep_copies_and_pickles(static_model_dir):
    """Regression: a threading.Lock in the Embedder's state made copy.deepcopy and pickle fail. A copy shares the
    provider (no second copy of the weights), has its own lock and counters, and embeds the same vectors; a pickle
    of an Embedder made from a spec rebuilds its provider and reopens its cache spec."""
    e = Embedder.from_spec(f"static:{static_model_dir}", cache="memory", dim=128)
    want = e.embed(["copy files"])
    for twin in _round_trips(e):
        assert isinstance(twin, Embedder) and twin is not e and twin._lock is not e._lock
        np.testing.assert_array_equal(twin.embed(["copy files"]), want)
        assert twin.dim == 128 and twin.fingerprint().id == e.fingerprint().id
    assert copy.deepcopy(e).provider is e.provider
    plain = Embedder(FunctionProvider(hash_vectors, dim=DIM), cache="memory")
    for twin in _round_trips(plain):
        assert twin.embed(["x"]).shape == (1, DIM)  # type: ignore[attr-defined]
    live = Embedder(FunctionProvider(hash_vectors, dim=DIM), cache=MemoryTier())
    assert copy.deepcopy(live).cache is live.cache  # a copy shares the tier
    with pytest.raises(ConfigError, match="as a spec"):
        pickle.dumps(live)


def test_the_adapters_deep_copy_and_pickle(static_model_dir, static):
    """Regression: EmbedOptEmbeddings and EmbedOptEmbedding could not be deep-copied or pickled (LlamaIndex even
    dropped the Embedder with a warning and left a broken object), and the retrievers could not be deep-copied."""
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from langchain_embedopt import EmbedOptEmbeddings, EmbedOptRetriever
    from llamaindex_embedopt import EmbedOptEmbedding
    from llamaindex_embedopt import EmbedOptRetriever as LlamaRetriever

    spec = f"static:{static_model_dir}"
    lc, li = EmbedOptEmbeddings(model=spec), EmbedOptEmbedding(model=spec)
    given = EmbedOptEmbeddings(embedder=Embedder(static, cache="memory"))
    want = lc.embed_query("copy files")
    for adapter in (lc, given):
        for twin in _round_trips(adapter):
            assert twin.embed_query("copy files") == pytest.approx(want, abs=1e-6)  # type: ignore[attr-defined]
            assert twin.core is not adapter.core  # type: ignore[attr-defined]
    for twin in _round_trips(li):
        assert twin.get_query_embedding("copy files") == pytest.approx(want, abs=1e-6)  # type: ignore[attr-defined]
    texts = ["copy files and directories", "remove files", "list directory contents", "find files"]
    for retriever in (EmbedOptRetriever.from_texts(texts, lc, k=2), LlamaRetriever.from_nodes(
            [__import__("llama_index.core.schema", fromlist=["TextNode"]).TextNode(text=t) for t in texts], li,
            similarity_top_k=2)):
        twin = copy.deepcopy(retriever)
        assert twin.pipeline.store is retriever.pipeline.store  # an index is shared, never doubled
        assert len(twin.invoke("copy") if hasattr(twin, "invoke") else twin.retrieve("copy")) == 2


def test_the_langchain_retriever_refuses_k_0_and_gives_each_document_its_own_timings(static):
    """Regression: invoke(query, k=0) returned 4 documents (k=0 read as "the default"), and every Document of a
    result shared one timings_ms dict, so changing one changed all."""
    pytest.importorskip("langchain_core")
    from langchain_embedopt import EmbedOptRetriever

    texts = ["copy files and directories", "remove files", "list directory contents", "find files"]
    retriever = EmbedOptRetriever.from_texts(texts, Embedder(static), k=3)
    with pytest.raises(ConfigError, match="k must be a positive int"):
        retriever.invoke("copy files", k=0)
    docs = retriever.invoke("copy files")
    assert len(docs) == 3
    docs[0].metadata["timings_ms"]["embed"] = -1.0
    assert docs[1].metadata["timings_ms"]["embed"] != -1.0


def test_from_spec_refuses_the_empty_spec_instead_of_loading_the_current_folder(tmp_path, monkeypatch):
    """Regression: Embedder.from_spec("") loaded the current directory as a model folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="empty"):
        Embedder.from_spec("")


def test_a_ledger_copies_and_pickles_with_its_totals():
    ledger = CostLedger()
    ledger.record("r", kind="api", texts=1, tokens=10, price_per_1m_tokens=1.0)
    for twin in _round_trips(ledger):
        assert twin.routes["r"].tokens == 10 and twin._lock is not ledger._lock  # type: ignore[attr-defined]
