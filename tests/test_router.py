"""Router: fallback within one embedding space, refusal across spaces, budgets, the ledger, and chaos.

The API side is the official ``openai`` client talking to a real loopback server that serves the same open
model as the local route (as a TEI or vLLM server would), so both routes are one embedding space."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embedopt import BudgetExceededError, ConfigError, Embedder
from embedopt.costs import Budget
from embedopt.providers.openai import OpenAIProvider
from embedopt.retry import RetryPolicy
from embedopt.router import Route, Router

from .api_server import BILLED_FAULTS, hashed_model

pytestmark = pytest.mark.slow
FAST = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.005, max_total=2)


def served(server, local, *, price: float = 0.02, **options) -> OpenAIProvider:
    """An OpenAI-compatible API route serving ``local``'s model, declared as the same weights."""
    return OpenAIProvider(local.info.model, api_key=server.api_key, base_url=server.url, dim=local.info.dim,
                          revision=local.info.revision, kind="api", price_per_1m_tokens=price, **options)


@pytest.fixture
def minilm_api(api_server, minilm):
    server = api_server(lambda texts, model, input_type: minilm._embed(texts, "document"))
    return server, served(server, minilm)


def test_fallback_from_a_failing_api_to_self_hosted_of_the_same_space(minilm_api, minilm):
    server, api = minilm_api
    router = Router([api, minilm], policy="prefer_api", retry=FAST, cooldown=60, failure_threshold=1)
    e = Embedder(router)
    texts = ["find the process ID of a running program", "copy files and directories"]
    np.testing.assert_allclose(e.embed_documents(texts), Embedder(minilm).embed_documents(texts), atol=1e-5)
    assert server.ok_requests[minilm.info.model] == 1  # healthy: the API served it

    server.script = ["500"] * 2
    np.testing.assert_allclose(e.embed_documents(["list directory contents"]),
                               Embedder(minilm).embed_documents(["list directory contents"]), atol=1e-5)
    stats = router.stats()
    api_name, local_name = (r.name for r in router.routes)
    assert stats[api_name]["state"] == "open" and stats[api_name]["failures"] == 1
    assert stats[local_name]["requests"] == 1
    requests_before = server.requests
    e.embed_documents(["remove files"])   # the breaker is open: the API is not even asked
    assert server.requests == requests_before and router.stats()[local_name]["requests"] == 2


def test_routes_of_different_spaces_are_refused(minilm, static, api_server):
    with pytest.raises(ConfigError, match=r"different spaces.*foreign vectors"):
        Router([minilm, static])
    server = api_server(hashed_model(384))
    other = OpenAIProvider(minilm.info.model, api_key=server.api_key, base_url=server.url, dim=384)  # no revision
    with pytest.raises(ConfigError, match="revision"):
        Router([minilm, other])
    prompted = OpenAIProvider(minilm.info.model, api_key=server.api_key, base_url=server.url, dim=384,
                              revision=minilm.info.revision, prompts={"query": "query: "})
    with pytest.raises(ConfigError, match="prompt"):
        Router([minilm, prompted])


def test_verify_measures_what_fingerprints_declare(minilm_api, minilm, api_server, static):
    _, api = minilm_api
    report = Router([minilm, api]).verify()
    assert min(report.values()) > 0.999
    # a server that claims MiniLM's revision but serves other vectors is caught by measuring
    liar_server = api_server(hashed_model(384))
    liar = served(liar_server, minilm)
    with pytest.raises(ConfigError, match="disagree"):
        Router([minilm, liar]).verify()


def test_a_budget_cap_moves_traffic_to_self_hosted(minilm_api, minilm):
    server, api = minilm_api
    # price chosen so that a few requests pass the cap: $1 per 1M tokens, cap $0.00005 = 50 tokens
    api = served(server, minilm, price=1.0)
    router = Router([api, minilm], policy="prefer_api", budget=Budget(daily_usd=0.00005), retry=FAST)
    e = Embedder(router)
    for i in range(12):
        e.embed_documents([f"query number {i} about files"])
    api_name, local_name = (r.name for r in router.routes)
    stats = router.stats()
    assert stats[api_name]["requests"] >= 1 and stats[local_name]["requests"] >= 1
    assert stats[api_name]["requests"] + stats[local_name]["requests"] == 12
    assert router.ledger.spent() <= 0.00005 + 1e-12
    only_api = Router([api], budget=Budget(daily_usd=0.0), retry=FAST)
    with pytest.raises(BudgetExceededError, match="budget"):
        Embedder(only_api).embed_documents(["anything"])


