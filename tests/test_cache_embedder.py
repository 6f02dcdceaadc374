"""The Embedder with real cache tiers and real models: isolation by fingerprint, single flight, and a Redis
crash in the middle of a 5,000-text job."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
import time

import numpy as np
import pytest

from embedopt import Embedder, ProviderError
from embedopt.cache import MemoryTier, RedisTier, SQLiteTier, TieredCache, cache_key, encode_vector
from embedopt.providers import FunctionProvider
from embedopt.providers.base import BaseProvider

from .conftest import MANPAGES, hash_vectors
from .redis_server import RedisServer

pytestmark = pytest.mark.slow


def test_two_fingerprints_and_query_vs_document_never_share_a_vector(minilm, tmp_path):
    """LangChain's CacheBackedEmbeddings keys on the text alone; here one text under two model configurations,
    and as a query and as a document, gets four separate entries, each with its own vector."""
    from embedopt.providers import SentenceTransformerProvider

    prompted = SentenceTransformerProvider(minilm.model, query_prompt="query: ", document_prompt="passage: ")
    cache = TieredCache([MemoryTier(), SQLiteTier(tmp_path / "c.sqlite3")])
    plain_e, prompted_e = Embedder(minilm, cache=cache), Embedder(prompted, cache=cache)
    text = "list directory contents"

    expected = {
        ("plain", "document"): Embedder(minilm).embed_documents([text])[0],
        ("plain", "query"): Embedder(minilm).embed_query(text),
        ("prompted", "document"): Embedder(prompted).embed_documents([text])[0],
        ("prompted", "query"): Embedder(prompted).embed_query(text),
    }
    for _ in range(2):  # the second round is served from the cache
        got = {
            ("plain", "document"): plain_e.embed_documents([text])[0],
            ("plain", "query"): plain_e.embed_query(text),
            ("prompted", "document"): prompted_e.embed_documents([text])[0],
            ("prompted", "query"): prompted_e.embed_query(text),
        }
        for name, vec in got.items():
            np.testing.assert_allclose(vec, expected[name], atol=1e-5, err_msg=str(name))
    assert plain_e.stats.computed == 2 and prompted_e.stats.computed == 2
    assert plain_e.stats.cache_hits == 2 and prompted_e.stats.cache_hits == 2
    # the prompted query really differs from the prompted document, so a mix-up would have been caught
    assert float(expected[("prompted", "query")] @ expected[("prompted", "document")]) < 0.99
    assert len(cache.tier("sqlite").usage_by_fingerprint()) == 4


def test_corrupt_or_wrong_dim_entry_is_recomputed_and_overwritten(minilm, tmp_path):
    sqlite = SQLiteTier(tmp_path / "c.sqlite3")
    e = Embedder(minilm, cache=sqlite)
    texts = ["copy files and directories", "remove files or directories"]
    first = e.embed_documents(texts)
    keys = [cache_key(e.fingerprint("document"), t) for t in texts]
    with sqlite3.connect(sqlite.path) as db:
        db.execute("UPDATE vectors SET value = substr(value, 1, 20) WHERE key = ?", (keys[0],))
        db.execute("UPDATE vectors SET value = ? WHERE key = ?", (encode_vector(np.ones(16, np.float32), key=keys[1]), keys[1]))
    again = e.embed_documents(texts)
    np.testing.assert_allclose(again, first, atol=1e-5)
    assert e.stats.computed == 4 and e.stats.cache_hits == 0
    for key, vec in zip(keys, sqlite.get_many(keys), strict=True):  # both entries were overwritten
        assert vec is not None and vec.shape == (384,), key


# ------------------------------------------------------------------------------------------- single flight
class SlowCounting:
    def __init__(self, fail_first: bool = False) -> None:
        self.seen: list[str] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, texts, input_type):
        with self.lock:
            first = not self.seen
            self.seen.extend(texts)
        time.sleep(0.3)
        if first and self.fail_first:
            raise RuntimeError("first call fails")
        return hash_vectors(texts, input_type)


def test_concurrent_threads_compute_each_text_once():
    fn = SlowCounting()
    e = Embedder(FunctionProvider(fn, dim=16), cache=MemoryTier())
    texts = [f"text {i}" for i in range(20)]
    results: list[np.ndarray] = []

    def work():
        results.append(e.embed_documents(texts))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(fn.seen) == sorted(texts)  # each text computed once, not four times
    for r in results:
        np.testing.assert_array_equal(r, results[0])
    assert e.stats.computed + e.stats.cache_hits + e.stats.shared == 80


async def test_concurrent_tasks_compute_each_text_once():
    fn = SlowCounting()
    e = Embedder(FunctionProvider(fn, dim=16), cache=MemoryTier())
    texts = [f"text {i}" for i in range(10)]
    results = await asyncio.gather(*(e.aembed_documents(texts) for _ in range(5)),
                                   e.aembed_documents([*texts[:3], "new"]))
    assert sorted(fn.seen) == sorted([*texts, "new"])
    for r in results[1:5]:
        np.testing.assert_array_equal(r, results[0])
    np.testing.assert_array_equal(results[5][:3], results[0][:3])


def test_when_the_computing_call_fails_the_waiting_call_computes_for_itself():
    fn = SlowCounting(fail_first=True)
    e = Embedder(FunctionProvider(fn, dim=16), cache=MemoryTier())
    outcome: dict[str, object] = {}

    def first():
        try:
            e.embed_documents(["shared text"])
        except ProviderError as exc:
            outcome["first"] = exc

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.1)  # the first call owns the text now
    outcome["second"] = e.embed_documents(["shared text"])
    t.join()
    assert isinstance(outcome["first"], ProviderError)
    np.testing.assert_array_equal(outcome["second"], hash_vectors(["shared text"], "document") /
                                  np.linalg.norm(hash_vectors(["shared text"], "document")))
    assert fn.seen == ["shared text", "shared text"]


# ------------------------------------------------------------------------------------- Redis dies mid-job
class KillAfter(BaseProvider):
    """The real static model in batches of 500; after ``n`` batches it SIGKILLs the Redis server, as a crash."""

    def __init__(self, inner: BaseProvider, server: RedisServer, n: int) -> None:
        self.inner, self.server, self.n, self.calls = inner, server, n, 0
        self._info = dataclasses.replace(inner.info, max_batch=500)  # same fingerprint, smaller batches

    @property
    def info(self):
        return self._info

    def _embed(self, texts, input_type):
        self.calls += 1
        if self.calls == self.n + 1:
            self.server.kill()
        return self.inner._embed(texts, input_type)


def five_thousand_texts() -> list[str]:
    rows = [json.loads(line) for line in (MANPAGES / "corpus.jsonl").read_text().splitlines()]
    rows += [json.loads(line) for line in (MANPAGES / "queries.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows] + [r["title"] for r in rows if r.get("title")]
    texts = list(dict.fromkeys(t for t in texts if t.strip()))
    assert len(texts) >= 5000
    return texts[:5000]


def test_redis_killed_mid_job(static, tmp_path, caplog):
    texts = five_thousand_texts()
    server = RedisServer(tmp_path).start()
    try:
        memory, redis, sqlite = MemoryTier(), RedisTier(server.url), SQLiteTier(tmp_path / "c.sqlite3")
        cache = TieredCache([memory, redis, sqlite], cooldown=0.2, max_cooldown=0.4)
        provider = KillAfter(static, server, n=3)
        e = Embedder(provider, cache=cache, show_progress=False)

        out = e.embed_documents(texts)                               # 1. every request succeeds
        np.testing.assert_allclose(out, Embedder(static).embed_documents(texts), atol=1e-6)
        assert server.proc is None and provider.calls == 10 and e.stats.computed == 5000
        assert cache.tier_stats()["redis"]["state"] == "open"
        warnings = [r for r in caplog.records if r.levelname == "WARNING" and "redis" in r.getMessage()]
        assert len(warnings) == 1

        keys = [cache_key(e.fingerprint("document"), t) for t in texts]
        stored = sqlite.get_many(keys)                               # 2. every computed vector is in SQLite
        assert all(v is not None for v in stored)
        np.testing.assert_allclose(np.stack(stored), out, atol=1e-6)

        server.start()                                               # 3. after a restart Redis fills again
        memory.clear()
        time.sleep(0.5)
        again = e.embed_documents(texts)
        np.testing.assert_allclose(again, out, atol=1e-6)
        assert e.stats.computed == 5000  # nothing recomputed: SQLite answered
        assert cache.tier_stats()["redis"]["state"] == "closed"
        assert redis.usage()["entries"] == 5000 and len(memory) == 5000
    finally:
        server.kill()
