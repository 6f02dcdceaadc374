"""The gateway's batch queue and limits, without HTTP: batch choice under a token budget, no starvation,
dropping texts nobody waits for, and the same limit semantics in memory and in Redis."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from embedopt.serve.batching import BatchQueue, QueueFull
from embedopt.serve.config import TenantConfig
from embedopt.serve.limits import MemoryLimits, RedisLimits, Refused, usd_to_pusd


class Model:
    """Records each batch; answers after ``gate`` opens (an asyncio.Event) so tests decide when batches end."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, texts: list[str], input_type: str) -> np.ndarray:
        self.batches.append(list(texts))
        await self.gate.wait()
        return np.asarray([[float(len(t)), 1.0] for t in texts], dtype=np.float32)


def _queue(model: Model, **kw) -> BatchQueue:
    options = {"max_batch_tokens": 100, "max_batch_texts": 8, "max_wait": 0.0, "max_queue_texts": 1000,
               "workers": 1, **kw}
    return BatchQueue("m", model, length=len, **options)


LENGTHS = [30, 5, 6, 29, 7, 31, 5, 28, 6, 30]


def test_batches_hold_the_oldest_text_and_its_neighbours_in_length() -> None:
    async def go():
        model = Model()
        model.gate.clear()
        q = _queue(model)
        q.start()
        blocker = q.submit(["x" * 10], "document")  # taken at once; holds the model while the rest queue up
        await asyncio.sleep(0.01)
        futures = q.submit(["a" * n + str(i) for i, n in enumerate(LENGTHS)], "document")
        model.gate.set()
        await asyncio.gather(*blocker, *futures)
        return model.batches

    batches = asyncio.run(go())
    assert [len(t) for t in batches[0]] == [10]
    first = batches[1]
    assert "a" * 30 + "0" in first  # the oldest waiting text is always in the next batch
    assert max(len(t) for t in first) * len(first) <= 100  # padded tokens under the budget
    assert all(len(t) >= 29 for t in first)  # its neighbours in length, not the short ones
    assert sorted(t for b in batches[1:] for t in b) == sorted("a" * n + str(i) for i, n in enumerate(LENGTHS))


def test_a_text_longer_than_the_budget_still_runs_alone() -> None:
    async def go():
        model = Model()
        q = _queue(model)
        q.start()
        return await asyncio.gather(*q.submit(["z" * 500, "short"], "document")), model.batches

    vectors, batches = asyncio.run(go())
    assert [v[0] for v in vectors] == [500.0, 5.0]
    assert ["z" * 500] in batches


def test_identical_texts_are_queued_once_and_released_texts_dropped() -> None:
    async def go():
        model = Model()
        model.gate.clear()
        q = _queue(model)
        q.start()
        busy = q.submit(["busy"], "document")
        await asyncio.sleep(0.01)
        one = q.submit(["shared", "only-one"], "document")
        two = q.submit(["shared"], "document")
        assert q.depth == 2 and q.stats.shared == 1
        q.release(["shared", "only-one"], "document")  # the first request left; the second still wants "shared"
        assert q.depth == 1 and q.stats.dropped == 1
        assert one[1].cancelled()
        model.gate.set()
        await asyncio.gather(*busy, *two)
        return model.batches

    batches = asyncio.run(go())
    assert batches == [["busy"], ["shared"]]


def test_queries_and_documents_are_batched_apart_and_full_queue_refuses() -> None:
    async def go():
        model = Model()
        model.gate.clear()
        q = _queue(model, max_queue_texts=3)
        q.start()
        busy = q.submit(["busy"], "query")
        await asyncio.sleep(0.01)
        docs = q.submit(["d1", "d2"], "document")
        query = q.submit(["q1"], "query")
        with pytest.raises(QueueFull) as info:
            q.submit(["one too many"], "document")
        assert info.value.retry_after >= 1
        model.gate.set()
        await asyncio.gather(*busy, *docs, *query)
        return model.batches

    batches = asyncio.run(go())
    assert sorted(map(sorted, batches)) == [["busy"], ["d1", "d2"], ["q1"]]


# ------------------------------------------------------------------------------------------------------ limits
def _limits(kind: str, url: str):
    return MemoryLimits() if kind == "memory" else RedisLimits(url, prefix=f"test-{uuid.uuid4().hex[:8]}:")


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_limits_reserve_settle_and_refuse_alike(kind, redis_server) -> None:
    tenant = TenantConfig("t", requests_per_minute=3, tokens_per_minute=100, daily_usd=1.0)

    async def go():
        limits = _limits(kind, redis_server.url)
        try:
            a = await limits.admit(tenant, tokens=10, cost=usd_to_pusd(0.6))
            assert (a.remaining_requests, a.remaining_tokens) == (2, 90)
            with pytest.raises(Refused) as budget:  # 0.6 reserved + 0.6 > 1.0
                await limits.admit(tenant, tokens=10, cost=usd_to_pusd(0.6))
            assert budget.value.kind == "insufficient_quota" and budget.value.retry_after is None
            await limits.settle(a, usd_to_pusd(0.1))  # it cost less than reserved: the rest comes back
            assert await limits.spent(tenant) == (usd_to_pusd(0.1), usd_to_pusd(0.1))
            b = await limits.admit(tenant, tokens=10, cost=usd_to_pusd(0.6))
            assert b.reserved_pusd == usd_to_pusd(0.6)
            with pytest.raises(Refused) as rate:  # the third request of the minute is fine, a fourth is not
                await limits.admit(tenant, tokens=10, cost=0)
                await limits.admit(tenant, tokens=10, cost=0)
            assert rate.value.kind == "rate_limit_exceeded" and 15 < rate.value.retry_after <= 20
            with pytest.raises(Refused) as big:
                await limits.admit(tenant, tokens=101, cost=0)
            assert big.value.kind == "request_too_large"
        finally:
            await limits.aclose()

    asyncio.run(go())
