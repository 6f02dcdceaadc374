"""Cost ledger, budgets, estimates, retry policy and the model catalog (no network)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from embedopt import Budget, ConfigError, CostLedger, ProviderError, RetryPolicy
from embedopt.catalog import CATALOG, card, recommend
from embedopt.cli import main
from embedopt.costs import estimate


def test_ledger_totals_windows_and_round_trip(tmp_path):
    ledger = CostLedger()
    day1 = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
    day2 = datetime(2026, 11, 24, 1, tzinfo=timezone.utc)
    assert ledger.record("voyage:voyage-3", kind="api", texts=10, tokens=1_000_000, price_per_1m_tokens=0.06,
                         when=day1) == pytest.approx(0.06)
    ledger.record("voyage:voyage-3", kind="api", texts=5, tokens=500_000, price_per_1m_tokens=0.06, when=day2)
    ledger.record("local", kind="self_hosted", texts=7, tokens=123, price_per_1m_tokens=0.0, when=day2)
    ledger.record_failure("voyage:voyage-3", kind="api")
    ledger.record_cache_hits(4, 2_000_000, 0.06)
    assert ledger.spent(day="2026-11-23") == pytest.approx(0.06)
    assert ledger.spent(month="2026-11") == pytest.approx(0.09)
    assert ledger.allows(Budget(daily_usd=0.05), 0.02, when=day2) is True       # 0.03 + 0.02 <= 0.05
    assert ledger.allows(Budget(daily_usd=0.05), 0.03, when=day2) is False
    assert ledger.allows(Budget(monthly_usd=0.1), 0.02, when=day2) is False
    path = tmp_path / "ledger.json"
    ledger.to_json(str(path))
    again = CostLedger.from_dict(json.loads(path.read_text()))
    assert again.to_dict() == ledger.to_dict()
    assert again.routes["voyage:voyage-3"].failures == 1 and again.cache_usd_saved == pytest.approx(0.12)


def test_estimate_the_common_example():
    """10,000 requests a day: an API costs about $1/day; an always-on $0.50/h instance costs $12/day."""
    f = estimate(requests_per_day=10_000, tokens_per_request=1_500, price_per_1m_tokens=0.06,
                 instance_usd_per_hour=0.5, instance_tokens_per_second=10_000)
    assert f["api_usd_per_day"] == pytest.approx(0.9)
    assert f["self_hosted_always_on_usd_per_day"] == pytest.approx(12.0)
    assert f["breakeven_tokens_per_day_vs_always_on"] == pytest.approx(200_000_000)
    half = estimate(requests_per_day=10_000, tokens_per_request=1_500, price_per_1m_tokens=0.06,
                    instance_usd_per_hour=0.5, instance_tokens_per_second=10_000, cache_hit_rate=0.5)
    assert half["api_usd_per_day"] == pytest.approx(0.45)
    with pytest.raises(ConfigError, match="make bench"):
        estimate(requests_per_day=1, tokens_per_request=1, price_per_1m_tokens=1, instance_usd_per_hour=1,
                 instance_tokens_per_second=0)


def test_retry_policy_backoff_retry_after_and_bounds():
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=3.0, max_total=100)
    err = ProviderError("x", retryable=True)
    for attempt, cap in ((1, 1.0), (2, 2.0), (3, 3.0), (6, 3.0)):
        assert all(0 <= policy.delay(attempt, err) <= cap for _ in range(50))
    assert policy.delay(1, ProviderError("x", retryable=True, retry_after=2.5)) == 2.5
    assert policy.delay(1, ProviderError("x", retryable=True, retry_after=99)) == 3.0  # capped
    calls = []

    def failing():
        calls.append(1)
        raise ProviderError("nope", retryable=False)

    with pytest.raises(ProviderError):
        RetryPolicy(base_delay=0).call(failing)
    assert len(calls) == 1  # not retryable: raised at once
    flaky = iter([ProviderError("a", retryable=True), ProviderError("b", retryable=True)])

    def sometimes():
        err = next(flaky, None)
        if err:
            raise err
        return "ok"

    assert RetryPolicy(base_delay=0.001).call(sometimes) == "ok"
    with pytest.raises(ProviderError):  # max_total bounds the time: a 5 s Retry-After is not waited for
        RetryPolicy(max_total=1).call(lambda: (_ for _ in ()).throw(ProviderError("x", retryable=True,
                                                                                      retry_after=5)))


def test_catalog_and_recommendations():
    names = {c.name for c in CATALOG}
    for required in ("voyage-3", "voyage-3-large", "voyage-code-3", "voyage-multilingual-2",
                     "text-embedding-3-small", "text-embedding-3-large", "BAAI/bge-m3", "jinaai/jina-embeddings-v3",
                     "intfloat/e5-small-v2", "intfloat/e5-base-v2", "sentence-transformers/all-MiniLM-L6-v2",
                     "sentence-transformers/all-mpnet-base-v2", "nomic-ai/nomic-embed-text-v1.5",
                     "sentence-transformers/static-retrieval-mrl-en-v1", "minishlab/potion-base-8M"):
        assert required in names
    assert card("all-MiniLM-L6-v2").dim == 384 and card("text-embedding-3-large").price_per_1m_tokens == 0.13
    code = recommend("code")
    assert code[0][0].name == "voyage-code-3" and "code" in code[0][1]
    with pytest.raises(ConfigError, match="use case"):
        recommend("poetry")


def test_cli_models_and_costs(tmp_path, capsys):
    assert main(["models", "--use-case", "multilingual", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "BAAI/bge-m3" and all(r["reason"] for r in rows)
    assert main(["costs", "--estimate", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["api_usd_per_day"] == pytest.approx(0.9) and figures["model"] == "voyage-3"
    ledger = CostLedger()
    ledger.record("openai:text-embedding-3-small", kind="api", texts=3, tokens=42, price_per_1m_tokens=0.02)
    path = tmp_path / "l.json"
    ledger.to_json(str(path))
    assert main(["costs", str(path)]) == 0
    assert "openai:text-embedding-3-small" in capsys.readouterr().out
    assert main(["costs", str(tmp_path / "missing.json")]) == 2
    assert main(["costs", "--estimate", "--model", "unknown-model"]) == 2