def test_ledger_totals_are_exact(minilm_api, minilm):
    server, api = minilm_api
    router = Router([api, minilm], policy="cheapest")
    assert next(r.name for r in router.order()).startswith("sentence-transformers")  # free comes first
    router = Router([api, minilm], policy="prefer_api", retry=FAST)
    e = Embedder(router, show_progress=False)
    texts = [f"text {i} " * (i % 7 + 1) for i in range(300)]
    e.embed_documents(texts)
    api_name = router.routes[0].name
    totals = router.ledger.routes[api_name]
    assert totals.requests == server.ok_requests[minilm.info.model]
    assert totals.tokens == server.ok_tokens[minilm.info.model]
    assert totals.usd == pytest.approx(totals.tokens * 0.02 / 1e6, rel=1e-12)
    assert router.ledger.to_dict()["total_usd"] == pytest.approx(totals.usd)
    before = totals.tokens
    e.embed_documents(texts)  # no cache on this Embedder: billed again, exactly
    assert router.ledger.routes[api_name].tokens == server.ok_tokens[minilm.info.model] == 2 * before


def test_cache_savings_are_in_the_ledger(minilm_api, minilm):
    from embedopt.cache import MemoryTier

    server, api = minilm_api
    router = Router([api, minilm], policy="prefer_api", retry=FAST)
    e = Embedder(router, cache=MemoryTier())
    e.embed_documents(["a", "b", "c"])
    e.embed_documents(["a", "b", "c"])
    cache = router.ledger.to_dict()["cache"]
    assert cache["hits"] == 3 and cache["tokens_saved"] > 0 and cache["usd_saved"] > 0
    assert server.ok_requests[minilm.info.model] == 1


def test_policies_order_routes(minilm, static):
    from embedopt.providers import FunctionProvider

    def make(name, kind, price):
        return Route(FunctionProvider(lambda t, k: np.ones((len(t), 4)), dim=4, model="m", revision="r"),
                     name=name, kind=kind, price_per_1m_tokens=price)

    routes = [make("api-dear", "api", 0.13), make("local", "self_hosted", 0.0), make("api-cheap", "api", 0.02)]
    assert [r.name for r in Router(routes).order()] == ["local", "api-cheap", "api-dear"]
    assert [r.name for r in Router(routes, policy="prefer_api").order()] == ["api-cheap", "api-dear", "local"]
    assert [r.name for r in Router(routes, policy="cheapest").order()] == ["local", "api-cheap", "api-dear"]
    fastest = Router(routes, policy="fastest")
    fastest.routes[0].latency, fastest.routes[1].latency, fastest.routes[2].latency = 0.05, 0.5, 0.2
    assert [r.name for r in fastest.order()] == ["api-dear", "api-cheap", "local"]
    with pytest.raises(ConfigError, match="policy"):
        Router(routes, policy="random")


def test_chaos_30_percent_of_api_calls_fail(api_server, static):
    """2,000 requests from 4 threads while 30% of API calls fail at random (429, 500, 503, malformed JSON,
    bad base64, missing rows, wrong dims, slow answers past the timeout). Every request is served, every vector
    is the model's own, and the ledger agrees with the server's books: the answers it refused (malformed, wrong
    shape) count as billed tokens, as an API bills them (they used to be left out: -17.6% tokens)."""
    server = api_server(lambda texts, model, input_type: static._embed(texts, "document"), slow_seconds=0.3)
    server.fail_rate = 0.3
    server.fail_kinds = ("429", "500", "503", "malformed_json", "bad_base64", "wrong_count", "wrong_dim", "slow")
    api = served(server, static, timeout=0.2)
    router = Router([api, static], policy="prefer_api", retry=FAST, cooldown=0.02, max_cooldown=0.05)
    e = Embedder(router)
    texts = [f"request {i}: how do I {w} files" for i, w in
             zip(range(2000), ["copy", "move", "list", "remove", "find"] * 400, strict=True)]
    expected = Embedder(static).embed_documents(texts)

    def one(i: int) -> np.ndarray:
        return e.embed_query(texts[i])

    with ThreadPoolExecutor(4) as pool:
        got = np.stack(list(pool.map(one, range(2000))))
    np.testing.assert_allclose(got, expected, atol=1e-6)   # served, and never a foreign vector
    api_name, local_name = (r.name for r in router.routes)
    ledger = router.ledger.routes
    assert ledger[api_name].requests == server.ok_requests[static.info.model]
    assert ledger[api_name].tokens == server.billed_tokens[static.info.model]
    assert ledger[api_name].rejected == sum(n for f, n in server.faults.items() if f in BILLED_FAULTS)
    assert ledger[api_name].requests + ledger[local_name].requests == 2000
    # the API really was hit by chaos: about 30% of the calls it got failed (the breaker spares it some calls)
    assert server.requests > 1500 and 0.2 < sum(server.faults.values()) / server.requests < 0.4
    assert ledger[api_name].failures > 0 and len(server.faults) == 8
